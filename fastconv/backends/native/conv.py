"""Native convolution: picks the C++ entry point for an algorithm.

An algorithm is available as soon as its bindings exist in ``fastconv._native``.

Prepacked weights (for ``fastconv.compile``; the contract every algorithm follows):

* ``prepack(w, spec, algo)`` returns an opaque 1-D array derived from ``w`` alone (no
  activation), or ``None`` when ``algo`` has no prepacked form for ``spec``. It is valid for
  that weight, that ``spec``'s filter shape / stride / padding / groups and that ``algo``,
  on every ISA path (the layout does not depend on the ISA) and any batch size. ``direct``'s
  form also depends on the image size (its channels-last path serves small planes, 1x1
  layers included), so a plane of another size needs its own pack (``fastconv.compile``
  packs per input shape).
* ``conv2d_forward(..., packed=p)`` with ``p`` from ``prepack`` for the same (w, spec, algo)
  skips the per-call packing; ``packed=None`` packs per call, as before. ``w`` is still
  passed (shapes are read from it). A packed array from another algorithm or layer raises
  ``ValueError`` (its size is checked) or gives wrong results (its contents are not).
* Adding an algorithm: a pack binding, a forward binding that takes the packed array, and
  a branch in ``prepack`` and ``conv2d_forward``.

Today: ``winograd_f23`` / ``winograd_f43`` (the transformed filters:
``_native.conv_winograd_pack``), ``direct`` on its channels-last path (small planes, 1x1
layers with a small output plane among them: ``_native.conv_direct_pack`` /
``conv_direct_fwd_packed``) and ``direct`` on the other 1x1 layers with padding 0 (the
pointwise kernel's panels: ``_native.conv_pointwise_pack`` / ``conv_pointwise_fwd``).
"""
from __future__ import annotations

import functools

import numpy as np

from ... import _native
from ..._dispatch import CONV_OPS, WINOGRAD_TILES, is_winograd, winograd_tile

# algo -> (forward, backward-data, backward-weight) binding names; None: not offered.
_BINDINGS = {
    "direct": ("conv_direct_fwd", "conv_direct_bwd_data", "conv_direct_bwd_weight"),
    "im2col": ("conv_im2col_fwd", "conv_im2col_bwd_data", "conv_im2col_bwd_weight"),
    # One binding pair serves every tile of the table; m is an argument.
    **{a: ("conv_winograd_fwd", "conv_winograd_bwd_data", None) for a in WINOGRAD_TILES},
    "depthwise": ("conv_depthwise_fwd", "conv_depthwise_bwd_data", "conv_depthwise_bwd_weight"),
}

ALGOS = {
    op: tuple(a for a, names in _BINDINGS.items() if names[i] and hasattr(_native, names[i]))
    for i, op in enumerate(CONV_OPS)
}


# The depthwise kernel splits each buffered input row into stride-many column phases.
DEPTHWISE_MAX_STRIDE = 64


def algo_obstacle(algo: str, op: str, spec) -> str | None:
    """This backend's own limits on an algorithm (the dispatcher reports them)."""
    if algo == "depthwise" and spec.stride[1] > DEPTHWISE_MAX_STRIDE:
        return (f"the depthwise kernel buffers {spec.stride[1]} column phases per row "
                f"(stride {spec.stride}); it serves strides up to {DEPTHWISE_MAX_STRIDE}")
    return None


_NO_CLAMP = (-np.inf, np.inf)


def _pointwise(spec) -> bool:
    """The direct algorithm's pointwise kernel serves ``spec`` (1x1, padding 0)."""
    return (tuple(spec.w_shape[2:]) == (1, 1) and tuple(spec.padding) == (0, 0)
            and hasattr(_native, "conv_pointwise_fwd"))


def prepack(w, spec, algo):
    """The filters ``w`` prepared once for ``algo``'s forward on layers like ``spec``, to
    pass as ``packed=`` to ``conv2d_forward`` (inference: the forward then skips its
    per-call packing), or None where ``algo`` has no prepacked form for it.

    ``winograd_f23`` / ``winograd_f43``: a 1-D array of ``w``'s dtype holding the (m+2)^2
    transformed filter matrices; ``direct`` on a small plane (7 x 7, 14 x 14: its
    channels-last path, which also takes 1x1 layers with a small output plane): that
    path's filter panels, tagged with the instruction set that packed them; ``direct`` on
    the other 1x1 padding-0 layers: the pointwise kernel's filter panels.
    The array is a snapshot: later changes to ``w`` are not seen.
    """
    if is_winograd(algo):
        w = np.ascontiguousarray(w)
        if w.dtype not in (np.float32, np.float64) or w.ndim != 4:
            raise TypeError(f"prepack: w must be a float32/float64 (K, C, 3, 3) array, got "
                            f"{w.dtype} with shape {w.shape}")
        m = winograd_tile(algo)
        packed = np.empty(_native.conv_winograd_packed_len(w.shape[0], w.shape[1], m), w.dtype)
        _native.conv_winograd_pack(w, m, packed)
        return packed
    if algo != "direct":
        return None
    w = np.ascontiguousarray(w)
    packed = _direct_prepack(w, spec)
    if packed is not None or not _pointwise(spec):
        return packed
    packed = np.empty(_native.conv_pointwise_packed_size(spec.K, spec.C, spec.groups), w.dtype)
    _native.conv_pointwise_pack(w, packed, spec.groups)
    return packed


