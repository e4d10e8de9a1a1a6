"""The native (C++) pooling, batch-norm, ReLU, linear and cross-entropy kernels.

Each op runs on backend="native" and is compared with fastconv.backends.reference (the
NumPy oracle, float64 accumulation) on every compiled ISA path, and with PyTorch on the
best path. Backward ops also get float64 finite-difference checks, and every kernel is
checked to give bit-identical results on 1 and 2 threads.
"""
from __future__ import annotations

import numpy as np
import pytest

import fastconv as fc
from conftest import DTYPES, F, assert_close, randn, requires_torch, torch
from fastconv import _native
from fastconv.backends import native as NB
from fastconv.backends.native import misc as native_misc
from fastconv.backends import reference as R

NATIVE = dict(backend="native")
REF = dict(backend="reference")
BEST_ISA = _native.active_isa()


def _isas():
    out = []
    for name in ("generic", "avx2", "avx512"):
        try:
            _native.set_isa(name)
        except ValueError:
            continue  # not compiled in or not supported by this CPU
        out.append(name)
    _native.set_isa(BEST_ISA)
    return out


ISAS = _isas()


@pytest.fixture(params=ISAS)
def isa(request):
    """Runs the test on one ISA path, restoring the best one afterwards."""
    _native.set_isa(request.param)
    try:
        yield request.param
    finally:
        _native.set_isa(BEST_ISA)


def _set_threads(n):
    # Set on the extension itself too: fc.set_num_threads reaches the native backend only
    # once the dispatcher has loaded it.
    fc.set_num_threads(n)
    NB.set_num_threads(n)
    assert _native.num_threads() == (n or _native.num_threads())


@pytest.fixture
def threads_restored():
    before = _native.num_threads()
    yield
    _set_threads(before)


def T(a):
    return torch.from_numpy(np.ascontiguousarray(a))


def tol_equal(a, b):
    """Exact equality, NaN == NaN (max pooling picks values, it does not compute them)."""
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_isa_paths_compiled():
    assert "generic" in ISAS and BEST_ISA in ISAS
    assert _native.active_isa() == BEST_ISA


# ----------------------------------------------------------------------------- max pool

# (name, x_shape, kwargs): awkward on purpose.
MAX_CASES = [
    ("resnet_stem", (2, 3, 11, 13), dict(kernel_size=3, stride=2, padding=1)),
    ("even_stem", (1, 4, 16, 16), dict(kernel_size=3, stride=2, padding=1)),
    ("2x2", (2, 3, 8, 9), dict(kernel_size=2)),
    ("ceil_last_window_in_pad", (1, 2, 6, 6),
     dict(kernel_size=3, stride=2, padding=1, ceil_mode=True)),
    ("ceil_no_pad", (2, 2, 7, 8), dict(kernel_size=2, stride=2, ceil_mode=True)),
    ("ceil_1x2_pad01", (1, 2, 5, 7),
     dict(kernel_size=(1, 2), stride=2, padding=(0, 1), ceil_mode=True)),
    ("dilation_padding", (2, 3, 10, 9), dict(kernel_size=3, stride=1, padding=1, dilation=2)),
    ("dilation_rect_ceil", (1, 2, 11, 13),
     dict(kernel_size=(2, 3), stride=(1, 2), padding=(1, 1), dilation=(2, 1), ceil_mode=True)),
    ("stride_3_2", (1, 2, 13, 12), dict(kernel_size=(3, 2), stride=(3, 2), padding=(1, 1))),
    ("stride_gt_kernel", (1, 2, 17, 19), dict(kernel_size=2, stride=4)),
    ("s1_wide_row", (1, 2, 7, 37), dict(kernel_size=3, stride=1, padding=1)),
    ("1x1", (1, 2, 4, 5), dict(kernel_size=1)),
    ("whole_plane", (2, 3, 5, 5), dict(kernel_size=5)),
    ("c1_n1", (1, 1, 9, 9), dict(kernel_size=3, stride=2)),
    ("n0", (0, 3, 8, 8), dict(kernel_size=2)),
    ("unbatched", (3, 9, 9), dict(kernel_size=3, stride=2, padding=1)),
]
MAX_IDS = [c[0] for c in MAX_CASES]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name,shape,kw", MAX_CASES, ids=MAX_IDS)
def test_max_pool_vs_reference(isa, name, shape, kw, dtype):
    x = randn(shape, dtype)
    y, idx = fc.max_pool2d(x, **kw, return_indices=True, **NATIVE)
    ry, ridx = fc.max_pool2d(x, **kw, return_indices=True, **REF)
    assert y.dtype == dtype and idx.dtype == np.int64 and y.shape == ry.shape
    tol_equal(y, ry)
    tol_equal(idx, ridx)
    tol_equal(fc.max_pool2d(x, **kw, **NATIVE), ry)  # the no-index kernel
    gy = randn(y.shape, dtype, 1)
    gx = fc.max_pool2d_backward(gy, idx, shape, **NATIVE)
    assert_close(gx, fc.max_pool2d_backward(gy, ridx, shape, **REF), dtype, terms=9)


