"""The machine's measured peak, the denominator of "% of peak" in ``fastconv bench``.

What is measured: the best achievable matrix-multiply rate on a cache-resident problem
(256x256 by 256x256, float32 or float64: 768 KiB / 1.5 MiB, inside L2 on current x86
server cores), with the benchmark's thread count, best of many repetitions. Two GEMMs are
tried and the faster counts: NumPy's BLAS (OpenBLAS / MKL, whose hand-tuned FMA kernels
reach ~90% of the FMA units' theoretical throughput on such a size; its thread count is
pinned with ``threadpoolctl`` when that is installed) and fastconv's own
``_native.sgemm``/``dgemm``. No FMA-only loop is used: a compiler-generated one either
stalls on its dependency chain or is simplified away, and either way misreports the
peak. This is an empirical "best a real kernel gets", not the data-sheet number, so a
convolution can only exceed 100% if it beats a tuned GEMM.

The result is cached per (CPU model, core count, threads, dtype) in ``peak.json`` in the
fastconv cache directory, so it is measured once per machine.
"""
from __future__ import annotations

import json
import os
import tempfile
import time

import numpy as np

__all__ = ["peak_gflops", "measure_peak"]

SIZE = 256
REPS = 100


def _best_rate(fn, flops: float, reps: int) -> float:
    fn()
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return flops / best / 1e9


def measure_peak(dtype="float32", threads: int = 1, size: int = SIZE, reps: int = REPS) -> dict:
    """Measures the GEMM peak now: ``{"gflops": best, "method": ..., "candidates": {...}}``."""
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


def _machine_key(dtype, threads) -> str:
    from ..autotune import cpu_model

    return f"{cpu_model()} x{os.cpu_count() or 1}|t{threads}|{np.dtype(dtype).name}"


def _path():
    from ..autotune import cache_dir

    return cache_dir() / "peak.json"


def peak_gflops(dtype="float32", threads: int = 1, refresh: bool = False) -> dict:
    """The cached peak for this machine, measuring (and caching) it on first use.

    Returns the :func:`measure_peak` dict plus ``"cached": bool``. A cache that cannot be
    read or written is simply not used (the measurement takes about a second).
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
