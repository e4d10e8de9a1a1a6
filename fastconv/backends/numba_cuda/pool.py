"""Pooling in numba.cuda: one thread per output element.

Backward passes scatter with ``cuda.atomic.add`` because windows overlap (stride <
kernel) and several outputs feed one input. Max pooling follows PyTorch's NaN rule
(a NaN wins; the last NaN's index is kept) and its flat h*W + w index convention.
Average and adaptive-average pooling share one kernel pair: ``adaptive`` selects
PyTorch's adaptive window bounds instead of kernel/stride/padding windows.
"""
from __future__ import annotations

import math

import numpy as np
from numba import cuda, float32

from ._common import launch1d, device, empty, jit, zeros


@jit
def _max_fwd(x, y, idx, kh, kw, sh, sw, ph, pw, dh, dw):
    N, C, H, W = x.shape
    P, Q = y.shape[2], y.shape[3]
    i = cuda.grid(1)
    if i >= N * C * P * Q:
        return
    q = i % Q
    p = (i // Q) % P
    c = (i // (P * Q)) % C
    n = i // (C * P * Q)
    best = float32(-math.inf)
    bi = -1
    for a in range(kh):
        hh = p * sh - ph + a * dh
        if hh < 0 or hh >= H:
            continue
        for b in range(kw):
            ww = q * sw - pw + b * dw
            if ww < 0 or ww >= W:
                continue
            v = x[n, c, hh, ww]
            if bi < 0:
                bi = hh * W + ww
            if v > best or math.isnan(v):
                best = v
                bi = hh * W + ww
    y[n, c, p, q] = best
    idx[n, c, p, q] = bi


@jit
def _max_bwd(gy, idx, gx):
    N, C, P, Q = gy.shape
    i = cuda.grid(1)
    if i >= N * C * P * Q:
        return
    q = i % Q
    p = (i // Q) % P
    nc = i // (P * Q)
    k = idx[nc // C, nc % C, p, q]
    if k >= 0:  # -1: the window held no input element
        cuda.atomic.add(gx, (nc, k), gy[nc // C, nc % C, p, q])


@device
def _window(o, size, out, k, s, pad, adaptive, include_pad):
    """Clipped window [lo, hi) of output index o along one axis and its divisor factor."""
    if adaptive:
        lo = (o * size) // out
        hi = ((o + 1) * size + out - 1) // out
        return lo, hi, hi - lo
    start = o * s - pad
    end = min(start + k, size + pad)
    lo = max(start, 0)
    hi = min(end, size)
    return lo, hi, (end - start) if include_pad else (hi - lo)


@device
def _avg_cell(i, C, H, W, P, Q, kh, kw, sh, sw, ph, pw, adaptive, include_pad, override):
    """Output element i of an average pooling: its (n, c, p, q), its clipped window
    [h0, h1) x [w0, w1) and its divisor (shared by the forward and backward kernels)."""
    q = i % Q
    p = (i // Q) % P
    c = (i // (P * Q)) % C
    n = i // (C * P * Q)
    h0, h1, dh = _window(p, H, P, kh, sh, ph, adaptive, include_pad)
    w0, w1, dw = _window(q, W, Q, kw, sw, pw, adaptive, include_pad)
    div = float32(override) if override != 0 else float32(dh * dw)
    return n, c, p, q, h0, h1, w0, w1, div


@jit
def _avg_fwd(x, y, kh, kw, sh, sw, ph, pw, adaptive, include_pad, override):
    N, C, H, W = x.shape
    P, Q = y.shape[2], y.shape[3]
    i = cuda.grid(1)
    if i >= N * C * P * Q:
        return
    n, c, p, q, h0, h1, w0, w1, div = _avg_cell(i, C, H, W, P, Q, kh, kw, sh, sw, ph, pw,
                                                adaptive, include_pad, override)
    if h1 <= h0 or w1 <= w0:
        y[n, c, p, q] = 0  # a window entirely in the padding: PyTorch gives 0
        return
    acc = float32(0.0)
    for a in range(h0, h1):
        for b in range(w0, w1):
            acc += x[n, c, a, b]
    y[n, c, p, q] = acc / div


@jit
def _avg_bwd(gy, gx, kh, kw, sh, sw, ph, pw, adaptive, include_pad, override):
    N, C, P, Q = gy.shape
    H, W = gx.shape[2], gx.shape[3]
    i = cuda.grid(1)
    if i >= N * C * P * Q:
        return
    n, c, p, q, h0, h1, w0, w1, div = _avg_cell(i, C, H, W, P, Q, kh, kw, sh, sw, ph, pw,
                                                adaptive, include_pad, override)
    if h1 <= h0 or w1 <= w0:
        return
    g = gy[n, c, p, q] / div
    for a in range(h0, h1):
        for b in range(w0, w1):
            cuda.atomic.add(gx, (n, c, a, b), g)


def max_pool2d(x, spec, want_indices=True):
    y = empty(spec.y_shape, x)
    idx = empty(spec.y_shape, x, np.int64)
    total = int(np.prod(spec.y_shape))
    if total:
        _max_fwd[launch1d(total)](x, y, idx, *spec.kernel, *spec.stride, *spec.padding,
                                     *spec.dilation)
    return y, (idx if want_indices else None)


def max_pool2d_backward(gy, idx, x_shape):
    N, C, H, W = x_shape
    gx = zeros((N * C, H * W), gy)
    total = int(np.prod(gy.shape))
    if total:
        _max_bwd[launch1d(total)](gy, idx, gx)
    return gx.reshape(x_shape)


def _avg_args(spec):
    return (*spec.kernel, *spec.stride, *spec.padding, False, spec.count_include_pad,
            spec.divisor_override or 0)


def avg_pool2d(x, spec):
    y = empty(spec.y_shape, x)
    total = int(np.prod(spec.y_shape))
    if total:
        _avg_fwd[launch1d(total)](x, y, *_avg_args(spec))
    return y


def avg_pool2d_backward(gy, spec):
    gx = zeros(spec.x_shape, gy)
    total = int(np.prod(gy.shape))
    if total:
        _avg_bwd[launch1d(total)](gy, gx, *_avg_args(spec))
    return gx


def adaptive_avg_pool2d(x, out_hw):
    shape = (x.shape[0], x.shape[1], out_hw[0], out_hw[1])
    y = empty(shape, x)
    total = int(np.prod(shape))
    if total:
        _avg_fwd[launch1d(total)](x, y, 0, 0, 1, 1, 0, 0, True, True, 0)
    return y


def adaptive_avg_pool2d_backward(gy, x_shape):
    gx = zeros(x_shape, gy)
    total = int(np.prod(gy.shape))
    if total:
        _avg_bwd[launch1d(total)](gy, gx, 0, 0, 1, 1, 0, 0, True, True, 0)
    return gx


__all__ = ["max_pool2d", "max_pool2d_backward", "avg_pool2d", "avg_pool2d_backward",
           "adaptive_avg_pool2d", "adaptive_avg_pool2d_backward"]