@requires_torch
@pytest.mark.torch
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name,shape,kw", MAX_CASES, ids=MAX_IDS)
def test_max_pool_vs_torch(name, shape, kw, dtype):
    x = randn(shape, dtype)
    y, idx = fc.max_pool2d(x, **kw, return_indices=True, **NATIVE)
    xt = T(x).requires_grad_()
    yt, it = F.max_pool2d(xt, **kw, return_indices=True)
    tol_equal(y, yt.detach().numpy())
    tol_equal(idx, it.numpy())
    gy = randn(y.shape, dtype, 1)
    if y.size:
        yt.backward(T(gy))
        assert_close(fc.max_pool2d_backward(gy, idx, shape, **NATIVE), xt.grad.numpy(), dtype,
                     terms=9)


def _special(shape, dtype, kind, seed=0):
    rng = np.random.default_rng(seed)
    if kind == "all_neg_inf":
        return np.full(shape, -np.inf, dtype)
    if kind == "some_neg_inf":
        x = rng.standard_normal(shape).astype(dtype)
        x[rng.random(shape) < 0.6] = -np.inf
        return x
    if kind == "ties":  # few distinct values: the first maximum must win
        return rng.integers(-2, 2, shape).astype(dtype)
    if kind == "nan":  # the last NaN in the window must win, as on PyTorch's CPU
        x = rng.integers(-2, 2, shape).astype(dtype)
        x[rng.random(shape) < 0.15] = np.nan
        return x
    if kind == "nan_and_inf":
        x = np.full(shape, -np.inf, dtype)
        x[rng.random(shape) < 0.1] = np.nan
        x[rng.random(shape) < 0.1] = np.inf
        return x
    raise AssertionError(kind)


