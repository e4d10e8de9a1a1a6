"""Winograd F(2x2,3x3) and F(4x4,3x3) convolution in Numba.

The classic Lavin-Gray formulation: with ``a = m + 2`` (4 or 6)

* filter transform  U[i, k, c] = (G g_kc G^T)[i]                      (Numba, prange over k)
* input transform   V[i, c, t] = (B^T d_ct B)[i] for every a x a tile   (prange over images x C)
* a*a GEMMs         M[i] = U[i] @ V[i]                   (NumPy np.matmul -> BLAS)
* output transform  y tile = A^T M_kt A (+ bias), clipped at the edges  (prange over K)

The batch is processed in chunks so V and M stay bounded. Tiles that overhang the
input read zeros; tiles that overhang the output are clipped. The same core computes
the data gradient: grad_x is the stride-1 correlation of grad_y with the filter
flipped and transposed, with padding (2 - pad) on each side (negative values crop).
"""
from __future__ import annotations

import numba
import numpy as np
from numba import prange

from ._common import batch_chunk, kernel

_F23 = dict(
    BT=[[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]],
    G=[[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]],
    AT=[[1, 1, 1, 0], [0, 1, -1, -1]],
)
_F43 = dict(
    BT=[[4, 0, -5, 0, 1, 0], [0, -4, -4, 1, 1, 0], [0, 4, -4, -1, 1, 0],
        [0, -2, -1, 2, 1, 0], [0, 2, -1, -2, 1, 0], [0, 4, 0, -5, 0, 1]],
    G=[[1 / 4, 0, 0], [-1 / 6, -1 / 6, -1 / 6], [-1 / 6, 1 / 6, -1 / 6],
       [1 / 24, 1 / 12, 1 / 6], [1 / 24, -1 / 12, 1 / 6], [0, 0, 1]],
    AT=[[1, 1, 1, 1, 1, 0], [0, 1, -1, 2, -2, 0], [0, 1, 1, 4, 4, 0], [0, 1, -1, 8, -8, 1]],
)
_MATS = {2: _F23, 4: _F43}


def matrices(m: int, dtype):
    """(B^T, G, A^T) of F(m x m, 3 x 3) in ``dtype``."""
    d = _MATS[m]
    return tuple(np.ascontiguousarray(np.array(d[k], dtype)) for k in ("BT", "G", "AT"))


@kernel
def _filter_transform(w, G, U, flip):
    """U[i*a + j, k, c] = (G f G^T)[i, j]; with ``flip`` f = w[c, k, ::-1, ::-1]
    (the data-gradient filter), else f = w[k, c].

    One output channel k per iteration, every step a loop over the input channels c
    (unit stride in U), so LLVM vectorises across c; the per-(k, c) scalar version
    took ~40 ms for a 512x512 filter bank, as long as the Winograd GEMMs."""
    a = G.shape[0]
    Kt, Ct = U.shape[1], U.shape[2]
    for k in prange(Kt):
        f = np.empty((9, Ct), w.dtype)
        t = np.empty((a * 3, Ct), w.dtype)
        for r in range(3):
            for s in range(3):
                fr = f[r * 3 + s]
                if flip:
                    for c in range(Ct):
                        fr[c] = w[c, k, 2 - r, 2 - s]
                else:
                    for c in range(Ct):
                        fr[c] = w[k, c, r, s]
        for i in range(a):
            g0, g1, g2 = G[i, 0], G[i, 1], G[i, 2]
            for s in range(3):
                f0, f1, f2, ti = f[s], f[3 + s], f[6 + s], t[i * 3 + s]
                for c in range(Ct):
                    ti[c] = g0 * f0[c] + g1 * f1[c] + g2 * f2[c]
        for i in range(a):
            t0, t1, t2 = t[i * 3], t[i * 3 + 1], t[i * 3 + 2]
            for j in range(a):
                g0, g1, g2 = G[j, 0], G[j, 1], G[j, 2]
                u = U[i * a + j, k]
                for c in range(Ct):
                    u[c] = g0 * t0[c] + g1 * t1[c] + g2 * t2[c]


