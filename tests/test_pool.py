"""Pooling forward/backward on every available CPU backend against the reference and
PyTorch, including the semantic corners (ceil_mode windows, -inf, NaN, the avg-pool 0/0
trap), and float64 finite-difference gradients."""
from __future__ import annotations

import numpy as np
import pytest

import fastconv as fc

from _backends import CPU_BACKENDS, dtypes
from conftest import HAVE_TORCH, assert_close, fd_grad, randn, requires_torch

if HAVE_TORCH:
    import torch
    import torch.nn.functional as F

# (name, x_shape, kwargs)
MAX_CASES = [
    ("k2s2", (2, 3, 8, 8), dict(kernel_size=2)),
    ("k3s2p1_odd", (2, 3, 9, 7), dict(kernel_size=3, stride=2, padding=1)),
    ("ceil_start_in_pad", (1, 2, 6, 6), dict(kernel_size=3, stride=2, padding=1, ceil_mode=True)),
    ("ceil_odd", (1, 2, 7, 5), dict(kernel_size=2, stride=2, ceil_mode=True)),
    ("dilation", (1, 2, 11, 10), dict(kernel_size=3, stride=1, padding=1, dilation=2)),
    ("rect", (2, 1, 9, 12), dict(kernel_size=(1, 3), stride=(2, 1), padding=(0, 1))),
    ("global", (1, 4, 5, 5), dict(kernel_size=5)),
    ("unbatched", (3, 6, 6), dict(kernel_size=2)),
    ("n0", (0, 3, 6, 6), dict(kernel_size=2)),
]
AVG_CASES = [
    ("k2", (2, 3, 8, 8), dict(kernel_size=2)),
    ("k3s2p1", (2, 3, 9, 7), dict(kernel_size=3, stride=2, padding=1)),
    ("no_pad_count", (2, 3, 9, 7), dict(kernel_size=3, stride=2, padding=1,
                                        count_include_pad=False)),
    ("ceil", (1, 2, 7, 5), dict(kernel_size=3, stride=2, padding=1, ceil_mode=True)),
    ("nan_trap", (1, 1, 3, 3), dict(kernel_size=(1, 2), stride=2, padding=(0, 1),
                                    ceil_mode=True, count_include_pad=False)),
    ("nan_trap_incl", (1, 1, 3, 3), dict(kernel_size=(1, 2), stride=2, padding=(0, 1),
                                         ceil_mode=True, count_include_pad=True)),
    ("divisor", (2, 2, 6, 6), dict(kernel_size=3, padding=1, stride=1, divisor_override=5)),
    ("unbatched", (3, 6, 6), dict(kernel_size=2)),
    ("n0", (0, 2, 4, 4), dict(kernel_size=2)),
]
ADAPTIVE_CASES = [
    ("down", (2, 3, 9, 7), (4, 3)),
    ("global", (2, 5, 7, 7), 1),
    ("up", (1, 2, 3, 5), (7, 8)),
    ("none", (1, 2, 6, 5), (None, 2)),
    ("unbatched", (2, 5, 5), 2),
]


def params(cases):
    return [pytest.param(be, dt, c, id=f"{be}-{np.dtype(dt).name}-{c[0]}")
            for be in CPU_BACKENDS for dt in dtypes(be) for c in cases]


def _t(a):
    return torch.from_numpy(np.ascontiguousarray(a))


@pytest.mark.parametrize("backend,dtype,case", params(MAX_CASES))
def test_max_pool(backend, dtype, case):
    name, xs, kw = case
    x = randn(xs, dtype)
    y, idx = fc.max_pool2d(x, **kw, return_indices=True, backend=backend)
    ey, eidx = fc.max_pool2d(x.astype(np.float64), **kw, return_indices=True,
                             backend="reference")
    assert y.dtype == dtype and idx.dtype == np.int64
    np.testing.assert_array_equal(y, ey.astype(dtype))
    np.testing.assert_array_equal(idx, eidx)
    gy = randn(y.shape, dtype, 3)
    gx = fc.max_pool2d_backward(gy, idx, x.shape, backend=backend)
    egx = fc.max_pool2d_backward(gy.astype(np.float64), eidx, x.shape, backend="reference")
    assert_close(gx, egx, dtype, 9, name)
    if HAVE_TORCH and xs[0] != 0:
        ty, tidx = F.max_pool2d(_t(x), **kw, return_indices=True)
        np.testing.assert_array_equal(y, ty.numpy())
        np.testing.assert_array_equal(idx, tidx.numpy())


