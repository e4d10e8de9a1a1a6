"""fastconv.signal.correlate2d / convolve2d against scipy.signal (the oracle).

SciPy is called with the same arguments in every test: results, dtypes and shapes must
match (floats to rounding, integers bit for bit), and errors must have SciPy's type and
message. Skipped as a whole when SciPy is not installed.
"""
from __future__ import annotations

import re
import sys
import types
import warnings
import zlib

import numpy as np
import pytest

ss = pytest.importorskip("scipy.signal", reason="scipy (the oracle) not installed")

from fastconv import _native  # noqa: E402
from fastconv import signal as fs  # noqa: E402

FNS = ["correlate2d", "convolve2d"]
MODES = ["full", "same", "valid"]
BOUNDARIES = ["fill", "wrap", "symm"]

# (image shape, kernel shape): odd, even, kernel larger than the image, 1xN, Nx1, 1x1,
# widths around the vector and register-block widths, and valid-mode swaps.
SHAPES = [
    ((7, 9), (3, 4)),
    ((2, 3), (5, 5)),       # kernel larger than the image: wrap/symm repeat
    ((5, 6), (1, 1)),
    ((6, 7), (1, 4)),
    ((6, 7), (4, 1)),
    ((1, 1), (1, 1)),
    ((1, 9), (1, 3)),
    ((8, 8), (8, 8)),
    ((3, 4), (4, 6)),       # valid: in2 contains in1 -> swapped
    ((17, 33), (3, 3)),     # tails of 16-wide vectors
    ((23, 70), (5, 6)),     # several 64-wide register blocks plus a tail
]
SHAPE_IDS = [f"{a[0]}x{a[1]}_k{b[0]}x{b[1]}" for a, b in SHAPES]


def _rng(seed=0):
    return np.random.default_rng(seed)


def _data(shape, dtype, rng, scale=3.0):
    dtype = np.dtype(dtype)
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        lo, hi = max(info.min, -20), min(info.max, 20)
        return rng.integers(lo, hi, shape, endpoint=True).astype(dtype)
    a = rng.standard_normal(shape) * scale
    if dtype.kind == "c":
        a = a + 1j * rng.standard_normal(shape) * scale
    return a.astype(dtype)


def _scipy(fn, *args, **kw):
    return getattr(ss, fn)(*args, **kw)


def _check(actual, expected, in1, in2, fill=0, exact=False, tol=None):
    """Same dtype and shape; floats within rounding of sum |in1| |in2|, ints exact."""
    assert isinstance(actual, np.ndarray)
    assert actual.dtype == expected.dtype, (actual.dtype, expected.dtype)
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    if exact or expected.dtype.kind in "iu":
        np.testing.assert_array_equal(actual, expected)
        return
    if expected.size == 0:
        return
    # Rounding of a k-term sum is ~eps * sqrt(k) * sum |terms|; bound sum |terms|.
    a1 = np.abs(np.asarray(in1)).max(initial=0.0)
    a1 = max(float(a1), float(np.abs(fill)))
    bound = a1 * float(np.abs(np.asarray(in2)).sum()) + 1.0
    if tol is None:
        single = expected.dtype in (np.float32, np.complex64)
        tol = 2e-6 if single else 1e-14
    err = float(np.max(np.abs(actual.astype(np.complex128) - expected.astype(np.complex128))))
    assert err <= tol * np.sqrt(np.asarray(in2).size + 1) * bound, (err, bound)


# --------------------------------------------------------------------------- sweeps


@pytest.mark.parametrize("fn", FNS)
@pytest.mark.parametrize("boundary", BOUNDARIES)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("shapes", SHAPES, ids=SHAPE_IDS)
def test_real_matches_scipy(fn, mode, boundary, shapes):
    rng = _rng(zlib.crc32(repr((fn, mode, boundary, shapes)).encode()))
    for dtype in (np.float32, np.float64):
        a, b = _data(shapes[0], dtype, rng), _data(shapes[1], dtype, rng)
        for fill in (0, 2.5):
            expected = _scipy(fn, a, b, mode, boundary, fill)
            actual = getattr(fs, fn)(a, b, mode, boundary, fill, method="direct")
            _check(actual, expected, a, b, fill)
            # method="auto" must give the same answer whatever it picks.
            _check(getattr(fs, fn)(a, b, mode, boundary, fill), expected, a, b, fill,
                   tol=1e-5 if dtype == np.float32 else 1e-12)


