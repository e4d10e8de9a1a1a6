"""The ``numba`` (Numba CPU) backend against the NumPy reference and PyTorch.

Every convolution algorithm runs over the shared sweeps (CONV_CASES, WINOGRAD_CASES) in
float32 and float64, forward and both gradients; pooling, batch norm and ReLU over
awkward shapes; float64 finite differences check the gradients independently of both
oracles. Kernels are compiled once per machine (numba's disk cache), so shapes are
small and cases share the same compiled specialisations.
"""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

import fastconv as fc
from fastconv.backends import reference as ref
from fastconv._args import conv_spec, pool_spec

from conftest import (
    CONV_CASES,
    CONV_IDS,
    DTYPES,
    WINOGRAD_CASES,
    WINOGRAD_IDS,
    F,
    assert_close,
    conv_inputs,
    randn,
    requires_torch,
    torch,
    torch_conv,
)

pytest.importorskip("numba", reason="numba is not installed")

NB = "numba"


def _as4(x):
    return x if x.ndim == 4 else x[None]


def _ref_conv_all(x, w, b, gy, kw):
    """Reference forward and gradients (batched shapes)."""
    x4, gy4 = _as4(x), _as4(gy)
    spec = conv_spec(x4.shape, w.shape, **kw)
    y = ref.conv2d_forward(x4, w, b, spec)
    gx = ref.conv2d_backward_data(gy4, w, spec)
    gw = ref.conv2d_backward_weight(gy4, x4, spec)
    return spec, y, gx, gw


