"""The native direct convolution (forward, backward-data, backward-weight) against the
NumPy reference and PyTorch over the shared CONV_CASES sweep, on every ISA path, with
thread-count invariance and a float64 finite-difference check."""
from __future__ import annotations

import numpy as np
import pytest

import fastconv
from conftest import (CONV_CASES, CONV_IDS, DTYPES, FASTCONV_PATH, assert_close, conv_inputs,
                      randn, requires_torch, torch_conv)

ISAS = ["generic", "avx2", "avx512"]


def _terms(ws, kw):
    return ws[1] * ws[2] * ws[3]


def _run(x, w, b, gy, kw):
    y = fastconv.conv2d(x, w, b, **kw, algo="direct", backend="native")
    g = fastconv.conv2d_backward(gy, x, w, **kw, algo="direct", backend="native")
    return (y,) + tuple(g)


@pytest.mark.parametrize("isa", ISAS, indirect=True)
@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("name,xs,ws,kw", CONV_CASES, ids=CONV_IDS)
def test_direct_vs_reference(name, xs, ws, kw, dtype, isa):
    x, w, b = conv_inputs(xs, ws, dtype)
    y_ref = fastconv.conv2d(x, w, b, **kw, backend="reference")
    gy = randn(y_ref.shape, dtype, 5)
    y, gx, gw, gb = _run(x, w, b, gy, kw)
    gx_r, gw_r, gb_r = fastconv.conv2d_backward(gy, x, w, **kw, backend="reference")
    assert y.dtype == gx.dtype == gw.dtype == dtype
    assert_close(y, y_ref, dtype, _terms(ws, kw), f"{name} forward")
    assert_close(gx, gx_r, dtype, ws[0] * ws[2] * ws[3], f"{name} backward-data")
    n_pix = max(1, y_ref.size // max(1, ws[0]))
    assert_close(gw, gw_r, dtype, n_pix, f"{name} backward-weight")
    assert_close(gb, gb_r, dtype, n_pix, f"{name} backward-bias")


@requires_torch
@pytest.mark.torch
@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("name,xs,ws,kw", CONV_CASES, ids=CONV_IDS)
def test_direct_vs_torch(name, xs, ws, kw, dtype):
    x, w, b = conv_inputs(xs, ws, dtype)
    y_t, gy, gx_t, gw_t, gb_t = torch_conv(x, w, b, **kw)
    y, gx, gw, gb = _run(x, w, b, gy, kw)
    n_pix = max(1, y_t.size // ws[0])
    assert_close(y, y_t, dtype, _terms(ws, kw), f"{name} forward vs torch")
    assert_close(gx, gx_t, dtype, ws[0] * ws[2] * ws[3], f"{name} backward-data vs torch")
    assert_close(gw, gw_t, dtype, n_pix, f"{name} backward-weight vs torch")
    assert_close(gb, gb_t, dtype, n_pix, f"{name} backward-bias vs torch")


# Shapes for the channels-last weight-gradient kernel (used when a group has at least half
# a k tile of filters): k tiles with a remainder, column runs (S * Cg) not a multiple of
# the register tile, more column tiles than one task holds, pixel chunks that do not
# divide N * P, per-tap runs (horizontal dilation), 1-wide filter axes with stride
# (phases no tap reads), groups, padding past the input, strides 2 and 3.
NHWC_WGRAD_CASES = [
    (dict(padding=1), (2, 13, 9, 11), (37, 13, 3, 3)),
    (dict(padding=1), (1, 70, 5, 5), (40, 70, 3, 3)),
    (dict(stride=2, padding=3), (2, 3, 21, 19), (20, 3, 7, 7)),
    (dict(stride=2), (3, 24, 9, 11), (33, 24, 1, 1)),
    (dict(stride=(3, 1), padding=(1, 2)), (2, 5, 10, 9), (18, 5, 1, 3)),
    (dict(stride=(1, 2), padding=(2, 0)), (2, 5, 9, 10), (18, 5, 3, 1)),
    (dict(padding=(2, 3), dilation=(1, 3)), (2, 6, 8, 12), (35, 6, 3, 3)),
    (dict(padding=1, dilation=(2, 1), groups=2), (2, 10, 9, 8), (68, 5, 3, 3)),
    (dict(padding=3), (1, 9, 3, 4), (16, 9, 2, 2)),
    (dict(padding=1), (3, 16, 2, 150), (32, 16, 3, 3)),
    # phase-split channels-last x: stride with dilation (one row phase), stride 3
    (dict(stride=2, padding=2, dilation=2), (2, 6, 11, 12), (36, 6, 3, 3)),
    (dict(stride=3, padding=1), (2, 5, 13, 14), (40, 5, 3, 3)),
    (dict(stride=(2, 3), padding=(1, 2)), (1, 40, 9, 11), (64, 40, 3, 5)),
    # taps read phases 0 and 2 of 3 per axis: stored phases are not indexed by phase
    (dict(stride=3, dilation=2, padding=1), (2, 5, 14, 13), (40, 5, 2, 2)),
    (dict(stride=3, dilation=2, padding=1), (1, 40, 14, 13), (64, 40, 2, 2)),
]


@pytest.mark.parametrize("isa", ISAS, indirect=True)
@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("kw,xs,ws", NHWC_WGRAD_CASES)
def test_direct_wgrad_blocking_edges(kw, xs, ws, dtype, isa):
    """Weight gradient (and the other passes) on the channels-last kernel's edge shapes."""
    x, w, b = conv_inputs(xs, ws, dtype)
    y_ref = fastconv.conv2d(x, w, b, **kw, backend="reference")
    gy = randn(y_ref.shape, dtype, 7)
    y, gx, gw, gb = _run(x, w, b, gy, kw)
    gx_r, gw_r, gb_r = fastconv.conv2d_backward(gy, x, w, **kw, backend="reference")
    assert_close(y, y_ref, dtype, _terms(ws, kw), "forward")
    assert_close(gx, gx_r, dtype, ws[0] * ws[2] * ws[3], "backward-data")
    assert_close(gw, gw_r, dtype, max(1, gy.size // ws[0]), "backward-weight")


# Shapes for the channels-last forward / stride-1 backward-data (small images, where the
# wide-row grid is mostly padding, and a well-used k tile): pixel tiles with a remainder
# (Q < 7, Q = 9), k tiles with a remainder, stride 2, 1x1 stride 2, dilation with the
# padding short of the kernel's reach, groups, asymmetric padding, one image.
NHWC_FWD_CASES = [
    (dict(padding=1), (2, 40, 5, 5), (40, 40, 3, 3)),
    (dict(padding=1), (2, 33, 9, 9), (90, 33, 3, 3)),
    (dict(stride=2, padding=1), (2, 36, 13, 13), (64, 36, 3, 3)),
    (dict(stride=2), (2, 40, 14, 14), (64, 40, 1, 1)),
    (dict(padding=2, dilation=2), (1, 34, 7, 7), (64, 34, 3, 3)),
    (dict(padding=1, groups=2), (2, 64, 6, 6), (128, 32, 3, 3)),
    (dict(padding=(0, 1)), (1, 32, 6, 8), (64, 32, 3, 3)),
    # One image in one chunk of rows: each task packs its filter blocks itself (forward
    # and backward-data), with a ragged last block and with groups.
    (dict(padding=1), (1, 40, 7, 7), (70, 40, 3, 3)),
    (dict(padding=1, groups=2), (1, 64, 5, 5), (96, 32, 3, 3)),
]


@pytest.mark.parametrize("isa", ISAS, indirect=True)
@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("kw,xs,ws", NHWC_FWD_CASES)
def test_direct_nhwc_forward_edges(kw, xs, ws, dtype, isa):
    """Forward (with bias) and both gradients on the channels-last forward's edge shapes."""
    x, w, b = conv_inputs(xs, ws, dtype)
    y_ref = fastconv.conv2d(x, w, b, **kw, backend="reference")
    gy = randn(y_ref.shape, dtype, 9)
    y, gx, gw, gb = _run(x, w, b, gy, kw)
    gx_r, gw_r, gb_r = fastconv.conv2d_backward(gy, x, w, **kw, backend="reference")
    assert_close(y, y_ref, dtype, _terms(ws, kw), "forward")
    assert_close(gx, gx_r, dtype, ws[0] * ws[2] * ws[3], "backward-data")
    assert_close(gw, gw_r, dtype, max(1, gy.size // ws[0]), "backward-weight")


@requires_torch
@pytest.mark.torch
@pytest.mark.parametrize("kw,xs,ws", NHWC_FWD_CASES)
def test_direct_nhwc_forward_edges_vs_torch(kw, xs, ws):
    x, w, b = conv_inputs(xs, ws, np.float32)
    y_t, gy, gx_t, gw_t, gb_t = torch_conv(x, w, b, **kw)
    y, gx, _, _ = _run(x, w, b, gy, kw)
    assert_close(y, y_t, np.float32, _terms(ws, kw), "forward vs torch")
    assert_close(gx, gx_t, np.float32, ws[0] * ws[2] * ws[3], "backward-data vs torch")


@requires_torch
@pytest.mark.torch
@pytest.mark.parametrize("kw,xs,ws", NHWC_WGRAD_CASES[:4])
def test_direct_wgrad_blocking_edges_vs_torch(kw, xs, ws):
    x, w, b = conv_inputs(xs, ws, np.float32)
    y_t, gy, gx_t, gw_t, gb_t = torch_conv(x, w, b, **kw)
    _, _, gw, _ = _run(x, w, b, gy, kw)
    assert_close(gw, gw_t, np.float32, max(1, y_t.size // ws[0]), "backward-weight vs torch")


@pytest.mark.parametrize("kw,xs,ws", [
    (dict(padding=1), (3, 20, 23, 19), (37, 20, 3, 3)),
    (dict(padding=1), (2, 64, 14, 14), (64, 64, 3, 3)),
    (dict(padding=(2, 3), dilation=(1, 3)), (2, 6, 8, 12), (35, 6, 3, 3)),
    (dict(stride=2, padding=3), (2, 3, 31, 29), (9, 3, 7, 7)),
    (dict(stride=2), (2, 16, 15, 15), (24, 16, 1, 1)),
    (dict(padding=2, dilation=2, groups=2), (2, 8, 14, 13), (6, 4, 3, 3)),
    # deep, small images: the filter-outer schedules of forward and backward-data (K = 40:
    # a poorly used k tile keeps the wide-row kernels), the channels-last ones (K = 80)
    (dict(padding=1), (3, 96, 7, 7), (40, 96, 3, 3)),
    (dict(padding=1), (3, 96, 7, 7), (80, 96, 3, 3)),
    (dict(stride=2), (2, 40, 14, 14), (64, 40, 1, 1)),
    (dict(stride=2, padding=1), (2, 64, 9, 9), (72, 64, 3, 3)),
    # batch 1 and 3: the filter-outer schedules split each image's j-blocks between
    # the threads (one image and one filter group used to be one task)
    (dict(padding=1), (1, 64, 24, 24), (64, 64, 3, 3)),
    (dict(padding=1), (3, 24, 17, 13), (30, 24, 3, 3)),
    (dict(stride=2, padding=1), (1, 32, 23, 21), (40, 32, 3, 3)),
    (dict(stride=2, padding=3), (1, 3, 45, 38), (64, 3, 7, 7)),
])
def test_direct_threads_agree(kw, xs, ws, threads):
    """Work is split without changing any output's summation order; both thread counts
    also match the reference (the shapes cover both task schedules)."""
    x, w, b = conv_inputs(xs, ws, np.float32)
    gy = randn(fastconv.conv2d(x, w, **kw, backend="reference").shape, np.float32, 3)
    res = []
    for t in (1, 2):
        fastconv.set_num_threads(t)
        res.append(_run(x, w, b, gy, kw))
    for a, c in zip(res[0], res[1]):
        np.testing.assert_array_equal(a, c)
    y_r = fastconv.conv2d(x, w, b, **kw, backend="reference")
    gx_r, gw_r, _ = fastconv.conv2d_backward(gy, x, w, **kw, backend="reference")
    assert_close(res[0][0], y_r, np.float32, ws[1] * ws[2] * ws[3], "forward")
    assert_close(res[0][1], gx_r, np.float32, ws[0] * ws[2] * ws[3], "backward-data")
    assert_close(res[0][2], gw_r, np.float32, gy.size // ws[0], "backward-weight")


@pytest.mark.parametrize("kw,xs,ws", [
    (dict(stride=2, padding=1), (2, 2, 7, 6), (3, 2, 3, 3)),
    (dict(padding=1, dilation=2, groups=2), (2, 2, 7, 6), (4, 1, 3, 3)),
    # channels-last weight gradient (k tile half / fully used)
    (dict(stride=2, padding=1), (2, 2, 7, 6), (20, 2, 3, 3)),
    (dict(padding=(1, 2), dilation=(1, 2)), (2, 2, 7, 6), (9, 2, 3, 3)),
    # channels-last forward and stride-1 backward-data (small image, 16 x 16 channels)
    (dict(padding=1), (1, 16, 4, 4), (16, 16, 3, 3)),
])
def test_direct_finite_differences(kw, xs, ws):
    """float64 central differences of sum(y * gy) against backward-data / backward-weight."""
    x, w, b = conv_inputs(xs, ws, np.float64)
    y = fastconv.conv2d(x, w, b, **kw, algo="direct", backend="native")
    gy = randn(y.shape, np.float64, 11)
    gx, gw, gb = fastconv.conv2d_backward(gy, x, w, **kw, algo="direct", backend="native")

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


# ---------------------------------------------------------------- extreme geometry
# Each runs in its own interpreter: before the fixes these segfaulted, hung or took
# gigabytes, which must fail the test rather than take the suite down.
_EXTREME = r"""
import resource, sys
import numpy as np
import fastconv
kind = sys.argv[1]
rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
x = np.ones((1, 1, 4, 4), np.float32)
w = np.ones((1, 1, 3, 3), np.float32)
if kind.startswith("stride"):
    st = int(kind[6:])
    y = fastconv.conv2d(x, w, stride=st, algo="direct", backend="native")
    assert y.shape == (1, 1, 1, 1) and y[0, 0, 0, 0] == 9, y
    gx, gw, _ = fastconv.conv2d_backward(np.full_like(y, 2), x, w, stride=st, algo="direct",
                                         backend="native")
    want = np.zeros_like(x)
    want[0, 0, :3, :3] = 2
    np.testing.assert_array_equal(gx, want)
    np.testing.assert_array_equal(gw, np.full_like(w, 2))
else:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 4, 8, 8)).astype(np.float32)
    w = rng.standard_normal((3, 4, 3, 3)).astype(np.float32)
    kw = dict(stride=1000) if kind == "s1000" else dict(padding=3000, dilation=3000)
    y = fastconv.conv2d(x, w, **kw, algo="direct", backend="native")
    gy = rng.standard_normal(y.shape).astype(np.float32)
    gx, gw, _ = fastconv.conv2d_backward(gy, x, w, **kw, algo="direct", backend="native")
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0) / 1024
    # the torch oracle: the reference backend itself pads to 6000 x 6000 here
    import torch
    tx, tw = torch.from_numpy(x).requires_grad_(), torch.from_numpy(w).requires_grad_()
    ty = torch.nn.functional.conv2d(tx, tw, **kw)
    ty.backward(torch.from_numpy(gy))
    y_r, gx_r, gw_r = ty.detach().numpy(), tx.grad.numpy(), tw.grad.numpy()
    for a, b in ((y, y_r), (gx, gx_r), (gw, gw_r)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
if kind.startswith("stride"):
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0) / 1024
assert grown_mb < 100, f"peak memory grew by {grown_mb:.0f} MB"
print("ok")
"""


@pytest.mark.parametrize("kind", ["stride4294967296", "stride2147483647", "stride1099511627776",
                                  pytest.param("s1000", marks=requires_torch),
                                  pytest.param("d3000", marks=requires_torch)])
def test_direct_extreme_geometry_subprocess(kind):
    """Strides of 2^31 - 1 .. 2^40 (a phase table sized stride^2 overflowed: segfault,
    hang, or "vector::_M_default_append"), and stride 1000 / dilation = padding = 3000
    (workspace of 2 GB / 575 MB for a tiny output): all three passes must give the
    reference's answer quickly and with bounded memory."""
    import os
    import subprocess
    import sys

    root = FASTCONV_PATH
    env = dict(os.environ, PYTHONPATH=root + os.pathsep + os.environ.get("PYTHONPATH", ""))
    r = subprocess.run([sys.executable, "-c", _EXTREME, kind], capture_output=True, text=True,
                       timeout=60, env=env, cwd=root)
    assert r.returncode == 0 and r.stdout.strip() == "ok", (r.returncode, r.stdout, r.stderr)


@pytest.mark.parametrize("isa", ISAS, indirect=True)
@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("xs,ws,kw", [((1, 64, 7, 7), (70, 64, 3, 3), dict(padding=1)),
                                      ((2, 48, 14, 14), (96, 16, 3, 3), dict(padding=1, groups=3)),
                                      ((1, 32, 15, 15), (40, 32, 3, 3), dict(stride=2, dilation=2))])
def test_prepacked_small_plane_forward(xs, ws, kw, dtype, isa):
    """The channels-last path's prepacked filters (fastconv.compile) give bitwise the
    per-call result, with the fused output stage, for any batch of the same layer."""
    from fastconv import _args as A
    from fastconv.backends.native import conv as nconv
    x, w, b = conv_inputs(xs, ws, dtype)
    st, pd, dl, g = kw.get("stride", 1), kw.get("padding", 0), kw.get("dilation", 1), kw.get("groups", 1)
    spec = A.conv_spec(x.shape, w.shape, st, pd, dl, g)
    packed = nconv.prepack(w, spec, "direct")
    assert packed is not None and packed.dtype == dtype
    res = randn(spec.y_shape, dtype, 4)
    y0 = nconv.conv2d_forward(x, w, b, spec, "direct", residual=res, clamp=(0, 6))
    y1 = nconv.conv2d_forward(x, w, b, spec, "direct", residual=res, clamp=(0, 6), packed=packed)
    np.testing.assert_array_equal(y0, y1)
    assert_close(y0, np.clip(fastconv.conv2d(x, w, b, **kw, backend="reference") + res, 0, 6),
                 dtype, ws[1] * 9, "prepacked direct")
    x3 = randn((3,) + xs[1:], dtype, 6)
    spec3 = A.conv_spec(x3.shape, w.shape, st, pd, dl, g)
    np.testing.assert_array_equal(nconv.conv2d_forward(x3, w, b, spec3, "direct", packed=packed),
                                  nconv.conv2d_forward(x3, w, b, spec3, "direct"))


def test_prepacked_direct_refuses_another_layer_or_isa():
    from fastconv import _args as A, _native
    from fastconv.backends.native import conv as nconv
    x, w, b = conv_inputs((1, 64, 7, 7), (70, 64, 3, 3), np.float32)
    spec = A.conv_spec(x.shape, w.shape, 1, 1, 1, 1)
    packed = nconv.prepack(w, spec, "direct")
    with pytest.raises(ValueError, match="packed"):
        nconv.conv2d_forward(x, w, b, spec, "direct", packed=packed[:-1].copy())
    bad = packed.copy()
    bad[0] = 0
    with pytest.raises(ValueError, match="packed"):
        nconv.conv2d_forward(x, w, b, spec, "direct", packed=bad)
    best = _native.active_isa()
    if best == "generic":
        pytest.skip("only the generic path is compiled: no other ISA to switch to")
    try:
        _native.set_isa("generic")
        with pytest.raises(ValueError, match="packed"):
            nconv.conv2d_forward(x, w, b, spec, "direct", packed=packed)
    finally:
        _native.set_isa(best)
