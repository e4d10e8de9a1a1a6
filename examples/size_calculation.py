"""The chapter's worked size calculation: a 32x32x3 image through conv/pool stages, then
Flatten to 2048 features, first by hand with the output-size formula and then as the table
``fastconv.summary`` prints.

    python examples/size_calculation.py

Output size of a convolution or pooling window (per spatial axis):

    out = floor((W - K + 2P) / S) + 1

  input           32 x 32 x  3
  conv 3x3, P=1   32 x 32 x 16     (32 - 3 + 2) / 1 + 1 = 32
  max pool 2x2/2  16 x 16 x 16     (32 - 2) / 2 + 1 = 16
  conv 3x3, P=1   16 x 16 x 32
  max pool 2x2/2   8 x  8 x 32
  flatten         8 * 8 * 32 = 2048
  linear          2048 -> 10
"""
from __future__ import annotations

import fastconv
from fastconv import nn
from fastconv.shapes import out_size


def model(num_classes: int = 10):
    """The small CNN of the worked example."""
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(2048, num_classes))


def by_hand():
    """The calculation step by step with :func:`fastconv.out_size`; returns the flattened
    length."""
    w = 32
    steps = [("conv 3x3, padding 1", 3, 1, 1, 16), ("max pool 2x2, stride 2", 2, 0, 2, 16),
             ("conv 3x3, padding 1", 3, 1, 1, 32), ("max pool 2x2, stride 2", 2, 0, 2, 32)]
    print(f"{'input':<24} {w:>3} x {w:>3} x {3:>3}")
    for what, k, p, s, c in steps:
        new = out_size(w, k, p, s)
        print(f"{what:<24} {new:>3} x {new:>3} x {c:>3}   = floor(({w} - {k} + 2*{p}) / {s}) + 1")
        w = new
    flat = w * w * c
    print(f"{'flatten':<24} {w} * {w} * {c} = {flat}")
    return flat


def main(argv=None):
    flat = by_hand()
    assert flat == 2048
    print()
    table = fastconv.summary(model(), (1, 3, 32, 32))
    print(table)
    assert "2048" in table
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