def _check_conv(x, w, b, kw, dtype, fwd_algo, bwd_algo):
    ty, tgy, tgx, tgw, tgb = torch_conv(x, w, b, **kw)
    spec, ry, rgx, rgw = _ref_conv_all(x, w, b, tgy, kw)
    terms = (spec.C // spec.groups) * spec.R * spec.S
    y = fc.conv2d(x, w, b, **kw, algo=fwd_algo, backend=NB)
    assert y.dtype == x.dtype and y.shape == ty.shape
    assert_close(y, ty, dtype, terms, "forward vs torch")
    assert_close(_as4(y), ry, dtype, terms, "forward vs reference")
    gx, gw, gb = fc.conv2d_backward(tgy, x, w, **kw, algo=bwd_algo, backend=NB)
    k_terms = (spec.K // spec.groups) * spec.R * spec.S
    assert_close(gx, tgx, dtype, k_terms, "grad_x vs torch")
    assert_close(_as4(gx), rgx, dtype, k_terms, "grad_x vs reference")
    pq_terms = max(spec.N * spec.P * spec.Q, 1)
    assert_close(gw, tgw, dtype, pq_terms, "grad_w vs torch")
    assert_close(gw, rgw, dtype, pq_terms, "grad_w vs reference")
    assert_close(gb, tgb, dtype, pq_terms, "grad_b vs torch")


@requires_torch
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("algo", ["direct", "im2col"])
@pytest.mark.parametrize("name,x_shape,w_shape,kw", CONV_CASES, ids=CONV_IDS)
def test_conv_sweep(name, x_shape, w_shape, kw, algo, dtype):
    x, w, b = conv_inputs(x_shape, w_shape, dtype)
    _check_conv(x, w, b, kw, dtype, algo, algo)


@requires_torch
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("algo", ["winograd_f23", "winograd_f43"])
@pytest.mark.parametrize("name,x_shape,w_shape,kw", WINOGRAD_CASES, ids=WINOGRAD_IDS)
def test_winograd_sweep(name, x_shape, w_shape, kw, algo, dtype):
    x, w, b = conv_inputs(x_shape, w_shape, dtype)
    # F(4x4,3x3) amplifies float32 rounding (transform entries up to 8 and 1/24): the
    # tolerance grows by the conditioning of its transforms, as in the literature.
    scale = 20.0 if (algo == "winograd_f43" and dtype == np.float32) else 1.0
    ty, tgy, tgx, _, _ = torch_conv(x, w, b, **kw)
    spec, ry, rgx, _ = _ref_conv_all(x, w, b, tgy, kw)
    terms = spec.C * 9 * scale ** 2
    y = fc.conv2d(x, w, b, **kw, algo=algo, backend=NB)
    assert_close(y, ty, dtype, terms, "forward vs torch")
    assert_close(_as4(y), ry, dtype, terms, "forward vs reference")
    gx, gw, _ = fc.conv2d_backward(tgy, x, w, **kw, algo=algo, backend=NB,
                                   need_weight_grad=False, need_bias_grad=False)
    assert gw is None
    assert_close(gx, tgx, dtype, spec.K * 9 * scale ** 2, "grad_x vs torch")
    assert_close(_as4(gx), rgx, dtype, spec.K * 9 * scale ** 2, "grad_x vs reference")


def test_winograd_large_padding_crops():
    """padding 3 > 2 makes the data-gradient padding negative (a crop)."""
    x, w, b = conv_inputs((1, 2, 5, 6), (3, 2, 3, 3), np.float64)
    spec = conv_spec(x.shape, w.shape, padding=3)
    gy = randn(spec.y_shape, np.float64, 5)
    for algo in ("winograd_f23", "winograd_f43"):
        y = fc.conv2d(x, w, b, padding=3, algo=algo, backend=NB)
        assert_close(y, ref.conv2d_forward(x, w, b, spec), np.float64, 18, algo)
        gx, _, _ = fc.conv2d_backward(gy, x, w, padding=3, algo=algo, backend=NB,
                                      need_weight_grad=False)
        assert_close(gx, ref.conv2d_backward_data(gy, w, spec), np.float64, 27, algo)


@pytest.mark.parametrize("row_tiles", [1, 10 ** 9], ids=["row_vectorised", "scalar"])
def test_winograd_both_transform_variants(monkeypatch, row_tiles):
    """The row-vectorised and one-tile-at-a-time input and output transforms (chosen by
    tiles per row), each forced on shapes with ragged last tiles, padding 0..3, a crop."""
    from fastconv.backends.numba_cpu import conv_winograd

    monkeypatch.setattr(conv_winograd, "_ROW_TILES_IN", row_tiles)
    monkeypatch.setattr(conv_winograd, "_ROW_TILES_OUT", row_tiles)
    for xs, ws, pad in (((2, 3, 9, 15), (4, 3, 3, 3), 1), ((1, 2, 6, 11), (3, 2, 3, 3), 0),
                        ((1, 2, 5, 7), (2, 2, 3, 3), (3, 2))):
        x, w, b = conv_inputs(xs, ws, np.float64)
        spec = conv_spec(x.shape, w.shape, padding=pad)
        gy = randn(spec.y_shape, np.float64, 5)
        for algo in ("winograd_f23", "winograd_f43"):
            y = fc.conv2d(x, w, b, padding=pad, algo=algo, backend=NB)
            assert_close(y, ref.conv2d_forward(x, w, b, spec), np.float64, 9 * xs[1], algo)
            gx, _, _ = fc.conv2d_backward(gy, x, w, padding=pad, algo=algo, backend=NB,
                                          need_weight_grad=False)
            assert_close(gx, ref.conv2d_backward_data(gy, w, spec), np.float64, 9 * ws[0],
                         algo)


def test_winograd_refuses_stride2():
    x, w, _ = conv_inputs((1, 2, 8, 8), (3, 2, 3, 3), np.float32)
    with pytest.raises(ValueError, match="stride"):
        fc.conv2d(x, w, stride=2, algo="winograd_f23", backend=NB)


def test_batch_chunking_matches_reference(monkeypatch):
    """Force several batch chunks (tiny workspace budget) in im2col and Winograd."""
    from fastconv.backends.numba_cpu import _common, conv_im2col, conv_winograd

    small = lambda per_image, n, budget=0: 1  # noqa: E731 - one image per chunk
    monkeypatch.setattr(conv_im2col, "batch_chunk", small)
    monkeypatch.setattr(conv_winograd, "batch_chunk", small)
    assert _common.batch_chunk(10, 5, 25) == 2
    x, w, b = conv_inputs((3, 4, 7, 6), (5, 4, 3, 3), np.float64)
    spec = conv_spec(x.shape, w.shape, padding=1)
    gy = randn(spec.y_shape, np.float64, 3)
    ry = ref.conv2d_forward(x, w, b, spec)
    rgx = ref.conv2d_backward_data(gy, w, spec)
    for algo in ("im2col", "winograd_f23", "winograd_f43"):
        assert_close(fc.conv2d(x, w, b, padding=1, algo=algo, backend=NB), ry, np.float64, 36)
        gx, _, _ = fc.conv2d_backward(gy, x, w, padding=1, algo=algo, backend=NB,
                                      need_weight_grad=False)
        assert_close(gx, rgx, np.float64, 45)
    _, gw, _ = fc.conv2d_backward(gy, x, w, padding=1, algo="im2col", backend=NB)
    assert_close(gw, ref.conv2d_backward_weight(gy, x, spec), np.float64, 126)


@pytest.mark.parametrize("algo", ["direct", "im2col", "winograd_f23", "winograd_f43"])
def test_conv_gradients_finite_differences(algo):
    """<gy, conv(x + e*dx, w + e*dw)> derivative vs <gx, dx> + <gw, dw> (float64)."""
    kw = dict(padding=1) if algo.startswith("winograd") else dict(padding=(1, 0), stride=(2, 1),
                                                                   dilation=(1, 2), groups=2)
    wshape = (4, 2, 3, 3) if not algo.startswith("winograd") else (4, 4, 3, 3)
    x, w, b = conv_inputs((2, 4, 7, 8), wshape, np.float64, seed=3)
    y = fc.conv2d(x, w, b, **kw, algo=algo, backend=NB)
    gy = randn(y.shape, np.float64, 4)
    dx, dw = randn(x.shape, np.float64, 5), randn(w.shape, np.float64, 6)
    # Winograd has no weight-gradient form: its layers take grad_w from im2col.
    walgo = "im2col" if algo.startswith("winograd") else algo
    gx, _, _ = fc.conv2d_backward(gy, x, w, **kw, algo=algo, backend=NB, need_weight_grad=False)
    _, gw, _ = fc.conv2d_backward(gy, x, w, **kw, algo=walgo, backend=NB, need_input_grad=False)
    eps = 1e-6
    f = lambda e: float(np.sum(gy * fc.conv2d(x + e * dx, w + e * dw, b, **kw,  # noqa: E731
                                               algo=algo, backend=NB)))
    numeric = (f(eps) - f(-eps)) / (2 * eps)
    analytic = float(np.sum(gx * dx) + np.sum(gw * dw))
    assert abs(numeric - analytic) <= 1e-6 * max(1.0, abs(analytic))


# ----------------------------------------------------------------------------- pooling

POOL_CASES = [
    ("k2", (2, 3, 8, 8), dict(kernel_size=2)),
    ("k3s2p1_odd", (1, 2, 9, 7), dict(kernel_size=3, stride=2, padding=1)),
    ("ceil", (2, 2, 7, 10), dict(kernel_size=3, stride=2, ceil_mode=True)),
    ("ceil_pad", (1, 3, 6, 5), dict(kernel_size=(3, 2), stride=2, padding=1, ceil_mode=True)),
    ("overlap_s1", (1, 1, 5, 6), dict(kernel_size=3, stride=1, padding=1)),
    ("global", (2, 4, 5, 5), dict(kernel_size=5)),
]
POOL_IDS = [c[0] for c in POOL_CASES]


@requires_torch
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name,shape,kw", POOL_CASES, ids=POOL_IDS)
def test_max_pool(name, shape, kw, dtype):
    x = randn(shape, dtype, 1)
    for dil in (1, 2):
        kwd = dict(kw, dilation=dil)
        try:
            spec = pool_spec("max_pool2d", shape, **kwd)
        except ValueError:
            continue
        xt = torch.from_numpy(x).requires_grad_()
        yt, it = F.max_pool2d(xt, **kwd, return_indices=True)
        gy = randn(tuple(yt.shape), dtype, 2)
        yt.backward(torch.from_numpy(gy))
        y, idx = fc.max_pool2d(x, **kwd, return_indices=True, backend=NB)
        np.testing.assert_array_equal(y, yt.detach().numpy())
        np.testing.assert_array_equal(idx, it.numpy())
        ry, ridx = ref.max_pool2d(x, spec)
        np.testing.assert_array_equal(idx, ridx)
        gx = fc.max_pool2d_backward(gy, idx, x.shape, backend=NB)
        assert_close(gx, xt.grad.numpy(), dtype, 9, f"{name} dilation {dil}")


def test_max_pool_nan_and_inf():
    x = np.array([[[[1.0, np.nan, 3.0, np.nan], [-np.inf, -np.inf, 2.0, 0.0]]]], np.float32)
    spec = pool_spec("max_pool2d", x.shape, 2)
    y, idx = fc.max_pool2d(x, 2, return_indices=True, backend=NB)
    ry, ridx = ref.max_pool2d(x, spec)
    np.testing.assert_array_equal(idx, ridx)
    np.testing.assert_array_equal(y, ry)
    assert np.isnan(y).all()
    x2 = np.full((1, 1, 2, 2), -np.inf, np.float32)
    y2, i2 = fc.max_pool2d(x2, 2, return_indices=True, backend=NB)
    assert y2[0, 0, 0, 0] == -np.inf and i2[0, 0, 0, 0] == 0


@requires_torch
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name,shape,kw", POOL_CASES, ids=POOL_IDS)
@pytest.mark.parametrize("extra", [dict(), dict(count_include_pad=False),
                                   dict(divisor_override=3)], ids=["incl", "excl", "div3"])
def test_avg_pool(name, shape, kw, extra, dtype):
    x = randn(shape, dtype, 1)
    kwd = dict(kw, **extra)
    xt = torch.from_numpy(x).requires_grad_()
    yt = F.avg_pool2d(xt, **kwd)
    gy = randn(tuple(yt.shape), dtype, 2)
    yt.backward(torch.from_numpy(gy))
    y = fc.avg_pool2d(x, **kwd, backend=NB)
    assert_close(y, yt.detach().numpy(), dtype, 25, "forward vs torch")
    spec = pool_spec("avg_pool2d", shape, **kwd)
    assert_close(y, ref.avg_pool2d(x, spec), dtype, 25, "forward vs reference")
    gx = fc.avg_pool2d_backward(gy, x.shape, **kwd, backend=NB)
    assert_close(gx, xt.grad.numpy(), dtype, 25, "backward vs torch")
    assert_close(gx, ref.avg_pool2d_backward(gy, spec), dtype, 25, "backward vs reference")


@requires_torch
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape,out", [((2, 3, 7, 7), (1, 1)), ((1, 2, 10, 7), (3, 4)),
                                       ((1, 1, 5, 5), (5, 5)), ((2, 2, 4, 6), (7, 3))])
