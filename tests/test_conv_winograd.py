"""Winograd F(2x2,3x3) / F(4x4,3x3) on the native backend: forward and backward-data
against the NumPy reference and PyTorch, every ISA path, thread-count invariance,
refusals, and the measured float32 error of the transforms."""
from __future__ import annotations

import numpy as np
import pytest

import fastconv
from fastconv import _native
from conftest import (DTYPES, WINOGRAD_CASES, WINOGRAD_IDS, assert_close, conv_inputs,
                      randn, requires_torch, torch_conv)

ALGOS = ["winograd_f23", "winograd_f43"]
ISAS = ["generic", "avx2", "avx512"]


def _grad_out(x, w, kw, dtype):
    y_shape = fastconv.conv2d(x, w, **kw, backend="reference").shape
    return randn(y_shape, dtype, 7)


@pytest.mark.parametrize("isa", ISAS, indirect=True)
@pytest.mark.parametrize("algo", ALGOS)
@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("name,xs,ws,kw", WINOGRAD_CASES, ids=WINOGRAD_IDS)
def test_winograd_vs_reference(name, xs, ws, kw, dtype, algo, isa):
    x, w, b = conv_inputs(xs, ws, dtype)
    terms = ws[1] * 9
    y = fastconv.conv2d(x, w, b, **kw, algo=algo, backend="native")
    y_ref = fastconv.conv2d(x, w, b, **kw, backend="reference")
    assert y.dtype == dtype
    assert_close(y, y_ref, dtype, terms, f"{name} {algo} forward")
    gy = _grad_out(x, w, kw, dtype)
    gx, gw, gb = fastconv.conv2d_backward(gy, x, w, **kw, need_weight_grad=False,
                                          need_bias_grad=False, algo=algo, backend="native")
    assert gw is None and gb is None
    gx_ref, _, _ = fastconv.conv2d_backward(gy, x, w, **kw, need_weight_grad=False,
                                            need_bias_grad=False, backend="reference")
    assert gx.shape == x.shape
    assert_close(gx, gx_ref, dtype, ws[0] * 9, f"{name} {algo} backward-data")


@requires_torch
@pytest.mark.torch
@pytest.mark.parametrize("algo", ALGOS)
@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("name,xs,ws,kw", WINOGRAD_CASES, ids=WINOGRAD_IDS)
def test_winograd_vs_torch(name, xs, ws, kw, dtype, algo):
    x, w, b = conv_inputs(xs, ws, dtype)
    y_t, gy, gx_t, _, _ = torch_conv(x, w, b, **kw)
    y = fastconv.conv2d(x, w, b, **kw, algo=algo, backend="native")
    assert_close(y, y_t, dtype, ws[1] * 9, f"{name} {algo} forward vs torch")
    gx, _, _ = fastconv.conv2d_backward(gy, x, w, **kw, need_weight_grad=False,
                                        need_bias_grad=False, algo=algo, backend="native")
    assert_close(gx, gx_t, dtype, ws[0] * 9, f"{name} {algo} backward-data vs torch")


@pytest.mark.parametrize("algo", ALGOS)
# The last shape has a transformed filter bank over 3 MB: the fused (filter-blocked) path.
@pytest.mark.parametrize("shape", [(2, 33, 17, 15, 20), (1, 64, 30, 30, 70),
                                   (2, 320, 9, 10, 161), (13, 24, 7, 9, 10),
                                   (6, 192, 7, 7, 200)])
def test_winograd_threads_agree(shape, algo, threads):
    """Each tile's arithmetic does not depend on how tiles are split between threads."""
    n, c, h, wd, k = shape
    x, w, b = conv_inputs((n, c, h, wd), (k, c, 3, 3), np.float32)
    out = []
    for t in (1, 2):
        fastconv.set_num_threads(t)
        y = fastconv.conv2d(x, w, b, padding=1, algo=algo, backend="native")
        gx, _, _ = fastconv.conv2d_backward(y, x, w, padding=1, need_weight_grad=False,
                                            need_bias_grad=False, algo=algo, backend="native")
        out.append((y, gx))
    np.testing.assert_array_equal(out[0][0], out[1][0])
    np.testing.assert_array_equal(out[0][1], out[1][1])
    y_ref = fastconv.conv2d(x, w, b, padding=1, backend="reference")
    assert_close(out[0][0], y_ref, np.float32, c * 9, f"{shape} {algo} forward")
    gx_ref, _, _ = fastconv.conv2d_backward(out[0][0], x, w, padding=1, need_weight_grad=False,
                                            need_bias_grad=False, backend="reference")
    assert_close(out[0][1], gx_ref, np.float32, k * 9, f"{shape} {algo} backward-data")


