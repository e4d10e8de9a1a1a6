"""SciPy-compatible 2-D correlation and convolution: ``correlate2d`` and ``convolve2d``.

Drop-in replacements for :func:`scipy.signal.correlate2d` and
:func:`scipy.signal.convolve2d` (SciPy 1.17): same arguments, output shapes, result
dtypes, boundary handling and exceptions, computed by fastconv's multithreaded,
vectorised C++ kernel (an FFT only when asked for).

Result dtype
    ``np.promote_types(in1.dtype, in2.dtype)``, as SciPy: float32 stays float32,
    int x float32 is float64, int8 x uint8 is int16, int64 x uint64 is float64.
    bool (alone), float16 (or anything promoting to it), object, datetime and string
    inputs are refused with SciPy's errors.

Integers
    Computed exactly in 64-bit integer arithmetic and then cast to the result type, which
    wraps modulo 2**bits: bit for bit what SciPy's fixed-width loops give, overflow
    included (SciPy accumulates in the result type; the low bits of a sum do not depend
    on where the wrapping happens). The FFT is never used for integers.

Floating point
    float32 is computed in float32, float64 in float64, by direct summation (the default
    ``method="direct"``): the same sum SciPy's loops take, so a tap that is exactly zero
    contributes exactly zero (a 40x40 impulse convolved with a 21x21 ones kernel is 0
    outside the 21x21 square, as in SciPy) and a NaN reaches only the outputs whose window
    holds it. The terms are added in another order and with fused multiply-adds, so
    results agree with SciPy's to rounding, not always bit for bit: within
    ``kh * kw * eps * sum |in1| * |in2|`` over the window (eps of the result type), and
    exactly for integer-valued data whose sums are representable. long double and
    complex long double, which the kernel does not cover, go through a NumPy loop in
    that precision. Complex inputs are split into real and imaginary planes and combined
    from four real correlations.

Speed
    The direct kernel is vectorised (AVX-512 / AVX2 / SSE2, picked at run time) and
    splits output rows over ``fastconv.set_num_threads`` threads once a call has more
    than ~8M multiply-adds (below that one thread is faster than waking the others).
    Extra memory is the output, a contiguous copy of a non-contiguous input, and a strip
    of about 256 KiB per thread. bench/correlate2d.py compares with scipy.signal,
    scipy.ndimage and OpenCV.

Extensions (not in SciPy)
    * ``in1`` may be a batch of images, shape ``(..., H, W)``, correlated with one 2-D
      ``in2`` in one call; the result is ``(..., Ho, Wo)`` and each image gets exactly
      what SciPy gives for it (including the swap in ``"valid"`` mode).
    * keyword-only ``method``: ``"direct"`` (default, SciPy's answer), ``"fft"`` or
      ``"auto"`` (the FFT when a cost model in fastconv/_heuristics.py says it is
      cheaper: from about 21x21 kernels on a 512x512 float32 image). The FFT is inexact:
      its float results differ from the direct sum by FFT rounding relative to the
      largest values of the result (about 1e-6 * max|result| in float32, 1e-15 in
      float64), so exact zeros come out as small non-zeros, and one NaN or inf in
      ``in1`` makes every output NaN, as with :func:`scipy.signal.fftconvolve`.
      Integers are always summed directly.
    * CuPy arrays are passed, through the ``cuda`` backend, to
      :func:`cupyx.scipy.signal.correlate2d` / ``convolve2d`` and stay on the GPU.

Known differences
    * SciPy crashes the interpreter (division by zero) for ``boundary="wrap"`` or
      ``"symm"`` with an empty ``in1`` and a non-empty result; fastconv raises ValueError.
    * SciPy emits ComplexWarning / RuntimeWarning before its "could not cast `fillvalue`"
      error; fastconv raises the same error without the warnings.
"""
from __future__ import annotations

import math

import numpy as np

from . import _heuristics
from ._args import is_cupy_array as _is_cupy
from ._dispatch import get_backend, get_num_threads, op_impl

__all__ = ["correlate2d", "convolve2d"]

# SciPy's own tables (scipy/signal/_signaltools.py), including their aliases and the
# accepted-then-refused 'reflect'.
_MODES = {"valid": 0, "same": 1, "full": 2}
_BOUNDARIES = {"fill": 0, "pad": 0, "wrap": 1, "circular": 1, "symm": 2, "symmetric": 2,
               "reflect": -1}
