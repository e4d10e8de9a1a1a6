"""SciPy-compatible image filters: a drop-in for the filtering part of :mod:`scipy.ndimage`.

``correlate``, ``convolve``, ``correlate1d``, ``convolve1d``, ``uniform_filter``
(``uniform_filter1d``), ``gaussian_filter`` (``gaussian_filter1d``), ``sobel``, ``prewitt``
and ``laplace`` take SciPy 1.17's signatures and give its results, output dtypes,
``output=`` arrays and errors.

Modes
    ``reflect`` (= ``grid-mirror``, d c b a | a b c d | d c b a), ``mirror``
    (d c b | a b c d | c b a), ``nearest``, ``wrap`` (= ``grid-wrap``), ``constant`` (=
    ``grid-constant``, padding with ``cval``). For filters SciPy treats the ``grid-``
    names as these synonyms; so does fastconv. Extensions longer than the axis keep
    reflecting / wrapping, as SciPy's do.

Origin
    ``origin`` shifts the filter: ``correlate1d`` computes
    ``out[i] = sum_k w[k] * ext(x)[i + k - (len(w) // 2 + origin)]``, with SciPy's bound
    ``-(len(w) // 2) <= origin <= (len(w) - 1) // 2``. ``convolve`` flips the weights and
    negates the origin (minus one more for even lengths), as SciPy.

Dtypes and rounding
    The output has the input's dtype unless ``output`` gives a dtype or an array. Integer
    and bool inputs, and any call whose input or output is not float32, are computed in
    float64 in SciPy's summation order, without fused multiply-adds: the results are
    SciPy's bit for bit. Integer outputs are truncated toward zero and wrapped modulo
    2**bits, as SciPy's C casts do (a uint8 Sobel gives 256 - 3 for -3). float32 input
    with float32 output is computed in float32 in SciPy's order, with fused multiply-adds
    where the CPU has them (SciPy sums in float64 and rounds once), so results differ from
    SciPy's by float32 rounding: a few 1e-7 of the sum of ``|w| * |x|`` over the window. ``uniform_filter`` always accumulates in
    float64 with SciPy's running-sum recurrence. Separable filters (uniform, Gaussian,
    Sobel, Prewitt, Laplace) store each 1-D pass in the output dtype, as SciPy does.
    Complex input or weights are split into real passes, as SciPy does.

Speed
    Every 1-D pass is one native kernel call along the axis (csrc/cpu/ndimage.cpp): on
    the last axis a vector of outputs at a time from a boundary-extended copy of the
    line, on other axes whole rows combined at once. A separable filter over the last two
    axes whose result is stored in its compute dtype (float32 -> float32, float64 or
    integer input -> float64) runs both passes as one fused native call: each thread
    walks blocks of output rows and keeps the intermediate rows in a row buffer or a ring
    of the filter's height, so no full-size temporary is written. The fused passes do the
    same arithmetic as the separate ones (float64 stays SciPy's bits); float32 uniform
    filters sum each window of up to 32 taps directly in double along the last axis and
    restart the running sum at each block of rows, within float32 rounding of SciPy.
    ``correlate`` with weights that vary along at most two axes is one native 2-D pass. Weights that vary along three or more
    axes go through the NumPy reference (correct, not fast). bench/correlate2d.py
    compares with scipy.ndimage and OpenCV.

GPU
    CuPy arrays are passed to :mod:`cupyx.scipy.ndimage` (the ``cuda`` backend's op) and
    stay on the GPU; fastconv has no GPU kernels of its own for these filters.
"""
from __future__ import annotations

import numbers
import operator
import warnings
from collections.abc import Iterable

import numpy as np

from ._dispatch import get_backend, op_impl

__all__ = ["correlate", "convolve", "correlate1d", "convolve1d", "uniform_filter",
           "uniform_filter1d", "gaussian_filter", "gaussian_filter1d", "sobel", "prewitt",
           "laplace"]

# SciPy's filter mode names -> the kernel's codes (csrc/cpu/ndimage.inc).
_MODES = {"constant": 0, "grid-constant": 0, "nearest": 1, "reflect": 2, "grid-mirror": 2,
          "mirror": 3, "wrap": 4, "grid-wrap": 4}
