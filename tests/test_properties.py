"""Hypothesis: random valid conv2d / pooling arguments agree with the reference on every
available CPU backend; random (often invalid) arguments either work or raise
ValueError/TypeError -- never anything else."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fastconv as fc
from fastconv import _dispatch

from _backends import OPTIMISED_CPU, module
from conftest import assert_close

SETTINGS = settings(max_examples=40, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow])


@st.composite
def conv_case(draw):
    groups = draw(st.sampled_from([1, 1, 2, 3]))
    cg = draw(st.integers(1, 3))
    kg = draw(st.integers(1, 3))
    R, S = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    dh, dw = draw(st.integers(1, 2)), draw(st.integers(1, 2))
    padding = draw(st.one_of(st.integers(0, 2), st.tuples(st.integers(0, 2), st.integers(0, 2)),
                             st.just("valid")))
    stride = draw(st.one_of(st.integers(1, 3), st.tuples(st.integers(1, 3), st.integers(1, 3))))
    if draw(st.booleans()):
        padding, stride = "same", 1
    # Inputs at least as large as the dilated kernel so every case is valid.
    H = draw(st.integers(dh * (R - 1) + 1, 12))
    W = draw(st.integers(dw * (S - 1) + 1, 12))
    N = draw(st.integers(0, 3))
    return dict(x_shape=(N, cg * groups, H, W), w_shape=(kg * groups, cg, R, S),
                kw=dict(stride=stride, padding=padding, dilation=(dh, dw), groups=groups),
                seed=draw(st.integers(0, 2**16)))


@pytest.mark.parametrize("backend", OPTIMISED_CPU)
@SETTINGS
@given(case=conv_case(), dtype=st.sampled_from([np.float32, np.float64]))
def test_conv_random_valid_agrees_with_reference(backend, case, dtype):
    rng = np.random.default_rng(case["seed"])
    x = rng.standard_normal(case["x_shape"]).astype(dtype)
    w = rng.standard_normal(case["w_shape"]).astype(dtype)
    kw = case["kw"]
    expect = fc.conv2d(x, w, **kw, backend="reference")
    for algo in _dispatch.implemented_algos(module(backend), "conv2d_forward"):
        spec = fc._args.conv_spec(x.shape, w.shape, **kw)
        if _dispatch.obstacle(algo, spec) is not None:
            continue
        y = fc.conv2d(x, w, **kw, algo=algo, backend=backend)
        assert_close(y, expect, dtype, int(np.prod(w.shape[1:])), f"{algo} {kw}")
    gy = rng.standard_normal(expect.shape).astype(dtype)
    got = fc.conv2d_backward(gy, x, w, **kw, backend=backend)
    ref = fc.conv2d_backward(gy, x, w, **kw, backend="reference")
    for g, r in zip(got, ref):
        assert_close(g, r, dtype, max(1, gy.size), f"backward {kw}")


@SETTINGS
@given(
    xs=st.tuples(st.integers(-1, 3), st.integers(-1, 4), st.integers(-1, 8), st.integers(-1, 8)),
    ws=st.tuples(st.integers(-1, 4), st.integers(-1, 4), st.integers(-1, 9), st.integers(-1, 9)),
    stride=st.one_of(st.integers(-1, 3), st.tuples(st.integers(-1, 3), st.integers(-1, 3)),
                     st.just((1, 1, 1)), st.just(1.5)),
    padding=st.one_of(st.integers(-2, 3), st.sampled_from(["same", "valid", "full"])),
    dilation=st.integers(-1, 3),
    groups=st.integers(-1, 4),
)
def test_conv_random_arguments_fail_cleanly(xs, ws, stride, padding, dilation, groups):
    if min(xs) < 0 or min(ws) < 0:
        return  # numpy cannot even build negative shapes
    x = np.zeros(xs, np.float32)
    w = np.zeros(ws, np.float32)
    try:
        y = fc.conv2d(x, w, stride=stride, padding=padding, dilation=dilation, groups=groups)
    except (ValueError, TypeError):
        return
    assert y.shape[0] == xs[0] and y.shape[1] == ws[0]


@SETTINGS
@given(
    xs=st.tuples(st.integers(0, 2), st.integers(1, 3), st.integers(1, 9), st.integers(1, 9)),
    k=st.tuples(st.integers(1, 4), st.integers(1, 4)),
    s=st.tuples(st.integers(1, 3), st.integers(1, 3)),
    p=st.tuples(st.integers(0, 2), st.integers(0, 2)),
    d=st.integers(1, 2),
    ceil=st.booleans(),
    include=st.booleans(),
    seed=st.integers(0, 1000),
)
def test_pool_random_agrees_with_reference_or_fails_cleanly(xs, k, s, p, d, ceil, include, seed):
    x = np.random.default_rng(seed).standard_normal(xs).astype(np.float32)
    for backend in OPTIMISED_CPU:
        try:
            y, idx = fc.max_pool2d(x, k, s, p, d, ceil, return_indices=True, backend=backend)
        except ValueError:
            with pytest.raises(ValueError):
                fc.max_pool2d(x, k, s, p, d, ceil, backend="reference")
            continue
        ey, eidx = fc.max_pool2d(x, k, s, p, d, ceil, return_indices=True, backend="reference")
        np.testing.assert_array_equal(y, ey)
        np.testing.assert_array_equal(idx, eidx)
        a = fc.avg_pool2d(x, k, s, p, ceil, include, backend=backend) if max(p[0] * 2 - k[0],
                                                                          p[1] * 2 - k[1]) <= 0 \
            else None
        if a is not None:
            assert_close(a, fc.avg_pool2d(x, k, s, p, ceil, include, backend="reference"),
                         np.float32, 16)
