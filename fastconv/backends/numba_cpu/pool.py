"""Max, average and adaptive-average pooling (forward and backward) in Numba.

All kernels parallelise over (image, channel) planes: a backward scatter of one plane
never touches another, so overlapping windows need no atomics. Compiled without
fastmath so NaN propagates through max pooling exactly as in PyTorch (a NaN in a
window wins; the last NaN's index is kept).
"""
from __future__ import annotations

import numpy as np
from numba import prange

from ._common import strict_kernel


@strict_kernel
def _max_fwd(x, y, idx, kh, kw, sh, sw, ph, pw, dh, dw):
    N, C, H, W = x.shape
    P, Q = y.shape[2], y.shape[3]
    for nc in prange(N * C):
        n = nc // C
        c = nc % C
        plane = x[n, c]
        for p in range(P):
            h0 = p * sh - ph
            for q in range(Q):
                w0 = q * sw - pw
                best = -np.inf
                bi = -1
                for i in range(kh):
                    hh = h0 + i * dh
                    if hh < 0 or hh >= H:
                        continue
                    for j in range(kw):
                        ww = w0 + j * dw
                        if ww < 0 or ww >= W:
                            continue
                        v = plane[hh, ww]
                        if bi < 0:
                            bi = hh * W + ww
                        if v > best or np.isnan(v):
                            best = v
                            bi = hh * W + ww
                y[n, c, p, q] = best
                idx[n, c, p, q] = bi


@strict_kernel
def _max_bwd(gy, idx, gx):
    N, C, P, Q = gy.shape
    HW = gx.shape[2] * gx.shape[3]
    for nc in prange(N * C):
        n = nc // C
        c = nc % C
        dst = gx[n, c].reshape(HW)
        for i in range(HW):
            dst[i] = 0
        for p in range(P):
            for q in range(Q):
                k = idx[n, c, p, q]
                if k >= 0:  # -1: the window held no input element
                    dst[k] += gy[n, c, p, q]


@strict_kernel
def _window_fwd(x, y, hl, hh, wl, wh, div):
    """y = window sum / divisor; empty windows (entirely padding) give 0 as PyTorch."""
    N, C = x.shape[0], x.shape[1]
    P, Q = y.shape[2], y.shape[3]
    for nc in prange(N * C):
        n = nc // C
        c = nc % C
        plane = x[n, c]
        for p in range(P):
            for q in range(Q):
                acc = 0.0
                for i in range(hl[p], hh[p]):
                    for j in range(wl[q], wh[q]):
                        acc += plane[i, j]
                if hh[p] > hl[p] and wh[q] > wl[q]:
                    y[n, c, p, q] = acc / div[p, q]
                else:
                    y[n, c, p, q] = 0


@strict_kernel
def _window_bwd(gy, gx, hl, hh, wl, wh, div):
    N, C, P, Q = gy.shape
    H, W = gx.shape[2], gx.shape[3]
    for nc in prange(N * C):
        n = nc // C
        c = nc % C
        plane = gx[n, c]
        for i in range(H):
            for j in range(W):
                plane[i, j] = 0
        for p in range(P):
            for q in range(Q):
                if hh[p] <= hl[p] or wh[q] <= wl[q]:
                    continue
                g = gy[n, c, p, q] / div[p, q]
                for i in range(hl[p], hh[p]):
                    for j in range(wl[q], wh[q]):
                        plane[i, j] += g


def _avg_bounds(size, out, k, s, p):
    """Clipped [start, end) per output index and the window size counting padding."""
    start = np.arange(out, dtype=np.int64) * s - p
    end = np.minimum(start + k, size + p)
    return np.maximum(start, 0), np.minimum(end, size), end - start


def _avg_tables(spec):
    """Window bounds and divisors (tiny O(P + Q) tables, built in NumPy)."""
    hl, hh, hp = _avg_bounds(spec.H, spec.P, spec.kernel[0], spec.stride[0], spec.padding[0])
    wl, wh, wp = _avg_bounds(spec.W, spec.Q, spec.kernel[1], spec.stride[1], spec.padding[1])
    if spec.divisor_override is not None:
        div = np.full((spec.P, spec.Q), float(spec.divisor_override))
    elif spec.count_include_pad:
        div = (hp[:, None] * wp[None, :]).astype(np.float64)
    else:
        div = ((hh - hl)[:, None] * (wh - wl)[None, :]).astype(np.float64)
    return hl, hh, wl, wh, div


def _adaptive_tables(H, W, OH, OW):
    def bounds(size, out):
        i = np.arange(out, dtype=np.int64)
        return (i * size) // out, ((i + 1) * size + out - 1) // out

    hl, hh = bounds(H, OH)
    wl, wh = bounds(W, OW)
    div = ((hh - hl)[:, None] * (wh - wl)[None, :]).astype(np.float64)
    return hl, hh, wl, wh, div


def max_pool2d(x, spec, want_indices=True):
    """Max pooling with PyTorch's index convention (flat h*W + w per plane)."""
    y = np.empty(spec.y_shape, x.dtype)
    idx = np.empty(spec.y_shape, np.int64)
    if spec.N:
        _max_fwd(x, y, idx, *spec.kernel, *spec.stride, *spec.padding, *spec.dilation)
    return y, (idx if want_indices else None)


def max_pool2d_backward(gy, idx, x_shape):
    """Scatter-add of grad_out to the argmax positions."""
    gx = np.empty(x_shape, gy.dtype)
    if x_shape[0]:
        _max_bwd(gy, idx, gx)
    return gx


def avg_pool2d(x, spec):
    y = np.empty(spec.y_shape, x.dtype)
    if spec.N:
        _window_fwd(x, y, *_avg_tables(spec))
    return y


def avg_pool2d_backward(gy, spec):
    gx = np.empty(spec.x_shape, gy.dtype)
    if spec.N:
        _window_bwd(gy, gx, *_avg_tables(spec))
    return gx


def adaptive_avg_pool2d(x, out_hw):
    N, C, H, W = x.shape
    y = np.empty((N, C, out_hw[0], out_hw[1]), x.dtype)
    if N:
        _window_fwd(x, y, *_adaptive_tables(H, W, *out_hw))
    return y


def adaptive_avg_pool2d_backward(gy, x_shape):
    gx = np.empty(x_shape, gy.dtype)
    if x_shape[0]:
        _window_bwd(gy, gx, *_adaptive_tables(x_shape[2], x_shape[3], gy.shape[2], gy.shape[3]))
    return gx
