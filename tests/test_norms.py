"""group_norm / layer_norm (forward, backward) on every CPU backend against PyTorch and
float64 finite differences; errors; nn.GroupNorm, nn.LayerNorm and nn.InstanceNorm2d
(affine x track_running_stats, train and eval) against their torch twins."""
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

# (name, x_shape, num_groups, affine)
GN_CASES = [
    ("basic", (2, 6, 5, 7), 3, True),
    ("one_group", (2, 4, 3, 3), 1, True),
    ("instance", (3, 5, 4, 6), 5, True),
    ("noaffine", (2, 6, 4, 4), 2, False),
    ("3d", (2, 4, 9), 2, True),
    ("5d", (1, 4, 2, 3, 4), 4, True),
    ("2d_no_spatial", (4, 6), 3, True),
    ("odd_sizes", (1, 9, 13, 11), 3, True),
    ("n1_c1", (1, 1, 7, 5), 1, True),
]
# (name, x_shape, normalized_shape, weight, bias)
LN_CASES = [
    ("last", (2, 5, 7), (7,), True, True),
    ("last_two", (2, 3, 5, 7), (5, 7), True, True),
    ("chw", (2, 3, 4, 5), (3, 4, 5), True, True),
    ("int_shape", (6, 11), 11, True, True),
    ("noaffine", (3, 8), (8,), False, False),
    ("weight_only", (2, 4, 6), (6,), True, False),
    ("whole", (17,), (17,), True, True),
]


def _params(cases):
    return [pytest.param(be, dt, c, id=f"{be}-{np.dtype(dt).name}-{c[0]}")
            for be in CPU_BACKENDS for dt in dtypes(be) for c in cases]


def _t(a):
    return None if a is None else torch.from_numpy(np.ascontiguousarray(a)).requires_grad_()


def _grad(t):
    return None if t is None else t.grad.numpy()