def test_adaptive_avg_pool(shape, out, dtype):
    x = randn(shape, dtype, 1)
    xt = torch.from_numpy(x).requires_grad_()
    yt = F.adaptive_avg_pool2d(xt, out)
    gy = randn(tuple(yt.shape), dtype, 2)
    yt.backward(torch.from_numpy(gy))
    y = fc.adaptive_avg_pool2d(x, out, backend=NB)
    assert_close(y, yt.detach().numpy(), dtype, 70, "forward vs torch")
    assert_close(y, ref.adaptive_avg_pool2d(x, out), dtype, 70, "forward vs reference")
    gx = fc.adaptive_avg_pool2d_backward(gy, x.shape, backend=NB)
    assert_close(gx, xt.grad.numpy(), dtype, 70, "backward vs torch")
    assert_close(gx, ref.adaptive_avg_pool2d_backward(gy, x.shape), dtype, 70, "vs reference")


def test_pool_empty_batch():
    x = np.zeros((0, 2, 6, 6), np.float32)
    y, idx = fc.max_pool2d(x, 2, return_indices=True, backend=NB)
    assert y.shape == idx.shape == (0, 2, 3, 3)
    assert fc.max_pool2d_backward(y, idx, x.shape, backend=NB).shape == x.shape
    assert fc.avg_pool2d(x, 2, backend=NB).shape == (0, 2, 3, 3)
    assert fc.adaptive_avg_pool2d(x, 2, backend=NB).shape == (0, 2, 2, 2)


