"""fastconv.ndimage against scipy.ndimage (the oracle): every mode, origin and dtype,
kernels larger than the image, 1xN kernels, output arrays, SciPy's errors, NaN
locality, and the native passes against the NumPy reference backend."""
from __future__ import annotations

import itertools
import warnings

import numpy as np
import pytest

ndi = pytest.importorskip("scipy.ndimage")

import fastconv.ndimage as fn  # noqa: E402
from fastconv.backends import reference as ref  # noqa: E402
from fastconv.backends.native import ndimage as nat  # noqa: E402

MODES = ("reflect", "constant", "nearest", "mirror", "wrap", "grid-wrap", "grid-constant",
         "grid-mirror")
INT_DTYPES = (np.uint8, np.int8, np.int16, np.uint16, np.int32, np.int64)


def _data(shape, dtype, rng):
    dt = np.dtype(dtype)
    if dt.kind == "b":
        return rng.random(shape) > 0.5
    if dt.kind in "iu":
        info = np.iinfo(dt)
        lo, hi = max(info.min, -100), min(info.max, 100)
        return rng.integers(lo, hi + 1, size=shape).astype(dt)
    return (rng.standard_normal(shape) * 3).astype(dt)


def _same(actual, expected, *, f32=False):
    assert actual.dtype == expected.dtype, (actual.dtype, expected.dtype)
    assert actual.shape == expected.shape
    if f32:
        # float32 is summed in float32 here, in float64 by SciPy (module docstring).
        scale = max(1.0, float(np.nanmax(np.abs(expected.astype(np.float64)), initial=0)))
        np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=2e-6 * scale)
    elif actual.dtype.kind == "b":  # SciPy leaves raw bytes in bool outputs
        np.testing.assert_array_equal(actual.view(np.uint8), expected.view(np.uint8))
    else:
        np.testing.assert_array_equal(actual, expected)


def _is_f32(x, out_dtype=None):
    return np.dtype(x.dtype) == np.float32 and np.dtype(out_dtype or x.dtype) == np.float32


# --------------------------------------------------------------------------- correlate1d


