"""Direct convolution in Numba: no workspace, loops over the kernel taps.

Every kernel parallelises (``prange``) over an axis whose iterations write disjoint
outputs, so no atomics or reductions across threads are needed:

* forward: one (image, output channel) plane per iteration;
* backward-data: one (image, input channel) plane of grad_x per iteration (the
  scatter of every tap stays inside that plane);
* backward-weight: one (output channel, input channel) filter per iteration.

Padding is never materialised: ``tap_range`` turns the bounds check into the loop
range, so the innermost loop is a branch-free, unit-stride (for stride 1) SIMD loop.
"""
from __future__ import annotations

import numpy as np
from numba import prange

from ._common import kernel, tap_range


@kernel
def _fwd(x, w, b, y, sh, sw, pt, pl, dh, dw, groups):
    N, C, H, W = x.shape
    K, Cg, R, S = w.shape
    P, Q = y.shape[2], y.shape[3]
    Kg = K // groups
    for nk in prange(N * K):
        n = nk // K
        k = nk % K
        g = k // Kg
        out = y[n, k]
        bk = b[k]
        for p in range(P):
            for q in range(Q):
                out[p, q] = bk
        for cl in range(Cg):
            plane = x[n, g * Cg + cl]
            for r in range(R):
                oh = r * dh - pt
                p0, p1 = tap_range(P, H, sh, oh)
                for s in range(S):
                    ow = s * dw - pl
                    q0, q1 = tap_range(Q, W, sw, ow)
                    wv = w[k, cl, r, s]
                    for p in range(p0, p1):
                        row = plane[p * sh + oh]
                        orow = out[p]
                        for q in range(q0, q1):
                            orow[q] += wv * row[q * sw + ow]


@kernel
def _bwd_data(gy, w, gx, sh, sw, pt, pl, dh, dw, groups):
    N, K, P, Q = gy.shape
    C, H, W = gx.shape[1], gx.shape[2], gx.shape[3]
    Cg, R, S = w.shape[1], w.shape[2], w.shape[3]
    Kg = K // groups
    for nc in prange(N * C):
        n = nc // C
        c = nc % C
        g = c // Cg
        cl = c % Cg
        out = gx[n, c]
        for h in range(H):
            for ww in range(W):
                out[h, ww] = 0
        for kl in range(Kg):
            k = g * Kg + kl
            src = gy[n, k]
            for r in range(R):
                oh = r * dh - pt
                p0, p1 = tap_range(P, H, sh, oh)
                for s in range(S):
                    ow = s * dw - pl
                    q0, q1 = tap_range(Q, W, sw, ow)
                    wv = w[k, cl, r, s]
                    for p in range(p0, p1):
                        orow = out[p * sh + oh]
                        srow = src[p]
                        for q in range(q0, q1):
                            orow[q * sw + ow] += wv * srow[q]


@kernel
def _bwd_weight(gy, x, gw, sh, sw, pt, pl, dh, dw, groups):
    N, K, P, Q = gy.shape
    H, W = x.shape[2], x.shape[3]
    Cg, R, S = gw.shape[1], gw.shape[2], gw.shape[3]
    Kg = K // groups
    for kc in prange(K * Cg):
        k = kc // Cg
        cl = kc % Cg
        c = (k // Kg) * Cg + cl
        for r in range(R):
            oh = r * dh - pt
            p0, p1 = tap_range(P, H, sh, oh)
            for s in range(S):
                ow = s * dw - pl
                q0, q1 = tap_range(Q, W, sw, ow)
                acc = 0.0
                for n in range(N):
                    for p in range(p0, p1):
                        xrow = x[n, c, p * sh + oh]
                        grow = gy[n, k, p]
                        for q in range(q0, q1):
                            acc += grow[q] * xrow[q * sw + ow]
                gw[k, cl, r, s] = acc


def _geom(spec):
    return (spec.stride[0], spec.stride[1], spec.padding[0], spec.padding[1],
            spec.dilation[0], spec.dilation[1], spec.groups)


def forward(x, w, b, spec):
    """y = conv2d(x, w) + b by direct summation over the taps."""
    y = np.empty(spec.y_shape, x.dtype)
    if spec.N:
        bias = b if b is not None else np.zeros(spec.K, x.dtype)
        _fwd(x, w, bias, y, *_geom(spec))
    return y


def backward_data(gy, w, spec):
    """grad_x: every tap scatters into the grad_x plane of its own input channel."""
    gx = np.empty(spec.x_shape, gy.dtype)
    if spec.N:
        _bwd_data(gy, w, gx, *_geom(spec))
    return gx


def backward_weight(gy, x, spec):
    """grad_w: one reduction over (n, p, q) per filter tap."""
    gw = np.zeros(spec.w_shape, gy.dtype)
    if spec.N:
        _bwd_weight(gy, x, gw, *_geom(spec))
    return gw