@numba.njit(inline="always", cache=True)
def _bt(m, k, d0, d1, d2, d3, d4, d5):
    """B^T d for one column of a tile, written out (the matrices are mostly 0/±1).

    ``k`` holds the constants (2, 4, 5, 8) in the data's dtype: a bare int literal
    would promote float32 arithmetic to float64."""
    if m == 2:
        return d0 - d2, d1 + d2, d2 - d1, d1 - d3, d4, d5
    c2, c4, c5 = k[0], k[1], k[2]
    return (c4 * d0 - c5 * d2 + d4, d3 + d4 - c4 * (d1 + d2), c4 * (d1 - d2) + d4 - d3,
            c2 * (d3 - d1) + d4 - d2, c2 * (d1 - d3) + d4 - d2, c4 * d1 - c5 * d3 + d5)


@numba.njit(inline="always", cache=True)
def _at(m, k, m0, m1, m2, m3, m4, m5):
    """A^T m for one column of a transformed tile (4 outputs; F(2,3) uses the first 2)."""
    if m == 2:
        return m0 + m1 + m2, m1 - m2 - m3, m4, m5
    c2, c4, c8 = k[0], k[1], k[3]
    return (m0 + m1 + m2 + m3 + m4, m1 - m2 + c2 * (m3 - m4), m1 + m2 + c4 * (m3 + m4),
            m1 - m2 + c8 * (m3 - m4) + m5)


@kernel
def _input_transform(x, V, k, n0, nb, th, tw, m, pt, pl):
    """V[u*a + v, c, tile] = (B^T d B)[u, v] for every a x a input tile d.

    One (image, channel) plane per iteration. The plane is first copied with its zero
    border into a per-thread buffer, so tiles read without bounds branches; then each
    row of tiles is transformed with every step a loop over the tiles of the row
    (unit stride in the scratch arrays and in V), which LLVM vectorises. The
    one-tile-at-a-time version (kept for rows of < 7 tiles, where these short loops
    lose) was up to 2x slower on ResNet-18's 56x56 and 28x28 layers."""
    C, H, W = x.shape[1], x.shape[2], x.shape[3]
    a = m + 2
    T = th * tw
    Hp = (th - 1) * m + a
    Wp = (tw - 1) * m + a
    for it in prange(nb * C):
        j = it // C
        c = it % C
        buf = np.zeros((Hp, Wp), x.dtype)
        src = x[n0 + j, c]
        for hh in range(max(0, -pt), min(H, Hp - pt)):
            brow = buf[hh + pt]
            srow = src[hh]
            for ww in range(max(0, -pl), min(W, Wp - pl)):
                brow[ww + pl] = srow[ww]
        # d[u, v, tx]: tap (u, v) of tile tx of the current row; rows/columns a..5 stay
        # zero for F(2,3), whose _bt ignores them.
        d = np.zeros((6, 6, tw), x.dtype)
        t = np.zeros((6, 6, tw), x.dtype)
        for ty in range(th):
            for u in range(a):
                brow = buf[ty * m + u]
                for v in range(a):
                    duv = d[u, v]
                    for tx in range(tw):
                        duv[tx] = brow[tx * m + v]
            for v in range(a):
                d0, d1, d2, d3, d4, d5 = d[0, v], d[1, v], d[2, v], d[3, v], d[4, v], d[5, v]
                t0, t1, t2, t3, t4, t5 = t[0, v], t[1, v], t[2, v], t[3, v], t[4, v], t[5, v]
                for tx in range(tw):
                    t0[tx], t1[tx], t2[tx], t3[tx], t4[tx], t5[tx] = _bt(
                        m, k, d0[tx], d1[tx], d2[tx], d3[tx], d4[tx], d5[tx])
            base = j * T + ty * tw
            for u in range(a):
                s0, s1, s2, s3, s4, s5 = t[u, 0], t[u, 1], t[u, 2], t[u, 3], t[u, 4], t[u, 5]
                v0 = V[u * a, c, base:base + tw]
                v1 = V[u * a + 1, c, base:base + tw]
                v2 = V[u * a + 2, c, base:base + tw]
                v3 = V[u * a + 3, c, base:base + tw]
                if a == 6:
                    v4 = V[u * a + 4, c, base:base + tw]
                    v5 = V[u * a + 5, c, base:base + tw]
                    for tx in range(tw):
                        v0[tx], v1[tx], v2[tx], v3[tx], v4[tx], v5[tx] = _bt(
                            m, k, s0[tx], s1[tx], s2[tx], s3[tx], s4[tx], s5[tx])
                else:
                    for tx in range(tw):
                        v0[tx], v1[tx], v2[tx], v3[tx], _, _ = _bt(
                            m, k, s0[tx], s1[tx], s2[tx], s3[tx], s4[tx], s5[tx])


