"""Op-level ``fastconv.conv2d(x, w)`` against a one-node ONNX Runtime session and
``torch.nn.functional.conv2d`` on the distinct convolutions of ResNet-18 and ResNet-50.

The layers are found by tracing the shapes that ``fastconv.models.resnet18`` and
``resnet50`` (torchvision layout) pass to ``conv2d`` on a 224 x 224 image. Weights are
given per call (no prepacking): fastconv gets ``(x, w)`` every time; ORT gets the weight
as an initializer of a one-node Conv graph (its session prepacks it once, which is what
an ORT user gets); torch gets ``(x, w)``.

Method (docs/DESIGN.md "How to time a comparison"): every contender is validated against
torch first; then ``--rounds`` interleaved rounds, each contender's block preceded by a
~0.3 s pause (thread pools spin after a call and would steal the next contender's cores)
and one untimed call (waking a sleeping pool costs up to ~10 ms here); the figure is the
median of all timed calls. GF/s is the direct-convolution count 2*N*K*P*Q*C*R*S / time.
% peak is against an AVX2 (or AVX-512) FMA-chain micro-benchmark for the ISA in use,
measured by this script on the same thread count (``fastconv.benchmark.peak`` is our own
GEMM, which would overstate every kernel).

Usage (one benchmark at a time on the shared machine):
  flock /tmp/fastconv-bench.lock python bench/conv_layers_ort.py --batch 1,8 --threads 2
      [--algos] [--rounds 3] [--reps 3] [--layers SUBSTR ...] [--csv out.csv]
"""
from __future__ import annotations

import argparse
import ctypes
import math
import os
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # idle BLAS threads would steal cores

import numpy as np

from _common import use_source_tree

use_source_tree()

import fastconv as fc  # noqa: E402
from fastconv import _args as A  # noqa: E402
from fastconv._dispatch import _load, choose_conv_algo, serving_algos  # noqa: E402

PAUSE_S = 0.3

_FMA_SRC = r"""
#include <immintrin.h>
#include <omp.h>
// 12 independent FMA chains per thread: enough to cover FMA latency x throughput on
// every x86 core (4-5 cycles x 2 ports), so the loop runs at the FMA units' peak.
double fma_peak(long iters, int threads) {
  double t0 = omp_get_wtime();
  float sink = 0;
#pragma omp parallel num_threads(threads) reduction(+:sink)
  {
#ifdef __AVX512F__
    __m512 a[12], b = _mm512_set1_ps(0.999999f), c = _mm512_set1_ps(1e-7f);
    for (int i = 0; i < 12; ++i) a[i] = _mm512_set1_ps((float)i);
    for (long it = 0; it < iters; ++it)
#pragma GCC unroll 12
      for (int i = 0; i < 12; ++i) a[i] = _mm512_fmadd_ps(a[i], b, c);
    for (int i = 0; i < 12; ++i) sink += _mm512_reduce_add_ps(a[i]);
#else
    __m256 a[12], b = _mm256_set1_ps(0.999999f), c = _mm256_set1_ps(1e-7f);
    for (int i = 0; i < 12; ++i) a[i] = _mm256_set1_ps((float)i);
    for (long it = 0; it < iters; ++it)
#pragma GCC unroll 12
      for (int i = 0; i < 12; ++i) a[i] = _mm256_fmadd_ps(a[i], b, c);
    float o[8];
    for (int i = 0; i < 12; ++i) { _mm256_storeu_ps(o, a[i]); sink += o[0]; }
#endif
  }
  volatile float keep = sink; (void)keep;
  return omp_get_wtime() - t0;
}
int lanes(void) {
#ifdef __AVX512F__
  return 16;
#else
  return 8;
#endif
}
"""


