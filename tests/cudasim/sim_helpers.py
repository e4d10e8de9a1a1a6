"""Inputs and the float32 comparison shared by the simulator tests (numba_cuda backend)."""
from __future__ import annotations

import numpy as np

B = "numba_cuda"
F32 = np.float32


def rnd(shape, seed):
    return np.random.default_rng(seed).standard_normal(shape).astype(F32)


def close(actual, expected, terms=1, what=""):
    assert isinstance(actual, np.ndarray), f"{what}: NumPy in must give NumPy out"
    assert actual.shape == expected.shape and actual.dtype == F32, what
    scale = max(1.0, float(np.abs(expected).max())) if expected.size else 1.0
    err = float(np.abs(actual.astype(np.float64) - expected).max()) if expected.size else 0.0
    assert err <= 3e-6 * np.sqrt(terms) * scale, f"{what}: error {err:.3g}"
