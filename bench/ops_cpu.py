"""Pooling / batch-norm / ReLU / linear on ResNet-18 shapes: fastconv native vs PyTorch.

Runs every case forward and backward, ours and PyTorch's side by side in one process on
the same thread count (default 2), after checking that both agree. Reports the median
time, the achieved memory traffic (bytes of the compulsory reads and writes of the op, see
``traffic`` in each case), that traffic as a percentage of this machine's measured copy
bandwidth, and the ratio torch_ms / ours_ms (> 1: we are faster).

    PYTHONPATH=. python bench/ops_cpu.py [--batch 16] [--threads 2] [--repeat 15] [--warm-cache]
"""
from __future__ import annotations

import argparse
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable

import numpy as np

import fastconv as fc

try:
    import torch
    import torch.nn.functional as F
except ImportError:  # the comparison needs the oracle
    torch = F = None


# --------------------------------------------------------------------------- machine


def copy_bandwidth(threads: int, mbytes: int = 256, repeat: int = 5) -> float:
    """Best observed copy bandwidth in GB/s (read + write bytes), ``threads`` numpy copies
    of disjoint slices in parallel (numpy releases the GIL while copying)."""
    n = mbytes * (1 << 20) // 8
    src = np.ones(n, np.float64)
    dst = np.empty_like(src)
    parts = np.array_split(np.arange(n), threads)
    bounds = [(int(p[0]), int(p[-1]) + 1) for p in parts]

    def work(b):
        np.copyto(dst[b[0]:b[1]], src[b[0]:b[1]])

    best = 0.0
    with ThreadPoolExecutor(threads) as pool:
        for _ in range(repeat):
            t0 = time.perf_counter()
            list(pool.map(work, bounds))
            dt = time.perf_counter() - t0
            best = max(best, 2 * src.nbytes / dt / 1e9)
    return best


