"""The numba_cuda kernels under the CUDA simulator, against the NumPy reference.

A logic check (indexing, tiling, edge handling, synchronisation structure), not proof
that the kernels run correctly or fast on a GPU. Shapes are small but not multiples of
the (shrunk, see conftest.py) tiles, so every kernel handles ragged tile edges.
"""
from __future__ import annotations

import numpy as np
import pytest

import fastconv as fc
from fastconv.backends import reference as ref
from fastconv._args import conv_spec, pool_spec


from sim_helpers import F32, B, close, rnd  # noqa: E402


CONV = [
    ("basic", (1, 3, 9, 7), (5, 3, 3, 3), dict(padding=1)),
    ("stride_dil_groups", (2, 4, 7, 8), (4, 2, 3, 3),
     dict(stride=(2, 1), padding=(1, 2), dilation=(1, 2), groups=2)),
    ("1x1_stride2", (1, 5, 5, 5), (3, 5, 1, 1), dict(stride=2)),
    ("same_even", (1, 2, 6, 5), (3, 2, 4, 2), dict(padding="same")),
    ("depthwise", (1, 3, 6, 6), (3, 1, 3, 3), dict(padding=1, groups=3)),
    ("n0", (0, 2, 5, 5), (3, 2, 3, 3), dict(padding=1)),
]


@pytest.mark.parametrize("algo", ["direct", "implicit_gemm"])
@pytest.mark.parametrize("name,xs,ws,kw", CONV, ids=[c[0] for c in CONV])
def test_conv(name, xs, ws, kw, algo):
    x, w, b = rnd(xs, 1), rnd(ws, 2), rnd(ws[:1], 3)
    spec = conv_spec(xs, ws, **kw)
    gy = rnd(spec.y_shape, 4)
    y = fc.conv2d(x, w, b, **kw, algo=algo, backend=B)
    close(y, ref.conv2d_forward(x, w, b, spec), spec.C * spec.R * spec.S, "forward")
    gx, gw, gb = fc.conv2d_backward(gy, x, w, **kw, algo=algo, backend=B)
    close(gx, ref.conv2d_backward_data(gy, w, spec), spec.K * spec.R * spec.S, "grad_x")
    close(gw, ref.conv2d_backward_weight(gy, x, spec), spec.N * spec.P * spec.Q, "grad_w")


WINO = [
    ("pad1_odd", (1, 5, 5, 9), (7, 5, 3, 3), dict(padding=1)),
    ("nopad", (2, 2, 6, 5), (3, 2, 3, 3), dict()),
    ("pad3_crop", (1, 2, 4, 5), (2, 2, 3, 3), dict(padding=3)),
]


@pytest.mark.parametrize("name,xs,ws,kw", WINO, ids=[c[0] for c in WINO])
def test_winograd_f23(name, xs, ws, kw):
    x, w, b = rnd(xs, 1), rnd(ws, 2), rnd(ws[:1], 3)
    spec = conv_spec(xs, ws, **kw)
    gy = rnd(spec.y_shape, 4)
    y = fc.conv2d(x, w, b, **kw, algo="winograd_f23", backend=B)
    close(y, ref.conv2d_forward(x, w, b, spec), 4 * spec.C * 9, "forward")
    gx, _, _ = fc.conv2d_backward(gy, x, w, **kw, algo="winograd_f23", backend=B,
                                  need_weight_grad=False)
    close(gx, ref.conv2d_backward_data(gy, w, spec), 4 * spec.K * 9, "grad_x")