# Small images are tiled several images at a time (a tile row of a block of images is
# one run of tiles), so a run can start mid-image, the last block can hold fewer images,
# and a chunk boundary can cut a run. Shapes (N, C, H, W, K, padding) chosen for that:
# 7x7 / 14x14 ResNet-like planes, a batch that is not a multiple of the block, blocks of
# one image left over, odd planes with partial tiles on both edges, a fused-mode layer
# for both tile sizes (transformed filters over 3 MB) and one with several chunks of
# tiles (fused for F(4,3) float32, private for F(2,3)).
BLOCK_CASES = [
    ("n16_7x7", (16, 8, 7, 7), (9, 1)),
    ("n17_9x11", (17, 5, 9, 11), (6, 1)),
    ("n11_30x30", (11, 3, 30, 30), (4, 1)),
    ("n5_14x14_nopad", (5, 6, 14, 14), (7, 0)),
    ("n3_5x6_pad2", (3, 4, 5, 6), (5, 2)),
    ("n5_7x7_fused", (5, 256, 7, 7), (200, 1)),
    ("n3_45x45_fused_2chunks", (3, 200, 45, 45), (130, 1)),
]


# The fused-mode shapes are slow on the narrow ISA paths in float64; float32 covers those.
BLOCK_PARAMS = [
    pytest.param(name, xs, kp, dt, algo, isa,
                 id=f"{name}-{'f32' if dt == np.float32 else 'f64'}-{algo}-{isa}")
    for name, xs, kp in BLOCK_CASES for dt in DTYPES for algo in ALGOS for isa in ISAS
    if not ("fused" in name and isa != "avx512" and dt == np.float64)
]


@pytest.mark.parametrize("name,xs,kp,dtype,algo,isa", BLOCK_PARAMS, indirect=["isa"])
def test_winograd_image_blocks(name, xs, kp, dtype, algo, isa, threads):
    k, pad = kp
    x, w, b = conv_inputs(xs, (k, xs[1], 3, 3), dtype)
    fastconv.set_num_threads(2)
    y = fastconv.conv2d(x, w, b, padding=pad, algo=algo, backend="native")
    y_ref, gy, gx_ref = _block_reference(name, dtype)
    assert_close(y, y_ref, dtype, xs[1] * 9, f"{name} {algo} forward")
    gx, _, _ = fastconv.conv2d_backward(gy, x, w, padding=pad, need_weight_grad=False,
                                        need_bias_grad=False, algo=algo, backend="native")
    assert_close(gx, gx_ref, dtype, k * 9, f"{name} {algo} backward-data")


# One image per block of tiles (batch 1, or rows of >= 32 tiles), where a tile row is one
# image's row of tiles: widths around multiples of 32 columns (a block of 8 F(4,3) tiles),
# every padding up to 2 (asymmetric too), planes narrower than a tile row's vector, and
# a fused-mode layer; with the fused output stage on prepacked filters.
ONE_IMAGE_CASES = [
    ((1, 3, 9, 5), (2, 0)), ((1, 4, 6, 31), (1, 1)), ((1, 5, 7, 32), (0, 1)),
    ((1, 6, 5, 33), (1, 0)), ((1, 3, 11, 63), (2, 2)), ((1, 7, 8, 65), (1, 2)),
    ((1, 2, 4, 4), (0, 0)), ((2, 3, 5, 130), (1, 1)), ((1, 200, 23, 47), (1, 1)),
]


@pytest.mark.parametrize("isa", ISAS, indirect=True)
@pytest.mark.parametrize("xs,pad", ONE_IMAGE_CASES,
                         ids=[f"{n}x{c}x{h}x{w}-p{p[0]}{p[1]}" for (n, c, h, w), p in ONE_IMAGE_CASES])
