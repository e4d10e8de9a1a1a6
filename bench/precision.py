"""Which default for ``fastconv.set_precision``: train the same networks under "high" and
"highest" in lockstep and compare accuracy, loss and step time.

The two models start from identical weights and see identical batches; their steps
alternate, so a busy machine slows both alike and the step-time ratio stays meaningful.
LeNet-5 (5x5 convolutions: no algorithm differs between the settings) is the control;
ResNet-20 (3x3 layers of 16-64 channels, where "high" lets auto pick Winograd F(4,3)) is
the CIFAR-sized case, on a synthetic task noisy enough not to be solved in one epoch.

    python bench/precision.py [--epochs 3] [--n-train 2048] [--threads 2] [--only resnet20]

The figures in README.md ("Precision") come from the reduced run that fits about ten
minutes on one thread:

    flock /tmp/fastconv-bench.lock python bench/precision.py --threads 1 --epochs 3 \
        --n-train 2048 --noise 3 --lr 0.02 --only resnet20 [--seed 1] (and --noise 1)
    python bench/precision.py --threads 1 --only lenet5

"weights differ" is ||w_high - w_highest|| / ||w_highest|| over all parameters and
buffers after training: how far the two settings' rounding has moved the same network
(same start, same batches) apart.
"""
from __future__ import annotations

import argparse
import copy
import time

import numpy as np

from _common import use_source_tree

use_source_tree()

import fastconv as fc  # noqa: E402
from fastconv import data as fdata, models, nn, optim  # noqa: E402
from fastconv.train import evaluate  # noqa: E402

SETTINGS = ("high", "highest")


def lockstep(make_model, ds, epochs, batch_size, lr, seed=0):
    base = make_model()
    runs = {}
    for p in SETTINGS:
        m = copy.deepcopy(base)
        runs[p] = dict(model=m, opt=optim.SGD(m.parameters(), lr=lr, momentum=0.9,
                                               weight_decay=5e-4), times=[], losses=[])
    crit = nn.CrossEntropyLoss()
    rng = np.random.default_rng(seed)
    for _ in range(epochs):
        for xb, yb in fdata.batches(ds.x_train, ds.y_train, batch_size, shuffle=True, rng=rng):
            for p in SETTINGS:
                r = runs[p]
                fc.set_precision(p)
                r["model"].train()
                t0 = time.perf_counter()
                r["opt"].zero_grad()
                loss = crit(r["model"](xb), yb)
                r["model"].backward(crit.backward())
                r["opt"].step()
                r["times"].append(time.perf_counter() - t0)
                r["losses"].append(loss)
    out = {}
    pairs = [(np.asarray(a, np.float64), np.asarray(b, np.float64))
             for a, b in zip(runs["high"]["model"].state_dict().values(),
                             runs["highest"]["model"].state_dict().values())
             if np.issubdtype(np.asarray(b).dtype, np.floating)]
    drift = float(np.sqrt(sum(((a - b) ** 2).sum() for a, b in pairs) /
                          sum((b ** 2).sum() for _, b in pairs)))
    for p in SETTINGS:
        fc.set_precision(p)
        r = runs[p]
        test_loss, test_acc = evaluate(r["model"], ds.x_test, ds.y_test)
        k = max(1, len(r["losses"]) // 10)
        out[p] = dict(test_acc=test_acc, test_loss=test_loss,
                      train_loss=float(np.mean(r["losses"][-k:])),
                      step_ms=1e3 * float(np.median(r["times"])), drift=drift,
                      steps=len(r["times"]))
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--n-train", type=int, default=2048)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--noise", type=float, default=12.0,
                    help="std of the Gaussian noise on the ResNet task's class templates")
    ap.add_argument("--lr", type=float, default=0.05, help="ResNet-20 learning rate")
    ap.add_argument("--seed", type=int, default=0, help="batch-order seed")
    ap.add_argument("--only", choices=("lenet5", "resnet20"), default=None)
    a = ap.parse_args(argv)
    fc.set_num_threads(a.threads)
    before = fc.get_precision()
    cases = [
        ("lenet5", "LeNet-5 / digits", lambda: models.lenet5(num_classes=10), fdata.load_digits(),
         32, 0.05),
        ("resnet20", "ResNet-20 / synthetic 3x32x32", lambda: models.resnet20(num_classes=10),
         fdata.synthetic(a.n_train, 512, (3, 32, 32), noise=a.noise, seed=1), 32, a.lr),
    ]
    cases = [c[1:] for c in cases if a.only in (None, c[0])]
    print(f"{a.epochs} epochs, {a.n_train} ResNet training images (noise {a.noise}, lr {a.lr}), "
          f"{a.threads} thread(s)")
    print(f"| network | setting | steps | test acc | test loss | final train loss | step ms | "
          f"step time vs highest | weights differ |")
    print("|---|---|---|---|---|---|---|---|---|")
    try:
        for name, make, ds, bs, lr in cases:
            t0 = time.perf_counter()
            res = lockstep(make, ds, a.epochs, bs, lr, seed=a.seed)
            for p in SETTINGS:
                r = res[p]
                ratio = res["highest"]["step_ms"] / r["step_ms"]
                print(f"| {name} | {p} | {r['steps']} | {100 * r['test_acc']:.2f}% | "
                      f"{r['test_loss']:.4f} | {r['train_loss']:.4f} | {r['step_ms']:.1f} | "
                      f"{ratio:.2f}x | {r['drift']:.1e} |", flush=True)
            print(f"({name}: {time.perf_counter() - t0:.0f} s)", flush=True)
    finally:
        fc.set_precision(before)


if __name__ == "__main__":
    main()
