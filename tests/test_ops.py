"""relu, linear and cross_entropy (forward and backward) on every available CPU backend
against the reference, PyTorch and finite differences."""
from __future__ import annotations

import numpy as np
import pytest

import fastconv as fc

from _backends import CPU_BACKENDS, dtypes
from conftest import HAVE_TORCH, assert_close, fd_grad, randn

if HAVE_TORCH:
    import torch
    import torch.nn.functional as F


def params(extra):
    return [pytest.param(be, dt, e, id=f"{be}-{np.dtype(dt).name}-{i}")
            for be in CPU_BACKENDS for dt in dtypes(be) for i, e in enumerate(extra)]


@pytest.mark.parametrize("backend,dtype,shape", params([(7,), (2, 3, 5, 5), (0, 4)]))
def test_relu(backend, dtype, shape):
    x = randn(shape, dtype)
    y = fc.relu(x, backend=backend)
    np.testing.assert_array_equal(y, np.where(x > 0, x, 0))
    gy = randn(shape, dtype, 1)
    np.testing.assert_array_equal(fc.relu_backward(gy, y, backend=backend),
                                  np.where(y > 0, gy, 0))
    assert y.dtype == dtype


@pytest.mark.parametrize("backend,dtype,shapes",
                         params([((5, 7), 3), ((1, 1), 1), ((2, 3, 9), 17), ((0, 4), 2)]))
@pytest.mark.parametrize("bias", [True, False])
def test_linear(backend, dtype, shapes, bias):
    xs, out = shapes
    x, w = randn(xs, dtype), randn((out, xs[-1]), dtype, 1)
    b = randn((out,), dtype, 2) if bias else None
    y = fc.linear(x, w, b, backend=backend)
    ey = fc.linear(x.astype(np.float64), w.astype(np.float64),
                   None if b is None else b.astype(np.float64), backend="reference")
    assert_close(y, ey, dtype, xs[-1])
    gy = randn(y.shape, dtype, 3)
    gx, gw, gb = fc.linear_backward(gy, x, w, backend=backend)
    assert gx.shape == x.shape and gw.shape == w.shape and gb.shape == (out,)
    if HAVE_TORCH:
        xt, wt = torch.from_numpy(x).requires_grad_(), torch.from_numpy(w).requires_grad_()
        bt = torch.from_numpy(b).requires_grad_() if b is not None else None
        ty = F.linear(xt, wt, bt)
        ty.backward(torch.from_numpy(gy))
        n = max(1, int(np.prod(xs[:-1])))
        assert_close(y, ty.detach().numpy(), dtype, xs[-1])
        assert_close(gx, xt.grad.numpy(), dtype, out)
        assert_close(gw, wt.grad.numpy(), dtype, n)
        if bias:
            assert_close(gb, bt.grad.numpy(), dtype, n)


@pytest.mark.parametrize("backend,dtype,n", params([1, 5, 64]))
def test_cross_entropy(backend, dtype, n):
    logits = randn((n, 10), dtype) * 20  # large logits: needs the stable log-softmax
    target = np.random.default_rng(1).integers(0, 10, n)
    loss = fc.cross_entropy(logits, target, backend=backend)
    g = fc.cross_entropy_backward(logits, target, backend=backend)
    assert np.isfinite(loss) and g.dtype == dtype
    ref = fc.cross_entropy(logits.astype(np.float64), target, backend="reference")
    assert abs(loss - ref) <= 1e-5 * max(1, abs(ref))
    if HAVE_TORCH:
        lt = torch.from_numpy(logits).requires_grad_()
        tl = F.cross_entropy(lt, torch.from_numpy(target))
        tl.backward()
        assert abs(loss - tl.item()) <= 1e-5 * max(1, abs(tl.item()))
        assert_close(g, lt.grad.numpy(), dtype, 10)


def test_cross_entropy_finite_differences():
    logits = randn((4, 5), np.float64)
    target = np.array([0, 4, 2, 2])
    g = fc.cross_entropy_backward(logits, target)
    num = fd_grad(lambda: fc.cross_entropy(logits, target), logits)
    np.testing.assert_allclose(g, num, rtol=1e-6, atol=1e-8)


def test_cross_entropy_empty_batch_is_nan_like_torch():
    assert np.isnan(fc.cross_entropy(np.zeros((0, 3), np.float32), np.zeros(0, np.int64)))