_METHODS = ("auto", "direct", "fft")



def correlate2d(in1, in2, mode="full", boundary="fill", fillvalue=0, *, method="direct"):
    """Cross-correlate two 2-D arrays, as :func:`scipy.signal.correlate2d`.

    ``out[m, n] = sum_{i,j} in1_ext[m + i - oh, n + j - ow] * conj(in2[i, j])`` where
    ``in1_ext`` is ``in1`` extended by ``boundary``: ``"fill"`` pads with ``fillvalue``,
    ``"wrap"`` (``"circular"``) repeats periodically, ``"symm"`` (``"symmetric"``)
    mirrors with the edge repeated.

    Parameters
    ----------
    in1 : array_like, shape (H, W) or (..., H, W)
        The image, or a batch of images (a fastconv extension).
    in2 : array_like, shape (kh, kw)
        The kernel; conjugated for complex input.
    mode : {"full", "same", "valid"}
        Output size: ``(H + kh - 1, W + kw - 1)``, ``(H, W)`` or ``(H - kh + 1,
        W - kw + 1)``. In ``"valid"`` mode, if ``in2`` is at least as large as ``in1`` in
        every dimension the roles are swapped (the result is then flipped), as SciPy
        does; if neither contains the other it is an error.
    boundary : {"fill", "wrap", "symm"} and SciPy's aliases
    fillvalue : scalar
        The pad value for ``boundary="fill"``, cast to the result dtype.
    method : {"direct", "fft", "auto"}, keyword only
        Not in SciPy. ``"direct"`` (default) is SciPy's direct sum; ``"fft"`` (floating
        point only) and ``"auto"`` may use an FFT, whose error is relative to the
        largest output (see the module docstring) and which spreads NaN everywhere.

    Returns
    -------
    ndarray of dtype ``np.promote_types(in1.dtype, in2.dtype)``; a CuPy array for
    CuPy input.

    Raises
    ------
    ValueError, TypeError
        Exactly where SciPy raises them, with SciPy's messages.
    """
    if _is_cupy(in1) or _is_cupy(in2):
        return _cupy_call("correlate2d", in1, in2, mode, boundary, fillvalue)
    return _corr_or_conv(in1, in2, mode, boundary, fillvalue, method, convolve=False)


def convolve2d(in1, in2, mode="full", boundary="fill", fillvalue=0, *, method="direct"):
    """Convolve two 2-D arrays, as :func:`scipy.signal.convolve2d`.

    ``out[m, n] = sum_{i,j} in1_ext[m - i + oh, n - j + ow] * in2[i, j]`` (no
    conjugation). Arguments, output shapes, dtypes, boundary modes, the batched ``in1``
    extension and ``method`` are as in :func:`correlate2d`; in ``"valid"`` mode the
    inputs are swapped when ``in2`` is the larger, which convolution does not notice.
    """
    if _is_cupy(in1) or _is_cupy(in2):
        return _cupy_call("convolve2d", in1, in2, mode, boundary, fillvalue)
    return _corr_or_conv(in1, in2, mode, boundary, fillvalue, method, convolve=True)


# --------------------------------------------------------------------------- CuPy


def _cupy_call(name, in1, in2, mode, boundary, fillvalue):
    # The cuda backend's op hands CuPy arrays to cupyx.scipy.signal.
    _, mod = get_backend(None, "cupy", None, f"signal.{name}")
    return op_impl("cuda", mod, "signal_call")(name, in1, in2, mode, boundary, fillvalue)


def _op(name: str):
    """The native backend's signal op (NumPy arrays; the dispatcher resolves it)."""
    _, mod = get_backend(None, "numpy", None, f"signal.{name}")
    return op_impl("native", mod, name)


# --------------------------------------------------------------------------- checks


def _promote(d1: np.dtype, d2: np.dtype) -> np.dtype:
    """SciPy's result type (PyArray_ObjectType); support is checked by the caller."""
    if d1.kind in "SU" or d2.kind in "SU":
        raise ValueError("data type must provide an itemsize")
    try:
        return np.promote_types(d1, d2)
    except TypeError:  # no common type (datetime with float, say): not computable
        raise ValueError("convolve2d not available for this type.") from None


