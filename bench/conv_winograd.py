"""Native direct / im2col / Winograd convolution vs PyTorch on ResNet-18 layers:
forward, backward-data and backward-weight (direct / im2col only; Winograd has none).

Every algorithm is validated against PyTorch before it is timed; times are the best of
``--reps`` runs, taken interleaved with PyTorch's in the same process, so the ratios are
comparable even on a busy machine (absolute times are not). GFLOP/s are "effective":
the direct-convolution count 2*N*K*P*Q*C*R*S divided by the time, whatever the algorithm
really does (Winograd does fewer multiplications). % of peak is against the
FMA-chain peak measured for the ISA in use (fastconv.benchmark.peak), or ``--peak``.

Usage: python bench/conv_winograd.py [--batch 16] [--threads 2] [--reps 5]
                                     [--layers 56 28] [--no-backward] [--no-error]
"""
from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # idle BLAS threads would steal cores

import numpy as np

import fastconv
from fastconv.backends.native.conv import ALGOS

try:
    import torch
    import torch.nn.functional as F
except ImportError:  # the comparison needs the oracle
    torch = None

# (name, C, K, H, kernel, stride, padding): the ResNet-18 conv layers (distinct shapes).
LAYERS = [
    ("conv1 7x7s2 3->64 @224", 3, 64, 224, 7, 2, 3),
    ("3x3 64 @56", 64, 64, 56, 3, 1, 1),
    ("3x3 128 @28", 128, 128, 28, 3, 1, 1),
    ("3x3 256 @14", 256, 256, 14, 3, 1, 1),
    ("3x3 512 @7", 512, 512, 7, 3, 1, 1),
    ("3x3s2 64->128 @56", 64, 128, 56, 3, 2, 1),
    ("3x3s2 128->256 @28", 128, 256, 28, 3, 2, 1),
    ("3x3s2 256->512 @14", 256, 512, 14, 3, 2, 1),
    ("1x1s2 64->128 @56", 64, 128, 56, 1, 2, 0),
    ("1x1s2 128->256 @28", 128, 256, 28, 1, 2, 0),
    ("1x1s2 256->512 @14", 256, 512, 14, 1, 2, 0),
]


def best_of(fns, reps):
    """Interleaved timing: best time (ms) of each callable over `reps` rounds."""
    for f in fns:
        f()  # warm-up (workspaces, page faults, caches)
    best = [float("inf")] * len(fns)
    for _ in range(reps):
        for i, f in enumerate(fns):
            t = time.perf_counter()
            f()
            best[i] = min(best[i], time.perf_counter() - t)
    return [b * 1e3 for b in best]


def rel_err(a, ref):
    return float(np.max(np.abs(np.asarray(a, np.float64) - ref)) / max(np.max(np.abs(ref)), 1e-30))


def algos_for(op, k, stride):
    out = [a for a in ("direct", "im2col", "winograd_f23", "winograd_f43") if a in ALGOS[op]]
    if k != 3 or stride != 1:
        out = [a for a in out if not a.startswith("winograd")]
    return out