@pytest.mark.parametrize("mode", MODES)
def test_correlate1d_modes_origins_weights(mode):
    rng = np.random.default_rng(1)
    weights = {
        "sym": [1.0, 2.0, 3.0, 2.0, 1.0], "anti": [-1.0, 0.5, 0.0, -0.5, 1.0],
        "general": [0.3, -1.2, 2.5], "even": [1.0, -2.0, 0.5, 4.0], "one": [2.5],
        "long": list(rng.standard_normal(9)),
    }
    for (wname, w), shape, axis in itertools.product(
            weights.items(), [(7, 9), (3, 2), (1, 5), (5, 1)], (0, 1, -1)):
        L = len(w)
        for origin in range(-(L // 2), (L - 1) // 2 + 1):
            for dtype in (np.float64, np.float32, np.uint8, np.int16):
                x = _data(shape, dtype, rng)
                exp = ndi.correlate1d(x, w, axis, mode=mode, cval=1.5, origin=origin)
                got = fn.correlate1d(x, w, axis, mode=mode, cval=1.5, origin=origin)
                _same(got, exp, f32=_is_f32(x))
                exp = ndi.convolve1d(x, w, axis, mode=mode, cval=-2.0, origin=origin)
                got = fn.convolve1d(x, w, axis, mode=mode, cval=-2.0, origin=origin)
                _same(got, exp, f32=_is_f32(x))


def test_correlate1d_kernel_longer_than_axis_and_stacks():
    rng = np.random.default_rng(2)
    w = rng.standard_normal(23)
    for mode in MODES:
        for shape in [(4, 3), (2, 3, 5), (1,), (6,)]:
            x = _data(shape, np.float64, rng)
            for axis in range(len(shape)):
                _same(fn.correlate1d(x, w, axis, mode=mode),
                      ndi.correlate1d(x, w, axis, mode=mode))


@pytest.mark.parametrize("dtype", INT_DTYPES + (np.bool_,))
def test_integer_outputs_truncate_and_wrap_as_scipy(dtype):
    rng = np.random.default_rng(3)
    x = _data((9, 11), dtype, rng)
    for w in ([-1.0, 0.0, 1.0], [0.3, -1.7, 0.9], [1 / 3, 1 / 3, 1 / 3]):
        for mode in ("reflect", "constant"):
            _same(fn.correlate1d(x, w, 0, mode=mode, cval=-3.7),
                  ndi.correlate1d(x, w, 0, mode=mode, cval=-3.7))
            _same(fn.correlate1d(x, w, 1, mode=mode), ndi.correlate1d(x, w, 1, mode=mode))
    # uint8 Sobel is the classic wrap-around: -3 becomes 253 in both.
    _same(fn.sobel(x), ndi.sobel(x))


def test_output_dtype_array_and_in_place():
    rng = np.random.default_rng(4)
    x = _data((8, 10), np.float64, rng)
    for out in (np.float32, "float32", np.dtype(np.int16), "uint8", np.float64):
        _same(fn.correlate1d(x, [1, 2, 1], output=out), ndi.correlate1d(x, [1, 2, 1], output=out))
        _same(fn.correlate(x, np.ones((2, 3)), output=out),
              ndi.correlate(x, np.ones((2, 3)), output=out))
    o1, o2 = np.zeros((8, 10), np.float32), np.zeros((8, 10), np.float32)
    r1 = fn.gaussian_filter(x, 1.5, output=o1)
    r2 = ndi.gaussian_filter(x, 1.5, output=o2)
    assert r1 is o1 and r2 is o2
    _same(o1, o2, f32=True)  # the second pass is float32 -> float32
    # A non-contiguous output array is written in place.
    big1, big2 = np.zeros((8, 20)), np.zeros((8, 20))
    fn.uniform_filter(x, 3, output=big1[:, ::2])
    ndi.uniform_filter(x, 3, output=big2[:, ::2])
    _same(big1, big2)
    # output aliasing the input (SciPy copes; so must the strided pass).
    a, b = x.copy(), x.copy()
    fn.correlate1d(a, [1, -2, 3], axis=0, output=a)
    ndi.correlate1d(b, [1, -2, 3], axis=0, output=b)
    _same(a, b)
    a, b = x.copy(), x.copy()
    fn.correlate(a, np.arange(9.0).reshape(3, 3), output=a)
    ndi.correlate(b, np.arange(9.0).reshape(3, 3), output=b)
    _same(a, b)


# --------------------------------------------------------------------------- n-d correlate


@pytest.mark.parametrize("mode", MODES)
def test_correlate_2d_sweep(mode):
    rng = np.random.default_rng(5)
    kernels = [rng.standard_normal((3, 3)), rng.standard_normal((1, 5)),
               rng.standard_normal((4, 1)), rng.standard_normal((2, 4)),
               rng.standard_normal((9, 11)),  # larger than the image
               np.array([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]])]
    for w in kernels:
        origins = [0, (-(w.shape[0] // 2), (w.shape[1] - 1) // 2),
                   ((w.shape[0] - 1) // 2, -(w.shape[1] // 2))]
        for origin, dtype in itertools.product(origins, (np.float64, np.float32, np.uint8,
                                                         np.int32)):
            x = _data((6, 7), dtype, rng)
            for f, g in ((fn.correlate, ndi.correlate), (fn.convolve, ndi.convolve)):
                _same(f(x, w, mode=mode, cval=0.5, origin=origin),
                      g(x, w, mode=mode, cval=0.5, origin=origin), f32=_is_f32(x))


def test_correlate_stacks_via_axes_and_nd_weights():
    rng = np.random.default_rng(6)
    x = _data((3, 8, 9), np.float64, rng)
    w = rng.standard_normal((3, 4))
    for axes in [(1, 2), (0, 2), (2, 1), (-2, -1)]:
        for mode in ("reflect", "wrap", "constant"):
            _same(fn.correlate(x, w, mode=mode, axes=axes, origin=(1, -1)),
                  ndi.correlate(x, w, mode=mode, axes=axes, origin=(1, -1)))
            _same(fn.convolve(x, w, mode=mode, axes=axes), ndi.convolve(x, w, mode=mode, axes=axes))
    # Weights varying along all three axes take the NumPy reference path.
    w3 = rng.standard_normal((2, 3, 3))
    _same(fn.correlate(x, w3, mode="mirror"), ndi.correlate(x, w3, mode="mirror"))
    # 1-D input and 3-D weights with singleton axes.
    v = _data((13,), np.int16, rng)
    _same(fn.correlate(v, [1, -2, 5]), ndi.correlate(v, [1, -2, 5]))
    _same(fn.correlate(x, w[None]), ndi.correlate(x, w[None]))


def test_complex_inputs_and_weights():
    rng = np.random.default_rng(7)
    x = rng.standard_normal((6, 7)) + 1j * rng.standard_normal((6, 7))
    w = rng.standard_normal((3, 2)) + 1j * rng.standard_normal((3, 2))
    np.testing.assert_allclose(fn.correlate(x, w), ndi.correlate(x, w), rtol=1e-13)
    np.testing.assert_allclose(fn.convolve(x.real, w), ndi.convolve(x.real, w), rtol=1e-13)
    np.testing.assert_allclose(fn.correlate1d(x, w[:, 0], 0), ndi.correlate1d(x, w[:, 0], 0),
                               rtol=1e-13)
    np.testing.assert_allclose(fn.uniform_filter(x, 3), ndi.uniform_filter(x, 3), rtol=1e-13)


# --------------------------------------------------------------------------- filters


@pytest.mark.parametrize("dtype", (np.float64, np.float32, np.uint8, np.int16, np.int64))
def test_uniform_filter(dtype):
    rng = np.random.default_rng(8)
    x = _data((10, 12), dtype, rng)
    for size, mode in itertools.product([1, 2, 3, 4, 7, 15, (3, 5), (1, 4)], MODES):
        sizes = size if isinstance(size, tuple) else (size, size)
        origin = tuple((s - 1) // 2 for s in sizes)
        for org in (0, origin):
            _same(fn.uniform_filter(x, size, mode=mode, cval=2.0, origin=org),
                  ndi.uniform_filter(x, size, mode=mode, cval=2.0, origin=org),
                  f32=_is_f32(x))
    stack = _data((3, 9, 11), dtype, rng)
    _same(fn.uniform_filter(stack, 5, axes=(1, 2)), ndi.uniform_filter(stack, 5, axes=(1, 2)),
          f32=_is_f32(stack))
    _same(fn.uniform_filter1d(stack, 4, axis=0, origin=-2),
          ndi.uniform_filter1d(stack, 4, axis=0, origin=-2), f32=_is_f32(stack))


@pytest.mark.parametrize("dtype", (np.float64, np.float32, np.uint8, np.int32))
def test_gaussian_filter(dtype):
    rng = np.random.default_rng(9)
    x = _data((12, 14), dtype, rng)
    cases = [dict(sigma=1.0), dict(sigma=(0.5, 2.0)), dict(sigma=1.5, order=1),
             dict(sigma=1.2, order=(0, 2)), dict(sigma=3.0, truncate=2.0),
             dict(sigma=2.0, radius=3), dict(sigma=(1.0, 0.0)), dict(sigma=8.0)]
    for kw, mode in itertools.product(cases, MODES):
        _same(fn.gaussian_filter(x, mode=mode, cval=1.0, **kw),
              ndi.gaussian_filter(x, mode=mode, cval=1.0, **kw), f32=_is_f32(x))
    stack = _data((2, 10, 11), dtype, rng)
    _same(fn.gaussian_filter(stack, 1.3, axes=(1, 2)),
          ndi.gaussian_filter(stack, 1.3, axes=(1, 2)), f32=_is_f32(stack))
    _same(fn.gaussian_filter1d(stack, 0.8, axis=1, order=3),
          ndi.gaussian_filter1d(stack, 0.8, axis=1, order=3), f32=_is_f32(stack))


@pytest.mark.parametrize("dtype", (np.float64, np.float32, np.uint8, np.int16))
def test_sobel_prewitt_laplace(dtype):
    rng = np.random.default_rng(10)
    x = _data((9, 13), dtype, rng)
    stack = _data((2, 7, 8), dtype, rng)
    for mode in MODES:
        for axis in (0, 1, -1):
            _same(fn.sobel(x, axis, mode=mode, cval=3.0), ndi.sobel(x, axis, mode=mode, cval=3.0),
                  f32=_is_f32(x))
            _same(fn.prewitt(x, axis, mode=mode), ndi.prewitt(x, axis, mode=mode), f32=_is_f32(x))
        _same(fn.laplace(x, mode=mode), ndi.laplace(x, mode=mode), f32=_is_f32(x))
        _same(fn.laplace(stack, mode=mode, axes=(1, 2)),
              ndi.laplace(stack, mode=mode, axes=(1, 2)), f32=_is_f32(stack))
    _same(fn.sobel(x, output=np.float32), ndi.sobel(x, output=np.float32),
          f32=True)
    _same(fn.sobel(stack, 0, mode=["wrap", "reflect", "nearest"]),
          ndi.sobel(stack, 0, mode=["wrap", "reflect", "nearest"]), f32=_is_f32(stack))


def test_empty_and_zero_dim_inputs():
    for shape in [(0, 3), (4, 0)]:
        x = np.ones(shape)
        _same(fn.correlate(x, np.ones((3, 3))), ndi.correlate(x, np.ones((3, 3))))
        _same(fn.uniform_filter(x, 3), ndi.uniform_filter(x, 3))
        _same(fn.gaussian_filter(x, 1.0), ndi.gaussian_filter(x, 1.0))
    _same(fn.correlate(np.ones(()), np.ones(())), ndi.correlate(np.ones(()), np.ones(())))


# --------------------------------------------------------------------------- NaN locality


def test_nan_stays_local():
    x = np.zeros((20, 20))
    x[10, 10] = np.nan
    w = np.ones((3, 3))
    w[1, 1] = 0.0  # a zero tap over the NaN is skipped, as SciPy skips it
    got = fn.correlate(x, w)
    exp = ndi.correlate(x, w)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(exp))
    assert np.isnan(got).sum() == 8 and not np.isnan(got[10, 10])
    g = fn.gaussian_filter(x, 1.0)
    np.testing.assert_array_equal(np.isnan(g), np.isnan(ndi.gaussian_filter(x, 1.0)))
    assert np.isnan(g).sum() == 9 * 9  # radius 4 in each direction
    x32 = x.astype(np.float32)
    np.testing.assert_array_equal(np.isnan(fn.sobel(x32)), np.isnan(ndi.sobel(x32)))


# --------------------------------------------------------------------------- errors


def _both_raise(call, exc, match=None):
    with pytest.raises(exc, match=match):
        call(ndi)
    with pytest.raises(exc, match=match):
        call(fn)


def test_scipy_errors():
    x = np.arange(25.0).reshape(5, 5)
    w3 = np.ones((3, 3))
    _both_raise(lambda m: m.correlate1d(x, [1, 2, 3], mode="foo"), RuntimeError,
                "boundary mode not supported")
    _both_raise(lambda m: m.correlate1d(x, [1, 2, 3], origin=2), ValueError, "Invalid origin")
    _both_raise(lambda m: m.correlate1d(x, [1, 2, 3], origin=-2), ValueError, "Invalid origin")
    _both_raise(lambda m: m.correlate1d(x, []), RuntimeError, "no filter weights given")
    _both_raise(lambda m: m.correlate1d(x, [[1, 2]]), RuntimeError, "no filter weights given")
    _both_raise(lambda m: m.correlate1d(x, [1, 2], axis=2), np.exceptions.AxisError)
    _both_raise(lambda m: m.correlate(x, [1, 2]), RuntimeError, r"weights.ndim \(1\) must match")
    _both_raise(lambda m: m.correlate(x, w3, origin=2), ValueError, "Invalid origin")
    _both_raise(lambda m: m.correlate(x, w3, origin=(1, 1, 1)), RuntimeError,
                "sequence argument must have length")
    _both_raise(lambda m: m.correlate(x, np.ones((0, 3))), RuntimeError, "must match")
    _both_raise(lambda m: m.correlate(x, w3, output=np.zeros((4, 4))), RuntimeError,
                "output shape not correct")
    _both_raise(lambda m: m.correlate(x, w3, output="foo"), TypeError)
    _both_raise(lambda m: m.correlate(x, w3, mode=["reflect", "wrap"]), RuntimeError,
                "A sequence of modes is not supported")
    _both_raise(lambda m: m.correlate(x, np.ones(3), axes=(2,)), ValueError,
                "specified axis: 2 is out of range")
    _both_raise(lambda m: m.correlate(x, np.ones((3, 3)), axes=(0, 0)), ValueError,
                "axes must be unique")
    _both_raise(lambda m: m.uniform_filter(x, (3, 3, 3)), RuntimeError, "sequence argument")
    _both_raise(lambda m: m.uniform_filter1d(x, 0), RuntimeError, "incorrect filter size")
    _both_raise(lambda m: m.uniform_filter1d(x, 3, origin=2), ValueError, "invalid origin")
    _both_raise(lambda m: m.gaussian_filter(x, 1, order=-1), ValueError,
                "order must be non-negative")
    _both_raise(lambda m: m.gaussian_filter(x, 1, radius=-1), ValueError, "Radius must be")
    _both_raise(lambda m: m.gaussian_filter(x, 1, mode="foo"), RuntimeError, "boundary mode")
    _both_raise(lambda m: m.sobel(x, axis=3), np.exceptions.AxisError)
    _both_raise(lambda m: m.correlate(x.astype(np.float16), w3), RuntimeError,
                "array type not supported")
    _both_raise(lambda m: m.correlate(x.astype(object), w3), RuntimeError,
                "array type not supported")
    _both_raise(lambda m: m.correlate1d(np.ones(()), [1]), np.exceptions.AxisError)
    _both_raise(lambda m: m.correlate(x, w3, cval=1j), TypeError, "must be real number")
    _both_raise(lambda m: m.correlate(x, w3 + 0j, cval=1j), ValueError,
                "complex-valued cval")
    _both_raise(lambda m: m.correlate(x, w3 + 0j, output="float64"), RuntimeError,
                "output must have complex dtype")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _both_raise(lambda m: m.correlate(x, w3 + 0j, output=np.float64), UserWarning,
                    "promoting specified output dtype to complex")


# --------------------------------------------------------------------------- layers below


def test_native_ops_match_reference_backend():
    rng = np.random.default_rng(11)
    for mode, (o, n, i), L, sym in itertools.product(range(5), [(2, 9, 1), (3, 5, 7), (1, 3, 17)],
                                                     (1, 4, 5, 12), (0, 1, -1)):
        x = rng.standard_normal((o, n, i))
        w = rng.standard_normal(L)
        if sym and L & 1:
            w = (w + sym * w[::-1]) / 2
        shift = L // 2
        a, b = np.empty_like(x), np.empty_like(x)
        nat.ndimage_correlate1d(x, a, w, shift, sym, mode, 0.25)
        ref.ndimage_correlate1d(x, b, w, shift, sym, mode, 0.25)
        np.testing.assert_array_equal(a, b)
        nat.ndimage_uniform1d(x, a, L, shift, mode, 0.25)
        ref.ndimage_uniform1d(x, b, L, shift, mode, 0.25)
        np.testing.assert_array_equal(a, b)
        w2 = rng.standard_normal((3, L))
        nat.ndimage_correlate2d(x, a, w2, (1, shift), mode, 0.25)
        ref.ndimage_correlate2d(x, b, w2, (1, shift), mode, 0.25)
        np.testing.assert_array_equal(a, b)


def test_fused_separable_matches_reference_backend():
    """The fused two-pass kernel against the two reference passes, bit for bit in float64:
    both pass orders, correlation and running-mean passes, every mode, planes narrower
    than the filter and wide enough for the vector bodies, 1 and 2 threads."""
    from fastconv import _native

    rng = np.random.default_rng(13)
    threads0 = _native.num_threads()
    try:
        for threads, (B, H, W) in itertools.product((1, 2), [(1, 3, 2), (2, 9, 37), (1, 70, 67)]):
            _native.set_num_threads(threads)
            x = rng.standard_normal((B, H, W))
            for mode, h_first, (kh, Lh, symh), (kw, Lw, symw) in itertools.product(
                    range(5), (True, False), [(0, 5, 1), (0, 3, -1), (1, 4, 0), (0, 2, 0)],
                    [(0, 9, 1), (1, 7, 0), (0, 4, 0), (0, 3, -1)]):
                def weights(kind, L, sym):
                    w = rng.standard_normal(L)
                    if sym and L & 1:
                        w = (w + sym * w[::-1]) / 2
                    return np.zeros(1) if kind else w
                wh, ww = weights(kh, Lh, symh), weights(kw, Lw, symw)
                ph = (kh, Lh, Lh // 2, symh, mode)
                pw = (kw, Lw, (Lw - 1) // 2 if h_first else 0, symw, (mode + 2) % 5)
                a, b = np.empty_like(x), np.empty_like(x)
                nat.ndimage_separable2d(x, a, wh, ph, ww, pw, h_first, -0.75)
                ref.ndimage_separable2d(x, b, wh, ph, ww, pw, h_first, -0.75)
                np.testing.assert_array_equal(a, b, err_msg=str((B, H, W, mode, h_first, ph, pw)))
    finally:
        _native.set_num_threads(threads0)


@pytest.mark.parametrize("dtype", (np.float32, np.float64))
def test_fused_separable_filters_on_larger_planes(dtype):
    """The separable filters on planes wide enough for the fused kernel's vector bodies and
    tails (float32 checked against SciPy within its tolerance, float64 exactly), stacks via
    axes=, and an output that is the input."""
    rng = np.random.default_rng(14)
    x = _data((2, 45, 131), dtype, rng)
    f32 = _is_f32(x)
    for mode in MODES:
        for f, kw in [("gaussian_filter", dict(sigma=2.0)), ("gaussian_filter", dict(sigma=1.0, order=1)),
                      ("uniform_filter", dict(size=5)), ("uniform_filter", dict(size=(3, 40))),
                      ("uniform_filter", dict(size=4, origin=-1))]:
            _same(getattr(fn, f)(x, mode=mode, cval=0.5, axes=(1, 2), **kw),
                  getattr(ndi, f)(x, mode=mode, cval=0.5, axes=(1, 2), **kw), f32=f32)
        for axis in (0, 1):
            _same(fn.sobel(x[1], axis, mode=mode, cval=-1.0),
                  ndi.sobel(x[1], axis, mode=mode, cval=-1.0), f32=f32)
            _same(fn.prewitt(x[0], axis, mode=mode), ndi.prewitt(x[0], axis, mode=mode), f32=f32)
    a, b = x[0].copy(), x[0].copy()
    fn.gaussian_filter(a, 1.5, output=a)
    ndi.gaussian_filter(b, 1.5, output=b)
    _same(a, b, f32=f32)
    a, b = x[0].copy(), x[0].copy()
    fn.uniform_filter(a, 3, output=a)
    ndi.uniform_filter(b, 3, output=b)
    _same(a, b, f32=f32)


def test_native_binding_rejects_bad_arguments():
    from fastconv import _native

    x = np.ones((1, 4, 4))
    with pytest.raises(ValueError, match="mode"):
        _native.ndi_correlate1d(x, np.empty_like(x), np.ones(3), 1, 0, 7, 0.0)
    with pytest.raises(ValueError, match="does not match"):
        _native.ndi_correlate1d(x, np.empty((1, 4, 5)), np.ones(3), 1, 0, 0, 0.0)
    with pytest.raises(ValueError, match="empty"):
        _native.ndi_correlate2d(x, np.empty_like(x), np.ones((0, 3)), (0, 0), 0, 0.0)
    with pytest.raises(ValueError, match="size"):
        _native.ndi_uniform1d(x, np.empty_like(x), 0, 0, 0, 0.0)
    with pytest.raises(TypeError):
        _native.ndi_correlate1d(x, np.empty_like(x, np.float32), np.ones(3), 1, 0, 0, 0.0)
    y, w3 = np.empty_like(x), np.ones(3)
    with pytest.raises(ValueError, match="shift"):
        _native.ndi_separable2d(x, y, w3, (0, 3, 3, 0, 0), w3, (0, 3, 1, 0, 0), True, 0.0)
    with pytest.raises(ValueError, match="weights length"):
        _native.ndi_separable2d(x, y, w3, (0, 4, 1, 0, 0), w3, (0, 3, 1, 0, 0), True, 0.0)
    with pytest.raises(ValueError, match="kind"):
        _native.ndi_separable2d(x, y, w3, (2, 3, 1, 0, 0), w3, (0, 3, 1, 0, 0), True, 0.0)
    with pytest.raises(ValueError, match="mode"):
        _native.ndi_separable2d(x, y, w3, (0, 3, 1, 0, 5), w3, (0, 3, 1, 0, 0), True, 0.0)


def test_isa_paths_and_threads_agree():
    from fastconv import _native
    import re

    rng = np.random.default_rng(12)
    # float64: no fused multiply-adds on any path, so every ISA and thread count gives
    # the same bits (float32 uses FMA where the ISA has it; checked against SciPy above).
    x = rng.standard_normal((300, 301))
    w = rng.standard_normal((5, 4))
    isa0, threads0 = _native.active_isa(), _native.num_threads()
    results = []
    try:
        for isa in re.split(r"[,\s]+", _native.compiled_isas().strip()):
            if not isa:
                continue
            try:
                _native.set_isa(isa)
            except Exception:
                continue  # not supported by this CPU
            for threads in (1, 2):
                _native.set_num_threads(threads)
                results.append((fn.gaussian_filter(x, 2.0), fn.correlate(x, w, mode="wrap"),
                                fn.uniform_filter(x, 5)))
    finally:
        _native.set_isa(isa0)
        _native.set_num_threads(threads0)
    assert len(results) >= 2
    for r in results[1:]:
        for a, b in zip(r, results[0]):
            np.testing.assert_array_equal(a, b)


def test_cupy_arrays_route_to_the_cuda_backend(monkeypatch):
    """A CuPy array goes to the cuda backend's op (cupyx.scipy.ndimage), never to NumPy."""
    import fastconv._dispatch as d

    calls = []

    class FakeCuda:
        ARRAY_LIBS = ("cupy",)

        @staticmethod
        def ndimage_filter(name, args, kwargs):
            calls.append(name)
            return "gpu-result"

    FakeArray = type("ndarray", (), {"__module__": "cupy"})
    monkeypatch.setitem(d._loaded, "cuda", FakeCuda)
    a = FakeArray()
    assert fn.gaussian_filter(a, 1.0) == "gpu-result"
    assert fn.correlate(a, np.ones((3, 3))) == "gpu-result"
    assert fn.sobel(a) == "gpu-result"
    assert calls == ["gaussian_filter", "correlate", "sobel"]
