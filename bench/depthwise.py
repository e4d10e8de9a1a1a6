"""Depthwise convolution: fastconv vs PyTorch vs ONNX Runtime on every depthwise layer of
MobileNetV2 (224x224 input), forward, float32, side by side in one process.

Usage: ``python bench/depthwise.py [--batch 1,8] [--threads 2] [--rounds 5]``

Contenders: ``fastconv.conv2d`` (the public call, dispatcher included; ``algo="auto"``,
which picks the depthwise kernel), ``torch.nn.functional.conv2d`` and a one-node ONNX
Runtime session (a Conv node with group = C built with onnx.helper;
intra_op_num_threads = --threads). Every output is checked against torch before timing.
Method (DESIGN.md): interleaved rounds; before each contender's block a 0.3 s pause and
one untimed call, then a block of timed calls; the median over all timed calls. Ratios
> 1 mean fastconv is faster.
"""
from __future__ import annotations

import argparse
import time

import numpy as np

from _common import use_source_tree  # noqa: E402

use_source_tree()

import fastconv  # noqa: E402

# (blocks using it, channels, input size, stride): MobileNetV2's depthwise 3x3 layers.
LAYERS = [
    ("features.1", 32, 112, 1),
    ("features.2", 96, 112, 2),
    ("features.3", 144, 56, 1),
    ("features.4", 144, 56, 2),
    ("features.5-6", 192, 28, 1),
    ("features.7", 192, 28, 2),
    ("features.8-11", 384, 14, 1),
    ("features.12-13", 576, 14, 1),
    ("features.14", 576, 14, 2),
    ("features.15-17", 960, 7, 1),
]


def _ort_session(x_shape, w, stride, pad, threads):
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    C = x_shape[1]
    y_shape = list(x_shape[:2]) + [(x_shape[2] + 2 * pad - 3) // stride + 1] * 2
    node = helper.make_node("Conv", ["x", "w"], ["y"], group=C, kernel_shape=[3, 3],
                            strides=[stride, stride], pads=[pad] * 4, dilations=[1, 1])
    graph = helper.make_graph(
        [node], "dw", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(x_shape))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, y_shape)],
        initializer=[numpy_helper.from_array(w, "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    return lambda x: sess.run(None, {"x": x})[0]


def _time(fns: dict, rounds: int, block_s: float) -> dict:
    """Median seconds per call of each contender, interleaved rounds (DESIGN.md)."""
    per_block = {}
    for k, f in fns.items():  # size each block to ~block_s
        t0 = time.perf_counter()
        f()
        per_block[k] = max(3, int(block_s / max(time.perf_counter() - t0, 1e-6)))
    times = {k: [] for k in fns}
    for _ in range(rounds):
        for k, f in fns.items():
            time.sleep(0.3)
            f()
            for _ in range(per_block[k]):
                t0 = time.perf_counter()
                f()
                times[k].append(time.perf_counter() - t0)
    return {k: float(np.median(v)) for k, v in times.items()}


def main() -> None:
    """Parses the options and prints one line per (batch, layer)."""
    import torch

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", default="1,8")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--block", type=float, default=0.04, help="seconds per timed block")
    ap.add_argument("--layers", default="", help="comma-separated layer indices (default: all)")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    fastconv.set_num_threads(a.threads)
    idx = [int(i) for i in a.layers.split(",")] if a.layers else range(len(LAYERS))
    rng = np.random.default_rng(0)
    print(f"threads={a.threads} rounds={a.rounds}; ms per call (median); ratio = theirs/ours")
    print(f"{'layer':15s} {'N':>2s} {'C@HxW /s':>13s} {'algo':>9s} {'ours':>8s} {'torch':>8s} "
          f"{'ort':>8s} {'GF/s':>6s} {'xtorch':>6s} {'xort':>6s}")
    worst = {"torch": np.inf, "ort": np.inf}
    for B in [int(b) for b in a.batch.split(",")]:
        for i in idx:
            name, C, H, st = LAYERS[i]
            x = rng.standard_normal((B, C, H, H), dtype=np.float32)
            w = (rng.standard_normal((C, 1, 3, 3), dtype=np.float32) / 3).astype(np.float32)
            tx, tw = torch.from_numpy(x), torch.from_numpy(w)
            ort_run = _ort_session(x.shape, w, st, 1, a.threads)
            fns = {
                "ours": lambda: fastconv.conv2d(x, w, None, st, 1, 1, C),
                "torch": lambda: torch.nn.functional.conv2d(tx, tw, None, st, 1, 1, C),
                "ort": lambda: ort_run(x),
            }
            # Validate before timing.
            ref = fns["torch"]().numpy()
            for k in ("ours", "ort"):
                got = np.asarray(fns[k]())
                err = float(np.max(np.abs(got - ref)))
                assert got.shape == ref.shape and err < 1e-4, (name, k, err)
            from fastconv._args import conv_spec
            from fastconv._dispatch import choose_conv_algo, get_backend

            spec = conv_spec(x.shape, w.shape, st, 1, 1, C)
            bname, mod = get_backend(None, "numpy", x.dtype, "conv2d_forward")
            algo = choose_conv_algo(bname, mod, "conv2d_forward", spec, x.dtype, "auto")
            t = _time(fns, a.rounds, a.block)
            P = (H + 2 - 3) // st + 1
            gf = 2.0 * B * C * 9 * P * P / t["ours"] / 1e9
            rt, ro = t["torch"] / t["ours"], t["ort"] / t["ours"]
            worst["torch"], worst["ort"] = min(worst["torch"], rt), min(worst["ort"], ro)
            print(f"{name:15s} {B:2d} {f'{C}@{H}x{H} /{st}':>13s} {algo:>9s} "
                  f"{t['ours'] * 1e3:8.3f} {t['torch'] * 1e3:8.3f} {t['ort'] * 1e3:8.3f} "
                  f"{gf:6.1f} {rt:6.2f} {ro:6.2f}", flush=True)
    print(f"worst ratio: vs torch {worst['torch']:.2f}, vs ort {worst['ort']:.2f}")


if __name__ == "__main__":
    main()