def _fill_scalar(fillvalue, dt: np.dtype):
    """fillvalue as a 0-d array of dtype dt, with SciPy's conversion rules and errors.

    SciPy converts with PyArray_FromObject: an ndarray must cast safely, anything else
    (Python and NumPy scalars, lists) converts as np.array(value, dtype) does.
    """
    try:
        if isinstance(fillvalue, np.ndarray):
            if not np.can_cast(fillvalue.dtype, dt, "safe"):
                raise TypeError("unsafe cast")
            fill = fillvalue.astype(dt)
        else:
            fill = np.array(fillvalue, dtype=dt)
    except (TypeError, ValueError, OverflowError):
        # SciPy retries through complex128 (whose errors surface as they are) and then
        # refuses anything that did not convert directly.
        np.array(fillvalue, dtype=np.complex128)
        raise ValueError("could not cast `fillvalue` directly to the output type "
                         "(it was first converted to complex).") from None
    if fill.size != 1:
        if fill.size == 0:
            raise ValueError("`fillvalue` cannot be an empty array.")
        raise ValueError("`fillvalue` must be scalar or an array with one element.")
    return fill.reshape(())


def _swap_needed(shape1, shape2) -> bool:
    ok1 = all(a >= b for a, b in zip(shape1, shape2))
    ok2 = all(b >= a for a, b in zip(shape1, shape2))
    if not (ok1 or ok2):
        raise ValueError("For 'valid' mode, one must be at least "
                         "as large as the other in every dimension")
    return not ok1


# --------------------------------------------------------------------------- driver