SPECIAL = ["all_neg_inf", "some_neg_inf", "ties", "nan", "nan_and_inf"]
SPECIAL_CASES = [MAX_CASES[i] for i in (0, 3, 5, 6, 7, 9, 10)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind", SPECIAL)
@pytest.mark.parametrize("name,shape,kw", SPECIAL_CASES, ids=[c[0] for c in SPECIAL_CASES])
def test_max_pool_special_values_vs_reference(isa, name, shape, kw, kind, dtype):
    x = _special(shape, dtype, kind)
    y, idx = fc.max_pool2d(x, **kw, return_indices=True, **NATIVE)
    ry, ridx = R.max_pool2d(x, fc._args.pool_spec("t", shape, **kw), True)
    tol_equal(y, ry)
    tol_equal(idx, ridx)
    tol_equal(fc.max_pool2d(x, **kw, **NATIVE), ry)


@requires_torch
@pytest.mark.torch
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind", SPECIAL)
@pytest.mark.parametrize("name,shape,kw", SPECIAL_CASES, ids=[c[0] for c in SPECIAL_CASES])
def test_max_pool_special_values_vs_torch(name, shape, kw, kind, dtype):
    x = _special(shape, dtype, kind)
    y, idx = fc.max_pool2d(x, **kw, return_indices=True, **NATIVE)
    yt, it = F.max_pool2d(T(x), **kw, return_indices=True)
    tol_equal(y, yt.numpy())
    tol_equal(idx, it.numpy())


def test_max_pool_nan_propagates():
    x = np.zeros((1, 1, 4, 4), np.float32)
    x[0, 0, 1, 1] = np.nan
    y, idx = fc.max_pool2d(x, 2, return_indices=True, **NATIVE)
    assert np.isnan(y[0, 0, 0, 0]) and idx[0, 0, 0, 0] == 5
    assert not np.isnan(y[0, 0, 1, 1])


def test_max_pool_backward_ignores_out_of_range_indices_in_kernel():
    # The functional layer rejects such indices; the kernel itself must still stay in
    # bounds when called directly.
    gy = np.ones((1, 1, 2, 2), np.float32)
    idx = np.array([[[[0, -1], [16, 3]]]], np.int64)
    gx = np.full((1, 1, 4, 4), 7, np.float32)
    _native.max_pool2d_bwd(gy, idx, gx)
    expect = np.zeros(16, np.float32)
    expect[[0, 3]] = 1
    tol_equal(gx.reshape(-1), expect)


def test_native_binding_rejects_mismatched_shapes():
    x = np.zeros((2, 3, 8, 8), np.float32)
    with pytest.raises(ValueError, match="does not match"):
        _native.max_pool2d_fwd(x, np.zeros((2, 4, 4, 4), np.float32), None, (2, 2), (2, 2),
                               (0, 0), (1, 1))
    with pytest.raises(ValueError, match="stride"):
        _native.avg_pool2d_fwd(x, np.zeros((2, 3, 4, 4), np.float32), (2, 2), (0, 2), (0, 0),
                               True, 0)
    with pytest.raises(ValueError, match="indices"):
        _native.max_pool2d_fwd(x, np.zeros((2, 3, 4, 4), np.float32),
                               np.zeros((2, 3, 4, 3), np.int64), (2, 2), (2, 2), (0, 0), (1, 1))


# ----------------------------------------------------------------------------- avg pool

AVG_CASES = [
    ("3x3_s2_p1", (2, 3, 11, 13), dict(kernel_size=3, stride=2, padding=1)),
    ("3x3_s2_p1_nopadcount", (2, 3, 11, 13),
     dict(kernel_size=3, stride=2, padding=1, count_include_pad=False)),
    ("2x2", (2, 3, 8, 9), dict(kernel_size=2)),
    ("ceil_pad", (1, 2, 6, 7), dict(kernel_size=3, stride=2, padding=1, ceil_mode=True)),
    ("ceil_pad_nocount", (1, 2, 6, 7),
     dict(kernel_size=3, stride=2, padding=1, ceil_mode=True, count_include_pad=False)),
    # The trap: a window that lies in the padding and past the edge must give 0, not 0/0.
    ("nan_trap", (1, 2, 3, 5),
     dict(kernel_size=(1, 2), stride=2, padding=(0, 1), ceil_mode=True,
          count_include_pad=False)),
    ("nan_trap_w4", (1, 1, 2, 4),
     dict(kernel_size=(1, 2), stride=2, padding=(0, 1), ceil_mode=True,
          count_include_pad=False)),
    ("divisor_override", (2, 3, 7, 7),
     dict(kernel_size=3, stride=2, padding=1, ceil_mode=True, divisor_override=5)),
    ("divisor_negative", (1, 2, 6, 6), dict(kernel_size=2, divisor_override=-3)),
    ("rect_stride", (1, 2, 13, 12), dict(kernel_size=(3, 2), stride=(3, 1), padding=(1, 1))),
    ("stride_gt_kernel", (1, 2, 17, 19), dict(kernel_size=2, stride=4)),
    ("1x1", (1, 2, 4, 5), dict(kernel_size=1)),
    ("whole_plane", (2, 3, 5, 6), dict(kernel_size=(5, 6))),
    ("n0", (0, 3, 8, 8), dict(kernel_size=2)),
    ("unbatched", (3, 9, 9), dict(kernel_size=3, stride=2, padding=1)),
]
AVG_IDS = [c[0] for c in AVG_CASES]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name,shape,kw", AVG_CASES, ids=AVG_IDS)
def test_avg_pool_vs_reference(isa, name, shape, kw, dtype):
    x = randn(shape, dtype)
    y = fc.avg_pool2d(x, **kw, **NATIVE)
    ry = fc.avg_pool2d(x, **kw, **REF)
    assert y.dtype == dtype and np.isfinite(y).all()
    assert_close(y, ry, dtype, terms=9)
    gy = randn(y.shape, dtype, 1)
    gx = fc.avg_pool2d_backward(gy, shape, **kw, **NATIVE)
    assert np.isfinite(gx).all()
    assert_close(gx, fc.avg_pool2d_backward(gy, shape, **kw, **REF), dtype, terms=9)


@requires_torch
@pytest.mark.torch
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name,shape,kw", AVG_CASES, ids=AVG_IDS)
def test_avg_pool_vs_torch(name, shape, kw, dtype):
    x = randn(shape, dtype)
    y = fc.avg_pool2d(x, **kw, **NATIVE)
    xt = T(x).requires_grad_()
    yt = F.avg_pool2d(xt, **kw)
    assert_close(y, yt.detach().numpy(), dtype, terms=9)
    if y.size:
        gy = randn(y.shape, dtype, 1)
        yt.backward(T(gy))
        assert_close(fc.avg_pool2d_backward(gy, shape, **kw, **NATIVE), xt.grad.numpy(), dtype,
                     terms=9)


# ----------------------------------------------------------------------------- adaptive

ADAPTIVE_CASES = [
    ("global", (2, 3, 7, 7), (1, 1)),
    ("global_big_plane", (1, 2, 150, 301), (1, 1)),
    ("divisible", (2, 3, 8, 12), (4, 3)),
    ("overlapping", (2, 3, 11, 13), (5, 3)),
    ("larger_than_input", (2, 3, 5, 4), (11, 9)),
    ("much_larger", (1, 2, 2, 3), (7, 10)),
    ("identity", (1, 3, 6, 7), (6, 7)),
    ("row", (2, 2, 9, 10), (1, 4)),
    ("n0", (0, 3, 8, 8), (2, 2)),
    ("unbatched", (3, 9, 9), (4, 4)),
]
ADAPTIVE_IDS = [c[0] for c in ADAPTIVE_CASES]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name,shape,out", ADAPTIVE_CASES, ids=ADAPTIVE_IDS)
def test_adaptive_avg_pool_vs_reference(isa, name, shape, out, dtype):
    x = randn(shape, dtype) + 3  # an offset makes float32 accumulation error visible
    y = fc.adaptive_avg_pool2d(x, out, **NATIVE)
    assert y.shape == shape[:-2] + out and y.dtype == dtype
    assert_close(y, fc.adaptive_avg_pool2d(x, out, **REF), dtype)
    gy = randn(y.shape, dtype, 1)
    assert_close(fc.adaptive_avg_pool2d_backward(gy, shape, **NATIVE),
                 fc.adaptive_avg_pool2d_backward(gy, shape, **REF), dtype, terms=4)


@requires_torch
@pytest.mark.torch
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name,shape,out", ADAPTIVE_CASES, ids=ADAPTIVE_IDS)
def test_adaptive_avg_pool_vs_torch(name, shape, out, dtype):
    x = randn(shape, dtype)
    y = fc.adaptive_avg_pool2d(x, out, **NATIVE)
    xt = T(x).requires_grad_()
    yt = F.adaptive_avg_pool2d(xt, out)
    assert_close(y, yt.detach().numpy(), dtype, terms=4)
    if y.size:
        gy = randn(y.shape, dtype, 1)
        yt.backward(T(gy))
        assert_close(fc.adaptive_avg_pool2d_backward(gy, shape, **NATIVE), xt.grad.numpy(),
                     dtype, terms=4)


# ----------------------------------------------------------------------------- batch norm

# Shapes as F.batch_norm takes them: (N, C), (N, C, L) and (N, C, H, W).
BN_SHAPES = [(4, 3, 5, 7), (2, 16, 9, 9), (3, 5, 1, 1), (1, 2, 3, 1), (8, 6), (4, 3, 10),
             (2, 1, 33, 17)]


def _bn_params(C, dtype, seed=3):
    rng = np.random.default_rng(seed)
    return (rng.uniform(0.5, 2, C).astype(dtype), rng.standard_normal(C).astype(dtype),
            rng.standard_normal(C).astype(dtype), rng.uniform(0.5, 2, C).astype(dtype))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", BN_SHAPES, ids=str)
def test_batch_norm_vs_reference(isa, shape, dtype):
    x = randn(shape, dtype) * 3 + 1
    C = shape[1]
    w, b, rm, rv = _bn_params(C, dtype)
    y, mean, invstd = fc.batch_norm(x, None, None, w, b, training=True, return_stats=True,
                                    **NATIVE)
    ry, rmean, rinvstd = fc.batch_norm(x, None, None, w, b, training=True, return_stats=True,
                                       **REF)
    m = x.size // C
    assert_close(y, ry, dtype, terms=m)
    assert_close(mean, rmean, dtype, terms=m)
    assert_close(invstd, rinvstd, dtype, terms=m)
    ye = fc.batch_norm(x, rm, rv, w, b, training=False, **NATIVE)
    assert_close(ye, fc.batch_norm(x, rm, rv, w, b, training=False, **REF), dtype)
    gy = randn(shape, dtype, 5)
    for training in (True, False):
        got = fc.batch_norm_backward(gy, x, w, mean, invstd, training, **NATIVE)
        want = fc.batch_norm_backward(gy, x, w, mean, invstd, training, **REF)
        for g, r, what in zip(got, want, ("gx", "gw", "gb")):
            assert g.shape == r.shape and g.dtype == dtype
            assert_close(g, r, dtype, terms=m, what=f"{what} training={training}")


@pytest.mark.parametrize("dtype", DTYPES)
def test_batch_norm_no_affine_vs_reference(isa, dtype):
    x = randn((3, 4, 5, 6), dtype)
    y = fc.batch_norm(x, None, None, training=True, **NATIVE)
    assert_close(y, fc.batch_norm(x, None, None, training=True, **REF), dtype, terms=90)


def test_batch_norm_large_mean_float32_is_stable():
    # |mean| / std = 1e4: a one-pass E[x^2] - E[x]^2 in float32 loses every digit.
    x = (1e4 + randn((8, 4, 16, 16), np.float64)).astype(np.float32)
    _, mean, invstd = fc.batch_norm(x, None, None, training=True, return_stats=True, **NATIVE)
    x64 = x.astype(np.float64)
    var = x64.var(axis=(0, 2, 3))
    np.testing.assert_allclose(mean, x64.mean(axis=(0, 2, 3)), rtol=1e-7)
    np.testing.assert_allclose(invstd, 1 / np.sqrt(var + 1e-5), rtol=1e-5)


@requires_torch
@pytest.mark.torch
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", BN_SHAPES, ids=str)
def test_batch_norm_vs_torch(shape, dtype):
    x = randn(shape, dtype) * 3 + 1
    C = shape[1]
    w, b, rm, rv = _bn_params(C, dtype)
    m = x.size // C
    rm_t, rv_t = T(rm.copy()), T(rv.copy())
    xt, wt, bt = T(x).requires_grad_(), T(w).requires_grad_(), T(b).requires_grad_()
    yt = F.batch_norm(xt, rm_t, rv_t, wt, bt, training=True, momentum=0.1, eps=1e-5)
    rm_o, rv_o = rm.copy(), rv.copy()
    y, mean, invstd = fc.batch_norm(x, rm_o, rv_o, w, b, training=True, momentum=0.1, eps=1e-5,
                                    return_stats=True, **NATIVE)
    assert_close(y, yt.detach().numpy(), dtype, terms=m)
    assert_close(rm_o, rm_t.numpy(), dtype, terms=m, what="running_mean")
    assert_close(rv_o, rv_t.numpy(), dtype, terms=m, what="running_var")
    gy = randn(shape, dtype, 5)
    yt.backward(T(gy))
    gx, gw, gb = fc.batch_norm_backward(gy, x, w, mean, invstd, True, **NATIVE)
    assert_close(gx, xt.grad.numpy(), dtype, terms=m, what="gx")
    assert_close(gw, wt.grad.numpy(), dtype, terms=m, what="gw")
    assert_close(gb, bt.grad.numpy(), dtype, terms=m, what="gb")
    # Inference mode with the running statistics; gradients treat them as constants.
    xt2 = T(x).requires_grad_()
    ye_t = F.batch_norm(xt2, T(rm), T(rv), T(w), T(b), training=False, eps=1e-5)
    ye = fc.batch_norm(x, rm, rv, w, b, training=False, **NATIVE)
    assert_close(ye, ye_t.detach().numpy(), dtype)
    ye_t.backward(T(gy))
    gx_e, _, _ = fc.batch_norm_backward(gy, x, w, rm, 1 / np.sqrt(rv + dtype(1e-5)), False,
                                        **NATIVE)
    assert_close(gx_e, xt2.grad.numpy(), dtype)


def test_batch_norm_training_single_value_per_channel_rejected():
    x = randn((1, 3, 1, 1), np.float32)
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        fc.batch_norm(x, None, None, training=True, **NATIVE)


@pytest.mark.parametrize("dtype", DTYPES)
def test_batch_norm_zero_batch_backend(dtype):
    """N = 0 at the backend level: inference gives an empty output, gradients of the
    parameters are zero (as the reference)."""
    x = np.zeros((0, 3, 16, 1), dtype)
    w, b, rm, rv = _bn_params(3, dtype)
    assert NB.batch_norm_eval(x, rm, rv, w, b, 1e-5).shape == x.shape
    want = R.batch_norm_backward(x, x, w, rm, rv, False)  # (the reference warns on 0/0 when
    for training in (True, False):                         # training; the answer is the same)
        for g, r in zip(NB.batch_norm_backward(x, x, w, rm, rv, training), want):
            assert g.dtype == dtype
            tol_equal(g, r)


# ----------------------------------------------------------------------------- relu

RELU_SHAPES = [(), (1,), (17,), (3, 5), (2, 3, 4, 5), (0, 4), (3, 70001)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", RELU_SHAPES, ids=str)
def test_relu_vs_reference(isa, shape, dtype):
    x = np.asarray(randn(shape, dtype))
    if x.size > 3:
        x.reshape(-1)[:3] = (np.nan, -np.inf, np.inf)
    y = fc.relu(x, **NATIVE)
    assert y.shape == x.shape and y.dtype == dtype
    tol_equal(y, fc.relu(x, **REF))
    gy = np.asarray(randn(shape, dtype, 1))
    tol_equal(fc.relu_backward(gy, y, **NATIVE), fc.relu_backward(gy, y, **REF))


@requires_torch
@pytest.mark.torch
@pytest.mark.parametrize("dtype", DTYPES)
def test_relu_vs_torch(dtype):
    x = randn((3, 4, 5, 6), dtype)
    x.reshape(-1)[:3] = (np.nan, -np.inf, np.inf)
    tol_equal(fc.relu(x, **NATIVE), torch.relu(T(x)).numpy())
    y = fc.relu(x, **NATIVE)
    gy = randn(x.shape, dtype, 1)
    ok = np.isfinite(y)  # torch passes the gradient through a NaN output; we follow the reference
    want = torch.ops.aten.threshold_backward(T(gy), T(y), 0).numpy()
    tol_equal(fc.relu_backward(gy, y, **NATIVE)[ok], want[ok])


def test_relu_inplace_kernel_writes_through():
    x = randn((4, 5), np.float32)
    expect = np.maximum(x, 0)
    out = native_misc.relu_(x)
    assert out is x
    tol_equal(x, expect)


# ----------------------------------------------------------------------------- linear

LINEAR_CASES = [((5, 7), 3, True), ((1, 1), 1, False), ((2, 3, 7), 4, True), ((0, 6), 5, True),
                ((33, 65), 17, True), ((4, 512), 1000, True)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("xshape,out,bias", LINEAR_CASES, ids=str)
def test_linear_vs_reference(isa, xshape, out, bias, dtype):
    x = randn(xshape, dtype)
    w = randn((out, xshape[-1]), dtype, 1)
    b = randn((out,), dtype, 2) if bias else None
    y = fc.linear(x, w, b, **NATIVE)
    assert y.shape == (*xshape[:-1], out)
    assert_close(y, fc.linear(x, w, b, **REF), dtype, terms=xshape[-1])
    gy = randn(y.shape, dtype, 3)
    m = int(np.prod(xshape[:-1]))
    for g, r, what in zip(fc.linear_backward(gy, x, w, **NATIVE),
                          fc.linear_backward(gy, x, w, **REF), ("gx", "gw", "gb")):
        assert g.shape == r.shape and g.dtype == dtype
        assert_close(g, r, dtype, terms=max(m, out), what=what)


@requires_torch
@pytest.mark.torch
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("xshape,out,bias", LINEAR_CASES, ids=str)
def test_linear_vs_torch(xshape, out, bias, dtype):
    x = randn(xshape, dtype)
    w = randn((out, xshape[-1]), dtype, 1)
    b = randn((out,), dtype, 2) if bias else None
    xt, wt = T(x).requires_grad_(), T(w).requires_grad_()
    bt = T(b).requires_grad_() if bias else None
    yt = F.linear(xt, wt, bt)
    assert_close(fc.linear(x, w, b, **NATIVE), yt.detach().numpy(), dtype, terms=xshape[-1])
    gy = randn(tuple(yt.shape), dtype, 3)
    yt.backward(T(gy))
    gx, gw, gb = fc.linear_backward(gy, x, w, **NATIVE)
    m = int(np.prod(xshape[:-1]))
    assert_close(gx, xt.grad.numpy(), dtype, terms=out)
    assert_close(gw, wt.grad.numpy(), dtype, terms=max(m, 1))
    if bias:
        assert_close(gb, bt.grad.numpy(), dtype, terms=max(m, 1))


# ----------------------------------------------------------------------------- cross-entropy

CE_CASES = [(6, 10, 1.0), (1, 1, 1.0), (5, 3, 500.0), (64, 1000, 3.0)]


def _ce_inputs(n, k, scale, dtype):
    z = (randn((n, k), dtype) * scale).astype(dtype)
    t = np.random.default_rng(7).integers(0, k, n).astype(np.int64)
    return z, t


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n,k,scale", CE_CASES, ids=str)
def test_cross_entropy_vs_reference(isa, n, k, scale, dtype):
    z, t = _ce_inputs(n, k, scale, dtype)
    loss = fc.cross_entropy(z, t, **NATIVE)
    assert isinstance(loss, float) and np.isfinite(loss)
    ref = fc.cross_entropy(z, t, **REF)
    assert abs(loss - ref) <= 1e-12 * max(1.0, abs(ref))  # both work in float64
    g = fc.cross_entropy_backward(z, t, **NATIVE)
    assert g.dtype == dtype
    assert_close(g, fc.cross_entropy_backward(z, t, **REF), dtype)


@requires_torch
@pytest.mark.torch
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n,k,scale", CE_CASES, ids=str)
def test_cross_entropy_vs_torch(n, k, scale, dtype):
    z, t = _ce_inputs(n, k, scale, dtype)
    zt = T(z).requires_grad_()
    lt = F.cross_entropy(zt, T(t))
    lt.backward()
    tol = 1e-5 if dtype == np.float32 else 1e-12
    assert abs(fc.cross_entropy(z, t, **NATIVE) - lt.item()) <= tol * max(1.0, abs(lt.item()))
    assert_close(fc.cross_entropy_backward(z, t, **NATIVE), zt.grad.numpy(), dtype)


def test_cross_entropy_empty_batch_is_nan():
    z, t = np.zeros((0, 4), np.float32), np.zeros(0, np.int64)
    assert np.isnan(fc.cross_entropy(z, t, **NATIVE))
    assert fc.cross_entropy_backward(z, t, **NATIVE).shape == (0, 4)


def test_cross_entropy_kernel_rejects_bad_targets():
    z = np.zeros((2, 3), np.float32)
    with pytest.raises(ValueError, match="target"):
        _native.cross_entropy_fwd(z, np.array([0, 3], np.int64))
    with pytest.raises(ValueError, match="target"):
        _native.cross_entropy_bwd(z, np.array([-1, 0], np.int64), np.empty_like(z))


# ----------------------------------------------------------------------------- threads


def _all_ops(dtype):
    """Every kernel on inputs big enough to run in parallel -> list of outputs."""
    x = randn((4, 8, 40, 41), dtype)
    out = []
    y, idx = fc.max_pool2d(x, 3, 2, 1, return_indices=True, **NATIVE)
    out += [y, idx, fc.max_pool2d_backward(randn(y.shape, dtype, 1), idx, x.shape, **NATIVE)]
    kw = dict(kernel_size=3, stride=2, padding=1, ceil_mode=True, count_include_pad=False)
    a = fc.avg_pool2d(x, **kw, **NATIVE)
    out += [a, fc.avg_pool2d_backward(randn(a.shape, dtype, 2), x.shape, **kw, **NATIVE)]
    for o in ((1, 1), (7, 5)):
        g = fc.adaptive_avg_pool2d(x, o, **NATIVE)
        out += [g, fc.adaptive_avg_pool2d_backward(randn(g.shape, dtype, 3), x.shape, **NATIVE)]
    w, b, rm, rv = _bn_params(8, dtype)
    yb, mean, invstd = fc.batch_norm(x, None, None, w, b, training=True, return_stats=True,
                                     **NATIVE)
    out += [yb, mean, invstd, fc.batch_norm(x, rm, rv, w, b, **NATIVE)]
    out += list(fc.batch_norm_backward(randn(x.shape, dtype, 4), x, w, mean, invstd, True,
                                       **NATIVE))
    r = fc.relu(x, **NATIVE)
    out += [r, fc.relu_backward(randn(x.shape, dtype, 5), r, **NATIVE)]
    z, t = _ce_inputs(300, 500, 2.0, dtype)
    out += [np.float64(fc.cross_entropy(z, t, **NATIVE)),
            fc.cross_entropy_backward(z, t, **NATIVE)]
    return out


@pytest.mark.parametrize("dtype", DTYPES)
def test_one_and_two_threads_give_identical_results(threads_restored, dtype):
    _set_threads(1)
    one = _all_ops(dtype)
    _set_threads(2)
    two = _all_ops(dtype)
    assert len(one) == len(two)
    for i, (a, b) in enumerate(zip(one, two)):
        assert a.dtype == b.dtype, i
        np.testing.assert_array_equal(a, b, err_msg=f"output {i}")


# ----------------------------------------------------------------------------- gradients
# Float64 finite differences: for a random direction v and weights r,
# d/de sum(r * f(x + e v)) at e = 0 must equal sum(grad * v).


def _directional(f, args, i, r, v, eps=1e-6):
    plus = [a.copy() for a in args]
    minus = [a.copy() for a in args]
    plus[i] = plus[i] + eps * v
    minus[i] = minus[i] - eps * v
    return (np.sum(r * f(*plus)) - np.sum(r * f(*minus))) / (2 * eps)


def _check_grad(f, args, grads, seed=0, directions=3):
    rng = np.random.default_rng(seed)
    out = f(*args)
    r = rng.standard_normal(np.shape(out))
    gs = grads(r, *args)
    for i, g in enumerate(gs):
        if g is None:
            continue
        for _ in range(directions):
            v = rng.standard_normal(args[i].shape)
            num = _directional(f, args, i, r, v)
            ana = float(np.sum(g * v))
            assert abs(num - ana) <= 1e-6 * max(1.0, abs(ana)), (i, num, ana)


POOL_GRAD_CASES = [
    dict(kernel_size=3, stride=2, padding=1),
    dict(kernel_size=(2, 3), stride=(1, 2), padding=(1, 1), dilation=(2, 1), ceil_mode=True),
    dict(kernel_size=2, stride=3),
]


@pytest.mark.parametrize("kw", POOL_GRAD_CASES, ids=str)
def test_max_pool_gradient_finite_difference(kw):
    x = randn((2, 2, 9, 10), np.float64)

    def f(x):
        return fc.max_pool2d(x, **kw, **NATIVE)

    def grads(r, x):
        _, idx = fc.max_pool2d(x, **kw, return_indices=True, **NATIVE)
        return (fc.max_pool2d_backward(r, idx, x.shape, **NATIVE),)

    _check_grad(f, [x], grads)


AVG_GRAD_CASES = [
    dict(kernel_size=3, stride=2, padding=1),
    dict(kernel_size=3, stride=2, padding=1, ceil_mode=True, count_include_pad=False),
    dict(kernel_size=(1, 2), stride=2, padding=(0, 1), ceil_mode=True, count_include_pad=False),
    dict(kernel_size=2, stride=1, divisor_override=3),
]


@pytest.mark.parametrize("kw", AVG_GRAD_CASES, ids=str)
def test_avg_pool_gradient_finite_difference(kw):
    x = randn((2, 2, 7, 9), np.float64)
    _check_grad(lambda x: fc.avg_pool2d(x, **kw, **NATIVE), [x],
                lambda r, x: (fc.avg_pool2d_backward(r, x.shape, **kw, **NATIVE),))


@pytest.mark.parametrize("out", [(1, 1), (3, 4), (11, 6)], ids=str)
def test_adaptive_avg_pool_gradient_finite_difference(out):
    x = randn((2, 2, 7, 5), np.float64)
    _check_grad(lambda x: fc.adaptive_avg_pool2d(x, out, **NATIVE), [x],
                lambda r, x: (fc.adaptive_avg_pool2d_backward(r, x.shape, **NATIVE),))


@pytest.mark.parametrize("training", [True, False])
def test_batch_norm_gradient_finite_difference(training):
    x = randn((3, 4, 5, 2), np.float64) * 2 + 1
    w, b, rm, rv = _bn_params(4, np.float64)

    def f(x, w, b):
        if training:
            return fc.batch_norm(x, None, None, w, b, training=True, **NATIVE)
        return fc.batch_norm(x, rm, rv, w, b, training=False, **NATIVE)

    def grads(r, x, w, b):
        if training:
            _, mean, invstd = fc.batch_norm(x, None, None, w, b, training=True,
                                            return_stats=True, **NATIVE)
        else:
            mean, invstd = rm, 1 / np.sqrt(rv + 1e-5)
        return fc.batch_norm_backward(r, x, w, mean, invstd, training, **NATIVE)

    _check_grad(f, [x, w, b], grads)


def test_relu_gradient_finite_difference():
    x = randn((3, 50), np.float64)
    x[np.abs(x) < 1e-3] = 0.5  # keep away from the kink
    _check_grad(lambda x: fc.relu(x, **NATIVE), [x],
                lambda r, x: (fc.relu_backward(r, fc.relu(x, **NATIVE), **NATIVE),))


def test_linear_gradient_finite_difference():
    x, w, b = randn((4, 6), np.float64), randn((5, 6), np.float64, 1), randn((5,), np.float64, 2)
    _check_grad(lambda x, w, b: fc.linear(x, w, b, **NATIVE), [x, w, b],
                lambda r, x, w, b: fc.linear_backward(r, x, w, **NATIVE))


def test_cross_entropy_gradient_finite_difference():
    z, t = _ce_inputs(5, 7, 2.0, np.float64)
    _check_grad(lambda z: np.float64(fc.cross_entropy(z, t, **NATIVE)), [z],
                lambda r, z: (r * fc.cross_entropy_backward(z, t, **NATIVE),))