@kernel
def _input_transform_scalar(x, V, k, n0, nb, th, tw, m, pt, pl):
    """_input_transform one tile at a time: faster when rows hold < _ROW_TILES_IN tiles."""
    C, H, W = x.shape[1], x.shape[2], x.shape[3]
    a = m + 2
    T = th * tw
    for it in prange(nb * C):
        j = it // C
        c = it % C
        plane = x[n0 + j, c]
        d = np.zeros((6, 6), x.dtype)
        t = np.zeros((6, 6), x.dtype)
        for ty in range(th):
            h0 = ty * m - pt
            for tx in range(tw):
                w0 = tx * m - pl
                if h0 >= 0 and w0 >= 0 and h0 + a <= H and w0 + a <= W:
                    for u in range(a):
                        for v in range(a):
                            d[u, v] = plane[h0 + u, w0 + v]
                else:
                    for u in range(a):
                        hh = h0 + u
                        for v in range(a):
                            ww = w0 + v
                            if hh >= 0 and hh < H and ww >= 0 and ww < W:
                                d[u, v] = plane[hh, ww]
                            else:
                                d[u, v] = 0
                for v in range(a):
                    t[0, v], t[1, v], t[2, v], t[3, v], t[4, v], t[5, v] = _bt(
                        m, k, d[0, v], d[1, v], d[2, v], d[3, v], d[4, v], d[5, v])
                col = j * T + ty * tw + tx
                for u in range(a):
                    r0, r1, r2, r3, r4, r5 = _bt(m, k, t[u, 0], t[u, 1], t[u, 2], t[u, 3],
                                                 t[u, 4], t[u, 5])
                    V[u * a, c, col] = r0
                    V[u * a + 1, c, col] = r1
                    V[u * a + 2, c, col] = r2
                    V[u * a + 3, c, col] = r3
                    if a == 6:
                        V[u * a + 4, c, col] = r4
                        V[u * a + 5, c, col] = r5


@kernel
def _output_transform_rows(M, b, y, k4, n0, nb, th, tw, m):
    """_output_transform a row of tiles at a time, every step a loop over the row's
    tiles (unit stride in M and the scratch arrays) so LLVM vectorises it; used for
    rows of >= _ROW_TILES_OUT tiles."""
    K, P, Q = y.shape[1], y.shape[2], y.shape[3]
    a = m + 2
    T = th * tw
    for it in prange(nb * K):
        j = it // K
        k = it % K
        out = y[n0 + j, k]
        bk = b[k]
        # t[u, v, tx] = (A^T M)[u, v] of tile tx (u < m, padded to 4 rows);
        # o[u, v, tx] = (A^T M A)[u, v]. M's columns a..5 read as zero for F(2,3).
        mz = np.zeros((6, tw), M.dtype)
        t = np.zeros((4, 6, tw), M.dtype)
        o = np.zeros((4, 4, tw), M.dtype)
        for ty in range(th):
            base = j * T + ty * tw
            for v in range(a):
                m0 = M[v, k, base:base + tw]
                m1 = M[a + v, k, base:base + tw]
                m2 = M[2 * a + v, k, base:base + tw]
                m3 = M[3 * a + v, k, base:base + tw]
                m4 = mz[0]
                m5 = mz[1]
                if a == 6:
                    m4 = M[4 * a + v, k, base:base + tw]
                    m5 = M[5 * a + v, k, base:base + tw]
                t0, t1, t2, t3 = t[0, v], t[1, v], t[2, v], t[3, v]
                for tx in range(tw):
                    t0[tx], t1[tx], t2[tx], t3[tx] = _at(
                        m, k4, m0[tx], m1[tx], m2[tx], m3[tx], m4[tx], m5[tx])
            for u in range(m):
                s0, s1, s2, s3, s4, s5 = t[u, 0], t[u, 1], t[u, 2], t[u, 3], t[u, 4], t[u, 5]
                o0, o1, o2, o3 = o[u, 0], o[u, 1], o[u, 2], o[u, 3]
                for tx in range(tw):
                    o0[tx], o1[tx], o2[tx], o3[tx] = _at(
                        m, k4, s0[tx], s1[tx], s2[tx], s3[tx], s4[tx], s5[tx])
            for u in range(m):
                p = ty * m + u
                if p >= P:
                    break
                row = out[p]
                for v in range(m):
                    ov = o[u, v]
                    # Tiles whose column v falls inside the output (the last may not).
                    full = (Q - v + m - 1) // m
                    if full > tw:
                        full = tw
                    for tx in range(full):
                        row[tx * m + v] = ov[tx] + bk


