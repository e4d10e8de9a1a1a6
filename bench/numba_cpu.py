"""Numba CPU convolution vs the native C++ kernels vs PyTorch on ResNet-18's 3x3 layers.

Usage::

    PYTHONPATH=. python bench/numba_cpu.py [--batch 16] [--threads 2] [--repeat 3]
                                           [--op forward|backward_data] [--layers a,b]
                                           [--stat median|min]

Every algorithm of the ``numba`` and ``native`` backends runs side by side with
``torch.nn.functional.conv2d`` in one process, on the same inputs. Each result is
validated against PyTorch before it is timed; timings are the median (``--stat min``:
the minimum) of ``--repeat`` round-robin rounds after one warm-up, every candidate
running once per round. Reported: ms, GFLOP/s, % of the machine peak (fastconv's FMA-chain
micro-benchmark for the ISA in use, fastconv.benchmark.peak), the ratio of throughput to PyTorch, a
"Numba vs C++ per algorithm" table and the first-call (JIT compile / cache load) times
from ``fastconv.cli.numba_times.compile_times()``.

With more than one thread every timed call starts after a pause (``--quiesce``, default
0.2 s): the idle worker threads of numba's, libgomp's and OpenBLAS's pools busy-wait after
a call, and back to back the next contender would share its cores with them (the same
reason as in bench/conv_cpu.py).
"""
from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from _common import fma_peak, use_source_tree  # noqa: E402

use_source_tree()

import fastconv  # noqa: E402
from fastconv._args import conv_spec  # noqa: E402
from fastconv import _dispatch  # noqa: E402

# ResNet-18 (ImageNet stem) 3x3 convolutions: (name, C, K, H=W of the input, stride)
RESNET18_3X3 = [
    ("layer1", 64, 64, 56, 1),
    ("layer2.0.conv1", 64, 128, 56, 2),
    ("layer2", 128, 128, 28, 1),
    ("layer3.0.conv1", 128, 256, 28, 2),
    ("layer3", 256, 256, 14, 1),
    ("layer4.0.conv1", 256, 512, 14, 2),
    ("layer4", 512, 512, 7, 1),
]


def _time(fn, repeat):
    fn()  # warm-up
    ts = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts)