def test_winograd_one_image_blocks(xs, pad, isa):
    x, w, b = conv_inputs(xs, (9, xs[1], 3, 3), np.float32)
    res = randn(fastconv.conv2d(x, w, padding=pad, backend="reference").shape, np.float32, 3)
    want = fastconv.conv2d(x, w, b, padding=pad, backend="reference")
    y = fastconv.conv2d(x, w, b, padding=pad, algo="winograd_f43", backend="native")
    assert_close(y, want, np.float32, xs[1] * 9, "F(4,3) one image per block")
    from fastconv import _args as A
    from fastconv.backends.native import conv as nconv
    spec = A.conv_spec(x.shape, w.shape, 1, pad, 1, 1)
    packed = nconv.prepack(w, spec, "winograd_f43")
    y2 = nconv.conv2d_forward(x, w, b, spec, "winograd_f43", residual=res, clamp=(0, np.inf),
                              packed=packed)
    assert_close(y2, np.maximum(want + res, 0), np.float32, xs[1] * 9, "F(4,3) fused stage")


_BLOCK_REF = {}


def _block_reference(name, dtype):
    """(y, grad_out, grad_x) of a BLOCK_CASES shape by the reference backend, computed
    once per shape and dtype (the float64 reference dominates these tests' time)."""
    key = (name, np.dtype(dtype).name)
    if key not in _BLOCK_REF:
        _, xs, (k, pad) = next(c for c in BLOCK_CASES if c[0] == name)
        x, w, b = conv_inputs(xs, (k, xs[1], 3, 3), dtype)
        y = fastconv.conv2d(x, w, b, padding=pad, backend="reference")
        gy = randn(y.shape, dtype, 7)
        gx, _, _ = fastconv.conv2d_backward(gy, x, w, padding=pad, need_weight_grad=False,
                                            need_bias_grad=False, backend="reference")
        _BLOCK_REF[key] = (y, gy, gx)
    return _BLOCK_REF[key]


@requires_torch
@pytest.mark.torch
@pytest.mark.parametrize("algo", ALGOS)
@pytest.mark.parametrize("name,xs,kp", BLOCK_CASES, ids=[c[0] for c in BLOCK_CASES])
def test_winograd_image_blocks_vs_torch(name, xs, kp, algo):
    k, pad = kp
    x, w, b = conv_inputs(xs, (k, xs[1], 3, 3), np.float32)
    y_t, gy, gx_t, _, _ = torch_conv(x, w, b, padding=pad)
    y = fastconv.conv2d(x, w, b, padding=pad, algo=algo, backend="native")
    assert_close(y, y_t, np.float32, xs[1] * 9, f"{name} {algo} forward vs torch")
    gx, _, _ = fastconv.conv2d_backward(gy, x, w, padding=pad, need_weight_grad=False,
                                        need_bias_grad=False, algo=algo, backend="native")
    assert_close(gx, gx_t, np.float32, k * 9, f"{name} {algo} backward-data vs torch")


@pytest.mark.parametrize("algo", ALGOS)
def test_winograd_workspace_reuse(algo):
    """The calling thread's workspace keeps what earlier calls left in it (here NaN and
    inf from a poisoned input); a later, smaller call must not pick any of it up."""
    x, w, _ = conv_inputs((5, 256, 7, 7), (200, 256, 3, 3), np.float32)
    x[:, :, 3, 3] = np.nan
    x[:, :, 0, 0] = np.inf
    fastconv.conv2d(x, w, padding=1, algo=algo, backend="native")
    x2, w2, b2 = conv_inputs((3, 240, 5, 6), (210, 240, 3, 3), np.float32, seed=3)
    y = fastconv.conv2d(x2, w2, b2, padding=1, algo=algo, backend="native")
    assert np.isfinite(y).all()
    y_ref = fastconv.conv2d(x2, w2, b2, padding=1, backend="reference")
    assert_close(y, y_ref, np.float32, 240 * 9, f"{algo} after a poisoned call")


@pytest.mark.parametrize("algo", ALGOS)
@pytest.mark.parametrize("kw,ws", [(dict(stride=2, padding=1), (4, 3, 3, 3)),
                                   (dict(padding=2), (4, 3, 5, 5)),
                                   (dict(padding=2, dilation=2), (4, 3, 3, 3))])