@kernel
def _output_transform(M, b, y, k4, n0, nb, th, tw, m):
    K, P, Q = y.shape[1], y.shape[2], y.shape[3]
    a = m + 2
    T = th * tw
    for it in prange(nb * K):
        j = it // K
        k = it % K
        out = y[n0 + j, k]
        bk = b[k]
        mm = np.zeros((6, 6), y.dtype)
        t = np.zeros((4, 6), y.dtype)
        for ty in range(th):
            for tx in range(tw):
                col = j * T + ty * tw + tx
                for u in range(a):
                    for v in range(a):
                        mm[u, v] = M[u * a + v, k, col]
                for v in range(a):
                    t[0, v], t[1, v], t[2, v], t[3, v] = _at(
                        m, k4, mm[0, v], mm[1, v], mm[2, v], mm[3, v], mm[4, v], mm[5, v])
                for u in range(m):
                    p = ty * m + u
                    if p >= P:
                        break
                    o0, o1, o2, o3 = _at(m, k4, t[u, 0], t[u, 1], t[u, 2], t[u, 3], t[u, 4],
                                         t[u, 5])
                    row = out[p]
                    q = tx * m
                    row[q] = o0 + bk
                    if q + 1 < Q:
                        row[q + 1] = o1 + bk
                    if m == 4:
                        if q + 2 < Q:
                            row[q + 2] = o2 + bk
                        if q + 3 < Q:
                            row[q + 3] = o3 + bk


# Tiles per row from which the row-vectorised transforms beat the one-tile-at-a-time
# ones, measured side by side on ResNet-18 layers (1 thread). Input: 7 ties, 14 wins
# ~1.7x, 4 loses ~1.5x. Output: 28 wins 3.9x, 14 ~2.4x, 7 ~1.5x, 4 ties, 2 loses.
_ROW_TILES_IN = 7
_ROW_TILES_OUT = 4


def _core(x, U, b, y, m, pt, pl, nb):
    """y = winograd_conv(x) given transformed filters U (a*a, K, C); x (N,C,H,W)."""
    N, C = x.shape[0], x.shape[1]
    K, P, Q = y.shape[1], y.shape[2], y.shape[3]
    a = m + 2
    consts = np.array([2, 4, 5, 8], x.dtype)
    th = (P + m - 1) // m
    tw = (Q + m - 1) // m
    for n0 in range(0, N, nb):
        cnt = min(nb, N - n0)
        T = cnt * th * tw
        V = np.empty((a * a, C, T), x.dtype)
        M = np.empty((a * a, K, T), x.dtype)
        transform = _input_transform if tw >= _ROW_TILES_IN else _input_transform_scalar
        transform(x, V, consts, n0, cnt, th, tw, m, pt, pl)
        np.matmul(U, V, out=M)
        out_transform = _output_transform_rows if tw >= _ROW_TILES_OUT else _output_transform
        out_transform(M, b, y, consts, n0, cnt, th, tw, m)


def _nb(C, K, P, Q, N, m):
    a = m + 2
    tiles = -(-P // m) * -(-Q // m)
    return batch_chunk(a * a * max(C, K) * tiles, N)


def forward(x, w, b, spec, m):
    """Winograd F(m x m, 3 x 3) forward (stride 1, dilation 1, groups 1)."""
    y = np.empty(spec.y_shape, x.dtype)
    if spec.N == 0:
        return y
    G = matrices(m, x.dtype)[1]
    U = np.empty(((m + 2) ** 2, spec.K, spec.C), x.dtype)
    _filter_transform(w, G, U, False)
    bias = b if b is not None else np.zeros(spec.K, x.dtype)
    _core(x, U, bias, y, m, spec.padding[0], spec.padding[1],
          _nb(spec.C, spec.K, spec.P, spec.Q, spec.N, m))
    return y


def backward_data(gy, w, spec, m):
    """grad_x as the Winograd correlation of grad_y with the flipped, transposed filter."""
    gx = np.empty(spec.x_shape, gy.dtype)
    if spec.N == 0:
        return gx
    G = matrices(m, gy.dtype)[1]
    U = np.empty(((m + 2) ** 2, spec.C, spec.K), gy.dtype)
    _filter_transform(w, G, U, True)
    zeros = np.zeros(spec.C, gy.dtype)
    _core(gy, U, zeros, gx, m, 2 - spec.padding[0], 2 - spec.padding[1],
          _nb(spec.K, spec.C, spec.H, spec.W, spec.N, m))
    return gx
