"""The pointwise 1x1 kernel (csrc/cpu/conv_pointwise.cpp, the `direct` algorithm's path for
1x1 padding-0 layers): forward, backward-data and backward-weight against the NumPy
reference and PyTorch, on every ISA path; the fused output stage; the prepack API;
thread-count invariance; float64 finite differences."""
from __future__ import annotations

import numpy as np
import pytest

import fastconv
from conftest import assert_close, conv_inputs, randn, requires_torch, torch_conv
from fastconv import _args as A
from fastconv import _native
from fastconv.backends.native import conv as nconv

ISAS = ["generic", "avx2", "avx512"]

# (x_shape, w_shape, kwargs). Register block: 6 filters x 16 (fp32) / 8 (fp64) columns;
# column tile 128 / 64; C blocked by 256.
CASES = [
    ((2, 8, 5, 5), (7, 8, 1, 1), {}),                       # PQ 25: ragged tile, K % 6
    ((1, 16, 8, 8), (12, 16, 1, 1), {}),                    # PQ 64: whole micro-tiles
    ((3, 5, 13, 11), (13, 5, 1, 1), {}),                    # N=3, PQ 143
    ((1, 1, 9, 7), (5, 1, 1, 1), {}),                       # C=1
    ((2, 3, 6, 10), (4, 3, 1, 1), {}),                      # C=3
    ((1, 300, 7, 7), (10, 300, 1, 1), {}),                  # C over one C block, PQ 49
    ((2, 8, 4, 5), (7, 8, 1, 1), {}),                       # last tile of one vector
    ((1, 20, 12, 12), (70, 20, 1, 1), {}),                  # filter chunks at batch 1
    ((2, 8, 7, 7), (4, 8, 1, 1), dict(stride=2)),           # odd plane, stride 2
    ((1, 24, 15, 16), (9, 24, 1, 1), dict(stride=2)),
    ((2, 6, 9, 8), (5, 6, 1, 1), dict(stride=(1, 2))),
    ((1, 4, 11, 10), (3, 4, 1, 1), dict(stride=3)),
    ((2, 6, 5, 7), (4, 3, 1, 1), dict(groups=2)),           # groups
    ((1, 12, 9, 9), (12, 4, 1, 1), dict(groups=3, stride=2)),
    ((2, 8, 6, 6), (8, 1, 1, 1), dict(groups=8)),           # depthwise 1x1
    ((1, 4, 3, 3), (1, 4, 1, 1), {}),                       # K=1, PQ < a vector
    ((0, 4, 5, 5), (3, 4, 1, 1), {}),                       # N=0
    ((1, 7, 1, 1), (5, 7, 1, 1), {}),                       # 1x1 image
    # Strided with the filters split into chunks (batch 1): the dense copy of the grid.
    ((1, 20, 13, 12), (70, 20, 1, 1), dict(stride=2)),
    ((1, 12, 9, 11), (48, 6, 1, 1), dict(groups=2, stride=(2, 3))),
]
IDS = [f"x{'x'.join(map(str, c[0]))}_w{c[1][0]}x{c[1][1]}_{'_'.join(f'{k}{v}' for k, v in c[2].items())}"
       for c in CASES]


def _direct(x, w, b, gy, kw):
    y = fastconv.conv2d(x, w, b, **kw, algo="direct", backend="native")
    gx, gw, gb = fastconv.conv2d_backward(gy, x, w, **kw, algo="direct", backend="native")
    return y, gx, gw, gb


def _ref(x, w, b, gy, kw):
    y = fastconv.conv2d(x, w, b, **kw, backend="reference")
    return (y,) + tuple(fastconv.conv2d_backward(gy, x, w, **kw, backend="reference"))