def run_layer(layer, args, rows):
    name, C, K, H, R, st, pd = layer
    N = args.batch
    rng = np.random.default_rng(0)
    x = rng.standard_normal((N, C, H, H), dtype=np.float32)
    w = (rng.standard_normal((K, C, R, R), dtype=np.float32) / np.sqrt(C * R * R)).astype(np.float32)
    xt, wt = torch.from_numpy(x), torch.from_numpy(w)
    yt = F.conv2d(xt, wt, stride=st, padding=pd)
    P = yt.shape[2]
    flops = 2.0 * N * K * P * P * C * R * R
    gy = rng.standard_normal(tuple(yt.shape), dtype=np.float32)
    gyt = torch.from_numpy(gy)

    def t_fwd():
        return F.conv2d(xt, wt, stride=st, padding=pd)

    def t_bwd():
        return torch.ops.aten.convolution_backward(gyt, xt, wt, None, [st, st], [pd, pd],
                                                   [1, 1], False, [0, 0], 1,
                                                   [True, False, False])[0]

    def t_bwd_w():
        return torch.ops.aten.convolution_backward(gyt, xt, wt, None, [st, st], [pd, pd],
                                                   [1, 1], False, [0, 0], 1,
                                                   [False, True, False])[1]

    ops = [("fwd", "conv2d_forward", t_fwd, yt.numpy())]
    if args.backward:
        ops.append(("bwd-data", "conv2d_backward_data", t_bwd, t_bwd().numpy()))
        ops.append(("bwd-wt", "conv2d_backward_weight", t_bwd_w, t_bwd_w().numpy()))
    for opname, op, tfn, ref in ops:
        fns, names = [tfn], ["torch"]
        for a in algos_for(op, R, st):
            if opname == "fwd":
                f = (lambda a=a: fastconv.conv2d(x, w, stride=st, padding=pd, algo=a,
                                                 backend="native"))
            elif opname == "bwd-wt":
                f = (lambda a=a: fastconv.conv2d_backward(
                    gy, x, w, stride=st, padding=pd, need_input_grad=False,
                    need_bias_grad=False, algo=a, backend="native")[1])
            else:
                f = (lambda a=a: fastconv.conv2d_backward(
                    gy, x, w, stride=st, padding=pd, need_weight_grad=False,
                    need_bias_grad=False, algo=a, backend="native")[0])
            err = rel_err(f(), ref)  # validate before timing
            if err > 1e-3:
                raise SystemExit(f"{name} {opname} {a}: relative error {err:.2e} vs torch")
            fns.append(f)
            names.append(a)
        times = best_of(fns, args.reps)
        for nm, ms in zip(names, times):
            gf = flops / ms / 1e6
            rows.append((name, opname, nm, ms, gf, 100 * gf / args.peak, times[0] / ms))


def error_table(args):
    print("\nWinograd float32 max relative error vs a float64 reference (batch 2):")
    print(f"{'layer':<22}{'direct':>10}{'f23':>10}{'f43':>10}")
    rng = np.random.default_rng(1)
    for name, C, K, H, R, st, pd in LAYERS:
        if R != 3 or st != 1:
            continue
        x = rng.standard_normal((2, C, H, H))
        w = rng.standard_normal((K, C, 3, 3)) / np.sqrt(9 * C)
        ref = F.conv2d(torch.from_numpy(x), torch.from_numpy(w), padding=pd).numpy()
        errs = []
        for a in ("direct", "winograd_f23", "winograd_f43"):
            y = fastconv.conv2d(x.astype(np.float32), w.astype(np.float32), padding=pd, algo=a,
                                backend="native")
            errs.append(rel_err(y, ref))
        print(f"{name:<22}" + "".join(f"{e:>10.2e}" for e in errs))


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--peak", type=float, default=None,
                   help="peak GFLOP/s for the %% column (default: the measured FMA-chain peak)")
    p.add_argument("--layers", nargs="*", help="substrings selecting layers by name")
    p.add_argument("--no-backward", dest="backward", action="store_false")
    p.add_argument("--no-error", dest="error", action="store_false")
    args = p.parse_args()
    if torch is None:
        raise SystemExit("this benchmark compares against PyTorch, which is not installed")
    torch.set_num_threads(args.threads)
    fastconv.set_num_threads(args.threads)
    # Also straight to the extension: fastconv.set_num_threads() before the native backend
    # is first loaded is not yet passed on to it (the kernels would use every core).
    from fastconv import _native
    _native.set_num_threads(args.threads)
    if args.peak is None:
        from fastconv.benchmark import peak as P

        args.peak = P.peak_gflops("float32", args.threads)["gflops"]
    layers = [L for L in LAYERS if not args.layers or any(s in L[0] for s in args.layers)]
    print(f"batch {args.batch}, {args.threads} threads, float32, best of {args.reps}; "
          f"% of a {args.peak:.0f} GFLOP/s peak (FMA chains unless --peak); ratio = torch ms / ours ms "
          f"(torch {torch.__version__}, oneDNN)")
    print(f"{'layer':<22}{'op':<9}{'algo':<14}{'ms':>9}{'GFLOP/s':>9}{'%peak':>7}{'vs torch':>9}")
    for layer in layers:
        rows = []
        run_layer(layer, args, rows)
        for r in rows:
            print(f"{r[0]:<22}{r[1]:<9}{r[2]:<14}{r[3]:>9.2f}{r[4]:>9.1f}{r[5]:>7.1f}{r[6]:>8.2f}x",
                  flush=True)
    if args.error:
        error_table(args)


if __name__ == "__main__":
    main()
