"""Runs the benchmark: for each layer, pass and implementation, validate, then time.

Validation comes first and gates the timing: an implementation whose result disagrees
with the NumPy reference (:mod:`fastconv.backends.reference`, float64 accumulation) is
reported ``FAIL`` and not timed. To keep the oracle cheap on big layers, the forward and
data-gradient outputs of the full-batch run are checked on the first and last samples
(each sample's output depends only on its own input), and the weight gradient (a sum
over the batch) is checked by running the implementation on a batch of those two
samples. The validating run doubles as the first warm-up; then ``warmup`` more untimed
runs, then ``reps`` timed runs (fewer once they add up to ``BUDGET_S``), of which the
median is reported.
"""
from __future__ import annotations

import contextlib
import time

import numpy as np

from .impls import PASS_OPS, PASSES

__all__ = ["run", "make_data", "check_close", "threads", "TOLERANCE"]

# |actual - expected| <= TOLERANCE * sqrt(terms) * max(1, max|expected|): float32 rounding
# grows like sqrt(terms summed); Winograd F(4,3) needs the headroom over plain GEMM.
TOLERANCE = {"float32": 1e-4, "float64": 1e-10}
# A pass slower than this on its validating run gets no further warm-up, and the timed
# runs stop once they add up to BUDGET_S (at least one is always taken). The first run is
# not trusted to predict the rest: it includes JIT compilation for the numba backends.
SLOW_S = 3.0
BUDGET_S = 6.0

# Module-level so tests can inject a fake clock.
_clock = time.perf_counter


