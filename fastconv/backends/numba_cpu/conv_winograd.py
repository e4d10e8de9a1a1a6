"""Winograd F(2x2,3x3) and F(4x4,3x3) convolution in Numba.

The classic Lavin-Gray formulation: with ``a = m + 2`` (4 or 6)

* filter transform  U[i, k, c] = (G g_kc G^T)[i]                      (Numba, prange over k)
* input transform   V[i, c, t] = (B^T d_ct B)[i] for every a x a tile   (prange over images x C)
* a*a GEMMs         M[i] = U[i] @ V[i]                                   (np.dot -> BLAS)
* output transform  y tile = A^T M_kt A (+ bias), clipped at the edges  (prange over K)

The batch is processed in chunks so V and M stay bounded. Tiles that overhang the
input read zeros; tiles that overhang the output are clipped. The same core computes
the data gradient: grad_x is the stride-1 correlation of grad_y with the filter
flipped and transposed, with padding (2 - pad) on each side (negative values crop).
"""
from __future__ import annotations

import numpy as np
from numba import prange

from ._common import batch_chunk, driver, kernel

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
    (the data-gradient filter), else f = w[k, c]."""
    a = G.shape[0]
    Kt, Ct = U.shape[1], U.shape[2]
    for k in prange(Kt):
        f = np.empty((3, 3), w.dtype)
        t = np.empty((a, 3), w.dtype)
        for c in range(Ct):
            for r in range(3):
                for s in range(3):
                    f[r, s] = w[c, k, 2 - r, 2 - s] if flip else w[k, c, r, s]
            for i in range(a):
                for s in range(3):
                    t[i, s] = G[i, 0] * f[0, s] + G[i, 1] * f[1, s] + G[i, 2] * f[2, s]
            for i in range(a):
                for j in range(a):
                    U[i * a + j, k, c] = G[j, 0] * t[i, 0] + G[j, 1] * t[i, 1] + G[j, 2] * t[i, 2]


@kernel
def _input_transform(x, BT, V, n0, nb, th, tw, m, pt, pl):
    C, H, W = x.shape[1], x.shape[2], x.shape[3]
    a = BT.shape[0]
    T = th * tw
    for it in prange(nb * C):
        j = it // C
        c = it % C
        plane = x[n0 + j, c]
        d = np.empty((a, a), x.dtype)
        t = np.empty((a, a), x.dtype)
        for ty in range(th):
            h0 = ty * m - pt
            for tx in range(tw):
                w0 = tx * m - pl
                interior = h0 >= 0 and w0 >= 0 and h0 + a <= H and w0 + a <= W
                for u in range(a):
                    for v in range(a):
                        hh = h0 + u
                        ww = w0 + v
                        if interior or (hh >= 0 and hh < H and ww >= 0 and ww < W):
                            d[u, v] = plane[hh, ww]
                        else:
                            d[u, v] = 0
                for u in range(a):
                    for v in range(a):
                        acc = BT[u, 0] * d[0, v]
                        for z in range(1, a):
                            acc += BT[u, z] * d[z, v]
                        t[u, v] = acc
                col = j * T + ty * tw + tx
                for u in range(a):
                    for v in range(a):
                        acc = t[u, 0] * BT[v, 0]
                        for z in range(1, a):
                            acc += t[u, z] * BT[v, z]
                        V[u * a + v, c, col] = acc


@kernel
def _output_transform(M, AT, b, y, n0, nb, th, tw, m):
    K, P, Q = y.shape[1], y.shape[2], y.shape[3]
    a = AT.shape[1]
    T = th * tw
    for it in prange(nb * K):
        j = it // K
        k = it % K
        out = y[n0 + j, k]
        bk = b[k]
        mm = np.empty((a, a), y.dtype)
        t = np.empty((m, a), y.dtype)
        for ty in range(th):
            for tx in range(tw):
                col = j * T + ty * tw + tx
                for u in range(a):
                    for v in range(a):
                        mm[u, v] = M[u * a + v, k, col]
                for u in range(m):
                    for v in range(a):
                        acc = AT[u, 0] * mm[0, v]
                        for z in range(1, a):
                            acc += AT[u, z] * mm[z, v]
                        t[u, v] = acc
                for u in range(m):
                    p = ty * m + u
                    if p >= P:
                        break
                    for v in range(m):
                        q = tx * m + v
                        if q >= Q:
                            break
                        acc = t[u, 0] * AT[v, 0]
                        for z in range(1, a):
                            acc += t[u, z] * AT[v, z]
                        out[p, q] = acc + bk


@driver
def _core(x, U, b, y, BT, AT, m, pt, pl, nb):
    """y = winograd_conv(x) given transformed filters U (a*a, K, C); x (N,C,H,W)."""
    N, C = x.shape[0], x.shape[1]
    K, P, Q = y.shape[1], y.shape[2], y.shape[3]
    a = BT.shape[0]
    th = (P + m - 1) // m
    tw = (Q + m - 1) // m
    for n0 in range(0, N, nb):
        cnt = min(nb, N - n0)
        T = cnt * th * tw
        V = np.empty((a * a, C, T), x.dtype)
        M = np.empty((a * a, K, T), x.dtype)
        _input_transform(x, BT, V, n0, cnt, th, tw, m, pt, pl)
        for i in range(a * a):
            M[i] = np.dot(U[i], V[i])
        _output_transform(M, AT, b, y, n0, cnt, th, tw, m)


def _nb(C, K, P, Q, N, m):
    a = m + 2
    tiles = -(-P // m) * -(-Q // m)
    return batch_chunk(a * a * max(C, K) * tiles, N)


def forward(x, w, b, spec, m):
    """Winograd F(m x m, 3 x 3) forward (stride 1, dilation 1, groups 1)."""
    y = np.empty(spec.y_shape, x.dtype)
    if spec.N == 0:
        return y
    BT, G, AT = matrices(m, x.dtype)
    U = np.empty(((m + 2) ** 2, spec.K, spec.C), x.dtype)
    _filter_transform(w, G, U, False)
    bias = b if b is not None else np.zeros(spec.K, x.dtype)
    _core(x, U, bias, y, BT, AT, m, spec.padding[0], spec.padding[1],
          _nb(spec.C, spec.K, spec.P, spec.Q, spec.N, m))
    return y


def backward_data(gy, w, spec, m):
    """grad_x as the Winograd correlation of grad_y with the flipped, transposed filter."""
    gx = np.empty(spec.x_shape, gy.dtype)
    if spec.N == 0:
        return gx
    BT, G, AT = matrices(m, gy.dtype)
    U = np.empty(((m + 2) ** 2, spec.C, spec.K), gy.dtype)
    _filter_transform(w, G, U, True)
    zeros = np.zeros(spec.C, gy.dtype)
    _core(gy, U, zeros, gx, BT, AT, m, 2 - spec.padding[0], 2 - spec.padding[1],
          _nb(spec.K, spec.C, spec.H, spec.W, spec.N, m))
    return gx