@pytest.mark.parametrize("backend,dtype,case", params(MAX_CASES))
def test_max_pool_without_indices(backend, dtype, case):
    """Without indices (inference) row strides 1 and 2 take their own row kernels: the
    values must be the indexed path's and PyTorch's, NaN windows included."""
    name, xs, kw = case
    x = randn(xs, dtype)
    x.reshape(-1)[::5] = np.nan
    y = fc.max_pool2d(x, **kw, backend=backend)
    ey, _ = fc.max_pool2d(x, **kw, return_indices=True, backend=backend)
    np.testing.assert_array_equal(y, ey)
    if HAVE_TORCH and xs[0] != 0:
        np.testing.assert_array_equal(y, F.max_pool2d(_t(x), **kw).numpy())


# (row width, kernel, stride, padding, dilation); windows wider than the padded row are
# left out (PyTorch rejects them).
ROW_KERNEL_CASES = [(w,) + c for w in (1, 2, 3, 5, 8, 16, 17, 31, 112)
                    for c in [(3, 2, 1, 1), (3, 1, 1, 1), (2, 2, 0, 1), (5, 2, 2, 1),
                              (3, 2, 1, (2, 1)), (1, 2, 0, 1), (4, 1, 2, 1)]
                    if w + 2 * c[2] >= c[0]]


@pytest.mark.skipif(not HAVE_TORCH, reason="needs PyTorch as the oracle")
@pytest.mark.parametrize("w,k,stride,pad,dil", ROW_KERNEL_CASES)
def test_max_pool_row_kernels_awkward_widths(w, k, stride, pad, dil):
    """The inference row kernels over awkward row widths, strides, paddings and a
    vertical dilation, with and without NaN, against PyTorch."""
    rng = np.random.default_rng(w * 31 + k)
    h = max(k, 5)
    for nan in (False, True):
        x = rng.standard_normal((2, 3, h, w)).astype(np.float32)
        if nan:
            x.reshape(-1)[::7] = np.nan
        kw = dict(kernel_size=k, stride=stride, padding=pad, dilation=dil)
        np.testing.assert_array_equal(fc.max_pool2d(x, **kw),
                                      F.max_pool2d(_t(x), **kw).numpy())


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_max_pool_nan_and_neg_inf(backend):
    x = np.array([[[[1.0, np.nan, 3.0, np.nan], [-np.inf, -np.inf, -np.inf, -np.inf]]]],
                 np.float32)
    y, idx = fc.max_pool2d(x, (1, 4), return_indices=True, backend=backend)
    assert np.isnan(y[0, 0, 0, 0]) and idx[0, 0, 0, 0] == 3  # last NaN wins, as PyTorch
    assert y[0, 0, 1, 0] == -np.inf and idx[0, 0, 1, 0] == 4  # first in-window position
    if HAVE_TORCH:
        ty, tidx = F.max_pool2d(_t(x), (1, 4), return_indices=True)
        np.testing.assert_array_equal(idx, tidx.numpy())


@pytest.mark.parametrize("backend,dtype,case", params(AVG_CASES))
def test_avg_pool(backend, dtype, case):
    name, xs, kw = case
    x = randn(xs, dtype)
    y = fc.avg_pool2d(x, **kw, backend=backend)
    ey = fc.avg_pool2d(x.astype(np.float64), **kw, backend="reference")
    assert y.dtype == dtype and not np.isnan(y).any()
    assert_close(y, ey, dtype, 9, name)
    gy = randn(y.shape, dtype, 3)
    gx = fc.avg_pool2d_backward(gy, x.shape, **kw, backend=backend)
    egx = fc.avg_pool2d_backward(gy.astype(np.float64), x.shape, **kw, backend="reference")
    assert_close(gx, egx, dtype, 9, name)
    if HAVE_TORCH and xs[0] != 0:
        xt = _t(x).requires_grad_()
        ty = F.avg_pool2d(xt, **kw)
        ty.backward(_t(gy))
        assert_close(y, ty.detach().numpy(), dtype, 9, name)
        assert_close(gx, xt.grad.numpy(), dtype, 9, name)


