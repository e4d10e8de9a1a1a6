"""ReLU in numba.cuda (one thread per element, NaN propagating as torch.relu)."""
from __future__ import annotations

from numba import cuda

from ._common import launch1d, empty, flat, jit


@jit
def _relu(x, y):
    i = cuda.grid(1)
    if i < x.size:
        v = x[i]
        y[i] = v if not (v <= 0) else 0


@jit
def _relu_bwd(gy, y, gx):
    i = cuda.grid(1)
    if i < gy.size:
        gx[i] = gy[i] if y[i] > 0 else 0


def relu(x):
    y = empty(x.shape, x)
    if x.size:
        _relu[launch1d(x.size)](flat(x), flat(y))
    return y


def relu_backward(gy, y):
    gx = empty(gy.shape, gy)
    if gy.size:
        _relu_bwd[launch1d(gy.size)](flat(gy), flat(y), flat(gx))
    return gx
