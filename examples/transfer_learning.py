"""Transfer learning without a framework, the chapter's four steps on the bundled digits.

A backbone trained and saved by fastconv itself stands in for downloaded ImageNet weights:

0. "Pretraining": LeNet-5 learns digits 0-4 and is saved with ``fastconv.io.save_weights``
   (a ``.pth`` written by ``torch.save`` loads the same way: ``weights="resnet18.pth"``).
1. Take the pretrained backbone: ``models.lenet5(num_classes=5, weights=PATH,
   skip_head=True)`` loads every weight but the head, which is new and sized for the new
   labels (digits 5-9).
2. Freeze it: ``fastconv.finetune.freeze_backbone(model)``; frozen parameters get no
   gradient at all, and their batch norms (none in LeNet) keep their statistics.
3. Train only the head.
4. Unfreeze the top block (here LeNet's hidden linear layers) at a smaller rate, with
   per-group learning rates; the convolutional features stay frozen.

The same recipe on the command line:
``fastconv train --model resnet18 --weights PATH --freeze-backbone --data ...``.

Measured (full run, 6 epochs per phase): pretraining 98.9% on digits 0-4; on digits 5-9
the new head reaches 72.1% on the frozen pretrained backbone and 95.5% after fine-tuning
the classifier, against 76.5% / 96.6% for the same recipe on a random backbone. On a
task this small LeNet's random convolutional features are as good as learned ones, so
this script shows the mechanics, not a transfer gain; ImageNet backbones on photographs
are where the gain is.

    python examples/transfer_learning.py            # a few minutes on 2 busy cores
    python examples/transfer_learning.py --quick    # the reduced run the tests use
"""
from __future__ import annotations

import argparse
import os
import tempfile

import numpy as np

from fastconv import data as D
from fastconv import finetune, io, models, nn, optim
from fastconv.train import fit


def split(ds, classes, limit=None):
    """The part of ``ds`` with labels in ``classes``, relabelled 0..len(classes)-1."""
    lut = {c: i for i, c in enumerate(classes)}

    def pick(x, y):
        keep = np.isin(y, classes)
        x, y = x[keep], np.array([lut[v] for v in y[keep]], np.int64)
        return (x[:limit], y[:limit]) if limit else (x, y)

    xtr, ytr = pick(ds.x_train, ds.y_train)
    xte, yte = pick(ds.x_test, ds.y_test)
    return D.Dataset(xtr, ytr, xte, yte, len(classes), f"digits {classes}")


def recipe(model, data, epochs, verbose=True):
    """Steps 2-4 on ``model``: freeze all but the head and train it, then unfreeze the
    classifier's hidden layers at a tenth of the rate. Returns both test accuracies."""
    # 2. Freeze everything but the head.
    trainable = finetune.freeze_backbone(model)
    frozen = {k: v.copy() for k, v in model.state_dict().items()
              if not k.startswith("classifier.4.")}
    if verbose:
        print(f"trainable: {trainable}")
    # 3. Train the head only.
    opt = optim.Adam(finetune.param_groups(model, 5e-3), lr=5e-3)
    head = fit(model, data, epochs=epochs, batch_size=32, optimizer=opt, progress=False,
               log=None)[-1]["test_acc"]
    for k, v in frozen.items():
        assert np.array_equal(model.state_dict()[k], v), f"frozen {k} changed"
    # 4. Fine-tune the classifier's hidden layers too, at a tenth of the head's rate; the
    # convolutional features stay frozen.
    finetune.freeze_backbone(model, ["classifier"])
    opt = optim.Adam(finetune.param_groups(model, 2e-3, lr_backbone=2e-4), lr=2e-3)
    tuned = fit(model, data, epochs=epochs, batch_size=32, optimizer=opt, progress=False,
                log=None)[-1]["test_acc"]
    return head, tuned


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="reduced run (seconds)")
    p.add_argument("--workdir", default=None, help="where the pretrained weights go")
    args = p.parse_args(argv)
    epochs, limit = (2, 300) if args.quick else (6, None)
    digits = D.load_digits()
    old, new = split(digits, [0, 1, 2, 3, 4], limit), split(digits, [5, 6, 7, 8, 9], limit)
    workdir = args.workdir or tempfile.mkdtemp(prefix="fastconv-transfer-")
    path = os.path.join(workdir, "lenet_digits0-4.npz")

    # 0. Pretrain a backbone on the old task and save it.
    nn.init.manual_seed(0)
    pre = models.lenet5(num_classes=5)
    hist = fit(pre, old, epochs=epochs, batch_size=32,
               optimizer=optim.Adam(pre.parameters(), lr=2e-3), progress=False, log=None,
               shift=1)
    io.save_weights(path, pre)
    print(f"pretrained on digits 0-4: test accuracy {100 * hist[-1]['test_acc']:.1f}%, "
          f"saved to {path}")

    # 1. The pretrained backbone under a new head for digits 5-9.
    model = models.lenet5(num_classes=5, weights=path, skip_head=True)
    head_acc, tuned_acc = recipe(model, new, epochs)
    print(f"new head on the frozen pretrained backbone, digits 5-9: test accuracy "
          f"{100 * head_acc:.1f}%; after fine-tuning the classifier: {100 * tuned_acc:.1f}%")

    # For comparison: the same recipe on a random, untrained backbone.
    nn.init.manual_seed(1)
    r_head, r_tuned = recipe(models.lenet5(num_classes=5), new, epochs, verbose=False)
    print(f"the same recipe on a random backbone: {100 * r_head:.1f}%; after fine-tuning "
          f"{100 * r_tuned:.1f}%")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