@pytest.mark.parametrize("backend,dtype,case", params(ADAPTIVE_CASES))
def test_adaptive_avg_pool(backend, dtype, case):
    name, xs, out = case
    x = randn(xs, dtype)
    y = fc.adaptive_avg_pool2d(x, out, backend=backend)
    ey = fc.adaptive_avg_pool2d(x.astype(np.float64), out, backend="reference")
    assert_close(y, ey, dtype, 64, name)
    gy = randn(y.shape, dtype, 3)
    gx = fc.adaptive_avg_pool2d_backward(gy, x.shape, backend=backend)
    egx = fc.adaptive_avg_pool2d_backward(gy.astype(np.float64), x.shape, backend="reference")
    assert_close(gx, egx, dtype, 64, name)
    if HAVE_TORCH:
        xt = _t(x).requires_grad_()
        ty = F.adaptive_avg_pool2d(xt, out)
        ty.backward(_t(gy))
        assert_close(y, ty.detach().numpy(), dtype, 64, name)
        assert_close(gx, xt.grad.numpy(), dtype, 64, name)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_pool_gradients_finite_differences(backend):
    # Distinct values so the max is unique and differentiable.
    x = np.random.default_rng(1).permutation(2 * 2 * 5 * 6).reshape(2, 2, 5, 6).astype(np.float64)
    kw = dict(kernel_size=3, stride=2, padding=1, ceil_mode=True)
    y, idx = fc.max_pool2d(x, **kw, return_indices=True, backend=backend)
    G = randn(y.shape, np.float64, 2)
    gx = fc.max_pool2d_backward(G, idx, x.shape, backend=backend)
    np.testing.assert_allclose(
        gx, fd_grad(lambda: float((fc.max_pool2d(x, **kw, backend=backend) * G).sum()), x),
        atol=1e-6)
    kwa = dict(kernel_size=3, stride=2, padding=1, ceil_mode=True, count_include_pad=False)
    G = randn(fc.avg_pool2d(x, **kwa, backend=backend).shape, np.float64, 3)
    np.testing.assert_allclose(
        fc.avg_pool2d_backward(G, x.shape, **kwa, backend=backend),
        fd_grad(lambda: float((fc.avg_pool2d(x, **kwa, backend=backend) * G).sum()), x), atol=1e-6)
    G = randn((2, 2, 3, 4), np.float64, 4)
    np.testing.assert_allclose(
        fc.adaptive_avg_pool2d_backward(G, x.shape, backend=backend),
        fd_grad(lambda: float((fc.adaptive_avg_pool2d(x, (3, 4), backend=backend) * G).sum()), x),
        atol=1e-6)


@requires_torch
@pytest.mark.parametrize("kw", [dict(kernel_size=3, padding=2), dict(kernel_size=2, padding=(0, 2))])
def test_padding_more_than_half_kernel_rejected_like_torch(kw):
    x = randn((1, 1, 8, 8), np.float32)
    with pytest.raises(RuntimeError):
        F.max_pool2d(_t(x), **kw)
    with pytest.raises(ValueError, match="padding"):
        fc.max_pool2d(x, **kw)
    with pytest.raises(ValueError, match="padding"):
        fc.avg_pool2d(x, **kw)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("xs,k,s,p,d", [
    ((1, 1, 1, 1), (1, 2), 1, (0, 1), 2),   # both taps of the only window in the padding
    ((2, 3, 4, 1), (2, 2), (1, 2), (1, 1), (1, 2)),  # rows of windows over one column
])
def test_max_pool_window_with_no_input_element(backend, xs, k, s, p, d):
    """Dilation can step a window over the whole input: -inf with index -1, and the
    backward gives such a window's gradient to no element (PyTorch reports an index
    outside the plane there, so the reference is the oracle)."""
    x = randn(xs, np.float32, 3)
    y, idx = fc.max_pool2d(x, k, s, p, d, return_indices=True, backend=backend)
    ey, eidx = fc.max_pool2d(x, k, s, p, d, return_indices=True, backend="reference")
    np.testing.assert_array_equal(y, ey)
    np.testing.assert_array_equal(idx, eidx)
    empty = idx == -1
    assert empty.all() and np.all(np.isneginf(y))
    gy = randn(y.shape, np.float32, 4)
    gx = fc.max_pool2d_backward(gy, idx, x.shape, backend=backend)
    egx = fc.max_pool2d_backward(gy, eidx, x.shape, backend="reference")
    assert_close(gx, egx, np.float32)
    assert not gx.any()
