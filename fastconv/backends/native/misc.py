"""Native ReLU, linear (on our GEMM) and softmax cross-entropy (``csrc/cpu/misc.cpp``)."""
from __future__ import annotations

import numpy as np

from ... import _native


def relu(x):
    """``max(x, 0)`` elementwise, any shape (NaN propagates)."""
    y = np.empty_like(x)
    _native.relu_fwd(x.reshape(-1), y.reshape(-1))
    return y


def relu_(x):
    """In-place ReLU of a C-contiguous float array; returns ``x``."""
    _native.relu_inplace(x.reshape(-1))
    return x


def relu_backward(gy, y):
    """``gy`` where ``y > 0``, else 0."""
    gx = np.empty_like(gy)
    _native.relu_bwd(gy.reshape(-1), y.reshape(-1), gx.reshape(-1))
    return gx


def linear(x, w, b):
    """``x @ w.T + b`` for a 2-D ``x``."""
    y = np.empty((x.shape[0], w.shape[0]), x.dtype)
    _native.linear_fwd(x, w, b, y)
    return y


def linear_backward(gy, x, w):
    """-> ``(grad_x, grad_w, grad_b)`` for 2-D ``gy`` and ``x``."""
    gx, gw = np.empty_like(x), np.empty_like(w)
    gb = np.empty(w.shape[0], x.dtype)
    _native.linear_bwd(gy, x, w, gx, gw, gb)
    return gx, gw, gb


def cross_entropy(logits, target):
    """Mean softmax cross-entropy (NaN for an empty batch, as PyTorch)."""
    return _native.cross_entropy_fwd(logits, target)


def cross_entropy_backward(logits, target):
    """Gradient of the mean cross-entropy with respect to the logits."""
    g = np.empty_like(logits)
    _native.cross_entropy_bwd(logits, target, g)
    return g
