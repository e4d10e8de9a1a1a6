"""im2col convolution in Numba: pack patches into a matrix, multiply with BLAS.

The packing (im2col), unpacking (col2im) and the channel-major re-layouts are Numba
``prange`` kernels written here; the matrix product is NumPy's ``np.dot`` called from
plain Python on contiguous 2-D blocks. (Called inside an ``njit`` driver, ``np.dot``
goes through SciPy's BLAS bindings, which measured 2-2.5x slower than NumPy's GEMM on
these shapes; the few Python-level calls per chunk cost microseconds.) The batch is
processed in chunks of ``nb`` images so the column workspace stays bounded
(``batch_chunk``), and each chunk gives one GEMM with ``nb*P*Q`` columns per group,
which keeps BLAS efficient.

Column layout: ``col[(c*R + r)*S + s, j*P*Q + p*Q + q]`` for image ``j`` of the chunk.
"""
from __future__ import annotations

import numpy as np
from numba import prange

from ._common import batch_chunk, kernel, tap_range


@kernel
def _im2col(x, col, n0, nb, g, Cg, R, S, P, Q, sh, sw, pt, pl, dh, dw):
    H, W = x.shape[2], x.shape[3]
    PQ = P * Q
    rows = Cg * R * S
    for it in prange(rows * nb):
        row = it // nb
        j = it % nb
        cl = row // (R * S)
        r = (row // S) % R
        s = row % S
        plane = x[n0 + j, g * Cg + cl]
        oh = r * dh - pt
        ow = s * dw - pl
        # The zero fills below rely on tap_range keeping q0 <= Q and p0 <= P.
        p0, p1 = tap_range(P, H, sh, oh)
        q0, q1 = tap_range(Q, W, sw, ow)
        dst = col[row, j * PQ:(j + 1) * PQ]
        for p in range(P):
            base = p * Q
            if p < p0 or p >= p1:
                for q in range(Q):
                    dst[base + q] = 0
                continue
            src = plane[p * sh + oh]
            for q in range(q0):
                dst[base + q] = 0
            for q in range(q0, q1):
                dst[base + q] = src[q * sw + ow]
            for q in range(q1, Q):
                dst[base + q] = 0


@kernel
def _col2im(col, gx, n0, nb, g, Cg, R, S, P, Q, sh, sw, pt, pl, dh, dw):
    H, W = gx.shape[2], gx.shape[3]
    PQ = P * Q
    # One (image, channel) plane per iteration: all R*S rows of that channel scatter
    # into it, so no two threads write the same pixel.
    for it in prange(nb * Cg):
        j = it // Cg
        cl = it % Cg
        plane = gx[n0 + j, g * Cg + cl]
        for r in range(R):
            oh = r * dh - pt
            p0, p1 = tap_range(P, H, sh, oh)
            for s in range(S):
                ow = s * dw - pl
                q0, q1 = tap_range(Q, W, sw, ow)
                src = col[(cl * R + r) * S + s, j * PQ:(j + 1) * PQ]
                for p in range(p0, p1):
                    dst = plane[p * sh + oh]
                    base = p * Q
                    for q in range(q0, q1):
                        dst[q * sw + ow] += src[base + q]


@kernel
def _gather_channels(a, out, n0, nb, k0, Kg):
    """out[k, j*PQ + i] = a[n0 + j, k0 + k, i]: the (K, images*pixels) GEMM operand."""
    PQ = a.shape[2] * a.shape[3]
    for it in prange(Kg * nb):
        k = it // nb
        j = it % nb
        src = a[n0 + j, k0 + k].reshape(PQ)
        dst = out[k, j * PQ:(j + 1) * PQ]
        for i in range(PQ):
            dst[i] = src[i]


@kernel
def _scatter_channels(m, y, b, n0, nb, k0, Kg):
    """y[n0 + j, k0 + k] = m[k, j*PQ:(j+1)*PQ] + b[k0 + k]."""
    PQ = y.shape[2] * y.shape[3]
    for it in prange(Kg * nb):
        k = it // nb
        j = it % nb
        dst = y[n0 + j, k0 + k].reshape(PQ)
        src = m[k, j * PQ:(j + 1) * PQ]
        bk = b[k0 + k]
        for i in range(PQ):
            dst[i] = src[i] + bk


def _fwd(x, w, b, y, nb, sh, sw, pt, pl, dh, dw, groups):
    N = x.shape[0]
    K, Cg, R, S = w.shape
    P, Q = y.shape[2], y.shape[3]
    Kg = K // groups
    w2 = w.reshape(K, Cg * R * S)
    wg = [np.ascontiguousarray(w2[g * Kg:(g + 1) * Kg]) for g in range(groups)]
    col = np.empty((Cg * R * S, min(nb, N) * P * Q), x.dtype)
    m = np.empty((Kg, min(nb, N) * P * Q), x.dtype)
    for n0 in range(0, N, nb):
        cnt = min(nb, N - n0)
        cols = cnt * P * Q
        cc, mc = col[:, :cols], m[:, :cols]
        if cols != col.shape[1]:  # the last, smaller chunk: contiguous GEMM operands
            cc, mc = np.empty_like(cc), np.empty_like(mc)
        for g in range(groups):
            _im2col(x, cc, n0, cnt, g, Cg, R, S, P, Q, sh, sw, pt, pl, dh, dw)
            np.dot(wg[g], cc, out=mc)
            _scatter_channels(mc, y, b, n0, cnt, g * Kg, Kg)


def _bwd_data(gy, w, gx, nb, sh, sw, pt, pl, dh, dw, groups):
    N, K, P, Q = gy.shape
    Cg, R, S = w.shape[1], w.shape[2], w.shape[3]
    Kg = K // groups
    w2 = w.reshape(K, Cg * R * S)
    wt = [np.ascontiguousarray(w2[g * Kg:(g + 1) * Kg].T) for g in range(groups)]
    gx[:] = 0
    for n0 in range(0, N, nb):
        cnt = min(nb, N - n0)
        gyc = np.empty((Kg, cnt * P * Q), gy.dtype)
        dcol = np.empty((Cg * R * S, cnt * P * Q), gy.dtype)
        for g in range(groups):
            _gather_channels(gy, gyc, n0, cnt, g * Kg, Kg)
            np.dot(wt[g], gyc, out=dcol)
            _col2im(dcol, gx, n0, cnt, g, Cg, R, S, P, Q, sh, sw, pt, pl, dh, dw)


def _bwd_weight(gy, x, gw, nb, sh, sw, pt, pl, dh, dw, groups):
    N, K, P, Q = gy.shape
    Cg, R, S = gw.shape[1], gw.shape[2], gw.shape[3]
    Kg = K // groups
    gw2 = gw.reshape(K, Cg * R * S)
    part = np.empty((Kg, Cg * R * S), gw.dtype)
    for n0 in range(0, N, nb):
        cnt = min(nb, N - n0)
        col = np.empty((Cg * R * S, cnt * P * Q), x.dtype)
        gyc = np.empty((Kg, cnt * P * Q), gy.dtype)
        for g in range(groups):
            _im2col(x, col, n0, cnt, g, Cg, R, S, P, Q, sh, sw, pt, pl, dh, dw)
            _gather_channels(gy, gyc, n0, cnt, g * Kg, Kg)
            np.dot(gyc, col.T, out=part)
            gw2[g * Kg:(g + 1) * Kg] += part


def _geom(spec):
    return (spec.stride[0], spec.stride[1], spec.padding[0], spec.padding[1],
            spec.dilation[0], spec.dilation[1], spec.groups)


def _nb(spec):
    return batch_chunk((spec.C // spec.groups) * spec.R * spec.S * spec.P * spec.Q, spec.N)


def forward(x, w, b, spec):
    """y = W_g @ im2col(x_g) per group and batch chunk, plus bias."""
    y = np.empty(spec.y_shape, x.dtype)
    if spec.N:
        bias = b if b is not None else np.zeros(spec.K, x.dtype)
        _fwd(x, w, bias, y, _nb(spec), *_geom(spec))
    return y


def backward_data(gy, w, spec):
    """grad_x = col2im(W_g^T @ grad_y_g)."""
    gx = np.empty(spec.x_shape, gy.dtype)
    if spec.N:
        _bwd_data(gy, w, gx, _nb(spec), *_geom(spec))
    return gx


def backward_weight(gy, x, spec):
    """grad_w = sum over batch chunks of grad_y_g @ im2col(x_g)^T."""
    gw = np.zeros(spec.w_shape, gy.dtype)
    if spec.N:
        _bwd_weight(gy, x, gw, _nb(spec), *_geom(spec))
    return gw
