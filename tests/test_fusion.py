"""fastconv.fusion: batch-norm folding and the conv + bias + ReLU epilogue."""
from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

import fastconv as fc
from conftest import DTYPES, F, assert_close, randn, requires_torch, torch
from fastconv.fusion import conv2d_bias_relu, fold_batch_norm

# (x_shape, w_shape, conv kwargs, conv bias?, bn affine?)
FOLD_CASES = [
    ((2, 3, 9, 9), (4, 3, 3, 3), dict(padding=1), True, True),
    ((1, 5, 7, 8), (6, 5, 1, 1), dict(), False, True),
    ((2, 4, 10, 10), (8, 2, 3, 3), dict(padding=1, stride=2, groups=2), True, False),
    ((1, 4, 8, 8), (4, 1, 3, 3), dict(padding=1, groups=4), False, False),
]


def _bn(K, dtype, seed=10):
    rng = np.random.default_rng(seed)
    return (rng.uniform(0.5, 2, K).astype(dtype), rng.standard_normal(K).astype(dtype),
            rng.standard_normal(K).astype(dtype), rng.uniform(0.2, 3, K).astype(dtype))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("xs,ws,kw,has_bias,affine", FOLD_CASES, ids=str)
@pytest.mark.parametrize("backend", ["native", "reference"])
def test_fold_equals_conv_then_eval_bn(backend, xs, ws, kw, has_bias, affine, dtype):
    x, w = randn(xs, dtype), randn(ws, dtype, 1)
    b = randn((ws[0],), dtype, 2) if has_bias else None
    g, beta, rm, rv = _bn(ws[0], dtype)
    if not affine:
        g = beta = None
    before = [a.copy() for a in (w, rm, rv)]
    wf, bf = fold_batch_norm(w, b, g, beta, rm, rv, eps=1e-3)
    assert wf.dtype == dtype and bf.dtype == dtype and wf.shape == w.shape
    for a, c in zip((w, rm, rv), before):
        np.testing.assert_array_equal(a, c)  # inputs are not modified
    fused = fc.conv2d(x, wf, bf, **kw, backend=backend)
    ref = fc.batch_norm(fc.conv2d(x, w, b, **kw, backend=backend), rm, rv, g, beta,
                        training=False, eps=1e-3, backend=backend)
    assert_close(fused, ref, dtype, terms=ws[1] * ws[2] * ws[3] * 4)


@requires_torch
@pytest.mark.torch
def test_fold_matches_torch_fuse_conv_bn():
    from torch.nn.utils.fusion import fuse_conv_bn_weights

    w, b = randn((6, 3, 3, 3), np.float64), randn((6,), np.float64, 1)
    g, beta, rm, rv = _bn(6, np.float64)
    wt, bt = fuse_conv_bn_weights(*(torch.from_numpy(a) for a in (w, b, rm, rv)), 1e-5,
                                  torch.from_numpy(g), torch.from_numpy(beta))
    wf, bf = fold_batch_norm(w, b, g, beta, rm, rv)
    assert_close(wf, wt.detach().numpy(), np.float64)
    assert_close(bf, bt.detach().numpy(), np.float64)


def test_fold_batch_norm_exported():
    assert fc.fold_batch_norm is fold_batch_norm


def test_fold_validation():
    w = randn((4, 3, 3, 3), np.float32)
    g, beta, rm, rv = _bn(4, np.float32)
    with pytest.raises(ValueError, match="conv_w must be 4-D"):
        fold_batch_norm(w[0], None, g, beta, rm, rv)
    with pytest.raises(ValueError, match="running_var must have shape"):
        fold_batch_norm(w, None, g, beta, rm, rv[:3])
    with pytest.raises(ValueError, match="conv_b must have shape"):
        fold_batch_norm(w, np.zeros(5, np.float32), g, beta, rm, rv)
    with pytest.raises(ValueError, match="running_mean is required"):
        fold_batch_norm(w, None, g, beta, None, rv)
    with pytest.raises(ValueError, match="eps"):
        fold_batch_norm(w, None, g, beta, rm, rv, eps=-1.0)
    with pytest.raises(ValueError, match="eps"):
        fold_batch_norm(w, None, g, beta, rm, rv, eps=float("nan"))
    with pytest.raises(ValueError, match="positive"):
        fold_batch_norm(w, None, g, beta, rm, -np.ones(4, np.float32), eps=0.0)
    with pytest.raises(TypeError, match="dtype"):
        fold_batch_norm(w, None, g, beta, rm.astype(np.float64), rv)
    with pytest.raises(TypeError):
        fold_batch_norm(w.tolist(), None, g, beta, rm, rv)