# ----------------------------------------------------------------------------- batch norm


@requires_torch
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(4, 3, 5, 7), (2, 1, 3, 3), (5, 6), (3, 4, 9)])
def test_batch_norm_train(shape, dtype):
    C = shape[1]
    x = randn(shape, dtype, 1) * 3 + 2
    w, b = randn((C,), dtype, 2), randn((C,), dtype, 3)
    rm, rv = np.zeros(C, dtype), np.ones(C, dtype)
    tdt = torch.from_numpy(x).dtype
    trm, trv = torch.zeros(C, dtype=tdt), torch.ones(C, dtype=tdt)
    xt = torch.from_numpy(x).requires_grad_()
    wt, bt = torch.from_numpy(w).requires_grad_(), torch.from_numpy(b).requires_grad_()
    yt = F.batch_norm(xt, trm, trv, wt, bt, training=True, momentum=0.1, eps=1e-5)
    gy = randn(shape, dtype, 4)
    yt.backward(torch.from_numpy(gy))
    y, mean, invstd = fc.batch_norm(x, rm, rv, w, b, training=True, return_stats=True,
                                    backend=NB)
    m = x.size // C
    assert_close(y, yt.detach().numpy(), dtype, m, "y vs torch")
    assert_close(rm, trm.numpy(), dtype, m, "running_mean")
    assert_close(rv, trv.numpy(), dtype, m, "running_var")
    rx = x.reshape(shape[0], C, -1, 1)
    ry, rmean, rvar = ref.batch_norm_train(rx, w, b, 1e-5)
    assert_close(y.reshape(rx.shape), ry, dtype, m, "y vs reference")
    assert_close(mean, rmean, dtype, m, "mean vs reference")
    gx, gw, gb = fc.batch_norm_backward(gy, x, w, mean, invstd, training=True, backend=NB)
    assert_close(gx, xt.grad.numpy(), dtype, m, "grad_x vs torch")
    assert_close(gw, wt.grad.numpy(), dtype, m, "grad_w vs torch")
    assert_close(gb, bt.grad.numpy(), dtype, m, "grad_b vs torch")
    rgx, rgw, rgb = ref.batch_norm_backward(gy.reshape(rx.shape), rx, w, mean, invstd, True)
    assert_close(gx.reshape(rx.shape), rgx, dtype, m, "grad_x vs reference")