def fma_peak(threads: int) -> tuple[float, str]:
    """GFLOP/s of a 12-chain fp32 FMA loop on ``threads`` threads (best of 5), and how."""
    try:
        from fastconv import _native
        isa = _native.isa() if hasattr(_native, "isa") else "avx2"
    except Exception:
        isa = "avx2"
    flags = ["-mavx512f", "-mfma"] if "512" in str(isa) else ["-mavx2", "-mfma"]
    d = tempfile.mkdtemp(prefix="fc-fma-")
    src, lib = os.path.join(d, "fma.c"), os.path.join(d, "fma.so")
    with open(src, "w") as f:
        f.write(_FMA_SRC)
    try:
        subprocess.run(["cc", "-O3", "-funroll-loops", "-fopenmp", "-shared", "-fPIC", *flags, src, "-o", lib],
                       check=True, capture_output=True)
    except (OSError, subprocess.CalledProcessError) as e:
        return float("nan"), f"FMA-chain peak unavailable ({e})"
    so = ctypes.CDLL(lib)
    so.fma_peak.restype = ctypes.c_double
    so.fma_peak.argtypes = [ctypes.c_long, ctypes.c_int]
    n = so.lanes()
    iters = 20_000_000
    so.fma_peak(iters // 10, threads)
    best = min(so.fma_peak(iters, threads) for _ in range(5))
    gf = 2.0 * n * 12 * iters * threads / best / 1e9
    return gf, f"12-chain {'AVX-512' if n == 16 else 'AVX2'} FMA loop, {threads} threads"


def trace_layers() -> list[tuple]:
    """Distinct (C, H, W, K, R, S, stride, padding, groups) of ResNet-18 then ResNet-50."""
    import fastconv.functional as F
    import fastconv.models as M
    seen = []
    orig = F.conv2d

    def rec(x, w, b=None, stride=1, padding=0, dilation=1, groups=1, **kw):
        seen.append((x.shape[1], x.shape[2], x.shape[3], w.shape[0], w.shape[2], w.shape[3],
                     tuple(stride) if not isinstance(stride, int) else (stride, stride),
                     tuple(padding) if not isinstance(padding, int) else (padding, padding),
                     groups))
        return orig(x, w, b, stride, padding, dilation, groups, **kw)

    F.conv2d = rec
    try:
        for name in ("resnet18", "resnet50"):
            m = getattr(M, name)()
            m.eval()
            m(np.zeros((1, 3, 224, 224), np.float32))
    finally:
        F.conv2d = orig
    return list(dict.fromkeys(seen))


def layer_name(t) -> str:
    C, H, W, K, R, S, st, pd, g = t
    return f"{R}x{S}/{st[0]} {C}->{K} @{H}"


def ort_session(x_shape, w, stride, padding, threads):
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper
    K = w.shape[0]
    N, _, H, W = x_shape
    P = (H + 2 * padding[0] - w.shape[2]) // stride[0] + 1
    Q = (W + 2 * padding[1] - w.shape[3]) // stride[1] + 1
    node = helper.make_node("Conv", ["X", "W"], ["Y"], kernel_shape=list(w.shape[2:]),
                            strides=list(stride), pads=[padding[0], padding[1]] * 2)
    graph = helper.make_graph(
        [node], "conv", [helper.make_tensor_value_info("X", TensorProto.FLOAT, list(x_shape))],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [N, K, P, Q])],
        [numpy_helper.from_array(w, "W")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = min(model.ir_version, 9)
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    return lambda x: sess.run(None, {"X": x})[0]


def time_interleaved(fns: dict, rounds: int, reps: int, stat: str = "median") -> dict:
    """Median (or min) ms of each callable: rounds x (pause, one untimed call, reps timed
    calls)."""
    times = {k: [] for k in fns}
    for _ in range(rounds):
        for k, f in fns.items():
            time.sleep(PAUSE_S)
            f()
            for _ in range(reps):
                t0 = time.perf_counter()
                f()
                times[k].append(time.perf_counter() - t0)
    agg = np.min if stat == "min" else np.median
    return {k: 1e3 * float(agg(v)) for k, v in times.items()}


def gmean(v):
    v = [x for x in v if x and math.isfinite(x)]
    return math.exp(sum(map(math.log, v)) / len(v)) if v else float("nan")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batch", default="1,8", help="comma-separated batch sizes")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--algos", action="store_true", help="also time every serving algorithm")
    ap.add_argument("--no-torch", action="store_true")
    ap.add_argument("--layers", nargs="*", help="only layers whose name contains one of these")
    ap.add_argument("--csv", help="write the rows here")
    ap.add_argument("--stat", choices=("median", "min"), default="median",
                    help="median (the method) or min: on a machine saturated by other work "
                         "the median measures the scheduler; the min of many calls is the "
                         "closest to an uncontended call for every contender alike")
    args = ap.parse_args(argv)

    import torch
    import torch.nn.functional as TF
    torch.set_num_threads(args.threads)
    fc.set_num_threads(args.threads)
    peak, peak_how = fma_peak(args.threads)
    mod = _load("native")
    layers = trace_layers()
    if args.layers:
        layers = [t for t in layers if any(s in layer_name(t) for s in args.layers)]
    rng = np.random.default_rng(0)
    rows = []
    print(f"peak {peak:.1f} GFLOP/s ({peak_how}); threads {args.threads}; "
          f"{args.stat} of {args.rounds}x{args.reps} interleaved calls")
    for N in [int(b) for b in args.batch.split(",")]:
        hdr = (f"{'layer':24s} {'N':>2s} {'auto':>12s} {'ms':>8s} {'GF/s':>6s} {'%pk':>4s} "
               f"{'ort ms':>8s} {'vsORT':>6s} {'vsTorch':>7s}")
        if args.algos:
            hdr += "  per-algorithm ms (best)"
        print("\n" + hdr)
        for t in layers:
            C, H, W, K, R, S, st, pd, g = t
            x = rng.standard_normal((N, C, H, W), dtype=np.float32)
            w = (rng.standard_normal((K, C // g, R, S), dtype=np.float32) /
                 np.sqrt(C * R * S / g)).astype(np.float32)
            spec = A.conv_spec(x.shape, w.shape, st, pd, 1, g, op="conv2d")
            auto = choose_conv_algo("native", mod, "conv2d_forward", spec, "float32", "auto")
            flops = 2.0 * N * K * spec.P * spec.Q * (C // g) * R * S
            ort_fn = ort_session(x.shape, w, st, pd, args.threads)
            xt, wt = torch.from_numpy(x), torch.from_numpy(w)
            fns = {
                "fastconv": lambda: fc.conv2d(x, w, stride=st, padding=pd, groups=g),
                "ort": lambda: ort_fn(x),
            }
            if not args.no_torch:
                fns["torch"] = lambda: TF.conv2d(xt, wt, stride=st, padding=pd, groups=g)
            algos = serving_algos("native", mod, "conv2d_forward", spec) if args.algos else []
            for a in algos:
                fns[a] = (lambda a=a: fc.conv2d(x, w, stride=st, padding=pd, groups=g, algo=a))
            # Validate every contender against torch before timing.
            ref = TF.conv2d(xt.double(), wt.double(), stride=st, padding=pd, groups=g).numpy()
            scale = np.abs(ref).max() + 1e-30
            for k, f in fns.items():
                out = f()
                out = out.numpy() if hasattr(out, "numpy") else np.asarray(out)
                err = np.abs(out - ref).max() / scale
                if not err < 1e-3:
                    raise SystemExit(f"{layer_name(t)} N={N}: {k} is wrong (rel err {err:.2e})")
            ms = time_interleaved(fns, args.rounds, args.reps, args.stat)
            row = dict(layer=layer_name(t), N=N, auto=auto, ms=ms["fastconv"],
                       gflops=flops / ms["fastconv"] / 1e6,
                       pct_peak=100 * flops / ms["fastconv"] / 1e6 / peak,
                       ort_ms=ms["ort"], vs_ort=ms["ort"] / ms["fastconv"],
                       vs_torch=ms["torch"] / ms["fastconv"] if "torch" in ms else float("nan"))
            line = (f"{row['layer']:24s} {N:2d} {auto:>12s} {row['ms']:8.3f} {row['gflops']:6.1f} "
                    f"{row['pct_peak']:4.0f} {row['ort_ms']:8.3f} {row['vs_ort']:6.2f} "
                    f"{row['vs_torch']:7.2f}")
            if algos:
                best = min(algos, key=lambda a: ms[a])
                row["best_algo"], row["best_ms"] = best, ms[best]
                row["best_vs_ort"] = ms["ort"] / ms[best]
                line += "  " + " ".join(f"{a}={ms[a]:.3f}" for a in algos) + f" (best {best})"
                for a in algos:
                    row[f"ms_{a}"] = ms[a]
            print(line, flush=True)
            rows.append(row)
        sel = [r for r in rows if r["N"] == N]
        worst = min(sel, key=lambda r: r["vs_ort"])
        wt_ = min(sel, key=lambda r: r["vs_torch"]) if not args.no_torch else None
        print(f"batch {N}: geomean vs ORT {gmean([r['vs_ort'] for r in sel]):.2f}x "
              f"(worst {worst['vs_ort']:.2f}x {worst['layer']}), vs torch "
              f"{gmean([r['vs_torch'] for r in sel]):.2f}x"
              + (f" (worst {wt_['vs_torch']:.2f}x {wt_['layer']})" if wt_ else ""))
        if args.algos:
            print(f"batch {N}: best-algorithm geomean vs ORT "
                  f"{gmean([r['best_vs_ort'] for r in sel]):.2f}x; auto picks the best on "
                  f"{sum(r['auto'] == r['best_algo'] for r in sel)}/{len(sel)} layers")
    if args.csv:
        import csv
        keys = sorted({k for r in rows for k in r})
        with open(args.csv, "w", newline="") as f:
            wr = csv.DictWriter(f, keys)
            wr.writeheader()
            wr.writerows(rows)
    return rows


if __name__ == "__main__":
    sys.exit(0 if main() is not None else 1)
