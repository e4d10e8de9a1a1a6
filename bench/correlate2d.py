"""Benchmark: fastconv.signal.correlate2d vs scipy.signal.correlate2d and scipy.ndimage.correlate.

All three run side by side in one process on the same data, so the ratios are
meaningful even on a noisy machine (absolute times are not). Every case is validated
against SciPy before it is timed.

    PYTHONPATH=. python3 bench/correlate2d.py [--size 512] [--kernels 3,5,11,31] [--reps 5]
                                         [--threads N] [--dtype float32] [--isa avx2]

Columns: best-of-reps milliseconds, GFLOP/s counted as 2 * Ho * Wo * kh * kw for every
method (the direct-sum work, so the FFT path can exceed the machine's peak), the
percentage of the machine peak measured in the same run (one core's float32 / float64
matmul rate through NumPy's BLAS, times the threads used), and the speed-up of fastconv over each SciPy function.
"""
from __future__ import annotations

import argparse
import time

import numpy as np


def _best_ms(fn, reps: int, budget_s: float = 3.0) -> float:
    fn()  # warm-up (thread pools, FFT plans, page faults)
    best, spent = float("inf"), 0.0
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        dt = time.perf_counter() - t0
        best, spent = min(best, dt), spent + dt
        if spent > budget_s:  # slow baselines get fewer repetitions
            break
    return best * 1e3


def _peak_gflops(dtype, threads: int) -> float:
    """The machine peak: fastconv's FMA-chain micro-benchmark for the ISA in use on
    ``threads`` threads (fastconv.benchmark.peak), never a GEMM."""
    from fastconv.benchmark import peak as P

    return P.peak_gflops(np.dtype(dtype).name, threads)["gflops"]


def run(size=512, kernels=(3, 5, 11, 31), reps=5, dtype="float32"):
    """Time the three implementations; returns a list of result dicts."""
    import scipy.ndimage as ndi
    import scipy.signal as ss

    from fastconv import _native
    from fastconv import signal as fs

    dtype = np.dtype(dtype)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((size, size)).astype(dtype)
    peak = _peak_gflops(dtype, _native.num_threads())
    rows = []
    for k in kernels:
        w = rng.standard_normal((k, k)).astype(dtype)
        flops = 2.0 * size * size * k * k  # "same" output
        method = "direct"  # the default, SciPy's exact sum (FFT only with method="fft"/"auto")

        # Validate before timing: full-mode against scipy.signal, same-mode (odd k)
        # against scipy.ndimage's constant-0 correlate.
        ours = fs.correlate2d(x, w)
        ref = ss.correlate2d(x, w)
        scale = float(np.abs(x).max() * np.abs(w).sum())
        err = float(np.abs(ours.astype(np.float64) - ref).max()) / scale
        assert ours.dtype == ref.dtype and err < 1e-5, (k, err)
        same = fs.correlate2d(x, w, "same")
        nd = ndi.correlate(x, w, mode="constant", cval=0.0)
        err_nd = float(np.abs(same.astype(np.float64) - nd).max()) / scale
        assert err_nd < 1e-5, (k, err_nd)

        t_fc = _best_ms(lambda: fs.correlate2d(x, w, "same"), reps)
        t_ss = _best_ms(lambda: ss.correlate2d(x, w, "same"), reps)
        t_nd = _best_ms(lambda: ndi.correlate(x, w, mode="constant", cval=0.0), reps)
        rows.append(dict(kernel=k, method=method, fastconv_ms=t_fc, scipy_signal_ms=t_ss,
                         scipy_ndimage_ms=t_nd, gflops=flops / (t_fc * 1e-3) / 1e9,
                         peak_gflops=peak, vs_signal=t_ss / t_fc, vs_ndimage=t_nd / t_fc,
                         threads=_native.num_threads(), isa=_native.active_isa()))
    return rows


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--kernels", default="3,5,11,31")
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--threads", type=int, default=0, help="0: all cores")
    p.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    p.add_argument("--isa", default=None, help="force generic / avx2 / avx512")
    args = p.parse_args(argv)
    from fastconv import _native

    if args.threads:
        _native.set_num_threads(args.threads)
    if args.isa:
        _native.set_isa(args.isa)
    rows = run(args.size, tuple(int(k) for k in args.kernels.split(",")), args.reps,
               args.dtype)
    r0 = rows[0]
    print(f"correlate2d, {args.size}x{args.size} {args.dtype}, mode='same', "
          f"{r0['threads']} thread(s), ISA {r0['isa']}, measured peak "
          f"{r0['peak_gflops']:.1f} GFLOP/s (FMA chains)")
    print(f"{'kernel':>7} {'method':>7} {'fastconv ms':>12} {'signal ms':>10} "
          f"{'ndimage ms':>11} {'GFLOP/s':>8} {'%peak':>6} {'x signal':>9} {'x ndimage':>10}")
    for r in rows:
        print(f"{r['kernel']:>4}x{r['kernel']:<2} {r['method']:>7} {r['fastconv_ms']:12.3f} "
              f"{r['scipy_signal_ms']:10.2f} {r['scipy_ndimage_ms']:11.3f} "
              f"{r['gflops']:8.1f} {100 * r['gflops'] / r['peak_gflops']:6.1f} "
              f"{r['vs_signal']:9.1f} {r['vs_ndimage']:10.1f}")


if __name__ == "__main__":
    main()