@requires_torch
@pytest.mark.parametrize("dtype", DTYPES)
def test_batch_norm_eval(dtype):
    shape, C = (3, 4, 5, 6), 4
    x = randn(shape, dtype, 1)
    w, b = randn((C,), dtype, 2), randn((C,), dtype, 3)
    rm, rv = randn((C,), dtype, 5), np.abs(randn((C,), dtype, 6)) + 0.5
    xt = torch.from_numpy(x).requires_grad_()
    wt, bt = torch.from_numpy(w).requires_grad_(), torch.from_numpy(b).requires_grad_()
    yt = F.batch_norm(xt, torch.from_numpy(rm), torch.from_numpy(rv), wt, bt, training=False)
    gy = randn(shape, dtype, 4)
    yt.backward(torch.from_numpy(gy))
    y, mean, invstd = fc.batch_norm(x, rm, rv, w, b, training=False, return_stats=True,
                                    backend=NB)
    assert_close(y, yt.detach().numpy(), dtype, 4, "eval y vs torch")
    gx, gw, gb = fc.batch_norm_backward(gy, x, w, mean, invstd, training=False, backend=NB)
    assert_close(gx, xt.grad.numpy(), dtype, 90, "eval grad_x")
    assert_close(gw, wt.grad.numpy(), dtype, 90, "eval grad_w")
    assert_close(gb, bt.grad.numpy(), dtype, 90, "eval grad_b")


def test_batch_norm_gradient_finite_differences():
    x = randn((3, 2, 4, 5), np.float64, 1)
    w, b = randn((2,), np.float64, 2), randn((2,), np.float64, 3)
    gy, dx = randn(x.shape, np.float64, 4), randn(x.shape, np.float64, 5)

    def f(e):
        return float(np.sum(gy * fc.batch_norm(x + e * dx, None, None, w, b, training=True,
                                               backend=NB)))

    _, mean, invstd = fc.batch_norm(x, None, None, w, b, training=True, return_stats=True,
                                    backend=NB)
    gx, _, _ = fc.batch_norm_backward(gy, x, w, mean, invstd, training=True, backend=NB)
    numeric = (f(1e-6) - f(-1e-6)) / 2e-6
    assert abs(numeric - float(np.sum(gx * dx))) <= 1e-6 * max(1.0, abs(numeric))


# ----------------------------------------------------------------------------- the rest


@pytest.mark.parametrize("dtype", DTYPES)
def test_relu(dtype):
    x = randn((2, 3, 5, 7), dtype, 1)
    x[0, 0, 0, :3] = [np.nan, 0.0, -0.0]
    y = fc.relu(x, backend=NB)
    np.testing.assert_array_equal(y, ref.relu(x))
    gy = randn(x.shape, dtype, 2)
    np.testing.assert_array_equal(fc.relu_backward(gy, y, backend=NB), ref.relu_backward(gy, y))
    if torch is not None:
        np.testing.assert_array_equal(y, torch.relu(torch.from_numpy(x)).numpy())


