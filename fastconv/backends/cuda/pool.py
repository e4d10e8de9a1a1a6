"""Max, average and adaptive-average pooling on the GPU (forward and backward)."""
from __future__ import annotations

import cupy

from . import _runtime as rt

_F = "pool.cu"


def _window(spec):
    return tuple(rt.i32(v) for v in (spec.kernel[0], spec.kernel[1], spec.stride[0],
                                     spec.stride[1], spec.padding[0], spec.padding[1]))


def max_pool2d(x, spec, want_indices):
    """-> (y, int64 indices h*W + w per plane, or None)."""
    N, C, H, W = x.shape
    rt.check_elems("the input", x.size)
    y = cupy.empty(spec.y_shape, cupy.float32)
    idx = cupy.empty(spec.y_shape, cupy.int64) if want_indices else None
    if y.size:
        rt.launch(_F, "fc::max_pool_fwd", rt.grid1d(y.size),
                  (x, y, rt.ptr_or_null(idx), rt.i32(N * C), rt.i32(H), rt.i32(W),
                   rt.i32(spec.P), rt.i32(spec.Q), *_window(spec), rt.i32(spec.dilation[0]),
                   rt.i32(spec.dilation[1])))
    return y, idx


def max_pool2d_backward(gy, idx, x_shape):
    """Scatters gy through the saved indices (atomic adds: overlapping windows)."""
    N, C, H, W = x_shape
    rt.check_elems("the input", N * C * H * W)
    gx = cupy.zeros(x_shape, cupy.float32)
    if gy.size:
        rt.launch(_F, "fc::max_pool_bwd", rt.grid1d(gy.size),
                  (gy, idx, gx, rt.i32(N * C), rt.i32(H * W),
                   rt.i32(gy.shape[2] * gy.shape[3])))
    return gx


def _avg_args(spec):
    return (*_window(spec), rt.i32(int(spec.count_include_pad)),
            rt.i32(spec.divisor_override or 0))


def avg_pool2d(x, spec):
    rt.check_elems("the input", x.size)
    y = cupy.empty(spec.y_shape, cupy.float32)
    if y.size:
        rt.launch(_F, "fc::avg_pool_fwd", rt.grid1d(y.size),
                  (x, y, rt.i32(spec.N * spec.C), rt.i32(spec.H), rt.i32(spec.W),
                   rt.i32(spec.P), rt.i32(spec.Q), *_avg_args(spec)))
    return y


def avg_pool2d_backward(gy, spec):
    rt.check_elems("the input", spec.N * spec.C * spec.H * spec.W)
    gx = cupy.empty(spec.x_shape, cupy.float32)
    if gx.size:
        rt.launch(_F, "fc::avg_pool_bwd", rt.grid1d(gx.size),
                  (gy, gx, rt.i32(spec.N * spec.C), rt.i32(spec.H), rt.i32(spec.W),
                   rt.i32(spec.P), rt.i32(spec.Q), *_avg_args(spec)))
    return gx


def adaptive_avg_pool2d(x, out_hw):
    N, C, H, W = x.shape
    OH, OW = out_hw
    rt.check_elems("the input", x.size)
    rt.check_elems("the output", N * C * OH * OW)
    # (i+1)*size must fit in int32 inside the kernel.
    rt.check_elems("an adaptive window bound", (OH + 1) * H, (OW + 1) * W)
    y = cupy.empty((N, C, OH, OW), cupy.float32)
    if y.size:
        rt.launch(_F, "fc::adaptive_avg_fwd", rt.grid1d(y.size),
                  (x, y, rt.i32(N * C), rt.i32(H), rt.i32(W), rt.i32(OH), rt.i32(OW)))
    return y


def adaptive_avg_pool2d_backward(gy, x_shape):
    N, C, H, W = x_shape
    OH, OW = gy.shape[2:]
    rt.check_elems("the input", N * C * H * W)
    rt.check_elems("an adaptive window bound", (OH + 1) * H, (OW + 1) * W)
    gx = cupy.empty(x_shape, cupy.float32)
    if gx.size:
        rt.launch(_F, "fc::adaptive_avg_bwd", rt.grid1d(gx.size),
                  (gy, gx, rt.i32(N * C), rt.i32(H), rt.i32(W), rt.i32(OH), rt.i32(OW)))
    return gx
