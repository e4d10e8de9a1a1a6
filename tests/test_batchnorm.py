"""batch_norm forward (train/eval, running statistics) and backward on every available CPU
backend against the reference and PyTorch; float64 finite differences."""
from __future__ import annotations

import numpy as np
import pytest

import fastconv as fc

from _backends import CPU_BACKENDS, dtypes
from conftest import HAVE_TORCH, assert_close, fd_grad, randn

if HAVE_TORCH:
    import torch
    import torch.nn.functional as F

SHAPES = [(4, 3, 5, 6), (2, 16, 7, 7), (1, 2, 3, 1), (5, 4), (3, 3, 10)]


def params():
    return [pytest.param(be, dt, s, id=f"{be}-{np.dtype(dt).name}-{'x'.join(map(str, s))}")
            for be in CPU_BACKENDS for dt in dtypes(be) for s in SHAPES]


def _t(a):
    return torch.from_numpy(np.ascontiguousarray(a))


@pytest.mark.parametrize("backend,dtype,shape", params())
@pytest.mark.parametrize("training", [True, False])
def test_batch_norm_forward_backward(backend, dtype, shape, training):
    C = shape[1]
    x = randn(shape, dtype) * 3 + 1
    w, b = randn((C,), dtype, 1), randn((C,), dtype, 2)
    rm, rv = randn((C,), dtype, 3), np.abs(randn((C,), dtype, 4)) + 0.5
    rm0, rv0 = rm.copy(), rv.copy()
    y, mean, invstd = fc.batch_norm(x, rm, rv, w, b, training=training, momentum=0.2, eps=1e-3,
                                    return_stats=True, backend=backend)
    assert y.dtype == dtype and y.shape == x.shape
    gy = randn(shape, dtype, 5)
    gx, gw, gb = fc.batch_norm_backward(gy, x, w, mean, invstd, training=training,
                                        backend=backend)
    m = x.size // C
    if HAVE_TORCH:
        trm, trv = _t(rm0.copy()), _t(rv0.copy())
        xt, wt, bt = _t(x).requires_grad_(), _t(w).requires_grad_(), _t(b).requires_grad_()
        ty = F.batch_norm(xt, trm, trv, wt, bt, training=training, momentum=0.2, eps=1e-3)
        ty.backward(_t(gy))
        assert_close(y, ty.detach().numpy(), dtype, m, "y")
        assert_close(rm, trm.numpy(), dtype, m, "running_mean")
        assert_close(rv, trv.numpy(), dtype, m, "running_var")
        assert_close(gx, xt.grad.numpy(), dtype, m, "grad_x")
        assert_close(gw, wt.grad.numpy(), dtype, m, "grad_w")
        assert_close(gb, bt.grad.numpy(), dtype, m, "grad_b")
    ey = fc.batch_norm(x.astype(np.float64), rm0.astype(np.float64), rv0.astype(np.float64),
                       w.astype(np.float64), b.astype(np.float64), training=training,
                       momentum=0.2, eps=1e-3, backend="reference")
    assert_close(y, ey, dtype, m, "y vs reference")


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("training", [True, False])
def test_batch_norm_gradients_finite_differences(backend, training):
    x = randn((3, 2, 3, 2), np.float64)
    w, b = randn((2,), np.float64, 1), randn((2,), np.float64, 2)
    rm, rv = randn((2,), np.float64, 3), np.abs(randn((2,), np.float64, 4)) + 0.5
    G = randn(x.shape, np.float64, 6)

    def loss():
        return float((fc.batch_norm(x, rm.copy(), rv.copy(), w, b, training=training,
                                    backend=backend) * G).sum())

    _, mean, invstd = fc.batch_norm(x, rm.copy(), rv.copy(), w, b, training=training,
                                    return_stats=True, backend=backend)
    gx, gw, gb = fc.batch_norm_backward(G, x, w, mean, invstd, training=training,
                                        backend=backend)
    for got, arr in ((gx, x), (gw, w), (gb, b)):
        num = fd_grad(loss, arr)
        np.testing.assert_allclose(got, num, rtol=1e-5, atol=1e-6)


def test_batch_norm_single_value_per_channel_rejected_in_training():
    x = randn((1, 3, 1, 1), np.float32)
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        fc.batch_norm(x, None, None, training=True)
    y = fc.batch_norm(x, np.zeros(3, np.float32), np.ones(3, np.float32), training=False)
    assert y.shape == x.shape


def test_batch_norm_eval_needs_running_stats_and_defaults():
    x = randn((2, 3, 4, 4), np.float32)
    with pytest.raises(ValueError, match="running_mean"):
        fc.batch_norm(x, None, None, training=False)
    y = fc.batch_norm(x, np.zeros(3, np.float32), np.ones(3, np.float32), eps=0.0)
    np.testing.assert_allclose(y, x, rtol=1e-6)
    y2 = fc.batch_norm(x, None, None, training=True)  # no running stats: allowed
    assert abs(float(y2.mean())) < 1e-5