_DBL_EPS = np.finfo(np.float64).eps


# --------------------------------------------------------------------------- helpers


def _lib(*arrays) -> str:
    for a in arrays:
        if type(a).__module__.split(".", 1)[0] == "cupy":
            return "cupy"
    return "numpy"


def _gpu(name, args, kwargs):
    _, mod = get_backend(None, "cupy", None, f"ndimage.{name}")
    return op_impl("cuda", mod, "ndimage_filter")(name, args, kwargs)


def _native():
    return get_backend(None, "numpy", None, "ndimage")[1]


def _mode_code(mode) -> int:
    if isinstance(mode, str) and mode in _MODES:
        return _MODES[mode]
    raise RuntimeError("boundary mode not supported")


def _normalize_sequence(value, rank):
    if not isinstance(value, str) and np.iterable(value):
        seq = list(value)
        if len(seq) != rank:
            raise RuntimeError("sequence argument must have length equal to input rank")
        return seq
    return [value] * rank


def _check_axes(axes, ndim):
    if axes is None:
        return tuple(range(ndim))
    if np.isscalar(axes):
        axes = (operator.index(axes),)
    elif isinstance(axes, Iterable):
        axes = tuple(operator.index(ax) for ax in axes)
        for ax in axes:
            if ax < -ndim or ax > ndim - 1:
                raise ValueError(f"specified axis: {ax} is out of range")
        axes = tuple(ax % ndim if ax < 0 else ax for ax in axes)
    else:
        raise ValueError("axes must be an integer, iterable of integers, or None")
    if len(set(axes)) != len(axes):
        raise ValueError("axes must be unique")
    return axes


def _normalize_axis(axis, ndim):
    return np.lib.array_utils.normalize_axis_index(operator.index(axis), ndim)


def _get_output(output, input, complex_output=False):
    """SciPy's _ni_support._get_output: None, a dtype (class, dtype or string) or an array."""
    shape = input.shape
    if output is None:
        # Every element is written by the filter, so no zero fill (SciPy's np.zeros costs a
        # pass over the array here).
        dt = np.promote_types(input.dtype, np.complex64) if complex_output else input.dtype
        return np.empty(shape, dtype=dt)
    if isinstance(output, (type, np.dtype)):
        if complex_output and np.dtype(output).kind != "c":
            warnings.warn("promoting specified output dtype to complex", stacklevel=3)
            output = np.promote_types(output, np.complex64)
        return np.zeros(shape, dtype=output)
    if isinstance(output, str):
        dt = np.dtype(output)
        if complex_output and dt.kind != "c":
            raise RuntimeError("output must have complex dtype")
        if not issubclass(dt.type, np.number):
            raise RuntimeError("output must have numeric dtype")
        return np.zeros(shape, dtype=dt)
    output = np.asarray(output)
    if output.shape != shape:
        raise RuntimeError("output shape not correct")
    if complex_output and output.dtype.kind != "c":
        raise RuntimeError("output must have complex dtype")
    return output


def _supported(dt: np.dtype) -> bool:
    return dt.kind in "biu" or (dt.kind == "f" and dt.itemsize in (4, 8))


def _check_types(input, output):
    if not (_supported(input.dtype) and _supported(output.dtype)):
        raise RuntimeError("array type not supported")


def _compute_dtype(input, output):
    f32 = np.dtype(np.float32)
    return f32 if input.dtype == f32 and output.dtype == f32 else np.dtype(np.float64)


def _store(output, y):
    """Writes the computed values into output with SciPy's C casts."""
    if output.dtype.kind == "b":
        # SciPy's C cast writes the byte (npy_bool is an unsigned char): a bool output
        # holds the truncated value modulo 256, raw, exactly as SciPy leaves it.
        np.copyto(output.view(np.uint8), y.astype(np.int64), casting="unsafe")
    elif output.dtype.kind in "iu":
        # Truncate toward zero, then wrap modulo 2**bits (SciPy's casts on x86-64).
        np.copyto(output, y.astype(np.int64), casting="unsafe")
    else:
        np.copyto(output, y, casting="unsafe")