def test_winograd_refuses(algo, kw, ws):
    x = randn((1, 3, 12, 12), np.float32)
    w = randn(ws, np.float32)
    with pytest.raises(ValueError):
        fastconv.conv2d(x, w, **kw, algo=algo, backend="native")


def test_winograd_binding_checks():
    """The binding re-checks what the dispatcher promised."""
    x = randn((1, 3, 8, 8), np.float32)
    y = np.empty((1, 4, 8, 8), np.float32)
    with pytest.raises(ValueError, match="3x3"):
        _native.conv_winograd_fwd(x, randn((4, 3, 5, 5), np.float32), None, y, (2, 2), 4)
    with pytest.raises(ValueError, match="m must be"):
        _native.conv_winograd_fwd(x, randn((4, 3, 3, 3), np.float32), None, y, (1, 1), 3)
    with pytest.raises(ValueError):
        _native.conv_winograd_fwd(x, randn((4, 5, 3, 3), np.float32), None, y, (1, 1), 2)
    with pytest.raises(ValueError):
        _native.conv_winograd_bwd_data(y, randn((4, 3, 3, 3), np.float32),
                                       np.empty((2, 3, 8, 8), np.float32), (1, 1), 2)


# ResNet-shaped layers (small spatial size to keep it fast) for the error study.
ERROR_LAYERS = [(64, 12), (128, 10), (256, 8), (512, 7)]


def winograd_error(algo, c, hw, seed=0):
    """Max |y32 - y64| / max |y64| of the float32 Winograd output vs the float64 reference."""
    x, w, b = conv_inputs((2, c, hw, hw), (c, c, 3, 3), np.float64, seed)
    w /= np.sqrt(9 * c)  # He-like scale, as in a trained network
    y64 = fastconv.conv2d(x, w, b, padding=1, backend="reference")
    y32 = fastconv.conv2d(x.astype(np.float32), w.astype(np.float32), b.astype(np.float32),
                          padding=1, algo=algo, backend="native")
    return float(np.max(np.abs(y32 - y64)) / np.max(np.abs(y64)))


def test_winograd_float32_error(capsys):
    """F(4,3) loses more precision than F(2,3) (bigger transform constants); both stay far
    below what training notices. The figures are printed for the report."""
    rows = []
    for c, hw in ERROR_LAYERS:
        e23 = winograd_error("winograd_f23", c, hw)
        e43 = winograd_error("winograd_f43", c, hw)
        ed = winograd_error("direct", c, hw)
        rows.append((c, hw, hw, ed, e23, e43))
        assert e23 < 2e-5, (c, e23)
        assert e43 < 1e-4, (c, e43)
        assert e43 >= e23 * 0.5  # sanity: the measurement is not trivially zero
    with capsys.disabled():
        print("\nfloat32 max relative error vs float64 reference (C, HxW, direct, f23, f43):")
        for r in rows:
            print("  C=%3d %2dx%-2d  %.2e  %.2e  %.2e" % r)


# Prepacked filters (inference): the forward with packed=prepack(w) must give exactly the
# per-call result, in the private schedule (small filter banks) and the fused one
# (transformed filters > 3 MB, read piece by piece from the packed array), at batch 1
# and with an odd batch, with and without the fused output stage.
@pytest.mark.parametrize("algo", ["winograd_f23", "winograd_f43"])
@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("xs,ws,pad", [
    ((1, 5, 11, 13), (7, 5, 3, 3), (1, 1)),
    ((3, 8, 9, 6), (13, 8, 3, 3), (0, 1)),
    ((1, 160, 7, 7), (166, 160, 3, 3), (1, 1)),
])
def test_winograd_prepacked_matches(xs, ws, pad, dtype, algo, threads):
    from fastconv._args import conv_spec
    from fastconv.backends.native import conv as native_conv

    x, w, b = conv_inputs(xs, ws, dtype)
    spec = conv_spec(x.shape, w.shape, 1, pad, 1, 1)
    packed = native_conv.prepack(w, spec, algo)
    assert isinstance(packed, np.ndarray) and packed.dtype == dtype and packed.ndim == 1
    res = randn(spec.y_shape, dtype, 4)
    for kw in (dict(), dict(residual=res, clamp=(0.0, 6.0))):
        y0 = native_conv.conv2d_forward(x, w, b, spec, algo, **kw)
        y1 = native_conv.conv2d_forward(x, w, b, spec, algo, packed=packed, **kw)
        np.testing.assert_array_equal(y0, y1)
    y_ref = fastconv.conv2d(x, w, b, padding=pad, backend="reference")
    assert_close(native_conv.conv2d_forward(x, w, b, spec, algo, packed=packed), y_ref, dtype,
                 ws[1] * 9, f"{algo} prepacked")


