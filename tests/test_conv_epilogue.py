"""The forward convolution's output stage (csrc/common/epilogue.h): bias, residual add and
activation clamp fused into the native kernels' stores, against the reference convolution
followed by the same arithmetic in float64."""
from __future__ import annotations

import numpy as np
import pytest

import fastconv as fc
from fastconv import _native
from fastconv._args import conv_spec
from fastconv._dispatch import obstacle
from fastconv.backends.native import conv as native_conv

from conftest import CONV_CASES, DTYPES, WINOGRAD_CASES, assert_close, conv_inputs, randn

CLAMPS = {"none": (-np.inf, np.inf), "relu": (0.0, np.inf), "relu6": (0.0, 6.0)}


def _cases():
    for name, xs, ws, kw in CONV_CASES + WINOGRAD_CASES:
        if len(xs) != 4:
            continue  # the backend op takes batched arrays; unbatching is functional's job
        spec = conv_spec(xs, ws, kw.get("stride", 1), kw.get("padding", 0),
                         kw.get("dilation", 1), kw.get("groups", 1))
        if spec.N == 0:
            continue
        for algo in native_conv.ALGOS["conv2d_forward"]:
            if obstacle(algo, spec) is not None:
                continue
            yield pytest.param(name, xs, ws, kw, algo, id=f"{name}-{algo}")


@pytest.mark.parametrize("clamp", list(CLAMPS))
@pytest.mark.parametrize("with_residual", [False, True])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name,xs,ws,kw,algo", list(_cases()))
def test_fused_output_stage(name, xs, ws, kw, algo, dtype, with_residual, clamp):
    x, w, b = conv_inputs(xs, ws, dtype)
    spec = conv_spec(x.shape, w.shape, kw.get("stride", 1), kw.get("padding", 0),
                     kw.get("dilation", 1), kw.get("groups", 1))
    ref = fc.conv2d(x.astype(np.float64), w.astype(np.float64), b.astype(np.float64), **kw,
                    backend="reference")
    res = randn(ref.shape, dtype, 11) if with_residual else None
    if res is not None:
        ref = ref + res
    lo, hi = CLAMPS[clamp]
    ref = np.minimum(np.maximum(ref, lo), hi)
    y = native_conv.conv2d_forward(x, w, b, spec, algo, residual=res, clamp=(lo, hi))
    assert_close(y, ref, dtype, ws[1] * ws[2] * ws[3], f"{algo}/{name}")


def test_clamp_keeps_nan_and_writes_into_out():
    x = np.ones((1, 1, 3, 3), np.float32)
    x[0, 0, 1, 1] = np.nan
    w = np.ones((1, 1, 1, 1), np.float32)
    spec = conv_spec(x.shape, w.shape, 1, 0, 1, 1)
    out = np.empty((1, 1, 3, 3), np.float32)
    y = native_conv.conv2d_forward(x, w, None, spec, "direct", clamp=(0.0, 6.0), out=out)
    assert y is out
    assert np.isnan(y[0, 0, 1, 1]) and np.count_nonzero(np.isnan(y)) == 1


def test_bad_output_stage_is_refused():
    x = np.ones((1, 2, 4, 4), np.float32)
    w = np.ones((3, 2, 1, 1), np.float32)
    y = np.empty((1, 3, 4, 4), np.float32)
    args = (x, w, None, y, (1, 1), (0, 0), (1, 1), 1)
    with pytest.raises(ValueError, match="residual"):
        _native.conv_direct_fwd(*args, np.ones((1, 3, 4, 5), np.float32))
    with pytest.raises(ValueError, match="overlap"):
        _native.conv_direct_fwd(*args, y)
    with pytest.raises(ValueError, match="lo <= hi"):
        _native.conv_direct_fwd(*args, None, 1.0, 0.0)
    with pytest.raises(ValueError, match="lo <= hi"):
        _native.conv_direct_fwd(*args, None, float("nan"), 1.0)


# Shapes that reach each store the output stage is fused into: the direct kernel's
# wide-row and channels-last stores, its plain loops (padding/dilation far beyond a tiny
# output), Winograd's private and fused (transformed filters > 3 MB) schedules, im2col's
# GEMM, at batch 1 to 3.
_PATHS = [
    ("direct-wide", (3, 5, 21, 19), (8, 5, 3, 3), dict(padding=1), "direct"),
    ("direct-nhwc", (1, 24, 7, 7), (40, 24, 3, 3), dict(padding=1), "direct"),
    ("direct-nhwc-s2", (2, 16, 9, 9), (32, 16, 3, 3), dict(stride=2, padding=1), "direct"),
    ("direct-sparse", (2, 3, 5, 5), (4, 3, 3, 3), dict(padding=900, dilation=900), "direct"),
    ("f43-private", (1, 6, 13, 11), (7, 6, 3, 3), dict(padding=1), "winograd_f43"),
    ("f23-private", (3, 4, 9, 10), (5, 4, 3, 3), dict(padding=(0, 1)), "winograd_f23"),
    ("f43-fused", (1, 160, 6, 6), (160, 160, 3, 3), dict(padding=1), "winograd_f43"),
    # im2col: the GEMM's final-k-pass stores (several k blocks: C*R*S = 864), grouped,
    # and the depth-chunked product whose partial sums are reduced afterwards
    ("im2col-kblocks", (2, 96, 9, 11), (20, 96, 3, 3), dict(stride=2, padding=1), "im2col"),
    ("im2col-groups", (1, 8, 10, 10), (12, 4, 3, 3), dict(padding=1, groups=2), "im2col"),
    ("im2col-depth", (1, 512, 4, 4), (8, 512, 3, 3), dict(), "im2col"),
]


@pytest.mark.parametrize("clamp", ["relu", "relu6"])
@pytest.mark.parametrize("name,xs,ws,kw,algo", _PATHS, ids=[p[0] for p in _PATHS])
def test_fused_output_stage_every_store(name, xs, ws, kw, algo, clamp):
    """Each fused store applies bias, residual and clamp exactly like the post-pass did,
    for 1 and 2 threads alike (bitwise)."""
    x, w, b = conv_inputs(xs, ws, np.float32)
    spec = conv_spec(x.shape, w.shape, kw.get("stride", 1), kw.get("padding", 0),
                     kw.get("dilation", 1), kw.get("groups", 1))
    ref = fc.conv2d(x.astype(np.float64), w.astype(np.float64), b.astype(np.float64), **kw,
                    backend="reference")
    res = randn(ref.shape, np.float32, 11) * 3
    lo, hi = CLAMPS[clamp]
    ref = np.minimum(np.maximum(ref + res, lo), hi)
    ys = []
    for t in (1, 2):
        fc.set_num_threads(t)
        try:
            ys.append(native_conv.conv2d_forward(x, w, b, spec, algo, residual=res,
                                                 clamp=(lo, hi)))
        finally:
            fc.set_num_threads(0)
    np.testing.assert_array_equal(ys[0], ys[1])
    tol = 1e-4 if algo == "winograd_f43" else 1e-5
    np.testing.assert_allclose(ys[0], ref, rtol=tol, atol=tol * np.abs(ref).max())
