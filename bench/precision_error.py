"""Measured float32 error of every native convolution algorithm on ResNet-18's layers,
forward, backward-data and backward-weight: max |ours - torch float64| / max |torch float64|
(the error relative to the output's maximum, the measure ``set_precision`` is about).

Inputs are standard normal, weights He-scaled; the float64 oracle sees the same float32
values, so only the algorithm's own rounding is measured. Accuracy, not speed: no lock
is needed, but it is a CPU job of about a minute on 2 threads.

    python bench/precision_error.py [--batch 2] [--threads 2] [--seed 0]
"""
from __future__ import annotations

import argparse

import numpy as np

from _common import RESNET18_LAYERS, use_source_tree

use_source_tree()

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import fastconv as fc  # noqa: E402
from fastconv import _dispatch  # noqa: E402
from fastconv._args import conv_spec  # noqa: E402

OPS = ("conv2d_forward", "conv2d_backward_data", "conv2d_backward_weight")
# Depthwise is no ResNet layer; one MobileNet-style layer documents that kernel too.
LAYERS = [(*layer, 1) for layer in RESNET18_LAYERS] + [
    ("depthwise 3x3/1 128 @28 (MobileNet)", 128, 28, 128, 3, 1, 1, 128)]
SHORT = {"conv2d_forward": "fwd", "conv2d_backward_data": "bwd data",
         "conv2d_backward_weight": "bwd weight"}


def rel_err(got, want):
    want = np.asarray(want, np.float64)
    return float(np.max(np.abs(np.asarray(got, np.float64) - want)) / np.max(np.abs(want)))


def measure(batch=2, seed=0):
    """-> {layer name: {(op, algo): relative error or None where the algo cannot serve}}."""
    mod = _dispatch._load("native")
    rng = np.random.default_rng(seed)
    table = {}
    for name, C, H, K, R, stride, pad, groups in LAYERS:
        x = rng.standard_normal((batch, C, H, H)).astype(np.float32)
        cg = C // groups
        w = (rng.standard_normal((K, cg, R, R)) * np.sqrt(2.0 / (cg * R * R))).astype(np.float32)
        kw = dict(stride=stride, padding=pad, groups=groups)
        spec = conv_spec(x.shape, w.shape, stride, pad, 1, groups)
        tx = torch.from_numpy(x.astype(np.float64)).requires_grad_()
        tw = torch.from_numpy(w.astype(np.float64)).requires_grad_()
        ty = F.conv2d(tx, tw, **kw)
        gy = rng.standard_normal(tuple(ty.shape)).astype(np.float32)
        ty.backward(torch.from_numpy(gy.astype(np.float64)))
        want = {"conv2d_forward": ty.detach().numpy(), "conv2d_backward_data": tx.grad.numpy(),
                "conv2d_backward_weight": tw.grad.numpy()}
        row = {}
        for op in OPS:
            for algo in _dispatch.CONV_ALGOS:
                if algo not in _dispatch.implemented_algos(mod, op) or \
                        _dispatch.backend_obstacle(mod, algo, op, spec) is not None:
                    continue
                if op == "conv2d_forward":
                    got = fc.conv2d(x, w, **kw, algo=algo, backend="native")
                elif op == "conv2d_backward_data":
                    got = fc.conv2d_backward(gy, x, w, **kw, algo=algo, backend="native",
                                             need_weight_grad=False, need_bias_grad=False)[0]
                else:
                    got = fc.conv2d_backward(gy, x, w, **kw, algo=algo, backend="native",
                                             need_input_grad=False, need_bias_grad=False)[1]
                row[op, algo] = rel_err(got, want[op])
        table[name] = row
        print(f"  measured {name}", flush=True)
    return table


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    fc.set_num_threads(a.threads)
    torch.set_num_threads(a.threads)
    table = measure(a.batch, a.seed)
    cols = sorted({k for row in table.values() for k in row},
                  key=lambda k: (OPS.index(k[0]), _dispatch.CONV_ALGOS.index(k[1])))
    print(f"\nfloat32, batch {a.batch}: max |error| / max |output| against torch float64\n")
    print("| layer | " + " | ".join(f"{SHORT[op]} {algo}" for op, algo in cols) + " |")
    print("|---|" + "---|" * len(cols))
    for name, row in table.items():
        cells = [f"{row[c]:.1e}" if c in row else "-" for c in cols]
        print(f"| {name} | " + " | ".join(cells) + " |")
    worst = {c: max(row[c] for row in table.values() if c in row) for c in cols}
    print("| **worst** | " + " | ".join(f"**{worst[c]:.1e}**" for c in cols) + " |")
    print("\nSummary: the range over the layers each algorithm serves\n")
    algos = [a for a in _dispatch.CONV_ALGOS if any(c[1] == a for c in cols)]
    print("| algorithm | " + " | ".join(SHORT[op] for op in OPS) + " |")
    print("|---|" + "---|" * len(OPS))
    for algo in algos:
        cells = []
        for op in OPS:
            v = [row[op, algo] for row in table.values() if (op, algo) in row]
            cells.append(f"{min(v):.1e} - {max(v):.1e}" if v else "-")
        print(f"| {algo} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