@pytest.mark.parametrize("isa", ISAS, indirect=True)
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("xs,ws,kw", CASES, ids=IDS)
def test_pointwise_vs_reference(xs, ws, kw, dtype, isa):
    x, w, b = conv_inputs(xs, ws, dtype)
    spec = A.conv_spec(x.shape, w.shape, kw.get("stride", 1), 0, 1, kw.get("groups", 1))
    gy = randn(spec.y_shape, dtype, 5)
    got, ref = _direct(x, w, b, gy, kw), _ref(x, w, b, gy, kw)
    for a, e, what, terms in zip(got, ref, ("forward", "backward-data", "backward-weight",
                                            "backward-bias"),
                                 (ws[1], ws[0], max(1, gy.size // ws[0]), gy.size)):
        assert a.dtype == dtype, what
        assert_close(a, e, dtype, terms, what)


@requires_torch
@pytest.mark.parametrize("xs,ws,kw", [CASES[i] for i in (0, 2, 6, 8, 12)],
                         ids=[IDS[i] for i in (0, 2, 6, 8, 12)])
def test_pointwise_vs_torch(xs, ws, kw):
    x, w, b = conv_inputs(xs, ws, np.float64)
    y_t, gy, gx_t, gw_t, gb_t = torch_conv(x, w, b, **kw)
    y, gx, gw, gb = _direct(x, w, b, gy, kw)
    assert_close(y, y_t, np.float64, ws[1], "forward")
    assert_close(gx, gx_t, np.float64, ws[0], "backward-data")
    assert_close(gw, gw_t, np.float64, gy.size // ws[0], "backward-weight")
    assert_close(gb, gb_t, np.float64, gy.size, "backward-bias")


def test_strided_backward_data_zeros_off_grid():
    """Stride 2 writes the gradient on the stride grid and zeros everywhere else."""
    x, w, _ = conv_inputs((1, 4, 7, 9), (3, 4, 1, 1), np.float32)
    gy = randn((1, 3, 4, 5), np.float32, 2)
    gx = fastconv.conv2d_backward(gy, x, w, stride=2, algo="direct", backend="native",
                                  need_weight_grad=False, need_bias_grad=False)[0]
    mask = np.zeros(gx.shape, bool)
    mask[:, :, ::2, ::2] = True
    assert np.all(gx[~mask] == 0)
    assert np.all(gx[mask] != 0)


@pytest.mark.parametrize("isa", ISAS, indirect=True)
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("xs,ws,stride", [((2, 20, 9, 9), (14, 20, 1, 1), 1),
                                          ((1, 300, 6, 6), (8, 300, 1, 1), 1),
                                          ((3, 8, 11, 11), (7, 8, 1, 1), 2)])
@pytest.mark.parametrize("clamp", [(0.0, np.inf), (0.0, 0.5), (-np.inf, np.inf)],
                         ids=["relu", "relu6ish", "none"])
def test_fused_output_stage(xs, ws, stride, clamp, dtype, isa):
    """bias + residual + clamp in the stores (also across C blocks) match the reference."""
    x, w, b = conv_inputs(xs, ws, dtype)
    spec = A.conv_spec(x.shape, w.shape, stride, 0, 1, 1)
    res = randn(spec.y_shape, dtype, 7)
    y_ref = fastconv.conv2d(x, w, b, stride=stride, backend="reference") + res
    y_ref = np.minimum(np.maximum(y_ref, clamp[0]), clamp[1])
    y = nconv.conv2d_forward(x, w, b, spec, "direct", residual=res, clamp=clamp)
    assert_close(y, y_ref, dtype, ws[1], "fused forward")


def test_clamp_keeps_nan():
    x = np.ones((1, 2, 4, 4), np.float32)
    x[0, 0, 1, 1] = np.nan
    w = np.ones((3, 2, 1, 1), np.float32)
    spec = A.conv_spec(x.shape, w.shape, 1, 0, 1, 1)
    y = nconv.conv2d_forward(x, w, None, spec, "direct", clamp=(0.0, 6.0))
    assert np.isnan(y[0, :, 1, 1]).all()
    assert np.all(y[0, :, 0, 0] == 2)


@pytest.mark.parametrize("isa", ISAS, indirect=True)
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("xs,ws,kw", [((2, 20, 9, 9), (14, 20, 1, 1), {}),
                                      ((1, 12, 9, 9), (12, 4, 1, 1), dict(groups=3, stride=2))])
def test_prepacked_forward_matches(xs, ws, kw, dtype, isa):
    """prepack + packed= gives exactly the per-call result (same kernel, same order)."""
    x, w, b = conv_inputs(xs, ws, dtype)
    spec = A.conv_spec(x.shape, w.shape, kw.get("stride", 1), 0, 1, kw.get("groups", 1))
    packed = nconv.prepack(w, spec, "direct")
    assert packed is not None and packed.ndim == 1 and packed.dtype == dtype
    res = randn(spec.y_shape, dtype, 3)
    y0 = nconv.conv2d_forward(x, w, b, spec, "direct", residual=res, clamp=(0, np.inf))
    y1 = nconv.conv2d_forward(x, w, b, spec, "direct", residual=res, clamp=(0, np.inf),
                              packed=packed)
    np.testing.assert_array_equal(y0, y1)
    # The pointwise panels are valid for another batch size and image size with the same
    # layer (short of a small plane of deep inputs: see the channels-last test below).
    x2 = randn((3, xs[1], 5, 7), dtype, 9)
    spec2 = A.conv_spec(x2.shape, w.shape, kw.get("stride", 1), 0, 1, kw.get("groups", 1))
    np.testing.assert_array_equal(nconv.conv2d_forward(x2, w, b, spec2, "direct", packed=packed),
                                  nconv.conv2d_forward(x2, w, b, spec2, "direct"))


@pytest.mark.parametrize("isa", ISAS, indirect=True)
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("xs,ws,stride", [((1, 96, 7, 7), (40, 96, 1, 1), 1),        # PQ 49
                                          ((2, 64, 5, 9), (32, 64, 1, 1), 1),        # N 2, PQ 45
                                          ((1, 256, 14, 14), (48, 256, 1, 1), 2),   # 7 x 7 grid
                                          ((1, 256, 27, 27), (32, 256, 1, 1), 2)])  # 14 x 14
def test_prepacked_small_output_plane_runs_channels_last(xs, ws, stride, dtype, isa):
    """With prepacked filters, 1x1 layers with a small output plane take the direct
    kernel's channels-last form (its own panels, not the pointwise kernel's), with the
    fused output stage, matching the per-call pointwise result and the reference; the
    pack serves another batch of the same plane."""
    x, w, b = conv_inputs(xs, ws, dtype)
    spec = A.conv_spec(x.shape, w.shape, stride, 0, 1, 1)
    packed = nconv.prepack(w, spec, "direct")
    assert packed.size == nconv._direct_packed_size(w, spec) > 0
    assert packed.size != _native.conv_pointwise_packed_size(ws[0], ws[1], 1)
    res = randn(spec.y_shape, dtype, 5)
    y0 = nconv.conv2d_forward(x, w, b, spec, "direct", residual=res, clamp=(0, 6))
    y1 = nconv.conv2d_forward(x, w, b, spec, "direct", residual=res, clamp=(0, 6), packed=packed)
    ref = np.clip(fastconv.conv2d(x, w, b, stride=stride, backend="reference") + res, 0, 6)
    assert_close(y1, ref, dtype, ws[1], "channels-last 1x1")
    assert_close(y1, y0, dtype, ws[1], "channels-last vs pointwise")
    x3 = randn((3,) + xs[1:], dtype, 6)
    spec3 = A.conv_spec(x3.shape, w.shape, stride, 0, 1, 1)
    assert_close(nconv.conv2d_forward(x3, w, b, spec3, "direct", packed=packed),
                 fastconv.conv2d(x3, w, b, stride=stride, backend="reference"), dtype, ws[1],
                 "channels-last 1x1, batch 3")


def test_pointwise_pack_is_refused_on_a_small_plane():
    """The two 1x1 forms are not interchangeable: panels packed for a large plane are
    refused (ValueError), never misread, on a plane that runs channels-last."""
    w = randn((64, 128, 1, 1), np.float32)
    big = A.conv_spec((1, 128, 28, 28), w.shape, 1, 0, 1, 1)
    small = A.conv_spec((1, 128, 7, 7), w.shape, 1, 0, 1, 1)
    packed = nconv.prepack(w, big, "direct")
    assert packed.size == _native.conv_pointwise_packed_size(64, 128, 1)
    with pytest.raises(ValueError, match="packed"):
        nconv.conv2d_forward(randn((1, 128, 7, 7), np.float32), w, None, small, "direct",
                             packed=packed)


def test_prepack_contract_errors():
    w = randn((8, 4, 1, 1), np.float32)
    spec = A.conv_spec((1, 4, 5, 5), w.shape, 1, 0, 1, 1)
    assert nconv.prepack(w, spec, "im2col") is None
    w3 = randn((8, 4, 3, 3), np.float32)
    spec3 = A.conv_spec((1, 4, 5, 5), w3.shape, 1, 1, 1, 1)
    assert nconv.prepack(w3, spec3, "direct") is None
    x = randn((1, 4, 5, 5), np.float32)
    packed = nconv.prepack(w, spec, "direct")
    with pytest.raises(ValueError, match="packed"):
        nconv.conv2d_forward(x, w, None, spec, "im2col", packed=packed)
    with pytest.raises(ValueError, match="packed"):
        nconv.conv2d_forward(x, w, None, spec, "direct", packed=packed[:-1].copy())
    with pytest.raises(TypeError, match="packed"):
        nconv.conv2d_forward(x, w, None, spec, "direct", packed=packed.astype(np.float64))


@pytest.mark.parametrize("xs,ws,kw", [((1, 64, 56, 56), (64, 64, 1, 1), {}),
                                      ((1, 256, 14, 14), (96, 256, 1, 1), dict(stride=2)),
                                      ((3, 300, 9, 9), (40, 300, 1, 1), {}),
                                      ((2, 12, 9, 9), (12, 4, 1, 1), dict(groups=3))])
def test_pointwise_threads_agree(xs, ws, kw, threads):
    """Thread counts 1 and 2 give bit-identical results (the split never changes a sum)."""
    x, w, b = conv_inputs(xs, ws, np.float32)
    spec = A.conv_spec(x.shape, w.shape, kw.get("stride", 1), 0, 1, kw.get("groups", 1))
    gy = randn(spec.y_shape, np.float32, 3)
    out = []
    for t in (1, 2):
        fastconv.set_num_threads(t)
        out.append(_direct(x, w, b, gy, kw))
    for a, c in zip(*out):
        np.testing.assert_array_equal(a, c)
    assert_close(out[0][0], fastconv.conv2d(x, w, b, **kw, backend="reference"), np.float32,
                 ws[1], "forward")


@pytest.mark.parametrize("xs,ws,kw", [((2, 3, 5, 6), (4, 3, 1, 1), {}),
                                      ((2, 4, 7, 6), (5, 4, 1, 1), dict(stride=2)),
                                      ((1, 6, 5, 5), (4, 3, 1, 1), dict(groups=2))])
def test_pointwise_finite_differences(xs, ws, kw):
    """float64 central differences of sum(y * gy) against conv2d_backward."""
    x, w, b = conv_inputs(xs, ws, np.float64)
    y = fastconv.conv2d(x, w, b, **kw, algo="direct", backend="native")
    gy = randn(y.shape, np.float64, 11)
    gx, gw, _ = fastconv.conv2d_backward(gy, x, w, **kw, algo="direct", backend="native")

    def f(xx, ww):
        return float(np.sum(fastconv.conv2d(xx, ww, b, **kw, algo="direct",
                                            backend="native") * gy))

    eps = 1e-6
    r = np.random.default_rng(0)
    for _ in range(6):
        i = tuple(r.integers(0, s) for s in x.shape)
        xp, xm = x.copy(), x.copy()
        xp[i] += eps
        xm[i] -= eps
        assert abs((f(xp, w) - f(xm, w)) / (2 * eps) - gx[i]) < 1e-6
        j = tuple(r.integers(0, s) for s in w.shape)
        wp, wm = w.copy(), w.copy()
        wp[j] += eps
        wm[j] -= eps
        assert abs((f(x, wp) - f(x, wm)) / (2 * eps) - gw[j]) < 1e-6


def test_binding_rejects_non_pointwise():
    x = randn((1, 4, 5, 5), np.float32)
    w = randn((3, 4, 3, 3), np.float32)
    y = np.empty((1, 3, 3, 3), np.float32)
    with pytest.raises(ValueError, match="1x1"):
        _native.conv_pointwise_fwd(x, w, None, None, y, (1, 1), 1)
