"""conv1d / conv1d_backward / nn.Conv1d: every CPU backend against PyTorch over stride,
padding ('same', 'valid', ints), dilation and groups, batched and unbatched; float64 finite
differences; errors; the layer against its torch twin."""
from __future__ import annotations

import numpy as np
import pytest

import fastconv as fc
import fastconv.nn as nn

from _backends import CPU_BACKENDS, dtypes
from conftest import assert_close, fd_grad, randn, requires_torch

try:
    import torch
    import torch.nn.functional as TF
except ImportError:  # torch is an optional oracle
    torch = TF = None

# (name, x_shape, w_shape (K, C/groups, R), kwargs)
CASES = [
    ("basic", (2, 3, 11), (4, 3, 3), dict()),
    ("padded", (2, 3, 10), (5, 3, 5), dict(padding=2)),
    ("stride2", (1, 4, 13), (3, 4, 3), dict(stride=2, padding=1)),
    ("stride3_dil2", (2, 2, 17), (3, 2, 3), dict(stride=3, dilation=2, padding=1)),
    ("same_odd", (2, 3, 9), (4, 3, 3), dict(padding="same")),
    ("same_even_kernel", (1, 3, 8), (2, 3, 4), dict(padding="same")),
    ("same_dilated", (1, 2, 12), (3, 2, 3), dict(padding="same", dilation=3)),
    ("valid", (2, 3, 9), (4, 3, 3), dict(padding="valid")),
    ("groups2", (2, 6, 9), (4, 3, 3), dict(groups=2, padding=1)),
    ("depthwise_mult2", (2, 4, 10), (8, 1, 3), dict(groups=4, padding=1)),
    ("k1", (2, 8, 7), (5, 8, 1), dict()),
    ("kernel_wider_than_input", (1, 2, 3), (3, 2, 5), dict(padding=2)),
    ("tuple_args", (1, 3, 12), (2, 3, 3), dict(stride=(2,), padding=(1,), dilation=(2,))),
    ("wide", (1, 33, 20), (19, 33, 3), dict(padding=1)),
    ("n0", (0, 3, 8), (4, 3, 3), dict(padding=1)),
    ("unbatched", (3, 8), (4, 3, 3), dict(padding=1)),
]


def _params():
    return [pytest.param(be, dt, c, id=f"{be}-{np.dtype(dt).name}-{c[0]}")
            for be in CPU_BACKENDS for dt in dtypes(be) for c in CASES]


def _torch(x, w, b, **kw):
    xt = torch.from_numpy(np.ascontiguousarray(x)).requires_grad_()
    wt = torch.from_numpy(w).requires_grad_()
    bt = torch.from_numpy(b).requires_grad_()
    y = TF.conv1d(xt, wt, bt, **kw)
    gy = torch.from_numpy(randn(tuple(y.shape), x.dtype, 9))
    y.backward(gy)
    return y.detach().numpy(), gy.numpy(), xt.grad.numpy(), wt.grad.numpy(), bt.grad.numpy()


@requires_torch
@pytest.mark.parametrize("backend,dtype,case", _params())
def test_forward_backward_match_torch(backend, dtype, case):
    name, xs, ws, kw = case
    x, w, b = randn(xs, dtype, 0), randn(ws, dtype, 1), randn((ws[0],), dtype, 2)
    ty, gy, tgx, tgw, tgb = _torch(x, w, b, **kw)
    y = fc.conv1d(x, w, b, **kw, backend=backend)
    assert y.dtype == dtype and y.shape == ty.shape
    n = ws[1] * ws[2]
    assert_close(y, ty, np.float32, n, f"{name} forward")
    gx, gw, gb = fc.conv1d_backward(gy, x, w, **kw, backend=backend)
    assert gx.shape == x.shape and gw.shape == w.shape
    assert_close(gx, tgx, np.float32, ws[0] * ws[2], f"{name} grad_x")
    assert_close(gw, tgw, np.float32, max(1, gy.size), f"{name} grad_w")
    assert_close(gb, tgb, np.float32, max(1, gy.size), f"{name} grad_b")


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("kw", [dict(stride=2, padding=1, dilation=2, groups=2),
                                dict(padding="same")], ids=["strided_groups", "same"])
