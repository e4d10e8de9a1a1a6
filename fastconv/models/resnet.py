"""ResNets (He et al. 2015) with torchvision's structure and state_dict names.

``resnet18/34/50`` follow ``torchvision.models.resnet`` (v1.5: the stride sits on the 3x3
convolution of a Bottleneck), so torchvision weights saved as safetensors load unchanged.
``stem="cifar"`` replaces the 7x7/2 convolution and the max pool by one 3x3/1 convolution
for 32x32 inputs (the keys stay the same; ``conv1.weight`` becomes 64x3x3x3).
``resnet20`` is the CIFAR network of the paper (3 stages of 3 BasicBlocks, 16/32/64
channels) with 1x1 projection shortcuts (option B) named as torchvision's downsample.
"""
from __future__ import annotations

from .. import nn
from ..nn import init
from ..nn.blocks import BasicBlock, Bottleneck, conv1x1
from ._weights import maybe_load

__all__ = ["ResNet", "BasicBlock", "Bottleneck", "resnet18", "resnet34", "resnet50",
           "resnet20"]


class ResNet(nn.Chain):
    """A ResNet: stem, residual stages ``layer1..layerK``, global average pool, ``fc``."""

    _head = "fc"

    def __init__(self, block, layers, num_classes=1000, stem="imagenet", in_channels=3,
                 widths=(64, 128, 256, 512), zero_init_residual=False, algo="auto"):
        super().__init__()
        if stem not in ("imagenet", "cifar"):
            raise ValueError(f"stem must be 'imagenet' or 'cifar', got {stem!r}")
        if len(layers) != len(widths):
            raise ValueError(f"layers {layers} and widths {widths} must have the same length")
        self.stem = stem
        self.algo = algo
        self.inplanes = widths[0]
        if stem == "imagenet":
            self.conv1 = nn.Conv2d(in_channels, self.inplanes, 7, stride=2, padding=3,
                                   bias=False)
        else:
            self.conv1 = nn.Conv2d(in_channels, self.inplanes, 3, stride=1, padding=1,
                                   bias=False, algo=algo)
        self.bn1 = nn.BatchNorm2d(self.inplanes)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = (nn.MaxPool2d(3, stride=2, padding=1) if stem == "imagenet"
                        else nn.Identity())
        self._stages = []
        for i, (n, w) in enumerate(zip(layers, widths)):
            stage = self._make_layer(block, w, n, stride=1 if i == 0 else 2)
            setattr(self, f"layer{i + 1}", stage)
            self._stages.append(stage)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.flatten = nn.Flatten(1)
        self.fc = nn.Linear(widths[-1] * block.expansion, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                init.ones_(m.weight)
                init.zeros_(m.bias)
        if zero_init_residual:
            for m in self.modules():
                if isinstance(m, Bottleneck):
                    init.zeros_(m.bn3.weight)
                elif isinstance(m, BasicBlock):
                    init.zeros_(m.bn2.weight)

    def _make_layer(self, block, planes, blocks, stride):
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(conv1x1(self.inplanes, planes * block.expansion, stride),
                                       nn.BatchNorm2d(planes * block.expansion))
        layers = [block(self.inplanes, planes, stride, downsample, algo=self.algo)]
        self.inplanes = planes * block.expansion
        for _ in range(1, blocks):
            layers.append(block(self.inplanes, planes, algo=self.algo))
        return nn.Sequential(*layers)

    def _chain(self):
        return [self.conv1, self.bn1, self.relu, self.maxpool, *self._stages, self.avgpool,
                self.flatten, self.fc]


def resnet18(num_classes=1000, stem="imagenet", *, weights=None, skip_head=False,
             **kw) -> ResNet:
    """ResNet-18 (11,689,512 parameters with the ImageNet stem and 1000 classes).
    ``weights=PATH`` loads a state dict (``.pth``/``.pt``/``.safetensors``/``.npz``);
    ``skip_head=True`` keeps a new ``fc`` for ``num_classes``."""
    return maybe_load(ResNet(BasicBlock, [2, 2, 2, 2], num_classes, stem, **kw),
                      weights, skip_head)


def resnet34(num_classes=1000, stem="imagenet", *, weights=None, skip_head=False,
             **kw) -> ResNet:
    """ResNet-34 (21,797,672 parameters with the ImageNet stem and 1000 classes).
    ``weights=PATH`` loads a state dict (``.pth``/``.pt``/``.safetensors``/``.npz``);
    ``skip_head=True`` keeps a new ``fc`` for ``num_classes``."""
    return maybe_load(ResNet(BasicBlock, [3, 4, 6, 3], num_classes, stem, **kw),
                      weights, skip_head)


def resnet50(num_classes=1000, stem="imagenet", *, weights=None, skip_head=False,
             **kw) -> ResNet:
    """ResNet-50 (25,557,032 parameters with the ImageNet stem and 1000 classes).
    ``weights=PATH`` loads a state dict (``.pth``/``.pt``/``.safetensors``/``.npz``);
    ``skip_head=True`` keeps a new ``fc`` for ``num_classes``."""
    return maybe_load(ResNet(Bottleneck, [3, 4, 6, 3], num_classes, stem, **kw),
                      weights, skip_head)


def resnet20(num_classes=10, *, weights=None, skip_head=False, **kw) -> ResNet:
    """The CIFAR ResNet-20 of He et al.: 3x3 stem, three stages of three BasicBlocks with
    16, 32 and 64 channels, projection shortcuts where the shape changes. ``weights`` and
    ``skip_head`` as for :func:`resnet18`."""
    kw.setdefault("widths", (16, 32, 64))
    return maybe_load(ResNet(BasicBlock, [3, 3, 3], num_classes, "cifar", **kw), weights,
                      skip_head)
