"""conv_transpose2d (native) vs PyTorch on DCGAN generator layers, forward and backward.

Usage: ``flock /tmp/fastconv-bench.lock python bench/conv_transpose.py [--batch 1,8,64]
[--threads 2] [--rounds 5] [--calls 3] [--passes fwd,bwd]``

Each layer is first validated against ``torch.nn.functional.conv_transpose2d`` (output and
all three gradients). Then the two contenders are timed side by side in one process, in
interleaved rounds (DESIGN.md): before each contender's block a 0.3 s pause (the other
library's idle threads spin after a call) and one untimed call (waking a sleeping pool
costs up to ~10 ms here), then ``--calls`` timed calls; the median over all timed calls is
reported. ``bwd`` is the input and weight gradients plus the bias gradient, as a
training step needs them. Reported: median ms, GFLOP/s, % of the measured FMA peak, and
torch_ms / ours_ms (> 1: fastconv is faster), with the data-gradient algorithm the
dispatcher picks for the forward pass (``conv_transpose2d`` *is* that kernel). ``--algos``
adds fastconv with each named algorithm forced (forward: that data-gradient algorithm;
backward: that algorithm for the input and weight gradients).
"""
from __future__ import annotations

import argparse
import time

import numpy as np

from _common import use_source_tree  # noqa: E402

use_source_tree()

import fastconv as fc  # noqa: E402
from fastconv import _dispatch, _native  # noqa: E402
from fastconv.functional_family import _transpose_spec, _transposed_algo  # noqa: E402

from fastconv.benchmark.peak import peak_gflops  # noqa: E402

# (name, C_in, C_out, input H=W, kernel, stride, padding): DCGAN's generator (64x64 output).
LAYERS = [
    ("100->512 4x4/1 @1", 100, 512, 1, 4, 1, 0),
    ("512->256 4x4/2 @4", 512, 256, 4, 4, 2, 1),
    ("256->128 4x4/2 @8", 256, 128, 8, 4, 2, 1),
    ("128->64 4x4/2 @16", 128, 64, 16, 4, 2, 1),
    ("64->3 4x4/2 @32", 64, 3, 32, 4, 2, 1),
]
PAUSE = 0.3


def _rounds(fns: dict, rounds: int, calls: int) -> dict:
    times = {k: [] for k in fns}
    for _ in range(rounds):
        for k, f in fns.items():
            time.sleep(PAUSE)
            f()
            for _ in range(calls):
                t0 = time.perf_counter()
                f()
                times[k].append(time.perf_counter() - t0)
    return {k: float(np.median(v)) for k, v in times.items()}


def _picked(name, N, Cin, Cout, H, k, s, p):
    spec, _ = _transpose_spec("bench", (N, Cin, H, H), (Cin, Cout, k, k), s, p, 0, 1, 1)
    mod = _dispatch.load_backend("native")
    return _transposed_algo("native", mod, "conv2d_backward_data", spec, np.dtype(np.float32),
                            "auto", None, (H, H))


def bench(batches, rounds, calls, passes, peak, torch, algos=()):
    import torch.nn.functional as TF

    print(f"{'layer':22s} {'N':>3s} {'pass':4s} {'algo':7s} {'ours ms':>9s} {'torch ms':>9s} "
          f"{'GFLOP/s':>8s} {'%peak':>6s} {'vs torch':>8s}")
    for N in batches:
        for (name, Cin, Cout, H, k, s, p) in LAYERS:
            g = np.random.default_rng(0)
            x = g.standard_normal((N, Cin, H, H), dtype=np.float32)
            w = (g.standard_normal((Cin, Cout, k, k), dtype=np.float32) * 0.05)
            b = g.standard_normal(Cout, dtype=np.float32)
            xt, wt, bt = (torch.from_numpy(a) for a in (x, w, b))
            y = fc.conv_transpose2d(x, w, b, s, p)
            gy = g.standard_normal(y.shape, dtype=np.float32)
            gyt = torch.from_numpy(gy)
            # Validate before timing.
            xr, wr, br = (t.clone().requires_grad_() for t in (xt, wt, bt))
            yr = TF.conv_transpose2d(xr, wr, br, s, p)
            yr.backward(gyt)
            gx, gw, gb = fc.conv_transpose2d_backward(gy, x, w, s, p)
            for ours, ref, what in ((y, yr, "y"), (gx, xr.grad, "gx"), (gw, wr.grad, "gw"),
                                    (gb, br.grad, "gb")):
                ref = ref.detach().numpy()
                err = float(np.max(np.abs(ours - ref)) / max(1.0, float(np.max(np.abs(ref)))))
                assert err < 1e-3, f"{name} N={N}: {what} differs from torch by {err:.2e}"
            flops = 2 * N * Cin * H * H * Cout * k * k
            algo = _picked(name, N, Cin, Cout, H, k, s, p)
            for pass_ in passes:
                if pass_ == "fwd":
                    fns = {"ours": lambda: fc.conv_transpose2d(x, w, b, s, p),
                           "torch": lambda: TF.conv_transpose2d(xt, wt, bt, s, p)}
                    for a in algos:
                        fns[a] = (lambda a=a: fc.conv_transpose2d(x, w, b, s, p, algo=a))
                    fl = flops
                else:
                    # torch's own backward kernel (what autograd calls), without a graph.
                    def torch_bwd():
                        torch.ops.aten.convolution_backward(
                            gyt, xt, wt, [Cout], [s, s], [p, p], [1, 1], True, [0, 0], 1,
                            [True, True, True])

                    fns = {"ours": lambda: fc.conv_transpose2d_backward(gy, x, w, s, p),
                           "torch": torch_bwd}
                    for a in algos:
                        fns[a] = (lambda a=a: fc.conv_transpose2d_backward(gy, x, w, s, p,
                                                                           algo=a))
                    fl = 2 * flops
                with torch.no_grad():
                    t = _rounds(fns, rounds, calls)
                ours = t["ours"]
                print(f"{name:22s} {N:3d} {pass_:4s} {algo:7s} {ours * 1e3:9.3f} "
                      f"{t['torch'] * 1e3:9.3f} {fl / ours / 1e9:8.1f} "
                      f"{100 * fl / ours / 1e9 / peak:6.1f} {t['torch'] / ours:8.2f}"
                      + "".join(f"  [{a}: {t['torch'] / t[a]:.2f}x]" for a in algos),
                      flush=True)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", default="1,8,64")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--calls", type=int, default=3)
    ap.add_argument("--passes", default="fwd,bwd")
    ap.add_argument("--algos", default="",
                    help="also time these algorithms by name (e.g. direct,im2col): ratio to "
                         "torch in brackets, to check the dispatcher's choice")
    args = ap.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    fc.set_num_threads(args.threads)
    _native.set_num_threads(args.threads)
    pk = peak_gflops("float32", args.threads)
    peak, how = pk["gflops"], pk["method"]
    print(f"fastconv ISA {_native.active_isa()}, {args.threads} threads; torch "
          f"{torch.__version__}; fp32 peak {peak:.0f} GFLOP/s ({how})")
    bench([int(v) for v in args.batch.split(",")], args.rounds, args.calls,
          args.passes.split(","), peak, torch, [a for a in args.algos.split(",") if a])


if __name__ == "__main__":
    main()
