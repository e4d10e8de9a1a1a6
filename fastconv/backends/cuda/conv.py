"""Convolution on the GPU: direct, implicit GEMM, im2col + our SGEMM, Winograd F(2,3)/F(4,3),
depthwise (groups == C; conv_depthwise.cu, compile-checked and host-emulated only).

Each function takes validated C-contiguous float32 CuPy arrays and a ConvSpec, allocates its
result and workspaces from CuPy's memory pool and launches on the current stream.
"""
from __future__ import annotations

import cupy

from . import _runtime as rt
from ..._dispatch import is_winograd, winograd_tile
from ._source import GEMM_TILES, igemm_name, wino_name


def _geom(spec, N=None):
    """The 16 geometry ints every conv kernel takes (see FC_CONV_PARAMS)."""
    return tuple(rt.i32(v) for v in (
        spec.N if N is None else N, spec.C, spec.H, spec.W, spec.K, spec.P, spec.Q, spec.R,
        spec.S, spec.stride[0], spec.stride[1], spec.padding[0], spec.padding[1],
        spec.dilation[0], spec.dilation[1], spec.groups))


def _dw_geom(spec):
    """The 15 geometry ints of the depthwise kernels (FC_DW_PARAMS: no groups)."""
    return _geom(spec)[:15]


