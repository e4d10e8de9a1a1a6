"""The machine's peak, the denominator of every "% of peak" in ``fastconv bench``.

THE peak is the FMA-chain micro-benchmark ``fastconv._native.fma_peak_gflops`` (see
``csrc/cpu/peak.cpp``): on each of the benchmark's threads, 12 independent vector FMA
chains on the ISA the kernels run on (AVX2 or AVX-512; the generic build's separate
multiply + add), enough to hide the FMA latency on both FMA units, with every accumulator
consumed, best of 10 short runs, each thread timed in its own CPU time (on a shared
machine, wall time would count other processes' turns on the core). That is what the
cores can do at most; no convolution can pass 100% of it.

The rate of a cache-resident 256^3 GEMM (NumPy's BLAS or fastconv's own, the faster) is
kept as an extra, clearly labelled figure (``gemm_gflops``): it says how close a tuned
dense kernel gets, and it is *not* used as the peak.

Results are cached per (CPU model, core count, ISA, threads, dtype) in ``peak.json`` in
the fastconv cache directory, so each is measured once per machine.
"""
from __future__ import annotations

import json
import os
import tempfile
import time

import numpy as np

__all__ = ["peak_gflops", "measure_peak", "measure_fma_peak", "measure_gemm_peak"]

SIZE = 256
REPS = 100
FMA_SECONDS = 0.5
# Bumped when the measurement changes, so cached figures from an older method are not used.
_METHOD_VERSION = "fma2"


def _best_rate(fn, flops: float, reps: int) -> float:
    fn()
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return flops / best / 1e9


def _isa() -> str:
    try:
        from .. import _native

        return _native.active_isa()
    except ImportError:
        return "none"


def measure_fma_peak(dtype="float32", threads: int = 1, seconds: float = FMA_SECONDS) -> dict:
    """Measures the FMA-chain peak now -> ``{"gflops", "method"}``.

    Raises RuntimeError when the native extension (which holds the micro-benchmark) is
    not built.
    """
    dtype = np.dtype(dtype)
    try:
        from .. import _native
    except ImportError as e:
        raise RuntimeError(f"the FMA peak needs fastconv's native extension: {e}") from None
    g = float(_native.fma_peak_gflops(dtype.name, int(threads), float(seconds)))
    lanes = _native.fma_chain_flops(dtype.name) // 24  # 12 chains x 2 flops per lane
    return {"gflops": g, "method": f"FMA chains: 12 x {lanes}-lane {_native.active_isa()} "
            f"{dtype.name} FMA per thread, {threads} thread(s), best of 10 x {seconds / 10:.2g} s "
            "of thread CPU time"}


def measure_gemm_peak(dtype="float32", threads: int = 1, size: int = SIZE,
                      reps: int = REPS) -> dict:
    """Best cache-resident GEMM rate now (an extra figure, not the peak):
    ``{"gflops", "method", "candidates"}``."""
    dtype = np.dtype(dtype)
    rng = np.random.default_rng(0)
    a = rng.standard_normal((size, size)).astype(dtype)
    b = rng.standard_normal((size, size)).astype(dtype)
    c = np.empty((size, size), dtype)
    flops = 2.0 * size ** 3
    cands = {}
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # BLAS then runs on its default thread count; noted in the method
        threadpool_limits = None
    if threadpool_limits is not None:
        with threadpool_limits(limits=threads, user_api="blas"):
            cands["numpy-blas"] = _best_rate(lambda: np.matmul(a, b, out=c), flops, reps)
    else:
        cands["numpy-blas(default threads)"] = _best_rate(lambda: np.matmul(a, b, out=c),
                                                          flops, reps)
    try:
        from .. import _native

        gemm = _native.sgemm if dtype == np.float32 else _native.dgemm
        before = _native.num_threads()
        _native.set_num_threads(threads)
        try:
            cands["fastconv-gemm"] = _best_rate(lambda: gemm(a, b, c), flops, reps)
        finally:
            _native.set_num_threads(before)
    except (ImportError, AttributeError):
        pass
    best = max(cands, key=cands.get)
    return {"gflops": cands[best], "method": f"{best} {size}^3 {dtype.name} GEMM, "
            f"{threads} thread(s), best of {reps}", "candidates": cands}


def measure_peak(dtype="float32", threads: int = 1) -> dict:
    """Measures the peak now: ``{"gflops": FMA peak, "method": ..., "gemm_gflops": ...,
    "gemm_method": ...}``."""
    fma = measure_fma_peak(dtype, threads)
    gemm = measure_gemm_peak(dtype, threads)
    return {"gflops": fma["gflops"], "method": fma["method"], "gemm_gflops": gemm["gflops"],
            "gemm_method": gemm["method"]}


def _machine_key(dtype, threads) -> str:
    from ..autotune import cpu_model

    return (f"{cpu_model()} x{os.cpu_count() or 1}|{_isa()}|t{threads}|{np.dtype(dtype).name}"
            f"|{_METHOD_VERSION}")


def _path():
    from ..autotune import cache_dir

    return cache_dir() / "peak.json"


def peak_gflops(dtype="float32", threads: int = 1, refresh: bool = False) -> dict:
    """The cached peak for this machine, measuring (and caching) it on first use.

    Returns the :func:`measure_peak` dict plus ``"cached": bool``; ``"gflops"`` is the
    FMA-chain peak. A cache that cannot be read or written is simply not used (the
    measurement takes about a second).
    """
    path, key = _path(), _machine_key(dtype, threads)
    doc = {}
    try:
        doc = json.loads(path.read_text())
        if not isinstance(doc, dict):
            doc = {}
    except (OSError, ValueError):
        doc = {}
    hit = doc.get(key)
    if not refresh and isinstance(hit, dict) and isinstance(hit.get("gflops"), (int, float)):
        return {**hit, "cached": True}
    res = measure_peak(dtype, threads)
    doc[key] = res
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".peak-", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "w") as f:
            json.dump(doc, f, indent=1, sort_keys=True)
        os.replace(tmp, path)
    except OSError:
        pass
    return {**res, "cached": False}
