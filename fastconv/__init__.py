"""fastconv: hand-written convolution, pooling and batch-norm kernels for NumPy and CuPy.

The functional ops dispatch on the array type (NumPy -> C++ ``native`` backend, CuPy ->
``cuda``) and, for convolution, on the shape (direct, im2col+GEMM or Winograd). Layers,
models and optimisers live in :mod:`fastconv.nn`, :mod:`fastconv.models` and
:mod:`fastconv.optim`; SciPy-compatible 2-D correlation in :mod:`fastconv.signal`.
"""
from __future__ import annotations

import importlib

from . import _settings
from ._dispatch import backends, get_num_threads, get_precision, set_num_threads, set_precision
from .functional import (
    adaptive_avg_pool2d,
    adaptive_avg_pool2d_backward,
    avg_pool2d,
    avg_pool2d_backward,
    batch_norm,
    batch_norm_backward,
    conv1d,
    conv1d_backward,
    conv2d,
    conv2d_backward,
    conv_transpose2d,
    conv_transpose2d_backward,
    cross_entropy,
    cross_entropy_backward,
    group_norm,
    group_norm_backward,
    layer_norm,
    layer_norm_backward,
    linear,
    linear_backward,
    max_pool2d,
    max_pool2d_backward,
    relu,
    relu_backward,
)
from .shapes import conv_flops, conv_params, out_size, receptive_field, same_padding

__version__ = _settings.VERSION

# Submodules and helpers that pull in more than NumPy load on first use.
_LAZY = {
    "nn": ("fastconv.nn", None),
    "models": ("fastconv.models", None),
    "optim": ("fastconv.optim", None),
    "signal": ("fastconv.signal", None),
    "ndimage": ("fastconv.ndimage", None),
    "shapes": ("fastconv.shapes", None),
    "io": ("fastconv.io", None),
    "data": ("fastconv.data", None),
    "distributed": ("fastconv.distributed", None),
    "finetune": ("fastconv.finetune", None),
    "train": ("fastconv.train", None),
    "viz": ("fastconv.viz", None),
    "autotune": ("fastconv.autotune", None),  # a callable module: autotune(True) and autotune.cache_path()
    "summary": ("fastconv.nn.summary", "summary"),
    "fold_batch_norm": ("fastconv.fusion", "fold_batch_norm"),
    # Not in __all__: `from fastconv import *` must not shadow the builtin compile().
    "compile": ("fastconv.engine", "compile"),
}


def __getattr__(name):
    if name in _LAZY:
        module, attr = _LAZY[name]
        mod = importlib.import_module(module)
        value = getattr(mod, attr) if attr else mod
        globals()[name] = value
        return value
    raise AttributeError(f"module 'fastconv' has no attribute {name!r}")


__all__ = [
    "conv2d", "conv2d_backward", "max_pool2d", "max_pool2d_backward", "avg_pool2d",
    "avg_pool2d_backward", "adaptive_avg_pool2d", "adaptive_avg_pool2d_backward",
    "batch_norm", "batch_norm_backward", "relu", "relu_backward", "linear", "linear_backward",
    "cross_entropy", "cross_entropy_backward", "backends", "set_num_threads",
    "get_num_threads", "set_precision", "get_precision", "out_size", "same_padding",
    "receptive_field", "conv_params", "conv_flops", "conv1d", "conv1d_backward",
    "conv_transpose2d", "conv_transpose2d_backward", "group_norm", "group_norm_backward",
    "layer_norm", "layer_norm_backward", "autotune", "summary", "fold_batch_norm", "nn",
    "models", "optim", "signal", "ndimage", "io", "data", "distributed", "finetune", "train",
    "viz",
]
