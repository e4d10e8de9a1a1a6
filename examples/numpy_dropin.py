"""fastconv as a drop-in for NumPy code: convolution, pooling and SciPy's correlate2d on
plain arrays, no framework.

    python examples/numpy_dropin.py            # 224x224 image, 64 filters
    python examples/numpy_dropin.py --small    # a quick run (the tests use it)

Each result is checked against a plain NumPy / SciPy computation of the same thing.
"""
from __future__ import annotations

import argparse
import time

import numpy as np

import fastconv as fc


def naive_conv2d(x, w, padding):
    """Cross-correlation as torch.nn.functional.conv2d defines it, in float64 NumPy."""
    n, c, h, wd = x.shape
    o, _, kh, kw = w.shape
    xp = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    oh, ow = h + 2 * padding - kh + 1, wd + 2 * padding - kw + 1
    out = np.zeros((n, o, oh, ow))
    for i in range(kh):
        for j in range(kw):
            patch = xp[:, :, i:i + oh, j:j + ow]                     # (n, c, oh, ow)
            out += np.einsum("nchw,oc->nohw", patch, w[:, :, i, j].astype(np.float64))
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--small", action="store_true", help="small sizes (seconds)")
    args = p.parse_args(argv)
    size, filters = (24, 4) if args.small else (224, 64)
    rng = np.random.default_rng(0)

    # 1. A batch of RGB images through a 3x3 convolution, as torch's conv2d would do it.
    x = rng.standard_normal((2, 3, size, size)).astype(np.float32)
    w = rng.standard_normal((filters, 3, 3, 3)).astype(np.float32)
    b = rng.standard_normal(filters).astype(np.float32)
    t = time.perf_counter()
    y = fc.conv2d(x, w, b, padding=1)
    ms = 1e3 * (time.perf_counter() - t)
    ref = naive_conv2d(x, w, 1) + b[None, :, None, None]
    err = float(np.max(np.abs(y - ref)))
    print(f"conv2d {x.shape} * {w.shape} -> {y.shape} in {ms:.1f} ms; max |error| vs NumPy "
          f"{err:.2e}")
    assert y.shape == (2, filters, size, size) and err < 1e-3

    # 2. Max pooling with the indices (flat h*W+w per plane, as PyTorch returns them).
    pooled, idx = fc.max_pool2d(y, 2, return_indices=True)
    ref_pool = y.reshape(2, filters, size // 2, 2, size // 2, 2).max(axis=(3, 5))
    assert np.array_equal(pooled, ref_pool)
    print(f"max_pool2d -> {pooled.shape}, indices {idx.dtype}")

    # 3. scipy.signal.correlate2d's signature and results.
    img = rng.standard_normal((size, size))
    ker = rng.standard_normal((5, 5))
    out = fc.signal.correlate2d(img, ker, mode="same", boundary="symm")
    try:
        from scipy import signal

        ref2 = signal.correlate2d(img, ker, mode="same", boundary="symm")
        print(f"signal.correlate2d(mode='same', boundary='symm') -> {out.shape}; max |error| "
              f"vs SciPy {np.max(np.abs(out - ref2)):.2e}")
        assert np.allclose(out, ref2, atol=1e-9)
    except ImportError:
        print(f"signal.correlate2d -> {out.shape} (SciPy not installed to compare)")
    print("ok")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
