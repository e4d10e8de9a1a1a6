"""VGG (Simonyan & Zisserman 2014) with torchvision's structure and state_dict names
(``features.<i>.weight``, ``classifier.<i>.weight``)."""
from __future__ import annotations

from .. import nn
from ..nn import init
from ._weights import maybe_load

__all__ = ["VGG", "vgg11", "vgg16"]

_CFGS = {
    "A": [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "D": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512,
          "M"],
}


def make_features(cfg, batch_norm=False, in_channels=3):
    layers = []
    for v in cfg:
        if v == "M":
            layers.append(nn.MaxPool2d(2, 2))
        else:
            layers.append(nn.Conv2d(in_channels, v, 3, padding=1))
            if batch_norm:
                layers.append(nn.BatchNorm2d(v))
            layers.append(nn.ReLU(inplace=True))
            in_channels = v
    return nn.Sequential(*layers)


class VGG(nn.Chain):
    """``features`` (3x3 convs and max pools), a 7x7 adaptive average pool, and the
    three-layer ``classifier`` with dropout."""

    _head = "classifier.6"

    def __init__(self, features, num_classes=1000, dropout=0.5):
        super().__init__()
        self.features = features
        self.avgpool = nn.AdaptiveAvgPool2d((7, 7))
        self.flatten = nn.Flatten(1)
        self.classifier = nn.Sequential(
            nn.Linear(512 * 7 * 7, 4096), nn.ReLU(True), nn.Dropout(dropout),
            nn.Linear(4096, 4096), nn.ReLU(True), nn.Dropout(dropout),
            nn.Linear(4096, num_classes))
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                init.ones_(m.weight)
                init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                init.normal_(m.weight, 0, 0.01)
                init.zeros_(m.bias)

    def _chain(self):
        return [self.features, self.avgpool, self.flatten, self.classifier]


def vgg11(num_classes=1000, batch_norm=False, in_channels=3, *, weights=None, skip_head=False,
          **kw) -> VGG:
    """VGG-11 (configuration A; 132,863,336 parameters with 1000 classes).
    ``weights=PATH`` loads a state dict; ``skip_head=True`` keeps a new ``classifier.6``."""
    return maybe_load(VGG(make_features(_CFGS["A"], batch_norm, in_channels), num_classes,
                          **kw), weights, skip_head)


def vgg16(num_classes=1000, batch_norm=False, in_channels=3, *, weights=None, skip_head=False,
          **kw) -> VGG:
    """VGG-16 (configuration D; 138,357,544 parameters with 1000 classes).
    ``weights=PATH`` loads a state dict; ``skip_head=True`` keeps a new ``classifier.6``."""
    return maybe_load(VGG(make_features(_CFGS["D"], batch_norm, in_channels), num_classes,
                          **kw), weights, skip_head)
