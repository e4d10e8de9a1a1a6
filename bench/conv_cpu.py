"""Native CPU convolution vs PyTorch (oneDNN) on ResNet-18's layers, plus sgemm vs NumPy.

Usage: ``python bench/conv_cpu.py [--batch 16] [--threads 2] [--reps 5] [--algos im2col,...]``

For every layer it first validates each native algorithm against
``torch.nn.functional.conv2d`` (forward and both gradients, on a 2-image slice), then
times forward and backward (data + weights, no bias gradient) of every algorithm and of
PyTorch in the same process, interleaving the contenders rep by rep so that machine
noise hits them alike. Reported: median ms, GFLOP/s, % of the measured peak and the
ratio ours/torch as speed (torch_ms / ours_ms: > 1 means we are faster).

With more than one thread every timed call starts after a short pause (``--quiesce``):
each library's idle worker threads busy-wait after a call (OpenBLAS for about 0.1 s,
libgomp for milliseconds), and back to back the next contender would share its cores
with the previous one's spinning threads. Measured on the 2-core box: our 2-thread
sgemm after a NumPy call ran at ~100 GFLOP/s, after a 0.3 s pause at ~180.

The peak is fastconv's FMA-chain micro-benchmark for the ISA in use
(``fastconv._native.fma_peak_gflops``, via fastconv.benchmark.peak), never our own GEMM.
"""
from __future__ import annotations

import argparse
import os
import time

import numpy as np

from _common import RESNET18_LAYERS, fma_peak, use_source_tree  # noqa: E402

use_source_tree()

import fastconv as fc  # noqa: E402
from fastconv import _native  # noqa: E402
from fastconv.backends.native import ALGOS  # noqa: E402

LAYERS = RESNET18_LAYERS

_QUIESCE = [0.0]


def _median_interleaved(fns: dict, reps: int) -> dict:
    """Median seconds per callable, one warm-up each, reps interleaved."""
    for f in fns.values():
        f()
    times = {k: [] for k in fns}
    for _ in range(reps):
        for k, f in fns.items():
            if _QUIESCE[0] > 0:
                time.sleep(_QUIESCE[0])
            t0 = time.perf_counter()
            f()
            times[k].append(time.perf_counter() - t0)
    return {k: float(np.median(v)) for k, v in times.items()}


def _rel_err(a, b) -> float:
    return float(np.max(np.abs(a - b)) / max(1.0, float(np.max(np.abs(b)))))


def conv_bench(batch: int, reps: int, algos_wanted, peak: float) -> list[str]:
    import torch
    import torch.nn.functional as F

    rows = []
    hdr = f"{'layer':24s} {'pass':4s} {'impl':13s} {'ms':>9s} {'GFLOP/s':>8s} {'%peak':>6s} {'vs torch':>8s}"
    print(hdr)
    print("-" * len(hdr))
    rng = np.random.default_rng(0)
    for name, C, H, K, R, st, pad in LAYERS:
        x = rng.standard_normal((batch, C, H, H), dtype=np.float32)
        w = (rng.standard_normal((K, C, R, R), dtype=np.float32) / np.sqrt(C * R * R)).astype(
            np.float32)
        kw = dict(stride=st, padding=pad)
        y_t = F.conv2d(torch.from_numpy(x), torch.from_numpy(w), **kw).numpy()
        gy = rng.standard_normal(y_t.shape, dtype=np.float32)
        flops = 2.0 * batch * K * C * R * R * y_t.shape[2] * y_t.shape[3]
        algos = [a for a in ALGOS["conv2d_forward"] if not algos_wanted or a in algos_wanted]
        algos = [a for a in algos if _serves(a, R, st)]
        # Validate on a 2-image slice before timing anything.
        xs, gys = x[:2], gy[:2]
        xt = torch.from_numpy(xs).requires_grad_()
        wt = torch.from_numpy(w).requires_grad_()
        yt = F.conv2d(xt, wt, **kw)
        yt.backward(torch.from_numpy(gys))
        for a in algos:
            y = fc.conv2d(xs, w, algo=a, **kw)
            gx, gw, _ = fc.conv2d_backward(gys, xs, w, need_bias_grad=False, algo=a, **kw)
            errs = (_rel_err(y, yt.detach().numpy()), _rel_err(gx, xt.grad.numpy()),
                    _rel_err(gw, wt.grad.numpy()))
            if max(errs) > 1e-3:
                raise SystemExit(f"{name}: {a} disagrees with torch: rel errors {errs}")

        tx, tw, tgy = torch.from_numpy(x), torch.from_numpy(w), torch.from_numpy(gy)
        fwd = {"torch": lambda: F.conv2d(tx, tw, **kw)}
        bwd = {"torch": lambda: torch.ops.aten.convolution_backward(
            tgy, tx, tw, None, [st, st], [pad, pad], [1, 1], False, [0, 0], 1,
            [True, True, False])}
        for a in algos:
            fwd[a] = lambda a=a: fc.conv2d(x, w, algo=a, **kw)
            bwd[a] = lambda a=a: fc.conv2d_backward(gy, x, w, need_bias_grad=False, algo=a, **kw)
        with torch.no_grad():
            tf = _median_interleaved(fwd, reps)
        tb = _median_interleaved(bwd, reps)
        for pas, t, fl in (("fwd", tf, flops), ("bwd", tb, 2 * flops)):
            for impl, sec in t.items():
                line = (f"{name:24s} {pas:4s} {impl:13s} {sec * 1e3:9.2f} {fl / sec / 1e9:8.1f} "
                        f"{100 * fl / sec / 1e9 / peak:6.1f} {t['torch'] / sec:8.2f}")
                print(line, flush=True)
                rows.append(line)
    return rows