def _check(spec):
    rt.check_elems("the input", spec.N * spec.C * spec.H * spec.W)
    rt.check_elems("the output", spec.N * spec.K * spec.P * spec.Q)
    rt.check_elems("the weight", spec.K * (spec.C // spec.groups) * spec.R * spec.S)


def _tile(M, N, Z=1):
    return rt.pick_tile(M, N, Z)


def _chunks(N, per_image, max_images=None):
    """Image ranges whose workspace (per_image elements each) fits the budget."""
    nb = max(1, min(N, rt.WORKSPACE_ELEMS // max(per_image, 1)))
    if max_images:
        nb = max(1, min(nb, max_images))
    rt.check_elems("a workspace chunk", nb * per_image)
    return [(n0, min(N, n0 + nb)) for n0 in range(0, N, nb)]


# ----------------------------------------------------------------------------- forward


def conv2d_forward(x, w, b, spec, algo):
    """y = conv2d(x, w) + b with algorithm ``algo`` (bias fused into the epilogue)."""
    _check(spec)
    y = cupy.empty(spec.y_shape, cupy.float32)
    if spec.N == 0:
        return y
    if algo == "direct":
        rt.launch("conv_direct.cu", "fc::direct_fwd", rt.grid1d(y.size),
                  (x, w, rt.ptr_or_null(b), y, *_geom(spec)))
    elif algo == "depthwise":
        rt.launch("conv_depthwise.cu", "fc::depthwise_fwd", rt.grid1d(y.size),
                  (x, w, rt.ptr_or_null(b), y, *_dw_geom(spec)))
    elif algo == "implicit_gemm":
        Kg = spec.K // spec.groups
        npq = spec.N * spec.P * spec.Q
        tile = _tile(Kg, npq, spec.groups)
        BM, BN = GEMM_TILES[tile][:2]
        rt.launch("conv_implicit_gemm.cu", igemm_name("fwd", tile),
                  (-(-npq // BN), -(-Kg // BM), spec.groups),
                  (x, w, rt.ptr_or_null(b), y, *_geom(spec)))
    elif algo == "im2col":
        _im2col_forward(x, w, b, y, spec)
    elif is_winograd(algo):
        m = winograd_tile(algo)
        _winograd(x, w, b, y, m, N=spec.N, C=spec.C, H=spec.H, W=spec.W, K=spec.K, P=spec.P,
                  Q=spec.Q, ph=spec.padding[0], pw=spec.padding[1], flip=False)
    else:
        raise ValueError(f"cuda backend: unknown conv algorithm {algo!r}")
    return y


def _im2col_forward(x, w, b, y, spec):
    G, RS, PQ = spec.groups, spec.R * spec.S, spec.P * spec.Q
    Cg, Kg = spec.C // G, spec.K // G
    crs = Cg * RS
    for n0, n1 in _chunks(spec.N, spec.C * RS * PQ, 65535 // G):
        nb = n1 - n0
        col = cupy.empty((nb, spec.C * RS, PQ), cupy.float32)
        _im2col(x[n0:n1], col, spec, nb)
        # y[n, g] (Kg x PQ) = W_g (Kg x CgRS) @ col[n, g] (CgRS x PQ), z = (n, g)
        rt.gemm(w, col, y[n0:n1], M=Kg, N=PQ, Kd=crs, lda=crs, ldb=PQ, ldc=PQ,
                Zo=nb, Z2=G, sAo=0, sAi=Kg * crs, sBo=spec.C * RS * PQ, sBi=crs * PQ,
                sCo=spec.K * PQ, sCi=Kg * PQ, bias=b, sbias=Kg)


def _im2col(x, col, spec, nb):
    rt.launch("conv_im2col.cu", "fc::im2col", rt.grid1d(col.size),
              (x, col, *(rt.i32(v) for v in (
                  nb, spec.C, spec.H, spec.W, spec.P, spec.Q, spec.R, spec.S, spec.stride[0],
                  spec.stride[1], spec.padding[0], spec.padding[1], spec.dilation[0],
                  spec.dilation[1]))))


def _winograd(x, w, b, y, m, *, N, C, H, W, K, P, Q, ph, pw, flip):
    """y (N,K,P,Q) = 3x3 stride-1 correlation of x (N,C,H,W) with top/left padding (ph, pw)
    (bottom/right implied by P, Q; negative padding is a plain offset). flip: w is the
    forward weight (C,K,3,3) and the filter used is its channel-swapped 180-degree rotation,
    which turns this into the backward-data pass."""
    a2 = (m + 2) ** 2
    TH, TW = -(-P // m), -(-Q // m)
    U = cupy.empty((a2, K, C), cupy.float32)
    rt.launch("conv_winograd.cu", wino_name("filter", m), (-(-(K * C) // rt.THREADS),),
              (w, U, rt.i32(K), rt.i32(C), rt.i32(int(flip))))
    for n0, n1 in _chunks(N, a2 * (C + K) * TH * TW):
        nb = n1 - n0
        T = nb * TH * TW
        V = cupy.empty((a2, C, T), cupy.float32)
        Mx = cupy.empty((a2, K, T), cupy.float32)
        rt.launch("conv_winograd.cu", wino_name("input", m), rt.grid1d(V.size // a2),
                  (x[n0:n1], V, *(rt.i32(v) for v in (nb, C, H, W, ph, pw, TH, TW))))
        rt.gemm(U, V, Mx, M=K, N=T, Kd=C, lda=C, ldb=T, ldc=T, Z2=a2, sAi=K * C, sBi=C * T,
                sCi=K * T)
        rt.launch("conv_winograd.cu", wino_name("output", m), rt.grid1d(Mx.size // a2),
                  (Mx, rt.ptr_or_null(b), y[n0:n1],
                   *(rt.i32(v) for v in (nb, K, P, Q, TH, TW))))


# ----------------------------------------------------------------------------- backward data


def conv2d_backward_data(gy, w, spec, algo):
    """Gradient of conv2d with respect to its input."""
    _check(spec)
    gx = cupy.empty(spec.x_shape, cupy.float32)
    if spec.N == 0:
        return gx
    if algo == "direct":
        rt.launch("conv_direct.cu", "fc::direct_bwd_data", rt.grid1d(gx.size),
                  (gy, w, gx, *_geom(spec)))
    elif algo == "depthwise":
        rt.launch("conv_depthwise.cu", "fc::depthwise_bwd_data", rt.grid1d(gx.size),
                  (gy, w, gx, *_dw_geom(spec)))
    elif algo == "implicit_gemm":
        Cg = spec.C // spec.groups
        nhw = spec.N * spec.H * spec.W
        tile = _tile(Cg, nhw, spec.groups)
        BM, BN = GEMM_TILES[tile][:2]
        rt.launch("conv_implicit_gemm.cu", igemm_name("bwd_data", tile),
                  (-(-nhw // BN), -(-Cg // BM), spec.groups), (gy, w, gx, *_geom(spec)))
    elif algo == "im2col":
        _im2col_backward_data(gy, w, gx, spec)
    elif is_winograd(algo):
        m = winograd_tile(algo)
        # The input gradient of a stride-1 3x3 correlation is the full correlation of gy
        # with the rotated, channel-swapped filter: top/left padding 2 - ph.
        _winograd(gy, w, None, gx, m, N=spec.N, C=spec.K, H=spec.P, W=spec.Q, K=spec.C,
                  P=spec.H, Q=spec.W, ph=spec.R - 1 - spec.padding[0],
                  pw=spec.S - 1 - spec.padding[1], flip=True)
    else:
        raise ValueError(f"cuda backend: unknown conv algorithm {algo!r}")
    return gx


def _im2col_backward_data(gy, w, gx, spec):
    G, RS, PQ = spec.groups, spec.R * spec.S, spec.P * spec.Q
    Cg, Kg = spec.C // G, spec.K // G
    crs = Cg * RS
    for n0, n1 in _chunks(spec.N, spec.C * RS * PQ, 65535 // G):
        nb = n1 - n0
        col = cupy.empty((nb, spec.C * RS, PQ), cupy.float32)
        # col[n, g] (CgRS x PQ) = W_g^T (CgRS x Kg) @ gy[n, g] (Kg x PQ)
        rt.gemm(w, gy[n0:n1], col, M=crs, N=PQ, Kd=Kg, lda=crs, ldb=PQ, ldc=PQ, ta=True,
                Zo=nb, Z2=G, sAo=0, sAi=Kg * crs, sBo=spec.K * PQ, sBi=Kg * PQ,
                sCo=spec.C * RS * PQ, sCi=crs * PQ)
        rt.launch("conv_im2col.cu", "fc::col2im", rt.grid1d(nb * spec.C * spec.H * spec.W),
                  (col, gx[n0:n1], *(rt.i32(v) for v in (
                      nb, spec.C, spec.H, spec.W, spec.P, spec.Q, spec.R, spec.S,
                      spec.stride[0], spec.stride[1], spec.padding[0], spec.padding[1],
                      spec.dilation[0], spec.dilation[1]))))


# ----------------------------------------------------------------------------- backward weight


def conv2d_backward_weight(gy, x, spec, algo):
    """Gradient of conv2d with respect to its weight (no Winograd form)."""
    _check(spec)
    G = spec.groups
    Cg, Kg = spec.C // G, spec.K // G
    crs = Cg * spec.R * spec.S
    if spec.N == 0:
        return cupy.zeros(spec.w_shape, cupy.float32)
    if algo == "direct":
        gw = cupy.empty(spec.w_shape, cupy.float32)
        rt.launch("conv_direct.cu", "fc::direct_bwd_weight", (gw.size,),
                  (gy, x, gw, *_geom(spec)))
        return gw
    if algo == "depthwise":
        gw = cupy.empty(spec.w_shape, cupy.float32)
        rt.launch("conv_depthwise.cu", "fc::depthwise_bwd_weight", (gw.size,),
                  (gy, x, gw, *_dw_geom(spec)))
        return gw
    if algo == "implicit_gemm":
        npq = spec.N * spec.P * spec.Q
        tile = _tile(Kg, crs, G)
        BM, BN, BK = GEMM_TILES[tile][:3]
        blocks = -(-crs // BN) * -(-Kg // BM) * G
        splits = rt.choose_splits(blocks, npq, BK, 65535 // G)
        gw = (cupy.zeros if splits > 1 else cupy.empty)(spec.w_shape, cupy.float32)
        rt.launch("conv_implicit_gemm.cu", igemm_name("bwd_weight", tile),
                  (-(-crs // BN), -(-Kg // BM), G * splits),
                  (gy, x, gw, *_geom(spec), rt.i32(splits)))
        return gw
    if algo == "im2col":
        return _im2col_backward_weight(gy, x, spec)
    raise ValueError(f"cuda backend: algorithm {algo!r} has no weight-gradient form")


def _im2col_backward_weight(gy, x, spec):
    G, RS, PQ = spec.groups, spec.R * spec.S, spec.P * spec.Q
    Cg, Kg = spec.C // G, spec.K // G
    crs = Cg * RS
    # Chunks accumulate into gw (beta = 1 or atomics), so it starts at zero.
    gw = cupy.zeros(spec.w_shape, cupy.float32)
    BM, BN, BK = GEMM_TILES[_tile(Kg, crs, G)][:3]
    for n0, n1 in _chunks(spec.N, spec.C * RS * PQ):
        nb = n1 - n0
        col = cupy.empty((nb, spec.C * RS, PQ), cupy.float32)
        _im2col(x[n0:n1], col, spec, nb)
        blocks = -(-crs // BN) * -(-Kg // BM) * G
        splits = rt.choose_splits(blocks, nb * PQ, BK, 65535 // G)
        # gw_g (Kg x CgRS) += sum_n gy[n, g] (Kg x PQ) @ col[n, g]^T (PQ x CgRS)
        rt.gemm(gy[n0:n1], col, gw, M=Kg, N=crs, Kd=PQ, L=nb, lda=PQ, ldb=PQ, ldc=crs,
                tb=True, sAl=spec.K * PQ, sBl=spec.C * RS * PQ, Z2=G, sAi=Kg * PQ,
                sBi=crs * PQ, sCi=Kg * crs, beta=1.0, splits=splits)
    return gw
