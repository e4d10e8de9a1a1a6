"""Winograd F(2x2,3x3) in numba.cuda: four kernels.

1. filter transform  U[i, k, c] = (G g G^T)[i]          one thread per (k, c)
2. input transform   V[i, c, t] = (B^T d B)[i]           one thread per (c, tile)
3. 16 GEMMs          M[i] = U[i] @ V[i]                  shared-memory tiled, grid z = i
4. output transform  y = A^T M A (+ bias), clipped       one thread per (k, tile)

The transforms of F(2,3) are additions only (G has halves), written out by hand.
grad_x is the same pipeline on grad_y with the filter flipped and transposed and
padding 2 - pad (negative: a crop).
"""
from __future__ import annotations

from numba import cuda, float32

from ._common import launch1d, empty, jit

T = 16
M_OUT = 2
A = 4


@jit
def _filter_transform(w, U, flip):
    Kt, Ct = U.shape[1], U.shape[2]
    i = cuda.grid(1)
    if i >= Kt * Ct:
        return
    k = i // Ct
    c = i % Ct
    f = cuda.local.array((3, 3), dtype=float32)
    for r in range(3):
        for s in range(3):
            f[r, s] = w[c, k, 2 - r, 2 - s] if flip else w[k, c, r, s]
    t = cuda.local.array((4, 3), dtype=float32)
    for s in range(3):
        t[0, s] = f[0, s]
        t[1, s] = float32(0.5) * (f[0, s] + f[1, s] + f[2, s])
        t[2, s] = float32(0.5) * (f[0, s] - f[1, s] + f[2, s])
        t[3, s] = f[2, s]
    for u in range(4):
        U[u * 4 + 0, k, c] = t[u, 0]
        U[u * 4 + 1, k, c] = float32(0.5) * (t[u, 0] + t[u, 1] + t[u, 2])
        U[u * 4 + 2, k, c] = float32(0.5) * (t[u, 0] - t[u, 1] + t[u, 2])
        U[u * 4 + 3, k, c] = t[u, 2]


@jit
def _input_transform(x, V, th, tw, pt, pl):
    N, C, H, W = x.shape
    tiles = th * tw
    i = cuda.grid(1)
    if i >= C * N * tiles:
        return
    c = i // (N * tiles)
    t = i % (N * tiles)
    n = t // tiles
    h0 = ((t % tiles) // tw) * M_OUT - pt
    w0 = (t % tw) * M_OUT - pl
    d = cuda.local.array((4, 4), dtype=float32)
    for u in range(4):
        for v in range(4):
            hh = h0 + u
            ww = w0 + v
            val = float32(0.0)
            if hh >= 0 and hh < H and ww >= 0 and ww < W:
                val = x[n, c, hh, ww]
            d[u, v] = val
    b = cuda.local.array((4, 4), dtype=float32)  # B^T d
    for v in range(4):
        b[0, v] = d[0, v] - d[2, v]
        b[1, v] = d[1, v] + d[2, v]
        b[2, v] = d[2, v] - d[1, v]
        b[3, v] = d[1, v] - d[3, v]
    for u in range(4):
        V[u * 4 + 0, c, t] = b[u, 0] - b[u, 2]
        V[u * 4 + 1, c, t] = b[u, 1] + b[u, 2]
        V[u * 4 + 2, c, t] = b[u, 2] - b[u, 1]
        V[u * 4 + 3, c, t] = b[u, 1] - b[u, 3]


@jit
def _batched_gemm(U, V, M):
    """M[z] = U[z] @ V[z] for every z (grid z), T x T shared-memory tiles."""
    z = cuda.blockIdx.z
    Kt, Ct, Tt = U.shape[1], U.shape[2], V.shape[2]
    As = cuda.shared.array((T, T + 1), dtype=float32)
    Bs = cuda.shared.array((T, T + 1), dtype=float32)
    tx, ty = cuda.threadIdx.x, cuda.threadIdx.y
    row = cuda.blockIdx.y * T + ty
    col = cuda.blockIdx.x * T + tx
    acc = float32(0.0)
    for c0 in range(0, Ct, T):
        v = float32(0.0)
        if row < Kt and c0 + tx < Ct:
            v = U[z, row, c0 + tx]
        As[ty, tx] = v
        v = float32(0.0)
        if c0 + ty < Ct and col < Tt:
            v = V[z, c0 + ty, col]
        Bs[ty, tx] = v
        cuda.syncthreads()
        for i in range(T):
            acc += As[ty, i] * Bs[i, tx]
        cuda.syncthreads()
    if row < Kt and col < Tt:
        M[z, row, col] = acc


@jit
def _output_transform(M, b, y, th, tw):
    N, K, P, Q = y.shape
    tiles = th * tw
    i = cuda.grid(1)
    if i >= K * N * tiles:
        return
    k = i // (N * tiles)
    t = i % (N * tiles)
    n = t // tiles
    p0 = ((t % tiles) // tw) * M_OUT
    q0 = (t % tw) * M_OUT
    a = cuda.local.array((2, 4), dtype=float32)  # A^T m
    for v in range(4):
        m0 = M[v, k, t]
        m1 = M[4 + v, k, t]
        m2 = M[8 + v, k, t]
        m3 = M[12 + v, k, t]
        a[0, v] = m0 + m1 + m2
        a[1, v] = m1 - m2 - m3
    bk = b[k]
    for u in range(2):
        if p0 + u < P:
            if q0 < Q:
                y[n, k, p0 + u, q0] = a[u, 0] + a[u, 1] + a[u, 2] + bk
            if q0 + 1 < Q:
                y[n, k, p0 + u, q0 + 1] = a[u, 1] - a[u, 2] - a[u, 3] + bk


def _run(x, U, b, out, pt, pl):
    N, C = x.shape[0], x.shape[1]
    K, P, Q = out.shape[1], out.shape[2], out.shape[3]
    th, tw = -(-P // M_OUT), -(-Q // M_OUT)
    Tt = N * th * tw
    V = empty((A * A, C, Tt), x)
    M = empty((A * A, K, Tt), x)
    _input_transform[launch1d(C * Tt)](x, V, th, tw, pt, pl)
    _batched_gemm[(-(-Tt // T), -(-K // T), A * A), (T, T)](U, V, M)
    _output_transform[launch1d(K * Tt)](M, b, out, th, tw)


def forward(x, w, b, spec):
    y = empty(spec.y_shape, x)
    if spec.N == 0:
        return y
    U = empty((A * A, spec.K, spec.C), x)
    _filter_transform[launch1d(spec.K * spec.C)](w, U, False)
    _run(x, U, b, y, spec.padding[0], spec.padding[1])
    return y


def backward_data(gy, w, spec, zeros_c):
    gx = empty(spec.x_shape, gy)
    if spec.N == 0:
        return gx
    U = empty((A * A, spec.C, spec.K), gy)
    _filter_transform[launch1d(spec.K * spec.C)](w, U, True)
    _run(gy, U, zeros_c, gx, 2 - spec.padding[0], 2 - spec.padding[1])
    return gx
