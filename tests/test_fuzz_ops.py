"""Hypothesis over the argument space of the ops that test_properties.py (conv2d forward and
backward, max/avg pooling forward) does not fuzz: conv1d, conv_transpose2d, the pooling
gradients and adaptive pooling, batch/group/layer norm, linear, cross_entropy and relu on
every optimised CPU backend against backends/reference.py; signal and ndimage against SciPy.
Then hostile arguments to every op in a child process, which must end in a result or a
ValueError/TypeError/MemoryError and never take the process down.

Derandomized (the same examples on every run, so CI is reproducible) and small: the whole
file takes about 30 s on 2 cores. FASTCONV_FUZZ_EXAMPLES=500 (examples per test) runs a
deeper sweep by hand."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fastconv as fc

from _backends import OPTIMISED_CPU
from conftest import FASTCONV_PATH, assert_close

EXAMPLES = int(os.environ.get("FASTCONV_FUZZ_EXAMPLES", "25"))
SETTINGS = settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow])
DTYPES = st.sampled_from([np.float32, np.float64])
REF = "reference"


def _arrays(seed, dtype, *shapes):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(s).astype(dtype) for s in shapes]


def _close_all(got, want, dtype, terms, what):
    for i, (g, w) in enumerate(zip(got, want)):
        if w is None:
            assert g is None, f"{what}[{i}]"
        else:
            assert_close(g, w, dtype, terms, f"{what}[{i}]")


# ------------------------------------------------------------------------- convolutions


@st.composite
def conv1d_case(draw):
    groups = draw(st.sampled_from([1, 1, 2, 3]))
    C, K = groups * draw(st.integers(1, 3)), groups * draw(st.integers(1, 3))
    R, d = draw(st.integers(1, 5)), draw(st.integers(1, 3))
    padding = draw(st.one_of(st.integers(0, 3), st.just("valid")))
    stride = draw(st.integers(1, 3))
    if draw(st.booleans()):
        padding, stride = "same", 1
    L = draw(st.integers(d * (R - 1) + 1, 20))
    return dict(x=(draw(st.integers(0, 2)), C, L), w=(K, C // groups, R),
                kw=dict(stride=stride, padding=padding, dilation=d, groups=groups))


@SETTINGS
@given(case=conv1d_case(), dtype=DTYPES, seed=st.integers(0, 2**16))
def test_conv1d_forward_backward_agree_with_reference(case, dtype, seed):
    x, w, b = _arrays(seed, dtype, case["x"], case["w"], case["w"][:1])
    kw = case["kw"]
    want = fc.conv1d(x, w, b, **kw, backend=REF)
    gy, = _arrays(seed + 1, dtype, want.shape)
    want_g = fc.conv1d_backward(gy, x, w, **kw, backend=REF)
    terms = int(np.prod(w.shape[1:]))
    for be in OPTIMISED_CPU:
        assert_close(fc.conv1d(x, w, b, **kw, backend=be), want, dtype, terms, f"{be} {kw}")
        _close_all(fc.conv1d_backward(gy, x, w, **kw, backend=be), want_g, dtype,
                   max(terms, gy.size), f"{be} backward {kw}")


@st.composite
def conv_transpose_case(draw):
    groups = draw(st.sampled_from([1, 1, 2]))
    C, K = groups * draw(st.integers(1, 3)), groups * draw(st.integers(1, 3))
    R, S = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    s = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    d = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    # torch's limits: padding at most dilation*(kernel-1), output_padding below
    # max(stride, dilation).
    p = (draw(st.integers(0, d[0] * (R - 1))), draw(st.integers(0, d[1] * (S - 1))))
    op = tuple(draw(st.integers(0, max(si, di) - 1)) for si, di in zip(s, d))
    H, W = draw(st.integers(1, 7)), draw(st.integers(1, 7))
    out = [(n - 1) * si - 2 * pi + di * (k - 1) + oi + 1
           for n, si, pi, di, k, oi in zip((H, W), s, p, d, (R, S), op)]
    if min(out) < 1:
        p = (0, 0)
    return dict(x=(draw(st.integers(0, 2)), C, H, W), w=(C, K // groups, R, S),
                kw=dict(stride=s, padding=p, output_padding=op, groups=groups, dilation=d))


@SETTINGS
@given(case=conv_transpose_case(), dtype=DTYPES, seed=st.integers(0, 2**16))
def test_conv_transpose2d_forward_backward_agree_with_reference(case, dtype, seed):
    x, w = _arrays(seed, dtype, case["x"], case["w"])
    b, = _arrays(seed + 2, dtype, (case["w"][1] * case["kw"]["groups"],))
    kw = case["kw"]
    want = fc.conv_transpose2d(x, w, b, **kw, backend=REF)
    gy, = _arrays(seed + 1, dtype, want.shape)
    want_g = fc.conv_transpose2d_backward(gy, x, w, **kw, backend=REF)
    terms = int(np.prod(w.shape[1:])) * x.shape[1]
    for be in OPTIMISED_CPU:
        assert_close(fc.conv_transpose2d(x, w, b, **kw, backend=be), want, dtype, terms,
                     f"{be} {kw}")
        _close_all(fc.conv_transpose2d_backward(gy, x, w, **kw, backend=be), want_g, dtype,
                   max(terms, gy.size), f"{be} backward {kw}")


# ------------------------------------------------------------------------- pooling


@st.composite
def pool_case(draw):
    k = (draw(st.integers(1, 4)), draw(st.integers(1, 4)))
    x = (draw(st.integers(0, 2)), draw(st.integers(1, 3)), draw(st.integers(k[0], 9)),
         draw(st.integers(k[1], 9)))
    return dict(x=x, k=k, s=(draw(st.integers(1, 3)), draw(st.integers(1, 3))),
                p=(draw(st.integers(0, k[0] // 2)), draw(st.integers(0, k[1] // 2))),
                d=draw(st.integers(1, 2)), ceil=draw(st.booleans()),
                include=draw(st.booleans()),
                divisor=draw(st.one_of(st.none(), st.integers(1, 7))))


@SETTINGS
@given(case=pool_case(), dtype=DTYPES, seed=st.integers(0, 2**16))
def test_pool_gradients_agree_with_reference(case, dtype, seed):
    x, = _arrays(seed, dtype, case["x"])
    x[..., ::3] = np.round(x[..., ::3])  # ties: the first maximum must win everywhere
    k, s, p, d, ceil = case["k"], case["s"], case["p"], case["d"], case["ceil"]
    try:
        y, idx = fc.max_pool2d(x, k, s, p, d, ceil, return_indices=True, backend=REF)
    except ValueError:  # a window that starts in the padding only: refused everywhere
        for be in OPTIMISED_CPU:
            with pytest.raises(ValueError):
                fc.max_pool2d(x, k, s, p, d, ceil, backend=be)
        return
    gy, = _arrays(seed + 1, dtype, y.shape)
    want = fc.max_pool2d_backward(gy, idx, x.shape, backend=REF)
    akw = dict(ceil_mode=ceil, count_include_pad=case["include"],
               divisor_override=case["divisor"])
    try:
        ya = fc.avg_pool2d(x, k, s, p, **akw, backend=REF)
        gya, = _arrays(seed + 2, dtype, ya.shape)
        want_a = fc.avg_pool2d_backward(gya, x.shape, k, s, p, **akw, backend=REF)
    except ValueError:
        ya = None
    for be in OPTIMISED_CPU:
        got_y, got_i = fc.max_pool2d(x, k, s, p, d, ceil, return_indices=True, backend=be)
        np.testing.assert_array_equal(got_y, y)
        np.testing.assert_array_equal(got_i, idx)
        assert_close(fc.max_pool2d_backward(gy, idx, x.shape, backend=be), want, dtype,
                     k[0] * k[1], f"{be} max backward")
        if ya is not None:
            assert_close(fc.avg_pool2d(x, k, s, p, **akw, backend=be), ya, dtype, 16, be)
            assert_close(fc.avg_pool2d_backward(gya, x.shape, k, s, p, **akw, backend=be),
                         want_a, dtype, 16, f"{be} avg backward {akw}")


@SETTINGS
@given(x=st.tuples(st.integers(0, 2), st.integers(1, 3), st.integers(1, 9), st.integers(1, 9)),
       out=st.one_of(st.integers(1, 11), st.tuples(st.one_of(st.none(), st.integers(1, 11)),
                                                   st.integers(1, 11))),
       dtype=DTYPES, seed=st.integers(0, 2**16))
def test_adaptive_avg_pool_agrees_with_reference(x, out, dtype, seed):
    xa, = _arrays(seed, dtype, x)
    want = fc.adaptive_avg_pool2d(xa, out, backend=REF)
    gy, = _arrays(seed + 1, dtype, want.shape)
    want_g = fc.adaptive_avg_pool2d_backward(gy, x, backend=REF)
    for be in OPTIMISED_CPU:
        assert_close(fc.adaptive_avg_pool2d(xa, out, backend=be), want, dtype, 81, be)
        assert_close(fc.adaptive_avg_pool2d_backward(gy, x, backend=be), want_g, dtype, 81, be)


# ------------------------------------------------------------------------- normalisation


@SETTINGS
@given(shape=st.one_of(st.tuples(st.integers(1, 4), st.integers(1, 5)),
                       st.tuples(st.integers(1, 3), st.integers(1, 5), st.integers(1, 4),
                                 st.integers(1, 4))),
       training=st.booleans(), affine=st.booleans(), scale=st.sampled_from([1e-3, 1.0, 1e3]),
       dtype=DTYPES, seed=st.integers(0, 2**16))
def test_batch_norm_agrees_with_reference(shape, training, affine, scale, dtype, seed):
    x, gy, w, b = _arrays(seed, dtype, shape, shape, shape[1:2], shape[1:2])
    x = x * dtype(scale) + dtype(3 * scale)  # an offset mean: the variance must not cancel
    if not affine:
        w = b = None
    if training and x.size // shape[1] == 1:
        return  # one value per channel: refused (tested in test_batchnorm.py)
    runs = {}
    for be in [REF, *OPTIMISED_CPU]:
        rm, rv = np.linspace(-1, 1, shape[1]).astype(dtype), np.full(shape[1], 2.0, dtype)
        y, mean, invstd = fc.batch_norm(x, rm, rv, w, b, training=training, momentum=0.3,
                                        return_stats=True, backend=be)
        g = fc.batch_norm_backward(gy, x, w, mean, invstd, training=training, backend=be)
        runs[be] = (y, mean, invstd, rm, rv, *g)
    m = x.size // shape[1]
    names = ("y", "mean", "invstd", "running_mean", "running_var", "grad_x", "grad_w",
             "grad_b")
    for be in OPTIMISED_CPU:
        _close_all(runs[be], runs[REF], dtype, m, f"{be} training={training} {names}")


@st.composite
def group_norm_case(draw):
    G = draw(st.integers(1, 3))
    C = G * draw(st.integers(1, 3))
    rest = draw(st.lists(st.integers(1, 4), min_size=0, max_size=2))
    return (draw(st.integers(0, 3)), C, *rest), G


@SETTINGS
@given(case=group_norm_case(), affine=st.booleans(), dtype=DTYPES, seed=st.integers(0, 2**16))
def test_group_norm_agrees_with_reference(case, affine, dtype, seed):
    shape, G = case
    x, gy, w, b = _arrays(seed, dtype, shape, shape, shape[1:2], shape[1:2])
    if not affine:
        w = b = None
    terms = max(1, int(np.prod(shape[1:])) // G)
    y, mean, invstd = fc.group_norm(x, G, w, b, return_stats=True, backend=REF)
    want = fc.group_norm_backward(gy, x, G, w, mean, invstd, backend=REF)
    for be in OPTIMISED_CPU:
        got = fc.group_norm(x, G, w, b, return_stats=True, backend=be)
        _close_all(got, (y, mean, invstd), dtype, terms, f"{be} group_norm")
        _close_all(fc.group_norm_backward(gy, x, G, w, got[1], got[2], backend=be), want,
                   dtype, terms * max(1, shape[0]), f"{be} group_norm backward")


@SETTINGS
@given(shape=st.lists(st.integers(0, 4), min_size=1, max_size=4), nd=st.integers(1, 3),
       affine=st.booleans(), dtype=DTYPES, seed=st.integers(0, 2**16))
def test_layer_norm_agrees_with_reference(shape, nd, affine, dtype, seed):
    nd = min(nd, len(shape))
    norm = tuple(shape[-nd:])
    if 0 in norm:
        return  # an empty normalized_shape is refused (test_norms.py)
    x, gy, w, b = _arrays(seed, dtype, shape, shape, norm, norm)
    if not affine:
        w = b = None
    terms = int(np.prod(norm))
    y, mean, invstd = fc.layer_norm(x, norm, w, b, return_stats=True, backend=REF)
    want = fc.layer_norm_backward(gy, x, norm, w, mean, invstd, backend=REF)
    for be in OPTIMISED_CPU:
        got = fc.layer_norm(x, norm, w, b, return_stats=True, backend=be)
        _close_all(got, (y, mean, invstd), dtype, terms, f"{be} layer_norm")
        _close_all(fc.layer_norm_backward(gy, x, norm, w, got[1], got[2], backend=be), want,
                   dtype, max(terms, x.size), f"{be} layer_norm backward")


# ------------------------------------------------------------------------- dense ops


@SETTINGS
@given(rows=st.integers(0, 5), inp=st.integers(0, 9), out=st.integers(0, 9),
       lead=st.booleans(), bias=st.booleans(), dtype=DTYPES, seed=st.integers(0, 2**16))
def test_linear_agrees_with_reference(rows, inp, out, lead, bias, dtype, seed):
    xs = (2, rows, inp) if lead else (rows, inp)
    x, w, b = _arrays(seed, dtype, xs, (out, inp), (out,))
    b = b if bias else None
    want = fc.linear(x, w, b, backend=REF)
    gy, = _arrays(seed + 1, dtype, want.shape)
    want_g = fc.linear_backward(gy, x, w, backend=REF)
    for be in OPTIMISED_CPU:
        assert_close(fc.linear(x, w, b, backend=be), want, dtype, inp, be)
        _close_all(fc.linear_backward(gy, x, w, backend=be), want_g, dtype,
                   max(inp, out, x.size // max(inp, 1)), f"{be} linear backward")


@SETTINGS
@given(n=st.integers(1, 6), c=st.integers(1, 12), scale=st.sampled_from([1e-3, 1.0, 30.0, 1e30]),
       dtype=DTYPES, seed=st.integers(0, 2**16))
def test_cross_entropy_and_relu_agree_with_reference(n, c, scale, dtype, seed):
    z, = _arrays(seed, dtype, (n, c))
    z = (z * scale).astype(dtype)
    t = np.random.default_rng(seed).integers(0, c, n)
    loss, grad = fc.cross_entropy(z, t, backend=REF), fc.cross_entropy_backward(z, t, backend=REF)
    y = fc.relu(z, backend=REF)
    gr = fc.relu_backward(z, y, backend=REF)
    for be in OPTIMISED_CPU:
        got = fc.cross_entropy(z, t, backend=be)
        assert np.isfinite(got)
        assert abs(got - loss) <= 1e-5 * max(1.0, abs(loss)), (be, got, loss)
        assert_close(fc.cross_entropy_backward(z, t, backend=be), grad, dtype, c, be)
        np.testing.assert_array_equal(fc.relu(z, backend=be), y)
        np.testing.assert_array_equal(fc.relu_backward(z, y, backend=be), gr)


# ------------------------------------------------------------------------- SciPy drop-ins

scipy_signal = pytest.importorskip("scipy.signal")
scipy_ndimage = pytest.importorskip("scipy.ndimage")


@SETTINGS
@given(a=st.tuples(st.integers(1, 12), st.integers(1, 12)),
       k=st.tuples(st.integers(1, 7), st.integers(1, 7)),
       mode=st.sampled_from(["full", "same", "valid"]),
       boundary=st.sampled_from(["fill", "wrap", "symm"]),
       fill=st.sampled_from([0, 1.5, -2]), convolve=st.booleans(),
       dtype=st.sampled_from([np.float32, np.float64, np.complex128, np.int32]),
       seed=st.integers(0, 2**16))
def test_signal_agrees_with_scipy(a, k, mode, boundary, fill, convolve, dtype, seed):
    rng = np.random.default_rng(seed)
    A, K = (rng.standard_normal(a) * 4, rng.standard_normal(k) * 4)
    if np.issubdtype(dtype, np.complexfloating):
        A = A + 1j * rng.standard_normal(a)
    A, K = A.astype(dtype), K.astype(dtype)
    name = "convolve2d" if convolve else "correlate2d"
    args = (A, K, mode, boundary, fill)
    try:
        want = getattr(scipy_signal, name)(*args)
    except ValueError:
        with pytest.raises(ValueError):
            getattr(fc.signal, name)(*args)
        return
    got = getattr(fc.signal, name)(*args)
    assert got.dtype == want.dtype
    if np.issubdtype(dtype, np.integer):
        np.testing.assert_array_equal(got, want)
    else:
        tol_dtype = np.float32 if dtype == np.float32 else np.float64
        for part in (np.real, np.imag):
            assert_close(part(got), part(want), tol_dtype, K.size, name)


@SETTINGS
@given(shape=st.tuples(st.integers(1, 9), st.integers(1, 9)),
       wlen=st.integers(1, 6), axis=st.sampled_from([0, 1, -1]),
       mode=st.sampled_from(["reflect", "constant", "nearest", "mirror", "wrap", "grid-wrap",
                             "grid-mirror", "grid-constant"]),
       cval=st.sampled_from([0.0, 2.5]), origin=st.integers(-3, 3),
       dtype=st.sampled_from([np.float32, np.float64, np.int16]), seed=st.integers(0, 2**16))
def test_ndimage_agrees_with_scipy(shape, wlen, axis, mode, cval, origin, dtype, seed):
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal(shape) * 10).astype(dtype)
    w = rng.standard_normal(wlen)
    w2 = rng.standard_normal((wlen, max(1, wlen - 1)))
    calls = [
        ("correlate1d", (x, w), dict(axis=axis, mode=mode, cval=cval, origin=origin)),
        ("convolve1d", (x, w), dict(axis=axis, mode=mode, cval=cval, origin=origin)),
        ("uniform_filter1d", (x, wlen), dict(axis=axis, mode=mode, cval=cval, origin=origin)),
        ("correlate", (x, w2), dict(mode=mode, cval=cval, origin=origin)),
        ("uniform_filter", (x, wlen), dict(mode=mode, cval=cval)),
    ]
    for name, args, kw in calls:
        try:
            want = getattr(scipy_ndimage, name)(*args, **kw)
        except (ValueError, RuntimeError):
            with pytest.raises((ValueError, RuntimeError)):
                getattr(fc.ndimage, name)(*args, **kw)
            continue
        got = getattr(fc.ndimage, name)(*args, **kw)
        assert got.dtype == want.dtype, name
        if np.issubdtype(dtype, np.integer):
            # scipy rounds through float64 then truncates; a float32 sum may land on the
            # other side of an integer: off by at most one.
            assert np.max(np.abs(got.astype(int) - want.astype(int)), initial=0) <= 1, name
        else:
            assert_close(got, want, dtype, w2.size, f"{name} {kw}")


# ------------------------------------------------------------------------- hostile arguments

_CHILD = textwrap.dedent(r"""
    import json, os, sys, faulthandler
    import numpy as np
    faulthandler.enable()
    if not os.environ.get("FASTCONV_ASAN"):  # ASan's shadow memory cannot live under a cap
        import resource
        resource.setrlimit(resource.RLIMIT_AS, (6 << 30, 6 << 30))
    import fastconv as fc
    from hypothesis import given, settings, HealthCheck, strategies as st

    # A filter size near 2^40 makes the native ndimage line buffer a failed operator new:
    # std::bad_alloc, a MemoryError here, but under ASan an abort (its operator new cannot
    # return failure), so the ASan run keeps that size allocatable.
    SIZE_MOD = 2**16 if os.environ.get("FASTCONV_ASAN") else 2**40

    OK = (ValueError, TypeError, MemoryError)
    BIG = st.sampled_from([0, 1, 2, 3, 7, -1, -5, 2**31 - 1, 2**31, 2**32 + 1, 2**62, 2**63])
    SMALL = st.integers(-1, 4)
    counts = {}

    def arr(shape, dtype=np.float32):
        return np.random.default_rng(0).standard_normal(shape).astype(dtype)

    def attempt(name, fn, *args, **kw):
        # printed first: if this call takes the process down, stderr names it
        print(f"CASE {name} {args!r:.300} {kw!r:.300}", file=sys.stderr, flush=True)
        try:
            fn(*args, **kw)
        except OK:
            pass
        counts[name] = counts.get(name, 0) + 1

    shape4 = st.tuples(st.integers(0, 2), st.integers(1, 3), st.integers(1, 6), st.integers(1, 6))

    @settings(max_examples=int(sys.argv[1]), deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    @given(xs=shape4, k=st.tuples(BIG, BIG), s=st.one_of(BIG, st.tuples(SMALL, BIG)),
           p=st.one_of(BIG, st.tuples(SMALL, SMALL)), d=st.one_of(SMALL, BIG),
           op=st.tuples(SMALL, BIG), g=SMALL, be=st.sampled_from(sys.argv[2].split(",")),
           ceil=st.booleans())
    def sweep(xs, k, s, p, d, op, g, be, ceil):
        x = arr(xs)
        C = xs[1]
        attempt("max_pool2d", fc.max_pool2d, x, k, s, p, d, ceil, True, backend=be)
        attempt("avg_pool2d", fc.avg_pool2d, x, k, s, p, ceil, backend=be)
        attempt("avg_pool2d_backward", fc.avg_pool2d_backward, arr((xs[0], C, 2, 2)), xs, k,
                s, p, ceil, backend=be)
        attempt("max_pool2d_backward", fc.max_pool2d_backward, arr((xs[0], C, 2, 2)),
                np.full((xs[0], C, 2, 2), k[0] % 64, np.int64), xs, backend=be)
        attempt("adaptive_avg_pool2d", fc.adaptive_avg_pool2d, x, k, backend=be)
        attempt("adaptive_avg_pool2d_backward", fc.adaptive_avg_pool2d_backward,
                arr((xs[0], C, abs(k[0]) % 5, abs(k[1]) % 5)), xs, backend=be)
        w1 = arr((max(g, 1), C, abs(k[0]) % 6 + 1))
        attempt("conv1d", fc.conv1d, x[:, :, 0], w1, None, s if isinstance(s, int) else s[1],
                p if isinstance(p, int) else p[0], d, g, backend=be)
        wt = arr((C, abs(k[1]) % 3 + 1, abs(k[0]) % 4 + 1, 2))
        attempt("conv_transpose2d", fc.conv_transpose2d, x, wt, None, s, p, op, g, d,
                backend=be)
        attempt("conv_transpose2d_backward", fc.conv_transpose2d_backward,
                arr((xs[0], wt.shape[1], 3, 3)), x, wt, s, p, op, g, d, backend=be)
        attempt("conv2d_backward", fc.conv2d_backward, arr((xs[0], 2, 2, 2)), x,
                arr((2, C, 3, 3)), s, p, d, g, backend=be)
        attempt("group_norm", fc.group_norm, x, g, backend=be)
        attempt("layer_norm", fc.layer_norm, x, xs[-abs(g) % 4:] or (k[0],), backend=be)
        rm, rv = np.zeros(C, np.float32), np.ones(C, np.float32)
        attempt("batch_norm", fc.batch_norm, x, rm, rv, training=ceil,
                momentum=float(op[0]), eps=float(d) * 1e-3, backend=be)
        attempt("linear", fc.linear, x.reshape(-1, xs[-1]), arr((abs(k[0]) % 5, abs(g) % 7)),
                backend=be)
        attempt("cross_entropy", fc.cross_entropy, x.reshape(-1, xs[-1]),
                np.full(x.size // xs[-1], k[0] % 2**40, np.int64), backend=be)
        attempt("correlate2d", fc.signal.correlate2d, x[0, 0] if xs[0] else x[0:0, 0, 0],
                arr((abs(k[0]) % 9 + 1, abs(k[1]) % 9 + 1)),
                ["full", "same", "valid"][abs(g) % 3], ["fill", "wrap", "symm"][abs(d) % 3])
        attempt("ndimage.correlate1d", fc.ndimage.correlate1d, x, arr(abs(k[0]) % 7 + 1),
                axis=g, origin=op[0], mode=["reflect", "wrap", "nearest"][abs(d) % 3])
        attempt("ndimage.uniform_filter", fc.ndimage.uniform_filter, x, k[0] % SIZE_MOD or 1,
                origin=op[0])

    sweep()
    print(json.dumps(counts))
""")


def test_hostile_arguments_never_take_the_process_down():
    """Huge, negative and mismatched sizes, strides and paddings for every op, in a child
    process under a 6 GB address-space cap: each call returns or raises ValueError /
    TypeError / MemoryError. A crash names its case (each is printed before it runs)."""
    env = {**os.environ, "FASTCONV_NUM_THREADS": "2",
           "PYTHONPATH": os.pathsep.join([FASTCONV_PATH, os.environ.get("PYTHONPATH", "")])}
    args = [sys.executable, "-c", _CHILD, str(4 * EXAMPLES), ",".join(OPTIMISED_CPU)]
    proc = subprocess.run(args, capture_output=True, text=True,
                          timeout=max(240, 4 * EXAMPLES), env=env, cwd=FASTCONV_PATH)
    last = [ln for ln in proc.stderr.splitlines() if ln.startswith("CASE ")][-1:]
    assert proc.returncode == 0, f"exit {proc.returncode} at {last}\n{proc.stderr[-3000:]}"
    counts = json.loads(proc.stdout.strip().splitlines()[-1])
    assert min(counts.values()) >= 2 * EXAMPLES and len(counts) == 18, counts