def make_data(layer, dtype="float32", seed=0) -> dict:
    """Random input, weight (scaled by 1/sqrt(fan-in), as an initialised layer), bias and
    output gradient for ``layer``."""
    rng = np.random.default_rng(seed)
    spec = layer.spec()
    fan_in = (layer.C // layer.groups) * layer.R * layer.S
    return {
        "x": rng.standard_normal(layer.x_shape).astype(dtype),
        "w": (rng.standard_normal(layer.w_shape) / np.sqrt(fan_in)).astype(dtype),
        "b": rng.standard_normal(layer.K).astype(dtype),
        "gy": rng.standard_normal(spec.y_shape).astype(dtype),
    }


def check_close(actual, expected, dtype, terms) -> tuple[bool, float, float]:
    """(ok, max abs error, tolerance) of ``actual`` against the float64 ``expected``."""
    actual, expected = np.asarray(actual), np.asarray(expected)
    if actual.shape != expected.shape:
        return False, float("inf"), 0.0
    if not expected.size:
        return True, 0.0, 0.0
    scale = max(1.0, float(np.max(np.abs(expected))))
    tol = TOLERANCE[np.dtype(dtype).name] * np.sqrt(max(terms, 1)) * scale
    diff = np.abs(actual.astype(np.float64) - expected.astype(np.float64))
    err = float(np.max(diff)) if np.all(np.isfinite(diff)) else float("inf")
    return err <= tol, err, tol


def _subset(layer, data):
    idx = sorted({0, layer.N - 1})
    sub = {"x": np.ascontiguousarray(data["x"][idx]), "w": data["w"], "b": data["b"],
           "gy": np.ascontiguousarray(data["gy"][idx])}
    return idx, layer.with_batch(len(idx)), sub


def _expected(layer_sub, sub, pass_):
    from ..backends import reference as R

    spec = layer_sub.spec()
    if pass_ == "fwd":
        return R.conv2d_forward(sub["x"], sub["w"], sub["b"], spec)
    if pass_ == "bwd_data":
        return R.conv2d_backward_data(sub["gy"], sub["w"], spec)
    return R.conv2d_backward_weight(sub["gy"], sub["x"], spec)


def _terms(layer, pass_, n_sub):
    spec = layer.spec()
    if pass_ == "fwd":
        return (layer.C // layer.groups) * layer.R * layer.S
    if pass_ == "bwd_data":
        return (layer.K // layer.groups) * layer.R * layer.S
    return n_sub * spec.P * spec.Q


def _time(fn, sync, warmup, reps) -> list[float]:
    for _ in range(warmup):
        fn()
        sync()
    times = []
    for _ in range(max(1, reps)):
        t0 = _clock()
        fn()
        sync()
        times.append(_clock() - t0)
        if sum(times) > BUDGET_S:
            break
    return times


def _auto_pick(impl, layer, dtype):
    """The algorithm ``algo="auto"`` would pick by heuristic, per pass (fastconv impls)."""
    from .. import _dispatch

    mod = _dispatch.load_backend(impl.backend)
    out = {}
    for p in PASSES:
        try:
            out[p] = _dispatch.choose_conv_algo(impl.backend, mod, PASS_OPS[p], layer.spec(),
                                                np.dtype(dtype), "auto")
        except ValueError:
            out[p] = None
    return out


def measure(impl, layer, data, pass_, *, dtype="float32", warmup=1, reps=5, expected=None,
            subset=None) -> dict:
    """Validates then times one implementation on one layer and pass -> a result row."""
    row = {"impl": impl.name, "kind": impl.kind, "backend": impl.backend, "algo": impl.algo,
           "pass": pass_, "status": "ok", "note": "", "ms": None, "ms_min": None, "reps": 0,
           "max_err": None}
    try:
        fn = impl.prepare(layer, data, pass_)
    except Exception as e:  # noqa: BLE001 - an impl that cannot even start is an error row
        row.update(status="error", note=f"{type(e).__name__}: {e}")
        return row
    if isinstance(fn, str):
        row.update(status="skip", note=fn)
        return row
    idx, layer_sub, sub = subset if subset is not None else _subset(layer, data)
    if expected is None:
        expected = _expected(layer_sub, sub, pass_)
    try:
        t0 = _clock()
        out = fn()
        impl.sync()
        first = _clock() - t0
        if pass_ == "bwd_weight":
            sub_fn = impl.prepare(layer_sub, sub, pass_)
            got = impl.to_host(sub_fn())
        else:
            got = impl.to_host(out)[idx]
        del out
    except Exception as e:  # noqa: BLE001 - a crash in the validating run is an error row
        row.update(status="error", note=f"{type(e).__name__}: {e}")
        return row
    ok, err, tol = check_close(got, expected, dtype, _terms(layer, pass_, len(idx)))
    row["max_err"] = err
    if not ok:
        row.update(status="FAIL", note=f"wrong result: max abs error {err:.3g} > tol "
                                       f"{tol:.3g} vs reference; not timed")
        return row
    if first > SLOW_S:
        warmup = 0
    try:
        times = _time(fn, impl.sync, warmup, reps)
    except Exception as e:  # noqa: BLE001
        row.update(status="error", note=f"{type(e).__name__}: {e}")
        return row
    row.update(ms=float(np.median(times)) * 1e3, ms_min=min(times) * 1e3, reps=len(times))
    return row


@contextlib.contextmanager
def threads(n: int):
    """Runs fastconv, PyTorch and the BLAS under NumPy with ``n`` threads, then restores."""
    import fastconv

    from .. import _dispatch

    before = _dispatch.configured_threads()
    fastconv.set_num_threads(n)
    stack = contextlib.ExitStack()
    torch_before = None
    try:
        import torch

        torch_before = torch.get_num_threads()
        torch.set_num_threads(n)
    except ImportError:
        torch = None
    try:
        from threadpoolctl import threadpool_limits

        stack.enter_context(threadpool_limits(limits=n, user_api="blas"))
    except ImportError:
        pass
    try:
        with stack:
            yield
    finally:
        fastconv.set_num_threads(before)
        if torch is not None and torch_before is not None:
            torch.set_num_threads(torch_before)


def run(suites, impls, passes=("fwd",), *, dtype="float32", warmup=1, reps=5, peak=None,
        on_step=None, seed=0) -> list[dict]:
    """Benchmarks ``impls`` on every layer of ``suites`` (a list of (suite, layers)).

    ``on_step(description)`` is called before each measurement (progress bars).
    Returns one row per (suite, layer, pass, impl) with ms (median), GFLOP/s, % of
    ``peak`` GFLOP/s and the speed relative to PyTorch measured in the same run
    (``vs_torch`` = torch ms / our ms: above 1 is faster than PyTorch).
    """
    rows = []
    for suite_name, layers in suites:
        for layer in layers:
            data = make_data(layer, dtype, seed)
            subset = _subset(layer, data)
            flops = layer.flops
            for pass_ in passes:
                expected = None  # the oracle runs once per layer and pass, when first needed
                for impl in impls:
                    if pass_ not in impl.passes:
                        continue
                    if on_step is not None:
                        on_step(f"{suite_name} {layer.name} {pass_} {impl.name}")
                    if expected is None:
                        expected = _expected(subset[1], subset[2], pass_)
                    row = measure(impl, layer, data, pass_, dtype=dtype, warmup=warmup,
                                  reps=reps, expected=expected, subset=subset)
                    if impl.kind == "fastconv" and row["status"] == "ok":
                        row["auto"] = _auto_pick(impl, layer, dtype).get(pass_) == impl.algo
                    row.update(suite=suite_name, layer=layer.name, shape=layer.describe(),
                               count=layer.count, N=layer.N, C=layer.C, H=layer.H,
                               W=layer.W, K=layer.K, R=layer.R, S=layer.S,
                               stride=layer.stride[0], pad=layer.padding[0], flops=flops)
                    rows.append(row)
    _derive(rows, peak)
    return rows


def _derive(rows, peak):
    torch_ms = {(r["suite"], r["layer"], r["pass"]): r["ms"] for r in rows
                if r["impl"] == "torch" and r["ms"]}
    for r in rows:
        ms = r["ms"]
        r["gflops"] = r["flops"] / (ms * 1e-3) / 1e9 if ms else None
        r["pct_peak"] = 100.0 * r["gflops"] / peak if (ms and peak) else None
        t = torch_ms.get((r["suite"], r["layer"], r["pass"]))
        r["vs_torch"] = t / ms if (ms and t) else None
