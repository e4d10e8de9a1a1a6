"""sgemm / dgemm (csrc/cpu/gemm) against NumPy's matmul (float64 products as the oracle)."""
from __future__ import annotations

import numpy as np
import pytest

from fastconv import _native

from conftest import rng

ISAS = [i for i in ("generic", "avx2", "avx512") if i in _native.compiled_isas()]
GEMM = {np.float32: _native.sgemm, np.float64: _native.dgemm}
# Awkward sizes: 1, primes, just under/over the micro-tiles (14x32, 6x16, 6x8), and k
# long enough to cross the KC blocks.
SHAPES = [(1, 1, 1), (1, 37, 5), (29, 1, 3), (13, 17, 19), (14, 32, 7), (15, 33, 401),
          (6, 16, 1), (97, 61, 257), (131, 70, 800), (3, 1000, 2)]


def _supported(isa):
    try:
        _native.set_isa(isa)
        return True
    except ValueError:
        return False


@pytest.fixture
def restore_isa():
    best = _native.active_isa()
    yield
    _native.set_isa(best)
    _native.set_num_threads(0)


def _ref(a, b, c, ta, tb, alpha, beta):
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    return alpha * ((a64.T if ta else a64) @ (b64.T if tb else b64)) + beta * c.astype(np.float64)


def _tol(dtype, k):
    return (2e-6 if dtype == np.float32 else 1e-14) * np.sqrt(k) * 4


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("M,N,K", SHAPES)
def test_gemm_matches_numpy(isa, dtype, M, N, K, restore_isa):
    if not _supported(isa):
        pytest.skip(f"this CPU cannot run the {isa} path")
    r = rng(M * 1000 + N * 10 + K)
    for ta, tb, alpha, beta in ((False, False, 1.0, 0.0), (True, False, 0.5, 2.0),
                                (False, True, -1.5, 1.0), (True, True, 2.0, -0.5)):
        a = r.standard_normal((K, M) if ta else (M, K)).astype(dtype)
        b = r.standard_normal((N, K) if tb else (K, N)).astype(dtype)
        c = r.standard_normal((M, N)).astype(dtype)
        want = _ref(a, b, c, ta, tb, alpha, beta)
        GEMM[dtype](a, b, c, ta, tb, alpha, beta)
        err = np.max(np.abs(c - want)) / max(1.0, np.max(np.abs(want)))
        assert err <= _tol(dtype, K), (ta, tb, alpha, beta, err)


def test_beta_zero_ignores_nan_in_c(restore_isa):
    a = np.ones((20, 9), np.float32)
    b = np.ones((9, 40), np.float32)
    c = np.full((20, 40), np.nan, np.float32)
    _native.sgemm(a, b, c)
    np.testing.assert_array_equal(c, np.full((20, 40), 9.0, np.float32))


def test_k_zero_scales_c():
    a = np.ones((5, 0), np.float64)
    b = np.ones((0, 7), np.float64)
    c = np.full((5, 7), 3.0)
    _native.dgemm(a, b, c, False, False, 1.0, 2.0)
    np.testing.assert_array_equal(c, np.full((5, 7), 6.0))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("M,N,K", [(300, 200, 150), (40, 900, 70), (900, 20, 60),
                                    (30, 40, 9000), (400, 150, 700), (2200, 2080, 100)])
def test_threads_give_identical_results(dtype, M, N, K, restore_isa):
    """Every split follows the micro-tile grid and fixed k chunks: bitwise equal.

    The last two shapes take the row split off the stationary path: several KC blocks,
    several row blocks per thread and (2200, 2080) a last NC block of one or two panels.
    """
    r = rng(7)
    a = r.standard_normal((M, K)).astype(dtype)
    b = r.standard_normal((K, N)).astype(dtype)
    out = []
    for nt in (1, 2):
        _native.set_num_threads(nt)
        c = np.zeros((M, N), dtype)
        GEMM[dtype](a, b, c)
        out.append(c)
    np.testing.assert_array_equal(out[0], out[1])
    want = a.astype(np.float64) @ b.astype(np.float64)
    assert np.max(np.abs(out[0] - want)) / np.max(np.abs(want)) <= _tol(dtype, K)


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("M,N,K", [(133, 600, 900), (75, 530, 397)])
def test_in_place_a_equals_packed_a(isa, dtype, M, N, K, restore_isa):
    """A product this narrow reads A in place (gemm_driver.h kInPlaceCols), a wider one
    packs it: a column slice, in place, must equal the same columns of the packed product
    bitwise (the same sums in the same order), ragged row panels included."""
    if not _supported(isa):
        pytest.skip(f"this CPU cannot run the {isa} path")
    _native.set_num_threads(1)
    r = rng(M + N + K)
    a = r.standard_normal((M, K)).astype(dtype)
    b = r.standard_normal((K, N)).astype(dtype)
    wide = np.zeros((M, N), dtype)
    GEMM[dtype](a, b, wide)
    narrow = np.zeros((M, 40), dtype)
    GEMM[dtype](a, np.ascontiguousarray(b[:, :40]), narrow)
    np.testing.assert_array_equal(narrow, wide[:, :40])
    want = a.astype(np.float64) @ b.astype(np.float64)
    assert np.max(np.abs(wide - want)) / np.max(np.abs(want)) <= _tol(dtype, K)


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n_ragged", [1, 5, 8])
def test_half_width_last_panel(isa, dtype, n_ragged, restore_isa):
    """A last column panel of at most one vector runs a half-width kernel (a 7 x 7
    image's 49th column): its columns must equal those of a product whose last panel is
    full, bitwise."""
    if not _supported(isa):
        pytest.skip(f"this CPU cannot run the {isa} path")
    _native.set_num_threads(1)
    r = rng(n_ragged)
    M, K = 50, 300
    a = r.standard_normal((M, K)).astype(dtype)
    b = r.standard_normal((K, 64)).astype(dtype)
    full = np.zeros((M, 64), dtype)
    GEMM[dtype](a, b, full)
    n = 48 + n_ragged
    part = np.zeros((M, n), dtype)
    GEMM[dtype](a, np.ascontiguousarray(b[:, :n]), part)
    np.testing.assert_array_equal(part, full[:, :n])


def test_shape_mismatch_raises():
    with pytest.raises(ValueError, match="inner dimensions"):
        _native.sgemm(np.ones((3, 4), np.float32), np.ones((5, 6), np.float32),
                      np.ones((3, 6), np.float32))
    with pytest.raises(ValueError, match="c has shape"):
        _native.sgemm(np.ones((3, 4), np.float32), np.ones((4, 6), np.float32),
                      np.ones((3, 5), np.float32))
