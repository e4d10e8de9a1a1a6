"""LeNet-5 (LeCun et al. 1998) for 1x32x32 inputs: C1 6@5x5 -> S2 -> C3 16@5x5 -> S4 ->
F5 120 -> F6 84 -> 10 outputs (61,706 parameters).

The layer sizes are the paper's; as is usual today the squashing functions are ReLU, the
subsampling layers are 2x2 max pools and C3 connects to all of S2's maps.
"""
from __future__ import annotations

from .. import nn
from ._weights import maybe_load

__all__ = ["LeNet5", "lenet5"]


class LeNet5(nn.Chain):
    """``features`` (two conv/ReLU/pool stages), flatten, ``classifier`` (three linear
    layers)."""

    _head = "classifier.4"

    def __init__(self, num_classes=10, in_channels=1):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 6, 5), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2))
        self.flatten = nn.Flatten(1)
        self.classifier = nn.Sequential(
            nn.Linear(16 * 5 * 5, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU(),
            nn.Linear(84, num_classes))


def lenet5(num_classes=10, in_channels=1, *, weights=None, skip_head=False) -> LeNet5:
    """LeNet-5 for (N, in_channels, 32, 32) inputs. ``weights=PATH`` loads a state dict;
    ``skip_head=True`` keeps a new ``classifier.4`` for ``num_classes``."""
    return maybe_load(LeNet5(num_classes, in_channels), weights, skip_head)