def test_winograd_prepacked_refused():
    """A packed array of the wrong length or dtype, or for an algorithm with nothing to
    prepack, is refused with the argument named."""
    from fastconv._args import conv_spec
    from fastconv.backends.native import conv as native_conv

    x = np.ones((1, 4, 6, 6), np.float32)
    w = np.ones((5, 4, 3, 3), np.float32)
    spec = conv_spec(x.shape, w.shape, 1, 1, 1, 1)
    packed = native_conv.prepack(w, spec, "winograd_f43")
    assert native_conv.prepack(w, spec, "direct") is None
    with pytest.raises(ValueError, match="packed"):
        native_conv.conv2d_forward(x, w, None, spec, "winograd_f43", packed=packed[:-1])
    with pytest.raises(ValueError, match="packed"):  # F(2,3) wants fewer values
        native_conv.conv2d_forward(x, w, None, spec, "winograd_f23", packed=packed)
    with pytest.raises(ValueError, match="packed"):
        native_conv.conv2d_forward(x, w, None, spec, "direct", packed=packed)
    with pytest.raises(TypeError):
        native_conv.conv2d_forward(x, w, None, spec, "winograd_f43",
                                   packed=packed.astype(np.float64))


@requires_torch
@pytest.mark.torch
@pytest.mark.parametrize("algo", ["winograd_f23", "winograd_f43"])
def test_winograd_nonfinite_and_huge_like_torch(algo):
    """One NaN pixel poisons only the outputs that read it, +Inf stays +Inf (positive
    filters), and finite float32 inputs near 1e36 give finite outputs, as in torch
    (the transforms used to spread NaN over whole tiles and overflow), forward and
    backward-data; the prepacked forward too."""
    import torch
    from fastconv._args import conv_spec
    from fastconv.backends.native import conv as native_conv

    rng = np.random.default_rng(3)
    w = rng.uniform(0.1, 1.0, (6, 4, 3, 3)).astype(np.float32)
    x = rng.standard_normal((2, 4, 16, 16)).astype(np.float32)
    x[0, 1, 5, 7] = np.nan
    x[1, 2, 9, 3] = np.inf
    huge = (rng.standard_normal((1, 4, 16, 16)) * 1e36).astype(np.float32)
    spec = conv_spec(x.shape, w.shape, 1, 1, 1, 1)
    packed = native_conv.prepack(w, spec, algo)
    for xx in (x, huge):
        want = torch.nn.functional.conv2d(torch.from_numpy(xx), torch.from_numpy(w),
                                          padding=1).numpy()
        got = fastconv.conv2d(xx, w, padding=1, algo=algo, backend="native")
        sp = conv_spec(xx.shape, w.shape, 1, 1, 1, 1)
        got_p = native_conv.conv2d_forward(xx, w, None, sp, algo, packed=packed)
        for g in (got, got_p):
            np.testing.assert_array_equal(np.isnan(g), np.isnan(want))
            np.testing.assert_array_equal(np.isposinf(g), np.isposinf(want))
            fin = np.isfinite(want)
            np.testing.assert_allclose(g[fin], want[fin], rtol=1e-4,
                                       atol=1e-4 * np.abs(want[fin]).max())
        # backward-data: the same inputs as grad_out of a 4 -> 4 layer
        w4 = w[:4]
        want_gx = torch.nn.grad.conv2d_input(xx.shape, torch.from_numpy(w4),
                                             torch.from_numpy(xx), padding=1).numpy()
        gx, _, _ = fastconv.conv2d_backward(xx, xx, w4, padding=1, need_weight_grad=False,
                                            need_bias_grad=False, algo=algo, backend="native")
        np.testing.assert_array_equal(np.isnan(gx), np.isnan(want_gx))
        fin = np.isfinite(want_gx)
        np.testing.assert_allclose(gx[fin], want_gx[fin], rtol=1e-4,
                                   atol=1e-4 * np.abs(want_gx[fin]).max())
