"""Implicit-GEMM convolution in numba.cuda: a tiled GEMM whose operands are gathered
from the tensors on the fly (no im2col matrix in memory).

All three ops are T x T tiled GEMMs (T = 16) with both operand tiles staged in shared
memory per step of the reduction; they differ only in how a tile element maps to the
tensors:

=================  ======================  ===================  ====================
op                 rows (M)                columns              reduction
=================  ======================  ===================  ====================
forward            output pixels (n,p,q)   output channels k    (c, r, s)
backward-data      input pixels (n,h,w)    input channels c     (k, r, s)
backward-weight    output channels k       filter taps (c,r,s)  output pixels (n,p,q)
=================  ======================  ===================  ====================

The grid's z axis runs over groups. The "+1" column of padding in the shared tiles
avoids bank conflicts on the column reads.
"""
from __future__ import annotations

from numba import cuda, float32

from ._common import empty, jit

T = 16


@jit
def _fwd(x, w, b, y, sh, sw, pt, pl, dh, dw, groups):
    N, C, H, W = x.shape
    K, Cg, R, S = w.shape
    P, Q = y.shape[2], y.shape[3]
    Kg = K // groups
    As = cuda.shared.array((T, T + 1), dtype=float32)
    Bs = cuda.shared.array((T, T + 1), dtype=float32)
    tx, ty = cuda.threadIdx.x, cuda.threadIdx.y
    g = cuda.blockIdx.z
    row = cuda.blockIdx.y * T + ty  # output pixel of this thread's A loads / result
    kcol = cuda.blockIdx.x * T + tx
    M = N * P * Q
    RS = R * S
    red = Cg * RS
    n = row // (P * Q)
    p = (row // Q) % P
    q = row % Q
    acc = float32(0.0)
    for t0 in range(0, red, T):
        # A[row, t0 + tx]: the input value under tap (cl, r, s) of output pixel `row`.
        e = t0 + tx
        v = float32(0.0)
        if row < M and e < red:
            cl = e // RS
            r = (e // S) % R
            s = e % S
            hh = p * sh + r * dh - pt
            ww = q * sw + s * dw - pl
            if hh >= 0 and hh < H and ww >= 0 and ww < W:
                v = x[n, g * Cg + cl, hh, ww]
        As[ty, tx] = v
        # B[t0 + ty, kb]: the weight of tap t0 + ty for output channel kb.
        e = t0 + ty
        kb = cuda.blockIdx.x * T + tx
        v = float32(0.0)
        if e < red and kb < Kg:
            v = w[g * Kg + kb, e // RS, (e // S) % R, e % S]
        Bs[ty, tx] = v
        cuda.syncthreads()
        for i in range(T):
            acc += As[ty, i] * Bs[i, tx]
        cuda.syncthreads()
    if row < M and kcol < Kg:
        k = g * Kg + kcol
        y[n, k, p, q] = acc + b[k]


@jit
def _bwd_data(gy, w, gx, sh, sw, pt, pl, dh, dw, groups):
    N, K, P, Q = gy.shape
    C, H, W = gx.shape[1], gx.shape[2], gx.shape[3]
    Cg, R, S = w.shape[1], w.shape[2], w.shape[3]
    Kg = K // groups
    As = cuda.shared.array((T, T + 1), dtype=float32)
    Bs = cuda.shared.array((T, T + 1), dtype=float32)
    tx, ty = cuda.threadIdx.x, cuda.threadIdx.y
    g = cuda.blockIdx.z
    row = cuda.blockIdx.y * T + ty
    ccol = cuda.blockIdx.x * T + tx
    M = N * H * W
    RS = R * S
    red = Kg * RS
    n = row // (H * W)
    hh = (row // W) % H
    ww = row % W
    acc = float32(0.0)
    for t0 in range(0, red, T):
        # A[row, (kl, r, s)]: grad_y at the output pixel that tap (r, s) maps onto (hh, ww).
        e = t0 + tx
        v = float32(0.0)
        if row < M and e < red:
            kl = e // RS
            r = (e // S) % R
            s = e % S
            th = hh + pt - r * dh
            tw = ww + pl - s * dw
            if th >= 0 and tw >= 0 and th % sh == 0 and tw % sw == 0:
                p = th // sh
                q = tw // sw
                if p < P and q < Q:
                    v = gy[n, g * Kg + kl, p, q]
        As[ty, tx] = v
        e = t0 + ty
        cb = cuda.blockIdx.x * T + tx
        v = float32(0.0)
        if e < red and cb < Cg:
            v = w[g * Kg + e // RS, cb, (e // S) % R, e % S]
        Bs[ty, tx] = v
        cuda.syncthreads()
        for i in range(T):
            acc += As[ty, i] * Bs[i, tx]
        cuda.syncthreads()
    if row < M and ccol < Cg:
        gx[n, g * Cg + ccol, hh, ww] = acc


@jit
def _bwd_weight(gy, x, gw, sh, sw, pt, pl, dh, dw, groups):
    N, K, P, Q = gy.shape
    H, W = x.shape[2], x.shape[3]
    Cg, R, S = gw.shape[1], gw.shape[2], gw.shape[3]
    Kg = K // groups
    As = cuda.shared.array((T, T + 1), dtype=float32)
    Bs = cuda.shared.array((T, T + 1), dtype=float32)
    tx, ty = cuda.threadIdx.x, cuda.threadIdx.y
    g = cuda.blockIdx.z
    krow = cuda.blockIdx.y * T + ty
    col = cuda.blockIdx.x * T + tx  # flat (cl, r, s)
    RS = R * S
    ncols = Cg * RS
    red = N * P * Q
    acc = float32(0.0)
    for t0 in range(0, red, T):
        # A[krow, (n, p, q)] = grad_y
        e = t0 + tx
        v = float32(0.0)
        if krow < Kg and e < red:
            v = gy[e // (P * Q), g * Kg + krow, (e // Q) % P, e % Q]
        As[ty, tx] = v
        # B[(n, p, q), (cl, r, s)] = the input under that tap
        e = t0 + ty
        cb = cuda.blockIdx.x * T + tx
        v = float32(0.0)
        if e < red and cb < ncols:
            n = e // (P * Q)
            p = (e // Q) % P
            q = e % Q
            cl = cb // RS
            r = (cb // S) % R
            s = cb % S
            hh = p * sh + r * dh - pt
            ww = q * sw + s * dw - pl
            if hh >= 0 and hh < H and ww >= 0 and ww < W:
                v = x[n, g * Cg + cl, hh, ww]
        Bs[ty, tx] = v
        cuda.syncthreads()
        for i in range(T):
            acc += As[ty, i] * Bs[i, tx]
        cuda.syncthreads()
    if krow < Kg and col < ncols:
        gw[g * Kg + krow, col // RS, (col // S) % R, col % S] = acc


def _geom(spec):
    return (spec.stride[0], spec.stride[1], spec.padding[0], spec.padding[1],
            spec.dilation[0], spec.dilation[1], spec.groups)


def _cdiv(a, b):
    return -(-a // b)


def forward(x, w, b, spec):
    y = empty(spec.y_shape, x)
    if spec.N == 0:
        return y
    Kg = spec.K // spec.groups
    grid = (_cdiv(Kg, T), _cdiv(spec.N * spec.P * spec.Q, T), spec.groups)
    _fwd[grid, (T, T)](x, w, b, y, *_geom(spec))
    return y


def backward_data(gy, w, spec):
    gx = empty(spec.x_shape, gy)
    if spec.N == 0:
        return gx
    Cg = spec.C // spec.groups
    grid = (_cdiv(Cg, T), _cdiv(spec.N * spec.H * spec.W, T), spec.groups)
    _bwd_data[grid, (T, T)](gy, w, gx, *_geom(spec))
    return gx


def backward_weight(gy, x, spec):
    gw = empty(spec.w_shape, gy)
    Kg = spec.K // spec.groups
    ncols = (spec.C // spec.groups) * spec.R * spec.S
    grid = (_cdiv(ncols, T), _cdiv(Kg, T), spec.groups)
    _bwd_weight[grid, (T, T)](gy, x, gw, *_geom(spec))
    return gw