def _check(out, expected, algo, what):
    scale = max(1.0, float(np.abs(expected).max()))
    err = float(np.abs(out.astype(np.float64) - expected).max()) / scale
    limit = 5e-3 if algo == "winograd_f43" else 1e-3
    if not err <= limit:
        raise SystemExit(f"VALIDATION FAILED: {what} {algo}: relative error {err:.3g}")
    return err


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--stat", choices=("median", "min"), default="median",
                    help="per-candidate statistic over the rounds (min: least disturbed run)")
    ap.add_argument("--op", choices=("forward", "backward_data"), default="forward")
    ap.add_argument("--layers", default="", help="comma-separated layer names (default all)")
    ap.add_argument("--quiesce", type=float, default=None,
                    help="seconds of pause before each timed call (default: 0.2 if threads > 1)")
    args = ap.parse_args(argv)
    quiesce = args.quiesce if args.quiesce is not None else (0.2 if args.threads > 1 else 0.0)

    import torch
    import torch.nn.functional as F

    torch.set_num_threads(args.threads)
    fastconv.set_num_threads(args.threads)
    from fastconv.backends import native, numba_cpu

    numba_cpu.set_num_threads(args.threads)
    # im2col/Winograd multiply in NumPy's BLAS, which keeps its own thread pool: pin it
    # to the same count, or a "--threads 1" run would hand numba a second core.
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        print("# threadpoolctl not installed: BLAS threads are not pinned (set "
              "OPENBLAS_NUM_THREADS)")
    else:
        threadpool_limits(limits=args.threads, user_api="blas")
    layers = [L for L in RESNET18_3X3 if not args.layers or L[0] in args.layers.split(",")]
    op = "conv2d_forward" if args.op == "forward" else "conv2d_backward_data"
    numba_algos = numba_cpu.ALGOS[op]
    native_algos = native.ALGOS[op]

    peak, _ = fma_peak(args.threads)
    print(f"# {args.op}, batch {args.batch}, {args.threads} threads, float32; torch "
          f"{torch.__version__}; native ISA {native.isa()}; FMA-chain peak "
          f"{peak:.1f} GFLOP/s\n")

    # First calls: JIT compilation, or loading numba's disk cache if it is warm.
    from fastconv.cli.numba_times import compile_times

    first = compile_times(measure=True)

    rows = []  # (layer, backend, algo, ms, gflops, ratio)
    for name, C, K, HW, stride in layers:
        rng = np.random.default_rng(0)
        x = rng.standard_normal((args.batch, C, HW, HW)).astype(np.float32)
        w = (rng.standard_normal((K, C, 3, 3)) / np.sqrt(C * 9)).astype(np.float32)
        spec = conv_spec(x.shape, w.shape, stride=stride, padding=1)
        gy = rng.standard_normal(spec.y_shape).astype(np.float32)
        xt, wt, gyt = torch.from_numpy(x), torch.from_numpy(w), torch.from_numpy(gy)
        if op == "conv2d_forward":
            def torch_fn():
                return F.conv2d(xt, wt, None, stride=stride, padding=1)
        else:
            def torch_fn():
                return torch.nn.grad.conv2d_input(x.shape, wt, gyt, stride=stride, padding=1)
        expected = torch_fn().numpy().astype(np.float64)
        cands = [("torch", "-", torch_fn)]
        for backend, mod, algos in (("numba", numba_cpu, numba_algos),
                                    ("native", native, native_algos)):
            for algo in algos:
                if _dispatch.obstacle(algo, spec) is not None:  # Winograd at stride 2, ...
                    continue
                if op == "conv2d_forward":
                    def fn(mod=mod, algo=algo):
                        return mod.conv2d_forward(x, w, None, spec, algo)
                else:
                    def fn(mod=mod, algo=algo):
                        return mod.conv2d_backward_data(gy, w, spec, algo)
                _check(fn(), expected, algo, f"{name} {backend}")  # also the warm-up
                cands.append((backend, algo, fn))
        torch_fn()
        # Round-robin: every candidate runs once per round, so load that comes and goes
        # on a shared machine hits all of them alike instead of whichever ran then.
        times = [[] for _ in cands]
        for _ in range(args.repeat):
            for ts, (_, _, fn) in zip(times, cands):
                if quiesce:
                    time.sleep(quiesce)  # let the previous contender's spinning threads sleep
                t0 = time.perf_counter()
                fn()
                ts.append(time.perf_counter() - t0)
        pick = min if args.stat == "min" else statistics.median
        for ts, (backend, algo, _) in zip(times, cands):
            rows.append((name, backend, algo, pick(ts)))
        t_torch = rows[-len(cands)][3]
        flops = spec.flops
        print(f"## {name}: N={args.batch} C={C} K={K} {HW}x{HW} stride {stride} "
              f"({flops / 1e9:.2f} GFLOP)")
        print(f"{'backend':8} {'algo':14} {'ms':>9} {'GFLOP/s':>8} {'% peak':>7} {'x torch':>8}")
        for r in rows:
            if r[0] != name:
                continue
            gf = flops / r[3] / 1e9
            print(f"{r[1]:8} {r[2]:14} {r[3] * 1e3:9.2f} {gf:8.1f} {100 * gf / peak:6.1f}% "
                  f"{t_torch / r[3]:8.2f}")
        print()

    # Summary over all layers: total time per (backend, algo) on the layers it serves.
    def total(backend, algo, names):
        return sum(r[3] for r in rows if r[1] == backend and r[2] == algo and r[0] in names)

    print("## Numba vs C++ per algorithm (total over the layers both serve)")
    print(f"{'algo':14} {'numba ms':>10} {'native ms':>10} {'numba/C++ speed':>16} "
          f"{'numba x torch':>14}")
    for algo in numba_algos:
        names = {r[0] for r in rows if r[1] == "numba" and r[2] == algo}
        names_n = {r[0] for r in rows if r[1] == "native" and r[2] == algo}
        t_nb = total("numba", algo, names)
        if not names:  # e.g. Winograd on a stride-2-only --layers selection
            continue
        t_to = total("torch", "-", names)
        both = names & names_n
        if both:
            speed = total("native", algo, both) / total("numba", algo, both)
            nat = f"{total('native', algo, both) * 1e3:10.1f}"
            spd = f"{speed:16.2f}"
        else:
            nat, spd = f"{'n/a':>10}", f"{'n/a':>16}"
        print(f"{algo:14} {t_nb * 1e3:10.1f} {nat} {spd} {t_to / t_nb:14.2f}")
    print()

    # Best numba algorithm per layer vs torch (the target: >= 0.3x torch throughput).
    print("## Best numba algorithm per layer")
    worst = None
    for name, *_ in layers:
        nb = [r for r in rows if r[0] == name and r[1] == "numba"]
        best = min(nb, key=lambda r: r[3])
        t_torch = next(r[3] for r in rows if r[0] == name and r[1] == "torch")
        ratio = t_torch / best[3]
        worst = ratio if worst is None else min(worst, ratio)
        print(f"{name:16} {best[2]:14} {ratio:6.2f}x torch")
    print(f"lowest best-numba/torch ratio: {worst:.2f} (target >= 0.30)\n")

    print("## First call per numba kernel family, float32 (JIT compile, or numba "
          "disk-cache load), s")
    print(f"{'parallel_runtime':36} {first['parallel_runtime']:8.3f}")
    for key, t in first.items():
        if key.startswith(op + "[") and key.endswith(":float32"):
            print(f"{key[:-len(':float32')]:36} {t:8.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
