"""Native pooling: max, average and adaptive average, forward and backward.

Thin wrappers over the C++ kernels in ``csrc/cpu/pool.cpp``: they allocate the outputs
and hand over the validated geometry from :class:`fastconv._args.PoolSpec`. Zero-size
batches return at once (nothing to compute).
"""
from __future__ import annotations

import numpy as np

from ... import _native


def max_pool2d(x, spec, want_indices):
    """Max pooling -> ``(y, indices or None)``; indices are int64 ``h*W + w`` per plane."""
    y = np.empty(spec.y_shape, x.dtype)
    idx = np.empty(spec.y_shape, np.int64) if want_indices else None
    if y.size:
        _native.max_pool2d_fwd(x, y, idx, spec.kernel, spec.stride, spec.padding, spec.dilation)
    return y, idx


def max_pool2d_backward(gy, idx, x_shape):
    """Scatter-adds ``gy`` into a zero input gradient through the max-pool indices."""
    gx = np.empty(x_shape, gy.dtype)
    if gx.size:
        if gy.size:
            _native.max_pool2d_bwd(gy, idx, gx)
        else:
            gx.fill(0)
    return gx


def avg_pool2d(x, spec):
    """Average pooling (ceil_mode, count_include_pad and divisor_override as PyTorch)."""
    y = np.empty(spec.y_shape, x.dtype)
    if y.size:
        _native.avg_pool2d_fwd(x, y, spec.kernel, spec.stride, spec.padding,
                               spec.count_include_pad, spec.divisor_override or 0)
    return y


def avg_pool2d_backward(gy, spec):
    """Gradient of :func:`avg_pool2d` with respect to its input."""
    gx = np.empty(spec.x_shape, gy.dtype)
    if gx.size:
        _native.avg_pool2d_bwd(gy, gx, spec.kernel, spec.stride, spec.padding,
                               spec.count_include_pad, spec.divisor_override or 0)
    return gx


def adaptive_avg_pool2d(x, out_hw):
    """Adaptive average pooling to ``out_hw`` (may exceed the input size)."""
    y = np.empty((x.shape[0], x.shape[1], *out_hw), x.dtype)
    if y.size:
        _native.adaptive_avg_pool2d_fwd(x, y)
    return y


def adaptive_avg_pool2d_backward(gy, x_shape):
    """Gradient of :func:`adaptive_avg_pool2d` with respect to its input."""
    gx = np.empty(x_shape, gy.dtype)
    if gx.size:
        _native.adaptive_avg_pool2d_bwd(gy, gx)
    return gx
