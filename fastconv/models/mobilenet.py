"""MobileNetV2 (Sandler et al. 2018) with torchvision's structure and state_dict names.

``features`` is torchvision's Sequential: ``features.0`` the 3x3/2 stem (conv, batch
norm, ReLU6), ``features.1`` .. ``features.17`` the inverted residual blocks and
``features.18`` the 1x1 convolution to 1280 channels; ``classifier`` is Dropout(0.2)
and Linear. Keys therefore read ``features.0.0.weight``, ``features.2.conv.1.0.weight``
(a depthwise 3x3), ``classifier.1.weight``, ... and torchvision weights load unchanged.
3,504,872 parameters at width 1.0 and 1000 classes.

The depthwise 3x3 convolutions go through the dispatcher like every other layer, whose
heuristic gives them the depthwise kernels (``algo="depthwise"``).
"""
from __future__ import annotations

from .. import nn
from ._weights import maybe_load
from ..nn import init

__all__ = ["MobileNetV2", "InvertedResidual", "mobilenet_v2"]


def _make_divisible(v: float, divisor: int = 8) -> int:
    """torchvision's channel rounding: to a multiple of divisor, never more than 10% down."""
    new_v = max(divisor, int(v + divisor / 2) // divisor * divisor)
    if new_v < 0.9 * v:
        new_v += divisor
    return new_v


def _conv_bn_relu6(inp, oup, kernel_size=3, stride=1, groups=1, algo="auto"):
    """torchvision's Conv2dNormActivation: conv (no bias), batch norm, ReLU6 as "0"/"1"/"2"."""
    return nn.Sequential(
        nn.Conv2d(inp, oup, kernel_size, stride=stride, padding=(kernel_size - 1) // 2,
                  groups=groups, bias=False, algo=algo),
        nn.BatchNorm2d(oup),
        nn.ReLU6(inplace=True),
    )


class InvertedResidual(nn.Module):
    """1x1 expansion (omitted at expand_ratio 1), depthwise 3x3 carrying the stride, linear
    1x1 projection; a residual connection where the shape is unchanged."""

    def __init__(self, inp, oup, stride, expand_ratio, algo="auto"):
        super().__init__()
        if stride not in (1, 2):
            raise ValueError(f"InvertedResidual: stride must be 1 or 2, got {stride}")
        hidden = int(round(inp * expand_ratio))
        self.stride = stride
        self.use_res_connect = stride == 1 and inp == oup
        layers = []
        if expand_ratio != 1:
            layers.append(_conv_bn_relu6(inp, hidden, kernel_size=1))
        layers += [
            _conv_bn_relu6(hidden, hidden, stride=stride, groups=hidden, algo=algo),
            nn.Conv2d(hidden, oup, 1, bias=False),
            nn.BatchNorm2d(oup),
        ]
        self.conv = nn.Sequential(*layers)
        self.out_channels = oup

    def forward(self, x):
        out = self.conv(x)
        if self.use_res_connect:
            out += x  # `out` is the last batch norm's fresh output: no copy
        return out

    def backward(self, grad_out):
        gx = self.conv.backward(grad_out)
        if self.use_res_connect:
            gx += grad_out
        return gx


class MobileNetV2(nn.Chain):
    """MobileNetV2: ``features``, global average pool, flatten, ``classifier``."""

    # t (expansion), c (channels), n (blocks), s (stride of the first block)
    SETTING = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
               (6, 160, 3, 2), (6, 320, 1, 1))

    def __init__(self, num_classes=1000, width_mult=1.0, dropout=0.2, round_nearest=8,
                 algo="auto"):
        super().__init__()
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(f"MobileNetV2: num_classes must be a positive int, got {num_classes!r}")
        if not width_mult > 0:
            raise ValueError(f"MobileNetV2: width_mult must be > 0, got {width_mult!r}")
        input_channel = _make_divisible(32 * width_mult, round_nearest)
        self.last_channel = _make_divisible(1280 * max(1.0, width_mult), round_nearest)
        features = [_conv_bn_relu6(3, input_channel, stride=2)]
        for t, c, n, s in self.SETTING:
            out = _make_divisible(c * width_mult, round_nearest)
            for i in range(n):
                features.append(InvertedResidual(input_channel, out, s if i == 0 else 1, t,
                                                 algo=algo))
                input_channel = out
        features.append(_conv_bn_relu6(input_channel, self.last_channel, kernel_size=1))
        self.features = nn.Sequential(*features)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.flatten = nn.Flatten(1)
        self.classifier = nn.Sequential(nn.Dropout(p=dropout),
                                        nn.Linear(self.last_channel, num_classes))
        # torchvision's initialisation.
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                init.kaiming_normal_(m.weight, mode="fan_out")
                if m.bias is not None:
                    init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                init.ones_(m.weight)
                init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                init.normal_(m.weight, 0, 0.01)
                init.zeros_(m.bias)

    def _chain(self):
        return [self.features, self.avgpool, self.flatten, self.classifier]


def mobilenet_v2(num_classes=1000, *, weights=None, skip_head=False, **kw) -> MobileNetV2:
    """MobileNetV2 (3,504,872 parameters at width 1.0 with 1000 classes). ``weights=PATH``
    loads a state dict (``.pth``/``.pt``/``.safetensors``/``.npz``); ``skip_head=True``
    keeps a new classifier for ``num_classes``."""
    return maybe_load(MobileNetV2(num_classes=num_classes, **kw), weights, skip_head)