def _direct_args(spec, dtype):
    """One-image x and y of spec's geometry (never touched: the binding reads shapes)."""
    x = np.empty((1,) + tuple(spec.x_shape[1:]), dtype)
    y = np.empty((1,) + tuple(spec.y_shape[1:]), dtype)
    return x, y, spec.stride, spec.padding, spec.dilation, spec.groups


def _direct_packed_size(w, spec) -> int:
    """Elements of the direct kernel's channels-last prepacked form for ``spec`` (0: it
    has none). On a 1x1 layer it has one for small output planes, where that path takes
    over from the pointwise kernel. Asked once per layer geometry, dtype and instruction
    set (the forward asks on every prepacked 1x1 call)."""
    if w.dtype not in (np.float32, np.float64) or not hasattr(_native, "conv_direct_pack"):
        return 0
    return _direct_packed_size_of(tuple(spec.x_shape[1:]), tuple(spec.w_shape),
                                  tuple(spec.y_shape[1:]), tuple(spec.stride),
                                  tuple(spec.padding), tuple(spec.dilation), int(spec.groups),
                                  w.dtype.str, _native.active_isa())


@functools.lru_cache(maxsize=1024)
def _direct_packed_size_of(x1, ws, y1, stride, padding, dilation, groups, dtype, isa) -> int:
    # The binding reads only shapes: these arrays are never touched.
    return _native.conv_direct_packed_size(np.empty((1,) + x1, dtype), np.empty(ws, dtype),
                                           np.empty((1,) + y1, dtype), stride, padding,
                                           dilation, groups)


def _direct_prepack(w, spec):
    """The direct kernel's channels-last filter panels for small planes (its other paths
    have no prepacked form: None). The form is tied to the instruction set that packed it
    (the kernel refuses it after a set_isa to another)."""
    n = _direct_packed_size(w, spec)
    if n == 0:
        return None
    packed = np.empty(n, w.dtype)
    x, y, *geo = _direct_args(spec, w.dtype)
    _native.conv_direct_pack(x, w, y, *geo, packed)
    return packed


def conv2d_forward(x, w, b, spec, algo, residual=None, clamp=_NO_CLAMP, out=None, packed=None):
    """y = clamp(conv2d(x, w) + b + residual, *clamp), all in the kernel's output stage.

    ``residual`` (shaped like y, C-contiguous, same dtype) and ``clamp`` ((lo, hi):
    (0, inf) is ReLU, (0, 6) ReLU6) are the fused-inference extras; ``out`` is an
    optional preallocated y (C-contiguous, right shape and dtype, not overlapping x);
    ``packed`` is ``prepack(w, spec, algo)`` (None: pack or transform ``w`` in this call).
    """
    y = np.empty(spec.y_shape, x.dtype) if out is None else out
    if spec.N == 0:
        return y
    lo, hi = clamp
    if packed is not None:
        # Checked here: the binding's optional array would otherwise take a converted
        # temporary of the wrong dtype.
        if not (isinstance(packed, np.ndarray) and packed.dtype == x.dtype and packed.ndim == 1
                and packed.flags.c_contiguous):
            raise TypeError(f"packed must be a 1-D C-contiguous {x.dtype} array from "
                            f"prepack(); got {type(packed).__name__} "
                            f"{getattr(packed, 'dtype', '')} {getattr(packed, 'shape', '')}")
        if algo == "direct" and _pointwise(spec) and not _direct_packed_size(w, spec):
            _native.conv_pointwise_fwd(x, w, packed, b, y, spec.stride, spec.groups, residual,
                                       lo, hi)
            return y
        if algo == "direct":
            _native.conv_direct_fwd_packed(x, w, packed, b, y, spec.stride, spec.padding,
                                           spec.dilation, spec.groups, residual, lo, hi)
            return y
        if not is_winograd(algo):
            raise ValueError(f"packed: algo {algo!r} has no prepacked form for this layer")
    fn = getattr(_native, _BINDINGS[algo][0])
    if is_winograd(algo):
        fn(x, w, b, y, spec.padding, winograd_tile(algo), residual, lo, hi, packed)
    else:
        fn(x, w, b, y, spec.stride, spec.padding, spec.dilation, spec.groups, residual, lo, hi)
    return y


def conv2d_backward_data(gy, w, spec, algo):
    gx = np.empty(spec.x_shape, gy.dtype)
    if spec.N == 0:
        return gx
    fn = getattr(_native, _BINDINGS[algo][1])
    if is_winograd(algo):
        fn(gy, w, gx, spec.padding, winograd_tile(algo))
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
