"""Batch normalisation on the GPU: split per-channel reductions + element-wise passes."""
from __future__ import annotations

import cupy

from . import _runtime as rt

_F = "norm.cu"


def _splits(C, M):
    """Chunks per channel: about four blocks per SM in all, >= 2048 values per chunk."""
    want = -(-4 * rt.sm_count() // C)
    return int(max(1, min(want, -(-M // 2048), 65535)))


def _dims(x):
    N, C = x.shape[:2]
    L = x.size // max(N * C, 1)
    rt.check_elems("the input", x.size)
    return N, C, L


def _vec(*vs):
    """Per-channel vectors as the kernels index them (a strided view would be misread)."""
    return tuple(cupy.ascontiguousarray(v) for v in vs)


def batch_norm_train(x, w, b, eps):
    """-> (y, batch mean, biased batch variance), each float32."""
    N, C, L = _dims(x)
    w, b = _vec(w, b)
    y = cupy.empty_like(x)
    mean = cupy.empty(C, cupy.float32)
    var = cupy.empty(C, cupy.float32)
    coef = cupy.empty(2 * C, cupy.float32)
    S = _splits(C, N * L)
    part = cupy.empty(2 * C * S, cupy.float32)
    dims = (rt.i32(N), rt.i32(C), rt.i32(L))
    rt.launch(_F, "fc::bn_stats_partial", (C, S), (x, part, *dims, rt.i32(S)))
    rt.launch(_F, "fc::bn_stats_finalize", (-(-C // rt.THREADS),),
              (part, w, b, mean, var, coef, *dims, rt.i32(S), rt.f32(eps)))
    _apply(x, mean, coef, y, N, C, L)
    return y, mean, var


def _apply(x, mean, coef, y, N, C, L):
    vec = int(L % 4 == 0 and rt.aligned16(x, y))
    n = x.size // 4 if vec else x.size
    rt.launch(_F, "fc::bn_apply", rt.grid1d(n),
              (x, mean, coef, y, rt.i32(N), rt.i32(C), rt.i32(L), rt.i32(vec)))


def batch_norm_eval(x, mean, var, w, b, eps):
    """Normalises with the given (running) statistics."""
    N, C, L = _dims(x)
    mean, var, w, b = _vec(mean, var, w, b)
    y = cupy.empty_like(x)
    if x.size == 0:
        return y
    coef = cupy.empty(2 * C, cupy.float32)
    rt.launch(_F, "fc::bn_eval_coef", (-(-C // rt.THREADS),),
              (var, w, b, coef, rt.i32(C), rt.f32(eps)))
    _apply(x, mean, coef, y, N, C, L)
    return y


def batch_norm_backward(gy, x, w, mean, invstd, training):
    """-> (gx, gw, gb); training=False treats mean/invstd as constants."""
    N, C, L = _dims(x)
    w, mean, invstd = _vec(w, mean, invstd)
    gx = cupy.empty_like(x)
    gw = cupy.empty(C, cupy.float32)
    gb = cupy.empty(C, cupy.float32)
    S = _splits(C, N * L)
    part = cupy.empty(2 * C * S, cupy.float32)
    coef = cupy.empty(3 * C, cupy.float32)
    dims = (rt.i32(N), rt.i32(C), rt.i32(L))
    rt.launch(_F, "fc::bn_bwd_partial", (C, S), (gy, x, mean, invstd, part, *dims, rt.i32(S)))
    rt.launch(_F, "fc::bn_bwd_finalize", (-(-C // rt.THREADS),),
              (part, w, invstd, gw, gb, coef, *dims, rt.i32(S), rt.i32(int(training))))
    if x.size:
        vec = int(L % 4 == 0 and rt.aligned16(gy, x, gx))
        n = x.size // 4 if vec else x.size
        rt.launch(_F, "fc::bn_bwd_apply", rt.grid1d(n),
                  (gy, x, mean, coef, gx, rt.i32(N), rt.i32(C), rt.i32(L), rt.i32(vec)))
    return gx, gw, gb
