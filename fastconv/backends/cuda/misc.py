"""ReLU (our kernels), linear and cross-entropy (CuPy operations: cupy.matmul for the
GEMM, CuPy reductions for the log-softmax)."""
from __future__ import annotations

import cupy

from . import _runtime as rt

_F = "misc.cu"


def relu(x):
    y = cupy.empty_like(x)
    rt.check_elems("the input", x.size)
    if x.size:
        vec = int(rt.aligned16(x, y))
        rt.launch(_F, "fc::relu_fwd", rt.grid1d(x.size // 4 if vec else x.size),
                  (x, y, rt.i32(x.size), rt.i32(vec)))
    return y


def relu_backward(gy, y):
    gx = cupy.empty_like(gy)
    rt.check_elems("the input", gy.size)
    if gy.size:
        vec = int(rt.aligned16(gy, y, gx))
        rt.launch(_F, "fc::relu_bwd", rt.grid1d(gy.size // 4 if vec else gy.size),
                  (gy, y, gx, rt.i32(gy.size), rt.i32(vec)))
    return gx


def linear(x, w, b):
    y = cupy.matmul(x, w.T)
    if b is not None:
        y += b
    return y


def linear_backward(gy, x, w):
    return cupy.matmul(gy, w), cupy.matmul(gy.T, x), gy.sum(axis=0)


def _log_softmax(logits):
    z = logits - logits.max(axis=1, keepdims=True)
    return z - cupy.log(cupy.exp(z).sum(axis=1, keepdims=True))


def cross_entropy(logits, target):
    """Mean cross-entropy as a 0-d device array (the caller converts it to a float)."""
    n = logits.shape[0]
    if n == 0:
        return cupy.asarray(float("nan"), cupy.float32)
    lsm = _log_softmax(logits)
    return -lsm[cupy.arange(n), target].mean()


def cross_entropy_backward(logits, target):
    n = logits.shape[0]
    g = cupy.exp(_log_softmax(logits))
    if n:
        g[cupy.arange(n), target] -= 1
    return g / max(n, 1)
