"""Native direct convolution vs PyTorch per pass (forward, backward-data, backward-weight)
on ResNet-18's layers, so that a slow pass is visible on its own.

Usage: ``python bench/conv_direct.py [--batch 16] [--threads 1] [--reps 5] [--layers 3,4]``

Calls the ``_native.conv_direct_*`` bindings directly (no Python dispatch) and
``torch.ops.aten.convolution_backward`` with a one-pass output mask, interleaving the two
rep by rep (with one thread, timed in the calling thread's CPU time, which other
processes on a shared machine do not inflate); reports the best time of each (the least
disturbed), GFLOP/s, and torch_ms / ours_ms (> 1: we are faster); "bwd" sums the two
gradient passes, as bench/conv_cpu.py reports backward.
"""
from __future__ import annotations

import argparse
import time

import numpy as np

from _common import RESNET18_LAYERS, use_source_tree  # noqa: E402

use_source_tree()

from fastconv import _native  # noqa: E402

LAYERS = RESNET18_LAYERS


def _best_interleaved(fns: dict, reps: int, clock) -> dict:
    for f in fns.values():
        f()
    times = {k: [] for k in fns}
    for _ in range(reps):
        for k, f in fns.items():
            t0 = clock()
            f()
            times[k].append(clock() - t0)
    return {k: min(v) for k, v in times.items()}


def main() -> None:
    """Parses the options and prints one line per (layer, pass)."""
    import torch

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--layers", default="", help="comma-separated layer indices (default: all)")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    _native.set_num_threads(a.threads)
    clock = time.thread_time if a.threads == 1 else time.perf_counter
    idx = [int(i) for i in a.layers.split(",")] if a.layers else range(len(LAYERS))
    rng = np.random.default_rng(0)
    print(f"{'layer':24s} {'pass':5s} {'torch ms':>9s} {'ours ms':>9s} {'GF/s':>6s} {'ratio':>6s}")
    for i in idx:
        name, C, H, K, R, st, pad = LAYERS[i]
        B = a.batch
        x = rng.standard_normal((B, C, H, H), dtype=np.float32)
        w = (rng.standard_normal((K, C, R, R), dtype=np.float32) / np.sqrt(C * R * R)).astype(
            np.float32)
        P = (H + 2 * pad - R) // st + 1
        y = np.empty((B, K, P, P), np.float32)
        gy = rng.standard_normal(y.shape, dtype=np.float32)
        gx = np.empty_like(x)
        gw = np.empty_like(w)
        S, Pd, D = (st, st), (pad, pad), (1, 1)
        tx, tw, tgy = torch.from_numpy(x), torch.from_numpy(w), torch.from_numpy(gy)
        flops = 2.0 * B * K * C * R * R * P * P

        def tb(mask):
            return lambda: torch.ops.aten.convolution_backward(
                tgy, tx, tw, None, [st, st], [pad, pad], [1, 1], False, [0, 0], 1, mask)

        passes = {
            "fwd": (lambda: torch.nn.functional.conv2d(tx, tw, stride=st, padding=pad),
                    lambda: _native.conv_direct_fwd(x, w, None, y, S, Pd, D, 1)),
            "bwdD": (tb([True, False, False]),
                     lambda: _native.conv_direct_bwd_data(gy, w, gx, S, Pd, D, 1)),
            "bwdW": (tb([False, True, False]),
                     lambda: _native.conv_direct_bwd_weight(gy, x, gw, S, Pd, D, 1)),
        }
        best = {}
        with torch.no_grad():
            for pas, (ft, fo) in passes.items():
                t = best[pas] = _best_interleaved({"t": ft, "o": fo}, a.reps, clock)
                print(f"{name:24s} {pas:5s} {t['t'] * 1e3:9.2f} {t['o'] * 1e3:9.2f} "
                      f"{flops / t['o'] / 1e9:6.1f} {t['t'] / t['o']:6.2f}", flush=True)
        # backward as bench/conv_cpu.py reports it: data + weights together
        tt = best["bwdD"]["t"] + best["bwdW"]["t"]
        to = best["bwdD"]["o"] + best["bwdW"]["o"]
        print(f"{name:24s} {'bwd':5s} {tt * 1e3:9.2f} {to * 1e3:9.2f} {2 * flops / to / 1e9:6.1f} "
              f"{tt / to:6.2f}", flush=True)


if __name__ == "__main__":
    main()
