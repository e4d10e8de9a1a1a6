"""Depthwise convolution in numba.cuda (groups == C, K = m*C, any channel multiplier m):
forward, backward-data and backward-weight, any kernel size, stride, padding, dilation.

With one input channel per filter there is no channel loop, so the general direct
kernel's block (one output channel, a loop over every input channel of its group) does
one pass here and its staging per channel buys nothing; these kernels keep its tile
layout but stage only what a depthwise filter reuses:

* forward: a block computes a TY x TX output tile of one (image, filter) and stages the
  one input patch the tile reads (zero padding resolved at load time) and the filter's
  R x S taps in dynamic shared memory; each thread then sums its taps from shared memory.
* backward-data: a thread gathers one grad_x pixel over its channel's m filters and the
  taps that reach it; a block covers a TY x TX tile of one (image, channel) and stages
  those filters in shared memory, KC filters per chunk (a large multiplier or a huge
  kernel would not fit at once).
* backward-weight: a block reduces one filter tap over (n, p, q) with a shared-memory
  tree reduction; there is no channel axis to reduce, only the single input channel.
"""
from __future__ import annotations

from numba import cuda, float32

from ._common import empty, jit

TX, TY = 16, 8
KC = 32  # filters of one channel staged per shared-memory chunk (backward-data)
RED = 128  # threads per block of the weight-gradient reduction (a power of two)
SHMEM_LIMIT = 48 * 1024  # bytes of shared memory a block may use without opting in


def forward_tile_bytes(spec) -> int:
    """Shared memory the forward kernel needs: the tile's input patch and one filter."""
    IH = (TY - 1) * spec.stride[0] + (spec.R - 1) * spec.dilation[0] + 1
    IW = (TX - 1) * spec.stride[1] + (spec.S - 1) * spec.dilation[1] + 1
    return (IH * IW + spec.R * spec.S) * 4


@jit
def _fwd(x, w, b, y, sh, sw, pt, pl, dh, dw, IH, IW):
    N, C, H, W = x.shape
    K, _, R, S = w.shape
    P, Q = y.shape[2], y.shape[3]
    m = K // C
    sm = cuda.shared.array(0, dtype=float32)
    tx, ty = cuda.threadIdx.x, cuda.threadIdx.y
    tid = ty * TX + tx
    q = cuda.blockIdx.x * TX + tx
    p = cuda.blockIdx.y * TY + ty
    n = cuda.blockIdx.z // K
    k = cuda.blockIdx.z % K
    c = k // m
    h_base = cuda.blockIdx.y * TY * sh - pt
    w_base = cuda.blockIdx.x * TX * sw - pl
    for e in range(tid, IH * IW, TX * TY):
        hh = h_base + e // IW
        ww = w_base + e % IW
        v = float32(0.0)
        if hh >= 0 and hh < H and ww >= 0 and ww < W:
            v = x[n, c, hh, ww]
        sm[e] = v
    for e in range(tid, R * S, TX * TY):
        sm[IH * IW + e] = w[k, 0, e // S, e % S]
    cuda.syncthreads()
    if p < P and q < Q:
        acc = float32(0.0)
        for r in range(R):
            row = (ty * sh + r * dh) * IW + tx * sw
            for s in range(S):
                acc += sm[row + s * dw] * sm[IH * IW + r * S + s]
        y[n, k, p, q] = acc + b[k]


@jit
def _bwd_data(gy, w, gx, sh, sw, pt, pl, dh, dw, KCH):
    N, K, P, Q = gy.shape
    C, H, W = gx.shape[1], gx.shape[2], gx.shape[3]
    R, S = w.shape[2], w.shape[3]
    m = K // C
    sm = cuda.shared.array(0, dtype=float32)
    tx, ty = cuda.threadIdx.x, cuda.threadIdx.y
    tid = ty * TX + tx
    ww = cuda.blockIdx.x * TX + tx
    hh = cuda.blockIdx.y * TY + ty
    n = cuda.blockIdx.z // C
    c = cuda.blockIdx.z % C
    acc = float32(0.0)
    for j0 in range(0, m, KCH):
        jc = min(KCH, m - j0)
        for e in range(tid, jc * R * S, TX * TY):
            jj = e // (R * S)
            rs = e % (R * S)
            sm[e] = w[c * m + j0 + jj, 0, rs // S, rs % S]
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
                    for jj in range(jc):
                        acc += gy[n, c * m + j0 + jj, p, q] * sm[(jj * R + r) * S + s]
        cuda.syncthreads()
    if hh < H and ww < W:
        gx[n, c, hh, ww] = acc


@jit
def _bwd_weight(gy, x, gw, sh, sw, pt, pl, dh, dw):
    N, K, P, Q = gy.shape
    C, H, W = x.shape[1], x.shape[2], x.shape[3]
    R, S = gw.shape[2], gw.shape[3]
    part = cuda.shared.array(RED, dtype=float32)
    idx = cuda.blockIdx.x  # flat (k, r, s)
    s = idx % S
    r = (idx // S) % R
    k = idx // (R * S)
    c = k // (K // C)
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
        gw[k, 0, r, s] = part[0]


def _geom(spec):
    return (spec.stride[0], spec.stride[1], spec.padding[0], spec.padding[1],
            spec.dilation[0], spec.dilation[1])


def forward(x, w, b, spec):
    """y = depthwise conv2d(x, w) + b (validated float32 arrays, groups == C, b given)."""
    y = empty(spec.y_shape, x)
    if spec.N == 0 or spec.K == 0:
        return y
    sh, sw = spec.stride
    dh, dw = spec.dilation
    IH = (TY - 1) * sh + (spec.R - 1) * dh + 1
    IW = (TX - 1) * sw + (spec.S - 1) * dw + 1
    grid = (-(-spec.Q // TX), -(-spec.P // TY), spec.N * spec.K)
    _fwd[grid, (TX, TY), 0, forward_tile_bytes(spec)](x, w, b, y, *_geom(spec), IH, IW)
    return y


def backward_data(gy, w, spec):
    """grad_x of the depthwise convolution."""
    gx = empty(spec.x_shape, gy)
    if spec.N == 0 or spec.C == 0:
        return gx
    m = spec.K // spec.C
    kc = max(1, min(KC, m))
    while kc > 1 and kc * spec.R * spec.S * 4 > SHMEM_LIMIT:
        kc //= 2  # huge kernels: stage fewer filters per chunk
    grid = (-(-spec.W // TX), -(-spec.H // TY), spec.N * spec.C)
    _bwd_data[grid, (TX, TY), 0, kc * spec.R * spec.S * 4](gy, w, gx, *_geom(spec), kc)
    return gx


def backward_weight(gy, x, spec):
    """grad_w of the depthwise convolution (overwritten; zero for an empty batch)."""
    gw = empty(spec.w_shape, gy)
    if spec.K == 0:
        return gw
    # N == 0 still launches: each block's reduction over no pixels writes its zero.
    _bwd_weight[spec.K * spec.R * spec.S, RED](gy, x, gw, *_geom(spec))
    return gw
