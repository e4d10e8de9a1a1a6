"""Residual blocks (torchvision's ``BasicBlock`` and ``Bottleneck``, ResNet v1.5: the stride
sits on the 3x3 convolution), with explicit backward passes.

The sub-module names (``conv1``, ``bn1``, ..., ``downsample``) are torchvision's, so the
state_dict keys match. Each ReLU application is its own module because each keeps its own
output for backward; ReLUs hold no state, so this does not change the keys. They are
in-place ReLUs (their inputs are the blocks' own fresh batch-norm outputs and sums), so
under no_grad they write over those rather than allocate again.
"""
from __future__ import annotations

from .layers import BatchNorm2d, Conv2d, ReLU
from .module import Module

__all__ = ["BasicBlock", "Bottleneck", "conv3x3", "conv1x1"]


def conv3x3(in_planes, out_planes, stride=1, groups=1, dilation=1, algo="auto"):
    """3x3 convolution with padding, no bias (followed by batch norm)."""
    return Conv2d(in_planes, out_planes, 3, stride=stride, padding=dilation, groups=groups,
                  bias=False, dilation=dilation, algo=algo)


def conv1x1(in_planes, out_planes, stride=1):
    """1x1 convolution, no bias."""
    return Conv2d(in_planes, out_planes, 1, stride=stride, bias=False)


class _Residual(Module):
    """out = relu(main(x) + shortcut(x)); subclasses list the main branch in ``_main``."""

    def _main(self):
        raise NotImplementedError

    def forward(self, x):
        out = x
        for m in self._main():
            out = m(out)
        identity = x if self.downsample is None else self.downsample(x)
        # `out` is the last batch norm's fresh output, so adding in place copies nothing.
        out += identity
        return self.relu_out(out)

    def backward(self, grad_out):
        g = self.relu_out.backward(grad_out)
        g_short = g if self.downsample is None else self.downsample.backward(g)
        gx = g
        for m in reversed(self._main()):
            gx = m.backward(gx)
        gx += g_short
        return gx

    def _backward_params_only(self, grad_out):
        # First trainable block of the network: neither branch needs its input gradient,
        # so each stops at its own first trainable layer.
        from .layers import _backward_chain

        g = self.relu_out.backward(grad_out)
        if self.downsample is not None:
            self.downsample._backward_params_only(g)
        _backward_chain(list(self._main()), g, need_input_grad=False)


class BasicBlock(_Residual):
    """Two 3x3 convolutions with batch norm and a residual connection (ResNet-18/34)."""

    expansion = 1

    def __init__(self, inplanes, planes, stride=1, downsample=None, groups=1, base_width=64,
                 dilation=1, algo="auto"):
        super().__init__()
        if groups != 1 or base_width != 64:
            raise ValueError("BasicBlock only supports groups=1 and base_width=64")
        self.conv1 = conv3x3(inplanes, planes, stride, algo=algo)
        self.bn1 = BatchNorm2d(planes)
        self.relu = ReLU(inplace=True)
        self.conv2 = conv3x3(planes, planes, algo=algo)
        self.bn2 = BatchNorm2d(planes)
        self.downsample = downsample
        self.relu_out = ReLU(inplace=True)
        self.stride = stride

    def _main(self):
        return (self.conv1, self.bn1, self.relu, self.conv2, self.bn2)


class Bottleneck(_Residual):
    """1x1 reduce, 3x3 (carrying the stride), 1x1 expand by 4, with batch norm and a
    residual connection (ResNet-50)."""

    expansion = 4

    def __init__(self, inplanes, planes, stride=1, downsample=None, groups=1, base_width=64,
                 dilation=1, algo="auto"):
        super().__init__()
        width = int(planes * (base_width / 64.0)) * groups
        self.conv1 = conv1x1(inplanes, width)
        self.bn1 = BatchNorm2d(width)
        self.relu = ReLU(inplace=True)
        self.conv2 = conv3x3(width, width, stride, groups, dilation, algo=algo)
        self.bn2 = BatchNorm2d(width)
        self.relu2 = ReLU(inplace=True)
        self.conv3 = conv1x1(width, planes * self.expansion)
        self.bn3 = BatchNorm2d(planes * self.expansion)
        self.downsample = downsample
        self.relu_out = ReLU(inplace=True)
        self.stride = stride

    def _main(self):
        return (self.conv1, self.bn1, self.relu, self.conv2, self.bn2, self.relu2, self.conv3,
                self.bn3)
