"""The ``cuda`` backend on a real GPU: every op and algorithm against the NumPy reference
(host copies) and, where PyTorch has CUDA, against torch on the device.

Marked ``gpu``; skipped with the reason when CuPy or a CUDA device is missing.

``FASTCONV_CUDA_EMULATE=1`` runs this file without a GPU against the host-emulated kernels
(tests/_hostemu.py) with NumPy standing in for CuPy: a check of the tests and
of the launch code, not of the GPU.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import pytest

from conftest import CONV_CASES, CONV_IDS, WINOGRAD_CASES, WINOGRAD_IDS, assert_close, randn

import fastconv
from fastconv.backends import cuda as cuda_backend

pytestmark = pytest.mark.gpu

EMULATED = os.environ.get("FASTCONV_CUDA_EMULATE") == "1"
if EMULATED:
    import _hostemu

    if _hostemu.compiler() is None:
        pytest.skip("FASTCONV_CUDA_EMULATE=1 but no host C++ compiler", allow_module_level=True)
    cupy = _hostemu.install(Path(tempfile.mkdtemp(prefix="fastconv_emu_")))
else:
    _ok, _why = cuda_backend.availability()
    if not _ok:
        pytest.skip(f"cuda backend unavailable: {_why}", allow_module_level=True)

    import cupy  # noqa: E402  (only after the availability check)

try:
    import torch
    import torch.nn.functional as F

    TORCH_CUDA = torch.cuda.is_available()
except ImportError:
    torch = F = None
    TORCH_CUDA = False
_skip_torch = pytest.mark.skipif(not TORCH_CUDA, reason="PyTorch with CUDA not available")


def needs_torch_cuda(fn):
    return pytest.mark.torch(_skip_torch(fn))


if TORCH_CUDA:  # compare float32 with float32, not cuDNN's default TF32
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False

f32 = np.float32
REF = dict(backend="reference")
CONV_ALGOS = ("direct", "implicit_gemm", "im2col")
WINO_ALGOS = ("winograd_f23", "winograd_f43")
# float32 Winograd F(4,3) transforms amplify rounding (constants up to 8 and 1/24).
WINO_SCALE = {"winograd_f23": 4, "winograd_f43": 40}

# Shapes that cross the GEMM tiles (64 and 128) and the 4-vector loads on both sides.
TILE_CASES = [
    ("k130_large_tile", (2, 16, 12, 12), (130, 16, 3, 3), dict(padding=1)),
    ("c129_bwd_large", (1, 129, 16, 9), (64, 129, 1, 1), dict()),
    ("npq_not_mult4", (3, 5, 7, 5), (9, 5, 3, 3), dict(padding=1, stride=2)),
    ("groups3_rect", (2, 9, 10, 11), (6, 3, 2, 3), dict(padding=(1, 0), groups=3)),
]
ALL_CASES = CONV_CASES + TILE_CASES
ALL_IDS = CONV_IDS + [c[0] for c in TILE_CASES]


def dev(a):
    return None if a is None else cupy.asarray(a)


def host(a):
    return None if a is None else cupy.asnumpy(a)


def _terms(w_shape):
    return w_shape[1] * w_shape[2] * w_shape[3]


def _conv_check(x, w, b, kw, algo, scale=1):
    y = fastconv.conv2d(dev(x), dev(w), dev(b), **kw, algo=algo)
    assert isinstance(y, cupy.ndarray) and y.dtype == f32
    yr = fastconv.conv2d(x, w, b, **kw, **REF)
    assert_close(host(y), yr, f32, terms=_terms(w.shape) * scale, what=f"{algo} forward")
    gy = randn(yr.shape, f32, 7)
    gx, gw, gb = fastconv.conv2d_backward(dev(gy), dev(x), dev(w), **kw, algo=algo)
    gxr, gwr, gbr = fastconv.conv2d_backward(gy, x, w, **kw, **REF)
    terms_x = w.shape[0] // kw.get("groups", 1) * w.shape[2] * w.shape[3]
    terms_w = max(1, yr.size // max(yr.shape[1], 1))
    assert_close(host(gx), gxr, f32, terms=terms_x * scale, what=f"{algo} grad_x")
    assert_close(host(gw), gwr, f32, terms=terms_w, what=f"{algo} grad_w")
    assert_close(host(gb), gbr, f32, terms=terms_w, what=f"{algo} grad_b")


@pytest.mark.parametrize("algo", CONV_ALGOS)
@pytest.mark.parametrize("name,xs,ws,kw", ALL_CASES, ids=ALL_IDS)
def test_conv_vs_reference(name, xs, ws, kw, algo):
    x, w, b = randn(xs, f32, 1), randn(ws, f32, 2), randn((ws[0],), f32, 3)
    _conv_check(x, w, b, kw, algo)


@pytest.mark.parametrize("algo", WINO_ALGOS)
@pytest.mark.parametrize("name,xs,ws,kw", WINOGRAD_CASES, ids=WINOGRAD_IDS)
def test_winograd_vs_reference(name, xs, ws, kw, algo):
    x, w, b = randn(xs, f32, 1), randn(ws, f32, 2), randn((ws[0],), f32, 3)
    _conv_check(x, w, b, kw, algo, scale=WINO_SCALE[algo])


def test_winograd_large_padding_backward():
    # padding 3 > R-1 makes the backward-data Winograd padding negative.
    x, w = randn((1, 3, 6, 7), f32, 1), randn((4, 3, 3, 3), f32, 2)
    for algo in WINO_ALGOS:
        _conv_check(x, w, None, dict(padding=3), algo, scale=WINO_SCALE[algo])


def test_conv_no_bias_and_algo_errors():
    x, w = randn((2, 3, 8, 8), f32), randn((4, 3, 3, 3), f32, 1)
    for algo in CONV_ALGOS:
        y = fastconv.conv2d(dev(x), dev(w), None, padding=1, algo=algo)
        assert_close(host(y), fastconv.conv2d(x, w, padding=1, **REF), f32, terms=27)
    with pytest.raises(ValueError, match="stride"):
        fastconv.conv2d(dev(x), dev(w), stride=2, algo="winograd_f43")
    with pytest.raises(TypeError, match="float32"):
        fastconv.conv2d(dev(x).astype(np.float64), dev(w).astype(np.float64))


@needs_torch_cuda
@pytest.mark.parametrize("algo", CONV_ALGOS + WINO_ALGOS)
def test_conv_vs_torch_cuda(algo):
    x, w, b = randn((4, 32, 15, 13), f32, 1), randn((48, 32, 3, 3), f32, 2), randn((48,), f32)
    y = fastconv.conv2d(dev(x), dev(w), dev(b), padding=1, algo=algo)
    yt = F.conv2d(torch.from_numpy(x).cuda(), torch.from_numpy(w).cuda(),
                  torch.from_numpy(b).cuda(), padding=1)
    scale = WINO_SCALE.get(algo, 1)
    assert_close(host(y), yt.cpu().numpy(), f32, terms=32 * 9 * scale, what=algo)


def test_large_batch_chunks_workspace(monkeypatch):
    """im2col and Winograd split big batches into image chunks; force tiny chunks."""
    from fastconv.backends.cuda import _runtime

    monkeypatch.setattr(_runtime, "WORKSPACE_ELEMS", 3000)
    x, w, b = randn((5, 4, 9, 9), f32, 1), randn((6, 4, 3, 3), f32, 2), randn((6,), f32)
    for algo in ("im2col", "winograd_f23", "winograd_f43"):
        _conv_check(x, w, b, dict(padding=1), algo, scale=WINO_SCALE.get(algo, 1))


def test_runs_on_current_stream():
    x, w = randn((2, 8, 10, 10), f32), randn((8, 8, 3, 3), f32, 1)
    s = cupy.cuda.Stream(non_blocking=True)
    with s:
        outs = {a: fastconv.conv2d(dev(x), dev(w), padding=1, algo=a)
                for a in CONV_ALGOS + WINO_ALGOS}
        y = fastconv.max_pool2d(outs["direct"], 2)
    s.synchronize()
    ref = fastconv.conv2d(x, w, padding=1, **REF)
    for a, o in outs.items():
        assert_close(host(o), ref, f32, terms=72 * WINO_SCALE.get(a, 1), what=a)
    assert_close(host(y), fastconv.max_pool2d(ref, 2, **REF), f32)


# ----------------------------------------------------------------------------- pooling

POOL_CASES = [
    dict(kernel_size=2),
    dict(kernel_size=3, stride=2, padding=1),
    dict(kernel_size=3, stride=2, ceil_mode=True),
    dict(kernel_size=(3, 2), stride=(2, 1), padding=(1, 0), dilation=(2, 1)),
    dict(kernel_size=5, stride=1, padding=2),
]


@pytest.mark.parametrize("kw", POOL_CASES)
def test_max_pool(kw):
    x = randn((2, 3, 11, 10), f32)
    x[0, 1, 2, 3] = np.nan
    y, idx = fastconv.max_pool2d(dev(x), **kw, return_indices=True)
    yr, ir = fastconv.max_pool2d(x, **kw, return_indices=True, **REF)
    np.testing.assert_array_equal(host(y), yr)
    np.testing.assert_array_equal(host(idx), ir)
    gy = randn(yr.shape, f32, 5)
    gx = fastconv.max_pool2d_backward(dev(gy), idx, x.shape)
    assert_close(host(gx), fastconv.max_pool2d_backward(gy, ir, x.shape, **REF), f32, terms=9)


AVG_CASES = [
    dict(kernel_size=2),
    dict(kernel_size=3, stride=2, padding=1),
    dict(kernel_size=3, stride=2, padding=1, count_include_pad=False),
    dict(kernel_size=3, stride=2, padding=1, ceil_mode=True),
    dict(kernel_size=(2, 3), stride=(1, 2), padding=(1, 1), divisor_override=5),
]


@pytest.mark.parametrize("kw", AVG_CASES)
def test_avg_pool(kw):
    x = randn((2, 3, 9, 12), f32)
    y = fastconv.avg_pool2d(dev(x), **kw)
    yr = fastconv.avg_pool2d(x, **kw, **REF)
    assert_close(host(y), yr, f32, terms=9)
    gy = randn(yr.shape, f32, 5)
    gx = fastconv.avg_pool2d_backward(dev(gy), x.shape, **kw)
    assert_close(host(gx), fastconv.avg_pool2d_backward(gy, x.shape, **kw, **REF), f32, terms=9)


@pytest.mark.parametrize("out", [1, (3, 4), (7, 5), (12, 13)])
def test_adaptive_avg_pool(out):
    x = randn((2, 3, 7, 10), f32)
    y = fastconv.adaptive_avg_pool2d(dev(x), out)
    yr = fastconv.adaptive_avg_pool2d(x, out, **REF)
    assert_close(host(y), yr, f32, terms=70)
    gy = randn(yr.shape, f32, 5)
    gx = fastconv.adaptive_avg_pool2d_backward(dev(gy), x.shape)
    assert_close(host(gx), fastconv.adaptive_avg_pool2d_backward(gy, x.shape, **REF), f32,
                 terms=9)


@needs_torch_cuda
def test_pool_vs_torch_cuda():
    x = randn((4, 8, 33, 31), f32)
    xt = torch.from_numpy(x).cuda()
    y, idx = fastconv.max_pool2d(dev(x), 3, 2, 1, ceil_mode=True, return_indices=True)
    yt, it = F.max_pool2d(xt, 3, 2, 1, ceil_mode=True, return_indices=True)
    np.testing.assert_array_equal(host(y), yt.cpu().numpy())
    np.testing.assert_array_equal(host(idx), it.cpu().numpy())
    a = fastconv.avg_pool2d(dev(x), 3, 2, 1, count_include_pad=False)
    assert_close(host(a), F.avg_pool2d(xt, 3, 2, 1, count_include_pad=False).cpu().numpy(), f32)


# ----------------------------------------------------------------------------- batch norm


@pytest.mark.parametrize("shape", [(4, 3, 5, 7), (2, 16, 8, 8), (3, 5), (1, 2, 1, 3),
                                   (64, 4, 33, 17)])
def test_batch_norm_train_and_backward(shape):
    x = randn(shape, f32) * 3 + 5  # a large mean tests the two-pass variance
    C = shape[1]
    w, b = randn((C,), f32, 1), randn((C,), f32, 2)
    rm, rv = np.zeros(C, f32), np.ones(C, f32)
    rmd, rvd = dev(rm), dev(rv)
    y, mean, invstd = fastconv.batch_norm(dev(x), rmd, rvd, dev(w), dev(b), training=True,
                                          return_stats=True)
    yr, meanr, invr = fastconv.batch_norm(x, rm, rv, w, b, training=True, return_stats=True,
                                          **REF)
    m = x.size // C
    assert_close(host(y), yr, f32, terms=m)
    assert_close(host(mean), meanr, f32, terms=m)
    assert_close(host(invstd), invr, f32, terms=m)
    assert_close(host(rmd), rm, f32, terms=m)
    assert_close(host(rvd), rv, f32, terms=m)
    gy = randn(shape, f32, 9)
    for training in (True, False):
        g = fastconv.batch_norm_backward(dev(gy), dev(x), dev(w), mean, invstd, training)
        gr = fastconv.batch_norm_backward(gy, x, w, meanr, invr, training, **REF)
        for a, e, what in zip(g, gr, ("gx", "gw", "gb")):
            assert_close(host(a), e, f32, terms=m, what=f"{what} training={training}")


def test_batch_norm_eval():
    x = randn((3, 6, 5, 4), f32)
    rm, rv = randn((6,), f32, 1), np.abs(randn((6,), f32, 2)) + 0.5
    w, b = randn((6,), f32, 3), randn((6,), f32, 4)
    y = fastconv.batch_norm(dev(x), dev(rm), dev(rv), dev(w), dev(b), training=False)
    assert_close(host(y), fastconv.batch_norm(x, rm, rv, w, b, training=False, **REF), f32)


@needs_torch_cuda
def test_batch_norm_vs_torch_cuda():
    x = randn((8, 16, 14, 14), f32)
    rm, rv = np.zeros(16, f32), np.ones(16, f32)
    y = fastconv.batch_norm(dev(x), dev(rm), dev(rv), training=True)
    yt = F.batch_norm(torch.from_numpy(x).cuda(), torch.zeros(16).cuda(),
                      torch.ones(16).cuda(), training=True)
    assert_close(host(y), yt.cpu().numpy(), f32, terms=8 * 196)


# ----------------------------------------------------------------------------- the rest


@pytest.mark.parametrize("shape", [(7,), (2, 3, 5, 5), (4, 16)])
def test_relu(shape):
    x = randn(shape, f32)
    x.flat[0] = np.nan
    y = fastconv.relu(dev(x))
    np.testing.assert_array_equal(host(y), fastconv.relu(x, backend="reference"))
    gy = randn(shape, f32, 1)
    np.testing.assert_array_equal(host(fastconv.relu_backward(dev(gy), y)),
                                  fastconv.relu_backward(gy, host(y), backend="reference"))
    # An unaligned view (offset by one float) takes the scalar path.
    flat = dev(randn((33,), f32))[1:]
    np.testing.assert_array_equal(host(fastconv.relu(flat)), np.maximum(host(flat), 0))


def test_linear_and_cross_entropy():
    x, w, b = randn((5, 7), f32), randn((3, 7), f32, 1), randn((3,), f32, 2)
    assert_close(host(fastconv.linear(dev(x), dev(w), dev(b))),
                 fastconv.linear(x, w, b, **REF), f32, terms=7)
    gy = randn((5, 3), f32, 3)
    for a, e in zip(fastconv.linear_backward(dev(gy), dev(x), dev(w)),
                    fastconv.linear_backward(gy, x, w, **REF)):
        assert_close(host(a), e, f32, terms=7)
    t = np.array([0, 2, 1, 1, 0])
    loss = fastconv.cross_entropy(dev(w @ x.T).T.copy(), dev(t))
    assert isinstance(loss, float)
    assert abs(loss - fastconv.cross_entropy((w @ x.T).T.copy(), t, **REF)) < 1e-5
    g = fastconv.cross_entropy_backward(dev(x[:, :3].copy()), dev(t))
    assert_close(host(g), fastconv.cross_entropy_backward(x[:, :3].copy(), t, **REF), f32)


def test_zero_batch():
    x, w = np.zeros((0, 3, 8, 8), f32), randn((4, 3, 3, 3), f32)
    for algo in CONV_ALGOS + WINO_ALGOS:
        y = fastconv.conv2d(dev(x), dev(w), padding=1, algo=algo)
        assert y.shape == (0, 4, 8, 8)
        gx, gw, _ = fastconv.conv2d_backward(dev(np.zeros((0, 4, 8, 8), f32)), dev(x), dev(w),
                                             padding=1, algo=algo)
        assert gx.shape == x.shape and not host(gw).any()
