"""Collection-time enumeration of the (backend, algorithm) pairs available here, so the
generic tests cover every kernel that exists without listing them by hand."""
from __future__ import annotations

import numpy as np

import fastconv
from fastconv import _dispatch
from fastconv._args import conv_spec

CPU_BACKENDS = [n for n in ("native", "numba", "reference")
                if fastconv.backends()[n]["available"]]
OPTIMISED_CPU = [n for n in CPU_BACKENDS if n != "reference"]


def module(name):
    return _dispatch.load_backend(name)


def dtypes(name):
    return [np.dtype(d).type for d in getattr(module(name), "DTYPES", ("float32", "float64"))]


def conv_params(cases, op):
    """pytest params (backend, algo, dtype, case) for every algo able to serve each case."""
    import pytest

    out = []
    for be in CPU_BACKENDS:
        for algo in _dispatch.implemented_algos(module(be), op):
            for dt in dtypes(be):
                for case in cases:
                    name, xs, ws, kw = case
                    spec = conv_spec(xs, ws, **kw)
                    if _dispatch.obstacle(algo, spec) is None:
                        out.append(pytest.param(be, algo, dt, case,
                                                id=f"{be}-{algo}-{np.dtype(dt).name}-{name}"))
    return out
