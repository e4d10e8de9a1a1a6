"""Direct convolution in numba.cuda with shared-memory tiles.

* forward: a block computes a TY x TX output tile of one (image, output channel); for
  each input channel it stages the input patch the tile reads (with the zero padding
  resolved at load time) and the R x S filter slice in dynamic shared memory, then
  every thread sums its taps from shared memory.
* backward-data: a thread gathers one grad_x pixel over (k, r, s); the filter slices
  w[k0:k0+KC, c] are staged in shared memory chunk by chunk.
* backward-weight: a block reduces one filter tap over (n, p, q) with a shared-memory
  tree reduction.

The ``depthwise`` algorithm name (groups == C, any channel multiplier) runs these kernels
too: with one input channel per group the forward's channel loop makes one pass and
backward-data stages only the channel's own filters.
"""
from __future__ import annotations

import numpy as np
from numba import cuda, float32

from ._common import empty, jit

TX, TY = 16, 8
KC = 32  # output channels of filters staged per shared-memory chunk (backward-data)
RED = 128  # threads per block of the weight-gradient reduction (a power of two)
SHMEM_LIMIT = 48 * 1024  # bytes of shared memory a block may use without opting in


def forward_tile_bytes(spec) -> int:
    """Shared memory the forward kernel needs for this convolution's input patch."""
    IH = (TY - 1) * spec.stride[0] + (spec.R - 1) * spec.dilation[0] + 1
    IW = (TX - 1) * spec.stride[1] + (spec.S - 1) * spec.dilation[1] + 1
    return (IH * IW + spec.R * spec.S) * 4


