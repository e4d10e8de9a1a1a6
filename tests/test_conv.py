"""conv2d / conv2d_backward: every available CPU backend x algorithm against the NumPy
reference and PyTorch over the shared edge-case sweep; the reference against PyTorch;
float64 finite-difference gradients."""
from __future__ import annotations

import numpy as np
import pytest

import fastconv as fc
from fastconv._args import conv_spec

from _backends import conv_params
from conftest import (CONV_CASES, CONV_IDS, DTYPES, WINOGRAD_CASES, assert_close, conv_inputs,
                      fd_grad, randn, requires_torch, torch_conv)

ALL_CASES = CONV_CASES + WINOGRAD_CASES


def _terms(ws):
    return ws[1] * ws[2] * ws[3]


@pytest.mark.parametrize("backend,algo,dtype,case", conv_params(ALL_CASES, "conv2d_forward"))
def test_forward_matches_reference(backend, algo, dtype, case):
    name, xs, ws, kw = case
    x, w, b = conv_inputs(xs, ws, dtype)
    y = fc.conv2d(x, w, b, **kw, algo=algo, backend=backend)
    expect = fc.conv2d(x.astype(np.float64), w.astype(np.float64), b.astype(np.float64), **kw,
                       backend="reference")
    assert y.dtype == dtype
    assert_close(y, expect, dtype, _terms(ws), f"{backend}/{algo}/{name}")


@pytest.mark.parametrize("backend,algo,dtype,case",
                         conv_params(ALL_CASES, "conv2d_backward_data"))
def test_backward_data_matches_reference(backend, algo, dtype, case):
    name, xs, ws, kw = case
    x, w, _ = conv_inputs(xs, ws, dtype)
    gy = randn(fc.conv2d(x, w, **kw, backend="reference").shape, dtype, 7)
    gx, gw, gb = fc.conv2d_backward(gy, x, w, **kw, need_weight_grad=False,
                                    need_bias_grad=False, algo=algo, backend=backend)
    assert gw is None and gb is None
    ex, _, _ = fc.conv2d_backward(gy.astype(np.float64), x.astype(np.float64),
                                  w.astype(np.float64), **kw, backend="reference")
    assert gx.dtype == dtype
    assert_close(gx, ex, dtype, ws[0] * ws[2] * ws[3], f"{backend}/{algo}/{name}")


@pytest.mark.parametrize("backend,algo,dtype,case",
                         conv_params(ALL_CASES, "conv2d_backward_weight"))