@pytest.mark.parametrize("fn", FNS)
@pytest.mark.parametrize("boundary", BOUNDARIES)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("dtype", [np.complex64, np.complex128])
def test_complex_matches_scipy(dtype, mode, boundary, fn):
    rng = _rng(7)
    for s1, s2 in [((7, 9), (3, 4)), ((2, 3), (5, 5)), ((3, 4), (4, 6)), ((20, 37), (2, 3))]:
        a, b = _data(s1, dtype, rng), _data(s2, dtype, rng)
        fill = 1.5 - 2j
        expected = _scipy(fn, a, b, mode, boundary, fill)
        for method in ("direct", "fft"):
            actual = getattr(fs, fn)(a, b, mode, boundary, fill, method=method)
            tol = None if method == "direct" else (1e-5 if dtype == np.complex64 else 1e-12)
            _check(actual, expected, a, b, fill, tol=tol)


@pytest.mark.torch
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_against_torch_conv2d(dtype):
    """A second, independent oracle: torch's conv2d is a zero-padded correlation."""
    torch = pytest.importorskip("torch", reason="PyTorch (the oracle) not installed")
    F = torch.nn.functional
    rng = _rng(41)
    tol = 5e-6 if dtype == np.float32 else 1e-13
    a = _data((2, 3, 19, 23), dtype, rng)
    for kh, kw in [(3, 3), (4, 7), (1, 5)]:
        b = _data((kh, kw), dtype, rng)
        ta = torch.from_numpy(a.reshape(6, 1, 19, 23))
        tb = torch.from_numpy(np.ascontiguousarray(b)[None, None])
        full = F.conv2d(ta, tb, padding=(kh - 1, kw - 1)).numpy().reshape(2, 3, 18 + kh, 22 + kw)
        valid = F.conv2d(ta, tb).numpy().reshape(2, 3, 20 - kh, 24 - kw)
        _check(fs.correlate2d(a, b, "full"), full, a, b, tol=tol)
        _check(fs.correlate2d(a, b, "valid"), valid, a, b, tol=tol)
        _check(fs.convolve2d(a, b[::-1, ::-1], "valid"), valid, a, b, tol=tol)


def test_correlate_conjugates_in2_only():
    a = np.array([[1 + 2j, 3 - 1j], [0.5j, -2]])
    b = np.array([[2 - 1j]])
    np.testing.assert_allclose(fs.correlate2d(a, b), a * np.conj(b[0, 0]))
    np.testing.assert_allclose(fs.convolve2d(a, b), a * b[0, 0])


INT_DTYPES = [np.int8, np.uint8, np.int16, np.uint16, np.int32, np.uint32, np.int64, np.uint64]


@pytest.mark.parametrize("fn", FNS)
@pytest.mark.parametrize("dtype", INT_DTYPES)
def test_integers_exact_including_overflow(dtype, fn):
    """Full-range values overflow the result type: SciPy wraps, and so must we."""
    rng = _rng(3)
    info = np.iinfo(dtype)
    a = rng.integers(info.min, info.max, (9, 11), dtype=dtype, endpoint=True)
    b = rng.integers(info.min, info.max, (3, 4), dtype=dtype, endpoint=True)
    for mode in MODES:
        for boundary in BOUNDARIES:
            expected = _scipy(fn, a, b, mode, boundary, int(info.max))
            actual = getattr(fs, fn)(a, b, mode, boundary, int(info.max))
            _check(actual, expected, a, b, exact=True)


def test_integer_wraparound_by_hand():
    # 100 * 100 * 4 = 40000 = 64 (mod 256) - 256*... as int8: 40000 mod 256 = 64.
    a = np.full((2, 2), 100, np.int8)
    out = fs.correlate2d(a, a, "valid")
    assert out.dtype == np.int8 and out[0, 0] == np.int8(40000 % 256 - 256 * (40000 % 256 > 127))


