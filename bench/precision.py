"""Which default for ``fastconv.set_precision``: train the same networks under "high" and
"highest" in lockstep and compare accuracy, loss and step time.

The two models start from identical weights and see identical batches; their steps
alternate, so a busy machine slows both alike and the step-time ratio stays meaningful.
LeNet-5 (5x5 convolutions: no algorithm differs between the settings) is the control;
ResNet-20 (3x3 layers of 16-64 channels, where "high" lets auto pick Winograd F(4,3)) is
the CIFAR-sized case, on a synthetic task noisy enough not to be solved in one epoch.

    python bench/precision.py [--epochs 3] [--n-train 2048] [--threads 2]
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
    for p in SETTINGS:
        fc.set_precision(p)
        r = runs[p]
        test_loss, test_acc = evaluate(r["model"], ds.x_test, ds.y_test)
        k = max(1, len(r["losses"]) // 10)
        out[p] = dict(test_acc=test_acc, test_loss=test_loss,
                      train_loss=float(np.mean(r["losses"][-k:])),
                      step_ms=1e3 * float(np.median(r["times"])))
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--n-train", type=int, default=2048)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args(argv)
    fc.set_num_threads(a.threads)
    before = fc.get_precision()
    cases = [
        ("LeNet-5 / digits", lambda: models.lenet5(num_classes=10), fdata.load_digits(),
         32, 0.05),
        ("ResNet-20 / synthetic 3x32x32", lambda: models.resnet20(num_classes=10),
         fdata.synthetic(a.n_train, 512, (3, 32, 32), noise=12.0, seed=1), 32, 0.05),
    ]
    print(f"| network | setting | test acc | test loss | final train loss | step ms | "
          f"step time vs highest |")
    print("|---|---|---|---|---|---|---|")
    try:
        for name, make, ds, bs, lr in cases:
            res = lockstep(make, ds, a.epochs, bs, lr)
            for p in SETTINGS:
                r = res[p]
                ratio = res["highest"]["step_ms"] / r["step_ms"]
                print(f"| {name} | {p} | {100 * r['test_acc']:.2f}% | {r['test_loss']:.4f} | "
                      f"{r['train_loss']:.4f} | {r['step_ms']:.1f} | {ratio:.2f}x |",
                      flush=True)
    finally:
        fc.set_precision(before)


if __name__ == "__main__":
    main()
