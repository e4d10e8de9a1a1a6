"""Clamped and leaky activations (``torch.nn.ReLU6``, ``torch.nn.LeakyReLU``) with explicit
backward passes, as plain NumPy / CuPy expressions (one pass each, on either library).

NaN follows torch: both keep a NaN input as NaN. LeakyReLU's gradient at a NaN is the
slope times grad (x > 0 is false for NaN). ReLU6's gradient at a NaN is 0, as torch's
vectorised hardtanh backward gives it (torch 2.x's scalar tail loop passes the gradient
through instead, so torch itself disagrees with itself on short tensors).
"""
from __future__ import annotations

import numpy as np

from .module import Module, array_lib, is_grad_enabled, overwritable

__all__ = ["ReLU6", "LeakyReLU"]


class ReLU6(Module):
    """min(max(x, 0), 6). ``inplace=True``: under :func:`~fastconv.nn.no_grad` the input
    is overwritten and returned, as in torch; with gradients enabled the output is always
    a new array, because backward reads it."""

    _saved_names = ("_y",)

    def __init__(self, inplace: bool = False):
        super().__init__()
        self.inplace = bool(inplace)
        self._y = None

    def forward(self, x):
        # clip is min(max(.)), which keeps NaN on NumPy and CuPy alike.
        if self.inplace and overwritable(x):
            self._y = None
            return array_lib(x).clip(x, 0, 6, out=x)
        y = array_lib(x).clip(x, 0, 6)
        self._y = y if is_grad_enabled() else None
        return y

    def backward(self, grad_out):
        y = self._need_saved(self._y)
        # y is in (0, 6) exactly where x is, so the gradient can be read off the output.
        xp = array_lib(y)
        gx = xp.where((y > 0) & (y < 6), grad_out, grad_out.dtype.type(0))
        self._y = None
        return gx


class LeakyReLU(Module):
    """x where x > 0, else negative_slope * x (``torch.nn.LeakyReLU``)."""

    _saved_names = ("_x",)

    def __init__(self, negative_slope: float = 0.01, inplace: bool = False):
        super().__init__()
        if isinstance(negative_slope, bool) or not isinstance(negative_slope, (int, float)):
            raise TypeError(f"LeakyReLU: negative_slope must be a float, got {negative_slope!r}")
        self.negative_slope = float(negative_slope)
        self.inplace = bool(inplace)
        self._x = None

    def forward(self, x):
        xp = array_lib(x)
        with np.errstate(invalid="ignore"):  # inf * 0 in the branch where does not take
            y = xp.where(x > 0, x, x * x.dtype.type(self.negative_slope))
        # The slope may be 0 or negative, so the sign of y does not tell x > 0: keep x.
        self._x = x if is_grad_enabled() else None
        return y

    def backward(self, grad_out):
        x = self._need_saved(self._x)
        xp = array_lib(x)
        with np.errstate(invalid="ignore"):
            gx = xp.where(x > 0, grad_out, grad_out * grad_out.dtype.type(self.negative_slope))
        self._x = None
        return gx

    def extra_repr(self):
        return f"negative_slope={self.negative_slope}"