def _as3(a, axis):
    """C-contiguous (outer, n, inner) view of a around axis."""
    shape = a.shape
    outer = int(np.prod(shape[:axis], dtype=np.int64))
    inner = int(np.prod(shape[axis + 1:], dtype=np.int64))
    return a.reshape(outer, shape[axis], inner)


def _raw(input):
    """SciPy reads a bool element as its byte (npy_bool is an unsigned char), so a bool
    array holding other bytes than 0 and 1 (SciPy's own bool outputs do) reads as them."""
    return input.view(np.uint8) if input.dtype.kind == "b" else input


def _run_pass(kernel, input, output, axis, *params):
    """One native 1-D pass of input along axis into output (any dtypes, may alias)."""
    input = _raw(input)
    ct = _compute_dtype(input, output)
    x = np.ascontiguousarray(input, dtype=ct)
    direct = output.dtype == ct and output.flags.c_contiguous
    if direct and np.may_share_memory(x, output):
        # A pass along the last axis copies each line before writing it, so it may run in
        # place; a pass along another axis reads rows it has already written.
        direct = (_is_lines(x.shape, axis) and x.ctypes.data == output.ctypes.data
                  and x.strides == output.strides)
    y = output if direct else np.empty(input.shape, ct)
    if input.size:
        kernel(_as3(x, axis), _as3(y, axis), *params)
    if not direct:
        _store(output, y)
    return output


def _is_lines(shape, axis) -> bool:
    return int(np.prod(shape[axis + 1:], dtype=np.int64)) == 1


def _chain(input, output, passes, cval):
    """Runs 1-D passes [(axis, run(inp, out), desc)] from input to output, each pass stored
    in the output dtype as SciPy does. Two passes over the last two axes, computed in the
    output's dtype, run as one fused native call (no full-size intermediate). Otherwise a
    pass along a non-last axis cannot run in place, so the pass before it writes a scratch
    array of the output dtype instead of output (ping-pong) rather than copying
    afterwards."""
    if _fusable(input, output, passes):
        return _fused2(input, output, passes, cval)
    cur, tmp = input, None
    for j, (axis, run, _) in enumerate(passes):
        target = output
        if j + 1 < len(passes) and not _is_lines(input.shape, passes[j + 1][0]):
            if cur is output or tmp is None or cur is not tmp:
                if tmp is None:
                    tmp = np.empty(input.shape, output.dtype)
                target = tmp
        run(cur, target)
        cur = target
    return output


def _fusable(input, output, passes) -> bool:
    nd = input.ndim
    return (len(passes) == 2 and nd >= 2 and input.size > 0
            and {passes[0][0], passes[1][0]} == {nd - 2, nd - 1}
            and all(p[2] is not None for p in passes)
            and output.dtype == _compute_dtype(_raw(input), output))


def _fused2(input, output, passes, cval):
    """The two passes of _chain over the last two axes in one native call; desc =
    (kind, weights, length, shift, sym, mode code), kind 1 a running mean."""
    input = _raw(input)
    ct = output.dtype
    x = np.ascontiguousarray(input, dtype=ct)
    x3 = x.reshape((-1,) + x.shape[-2:])
    direct = output.flags.c_contiguous and not np.may_share_memory(x, output)
    y = output if direct else np.empty(x.shape, ct)
    h_first = passes[0][0] == input.ndim - 2
    dh, dw = (passes[0][2], passes[1][2]) if h_first else (passes[1][2], passes[0][2])

    def split(d):
        kind, w, L, shift, sym, code = d
        w = np.zeros(1, ct) if w is None else np.ascontiguousarray(w, dtype=ct)
        return w, (kind, L, shift, sym, code)

    wh, ph = split(dh)
    ww, pw = split(dw)
    op_impl("native", _native(), "ndimage_separable2d")(
        x3, y.reshape(x3.shape), wh, ph, ww, pw, h_first, ct.type(cval))
    if not direct:
        _store(output, y)
    return output