def test_production_tile_sizes(monkeypatch):
    """The deployed tile/block sizes (not the shrunk ones) on one tiny shape."""
    from fastconv.backends import numba_cuda
    from fastconv.backends.numba_cuda import conv_direct, conv_implicit_gemm

    monkeypatch.setattr(conv_direct, "TX", 16)
    monkeypatch.setattr(conv_direct, "TY", 8)
    monkeypatch.setattr(conv_direct, "KC", 32)
    monkeypatch.setattr(conv_implicit_gemm, "T", 16)
    x, w, b = rnd((1, 2, 5, 6), 1), rnd((3, 2, 3, 3), 2), rnd((3,), 3)
    spec = conv_spec(x.shape, w.shape, padding=1)
    expected = ref.conv2d_forward(x, w, b, spec)
    for algo in ("direct", "implicit_gemm"):
        close(numba_cuda.conv2d_forward(x, w, b, spec, algo), expected, 18, algo)
    gy = rnd(spec.y_shape, 4)
    close(numba_cuda.conv2d_backward_data(gy, w, spec, "direct"),
          ref.conv2d_backward_data(gy, w, spec), 27, "direct grad_x")


def test_winograd_refuses_stride2_and_float64_is_refused():
    x, w = rnd((1, 2, 6, 6), 1), rnd((3, 2, 3, 3), 2)
    with pytest.raises(ValueError, match="stride"):
        fc.conv2d(x, w, stride=2, algo="winograd_f23", backend=B)
    with pytest.raises(TypeError, match="float32"):
        fc.conv2d(x.astype(np.float64), w.astype(np.float64), backend=B)
    with pytest.raises(ValueError, match="not implemented"):
        fc.conv2d(x, w, algo="winograd_f43", backend=B)
    assert fc.backends()[B]["available"]


POOL = [
    ("k3s2p1_ceil", (1, 2, 7, 6), dict(kernel_size=3, stride=2, padding=1, ceil_mode=True)),
    ("k2_dil2", (2, 1, 6, 7), dict(kernel_size=2, stride=1, dilation=2)),
]


@pytest.mark.parametrize("name,shape,kw", POOL, ids=[c[0] for c in POOL])
def test_max_pool(name, shape, kw):
    x = rnd(shape, 1)
    x[0, 0, 1, 1] = np.nan
    spec = pool_spec("max_pool2d", shape, **kw)
    y, idx = fc.max_pool2d(x, **kw, return_indices=True, backend=B)
    ry, ridx = ref.max_pool2d(x, spec)
    np.testing.assert_array_equal(idx, ridx)
    np.testing.assert_array_equal(y, ry)
    gy = rnd(y.shape, 2)
    close(fc.max_pool2d_backward(gy, idx, shape, backend=B),
          ref.max_pool2d_backward(gy, ridx, shape), 9, "backward")


AVG_SHAPE, AVG_KW = (1, 2, 7, 8), dict(kernel_size=3, stride=2, padding=1, ceil_mode=True)


@pytest.mark.parametrize("extra", [dict(), dict(count_include_pad=False),
                                   dict(divisor_override=2)], ids=["incl", "excl", "div2"])
def test_avg_pool(extra):
    shape, kw = AVG_SHAPE, dict(AVG_KW, **extra)
    x = rnd(shape, 1)
    spec = pool_spec("avg_pool2d", shape, **kw)
    close(fc.avg_pool2d(x, **kw, backend=B), ref.avg_pool2d(x, spec), 9, "forward")
    gy = rnd(spec.y_shape, 2)
    close(fc.avg_pool2d_backward(gy, shape, **kw, backend=B),
          ref.avg_pool2d_backward(gy, spec), 9, "backward")


ADAPTIVE_X, ADAPTIVE_OUT = (1, 3, 7, 5), (4, 3)


def test_adaptive_avg_pool():
    x = rnd(ADAPTIVE_X, 1)
    close(fc.adaptive_avg_pool2d(x, ADAPTIVE_OUT, backend=B),
          ref.adaptive_avg_pool2d(x, ADAPTIVE_OUT), 9)
    gy = rnd(ADAPTIVE_X[:2] + ADAPTIVE_OUT, 2)
    close(fc.adaptive_avg_pool2d_backward(gy, x.shape, backend=B),
          ref.adaptive_avg_pool2d_backward(gy, x.shape), 9)