@requires_torch
@pytest.mark.parametrize("backend,dtype,case", _params(GN_CASES))
def test_group_norm_matches_torch(backend, dtype, case):
    name, xs, G, affine = case
    C = xs[1]
    x = randn(xs, dtype, 0) * 3 + 1
    w, b = (randn((C,), dtype, 1), randn((C,), dtype, 2)) if affine else (None, None)
    xt, wt, bt = _t(x), _t(w), _t(b)
    yt = TF.group_norm(xt, G, wt, bt, eps=1e-5)
    gy = randn(xs, dtype, 3)
    yt.backward(torch.from_numpy(gy))
    y, mean, invstd = fc.group_norm(x, G, w, b, return_stats=True, backend=backend)
    assert y.dtype == dtype and mean.shape == (xs[0], G) and invstd.shape == (xs[0], G)
    m = x.size // (xs[0] * G)
    assert_close(y, yt.detach().numpy(), np.float32, m, f"{name} forward")
    gx, gw, gb = fc.group_norm_backward(gy, x, G, w, mean, invstd, backend=backend)
    assert_close(gx, xt.grad.numpy(), np.float32, m, f"{name} grad_x")
    if affine:
        assert_close(gw, _grad(wt), np.float32, x.size // C, f"{name} grad_w")
        assert_close(gb, _grad(bt), np.float32, x.size // C, f"{name} grad_b")


@requires_torch
@pytest.mark.parametrize("backend,dtype,case", _params(LN_CASES))
def test_layer_norm_matches_torch(backend, dtype, case):
    name, xs, shape, has_w, has_b = case
    tshape = (shape,) if isinstance(shape, int) else shape
    x = randn(xs, dtype, 0) * 2 - 1
    w = randn(tshape, dtype, 1) if has_w else None
    b = randn(tshape, dtype, 2) if has_b else None
    xt, wt, bt = _t(x), _t(w), _t(b)
    yt = TF.layer_norm(xt, tshape, wt, bt, eps=1e-5)
    gy = randn(xs, dtype, 3)
    yt.backward(torch.from_numpy(gy))
    y, mean, invstd = fc.layer_norm(x, shape, w, b, return_stats=True, backend=backend)
    lead = xs[:len(xs) - len(tshape)]
    assert mean.shape == lead and invstd.shape == lead
    M = int(np.prod(tshape))
    assert_close(y, yt.detach().numpy(), np.float32, M, f"{name} forward")
    gx, gw, gb = fc.layer_norm_backward(gy, x, shape, w, mean, invstd, backend=backend)
    assert_close(gx, xt.grad.numpy(), np.float32, M, f"{name} grad_x")
    assert gw.shape == tshape and gb.shape == tshape
    if has_w:
        assert_close(gw, _grad(wt), np.float32, x.size // M, f"{name} grad_w")
    if has_b:
        assert_close(gb, _grad(bt), np.float32, x.size // M, f"{name} grad_b")


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_group_norm_finite_differences(backend):
    x = randn((2, 4, 3, 2), np.float64, 0)
    w, b = randn((4,), np.float64, 1), randn((4,), np.float64, 2)
    G = randn(x.shape, np.float64, 5)

    def loss():
        return float((fc.group_norm(x, 2, w, b, backend=backend) * G).sum())

    _, mean, invstd = fc.group_norm(x, 2, w, b, return_stats=True, backend=backend)
    gx, gw, gb = fc.group_norm_backward(G, x, 2, w, mean, invstd, backend=backend)
    np.testing.assert_allclose(gx, fd_grad(loss, x), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(gw, fd_grad(loss, w), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(gb, fd_grad(loss, b), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_layer_norm_finite_differences(backend):
    x = randn((3, 2, 5), np.float64, 0)
    w, b = randn((2, 5), np.float64, 1), randn((2, 5), np.float64, 2)
    G = randn(x.shape, np.float64, 5)

    def loss():
        return float((fc.layer_norm(x, (2, 5), w, b, backend=backend) * G).sum())

    _, mean, invstd = fc.layer_norm(x, (2, 5), w, b, return_stats=True, backend=backend)
    gx, gw, gb = fc.layer_norm_backward(G, x, (2, 5), w, mean, invstd, backend=backend)
    np.testing.assert_allclose(gx, fd_grad(loss, x), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(gw, fd_grad(loss, w), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(gb, fd_grad(loss, b), rtol=1e-6, atol=1e-7)


def test_norm_errors():
    x = np.zeros((2, 6, 4, 4), np.float32)
    with pytest.raises(ValueError, match="num_groups=4"):
        fc.group_norm(x, 4)
    with pytest.raises(ValueError, match="num_groups"):
        fc.group_norm(x, 0)
    with pytest.raises(ValueError, match="weight"):
        fc.group_norm(x, 3, np.ones(3, np.float32))
    with pytest.raises(ValueError, match="at least 2"):
        fc.group_norm(np.zeros(6, np.float32), 3)
    with pytest.raises(TypeError, match="dtype"):
        fc.group_norm(x, 3, np.ones(6, np.float64))
    with pytest.raises(ValueError, match="eps"):
        fc.group_norm(x, 3, eps=-1)
    with pytest.raises(ValueError, match="normalized_shape"):
        fc.layer_norm(x, (5, 4))
    with pytest.raises(TypeError, match="normalized_shape"):
        fc.layer_norm(x, "4")
    with pytest.raises(ValueError, match="bias"):
        fc.layer_norm(x, (4, 4), None, np.ones(4, np.float32))
    _, mean, invstd = fc.group_norm(x, 3, return_stats=True)
    with pytest.raises(ValueError, match="mean"):
        fc.group_norm_backward(x, x, 3, None, mean[:1], invstd)
    with pytest.raises(ValueError, match="grad_out"):
        fc.group_norm_backward(x[:1], x, 3, None, mean, invstd)
    _, mean, invstd = fc.layer_norm(x, 4, return_stats=True)
    with pytest.raises(ValueError, match="invstd"):
        fc.layer_norm_backward(x, x, 4, None, mean, invstd[0])


def test_zero_batch():
    y = fc.group_norm(np.zeros((0, 4, 3, 3), np.float32), 2, np.ones(4, np.float32))
    assert y.shape == (0, 4, 3, 3)
    y = fc.layer_norm(np.zeros((0, 5), np.float32), 5)
    assert y.shape == (0, 5)


# ----------------------------------------------------------------------------- layers


def _twin(fm, tm, x, gy_seed=2):
    """Loads fm's state into tm, runs both forward and backward; compares everything."""
    sd = fm.state_dict()
    assert list(sd) == list(tm.state_dict())
    tm.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in sd.items()})
    xt = torch.from_numpy(x).requires_grad_()
    yt = tm(xt)
    y = fm(x)
    np.testing.assert_allclose(y, yt.detach().numpy(), rtol=1e-9, atol=1e-11)
    gy = randn(y.shape, np.float64, gy_seed)
    yt.backward(torch.from_numpy(gy))
    np.testing.assert_allclose(fm.backward(gy), xt.grad.numpy(), rtol=1e-9, atol=1e-11)
    tparams = dict(tm.named_parameters())
    assert set(tparams) == {n for n, _ in fm.named_parameters()}
    for n, p in fm.named_parameters():
        np.testing.assert_allclose(p.grad, tparams[n].grad.numpy(), rtol=1e-9, atol=1e-10)
    for n, v in fm.state_dict().items():
        np.testing.assert_allclose(np.asarray(v), tm.state_dict()[n].numpy(), rtol=1e-9,
                                   atol=1e-12, err_msg=n)


@requires_torch
@pytest.mark.parametrize("affine", [True, False])
def test_group_norm_layer(affine):
    fm = nn.GroupNorm(2, 6, affine=affine, dtype=np.float64)
    tm = torch.nn.GroupNorm(2, 6, affine=affine, dtype=torch.float64)
    if affine:
        fm.weight.data[...] = randn((6,), np.float64, 7)
        fm.bias.data[...] = randn((6,), np.float64, 8)
    _twin(fm, tm, randn((3, 6, 4, 5), np.float64, 1))


@requires_torch
@pytest.mark.parametrize("kw", [dict(), dict(elementwise_affine=False), dict(bias=False)],
                         ids=["affine", "plain", "nobias"])
def test_layer_norm_layer(kw):
    fm = nn.LayerNorm((4, 5), **kw, dtype=np.float64)
    tm = torch.nn.LayerNorm((4, 5), **kw, dtype=torch.float64)
    if fm.weight is not None:
        fm.weight.data[...] = randn((4, 5), np.float64, 7)
    _twin(fm, tm, randn((2, 3, 4, 5), np.float64, 1))


@requires_torch
@pytest.mark.parametrize("affine", [False, True])
@pytest.mark.parametrize("track", [False, True])
@pytest.mark.parametrize("unbatched", [False, True])
def test_instance_norm_layer(affine, track, unbatched):
    fm = nn.InstanceNorm2d(4, affine=affine, track_running_stats=track, dtype=np.float64)
    tm = torch.nn.InstanceNorm2d(4, affine=affine, track_running_stats=track,
                                 dtype=torch.float64)
    assert list(fm.state_dict()) == list(tm.state_dict())
    if affine:
        fm.weight.data[...] = randn((4,), np.float64, 7)
        fm.bias.data[...] = randn((4,), np.float64, 8)
    xs = (4, 5, 6) if unbatched else (3, 4, 5, 6)
    for step in range(2):  # running statistics move twice in training mode
        fm.zero_grad()
        tm.zero_grad()
        _twin(fm, tm, randn(xs, np.float64, 1 + step) * 2 + 1)
        if track:
            assert not np.allclose(fm.running_mean, 0)
    fm.eval()
    tm.eval()
    fm.zero_grad()
    tm.zero_grad()
    _twin(fm, tm, randn(xs, np.float64, 5))


def test_instance_norm_defaults_and_errors():
    m = nn.InstanceNorm2d(3)
    assert m.weight is None and m.running_mean is None and not list(m.state_dict())
    m = nn.InstanceNorm2d(3, track_running_stats=True)
    assert list(m.state_dict()) == ["running_mean", "running_var", "num_batches_tracked"]
    with pytest.raises(ValueError, match="spatial"):
        m(np.zeros((2, 3, 1, 1), np.float32))
    with pytest.raises(ValueError, match="channels"):
        nn.InstanceNorm2d(3, affine=True)(np.zeros((2, 4, 3, 3), np.float32))
    with pytest.raises(ValueError, match="divisible"):
        nn.GroupNorm(4, 6)
    with pytest.raises(ValueError, match="GroupNorm"):
        nn.GroupNorm(2, 6)(np.zeros((2, 4, 3), np.float32))


def test_gradients_accumulate():
    m = nn.GroupNorm(2, 4)
    x = randn((2, 4, 3, 3), np.float32, 0)
    gy = randn(x.shape, np.float32, 1)
    m(x)
    m.backward(gy)
    first = m.weight.grad.copy()
    m(x)
    m.backward(gy)
    np.testing.assert_allclose(m.weight.grad, 2 * first, rtol=1e-6)