def test_backward_weight_matches_reference(backend, algo, dtype, case):
    name, xs, ws, kw = case
    x, w, _ = conv_inputs(xs, ws, dtype)
    y = fc.conv2d(x, w, **kw, backend="reference")
    gy = randn(y.shape, dtype, 7)
    _, gw, gb = fc.conv2d_backward(gy, x, w, **kw, need_input_grad=False, algo=algo,
                                   backend=backend)
    _, ew, eb = fc.conv2d_backward(gy.astype(np.float64), x.astype(np.float64),
                                   w.astype(np.float64), **kw, backend="reference")
    n_terms = max(1, int(np.prod(y.shape)) // max(1, y.shape[-3] if y.ndim == 3 else y.shape[1]))
    assert_close(gw, ew, dtype, n_terms, f"{backend}/{algo}/{name}")
    assert_close(gb, eb, dtype, n_terms, f"{backend}/{algo}/{name}")


@requires_torch
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", ALL_CASES, ids=[c[0] for c in ALL_CASES])
def test_reference_matches_torch(case, dtype):
    """The oracle itself against PyTorch, forward and all three gradients."""
    name, xs, ws, kw = case
    x, w, b = conv_inputs(xs, ws, dtype)
    ty, tgy, tgx, tgw, tgb = torch_conv(x, w, b, **kw)
    out = fc.conv2d(x, w, b, **kw, backend="reference")
    gx, gw, gb = fc.conv2d_backward(tgy, x, w, **kw, backend="reference")
    t = _terms(ws)
    assert_close(out, ty, dtype, t, name)
    assert_close(gx, tgx, dtype, ws[0] * 9 * t, name)
    assert_close(gw, tgw, dtype, max(1, tgy.size), name)
    assert_close(gb, tgb, dtype, max(1, tgy.size), name)


@requires_torch
@pytest.mark.parametrize("case", CONV_CASES, ids=CONV_IDS)
def test_default_dispatch_matches_torch(case):
    """What a user gets with no backend/algo named, against PyTorch, float32."""
    name, xs, ws, kw = case
    x, w, b = conv_inputs(xs, ws, np.float32)
    ty, tgy, tgx, tgw, tgb = torch_conv(x, w, b, **kw)
    y = fc.conv2d(x, w, b, **kw)
    gx, gw, gb = fc.conv2d_backward(tgy, x, w, **kw)
    n = max(1, tgy.size)
    assert_close(y, ty, np.float32, _terms(ws), name)
    assert_close(gx, tgx, np.float32, ws[0] * ws[2] * ws[3], name)
    assert_close(gw, tgw, np.float32, n, name)
    assert_close(gb, tgb, np.float32, n, name)


FD_CASES = [
    ("fd_stride_dil_groups", (2, 4, 7, 6), (4, 2, 3, 2), dict(stride=(2, 1), padding=(1, 2),
                                                             dilation=(1, 2), groups=2)),
    ("fd_same", (1, 2, 5, 5), (3, 2, 2, 3), dict(padding="same")),
]


@pytest.mark.parametrize("backend", ["native", "reference"])
@pytest.mark.parametrize("case", FD_CASES, ids=[c[0] for c in FD_CASES])
def test_gradients_finite_differences(case, backend):
    name, xs, ws, kw = case
    x, w, b = conv_inputs(xs, ws, np.float64)
    G = randn(fc.conv2d(x, w, b, **kw, backend="reference").shape, np.float64, 5)

    def loss():
        return float((fc.conv2d(x, w, b, **kw, backend=backend) * G).sum())

    gx, gw, gb = fc.conv2d_backward(G, x, w, **kw, backend=backend)
    np.testing.assert_allclose(gx, fd_grad(loss, x), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(gw, fd_grad(loss, w), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(gb, fd_grad(loss, b), rtol=1e-6, atol=1e-7)


def test_non_contiguous_and_fortran_inputs():
    x, w, b = conv_inputs((2, 3, 9, 9), (4, 3, 3, 3), np.float32)
    expect = fc.conv2d(x, w, b, padding=1)
    xf = np.asfortranarray(x)
    xs = np.ascontiguousarray(np.concatenate([x, x], axis=3))[:, :, :, ::2]
    assert not xs.flags.c_contiguous
    np.testing.assert_array_equal(fc.conv2d(xf, w, b, padding=1), expect)
    np.testing.assert_array_equal(fc.conv2d(xs, w, b, padding=1),
                                  fc.conv2d(np.ascontiguousarray(xs), w, b, padding=1))
    np.testing.assert_array_equal(fc.conv2d(x, np.asfortranarray(w), b, padding=1), expect)


def test_zero_batch_shapes():
    x = np.zeros((0, 3, 8, 8), np.float32)
    w = np.ones((5, 3, 3, 3), np.float32)
    y = fc.conv2d(x, w, stride=2, padding=1)
    assert y.shape == (0, 5, 4, 4)
    gx, gw, gb = fc.conv2d_backward(y, x, w, stride=2, padding=1)
    assert gx.shape == x.shape and gw.shape == w.shape and gb.shape == (5,)
    assert not gw.any() and not gb.any()


def test_unbatched_equals_batched():
    x, w, b = conv_inputs((3, 7, 7), (2, 3, 3, 3), np.float32)
    y3 = fc.conv2d(x, w, b, padding=1)
    np.testing.assert_array_equal(y3, fc.conv2d(x[None], w, b, padding=1)[0])
    gx, gw, gb = fc.conv2d_backward(np.ones_like(y3), x, w, padding=1)
    assert gx.shape == x.shape


@pytest.mark.parametrize("threads", [1, 2])
def test_thread_counts_agree(threads):
    x, w, b = conv_inputs((3, 8, 12, 12), (16, 8, 3, 3), np.float32)
    base = fc.get_num_threads()
    try:
        fc.set_num_threads(1)
        one = [fc.conv2d(x, w, b, padding=1, algo=a) for a in ("direct",)]
        fc.set_num_threads(threads)
        many = [fc.conv2d(x, w, b, padding=1, algo=a) for a in ("direct",)]
    finally:
        fc.set_num_threads(base)
    for a, c in zip(one, many):
        np.testing.assert_array_equal(a, c)


def test_conv_spec_padding_same_is_asymmetric_like_torch():
    s = conv_spec((1, 1, 8, 8), (1, 1, 4, 4), padding="same")
    assert s.padding == (1, 1) and s.padding_end == (2, 2) and (s.P, s.Q) == (8, 8)