PROMOTIONS = [
    (np.int8, np.uint8), (np.int32, np.float32), (np.float32, np.float64),
    (np.complex64, np.float64), (np.int64, np.uint64), (np.float32, np.int8),
    (np.float32, np.complex64), (np.bool_, np.int8), (np.uint8, np.bool_),
    (np.float16, np.float32), (np.int16, np.int16), (np.uint32, np.int32),
    (np.longdouble, np.float32), (np.clongdouble, np.complex64),
]


@pytest.mark.parametrize("fn", FNS)
@pytest.mark.parametrize("d1,d2", PROMOTIONS,
                         ids=[f"{np.dtype(a).name}-{np.dtype(b).name}" for a, b in PROMOTIONS])
def test_dtype_promotion_matches_scipy(d1, d2, fn):
    rng = _rng(5)
    a = (rng.integers(0, 2, (6, 7)) if d1 == np.bool_ else _data((6, 7), d1, rng)).astype(d1)
    b = (rng.integers(0, 2, (3, 2)) if d2 == np.bool_ else _data((3, 2), d2, rng)).astype(d2)
    for boundary in BOUNDARIES:
        expected = _scipy(fn, a, b, "same", boundary, 2)
        actual = getattr(fs, fn)(a, b, "same", boundary, 2)
        _check(actual, expected, a, b, 2)


def test_float32_stays_float32_and_python_lists():
    a = np.ones((4, 4), np.float32)
    assert fs.correlate2d(a, a).dtype == np.float32
    assert fs.convolve2d([[1, 2], [3, 4]], [[1]]).dtype == ss.convolve2d([[1, 2], [3, 4]],
                                                                          [[1]]).dtype
    _check(fs.correlate2d([[1.0, 2], [3, 4]], [[1, 2]]),
           ss.correlate2d([[1.0, 2], [3, 4]], [[1, 2]]), np.ones(1), np.ones(2))


@pytest.mark.parametrize("fn", FNS)
def test_longdouble_path(fn):
    rng = _rng(9)
    for dtype in (np.longdouble, np.clongdouble):
        a, b = _data((6, 5), dtype, rng), _data((3, 4), dtype, rng)
        for mode in MODES:
            for boundary in BOUNDARIES:
                expected = _scipy(fn, a, b, mode, boundary, 1.25)
                actual = getattr(fs, fn)(a, b, mode, boundary, 1.25)
                _check(actual, expected, a, b, 1.25)


@pytest.mark.parametrize("fn", FNS)
def test_non_contiguous_inputs(fn):
    rng = _rng(11)
    base = _data((30, 40), np.float64, rng)
    kbase = _data((8, 10), np.float32, rng)
    cases = [
        (base.T, kbase[::2, ::3]),                    # F-order and strided
        (base[1::3, ::-2], kbase.T[::-1]),            # negative strides
        (np.asfortranarray(base[:9, :13]), kbase[1:4, 2:7]),
    ]
    for a, b in cases:
        for mode in MODES:
            for boundary in BOUNDARIES:
                expected = _scipy(fn, a, b, mode, boundary, -1)
                _check(getattr(fs, fn)(a, b, mode, boundary, -1), expected, a, b, -1)


# --------------------------------------------------------------------------- FFT path


