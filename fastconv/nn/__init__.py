"""Layers, losses and initialisers with explicit forward and backward passes, on top of
:mod:`fastconv.functional` (NumPy arrays on the CPU, CuPy arrays on the GPU)."""
from __future__ import annotations

from . import init
from .activation import LeakyReLU, ReLU6
from .blocks import BasicBlock, Bottleneck
from .conv_layers import Conv1d, ConvTranspose2d
from .layers import (
    AdaptiveAvgPool2d,
    AvgPool2d,
    BatchNorm2d,
    Chain,
    Conv2d,
    Dropout,
    Flatten,
    Identity,
    Linear,
    MaxPool2d,
    ReLU,
    Sequential,
)
from .losses import CrossEntropyLoss
from .module import Module, Parameter, is_grad_enabled, no_grad
from .norm_layers import GroupNorm, InstanceNorm2d, LayerNorm

__all__ = ["Module", "Parameter", "Conv2d", "BatchNorm2d", "ReLU", "ReLU6", "LeakyReLU", "MaxPool2d", "AvgPool2d",
           "AdaptiveAvgPool2d", "Linear", "Flatten", "Dropout", "Identity", "Sequential",
           "Chain", "CrossEntropyLoss", "BasicBlock", "Bottleneck", "init", "no_grad",
           "is_grad_enabled", "summary", "Conv1d", "ConvTranspose2d", "GroupNorm",
           "LayerNorm", "InstanceNorm2d"]


def __getattr__(name):
    if name == "summary":
        from .summary import summary

        # Importing the submodule bound its name on this package; the function wins.
        globals()["summary"] = summary
        return summary
    raise AttributeError(f"module 'fastconv.nn' has no attribute {name!r}")
