"""im2col convolution (csrc/cpu/conv_im2col.cpp): forward, data and weight gradients
against the NumPy reference and PyTorch, every ISA path, 1 vs 2 threads, chunked
workspaces, and a float64 finite-difference check."""
from __future__ import annotations

import os

import numpy as np
import pytest

import fastconv as fc
from fastconv import _native

from conftest import (CONV_CASES, CONV_IDS, DTYPES, assert_close, conv_inputs, randn,
                      requires_torch, torch_conv)

ISAS = [i for i in ("generic", "avx2", "avx512") if i in _native.compiled_isas()]


def _terms(x_shape, w_shape, y_shape):
    return w_shape[1] * w_shape[2] * w_shape[3] + x_shape[0] * y_shape[-1] * y_shape[-2]


def _run(x, w, b, gy, kw, algo):
    y = fc.conv2d(x, w, b, algo=algo, **kw)
    gx, gw, _ = fc.conv2d_backward(gy, x, w, need_bias_grad=False, algo=algo, **kw)
    return y, gx, gw


@pytest.fixture
def restore_native():
    best = _native.active_isa()
    yield
    _native.set_isa(best)
    _native.set_num_threads(0)
    os.environ.pop("FASTCONV_IM2COL_BUDGET", None)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name,x_shape,w_shape,kw", CONV_CASES, ids=CONV_IDS)
def test_matches_reference(name, x_shape, w_shape, kw, dtype):
    x, w, b = conv_inputs(x_shape, w_shape, dtype)
    ref_y = fc.conv2d(x, w, b, backend="reference", **kw)
    gy = randn(ref_y.shape, dtype, 5)
    ref_gx, ref_gw, _ = fc.conv2d_backward(gy, x, w, need_bias_grad=False, backend="reference",
                                           **kw)
    y, gx, gw = _run(x, w, b, gy, kw, "im2col")
    t = _terms(x.shape if x.ndim == 4 else (1,) + x.shape, w_shape, y.shape)
    assert y.dtype == gx.dtype == gw.dtype == dtype
    assert_close(y, ref_y, dtype, t, "forward")
    assert_close(gx, ref_gx, dtype, t, "grad_x")
    assert_close(gw, ref_gw, dtype, t, "grad_w")


@requires_torch
@pytest.mark.torch
@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name,x_shape,w_shape,kw", CONV_CASES, ids=CONV_IDS)
def test_matches_torch_every_isa(name, x_shape, w_shape, kw, dtype, isa, restore_native):
    try:
        _native.set_isa(isa)
    except ValueError:
        pytest.skip(f"this CPU cannot run the {isa} path")
    x, w, b = conv_inputs(x_shape, w_shape, dtype)
    ty, gy, tgx, tgw, _ = torch_conv(x, w, b, **kw)
    y, gx, gw = _run(x, w, b, gy, kw, "im2col")
    t = _terms(x.shape if x.ndim == 4 else (1,) + x.shape, w_shape, y.shape)
    assert_close(y, ty, dtype, t, "forward")
    assert_close(gx, tgx, dtype, t, "grad_x")
    assert_close(gw, tgw, dtype, t, "grad_w")


