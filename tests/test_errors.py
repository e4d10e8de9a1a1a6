"""Every invalid call raises ValueError/TypeError with a message naming the argument and
value, before any kernel runs."""
from __future__ import annotations

import numpy as np
import pytest

import fastconv as fc

X = np.zeros((2, 4, 8, 8), np.float32)
W = np.zeros((6, 4, 3, 3), np.float32)
B = np.zeros(6, np.float32)

CONV_ERRORS = [
    ("rank2_input", dict(x=np.zeros((8, 8), np.float32)), ValueError, r"input must be 3-D"),
    ("rank5_input", dict(x=np.zeros((1, 2, 4, 8, 8), np.float32)), ValueError, r"input"),
    ("rank3_weight", dict(weight=np.zeros((6, 4, 3), np.float32)), ValueError, r"weight must be 4-D"),
    ("channel_mismatch", dict(weight=np.zeros((6, 3, 3, 3), np.float32)), ValueError,
     r"weight.shape\[1\]=3"),
    ("groups_not_dividing_c", dict(groups=3), ValueError, r"groups=3 must divide the input"),
    ("groups_not_dividing_k", dict(weight=np.zeros((5, 2, 3, 3), np.float32), groups=2),
     ValueError, r"output channels"),
    ("groups_zero", dict(groups=0), ValueError, r"groups must be positive"),
    ("groups_float", dict(groups=1.5), TypeError, r"groups must be an int"),
    ("stride_zero", dict(stride=0), ValueError, r"stride must be positive, got 0"),
    ("stride_negative_pair", dict(stride=(1, -2)), ValueError, r"stride must be positive"),
    ("stride_triple", dict(stride=(1, 1, 1)), TypeError, r"stride must be an int or a pair"),
    ("dilation_zero", dict(dilation=0), ValueError, r"dilation must be positive"),
    ("padding_negative", dict(padding=-1), ValueError, r"padding must be >= 0, got -1"),
    ("padding_bad_string", dict(padding="full"), ValueError, r"padding must be .*'full'"),
    ("padding_same_strided", dict(padding="same", stride=2), ValueError,
     r"padding='same' is not supported for strided"),
    ("kernel_larger_than_padded", dict(weight=np.zeros((6, 4, 11, 3), np.float32)), ValueError,
     r"larger than the padded input"),
    ("dilated_kernel_too_large", dict(dilation=5), ValueError, r"larger than the padded input"),
    ("bias_shape", dict(bias=np.zeros(5, np.float32)), ValueError, r"bias must have shape \(6,\)"),
    ("mixed_dtypes", dict(weight=W.astype(np.float64)), TypeError, r"weight has dtype float64"),
    ("int_dtype", dict(x=X.astype(np.int32), weight=W.astype(np.int32)), TypeError,
     r"input has dtype int32"),
    ("float16", dict(x=X.astype(np.float16), weight=W.astype(np.float16)), TypeError,
     r"float16"),
    ("list_input", dict(x=[[[[1.0]]]]), TypeError, r"input: expected a numpy or cupy array"),
    ("empty_spatial", dict(x=np.zeros((2, 4, 0, 8), np.float32)), ValueError, r"empty"),
    ("bad_algo", dict(algo="fft"), ValueError, r"algo must be 'auto' or one of"),
    ("winograd_stride2", dict(algo="winograd_f43", stride=2), ValueError,
     r"winograd_f43|stride"),
    ("winograd_5x5", dict(algo="winograd_f23", weight=np.zeros((6, 4, 5, 5), np.float32)),
     ValueError, r"winograd_f23"),
    ("implicit_gemm_on_cpu", dict(algo="implicit_gemm"), ValueError, r"implicit_gemm"),
    ("bad_backend", dict(backend="opencl"), ValueError, r"backend must be None or one of"),
]


@pytest.mark.parametrize("name,override,exc,match", CONV_ERRORS, ids=[c[0] for c in CONV_ERRORS])
def test_conv2d_errors(name, override, exc, match):
    args = dict(x=X, weight=W, bias=B)
    args.update(override)
    x, w, b = args.pop("x"), args.pop("weight"), args.pop("bias")
    with pytest.raises(exc, match=match):
        fc.conv2d(x, w, b, **args)


def test_conv2d_backward_errors():
    y = fc.conv2d(X, W, padding=1)
    with pytest.raises(ValueError, match=r"grad_out has shape \(2, 6, 7, 8\), expected"):
        fc.conv2d_backward(y[:, :, :7], X, W, padding=1)
    with pytest.raises(ValueError, match="same rank"):
        fc.conv2d_backward(y[0], X, W, padding=1)
    with pytest.raises(TypeError, match="grad_out has dtype float64"):
        fc.conv2d_backward(y.astype(np.float64), X, W, padding=1)


POOL_ERRORS = [
    (fc.max_pool2d, dict(kernel_size=0), ValueError, r"kernel_size must be positive"),
    (fc.max_pool2d, dict(kernel_size=2, stride=0), ValueError, r"stride must be positive"),
    (fc.max_pool2d, dict(kernel_size=2, padding=2), ValueError, r"at most half of kernel_size"),
    (fc.max_pool2d, dict(kernel_size=2, dilation=0), ValueError, r"dilation must be positive"),
    (fc.max_pool2d, dict(kernel_size=9), ValueError, r"output size would be"),
    (fc.max_pool2d, dict(kernel_size=(2, 2, 2)), TypeError, r"kernel_size must be an int"),
    (fc.avg_pool2d, dict(kernel_size=2, divisor_override=0), ValueError, r"divisor_override"),
    (fc.avg_pool2d, dict(kernel_size=9), ValueError, r"output size would be"),
    (fc.adaptive_avg_pool2d, dict(output_size=0), ValueError, r"output_size must be positive"),
    (fc.adaptive_avg_pool2d, dict(output_size=(1, 2, 3)), TypeError, r"output_size"),
]


