"""ReLU in Numba, and the ops this backend delegates to the native (C++) backend.

``linear``/``linear_backward`` are one GEMM each and ``cross_entropy`` a row-wise
log-softmax: a Numba version would only wrap the same BLAS call, so this backend
forwards them explicitly to ``fastconv.backends.native`` (imported on first use).
"""
from __future__ import annotations

import numpy as np
from numba import prange

from ._common import strict_kernel


@strict_kernel
def _relu(x, y):
    for i in prange(x.size):
        v = x[i]
        # "not (v <= 0)" keeps NaN (as torch.relu / np.maximum do) and maps -0.0 to 0.
        y[i] = v if not (v <= 0) else 0


@strict_kernel
def _relu_bwd(gy, y, gx):
    for i in prange(gy.size):
        gx[i] = gy[i] if y[i] > 0 else 0


def relu(x):
    """max(x, 0), NaN propagating."""
    y = np.empty_like(x)
    _relu(x.reshape(-1), y.reshape(-1))
    return y


def relu_backward(gy, y):
    """grad_out where the forward output was positive, else 0."""
    gx = np.empty_like(gy)
    _relu_bwd(gy.reshape(-1), y.reshape(-1), gx.reshape(-1))
    return gx


def _native():
    from .. import native

    return native


def linear(x, w, b):
    """Delegated to the native backend (a single BLAS-class GEMM)."""
    return _native().linear(x, w, b)


def linear_backward(gy, x, w):
    """Delegated to the native backend."""
    return _native().linear_backward(gy, x, w)


def cross_entropy(logits, target):
    """Delegated to the native backend."""
    return _native().cross_entropy(logits, target)


def cross_entropy_backward(logits, target):
    """Delegated to the native backend."""
    return _native().cross_entropy_backward(logits, target)