def test_gradients_finite_differences(backend, kw):
    x, w, b = randn((2, 4, 9), np.float64, 0), randn((4, 2, 4), np.float64, 1), \
        randn((4,), np.float64, 2)
    if kw.get("padding") == "same":
        w = w[:, :, :3].copy()
        kw = dict(kw, groups=2)
    G = randn(fc.conv1d(x, w, b, **kw, backend="reference").shape, np.float64, 5)

    def loss():
        return float((fc.conv1d(x, w, b, **kw, backend=backend) * G).sum())

    gx, gw, gb = fc.conv1d_backward(G, x, w, **kw, backend=backend)
    np.testing.assert_allclose(gx, fd_grad(loss, x), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(gw, fd_grad(loss, w), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(gb, fd_grad(loss, b), rtol=1e-6, atol=1e-7)


ERRORS = [
    ((1, 3, 8), (4, 3, 3), dict(padding="same", stride=2), ValueError, "same"),
    ((1, 3, 8), (4, 3, 3), dict(padding="full"), ValueError, "padding"),
    ((1, 3, 8), (4, 2, 3), dict(), ValueError, "channels"),
    ((1, 3, 8), (4, 3, 3), dict(groups=2), ValueError, "groups=2"),
    ((1, 3, 2), (4, 3, 5), dict(), ValueError, "larger than the padded input"),
    ((1, 3, 8), (4, 3, 3), dict(stride=0), ValueError, "stride"),
    ((1, 3, 8), (4, 3, 3), dict(stride=(1, 1)), TypeError, "stride"),
    ((1, 3, 8), (4, 3, 3), dict(padding=-1), ValueError, "padding"),
    ((1, 3, 8), (4, 3, 3, 1), dict(), ValueError, "weight"),
    ((1, 1, 3, 8), (4, 3, 3), dict(), ValueError, "input"),
]


@pytest.mark.parametrize("xs,ws,kw,exc,words", ERRORS)
def test_errors(xs, ws, kw, exc, words):
    with pytest.raises(exc, match=words):
        fc.conv1d(np.zeros(xs, np.float32), np.zeros(ws, np.float32), **kw)


def test_backward_grad_out_shape_checked():
    x, w = np.zeros((1, 3, 8), np.float32), np.zeros((4, 3, 3), np.float32)
    with pytest.raises(ValueError, match="grad_out"):
        fc.conv1d_backward(np.zeros((1, 4, 7), np.float32), x, w)


@requires_torch
@pytest.mark.parametrize("args,kw", [
    ((4, 6, 3), dict(padding="same", groups=2)),
    ((4, 6, 5), dict(stride=2, padding=1, dilation=2, bias=False)),
], ids=["same_groups", "strided_nobias"])
def test_layer_matches_torch_twin(args, kw):
    fm = nn.Conv1d(*args, **kw, dtype=np.float64)
    tm = torch.nn.Conv1d(*args, **kw, dtype=torch.float64)
    assert list(fm.state_dict()) == list(tm.state_dict())
    assert fm.weight.shape == tuple(tm.weight.shape)
    tm.load_state_dict({k: torch.from_numpy(np.asarray(v)) for k, v in fm.state_dict().items()})
    for xs in ((2, 4, 13), (4, 13)):
        fm.zero_grad()
        tm.zero_grad()
        x = randn(xs, np.float64, 1)
        xt = torch.from_numpy(x).requires_grad_()
        yt = tm(xt)
        y = fm(x)
        np.testing.assert_allclose(y, yt.detach().numpy(), rtol=1e-10, atol=1e-12)
        gy = randn(y.shape, np.float64, 2)
        yt.backward(torch.from_numpy(gy))
        np.testing.assert_allclose(fm.backward(gy), xt.grad.numpy(), rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(fm.weight.grad, tm.weight.grad.numpy(), rtol=1e-10,
                                   atol=1e-11)
        if fm.bias is not None:
            np.testing.assert_allclose(fm.bias.grad, tm.bias.grad.numpy(), rtol=1e-10,
                                       atol=1e-11)


def test_layer_init_bound():
    m = nn.Conv1d(6, 4, 5, groups=2)
    bound = 1 / np.sqrt(3 * 5)
    assert m.weight.shape == (4, 3, 5)
    assert 0.5 * bound < np.abs(m.weight.data).max() <= bound
    assert np.abs(m.bias.data).max() <= bound
    with pytest.raises(ValueError, match="same"):
        nn.Conv1d(3, 4, 3, stride=2, padding="same")
