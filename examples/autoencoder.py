"""A small convolutional autoencoder on the bundled digits: convolutions run in reverse.

The encoder halves the 32x32 digit twice with strided convolutions (1 -> 16 -> 32
channels, 8x8); the decoder runs that in reverse with ``ConvTranspose2d`` (4x4 kernels,
stride 2, padding 1: each exactly doubles the size) back to 1x32x32. Trained with Adam on
the mean squared reconstruction error, all forward and backward passes in fastconv (no
autograd: each module's ``backward`` runs the gradient kernels). At the end it saves a PNG
with held-out digits (top row) and their reconstructions (bottom row).

    python examples/autoencoder.py [--epochs 8] [--out reconstructions.png]
    python examples/autoencoder.py --quick          # a few hundred images, seconds

``--metrics FILE`` writes the per-epoch losses as JSON (the test reads them).
"""
from __future__ import annotations

import argparse
import json
import glob
import os
import sys
import time

import numpy as np

# Run from a source checkout that holds a developer build (tools/build_inplace.sh);
# otherwise the installed package is used.
_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if glob.glob(os.path.join(_ROOT, "fastconv", "_native*")):
    sys.path.insert(0, _ROOT)

import fastconv.nn as nn  # noqa: E402
from fastconv import data, optim  # noqa: E402
from fastconv.nn import init  # noqa: E402


def autoencoder() -> nn.Sequential:
    """1x32x32 -> 32x8x8 -> 1x32x32."""
    return nn.Sequential(
        nn.Conv2d(1, 16, 4, stride=2, padding=1),           # 16x16x16
        nn.GroupNorm(4, 16),
        nn.ReLU(),
        nn.Conv2d(16, 32, 4, stride=2, padding=1),          # 32x8x8
        nn.ReLU(),
        nn.ConvTranspose2d(32, 16, 4, stride=2, padding=1),  # 16x16x16
        nn.GroupNorm(4, 16),
        nn.ReLU(),
        nn.ConvTranspose2d(16, 1, 4, stride=2, padding=1),   # 1x32x32
    )


def mse(y, target):
    """Mean squared error and its gradient with respect to y."""
    d = y - target
    return float(np.mean(d * d)), (2.0 / d.size) * d


def evaluate(model, x, batch=256):
    model.eval()
    total = 0.0
    with nn.no_grad():
        for i in range(0, len(x), batch):
            xb = x[i:i + batch]
            total += mse(model(xb), xb)[0] * len(xb)
    model.train()
    return total / len(x)


def save_png(path, originals, recons):
    """Two rows of images (originals over reconstructions) as one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(originals)
    fig, axes = plt.subplots(2, n, figsize=(1.2 * n, 2.6))
    for i in range(n):
        for row, img in ((0, originals[i]), (1, recons[i])):
            ax = axes[row, i]
            ax.imshow(img[0], cmap="gray")
            ax.set_xticks([])
            ax.set_yticks([])
    axes[0, 0].set_ylabel("input")
    axes[1, 0].set_ylabel("output")
    fig.suptitle("fastconv conv autoencoder (ConvTranspose2d decoder) on held-out digits")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quick", action="store_true",
                    help="256 training images, 2 epochs (for tests and a first look)")
    ap.add_argument("--out", default="reconstructions.png")
    ap.add_argument("--metrics", default=None, help="write the losses as JSON here")
    args = ap.parse_args(argv)

    init.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    ds = data.load_digits(seed=args.seed)
    x_train, x_test = ds.x_train, ds.x_test
    epochs = args.epochs
    if args.quick:
        x_train, x_test, epochs = x_train[:256], x_test[:128], min(epochs, 2)

    model = autoencoder()
    opt = optim.Adam(model.parameters(), lr=args.lr)
    initial = evaluate(model, x_test)
    print(f"{len(x_train)} training / {len(x_test)} test digits; test MSE before training "
          f"{initial:.4f}")
    train_losses, test_losses = [], []
    for epoch in range(epochs):
        t0 = time.perf_counter()
        seen, total = 0, 0.0
        for xb, _ in data.batches(x_train, ds.y_train[:len(x_train)], args.batch, shuffle=True,
                                  rng=rng):
            model.zero_grad()
            loss, grad = mse(model(xb), xb)
            model.backward(grad)
            opt.step()
            total += loss * len(xb)
            seen += len(xb)
        train_losses.append(total / seen)
        test_losses.append(evaluate(model, x_test))
        print(f"epoch {epoch + 1}/{epochs}: train MSE {train_losses[-1]:.4f}, test MSE "
              f"{test_losses[-1]:.4f} ({time.perf_counter() - t0:.1f} s)", flush=True)

    model.eval()
    with nn.no_grad():
        shown = x_test[:10]
        recon = model(shown)
    save_png(args.out, shown, recon)
    print(f"saved {args.out}")
    if args.metrics:
        with open(args.metrics, "w") as f:
            json.dump({"initial_test": initial, "train": train_losses, "test": test_losses},
                      f)
    return train_losses, test_losses


if __name__ == "__main__":
    main()
