"""pytest-benchmark versions of bench/conv_cpu.py (a couple of ResNet-18 shapes, quick).

Run: ``PYTHONPATH=. pytest bench/test_conv_cpu_bench.py --benchmark-only``. Every
contender is validated against PyTorch (or the NumPy reference) before it is timed.
"""
from __future__ import annotations

import numpy as np
import pytest

import fastconv as fc
from fastconv import _native
from fastconv.backends.native import ALGOS

try:
    import torch
    import torch.nn.functional as F
except ImportError:  # torch is only the comparison
    torch = F = None

SHAPES = [  # (id, batch, C, H, K, R, stride, padding)
    ("3x3s1_128@28", 4, 128, 28, 128, 3, 1, 1),
    ("1x1s2_256@28", 4, 256, 28, 512, 1, 2, 0),
]
NATIVE = [a for a in ("direct", "im2col") if a in ALGOS["conv2d_forward"]]


def _problem(batch, C, H, K, R, stride, pad):
    r = np.random.default_rng(0)
    x = r.standard_normal((batch, C, H, H), dtype=np.float32)
    w = (r.standard_normal((K, C, R, R), dtype=np.float32) / np.sqrt(C * R * R)).astype(np.float32)
    return x, w, dict(stride=stride, padding=pad)


@pytest.fixture(autouse=True)
def _two_threads():
    fc.set_num_threads(2)
    if torch is not None:
        torch.set_num_threads(2)
    yield
    fc.set_num_threads(0)


@pytest.mark.parametrize("impl", NATIVE + ["torch"])
@pytest.mark.parametrize("shape", SHAPES, ids=[s[0] for s in SHAPES])
def test_forward(benchmark, shape, impl):
    x, w, kw = _problem(*shape[1:])
    if impl == "torch":
        if torch is None:
            pytest.skip("PyTorch not installed")
        tx, tw = torch.from_numpy(x), torch.from_numpy(w)
        fn = lambda: F.conv2d(tx, tw, **kw).numpy()  # noqa: E731
    else:
        fn = lambda: fc.conv2d(x, w, algo=impl, **kw)  # noqa: E731
    want = fc.conv2d(x[:1], w, backend="reference", **kw)
    np.testing.assert_allclose(fn()[:1], want, rtol=1e-3, atol=1e-3)
    benchmark.pedantic(fn, rounds=5, warmup_rounds=1)


@pytest.mark.parametrize("impl", ["im2col", "torch"])
@pytest.mark.parametrize("shape", SHAPES, ids=[s[0] for s in SHAPES])
def test_backward(benchmark, shape, impl):
    x, w, kw = _problem(*shape[1:])
    gy = np.random.default_rng(1).standard_normal(
        fc.conv2d(x, w, algo="im2col", **kw).shape, dtype=np.float32)
    if impl == "torch":
        if torch is None:
            pytest.skip("PyTorch not installed")
        st, pad = kw["stride"], kw["padding"]
        tx, tw, tg = torch.from_numpy(x), torch.from_numpy(w), torch.from_numpy(gy)

        def fn():
            gx, gw, _ = torch.ops.aten.convolution_backward(
                tg, tx, tw, None, [st, st], [pad, pad], [1, 1], False, [0, 0], 1,
                [True, True, False])
            return gx.numpy(), gw.numpy()
    else:
        def fn():
            return fc.conv2d_backward(gy, x, w, need_bias_grad=False, algo=impl, **kw)[:2]
    gx, gw = fn()
    rgx, rgw, _ = fc.conv2d_backward(gy, x, w, need_bias_grad=False, backend="reference", **kw)
    np.testing.assert_allclose(gx, rgx, rtol=1e-3, atol=1e-3)
    np.testing.assert_allclose(gw, rgw, rtol=1e-3, atol=2e-3 * np.abs(rgw).max())
    benchmark.pedantic(fn, rounds=5, warmup_rounds=1)


@pytest.mark.parametrize("impl", ["ours", "numpy"])
def test_sgemm_1024(benchmark, impl):
    r = np.random.default_rng(2)
    a = r.standard_normal((1024, 1024), dtype=np.float32)
    b = r.standard_normal((1024, 1024), dtype=np.float32)
    c = np.empty((1024, 1024), np.float32)
    fn = (lambda: _native.sgemm(a, b, c)) if impl == "ours" else (lambda: a @ b)  # noqa: E731
    _native.sgemm(a, b, c)
    np.testing.assert_allclose(c, a.astype(np.float64) @ b, rtol=1e-3, atol=1e-3)
    benchmark.pedantic(fn, rounds=5, warmup_rounds=1)