def test_batch_norm():
    shape, C = BN_SHAPE, 2  # 105 values per channel: several reduction strides
    x = rnd(shape, 1) * 2 + 1
    w, b = rnd((C,), 2), rnd((C,), 3)
    rx = x.reshape(3, C, -1, 1)
    ry, rmean, rvar = ref.batch_norm_train(rx, w, b, 1e-5)
    y, mean, invstd = fc.batch_norm(x, None, None, w, b, training=True, return_stats=True,
                                    backend=B)
    close(y.reshape(rx.shape), ry, 105, "train y")
    close(mean, rmean, 105, "mean")
    close(invstd, (1 / np.sqrt(rvar.astype(np.float64) + 1e-5)).astype(F32), 105, "invstd")
    gy = rnd(shape, 4)
    for training in (True, False):
        gx, gw, gb = fc.batch_norm_backward(gy, x, w, mean, invstd, training=training,
                                            backend=B)
        rgx, rgw, rgb = ref.batch_norm_backward(gy.reshape(rx.shape), rx, w, mean, invstd,
                                                training)
        close(gx.reshape(rx.shape), rgx, 105, f"grad_x training={training}")
        close(gw, rgw, 105, "grad_w")
        close(gb, rgb, 105, "grad_b")
    rm, rv = rnd((C,), 5), np.abs(rnd((C,), 6)) + 0.5
    close(fc.batch_norm(x, rm, rv, w, b, training=False, backend=B).reshape(rx.shape),
          ref.batch_norm_eval(rx, rm, rv, w, b, 1e-5), 4, "eval y")


RELU_SHAPE = (2, 3, 5, 3)
BN_SHAPE = (3, 2, 5, 7)


def test_relu():
    x = rnd(RELU_SHAPE, 1)
    x[0, 0, 0, 0] = np.nan
    y = fc.relu(x, backend=B)
    np.testing.assert_array_equal(y, ref.relu(x))
    gy = rnd(x.shape, 2)
    np.testing.assert_array_equal(fc.relu_backward(gy, y, backend=B), ref.relu_backward(gy, y))


def test_direct_shared_memory_limit(monkeypatch):
    """A window too large for shared memory: the direct forward is an obstacle the
    dispatcher reports (auto runs the implicit GEMM), backward-data stages fewer filters
    per chunk. Same results either way."""
    from fastconv import _dispatch
    from fastconv.backends.numba_cuda import conv_direct

    monkeypatch.setattr(conv_direct, "SHMEM_LIMIT", 80)
    x, w, b = rnd((1, 2, 4, 5), 1), rnd((5, 2, 3, 3), 2), rnd((5,), 3)
    spec = conv_spec(x.shape, w.shape, padding=1)
    assert conv_direct.forward_tile_bytes(spec) > 80
    with pytest.raises(ValueError, match="exceeds one block's shared memory"):
        fc.conv2d(x, w, b, padding=1, algo="direct", backend=B)
    name, mod = _dispatch.get_backend(B, "numpy", x.dtype, "conv2d")
    assert "direct" not in _dispatch.serving_algos(name, mod, "conv2d_forward", spec)
    close(fc.conv2d(x, w, b, padding=1, backend=B),
          ref.conv2d_forward(x, w, b, spec), 18, "forward")
    gy = rnd(spec.y_shape, 4)
    gx, _, _ = fc.conv2d_backward(gy, x, w, padding=1, algo="direct", backend=B,
                                  need_weight_grad=False)
    close(gx, ref.conv2d_backward_data(gy, w, spec), 45, "grad_x")