# ----------------------------------------------------------------------------- conv+bias+relu

RELU_CASES = [
    ((2, 3, 9, 9), (4, 3, 3, 3), dict(padding=1), True),
    ((1, 4, 8, 7), (6, 2, 3, 3), dict(stride=2, padding=1, groups=2), False),
    ((3, 7, 7), (5, 3, 1, 1), dict(), True),  # unbatched
    ((0, 3, 6, 6), (2, 3, 3, 3), dict(padding=1), True),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("xs,ws,kw,has_bias", RELU_CASES, ids=str)
@pytest.mark.parametrize("backend", ["native", "reference"])
def test_conv2d_bias_relu_equals_relu_of_conv(backend, xs, ws, kw, has_bias, dtype):
    x, w = randn(xs, dtype), randn(ws, dtype, 1)
    b = randn((ws[0],), dtype, 2) if has_bias else None
    y = conv2d_bias_relu(x, w, b, **kw, backend=backend)
    ref = fc.relu(fc.conv2d(x, w, b, **kw, backend="reference"), backend="reference")
    assert y.shape == ref.shape and y.dtype == dtype
    assert (y >= 0).all()
    assert_close(y, ref, dtype, terms=ws[1] * ws[2] * ws[3])


@requires_torch
@pytest.mark.torch
@pytest.mark.parametrize("dtype", DTYPES)
def test_conv2d_bias_relu_vs_torch(dtype):
    x, w, b = randn((2, 3, 10, 11), dtype), randn((5, 3, 3, 3), dtype, 1), randn((5,), dtype, 2)
    y = conv2d_bias_relu(x, w, b, stride=2, padding=1)
    ref = torch.relu(F.conv2d(torch.from_numpy(x), torch.from_numpy(w), torch.from_numpy(b),
                              stride=2, padding=1)).numpy()
    assert_close(y, ref, dtype, terms=27)


def test_conv2d_bias_relu_propagates_nan():
    x = randn((1, 2, 5, 5), np.float32)
    x[0, 0, 2, 2] = np.nan
    y = conv2d_bias_relu(x, randn((3, 2, 1, 1), np.float32, 1), None)
    assert np.isnan(y[:, :, 2, 2]).all() and not np.isnan(y[:, :, 0, 0]).any()


def test_conv2d_bias_relu_native_allocates_one_output():
    """The ReLU is in place: NumPy allocations peak at one output array, where
    relu(conv2d(...)) needs two."""
    x, w, b = randn((2, 8, 40, 40), np.float32), randn((16, 8, 1, 1), np.float32, 1), \
        randn((16,), np.float32, 2)
    # algo="direct" allocates nothing but its output, which isolates the epilogue.
    conv2d_bias_relu(x, w, b, algo="direct", backend="native")  # warm up (imports)
    out_bytes = 2 * 16 * 40 * 40 * 4

    def peak(fn):
        tracemalloc.start()
        try:
            fn()
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    fused = peak(lambda: conv2d_bias_relu(x, w, b, algo="direct", backend="native"))
    unfused = peak(lambda: fc.relu(fc.conv2d(x, w, b, algo="direct", backend="native"),
                                   backend="native"))
    assert fused < 1.5 * out_bytes <= unfused


def test_conv2d_bias_relu_validates_like_conv2d():
    with pytest.raises(ValueError, match="conv2d"):
        conv2d_bias_relu(randn((1, 3, 5, 5), np.float32), randn((2, 4, 3, 3), np.float32), None)


@pytest.mark.parametrize("backend", ["native", "numba", "reference"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_relu_inplace_op_overwrites_its_input(backend, dtype):
    """functional.relu_ (the ReLU of conv2d_bias_relu): the backend's in-place kernel
    (native) or maximum(out=) elsewhere, equal to relu, NaN kept, the same array back."""
    x = randn((2, 3, 5, 7), dtype)
    x[0, 0, 0, :3] = [np.nan, -0.0, 0.0]
    expected = fc.relu(x, backend="reference")
    y = fc.functional.relu_(x, backend=backend)
    assert y is x
    np.testing.assert_array_equal(y, expected)
    with pytest.raises(ValueError, match="C-contiguous"):
        fc.functional.relu_(np.ones((4, 4), dtype)[:, ::2], backend=backend)
    with pytest.raises(TypeError, match="relu_: input"):
        fc.functional.relu_([1.0, -1.0], backend=backend)