@pytest.mark.parametrize("fn,kw,exc,match", POOL_ERRORS,
                         ids=[f"{c[0].__name__}-{i}" for i, c in enumerate(POOL_ERRORS)])
def test_pool_errors(fn, kw, exc, match):
    with pytest.raises(exc, match=match):
        fn(X, **kw)


def test_pool_rank_and_dtype_errors():
    with pytest.raises(ValueError, match="input must be 3-D"):
        fc.max_pool2d(np.zeros((8, 8), np.float32), 2)
    with pytest.raises(TypeError, match="int64"):
        fc.avg_pool2d(np.zeros((1, 1, 4, 4), np.int64), 2)


def test_max_pool_backward_errors():
    y, idx = fc.max_pool2d(X, 2, return_indices=True)
    with pytest.raises(TypeError, match="indices must be int64"):
        fc.max_pool2d_backward(y, idx.astype(np.int32), X.shape)
    with pytest.raises(ValueError, match="indices must lie in"):
        fc.max_pool2d_backward(y, idx + 1000, X.shape)
    with pytest.raises(ValueError, match=r"indices must lie in \[-1, "):
        fc.max_pool2d_backward(y, np.full_like(idx, -2), X.shape)
    with pytest.raises(ValueError, match="indices shape"):
        fc.max_pool2d_backward(y, idx[:, :, :2], X.shape)
    with pytest.raises(ValueError, match="input_shape"):
        fc.max_pool2d_backward(y, idx, (8, 8))


def test_batch_norm_errors():
    c = np.zeros(4, np.float32)
    with pytest.raises(ValueError, match=r"running_mean must have shape \(4,\)"):
        fc.batch_norm(X, np.zeros(3, np.float32), c)
    with pytest.raises(ValueError, match="at least 2 dimensions"):
        fc.batch_norm(np.zeros(5, np.float32), c, c)
    with pytest.raises(TypeError, match="running_var has dtype float64"):
        fc.batch_norm(X, c, c.astype(np.float64))
    with pytest.raises(ValueError, match="eps must be finite"):
        fc.batch_norm(X, c, c + 1, eps=float("nan"))
    with pytest.raises(ValueError, match="grad_out shape"):
        fc.batch_norm_backward(X[:1], X, c, c, c)


def test_linear_and_cross_entropy_errors():
    with pytest.raises(ValueError, match=r"weight.shape\[1\]=3"):
        fc.linear(np.zeros((2, 4), np.float32), np.zeros((5, 3), np.float32))
    with pytest.raises(ValueError, match="weight must be 2-D"):
        fc.linear(np.zeros((2, 4), np.float32), np.zeros(4, np.float32))
    logits = np.zeros((3, 4), np.float32)
    with pytest.raises(ValueError, match=r"target values must lie in \[0, 4\)"):
        fc.cross_entropy(logits, np.array([0, 1, 4]))
    with pytest.raises(TypeError, match="integer class indices"):
        fc.cross_entropy(logits, np.zeros(3, np.float32))
    with pytest.raises(ValueError, match=r"target must have shape \(3,\)"):
        fc.cross_entropy(logits, np.zeros(2, np.int64))
    with pytest.raises(ValueError, match="logits must be 2-D"):
        fc.cross_entropy(np.zeros(3, np.float32), np.zeros(3, np.int64))


def test_named_gpu_backend_on_numpy_is_refused_cleanly():
    with pytest.raises((RuntimeError, TypeError), match="cuda"):
        fc.conv2d(X, W, backend="cuda")


def test_native_bindings_check_shapes_themselves():
    """Calling the extension directly with inconsistent arrays raises, never reads OOB."""
    from fastconv import _native

    y = np.zeros((2, 6, 6, 6), np.float32)
    with pytest.raises(ValueError, match="weight"):
        _native.conv_direct_fwd(X, np.zeros((6, 3, 3, 3), np.float32), None, y, (1, 1), (0, 0),
                                (1, 1), 1)
    with pytest.raises(ValueError, match="output"):
        _native.conv_direct_fwd(X, W, None, np.zeros((2, 6, 60, 6), np.float32), (1, 1), (0, 0),
                                (1, 1), 1)
    with pytest.raises(ValueError, match="stride"):
        _native.conv_direct_fwd(X, W, None, y, (0, 1), (0, 0), (1, 1), 1)
    with pytest.raises(ValueError, match="bias"):
        _native.conv_direct_fwd(X, W, np.zeros(2, np.float32), y, (1, 1), (0, 0), (1, 1), 1)
    ro = np.zeros_like(y)
    ro.flags.writeable = False
    with pytest.raises(TypeError):  # an output is never converted or written if read-only
        _native.conv_direct_fwd(X, W, None, ro, (1, 1), (0, 0), (1, 1), 1)
    with pytest.raises(TypeError):
        _native.conv_direct_fwd(X, W, None, np.zeros((2, 6, 6, 6), np.int32), (1, 1), (0, 0),
                                (1, 1), 1)