class CacheFlusher:
    """Evicts the caches by writing a buffer larger than the last-level cache, so that
    every timed call reads its operands from memory as in a real training step, where
    the working set is far larger than the caches."""

    def __init__(self, mbytes: int = 96):
        self.buf = np.zeros(mbytes * (1 << 20) // 4, np.float32)

    def __call__(self):
        self.buf += 1.0


def time_pair(ours: Callable[[], object], theirs: Callable[[], object], repeat: int,
              flush: Callable[[], None] | None, warmup: int = 2) -> tuple[float, float]:
    """Median ms of ``ours`` and ``theirs``, timed alternately so that load from other
    processes hits both alike."""
    for _ in range(warmup):
        ours()
        theirs()
    t_o, t_t = [], []
    for _ in range(repeat):
        for fn, acc in ((ours, t_o), (theirs, t_t)):
            if flush is not None:
                flush()
            t0 = time.perf_counter()
            fn()
            acc.append(time.perf_counter() - t0)
    return 1e3 * float(np.median(t_o)), 1e3 * float(np.median(t_t))


# --------------------------------------------------------------------------- cases


@dataclass
class Case:
    name: str
    ours: Callable[[], object]
    theirs: Callable[[], object]
    traffic: int          # compulsory bytes read + written
    check: Callable[[object, object], None]


def _close(rtol=1e-4, atol=1e-4):
    def check(a, b):
        a = a if isinstance(a, tuple) else (a,)
        b = b if isinstance(b, tuple) else (b,)
        for u, v in zip(a, b):
            v = v.detach().numpy() if hasattr(v, "detach") else np.asarray(v)
            np.testing.assert_allclose(np.asarray(u), v, rtol=rtol, atol=atol)
    return check


def _equal(a, b):
    a = a if isinstance(a, tuple) else (a,)
    b = b if isinstance(b, tuple) else (b,)
    for u, v in zip(a, b):
        np.testing.assert_array_equal(np.asarray(u), v.numpy())


def resnet18_cases(batch: int, seed: int = 0) -> list[Case]:
    """The non-convolution ops of a ResNet-18 training step at ``batch``."""
    rng = np.random.default_rng(seed)
    f32 = np.float32
    T = torch.from_numpy
    cases = []

    # Stem max pool 3x3 / 2, padding 1 on 64 x 112 x 112.
    x = rng.standard_normal((batch, 64, 112, 112)).astype(f32)
    y, idx = fc.max_pool2d(x, 3, 2, 1, return_indices=True)
    xt = T(x)
    cases.append(Case("maxpool3x3s2 fwd", lambda: fc.max_pool2d(x, 3, 2, 1),
                      lambda: F.max_pool2d(xt, 3, 2, 1), x.nbytes + y.nbytes, _equal))
    cases.append(Case("maxpool3x3s2 fwd+idx",
                      lambda: fc.max_pool2d(x, 3, 2, 1, return_indices=True),
                      lambda: F.max_pool2d(xt, 3, 2, 1, return_indices=True),
                      x.nbytes + y.nbytes + idx.nbytes, _equal))
    gy = rng.standard_normal(y.shape).astype(f32)
    gyt, idxt = T(gy), T(idx)
    cases.append(Case(
        "maxpool3x3s2 bwd", lambda: fc.max_pool2d_backward(gy, idx, x.shape),
        lambda: torch.ops.aten.max_pool2d_with_indices_backward(gyt, xt, [3, 3], [2, 2],
                                                               [1, 1], [1, 1], False, idxt),
        gy.nbytes + idx.nbytes + x.nbytes, _close(0, 0)))

    # BatchNorm (training) + ReLU on each stage's activations.
    for C, HW in ((64, 56), (128, 28), (256, 14), (512, 7)):
        a = (rng.standard_normal((batch, C, HW, HW)) * 2 + 0.5).astype(f32)
        w = rng.uniform(0.5, 1.5, C).astype(f32)
        b = rng.standard_normal(C).astype(f32)
        rm, rv = np.zeros(C, f32), np.ones(C, f32)
        at, wt, bt = T(a), T(w), T(b)
        rmt, rvt = torch.zeros(C), torch.ones(C)

        def ours_f(a=a, w=w, b=b, rm=rm, rv=rv):
            return fc.relu(fc.batch_norm(a, rm, rv, w, b, training=True))

        def theirs_f(at=at, wt=wt, bt=bt, rmt=rmt, rvt=rvt):
            return F.relu(F.batch_norm(at, rmt, rvt, wt, bt, training=True))

        n = a.nbytes
        cases.append(Case(f"bn+relu {C}x{HW}x{HW} fwd", ours_f, theirs_f, 3 * n + 2 * n,
                          _close(1e-4, 1e-4)))

        yb, mean, invstd = fc.batch_norm(a, rm.copy(), rv.copy(), w, b, training=True,
                                         return_stats=True)
        yr = fc.relu(yb)
        g = rng.standard_normal(a.shape).astype(f32)
        gt, yrt, meant, invstdt = T(g), T(yr), T(mean), T(invstd)

        def ours_b(g=g, yr=yr, a=a, w=w, mean=mean, invstd=invstd):
            return fc.batch_norm_backward(fc.relu_backward(g, yr), a, w, mean, invstd, True)

        def theirs_b(gt=gt, yrt=yrt, at=at, wt=wt, meant=meant, invstdt=invstdt, rmt=rmt,
                     rvt=rvt):
            gbn = torch.ops.aten.threshold_backward(gt, yrt, 0)
            return torch.ops.aten.native_batch_norm_backward(
                gbn, at, wt, rmt, rvt, meant, invstdt, True, 1e-5, [True, True, True])

        # relu_backward: read g, y, write; BN backward: read g, x twice, write gx.
        cases.append(Case(f"bn+relu {C}x{HW}x{HW} bwd", ours_b, theirs_b, 3 * n + 5 * n,
                          _close(1e-3, 1e-3)))

    # Global average pool 512 x 7 x 7 -> 512 x 1 x 1.
    a = rng.standard_normal((batch, 512, 7, 7)).astype(f32)
    at = T(a)
    cases.append(Case("global avgpool fwd", lambda: fc.adaptive_avg_pool2d(a, 1),
                      lambda: F.adaptive_avg_pool2d(at, 1), a.nbytes + a.nbytes // 49,
                      _close(1e-5, 1e-5)))
    g = rng.standard_normal((batch, 512, 1, 1)).astype(f32)
    gt = T(g)
    cases.append(Case("global avgpool bwd", lambda: fc.adaptive_avg_pool2d_backward(g, a.shape),
                      lambda: torch.ops.aten._adaptive_avg_pool2d_backward(gt, at),
                      a.nbytes + g.nbytes, _close(1e-6, 1e-6)))

    # Classifier 512 -> 1000.
    x2 = rng.standard_normal((batch, 512)).astype(f32)
    w2 = (rng.standard_normal((1000, 512)) / 23).astype(f32)
    b2 = rng.standard_normal(1000).astype(f32)
    x2t, w2t, b2t = T(x2), T(w2), T(b2)
    cases.append(Case("linear 512->1000 fwd", lambda: fc.linear(x2, w2, b2),
                      lambda: F.linear(x2t, w2t, b2t),
                      x2.nbytes + w2.nbytes + b2.nbytes + batch * 4000, _close(1e-4, 1e-4)))
    g2 = rng.standard_normal((batch, 1000)).astype(f32)
    g2t = T(g2)
    cases.append(Case("linear 512->1000 bwd", lambda: fc.linear_backward(g2, x2, w2),
                      lambda: (g2t @ w2t, g2t.T @ x2t, g2t.sum(0)),
                      2 * (g2.nbytes + x2.nbytes + w2.nbytes) + b2.nbytes, _close(1e-3, 1e-3)))
    return cases


def run(batch: int = 16, threads: int = 2, repeat: int = 15, names=None, flush: bool = True,
        out=sys.stdout):
    """Validates and times every case; returns rows of dicts (also printed as a table)."""
    if torch is None:
        raise RuntimeError("bench/ops_cpu.py compares against PyTorch, which is not installed")
    from fastconv import _native

    from fastconv.backends import native

    fc.set_num_threads(threads)
    native.set_num_threads(threads)  # fc.set_num_threads misses a backend not yet loaded
    assert _native.num_threads() == threads
    torch.set_num_threads(threads)
    bw = copy_bandwidth(threads)
    flusher = CacheFlusher() if flush else None
    print(f"fastconv native ISA {_native.active_isa()} vs torch {torch.__version__}, batch "
          f"{batch}, {threads} threads, caches {'flushed' if flush else 'warm'} before each "
          f"call, measured copy bandwidth {bw:.1f} GB/s", file=out)
    print(f"{'case':28s} {'ours ms':>9s} {'torch ms':>9s} {'ratio':>6s} {'GB/s':>7s} {'%bw':>5s}",
          file=out)
    rows = []
    for c in resnet18_cases(batch):
        if names and not any(n in c.name for n in names):
            continue
        with torch.no_grad():
            c.check(c.ours(), c.theirs())  # validate before timing
            ours, theirs = time_pair(c.ours, c.theirs, repeat, flusher)
        gbs = c.traffic / (ours * 1e-3) / 1e9
        row = dict(case=c.name, ours_ms=ours, torch_ms=theirs, ratio=theirs / ours, gbs=gbs,
                   pct_bw=100 * gbs / bw)
        rows.append(row)
        print(f"{c.name:28s} {ours:9.3f} {theirs:9.3f} {row['ratio']:6.2f} {gbs:7.1f} "
              f"{row['pct_bw']:5.0f}", file=out)
    if rows:
        tot_o = sum(r["ours_ms"] for r in rows)
        tot_t = sum(r["torch_ms"] for r in rows)
        print(f"{'total':28s} {tot_o:9.3f} {tot_t:9.3f} {tot_t / tot_o:6.2f}", file=out)
    print("ratio = torch ms / ours ms (> 1: fastconv faster); GB/s counts each case's "
          "compulsory traffic (see resnet18_cases)", file=out)
    return rows


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeat", type=int, default=15)
    p.add_argument("--only", nargs="*", help="run the cases whose name contains one of these")
    p.add_argument("--warm-cache", action="store_true",
                   help="do not evict the caches before each timed call")
    a = p.parse_args(argv)
    run(a.batch, a.threads, a.repeat, a.only, flush=not a.warm_cache)


if __name__ == "__main__":
    main()
