"""Layer-shape suites for ``fastconv bench``: the convolutions of real networks.

Each suite is the list of *distinct* convolution layers of a network with how many times
each occurs (``count``), so a network total is ``sum(ms * count)``. Shapes are for
ImageNet-size (224x224) inputs; the batch size is a parameter.

``deepbench`` is a subset of the Baidu DeepBench training convolutions
(``code/kernels/conv_problems.h``, ``training_set``): one entry per distinct workload
family (DeepSpeech, face recognition / OCR, vision, ResNet/GoogLeNet odd shapes,
speaker ID). The spatial sizes, channels, filters, padding and strides are DeepBench's
unchanged; only the batch is scaled, to ``max(1, N_deepbench * batch // 128)`` (batch=16,
the default, divides DeepBench's N by 8: 32 -> 4, 16 -> 2, 8 -> 1), so the suite fits a
2-core machine.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

__all__ = ["Layer", "SUITES", "suite", "suite_names", "parse_shape", "DEEPBENCH_SUBSET"]


@dataclass(frozen=True)
class Layer:
    """One convolution layer: input (N,C,H,W), weight (K,C/groups,R,S), stride, padding."""

    name: str
    N: int
    C: int
    H: int
    W: int
    K: int
    R: int
    S: int
    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int] = (0, 0)
    dilation: tuple[int, int] = (1, 1)
    groups: int = 1
    count: int = 1

    @property
    def x_shape(self):
        return (self.N, self.C, self.H, self.W)

    @property
    def w_shape(self):
        return (self.K, self.C // self.groups, self.R, self.S)

    @property
    def kwargs(self) -> dict:
        """Keyword arguments of ``fastconv.conv2d`` / ``torch.nn.functional.conv2d``."""
        return dict(stride=self.stride, padding=self.padding, dilation=self.dilation,
                    groups=self.groups)

    def spec(self):
        """The validated :class:`fastconv._args.ConvSpec` (raises ValueError if invalid)."""
        from .._args import conv_spec

        return conv_spec(self.x_shape, self.w_shape, self.stride, self.padding,
                         self.dilation, self.groups, op="bench")

    @property
    def flops(self) -> int:
        """Floating-point operations of one forward pass (each backward pass has as many)."""
        return self.spec().flops

    def describe(self) -> str:
        """``N,C,H,W -> K,RxS /stride pad`` in one short string."""
        s = f"{self.N}x{self.C}x{self.H}x{self.W} k{self.K} {self.R}x{self.S}"
        if self.stride != (1, 1):
            s += f" s{self.stride[0]}" if self.stride[0] == self.stride[1] else f" s{self.stride}"
        if self.padding != (0, 0):
            s += (f" p{self.padding[0]}" if self.padding[0] == self.padding[1]
                  else f" p{self.padding}")
        if self.dilation != (1, 1):
            s += f" d{self.dilation}"
        if self.groups != 1:
            s += f" g{self.groups}"
        return s

    def with_batch(self, n: int) -> "Layer":
        return replace(self, N=int(n))


def _L(name, C, H, K, R, stride=1, pad=0, count=1, W=None):
    return Layer(name, 1, C, H, H if W is None else W, K, R, R, (stride, stride), (pad, pad),
                 count=count)


def _resnet18():
    return [
        _L("conv1", 3, 224, 64, 7, 2, 3),
        _L("layer1.3x3", 64, 56, 64, 3, 1, 1, count=4),
        _L("layer2.0.conv1", 64, 56, 128, 3, 2, 1),
        _L("layer2.3x3", 128, 28, 128, 3, 1, 1, count=3),
        _L("layer2.0.downsample", 64, 56, 128, 1, 2, 0),
        _L("layer3.0.conv1", 128, 28, 256, 3, 2, 1),
        _L("layer3.3x3", 256, 14, 256, 3, 1, 1, count=3),
        _L("layer3.0.downsample", 128, 28, 256, 1, 2, 0),
        _L("layer4.0.conv1", 256, 14, 512, 3, 2, 1),
        _L("layer4.3x3", 512, 7, 512, 3, 1, 1, count=3),
        _L("layer4.0.downsample", 256, 14, 512, 1, 2, 0),
    ]


def _resnet50():
    # torchvision's ResNet-50 (v1.5: the stride sits on the 3x3 of the first block).
    out = [_L("conv1", 3, 224, 64, 7, 2, 3)]
    cin, size = 64, 56
    for i, (width, blocks, stride) in enumerate([(64, 3, 1), (128, 4, 2), (256, 6, 2),
                                                 (512, 3, 2)], start=1):
        cout, osz = width * 4, size // stride
        p = f"layer{i}"
        out += [
            _L(f"{p}.0.conv1", cin, size, width, 1),
            _L(f"{p}.0.conv2", width, size, width, 3, stride, 1),
            _L(f"{p}.conv3", width, osz, cout, 1, count=blocks),
            _L(f"{p}.0.downsample", cin, size, cout, 1, stride),
            _L(f"{p}.conv1", cout, osz, width, 1, count=blocks - 1),
        ]
        if stride == 1:
            # conv2 of the later blocks has the first block's shape: merge the counts.
            out[-4] = replace(out[-4], count=blocks)
        else:
            out.append(_L(f"{p}.conv2", width, osz, width, 3, 1, 1, count=blocks - 1))
        cin, size = cout, osz
    return out


def _vgg16():
    cfg = [(3, 64, 224, 1), (64, 64, 224, 1), (64, 128, 112, 1), (128, 128, 112, 1),
           (128, 256, 56, 1), (256, 256, 56, 2), (256, 512, 28, 1), (512, 512, 28, 2),
           (512, 512, 14, 3)]
    return [_L(f"conv{c}-{k}@{h}", c, h, k, 3, 1, 1, count=n) for c, k, h, n in cfg]


# (w, h, c, n, k, filter_w, filter_h, pad_w, pad_h, wstride, hstride, family), as in
# DeepBench's conv_problems.h training_set.
DEEPBENCH_SUBSET = [
    (700, 161, 1, 32, 32, 20, 5, 0, 0, 2, 2, "deepspeech.conv1"),
    (341, 79, 32, 32, 32, 10, 5, 0, 0, 2, 2, "deepspeech.conv2"),
    (480, 48, 1, 16, 16, 3, 3, 1, 1, 1, 1, "ocr.conv1"),
    (240, 24, 16, 16, 32, 3, 3, 1, 1, 1, 1, "ocr.conv2"),
    (108, 108, 3, 8, 64, 3, 3, 1, 1, 2, 2, "face.conv1"),
    (54, 54, 64, 8, 64, 3, 3, 1, 1, 1, 1, "face.conv2"),
    (224, 224, 3, 16, 64, 7, 7, 3, 3, 2, 2, "resnet.stem"),
    (28, 28, 192, 16, 32, 5, 5, 2, 2, 1, 1, "googlenet.5x5a"),
    (7, 7, 832, 16, 128, 5, 5, 2, 2, 1, 1, "googlenet.5x5b"),
    (350, 80, 64, 16, 128, 5, 5, 1, 1, 2, 2, "speaker.conv2"),
    (14, 14, 1024, 16, 2048, 1, 1, 0, 0, 2, 2, "resnet.proj"),
    (7, 7, 2048, 16, 512, 1, 1, 3, 3, 2, 2, "resnet.1x1pad3"),
]


def _deepbench(batch: int):
    out = []
    for w, h, c, n, k, fw, fh, pw, ph, sw, sh, name in DEEPBENCH_SUBSET:
        out.append(Layer(name, max(1, n * batch // 128), c, h, w, k, fh, fw, (sh, sw),
                         (ph, pw)))
    return out


SUITES = {
    "resnet18": "the 11 distinct convolutions of ResNet-18 at 224x224",
    "resnet50": "the distinct convolutions of ResNet-50 (torchvision v1.5) at 224x224",
    "vgg16": "the 9 distinct convolutions of VGG-16 at 224x224",
    "deepbench": "12 Baidu DeepBench training convolutions, batch scaled by batch/128",
}


def suite_names() -> list[str]:
    return list(SUITES)


def suite(name: str, batch: int = 16) -> list[Layer]:
    """The layers of suite ``name`` with batch size ``batch``."""
    if not isinstance(batch, int) or isinstance(batch, bool) or batch < 1:
        raise ValueError(f"batch must be a positive int, got {batch!r}")
    if name == "deepbench":
        return _deepbench(batch)
    makers = {"resnet18": _resnet18, "resnet50": _resnet50, "vgg16": _vgg16}
    if name not in makers:
        raise ValueError(f"unknown suite {name!r}; choose from {', '.join(SUITES)}")
    return [layer.with_batch(batch) for layer in makers[name]()]


def parse_shape(text: str) -> Layer:
    """``N,C,H,W,K,R,S[,stride[,pad[,dilation[,groups]]]]`` -> one Layer (ValueError
    naming the field when malformed)."""
    fields = ("N", "C", "H", "W", "K", "R", "S", "stride", "pad", "dilation", "groups")
    parts = [p.strip() for p in str(text).split(",")]
    if not 7 <= len(parts) <= len(fields):
        raise ValueError(f"--shape must be N,C,H,W,K,R,S[,stride[,pad[,dilation[,groups]]]], "
                         f"got {text!r}")
    vals = {}
    for f, p in zip(fields, parts):
        try:
            vals[f] = int(p)
        except ValueError:
            raise ValueError(f"--shape: {f} must be an int, got {p!r}") from None
    for f in ("N", "C", "H", "W", "K", "R", "S", "stride", "dilation", "groups"):
        if f in vals and vals[f] < 1:
            raise ValueError(f"--shape: {f} must be positive, got {vals[f]}")
    if vals.get("pad", 0) < 0:
        raise ValueError(f"--shape: pad must be >= 0, got {vals['pad']}")
    s, p, d = vals.get("stride", 1), vals.get("pad", 0), vals.get("dilation", 1)
    layer = Layer("shape", vals["N"], vals["C"], vals["H"], vals["W"], vals["K"], vals["R"],
                  vals["S"], (s, s), (p, p), (d, d), vals.get("groups", 1))
    layer.spec()  # raises ValueError naming the problem (groups, kernel too large, ...)
    return layer