def test_linear_and_cross_entropy_delegate_to_native():
    x, w, b = randn((4, 6), np.float32, 1), randn((3, 6), np.float32, 2), randn((3,), np.float32, 3)
    assert_close(fc.linear(x, w, b, backend=NB), ref.linear(x, w, b), np.float32, 6)
    gy = randn((4, 3), np.float32, 4)
    for a, e in zip(fc.linear_backward(gy, x, w, backend=NB), ref.linear_backward(gy, x, w)):
        assert_close(a, e, np.float32, 6)
    t = np.array([0, 2, 1, 2])
    logits = randn((4, 3), np.float64, 5)
    assert abs(fc.cross_entropy(logits, t, backend=NB) - ref.cross_entropy(logits, t)) < 1e-12
    assert_close(fc.cross_entropy_backward(logits, t, backend=NB),
                 ref.cross_entropy_backward(logits, t), np.float64)


def test_backend_metadata_and_threads():
    import numba

    from fastconv.backends import numba_cpu

    assert fc.backends()["numba"] == {"available": True, "reason": ""}
    assert numba_cpu.ALGOS["conv2d_backward_weight"] == ("direct", "im2col", "depthwise")
    assert numba_cpu.DTYPES == ("float32", "float64")
    assert numba_cpu.ARRAY_LIBS == ("numpy",)
    before = numba.get_num_threads()
    try:
        fc.set_num_threads(1)
        assert numba.get_num_threads() == 1
        x, w, b = conv_inputs((1, 2, 6, 6), (3, 2, 3, 3), np.float64)
        spec = conv_spec(x.shape, w.shape, padding=1)
        assert_close(fc.conv2d(x, w, b, padding=1, algo="direct", backend=NB),
                     ref.conv2d_forward(x, w, b, spec), np.float64, 18)
        fc.set_num_threads(0)
        assert numba.get_num_threads() == numba.config.NUMBA_NUM_THREADS
    finally:
        fc.set_num_threads(0)
        numba.set_num_threads(before)


# Kernel families compile_times must cover, written out here rather than read from the
# implementation, so a family dropped from its measurement list fails the test.
_NON_CONV_FAMILIES = (
    "max_pool2d", "max_pool2d_backward", "avg_pool2d", "avg_pool2d_backward",
    "adaptive_avg_pool2d", "adaptive_avg_pool2d_backward", "batch_norm_train",
    "batch_norm_eval", "batch_norm_backward", "relu", "relu_backward",
)


def test_compile_times_reports_every_kernel():
    # A fresh process: nothing is recorded until measured, and the measured figures
    # are the real first calls (compile or cache load) rather than warm calls.
    code = (
        "import json, sys\n"
        "from fastconv.backends import numba_cpu\n"
        "from fastconv.cli.numba_times import compile_times\n"
        "assert compile_times(measure=False) == {}\n"
        "t = compile_times(measure=True)\n"
        "assert compile_times(measure=False) == t\n"
        "assert compile_times() == t\n"
        "json.dump({'algos': numba_cpu.ALGOS, 'times': t}, sys.stdout)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr
    got = json.loads(proc.stdout)
    times, algos = got["times"], got["algos"]
    expected = {f"{fam}:{dt}" for dt in ("float32", "float64") for fam in _NON_CONV_FAMILIES}
    expected.add("parallel_runtime")
    for op in ("conv2d_forward", "conv2d_backward_data", "conv2d_backward_weight"):
        assert algos[op], op
        expected |= {f"{op}[{a}]:{dt}" for a in algos[op] for dt in ("float32", "float64")}
    assert set(times) == expected
    assert all(isinstance(v, float) and v >= 0 for v in times.values())


def test_import_fastconv_does_not_import_numba():
    code = ("import sys, fastconv; fastconv.conv2d; "
            "assert 'numba' not in sys.modules, 'import fastconv imported numba'; "
            "assert 'fastconv.backends.numba_cpu' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


@requires_torch
@pytest.mark.parametrize("op", ["forward", "backward_data"])
def test_bench_script_runs(op):
    """bench/numba_cpu.py end to end on one small layer: it validates every algorithm
    against PyTorch before timing (exiting non-zero on a mismatch) and prints the
    summary tables."""
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "bench" / "numba_cpu.py"
    proc = subprocess.run(
        [sys.executable, str(script), "--batch", "1", "--repeat", "1", "--threads", "1",
         "--layers", "layer4,layer4.0.conv1", "--op", op, "--stat", "min"],
        capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    out = proc.stdout
    assert "## Best numba algorithm per layer" in out
    assert "lowest best-numba/torch ratio" in out
    assert "parallel_runtime" in out
