"""Depthwise convolution in Numba (groups == C, K = m*C): forward, backward-data and
backward-weight, any kernel size, stride, padding and dilation.

With one input channel per filter there is no channel reduction, so the kernels work a
whole output row at a time (the inner loop runs along q, which LLVM vectorises for
stride 1) and take the bounds checks out of the loop with ``tap_range``; no padded copy
is made. Parallel axes write disjoint outputs:

* forward: (image, filter, output row): N*K*P iterations, so batch 1 keeps every
  thread busy;
* backward-data: (image, input channel) planes of grad_x, each gathering from its m
  filters;
* backward-weight: one filter per iteration, reducing over images and rows.
"""
from __future__ import annotations

import numpy as np
from numba import prange

from ._common import kernel, tap_range


@kernel
def _fwd(x, w, b, y, sh, sw, ph, pw, dh, dw):
    N, C, H, W = x.shape
    K, _, R, S = w.shape
    P, Q = y.shape[2], y.shape[3]
    m = K // C
    for it in prange(N * K * P):
        p = it % P
        k = (it // P) % K
        n = it // (P * K)
        c = k // m
        out = y[n, k, p]
        for q in range(Q):
            out[q] = b[k]
        for r in range(R):
            h = p * sh - ph + r * dh
            if h < 0 or h >= H:
                continue
            src = x[n, c, h]
            for s in range(S):
                off = s * dw - pw
                q0, q1 = tap_range(Q, W, sw, off)
                wv = w[k, 0, r, s]
                for q in range(q0, q1):
                    out[q] += wv * src[q * sw + off]


@kernel
def _bwd_data(gy, w, gx, sh, sw, ph, pw, dh, dw):
    N, K, P, Q = gy.shape
    C, H, W = gx.shape[1], gx.shape[2], gx.shape[3]
    R, S = w.shape[2], w.shape[3]
    m = K // C
    for it in prange(N * C):
        n = it // C
        c = it % C
        plane = gx[n, c]
        plane[:, :] = 0
        for j in range(m):
            k = c * m + j
            for r in range(R):
                p0, p1 = tap_range(P, H, sh, r * dh - ph)
                for p in range(p0, p1):
                    dst = plane[p * sh + r * dh - ph]
                    src = gy[n, k, p]
                    for s in range(S):
                        off = s * dw - pw
                        q0, q1 = tap_range(Q, W, sw, off)
                        wv = w[k, 0, r, s]
                        for q in range(q0, q1):
                            dst[q * sw + off] += wv * src[q]


@kernel
def _bwd_weight(gy, x, gw, sh, sw, ph, pw, dh, dw):
    N, K, P, Q = gy.shape
    C, H, W = x.shape[1], x.shape[2], x.shape[3]
    R, S = gw.shape[2], gw.shape[3]
    m = K // C
    for k in prange(K):
        c = k // m
        for r in range(R):
            p0, p1 = tap_range(P, H, sh, r * dh - ph)
            for s in range(S):
                off = s * dw - pw
                q0, q1 = tap_range(Q, W, sw, off)
                acc = 0.0
                for n in range(N):
                    for p in range(p0, p1):
                        src = x[n, c, p * sh + r * dh - ph]
                        g = gy[n, k, p]
                        for q in range(q0, q1):
                            acc += g[q] * src[q * sw + off]
                gw[k, 0, r, s] = acc


def _geom(spec):
    return (*spec.stride, *spec.padding, *spec.dilation)


def forward(x, w, b, spec):
    """y = depthwise conv2d(x, w) + b (validated arguments, groups == C)."""
    y = np.empty(spec.y_shape, x.dtype)
    if spec.N == 0:
        return y
    bias = b if b is not None else np.zeros(spec.K, x.dtype)
    _fwd(np.ascontiguousarray(x), np.ascontiguousarray(w), bias, y, *_geom(spec))
    return y


def backward_data(gy, w, spec):
    """grad_x of the depthwise convolution."""
    gx = np.empty(spec.x_shape, gy.dtype)
    if spec.N == 0:
        return gx
    _bwd_data(np.ascontiguousarray(gy), np.ascontiguousarray(w), gx, *_geom(spec))
    return gx


def backward_weight(gy, x, spec):
    """grad_w of the depthwise convolution (overwritten; the caller accumulates)."""
    gw = np.zeros(spec.w_shape, gy.dtype)
    if spec.N == 0:
        return gw
    _bwd_weight(np.ascontiguousarray(gy), np.ascontiguousarray(x), gw, *_geom(spec))
    return gw