def _symmetry(w) -> int:
    """SciPy's test: 1 symmetric, -1 antisymmetric (odd length only), else 0."""
    L = w.shape[0]
    if not L & 1:
        return 0
    c = L // 2
    if all(abs(w[c + i] - w[c - i]) <= _DBL_EPS for i in range(1, c + 1)):
        return 1
    if all(abs(w[c + i] + w[c - i]) <= _DBL_EPS for i in range(1, c + 1)):
        return -1
    return 0


def _complex_via_real(func, input, weights, output, cval, **kwargs):
    """SciPy's _complex_via_real_components."""
    complex_input = input.dtype.kind == "c"
    complex_weights = weights.dtype.kind == "c"
    if complex_input and complex_weights:
        func(input.real, weights.real, output=output.real, cval=np.real(cval), **kwargs)
        output.real -= func(input.imag, weights.imag, output=None, cval=np.imag(cval),
                            **kwargs)
        func(input.real, weights.imag, output=output.imag, cval=np.real(cval), **kwargs)
        output.imag += func(input.imag, weights.real, output=None, cval=np.imag(cval),
                            **kwargs)
    elif complex_input:
        func(input.real, weights, output=output.real, cval=np.real(cval), **kwargs)
        func(input.imag, weights, output=output.imag, cval=np.imag(cval), **kwargs)
    else:
        if np.iscomplexobj(cval):
            raise ValueError("Cannot provide a complex-valued cval when the input is real.")
        func(input, weights.real, output=output.real, cval=cval, **kwargs)
        func(input, weights.imag, output=output.imag, cval=cval, **kwargs)
    return output


def _real_cval(cval):
    """SciPy's C layer refuses a complex cval for real data with this TypeError."""
    if isinstance(cval, (complex, np.complexfloating)) or np.iscomplexobj(cval):
        raise TypeError("must be real number, not complex")
    return float(cval)


