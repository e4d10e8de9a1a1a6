"""Native convolution: picks the C++ entry point for an algorithm.

An algorithm is available as soon as its bindings exist in ``fastconv._native``.

Prepacked weights (for ``fastconv.compile``; the contract every algorithm follows):

* ``prepack(w, spec, algo)`` returns an opaque 1-D array derived from ``w`` alone (no
  activation), or ``None`` when ``algo`` has no prepacked form for ``spec``. It is valid for
  that weight, that ``spec``'s filter shape / stride / padding / groups and that ``algo``,
  on every ISA path (the layout does not depend on the ISA); any batch size and image
  size that keeps the same layer parameters may use it.
* ``conv2d_forward(..., packed=p)`` with ``p`` from ``prepack`` for the same (w, spec, algo)
  skips the per-call packing; ``packed=None`` packs per call, as before. ``w`` is still
  passed (shapes are read from it). A packed array from another algorithm or layer raises
  ``ValueError`` (its size is checked) or gives wrong results (its contents are not).
* Adding an algorithm: give it a ``_PREPACK[algo]`` entry ``(serves(spec), size(spec),
  pack_binding)`` and a forward binding that takes ``packed``; ``conv2d_forward`` routes
  ``packed`` to it.

Today: ``direct`` on 1x1 layers with padding 0 (the pointwise kernel:
``_native.conv_pointwise_pack`` / ``conv_pointwise_fwd``).
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
}
_OPS = ("conv2d_forward", "conv2d_backward_data", "conv2d_backward_weight")

ALGOS = {
    op: tuple(a for a, names in _BINDINGS.items() if names[i] and hasattr(_native, names[i]))
    for i, op in enumerate(_OPS)
}


def _winograd_m(algo: str) -> int:
    return 4 if algo == "winograd_f43" else 2


_NO_CLAMP = (-np.inf, np.inf)


def _pointwise(spec) -> bool:
    """The direct algorithm's pointwise kernel serves ``spec`` (1x1, padding 0)."""
    return (tuple(spec.w_shape[2:]) == (1, 1) and tuple(spec.padding) == (0, 0)
            and hasattr(_native, "conv_pointwise_fwd"))


def prepack(w, spec, algo):
    """The weight ``w`` packed once for ``algo``'s forward on layers like ``spec``, or None
    where ``algo`` has no prepacked form for it (see the module docstring's contract)."""
    if algo != "direct" or not _pointwise(spec):
        return None
    w = np.ascontiguousarray(w)
    packed = np.empty(_native.conv_pointwise_packed_size(spec.K, spec.C, spec.groups), w.dtype)
    _native.conv_pointwise_pack(w, packed, spec.groups)
    return packed


def conv2d_forward(x, w, b, spec, algo, residual=None, clamp=_NO_CLAMP, out=None, packed=None):
    """y = clamp(conv2d(x, w) + b + residual, *clamp), all in the kernel's output stage.

    ``residual`` (shaped like y, C-contiguous, same dtype) and ``clamp`` ((lo, hi):
    (0, inf) is ReLU, (0, 6) ReLU6) are the fused-inference extras; ``out`` is an
    optional preallocated y (C-contiguous, right shape and dtype, not overlapping x);
    ``packed`` is ``prepack(w, spec, algo)`` (or None: pack per call).
    """
    y = np.empty(spec.y_shape, x.dtype) if out is None else out
    if spec.N == 0:
        return y
    lo, hi = clamp
    if packed is not None:
        if algo != "direct" or not _pointwise(spec):
            raise ValueError(f"packed: algo {algo!r} has no prepacked form for this layer")
        if packed.dtype != x.dtype:
            raise TypeError(f"packed: expected dtype {x.dtype}, got {packed.dtype}")
        _native.conv_pointwise_fwd(x, w, packed, b, y, spec.stride, spec.groups, residual, lo, hi)
        return y
    fn = getattr(_native, _BINDINGS[algo][0])
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