def _corr_or_conv(in1, in2, mode, boundary, fillvalue, method, convolve):
    name = "convolve2d" if convolve else "correlate2d"
    in1 = np.asarray(in1)
    in2 = np.asarray(in2)
    if in1.ndim < 2 or in2.ndim != 2:
        raise ValueError(f"{name} inputs must both be 2-D arrays")
    if method not in _METHODS:
        raise ValueError(f"method must be one of {_METHODS}, got {method!r}")
    # SciPy's order of checks: shapes (valid-mode swap), mode, boundary, then the C layer.
    swap = mode == "valid" and _swap_needed(in1.shape[-2:], in2.shape)
    if mode not in _MODES:
        raise ValueError("Acceptable mode flags are 'valid', 'same', or 'full'.")
    if boundary not in _BOUNDARIES:
        raise ValueError("Acceptable boundary flags are 'fill', 'circular' "
                         "(or 'wrap'), and 'symmetric' (or 'symm').")
    if not convolve and (in1 if swap else in2).dtype.kind not in "biufc":
        (in1 if swap else in2).conj()  # SciPy's TypeError for a non-numeric kernel
    dt = _promote(in1.dtype, in2.dtype)
    bnd = _BOUNDARIES[boundary]
    if bnd < 0:
        raise ValueError("Incorrect boundary value.")
    fill = _fill_scalar(fillvalue, dt) if bnd == 0 else np.zeros((), dt)
    (H, W), (kh, kw) = (in2.shape, in1.shape[-2:]) if swap else (in1.shape[-2:], in2.shape)
    if mode == "full":
        ho, wo = H + kh - 1, W + kw - 1
    elif mode == "same":
        ho, wo = H, W
    else:
        ho, wo = H - kh + 1, W - kw + 1
    if ho < 0 or wo < 0:
        raise ValueError("negative dimensions are not allowed")
    if dt.kind not in "iufc" or dt == np.float16:
        raise ValueError("convolve2d not available for this type.")

    batch = in1.shape[:-2]
    if swap and batch:
        # Each image becomes the kernel of its own correlation: one call per image.
        out = np.empty(batch + (ho, wo), dt)
        flat = out.reshape((-1, ho, wo))
        for i, img in enumerate(in1.reshape((-1,) + in1.shape[-2:])):
            flat[i] = _corr_or_conv(img, in2, mode, boundary, fillvalue, method, convolve)
        return out
    if swap:
        in1, in2 = in2, in1
    if not convolve and in2.dtype.kind == "c":
        in2 = in2.conj()
    x = in1.reshape((math.prod(batch), H, W))

    # Everything below is a correlation of the extended image with kernel k, the output
    # starting at (oh, ow) in image coordinates.
    if convolve:
        k = in2[::-1, ::-1]
        oh = {"full": 1 - kh, "same": -(kh // 2), "valid": 0}[mode]
        ow = {"full": 1 - kw, "same": -(kw // 2), "valid": 0}[mode]
    else:
        k = in2
        oh = {"full": 1 - kh, "same": -((kh - 1) >> 1), "valid": 0}[mode]
        ow = {"full": 1 - kw, "same": -((kw - 1) >> 1), "valid": 0}[mode]

    n_img = x.shape[0]
    if (n_img and ho and wo and kh and kw and bnd and (H == 0 or W == 0)):
        raise ValueError(f"boundary={boundary!r} needs a non-empty in1 when the result is "
                         "not empty (SciPy divides by zero here)")
    y = _correlate(x, k, dt, (ho, wo), (oh, ow), bnd, fill, method)
    if swap and not convolve:
        y = y[:, ::-1, ::-1]
    return np.ascontiguousarray(y).reshape(batch + (ho, wo))


def _correlate(x, k, dt, out_hw, off, bnd, fill, method):
    """y[b] = valid correlation of ext(x[b]) (window at off) with k, in dtype dt."""
    ho, wo = out_hw
    kh, kw = k.shape
    y_shape = (x.shape[0], ho, wo)
    if dt.kind in "iu":
        if method == "fft":
            raise ValueError("method='fft' is for floating-point input; integer results "
                             "are computed exactly by the direct method")
        # int64 bits mod 2**64; the cast back to dt keeps the low bits, as SciPy.
        xi = _rows(x.astype(dt, copy=False), np.int64)
        ki = np.ascontiguousarray(k.astype(dt, copy=False).astype(np.int64, copy=False))
        y = np.empty(y_shape, np.int64)
        _op("signal_corr2d")(xi, ki, y, off, bnd, int(fill.astype(np.int64)))
        return y.astype(dt, copy=False)
    if (dt.kind == "f" and dt.itemsize > 8) or (dt.kind == "c" and dt.itemsize > 16):
        if method == "fft":
            raise ValueError("method='fft' is not available for long double")
        return _correlate_numpy(x.astype(dt), k.astype(dt), out_hw, off, bnd, fill)
    real = np.dtype(np.float32) if dt in (np.float32, np.complex64) else np.dtype(np.float64)
    use_fft = _heuristics.pick_correlate_method(method, str(real), out_hw, k.shape,
                                                _fast_len) == "fft"
    if dt.kind == "c":
        xc, kc = x.astype(dt, copy=False), k.astype(dt, copy=False)
        fr, fi = fill.real.item(), fill.imag.item()
        if use_fft:
            return _correlate_fft_complex(xc, kc, dt, out_hw, off, bnd, complex(fill.item()))
        xr, xim = (np.ascontiguousarray(p, dtype=real) for p in (xc.real, xc.imag))
        kr, ki = (np.ascontiguousarray(p, dtype=real) for p in (kc.real, kc.imag))
        planes = {}
        for xn, xp, f in (("r", xr, fr), ("i", xim, fi)):
            for kn, kp in (("r", kr), ("i", ki)):
                out = np.empty(y_shape, real)
                _op("signal_corr2d")(xp, kp, out, off, bnd, f)
                planes[xn + kn] = out
        y = np.empty(y_shape, dt)
        np.subtract(planes["rr"], planes["ii"], out=y.real)
        np.add(planes["ri"], planes["ir"], out=y.imag)
        return y
    # Cast to dt first (the precision SciPy computes in), then to the kernel's type.
    xf = _rows(x.astype(dt, copy=False), real)
    kf = np.ascontiguousarray(k.astype(dt, copy=False), dtype=real)
    if use_fft:
        return _correlate_fft_real(xf, kf, real, out_hw, off, bnd, float(fill)).astype(
            dt, copy=False)
    y = np.empty(y_shape, real)
    _op("signal_corr2d")(xf, kf, y, off, bnd, float(fill))
    return y.astype(dt, copy=False)


# --------------------------------------------------------------------------- FFT path


def _rows(a, dtype):
    """a in dtype, copied only when its rows are not contiguous: the kernel reads strided
    images and rows in place, which keeps the extra memory of a strided view (SciPy's
    large-array test) at the output alone."""
    a = a.astype(dtype, copy=False)
    item = a.itemsize
    if (a.shape[-1] > 1 and a.strides[-1] != item) or any(s % item for s in a.strides):
        a = np.ascontiguousarray(a)
    return a


def _fft_module():
    try:
        import scipy.fft as fft

        return fft, True
    except ImportError:  # scipy is optional at run time
        return np.fft, False


def _fast_len(n: int) -> int:
    try:
        from scipy.fft import next_fast_len

        return next_fast_len(n, real=True)
    except ImportError:
        return n


def _extend(x, out_hw, k_shape, off, bnd, fill, dt):
    """The padded images the valid correlation reads: (B, ho + kh - 1, wo + kw - 1)."""
    hp, wp = out_hw[0] + k_shape[0] - 1, out_hw[1] + k_shape[1] - 1
    xp = np.empty((x.shape[0], hp, wp), dt)
    _op("signal_extend2d")(np.ascontiguousarray(x, dtype=dt), xp, off, bnd, fill)
    return xp


def _correlate_fft_real(x, k, dt, out_hw, off, bnd, fill):
    ho, wo = out_hw
    if x.shape[0] == 0 or ho * wo == 0:
        return np.zeros((x.shape[0], ho, wo), dt)
    fft, is_scipy = _fft_module()
    xp = _extend(x, out_hw, k.shape, off, bnd, fill, dt)
    s = (_fast_len(xp.shape[1]), _fast_len(xp.shape[2]))
    kw_ = {"workers": get_num_threads()} if is_scipy else {}
    # Circular correlation over s >= the padded image: outputs [0, ho) x [0, wo) never
    # wrap, so they are the linear valid correlation.
    X = fft.rfft2(xp, s=s, **kw_)
    K = np.conj(fft.rfft2(k, s=s, **kw_))
    X *= K
    y = fft.irfft2(X, s=s, **kw_)[:, :ho, :wo]
    return np.ascontiguousarray(y, dtype=dt)


def _correlate_fft_complex(x, k, dt, out_hw, off, bnd, fill):
    ho, wo = out_hw
    if x.shape[0] == 0 or ho * wo == 0:
        return np.zeros((x.shape[0], ho, wo), dt)
    fft, is_scipy = _fft_module()
    real = np.float32 if dt == np.complex64 else np.float64
    xp = np.empty((x.shape[0], ho + k.shape[0] - 1, wo + k.shape[1] - 1), dt)
    xp.real = _extend(np.ascontiguousarray(x.real), out_hw, k.shape, off, bnd, fill.real, real)
    xp.imag = _extend(np.ascontiguousarray(x.imag), out_hw, k.shape, off, bnd, fill.imag, real)
    s = xp.shape[1:]
    kw_ = {"workers": get_num_threads()} if is_scipy else {}
    # sum_i x[m + i] k[i] has spectrum X(f) * conj(FFT(conj(k)))(f).
    X = fft.fft2(xp, s=s, **kw_)
    X *= np.conj(fft.fft2(np.conj(k), s=s, **kw_))
    y = fft.ifft2(X, s=s, **kw_)[:, :ho, :wo]
    return np.ascontiguousarray(y, dtype=dt)


# --------------------------------------------------------------------------- long double


def _correlate_numpy(x, k, out_hw, off, bnd, fill):
    """Shifted-view sum in the input's own precision (long double has no kernel)."""
    ho, wo = out_hw
    kh, kw = k.shape
    hp, wp = ho + kh - 1, wo + kw - 1
    H, W = x.shape[1:]
    rows = _index_map(np.arange(hp) + off[0], H, bnd)
    cols = _index_map(np.arange(wp) + off[1], W, bnd)
    xp = np.full((x.shape[0], hp, wp), fill, x.dtype)
    rin, cin = rows >= 0, cols >= 0
    if rin.any() and cin.any():
        xp[:, np.flatnonzero(rin)[:, None], np.flatnonzero(cin)[None, :]] = \
            x[:, rows[rin][:, None], cols[cin][None, :]]
    y = np.zeros((x.shape[0], ho, wo), x.dtype)
    for i in range(kh):
        for j in range(kw):
            y += k[i, j] * xp[:, i:i + ho, j:j + wo]
    return y


def _index_map(idx, n, bnd):
    if bnd == 0 or n == 0:
        return np.where((idx >= 0) & (idx < n), idx, -1)
    if bnd == 1:
        return idx % n
    r = idx % (2 * n)
    return np.where(r < n, r, 2 * n - 1 - r)