def _serves(algo: str, R: int, stride: int) -> bool:
    """Whether ``algo`` serves a dense (groups 1) R x R layer of this stride."""
    if algo == "depthwise":
        return False  # one input channel per group only (bench/depthwise.py times it)
    return not algo.startswith("winograd") or (R == 3 and stride == 1)


def gemm_bench(reps: int) -> None:
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        print("sgemm vs numpy: skipped (threadpoolctl not installed, cannot pin BLAS threads)")
        return
    print(f"\n{'sgemm':8s} {'threads':>7s} {'ours GF/s':>10s} {'numpy GF/s':>10s} {'ours/numpy':>10s}")
    rng = np.random.default_rng(0)
    for threads in (1, 2):
        for n in (1024, 2048):
            a = rng.standard_normal((n, n), dtype=np.float32)
            b = rng.standard_normal((n, n), dtype=np.float32)
            c = np.empty((n, n), np.float32)
            _native.set_num_threads(threads)
            _native.sgemm(a, b, c)
            if _rel_err(c, a @ b) > 1e-4:
                raise SystemExit("sgemm disagrees with numpy")
            with threadpool_limits(threads):
                t = _median_interleaved({"np": lambda: a @ b,
                                         "ours": lambda: _native.sgemm(a, b, c)}, reps)
            fl = 2.0 * n ** 3
            print(f"{n:<8d} {threads:7d} {fl / t['ours'] / 1e9:10.1f} {fl / t['np'] / 1e9:10.1f} "
                  f"{t['np'] / t['ours']:10.2f}", flush=True)


def main(argv=None) -> None:
    """Runs the benchmark and prints the tables."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--algos", default="", help="comma-separated native algos (default: all)")
    ap.add_argument("--skip-conv", action="store_true")
    ap.add_argument("--skip-gemm", action="store_true")
    ap.add_argument("--quiesce", type=float, default=None,
                    help="seconds of pause before each timed call (default: 0.2 if threads > 1)")
    args = ap.parse_args(argv)
    _QUIESCE[0] = args.quiesce if args.quiesce is not None else (0.2 if args.threads > 1 else 0.0)
    fc.set_num_threads(args.threads)
    # Also straight into the extension: fc.set_num_threads made before the native backend
    # is first loaded does not reach it (fastconv/_dispatch.py).
    _native.set_num_threads(args.threads)
    peak, how = fma_peak(args.threads)
    print(f"fastconv ISA {_native.active_isa()}, {args.threads} threads, batch {args.batch}; "
          f"fp32 peak {peak:.0f} GFLOP/s ({how}); pause before each timed call {_QUIESCE[0]} s")
    if not args.skip_conv:
        try:
            import torch
        except ImportError:
            print("conv table skipped: PyTorch (the comparison) is not installed")
        else:
            torch.set_num_threads(args.threads)
            print(f"torch {torch.__version__}, threads {torch.get_num_threads()}")
            wanted = {a for a in args.algos.split(",") if a}
            conv_bench(args.batch, args.reps, wanted, peak)
    if not args.skip_gemm:
        gemm_bench(args.reps)
    fc.set_num_threads(0)


if __name__ == "__main__":
    main()