# Large enough that every GEMM goes parallel (and the weight gradient takes the k-chunk
# path), with shapes that are not multiples of the tiles.
THREAD_CASES = [
    ("s1", (3, 20, 23, 21), (37, 20, 3, 3), dict(padding=1)),
    ("s2", (4, 24, 30, 29), (33, 24, 3, 3), dict(stride=2, padding=1)),
    ("1x1", (5, 48, 17, 15), (40, 48, 1, 1), dict()),
    ("groups", (2, 32, 19, 18), (48, 16, 3, 3), dict(padding=2, dilation=2, groups=2)),
    # Packed filters too big for the stationary path, 130 = 9 x 14 + 4 rows: the
    # shorter tail kernel and the partial-row stores.
    ("big_k_row_tail", (2, 256, 9, 9), (130, 256, 3, 3), dict(padding=1)),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name,x_shape,w_shape,kw", THREAD_CASES, ids=[c[0] for c in THREAD_CASES])
def test_one_and_two_threads_equal(name, x_shape, w_shape, kw, dtype, restore_native):
    x, w, b = conv_inputs(x_shape, w_shape, dtype)
    ref_y = fc.conv2d(x, w, b, backend="reference", **kw)
    gy = randn(ref_y.shape, dtype, 3)
    out = []
    for nt in (1, 2):
        _native.set_num_threads(nt)
        out.append(_run(x, w, b, gy, kw, "im2col"))
    for a, c, what in zip(out[0], out[1], ("forward", "grad_x", "grad_w")):
        np.testing.assert_array_equal(a, c, err_msg=what)
    assert_close(out[0][0], ref_y, dtype, _terms(x_shape, w_shape, ref_y.shape), "forward")


@pytest.mark.parametrize("budget", ["64", "4096"])
@pytest.mark.parametrize("name,x_shape,w_shape,kw", [
    ("stride2", (3, 5, 13, 12), (6, 5, 3, 3), dict(stride=2, padding=1)),
    ("stride_3_2_dil", (2, 4, 17, 16), (5, 4, 3, 3), dict(stride=(3, 2), padding=2, dilation=2)),
    ("big_filter", (1, 40, 9, 9), (3, 40, 5, 5), dict(stride=2, padding=2)),
])
def test_tiny_workspace_chunks_rows_and_columns(name, x_shape, w_shape, kw, budget,
                                                restore_native):
    """A column budget of a few elements forces backward-data through many row and
    column chunks (strided convs are the ones that use the column buffer)."""
    os.environ["FASTCONV_IM2COL_BUDGET"] = budget
    x, w, b = conv_inputs(x_shape, w_shape, np.float64)
    gy = randn(fc.conv2d(x, w, b, backend="reference", **kw).shape, np.float64, 4)
    ref = fc.conv2d_backward(gy, x, w, need_bias_grad=False, backend="reference", **kw)[0]
    gx = fc.conv2d_backward(gy, x, w, need_bias_grad=False, need_weight_grad=False,
                            algo="im2col", **kw)[0]
    assert_close(gx, ref, np.float64, 100, "grad_x")


def test_large_batch_exceeds_default_workspace():
    """The column matrix of this batch (27*9 rows x 96*33*33 columns, ~100 MB) is far over
    the 8 MiB default budget: backward-data must loop over column chunks, including
    chunks that start and end inside an image."""
    x, w, _ = conv_inputs((96, 27, 66, 66), (16, 27, 3, 3), np.float32, bias=False)
    kw = dict(stride=2, padding=1)
    gy = randn(fc.conv2d(x[:1], w, backend="reference", **kw).shape[1:], np.float32, 9)
    gy = np.broadcast_to(gy, (96,) + gy.shape).copy()
    gy[1::2] *= -0.5
    assert 27 * 9 * 96 * 33 * 33 * 4 > 8 << 20
    gx = fc.conv2d_backward(gy, x, w, need_bias_grad=False, need_weight_grad=False,
                            algo="im2col", **kw)[0]
    ref = fc.conv2d_backward(gy[:2], x[:2], w, need_bias_grad=False, need_weight_grad=False,
                             backend="reference", **kw)[0]
    # Every image's gradient depends on its own grad_out only: the first two (and the
    # last, which repeats image 1's grad_out) must match the reference.
    assert_close(gx[:2], ref, np.float32, 16 * 9, "grad_x[:2]")
    assert_close(gx[-1], ref[1], np.float32, 16 * 9, "grad_x[-1]")


def test_finite_difference_float64():
    x, w, b = conv_inputs((2, 3, 6, 5), (4, 3, 3, 2), np.float64)
    kw = dict(stride=(2, 1), padding=(1, 0), dilation=(1, 2))
    gy = randn(fc.conv2d(x, w, b, algo="im2col", **kw).shape, np.float64, 8)
    gx, gw, _ = fc.conv2d_backward(gy, x, w, need_bias_grad=False, algo="im2col", **kw)

    def loss(xx, ww):
        return float(np.sum(fc.conv2d(xx, ww, b, algo="im2col", **kw) * gy))

    eps = 1e-6
    r = np.random.default_rng(1)
    for _ in range(6):
        i = tuple(r.integers(0, s) for s in x.shape)
        xp, xm = x.copy(), x.copy()
        xp[i] += eps
        xm[i] -= eps
        assert abs((loss(xp, w) - loss(xm, w)) / (2 * eps) - gx[i]) < 1e-6
        j = tuple(r.integers(0, s) for s in w.shape)
        wp, wm = w.copy(), w.copy()
        wp[j] += eps
        wm[j] -= eps
        assert abs((loss(x, wp) - loss(x, wm)) / (2 * eps) - gw[j]) < 1e-6


def test_bindings_reject_bad_shapes():
    x = np.zeros((1, 4, 8, 8), np.float32)
    w = np.zeros((6, 4, 3, 3), np.float32)
    with pytest.raises(ValueError):
        _native.conv_im2col_fwd(x, w, None, np.zeros((1, 5, 6, 6), np.float32), (1, 1), (0, 0),
                                (1, 1), 1)
    with pytest.raises(ValueError, match="bias"):
        _native.conv_im2col_fwd(x, w, np.zeros(5, np.float32), np.zeros((1, 6, 6, 6), np.float32),
                                (1, 1), (0, 0), (1, 1), 1)
    with pytest.raises(ValueError):
        _native.conv_im2col_bwd_weight(np.zeros((1, 6, 6, 6), np.float32), x,
                                       np.zeros((6, 4, 3, 3), np.float32), (1, 1), (0, 0), (0, 1),
                                       1)
    with pytest.raises(TypeError):
        _native.conv_im2col_bwd_data(np.zeros((1, 6, 6, 6), np.float64), w, x, (1, 1), (0, 0),
                                     (1, 1), 1)


def test_algo_is_offered_for_every_op():
    from fastconv.backends.native import ALGOS

    for op in ("conv2d_forward", "conv2d_backward_data", "conv2d_backward_weight"):
        assert "im2col" in ALGOS[op]