def _invalid_origin(origin, lenw):
    return origin < -(lenw // 2) or origin > (lenw - 1) // 2


# --------------------------------------------------------------------------- 1-D


def correlate1d(input, weights, axis=-1, output=None, mode="reflect", cval=0.0, origin=0):
    """1-D correlation along ``axis``, as :func:`scipy.ndimage.correlate1d`.

    ``out[..., i, ...] = sum_k weights[k] * ext(input)[..., i + k - (len(weights) // 2 +
    origin), ...]`` where ``ext`` extends the axis by ``mode`` (``cval`` for
    ``"constant"``). Returns ``output`` (an array of the input's dtype when None).
    """
    if _lib(input, weights, output) == "cupy":
        return _gpu("correlate1d", (input, weights, axis, output, mode, cval, origin), {})
    input = np.asarray(input)
    weights = np.asarray(weights)
    if input.dtype.kind == "c" or weights.dtype.kind == "c":
        if weights.dtype.kind == "c":
            weights = weights.conj().astype(np.complex128, copy=False)
        output = _get_output(output, input, complex_output=True)
        return _complex_via_real(correlate1d, input, weights, output, cval, axis=axis,
                                 mode=mode, origin=origin)
    output = _get_output(output, input)
    weights = np.asarray(weights, dtype=np.float64)
    if weights.ndim != 1 or weights.shape[0] < 1:
        raise RuntimeError("no filter weights given")
    axis = _normalize_axis(axis, input.ndim)
    if _invalid_origin(origin, len(weights)):
        raise ValueError("Invalid origin; origin must satisfy -(len(weights) // 2) <= "
                         "origin <= (len(weights)-1) // 2")
    code = _mode_code(mode)
    _check_types(input, output)
    return _correlate1d_into(input, weights, axis, output, code, _real_cval(cval),
                             int(origin))


def _pass_correlate1d(weights, axis, code, cval, origin=0):
    """A _chain pass: (axis, run, fusion descriptor)."""
    weights = np.asarray(weights, dtype=np.float64)
    desc = (0, weights, len(weights), len(weights) // 2 + origin, _symmetry(weights), code)
    return (axis, lambda inp, out: _correlate1d_into(inp, weights, axis, out, code, cval,
                                                     origin), desc)


def _correlate1d_into(input, weights, axis, output, code, cval, origin):
    ct = _compute_dtype(input, output)
    w = np.ascontiguousarray(weights, dtype=ct)
    shift = len(weights) // 2 + origin
    fn = op_impl("native", _native(), "ndimage_correlate1d")
    return _run_pass(lambda x, y: fn(x, y, w, shift, _symmetry(weights), code, ct.type(cval)),
                     input, output, axis)


def convolve1d(input, weights, axis=-1, output=None, mode="reflect", cval=0.0, origin=0):
    """1-D convolution along ``axis``, as :func:`scipy.ndimage.convolve1d`: a
    :func:`correlate1d` with reversed weights and origin ``-origin`` (``-origin - 1`` for
    an even number of weights)."""
    if _lib(input, weights, output) == "cupy":
        return _gpu("convolve1d", (input, weights, axis, output, mode, cval, origin), {})
    weights = np.asarray(weights)
    weights = weights[::-1]
    origin = -origin
    if not weights.shape[0] & 1:
        origin -= 1
    if weights.dtype.kind == "c":
        weights = weights.conj()
    return correlate1d(input, weights, axis, output, mode, cval, origin)


def uniform_filter1d(input, size, axis=-1, output=None, mode="reflect", cval=0.0, origin=0):
    """Mean over ``size`` neighbours along ``axis``, as :func:`scipy.ndimage.uniform_filter1d`
    (SciPy's running sum in float64)."""
    if _lib(input, output) == "cupy":
        return _gpu("uniform_filter1d", (input, size, axis, output, mode, cval, origin), {})
    input = np.asarray(input)
    axis = _normalize_axis(axis, input.ndim)
    if size < 1:
        raise RuntimeError("incorrect filter size")
    complex_output = input.dtype.kind == "c"
    output = _get_output(output, input, complex_output=complex_output)
    if (size // 2 + origin < 0) or (size // 2 + origin >= size):
        raise ValueError("invalid origin")
    code = _mode_code(mode)
    if complex_output:
        _uniform_into(input.real, int(size), axis, output.real, code, np.real(cval), origin)
        _uniform_into(input.imag, int(size), axis, output.imag, code, np.imag(cval), origin)
        return output
    _check_types(input, output)
    return _uniform_into(input, int(size), axis, output, code, _real_cval(cval), origin)


def _uniform_into(input, size, axis, output, code, cval, origin):
    fn = op_impl("native", _native(), "ndimage_uniform1d")
    shift = size // 2 + int(origin)
    return _run_pass(lambda x, y: fn(x, y, size, shift, code, float(cval)), input, output,
                     axis)


def _gaussian_kernel1d(sigma, order, radius):
    """SciPy's Gaussian (derivative) weights on [-radius, radius]."""
    if order < 0:
        raise ValueError("order must be non-negative")
    exponent_range = np.arange(order + 1)
    sigma2 = sigma * sigma
    x = np.arange(-radius, radius + 1)
    phi_x = np.exp(-0.5 / sigma2 * x ** 2)
    phi_x = phi_x / phi_x.sum()
    if order == 0:
        return phi_x
    # f(x) = q(x) exp(p(x)); each derivative maps q to q' + q p' with p' = -x / sigma^2.
    q = np.zeros(order + 1)
    q[0] = 1
    D = np.diag(exponent_range[1:], 1)
    P = np.diag(np.ones(order) / -sigma2, -1)
    Q_deriv = D + P
    for _ in range(order):
        q = Q_deriv.dot(q)
    q = (x[:, None] ** exponent_range).dot(q)
    return q * phi_x


def gaussian_filter1d(input, sigma, axis=-1, order=0, output=None, mode="reflect", cval=0.0,
                      truncate=4.0, *, radius=None):
    """1-D Gaussian filter (``order`` > 0: its derivative), as
    :func:`scipy.ndimage.gaussian_filter1d`; the radius is ``int(truncate * sigma + 0.5)``
    unless ``radius`` is given."""
    if _lib(input, output) == "cupy":
        return _gpu("gaussian_filter1d", (input, sigma, axis, order, output, mode, cval,
                                          truncate), {"radius": radius})
    sd = float(sigma)
    lw = int(truncate * sd + 0.5)
    if radius is not None:
        lw = radius
    if not isinstance(lw, numbers.Integral) or lw < 0:
        raise ValueError("Radius must be a nonnegative integer.")
    weights = _gaussian_kernel1d(sigma, order, lw)[::-1]
    return correlate1d(input, weights, axis, output, mode, cval, 0)


# --------------------------------------------------------------------------- separable


def uniform_filter(input, size=3, output=None, mode="reflect", cval=0.0, origin=0, *,
                   axes=None):
    """Multi-dimensional mean filter, as :func:`scipy.ndimage.uniform_filter`: one native
    running-mean pass per axis with ``size > 1``; ``size``, ``origin`` and ``mode`` may be
    per-axis sequences."""
    if _lib(input, output) == "cupy":
        return _gpu("uniform_filter", (input, size, output, mode, cval, origin),
                    {"axes": axes})
    input = np.asarray(input)
    output = _get_output(output, input, complex_output=input.dtype.kind == "c")
    axes = _check_axes(axes, input.ndim)
    n = len(axes)
    sizes = _normalize_sequence(size, n)
    origins = _normalize_sequence(origin, n)
    modes = _normalize_sequence(mode, n)
    todo = [(axes[i], sizes[i], origins[i], modes[i]) for i in range(n) if sizes[i] > 1]
    if not todo:
        output[...] = input[...]
        return output
    if input.dtype.kind == "c":
        for axis, sz, org, md in todo:
            uniform_filter1d(input, int(sz), axis, output, md, cval, org)
            input = output
        return output
    passes = []
    for axis, sz, org, md in todo:
        sz = int(sz)
        if (sz // 2 + org < 0) or (sz // 2 + org >= sz):
            raise ValueError("invalid origin")
        code = _mode_code(md)
        passes.append((axis, lambda i, o, axis=axis, sz=sz, code=code, org=org:
                       _uniform_into(i, sz, axis, o, code, cv, org),
                       (1, None, sz, sz // 2 + int(org), 0, code)))
    _check_types(input, output)
    cv = _real_cval(cval)
    return _chain(input, output, passes, cv)


def gaussian_filter(input, sigma, order=0, output=None, mode="reflect", cval=0.0,
                    truncate=4.0, *, radius=None, axes=None):
    """Multi-dimensional Gaussian filter, as :func:`scipy.ndimage.gaussian_filter`: one
    native 1-D pass per axis with ``sigma > 1e-15``; ``sigma``, ``order``, ``mode`` and
    ``radius`` may be per-axis sequences."""
    if _lib(input, output) == "cupy":
        return _gpu("gaussian_filter", (input, sigma, order, output, mode, cval, truncate),
                    {"radius": radius, "axes": axes})
    input = np.asarray(input)
    output = _get_output(output, input)
    axes = _check_axes(axes, input.ndim)
    n = len(axes)
    orders = _normalize_sequence(order, n)
    sigmas = _normalize_sequence(sigma, n)
    modes = _normalize_sequence(mode, n)
    radii = _normalize_sequence(radius, n)
    todo = [(axes[i], sigmas[i], orders[i], modes[i], radii[i]) for i in range(n)
            if sigmas[i] > 1e-15]
    if not todo:
        output[...] = input[...]
        return output
    if input.dtype.kind == "c" or output.dtype.kind == "c":
        for axis, sg, od, md, rd in todo:
            gaussian_filter1d(input, sg, axis, od, output, md, cval, truncate, radius=rd)
            input = output
        return output
    _check_types(input, output)
    cval = _real_cval(cval)
    passes = []
    for axis, sg, od, md, rd in todo:
        lw = int(truncate * float(sg) + 0.5) if rd is None else rd
        if not isinstance(lw, numbers.Integral) or lw < 0:
            raise ValueError("Radius must be a nonnegative integer.")
        w = _gaussian_kernel1d(sg, od, lw)[::-1]
        passes.append(_pass_correlate1d(w, axis, _mode_code(md), cval))
    return _chain(input, output, passes, cval)


def _edge(name, smooth, input, axis, output, mode, cval):
    if _lib(input, output) == "cupy":
        return _gpu(name, (input, axis, output, mode, cval), {})
    input = np.asarray(input)
    axis = _normalize_axis(axis, input.ndim)
    output = _get_output(output, input)
    modes = _normalize_sequence(mode, input.ndim)
    if input.dtype.kind == "c" or output.dtype.kind == "c":
        correlate1d(input, [-1, 0, 1], axis, output, modes[axis], cval, 0)
        for ii in range(input.ndim):
            if ii != axis:
                correlate1d(output, smooth, ii, output, modes[ii], cval, 0)
        return output
    codes = [_mode_code(m) for m in modes]
    _check_types(input, output)
    cval = _real_cval(cval)
    passes = [_pass_correlate1d([-1, 0, 1], axis, codes[axis], cval)]
    passes += [_pass_correlate1d(smooth, ii, codes[ii], cval)
               for ii in range(input.ndim) if ii != axis]
    return _chain(input, output, passes, cval)


def sobel(input, axis=-1, output=None, mode="reflect", cval=0.0):
    """Sobel derivative along ``axis`` (``[-1, 0, 1]``, then ``[1, 2, 1]`` along every other
    axis, each pass stored in the output dtype), as :func:`scipy.ndimage.sobel`."""
    return _edge("sobel", [1, 2, 1], input, axis, output, mode, cval)


def prewitt(input, axis=-1, output=None, mode="reflect", cval=0.0):
    """Prewitt derivative along ``axis`` (``[-1, 0, 1]``, then ``[1, 1, 1]`` along every
    other axis), as :func:`scipy.ndimage.prewitt`."""
    return _edge("prewitt", [1, 1, 1], input, axis, output, mode, cval)


def laplace(input, output=None, mode="reflect", cval=0.0, *, axes=None):
    """Discrete Laplacian (sum over ``axes`` of ``[1, -2, 1]`` second differences, each in the
    output dtype), as :func:`scipy.ndimage.laplace`."""
    if _lib(input, output) == "cupy":
        return _gpu("laplace", (input, output, mode, cval), {"axes": axes})
    input = np.asarray(input)
    output = _get_output(output, input)
    axes = _check_axes(axes, input.ndim)
    if not axes:
        output[...] = input[...]
        return output
    modes = _normalize_sequence(mode, len(axes))
    correlate1d(input, [1, -2, 1], axes[0], output, modes[0], cval, 0)
    for ii in range(1, len(axes)):
        tmp = correlate1d(input, [1, -2, 1], axes[ii], output.dtype, modes[ii], cval, 0)
        output += tmp
    return output


# --------------------------------------------------------------------------- n-D


def correlate(input, weights, output=None, mode="reflect", cval=0.0, origin=0, *, axes=None):
    """Multi-dimensional correlation, as :func:`scipy.ndimage.correlate`.

    ``weights`` has one dimension per axis in ``axes`` (all axes by default); taps whose
    ``|weight| <= 2.2e-16`` are skipped, as SciPy skips them (so a NaN under a zero weight
    does not spread). ``origin`` is an int or one per axis.
    """
    return _correlate_or_convolve(input, weights, output, mode, cval, origin, False, axes)


def convolve(input, weights, output=None, mode="reflect", cval=0.0, origin=0, *, axes=None):
    """Multi-dimensional convolution, as :func:`scipy.ndimage.convolve`: :func:`correlate`
    with the weights flipped on every axis and each origin negated (minus one more for an
    even-sized axis)."""
    return _correlate_or_convolve(input, weights, output, mode, cval, origin, True, axes)


def _correlate_or_convolve(input, weights, output, mode, cval, origin, convolution, axes):
    name = "convolve" if convolution else "correlate"
    if _lib(input, weights, output) == "cupy":
        return _gpu(name, (input, weights, output, mode, cval, origin), {"axes": axes})
    input = np.asarray(input)
    weights = np.asarray(weights)
    if input.dtype.kind == "c" or weights.dtype.kind == "c":
        if weights.dtype.kind == "c" and not convolution:
            weights = weights.conj()
        output = _get_output(output, input, complex_output=True)
        return _complex_via_real(
            lambda i, w, output=None, cval=0.0, **kw: _correlate_or_convolve(
                i, w, output, kw["mode"], cval, kw["origin"], convolution, kw["axes"]),
            input, weights, output, cval, mode=mode, origin=origin, axes=axes)
    axes = _check_axes(axes, input.ndim)
    weights = np.asarray(weights, dtype=np.float64)
    ndim = input.ndim
    if len(axes) < ndim:
        if weights.ndim != len(axes):
            raise RuntimeError(f"weights.ndim ({weights.ndim}) must match len(axes) "
                               f"({len(axes)})")
        weights = np.expand_dims(weights, tuple(ax for ax in range(ndim) if ax not in axes))
    origins = _normalize_sequence(origin, len(axes))
    if len(axes) < ndim:
        full = [0] * ndim
        for o, ax in zip(origins, axes):
            full[ax] = o
        origins = full
    wshape = [s for s in weights.shape if s > 0]
    if len(wshape) != ndim:
        raise RuntimeError(f"weights.ndim ({len(wshape)}) must match len(axes) ({len(axes)})")
    if convolution:
        weights = weights[(slice(None, None, -1),) * weights.ndim]
        for i in range(len(origins)):
            origins[i] = -origins[i]
            if not weights.shape[i] & 1:
                origins[i] -= 1
    for o, lenw in zip(origins, wshape):
        if _invalid_origin(o, lenw):
            raise ValueError("Invalid origin; origin must satisfy -(weights.shape[k] // 2) "
                             "<= origin[k] <= (weights.shape[k]-1) // 2")
    output = _get_output(output, input)
    if not isinstance(mode, str) and isinstance(mode, Iterable):
        raise RuntimeError("A sequence of modes is not supported")
    code = _mode_code(mode)
    _check_types(input, output)
    cval = _real_cval(cval)
    if input.size == 0:
        return output
    if ndim == 0:  # a scalar: one tap
        _store(output, np.asarray(_raw(input), np.float64) * weights.reshape(()))
        return output
    # SciPy's footprint: taps with |w| <= DBL_EPSILON take no part in the sum.
    weights = np.where(np.abs(weights) > _DBL_EPS, weights, 0.0)
    shifts = [s // 2 + int(o) for s, o in zip(weights.shape, origins)]
    ct = _compute_dtype(input, output)
    input = _raw(input)
    active = [ax for ax in range(ndim) if weights.shape[ax] > 1]
    if len(active) > 2 or ndim == 0:
        ref = get_backend("reference", "numpy", None, name)[1]
        y = op_impl("reference", ref, "ndimage_correlate_nd")(
            input.astype(np.float64), weights, shifts, code, float(cval))
        _store(output, y)
        return output
    # Move the (at most two) axes the weights vary along to the end: one native 2-D pass
    # over a stack of planes.
    rest = [ax for ax in range(ndim) if ax not in active]
    order = rest + active
    x = np.ascontiguousarray(np.transpose(input, order), dtype=ct)
    if x.ndim == 1:
        x = x[None, :]
    sh = [shifts[ax] for ax in order][-2:]
    wt = np.transpose(weights, order)
    w2 = np.ascontiguousarray(wt.reshape(wt.shape[-2:] if wt.ndim >= 2 else (1, wt.shape[-1])),
                              dtype=ct)
    if len(sh) == 1:
        sh = [0] + sh
    x3 = x.reshape((-1,) + x.shape[-2:])
    in_place = (order == list(range(ndim)) and output.dtype == ct
                and output.flags.c_contiguous and not np.may_share_memory(x, output))
    y3 = output.reshape(x3.shape) if in_place else np.empty_like(x3)
    op_impl("native", _native(), "ndimage_correlate2d")(x3, y3, w2, (sh[0], sh[1]), code,
                                                         ct.type(cval))
    if in_place:
        return output
    y = y3.reshape(x.shape)
    if input.ndim == 1:
        y = y[0]
    else:
        y = np.transpose(y, np.argsort(order))
    _store(output, y)
    return output
