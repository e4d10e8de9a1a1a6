"""ResNet-18 training step, fastconv vs PyTorch (CPU), side by side in one run.

One step = forward, cross-entropy, backward, SGD (momentum 0.9, weight decay 5e-4) on a
batch of 32 CIFAR-sized images (3x32x32) with the CIFAR stem. Each framework runs in its
own subprocess so peak memory (ru_maxrss) is its own; both start from the same weights
and batch, and the first step's loss is compared before anything is timed.

    python bench/train_step.py [--steps 3] [--warmup 1] [--batch 32] [--threads N]

Reports the median step time of each, the speed ratio (torch time / fastconv time: >1
means fastconv is faster), peak RSS above each worker's post-setup baseline, and for
fastconv the tracemalloc peak of one step (NumPy reports its buffers to tracemalloc;
PyTorch does not, so only RSS is compared across the two).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

from _common import ROOT, use_source_tree  # noqa: E402

use_source_tree()  # also in the worker processes, which run this file


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # kB on Linux


def _worker_fastconv(args, weights, batch):
    import tracemalloc

    import fastconv
    from fastconv import io, models, nn, optim

    if args.threads:
        fastconv.set_num_threads(args.threads)
    model = models.resnet18(num_classes=10, stem="cifar")
    model.load_state_dict(io.load_weights(weights))
    model.train()
    opt = optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    crit = nn.CrossEntropyLoss()
    with np.load(batch) as z:
        x, y = z["x"], z["y"]

    def step():
        opt.zero_grad()
        loss = crit(model(x), y)
        # The training-step form (as fastconv.train.fit): nobody reads the input gradient,
        # so the stem convolution computes only its parameter gradients, as torch does for
        # an input that does not require grad.
        model.backward(crit.backward(), need_input_grad=False)
        opt.step()
        return loss

    base = _rss_mb()
    first = step()
    times = []
    for i in range(args.warmup + args.steps):
        t = time.perf_counter()
        step()
        if i >= args.warmup:
            times.append(time.perf_counter() - t)
    peak = _rss_mb()
    tracemalloc.start()
    step()
    _, traced = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return dict(first_loss=first, ms=1e3 * statistics.median(times), rss_base_mb=base,
                rss_peak_mb=peak, traced_peak_mb=traced / 2**20)


def _worker_torch(args, weights, batch):
    import torch
    import torch.nn as tnn
    from safetensors.numpy import load_file

    if args.threads:
        torch.set_num_threads(args.threads)
    sys.path.insert(0, os.path.join(ROOT, "tests"))
    from test_models import _torch_models  # the torchvision-structured twin

    twin = _torch_models()
    # Same structure as fastconv's resnet18(num_classes=10, stem="cifar").
    model = twin["resnet18_cifar"]()
    model.fc = tnn.Linear(512, 10)
    model.load_state_dict({k: torch.from_numpy(v) for k, v in load_file(weights).items()})
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    with np.load(batch) as z:
        x, y = torch.from_numpy(z["x"]), torch.from_numpy(z["y"])

    def step():
        opt.zero_grad()
        loss = tnn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        return loss.item()

    base = _rss_mb()
    first = step()
    times = []
    for i in range(args.warmup + args.steps):
        t = time.perf_counter()
        step()
        if i >= args.warmup:
            times.append(time.perf_counter() - t)
    return dict(first_loss=first, ms=1e3 * statistics.median(times), rss_base_mb=base,
                rss_peak_mb=_rss_mb())


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--threads", type=int, default=0, help="threads for both (0: default)")
    p.add_argument("--worker", choices=("fastconv", "torch"), help=argparse.SUPPRESS)
    p.add_argument("--files", nargs=2, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        fn = _worker_fastconv if args.worker == "fastconv" else _worker_torch
        print(json.dumps(fn(args, *args.files)))
        return 0

    from fastconv import io, models, nn

    nn.init.manual_seed(0)
    model = models.resnet18(num_classes=10, stem="cifar")
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        weights = os.path.join(tmp, "w.safetensors")
        batch = os.path.join(tmp, "batch.npz")
        io.save_weights(weights, model)
        np.savez(batch, x=rng.standard_normal((args.batch, 3, 32, 32)).astype(np.float32),
                 y=rng.integers(0, 10, args.batch).astype(np.int64))
        res = {}
        env = dict(os.environ, OPENBLAS_NUM_THREADS="1")  # see fastconv.train
        for who in ("fastconv", "torch"):
            cmd = [sys.executable, os.path.abspath(__file__), "--worker", who, "--files",
                   weights, batch, "--steps", str(args.steps), "--warmup", str(args.warmup),
                   "--threads", str(args.threads)]
            out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env)
            res[who] = json.loads(out.stdout.strip().splitlines()[-1])
    ours, theirs = res["fastconv"], res["torch"]
    rel = abs(ours["first_loss"] - theirs["first_loss"]) / abs(theirs["first_loss"])
    if rel > 1e-3:
        print(f"VALIDATION FAILED: first-step loss fastconv {ours['first_loss']:.6f} vs torch "
              f"{theirs['first_loss']:.6f}")
        return 1
    d_ours = ours["rss_peak_mb"] - ours["rss_base_mb"]
    d_theirs = theirs["rss_peak_mb"] - theirs["rss_base_mb"]
    print(f"ResNet-18 (CIFAR stem) training step, batch {args.batch}x3x32x32, float32, "
          f"threads={args.threads or 'default'}; median of {args.steps} after "
          f"{args.warmup + 1} warm-up")
    print(f"validated: first-step loss fastconv {ours['first_loss']:.6f}, torch "
          f"{theirs['first_loss']:.6f} (rel diff {rel:.1e})")
    print(f"{'':12}{'ms/step':>10}{'peak RSS MB':>13}{'RSS growth MB':>15}")
    for name, r, d in (("fastconv", ours, d_ours), ("torch", theirs, d_theirs)):
        print(f"{name:12}{r['ms']:>10.1f}{r['rss_peak_mb']:>13.0f}{d:>15.0f}")
    print(f"speed ratio (torch ms / fastconv ms): {theirs['ms'] / ours['ms']:.2f}x "
          f"(target >= 0.8x)")
    print(f"memory ratio (RSS growth during training, fastconv / torch): "
          f"{d_ours / max(d_theirs, 1.0):.2f}x (target <= 1.5x); peak RSS ratio "
          f"{ours['rss_peak_mb'] / theirs['rss_peak_mb']:.2f}x")
    print(f"fastconv tracemalloc peak of one step: {ours['traced_peak_mb']:.0f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
