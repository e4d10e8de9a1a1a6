"""AlexNet (Krizhevsky et al. 2012) in torchvision's layout (the single-GPU variant of
"One weird trick", 64-192-384-256-256 channels): ``features.<i>``, a 6x6 adaptive average
pool and the dropout ``classifier.<i>``; 61,100,840 parameters with 1000 classes, and
torchvision's state_dict keys, so its weights load unchanged."""
from __future__ import annotations

from .. import nn
from ._weights import maybe_load

__all__ = ["AlexNet", "alexnet"]


class AlexNet(nn.Chain):
    """Five convolutions (11x11/4, 5x5, three 3x3) with three 3x3/2 max pools, a 6x6
    adaptive average pool, and three linear layers with dropout."""

    _head = "classifier.6"

    def __init__(self, num_classes=1000, dropout=0.5, in_channels=3):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 64, 11, stride=4, padding=2), nn.ReLU(inplace=True),
            nn.MaxPool2d(3, stride=2),
            nn.Conv2d(64, 192, 5, padding=2), nn.ReLU(inplace=True),
            nn.MaxPool2d(3, stride=2),
            nn.Conv2d(192, 384, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(384, 256, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(256, 256, 3, padding=1), nn.ReLU(inplace=True),
            nn.MaxPool2d(3, stride=2))
        self.avgpool = nn.AdaptiveAvgPool2d((6, 6))
        self.flatten = nn.Flatten(1)
        self.classifier = nn.Sequential(
            nn.Dropout(dropout), nn.Linear(256 * 6 * 6, 4096), nn.ReLU(inplace=True),
            nn.Dropout(dropout), nn.Linear(4096, 4096), nn.ReLU(inplace=True),
            nn.Linear(4096, num_classes))

    def _chain(self):
        return [self.features, self.avgpool, self.flatten, self.classifier]


def alexnet(num_classes=1000, dropout=0.5, in_channels=3, *, weights=None,
            skip_head=False) -> AlexNet:
    """AlexNet for (N, 3, 224, 224) inputs (any size from 63x63 works: the adaptive pool
    makes the classifier's input 256x6x6). ``weights=PATH`` loads a state dict (see
    :func:`fastconv.models._weights.load_into`; ``skip_head=True`` keeps a new
    ``classifier.6`` sized for ``num_classes``)."""
    return maybe_load(AlexNet(num_classes, dropout, in_channels), weights, skip_head)