def test_shapes_cross_tile_edges():
    """For every tiled axis of every kernel, some shape above spans more than one tile
    (block) of the simulated size and ends in a partial one, so the kernels' edge guards
    and tile-boundary indexing are exercised. Fails if a shape or tile size changes so
    that an axis is only ever covered by whole tiles or by a single tile."""
    from fastconv.backends.numba_cuda import _common, conv_direct, norm
    from fastconv.backends.numba_cuda import conv_implicit_gemm as ig
    from fastconv.backends.numba_cuda import conv_winograd as wg

    extents = {}  # (kernel, axis) -> [(extent, tile), ...] over the test shapes

    def add(kernel, axis, extent, tile):
        extents.setdefault((kernel, axis), []).append((extent, tile))

    one_d = _common.THREADS_1D
    for _, xs, ws, kw in CONV:
        s = conv_spec(xs, ws, **kw)
        if s.N == 0:
            continue
        Cg, Kg = s.C // s.groups, s.K // s.groups
        add("direct._fwd", "q", s.Q, conv_direct.TX)
        add("direct._fwd", "p", s.P, conv_direct.TY)
        add("direct._bwd_data", "w", s.W, conv_direct.TX)
        add("direct._bwd_data", "h", s.H, conv_direct.TY)
        add("direct._bwd_data", "k chunks", Kg, conv_direct.KC)
        add("direct._bwd_weight", "n*p*q", s.N * s.P * s.Q, conv_direct.RED)
        add("implicit_gemm._fwd", "n*p*q", s.N * s.P * s.Q, ig.T)
        add("implicit_gemm._fwd", "k", Kg, ig.T)
        add("implicit_gemm._fwd", "c*r*s", Cg * s.R * s.S, ig.T)
        add("implicit_gemm._bwd_data", "n*h*w", s.N * s.H * s.W, ig.T)
        add("implicit_gemm._bwd_data", "c", Cg, ig.T)
        add("implicit_gemm._bwd_data", "k*r*s", Kg * s.R * s.S, ig.T)
        add("implicit_gemm._bwd_weight", "k", Kg, ig.T)
        add("implicit_gemm._bwd_weight", "c*r*s", Cg * s.R * s.S, ig.T)
        add("implicit_gemm._bwd_weight", "n*p*q", s.N * s.P * s.Q, ig.T)
    for _, xs, ws, kw in WINO:
        s = conv_spec(xs, ws, **kw)
        # forward: tiles of y; backward-data: tiles of grad_x (the roles of C, K swap)
        for rows, red, (oh, ow) in ((s.K, s.C, (s.P, s.Q)), (s.C, s.K, (s.H, s.W))):
            tiles = s.N * -(-oh // wg.M_OUT) * -(-ow // wg.M_OUT)
            add("winograd._batched_gemm", "tiles", tiles, wg.T)
            add("winograd._batched_gemm", "rows", rows, wg.T)
            add("winograd._batched_gemm", "reduction", red, wg.T)
            add("winograd._input_transform", "c*tiles", red * tiles, one_d)
            add("winograd._output_transform", "k*tiles", rows * tiles, one_d)
        add("winograd._filter_transform", "k*c", s.K * s.C, one_d)
    for _, shape, kw in POOL:
        s = pool_spec("max_pool2d", shape, **kw)
        add("pool._max_fwd/_max_bwd", "outputs", int(np.prod(s.y_shape)), one_d)
    s = pool_spec("avg_pool2d", AVG_SHAPE, **AVG_KW)
    add("pool._avg_fwd/_avg_bwd", "outputs", int(np.prod(s.y_shape)), one_d)
    add("pool._avg_fwd/_avg_bwd (adaptive)", "outputs",
        int(np.prod(ADAPTIVE_X[:2] + ADAPTIVE_OUT)), one_d)
    add("misc._relu/_relu_bwd", "elements", int(np.prod(RELU_SHAPE)), one_d)
    add("norm._stats/_bwd_reduce", "per channel",
        int(np.prod(BN_SHAPE)) // BN_SHAPE[1], norm.RED)
    add("norm._normalize/_bwd_data", "elements", int(np.prod(BN_SHAPE)), one_d)

    uncovered = [key for key, seen in extents.items()
                 if not any(e > t and e % t for e, t in seen)]
    assert not uncovered, f"axes never crossing a ragged tile edge: {uncovered}"
