"""Native batch normalisation on ``(N, C, L, 1)`` views (see ``functional._bn_view``).

Wrappers over ``csrc/cpu/norm.cpp``, which accumulates the statistics in double.
"""
from __future__ import annotations

import numpy as np

from ... import _native


def batch_norm_train(x, w, b, eps):
    """Normalises with the batch statistics -> ``(y, mean, biased_var)``."""
    C = x.shape[1]
    y = np.empty_like(x)
    mean, var = np.empty(C, x.dtype), np.empty(C, x.dtype)
    _native.batch_norm_train_fwd(x, w, b, float(eps), y, mean, var)
    return y, mean, var


def batch_norm_eval(x, mean, var, w, b, eps):
    """Normalises with the given (running) statistics."""
    y = np.empty_like(x)
    if y.size:
        _native.batch_norm_eval_fwd(x, mean, var, w, b, float(eps), y)
    return y


def batch_norm_backward(gy, x, w, mean, invstd, training):
    """-> ``(grad_x, grad_w, grad_b)``; ``training`` differentiates through the statistics."""
    C = x.shape[1]
    gx = np.empty_like(x)
    gw, gb = np.empty(C, x.dtype), np.empty(C, x.dtype)
    _native.batch_norm_bwd(gy, x, w, mean, invstd, bool(training), gx, gw, gb)
    return gx, gw, gb