@pytest.mark.parametrize("fn", FNS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_fft_every_mode_and_boundary(dtype, fn):
    rng = _rng(13)
    for s1, s2 in [((40, 33), (9, 12)), ((6, 5), (11, 13)), ((12, 12), (12, 12))]:
        a, b = _data(s1, dtype, rng), _data(s2, dtype, rng)
        for mode in MODES:
            for boundary in BOUNDARIES:
                expected = _scipy(fn, a, b, mode, boundary, 0.75)
                actual = getattr(fs, fn)(a, b, mode, boundary, 0.75, method="fft")
                _check(actual, expected, a, b, 0.75,
                       tol=1e-5 if dtype == np.float32 else 1e-12)


def test_auto_picks_fft_for_large_kernels_only():
    from fastconv._heuristics import pick_correlate_method

    def fft_wins(out_hw, k_shape, dt="float32"):
        return pick_correlate_method("auto", dt, out_hw, k_shape, fs._fast_len) == "fft"

    assert not fft_wins((514, 514), (3, 3))
    assert not fft_wins((522, 522), (11, 11))
    assert fft_wins((542, 542), (31, 31))
    assert not fft_wins((0, 5), (31, 31))
    # Only "auto" and "fft" ever pick the FFT; the default and integers never do.
    assert pick_correlate_method("direct", "float32", (542, 542), (31, 31), fs._fast_len) \
        == "direct"
    assert pick_correlate_method("fft", "float64", (5, 5), (1, 1), fs._fast_len) == "fft"
    assert not fft_wins((542, 542), (31, 31), "int64")
    rng = _rng(17)
    a, b = _data((96, 80), np.float32, rng), _data((41, 41), np.float32, rng)
    assert fft_wins((96 + 40, 80 + 40), b.shape)
    _check(fs.correlate2d(a, b, boundary="symm", method="auto"),
           ss.correlate2d(a, b, boundary="symm"), a, b, tol=1e-5)


def test_fft_refused_for_integers():
    a = np.ones((4, 4), np.int32)
    with pytest.raises(ValueError, match="method='fft'"):
        fs.correlate2d(a, a, method="fft")
    with pytest.raises(ValueError, match="method must be one of"):
        fs.correlate2d(a, a, method="winograd")


# --------------------------------------------------------------------------- kernels


def test_every_compiled_isa_and_thread_count():
    rng = _rng(19)
    # Large enough (> 2**23 multiply-adds) for the kernel to use several threads.
    a, b = _data((150, 1203), np.float32, rng), _data((7, 9), np.float32, rng)
    ai, bi = _data((37, 45), np.int64, rng), _data((5, 7), np.int64, rng)
    expected = ss.correlate2d(a, b, "same", "symm")
    expected_i = ss.correlate2d(ai * 10**12, bi, "full", "wrap")
    isa0, threads0 = _native.active_isa(), _native.num_threads()
    try:
        tested = []
        for isa in re.split(r"[,\s]+", _native.compiled_isas().strip()):
            try:
                _native.set_isa(isa)
            except ValueError:
                continue  # compiled but this CPU lacks it
            tested.append(isa)
            results = []
            for threads in (1, 2, 3):
                _native.set_num_threads(threads)
                results.append(fs.correlate2d(a, b, "same", "symm", method="direct"))
                _check(fs.correlate2d(ai * 10**12, bi, "full", "wrap"), expected_i, ai, bi)
            _check(results[0], expected, a, b)
            # Every output is summed in the same order whatever the thread count.
            for r in results[1:]:
                np.testing.assert_array_equal(r, results[0])
        assert "generic" in tested
    finally:
        _native.set_isa(isa0)
        _native.set_num_threads(threads0)


def test_native_binding_rejects_bad_sizes():
    x = np.ones((1, 4, 4))
    w = np.ones((2, 2))
    with pytest.raises(ValueError, match="boundary"):
        _native.signal_corr2d(x, w, np.empty((1, 5, 5)), (-1, -1), 3, 0.0)
    with pytest.raises(ValueError, match="does not match"):
        _native.signal_corr2d(x, w, np.empty((2, 5, 5)), (-1, -1), 0, 0.0)
    with pytest.raises(ValueError, match="non-empty image"):
        _native.signal_corr2d(np.ones((1, 0, 4)), w, np.empty((1, 3, 5)), (-1, -1), 1, 0.0)
    with pytest.raises(TypeError):  # no silent dtype conversion into a temporary output
        _native.signal_corr2d(x, w, np.empty((1, 5, 5), np.float32), (-1, -1), 0, 0.0)


def test_concurrent_calls_from_python_threads():
    """The kernel releases the GIL and keeps its workspace per call: threads may overlap."""
    from concurrent.futures import ThreadPoolExecutor

    rng = _rng(37)
    jobs = [(_data((64, 80), np.float32, rng), _data((k, k), np.float32, rng), bd)
            for k, bd in [(3, "fill"), (5, "wrap"), (7, "symm"), (4, "fill")] * 2]
    expected = [ss.correlate2d(a, b, "same", bd) for a, b, bd in jobs]
    with ThreadPoolExecutor(4) as pool:
        got = list(pool.map(lambda j: fs.correlate2d(j[0], j[1], "same", j[2]), jobs))
    for (a, b, _), g, e in zip(jobs, got, expected):
        _check(g, e, a, b)


def test_random_shapes_against_scipy():
    """Hypothesis over shapes, modes, boundaries, dtypes and fill values."""
    hyp = pytest.importorskip("hypothesis", reason="hypothesis not installed")
    st = hyp.strategies

    @hyp.settings(max_examples=120, deadline=None, derandomize=True)
    @hyp.given(h=st.integers(1, 12), w=st.integers(1, 40), kh=st.integers(1, 9),
               kw=st.integers(1, 9), mode=st.sampled_from(MODES),
               boundary=st.sampled_from(BOUNDARIES), fn=st.sampled_from(FNS),
               dtype=st.sampled_from([np.float32, np.float64, np.int32, np.complex64]),
               fill=st.integers(-3, 3), seed=st.integers(0, 2**16))
    def check(h, w, kh, kw, mode, boundary, fn, dtype, fill, seed):
        if mode == "valid" and not ((h >= kh and w >= kw) or (h <= kh and w <= kw)):
            return  # the "neither contains the other" error has its own test
        rng = _rng(seed)
        a, b = _data((h, w), dtype, rng), _data((kh, kw), dtype, rng)
        expected = _scipy(fn, a, b, mode, boundary, fill)
        _check(getattr(fs, fn)(a, b, mode, boundary, fill), expected, a, b, fill,
               tol=2e-5 if np.dtype(dtype) in (np.float32, np.complex64) else 1e-12)

    check()


# --------------------------------------------------------------------------- batched


@pytest.mark.parametrize("fn", FNS)
def test_batched_matches_per_image_scipy(fn):
    rng = _rng(23)
    a = _data((2, 3, 11, 13), np.float32, rng)
    for b_shape in [(3, 4), (12, 14)]:          # the second swaps in valid mode
        b = _data(b_shape, np.float32, rng)
        for mode in MODES:
            for boundary in BOUNDARIES:
                out = getattr(fs, fn)(a, b, mode, boundary, 1.0)
                for i in range(2):
                    for j in range(3):
                        _check(out[i, j], _scipy(fn, a[i, j], b, mode, boundary, 1.0),
                               a, b, 1.0)


def test_batched_fft_matches_per_image_scipy():
    rng = _rng(27)
    a = _data((3, 30, 26), np.float64, rng)
    b = _data((9, 11), np.float64, rng)
    for fn in FNS:
        out = getattr(fs, fn)(a, b, "same", "symm", method="fft")
        for i in range(3):
            _check(out[i], _scipy(fn, a[i], b, "same", "symm"), a, b, tol=1e-12)


def test_batched_empty_batch_and_int():
    out = fs.correlate2d(np.ones((0, 5, 6)), np.ones((2, 3)), "same")
    assert out.shape == (0, 5, 6) and out.dtype == np.float64
    a = np.arange(2 * 4 * 5, dtype=np.int16).reshape(2, 4, 5)
    b = np.array([[1, -2], [3, 4]], np.int16)
    out = fs.convolve2d(a, b, boundary="wrap")
    for i in range(2):
        _check(out[i], ss.convolve2d(a[i], b, boundary="wrap"), a, b, exact=True)


@pytest.mark.parametrize("fn", FNS)
def test_batched_needs_2d_kernel(fn):
    with pytest.raises(ValueError, match=f"^{fn} inputs must both be 2-D arrays$"):
        getattr(fs, fn)(np.ones((2, 4, 4)), np.ones((2, 2, 2)))


# --------------------------------------------------------------------------- errors


def _scipy_error(fn, args, kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # SciPy warns before some of its errors
        try:
            _scipy(fn, *args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - whatever SciPy raises is the spec
            return exc
    raise AssertionError(f"scipy accepted {args} {kwargs}")


A = np.ones((3, 4))
B = np.ones((2, 2))
ERROR_CASES = [
    ("mode", (A, B), dict(mode="xx")),
    ("mode_none", (A, B), dict(mode=None)),
    ("mode_unhashable", (A, B), dict(mode=["full"])),
    ("boundary", (A, B), dict(boundary="xx")),
    ("boundary_unhashable", (A, B), dict(boundary=["fill"])),
    ("boundary_reflect", (A, B), dict(boundary="reflect")),
    ("in1_1d", (A[0], B), {}),
    ("in2_1d", (A, B[0]), {}),
    ("in1_0d", (np.float64(1), B), {}),
    ("in2_3d", (A, B[None]), {}),
    ("valid_neither_contains", (np.ones((3, 5)), np.ones((5, 3))), dict(mode="valid")),
    ("bool", (A.astype(bool), B.astype(bool)), {}),
    ("float16", (A.astype(np.float16), B.astype(np.float16)), {}),
    ("float16_int8", (A.astype(np.float16), B.astype(np.int8)), {}),
    ("object", (A.astype(object), B), {}),
    ("datetime", (A.astype("M8[s]"), B.astype("M8[s]")), {}),
    ("strings", (np.array([["a"]]), np.array([["b"]])), {}),
    ("ragged", ([[1, 2], [3]], B), {}),
    ("fill_complex_for_real", (A, B), dict(fillvalue=1 + 1j)),
    ("fill_complex_array", (A, B), dict(fillvalue=np.array(1 + 1j))),
    ("fill_nan_int", (A.astype(int), B.astype(int)), dict(fillvalue=np.nan)),
    ("fill_overflow_int8", (A.astype(np.int8), B.astype(np.int8)), dict(fillvalue=300)),
    ("fill_negative_uint8", (A.astype(np.uint8), B.astype(np.uint8)), dict(fillvalue=-1)),
    ("fill_unsafe_array", (A.astype(np.int8), B.astype(np.int8)), dict(fillvalue=np.array(1.5))),
    ("fill_two_values", (A, B), dict(fillvalue=[1, 2])),
    ("fill_empty", (A, B), dict(fillvalue=[])),
    ("fill_bad_string", (A, B), dict(fillvalue="x")),
    ("negative_dims", (np.ones((0, 3)), np.ones((0, 3))), {}),
    ("bool_and_bad_fill", (A.astype(bool), B.astype(bool)), dict(fillvalue=[1, 2])),
    ("bool_and_bad_boundary", (A.astype(bool), B.astype(bool)), dict(boundary="reflect")),
]


@pytest.mark.parametrize("fn", FNS)
@pytest.mark.parametrize("name,args,kwargs", ERROR_CASES, ids=[c[0] for c in ERROR_CASES])
def test_errors_match_scipy(name, args, kwargs, fn):
    expected = _scipy_error(fn, args, kwargs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(type(expected), match=f"^{re.escape(str(expected))}$"):
            getattr(fs, fn)(*args, **kwargs)


FILL_OK = [1.5, np.float64(np.nan), np.int64(300), [2.5], np.array([[3]]), True, None, "2",
           np.complex128(1 + 1j)]


@pytest.mark.parametrize("fill", FILL_OK, ids=[repr(f) for f in FILL_OK])
@pytest.mark.parametrize("dtype", [np.float64, np.int8, np.float32])
def test_fill_conversion_matches_scipy(fill, dtype):
    a = np.arange(12).reshape(3, 4).astype(dtype)
    b = np.ones((2, 3), dtype)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # NaN -> int and complex -> real warn in both
        try:
            expected = ss.correlate2d(a, b, fillvalue=fill)
        except Exception as exc:  # noqa: BLE001
            with pytest.raises(type(exc), match=f"^{re.escape(str(exc))}$"):
                fs.correlate2d(a, b, fillvalue=fill)
            return
        actual = fs.correlate2d(a, b, fillvalue=fill)
    np.testing.assert_array_equal(actual, expected)
    assert actual.dtype == expected.dtype


def test_fill_ignored_unless_boundary_fill():
    # SciPy does not even convert fillvalue for wrap / symm.
    for boundary in ("wrap", "symm"):
        expected = ss.correlate2d(A, B, boundary=boundary, fillvalue=1 + 1j)
        _check(fs.correlate2d(A, B, boundary=boundary, fillvalue=1 + 1j), expected, A, B)


EMPTY_CASES = [
    ((0, 3), (2, 2), "full", "fill"),
    ((3, 4), (0, 3), "full", "fill"),
    ((3, 4), (2, 0), "full", "wrap"),
    ((0, 3), (0, 3), "valid", "fill"),
    ((3, 4), (0, 3), "valid", "symm"),
    ((0, 3), (2, 2), "same", "wrap"),
    ((0, 3), (0, 3), "same", "fill"),
    ((0, 0), (0, 3), "valid", "fill"),
]


@pytest.mark.parametrize("fn", FNS)
@pytest.mark.parametrize("s1,s2,mode,boundary", EMPTY_CASES)
def test_empty_arrays_match_scipy(s1, s2, mode, boundary, fn):
    a, b = np.full(s1, 2.0), np.full(s2, 3.0)
    expected = _scipy(fn, a, b, mode, boundary, 5)
    _check(getattr(fs, fn)(a, b, mode, boundary, 5), expected, a, b, 5)


@pytest.mark.parametrize("boundary", ["wrap", "symm"])
def test_empty_image_with_periodic_boundary_is_an_error(boundary):
    # SciPy divides by zero (SIGFPE) here, so it cannot be the oracle.
    with pytest.raises(ValueError, match="non-empty in1"):
        fs.correlate2d(np.ones((0, 3)), np.ones((2, 2)), boundary=boundary)


# --------------------------------------------------------------------------- CuPy


class _FakeCupyArray:
    """Stands in for a cupy.ndarray: only its module name matters to the router."""


_FakeCupyArray.__module__ = "cupy._core.core"


def _cuda_backend_loaded(monkeypatch):
    """Makes the dispatcher treat the cuda backend as available (no GPU here), so a CuPy
    array takes the real path: dispatcher -> cuda backend op -> cupyx."""
    import fastconv._dispatch as d
    import fastconv.backends.cuda as cuda_backend

    monkeypatch.setitem(d._loaded, "cuda", cuda_backend)


def test_cupy_arrays_route_to_cupyx(monkeypatch):
    _cuda_backend_loaded(monkeypatch)
    calls = []
    fake = types.ModuleType("cupyx.scipy.signal")
    fake.correlate2d = lambda *a: calls.append(("correlate2d",) + a) or "gpu-result"
    fake.convolve2d = lambda *a: calls.append(("convolve2d",) + a) or "gpu-result"
    pkg, sub = types.ModuleType("cupyx"), types.ModuleType("cupyx.scipy")
    pkg.scipy, sub.signal = sub, fake
    monkeypatch.setitem(sys.modules, "cupyx", pkg)
    monkeypatch.setitem(sys.modules, "cupyx.scipy", sub)
    monkeypatch.setitem(sys.modules, "cupyx.scipy.signal", fake)
    x = _FakeCupyArray()
    assert fs.correlate2d(x, x, "same", "wrap", 3) == "gpu-result"
    assert fs.convolve2d(np.ones((2, 2)), x) == "gpu-result"
    assert [c[0] for c in calls] == ["correlate2d", "convolve2d"]
    assert calls[0][3:] == ("same", "wrap", 3)


def test_cupy_without_cupyx_is_a_clear_error(monkeypatch):
    _cuda_backend_loaded(monkeypatch)
    monkeypatch.setitem(sys.modules, "cupyx", None)  # import cupyx -> ImportError
    with pytest.raises(ImportError, match="cupyx.scipy.signal.correlate2d"):
        fs.correlate2d(_FakeCupyArray(), np.ones((2, 2)))


@pytest.mark.gpu
def test_cupy_on_gpu():
    cp = pytest.importorskip("cupy", reason="CuPy not installed")
    try:
        cp.cuda.runtime.getDeviceCount()
    except Exception as exc:  # noqa: BLE001
        pytest.skip(f"no CUDA device: {exc}")
    a = _data((20, 30), np.float32, _rng(29))
    b = _data((3, 5), np.float32, _rng(31))
    out = fs.correlate2d(cp.asarray(a), cp.asarray(b), "same", "symm")
    assert isinstance(out, cp.ndarray)
    _check(cp.asnumpy(out), ss.correlate2d(a, b, "same", "symm"), a, b, tol=1e-5)


# --------------------------------------------------------------------------- exactness
# With the default arguments the answer is SciPy's direct sum, whatever the kernel size
# (issue: kernels of 64+ taps used to switch to an inexact FFT).


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_impulse_times_ones_is_exactly_zero_outside(dtype):
    a = np.zeros((40, 40), dtype)
    a[20, 20] = 1
    k = np.ones((21, 21), dtype)
    for fn in ("convolve2d", "correlate2d"):
        got = getattr(fs, fn)(a, k)
        exp = _scipy(fn, a, k)
        np.testing.assert_array_equal(got, exp)
        assert np.count_nonzero(got) == 21 * 21
    # The FFT, asked for by name, is the inexact one: documented, not the default.
    fft = fs.convolve2d(a, k, method="fft")
    assert np.count_nonzero(fft) > 21 * 21
    np.testing.assert_allclose(fft, _scipy("convolve2d", a, k), atol=1e-5)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_large_kernels_default_to_the_direct_sum(dtype):
    rng = _rng(41)
    # Integer-valued data: every partial sum is exact, so any summation order gives
    # SciPy's bits and equality can be asserted.
    a = rng.integers(-8, 9, size=(70, 65)).astype(dtype)
    for kh, kw in [(31, 31), (9, 40), (64, 1)]:
        k = rng.integers(-3, 4, size=(kh, kw)).astype(dtype)
        for fn in ("correlate2d", "convolve2d"):
            for mode in ("full", "same", "valid"):
                for boundary in ("fill", "wrap", "symm"):
                    np.testing.assert_array_equal(
                        getattr(fs, fn)(a, k, mode, boundary),
                        _scipy(fn, a, k, mode, boundary))


def test_nan_stays_local_with_the_default_method():
    a = np.zeros((50, 50))
    a[25, 25] = np.nan
    k = np.ones((31, 31))
    for fn in ("correlate2d", "convolve2d"):
        got = getattr(fs, fn)(a, k, "same")
        exp = _scipy(fn, a, k, "same")
        np.testing.assert_array_equal(np.isnan(got), np.isnan(exp))
        assert np.isnan(got).sum() == 31 * 31
    # The documented FFT behaviour: one NaN reaches every output.
    assert np.isnan(fs.correlate2d(a, k, "same", method="fft")).all()


def test_signal_ops_go_through_the_dispatcher_and_match_reference():
    """The native op against the NumPy reference op (same signature, same answers)."""
    from fastconv.backends import reference as ref
    from fastconv.backends.native import signal as nat

    rng = _rng(43)
    for dtype in (np.float64, np.int64):
        x = rng.integers(-5, 6, size=(2, 9, 11)).astype(dtype)
        k = rng.integers(-3, 4, size=(4, 3)).astype(dtype)
        for bnd in (0, 1, 2):
            for off in [(-3, -2), (0, 0), (-1, -1)]:
                a, b = np.empty((2, 8, 10), dtype), np.empty((2, 8, 10), dtype)
                nat.signal_corr2d(x, k, a, off, bnd, dtype(2))
                ref.signal_corr2d(x, k, b, off, bnd, dtype(2))
                np.testing.assert_array_equal(a, b)
                pa, pb = np.empty((2, 12, 14), dtype), np.empty((2, 12, 14), dtype)
                nat.signal_extend2d(x, pa, off, bnd, dtype(2))
                ref.signal_extend2d(x, pb, off, bnd, dtype(2))
                np.testing.assert_array_equal(pa, pb)


def test_extra_memory_is_bounded_on_a_strided_input():
    """SciPy's large-array test in miniature: a strided int64 view convolved with [[1, 1]].
    fastconv's peak must stay within 1.2x SciPy's (tracemalloc sees NumPy's buffers)."""
    import tracemalloc

    n = 3000
    base = np.zeros(1001 * n, dtype=np.int64)
    base[::2] = 1
    a = np.lib.stride_tricks.as_strided(base, shape=(n, 1000), strides=(8008, 8))

    def peak(fn):
        tracemalloc.start()
        out = fn(a, [[1, 1]])
        p = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert np.where(out > 1)[0].size == 0
        return p

    p_fc, p_sp = peak(fs.convolve2d), peak(ss.convolve2d)
    assert p_fc <= 1.2 * p_sp, (p_fc, p_sp)