@jit
def _fwd(x, w, b, y, sh, sw, pt, pl, dh, dw, groups, IH, IW):
    N, C, H, W = x.shape
    K, Cg, R, S = w.shape
    P, Q = y.shape[2], y.shape[3]
    sm = cuda.shared.array(0, dtype=float32)
    tx, ty = cuda.threadIdx.x, cuda.threadIdx.y
    tid = ty * TX + tx
    q = cuda.blockIdx.x * TX + tx
    p = cuda.blockIdx.y * TY + ty
    n = cuda.blockIdx.z // K
    k = cuda.blockIdx.z % K
    g = k // (K // groups)
    h_base = cuda.blockIdx.y * TY * sh - pt
    w_base = cuda.blockIdx.x * TX * sw - pl
    acc = float32(0.0)
    for cl in range(Cg):
        c = g * Cg + cl
        for e in range(tid, IH * IW, TX * TY):
            hh = h_base + e // IW
            ww = w_base + e % IW
            v = float32(0.0)
            if hh >= 0 and hh < H and ww >= 0 and ww < W:
                v = x[n, c, hh, ww]
            sm[e] = v
        for e in range(tid, R * S, TX * TY):
            sm[IH * IW + e] = w[k, cl, e // S, e % S]
        cuda.syncthreads()
        if p < P and q < Q:
            for r in range(R):
                row = (ty * sh + r * dh) * IW + tx * sw
                for s in range(S):
                    acc += sm[row + s * dw] * sm[IH * IW + r * S + s]
        cuda.syncthreads()
    if p < P and q < Q:
        y[n, k, p, q] = acc + b[k]


@jit
def _bwd_data(gy, w, gx, sh, sw, pt, pl, dh, dw, groups, KCH):
    N, K, P, Q = gy.shape
    C, H, W = gx.shape[1], gx.shape[2], gx.shape[3]
    Cg, R, S = w.shape[1], w.shape[2], w.shape[3]
    Kg = K // groups
    sm = cuda.shared.array(0, dtype=float32)
    tx, ty = cuda.threadIdx.x, cuda.threadIdx.y
    tid = ty * TX + tx
    ww = cuda.blockIdx.x * TX + tx
    hh = cuda.blockIdx.y * TY + ty
    n = cuda.blockIdx.z // C
    c = cuda.blockIdx.z % C
    g = c // Cg
    cl = c % Cg
    acc = float32(0.0)
    for k0 in range(0, Kg, KCH):
        kc = min(KCH, Kg - k0)
        for e in range(tid, kc * R * S, TX * TY):
            kk = e // (R * S)
            rs = e % (R * S)
            sm[e] = w[g * Kg + k0 + kk, cl, rs // S, rs % S]
        cuda.syncthreads()
        if hh < H and ww < W:
            for r in range(R):
                th = hh + pt - r * dh
                if th < 0 or th % sh != 0:
                    continue
                p = th // sh
                if p >= P:
                    continue
                for s in range(S):
                    tw = ww + pl - s * dw
                    if tw < 0 or tw % sw != 0:
                        continue
                    q = tw // sw
                    if q >= Q:
                        continue
                    for kk in range(kc):
                        acc += gy[n, g * Kg + k0 + kk, p, q] * sm[(kk * R + r) * S + s]
        cuda.syncthreads()
    if hh < H and ww < W:
        gx[n, c, hh, ww] = acc


@jit
def _bwd_weight(gy, x, gw, sh, sw, pt, pl, dh, dw, groups):
    N, K, P, Q = gy.shape
    H, W = x.shape[2], x.shape[3]
    Cg, R, S = gw.shape[1], gw.shape[2], gw.shape[3]
    part = cuda.shared.array(RED, dtype=float32)
    idx = cuda.blockIdx.x  # flat (k, cl, r, s)
    s = idx % S
    r = (idx // S) % R
    cl = (idx // (R * S)) % Cg
    k = idx // (Cg * R * S)
    c = (k // (K // groups)) * Cg + cl
    t = cuda.threadIdx.x
    acc = float32(0.0)
    for e in range(t, N * P * Q, RED):
        n = e // (P * Q)
        p = (e // Q) % P
        q = e % Q
        hh = p * sh + r * dh - pt
        ww = q * sw + s * dw - pl
        if hh >= 0 and hh < H and ww >= 0 and ww < W:
            acc += gy[n, k, p, q] * x[n, c, hh, ww]
    part[t] = acc
    cuda.syncthreads()
    half = RED // 2
    while half > 0:
        if t < half:
            part[t] += part[t + half]
        cuda.syncthreads()
        half //= 2
    if t == 0:
        gw[k, cl, r, s] = part[0]


def _geom(spec):
    return (spec.stride[0], spec.stride[1], spec.padding[0], spec.padding[1],
            spec.dilation[0], spec.dilation[1], spec.groups)


def forward(x, w, b, spec):
    """y = conv2d(x, w) + b (validated float32 arrays, b given)."""
    y = empty(spec.y_shape, x)
    if spec.N == 0 or spec.K == 0:
        return y
    sh, sw = spec.stride
    dh, dw = spec.dilation
    IH = (TY - 1) * sh + (spec.R - 1) * dh + 1
    IW = (TX - 1) * sw + (spec.S - 1) * dw + 1
    grid = (-(-spec.Q // TX), -(-spec.P // TY), spec.N * spec.K)
    shmem = forward_tile_bytes(spec)
    _fwd[grid, (TX, TY), 0, shmem](x, w, b, y, *_geom(spec), IH, IW)
    return y


def backward_data(gy, w, spec):
    """grad_x of the convolution."""
    gx = empty(spec.x_shape, gy)
    if spec.N == 0 or spec.C == 0:
        return gx
    grid = (-(-spec.W // TX), -(-spec.H // TY), spec.N * spec.C)
    kc = max(1, min(KC, spec.K // spec.groups))  # a group's filters at most
    while kc > 1 and kc * spec.R * spec.S * 4 > SHMEM_LIMIT:
        kc //= 2  # huge kernels: stage fewer filters per chunk
    shmem = kc * spec.R * spec.S * 4
    _bwd_data[grid, (TX, TY), 0, shmem](gy, w, gx, *_geom(spec), kc)
    return gx


def backward_weight(gy, x, spec):
    """grad_w of the convolution (overwritten; zero for an empty batch)."""
    gw = empty(spec.w_shape, gy)
    if gw.size == 0:
        return gw
    # N == 0 still launches: each block's reduction over no pixels writes its zero.
    _bwd_weight[int(np.prod(spec.w_shape)), RED](gy, x, gw, *_geom(spec))
    return gw
