"""Native convolution: picks the C++ entry point for an algorithm.

An algorithm is available as soon as its bindings exist in ``fastconv._native``.
"""
from __future__ import annotations

import numpy as np

from ... import _native

# algo -> (forward, backward-data, backward-weight) binding names; None: not offered.
_BINDINGS = {
    "direct": ("conv_direct_fwd", "conv_direct_bwd_data", "conv_direct_bwd_weight"),
    "im2col": ("conv_im2col_fwd", "conv_im2col_bwd_data", "conv_im2col_bwd_weight"),
    "winograd_f23": ("conv_winograd_fwd", "conv_winograd_bwd_data", None),
    "winograd_f43": ("conv_winograd_fwd", "conv_winograd_bwd_data", None),
    "depthwise": ("conv_depthwise_fwd", "conv_depthwise_bwd_data", "conv_depthwise_bwd_weight"),
}
_OPS = ("conv2d_forward", "conv2d_backward_data", "conv2d_backward_weight")

ALGOS = {
    op: tuple(a for a, names in _BINDINGS.items() if names[i] and hasattr(_native, names[i]))
    for i, op in enumerate(_OPS)
}


def _winograd_m(algo: str) -> int:
    return 4 if algo == "winograd_f43" else 2


_NO_CLAMP = (-np.inf, np.inf)


def conv2d_forward(x, w, b, spec, algo, residual=None, clamp=_NO_CLAMP, out=None):
    """y = clamp(conv2d(x, w) + b + residual, *clamp), all in the kernel's output stage.

    ``residual`` (shaped like y, C-contiguous, same dtype) and ``clamp`` ((lo, hi):
    (0, inf) is ReLU, (0, 6) ReLU6) are the fused-inference extras; ``out`` is an
    optional preallocated y (C-contiguous, right shape and dtype, not overlapping x).
    """
    y = np.empty(spec.y_shape, x.dtype) if out is None else out
    if spec.N == 0:
        return y
    fn = getattr(_native, _BINDINGS[algo][0])
    lo, hi = clamp
    if algo.startswith("winograd"):
        fn(x, w, b, y, spec.padding, _winograd_m(algo), residual, lo, hi)
    else:
        fn(x, w, b, y, spec.stride, spec.padding, spec.dilation, spec.groups, residual, lo, hi)
    return y


def conv2d_backward_data(gy, w, spec, algo):
    gx = np.empty(spec.x_shape, gy.dtype)
    if spec.N == 0:
        return gx
    fn = getattr(_native, _BINDINGS[algo][1])
    if algo.startswith("winograd"):
        fn(gy, w, gx, spec.padding, _winograd_m(algo))
    else:
        fn(gy, w, gx, spec.stride, spec.padding, spec.dilation, spec.groups)
    return gx


def conv2d_backward_weight(gy, x, spec, algo):
    if spec.N == 0:
        return np.zeros(spec.w_shape, gy.dtype)
    gw = np.empty(spec.w_shape, gy.dtype)
    getattr(_native, _BINDINGS[algo][2])(gy, x, gw, spec.stride, spec.padding, spec.dilation,
                                         spec.groups)
    return gw
