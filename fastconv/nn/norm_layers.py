"""Per-sample normalisation layers: ``GroupNorm``, ``LayerNorm`` and ``InstanceNorm2d``,
as in ``torch.nn`` (arguments, defaults, parameter initialisation, buffers and state-dict
keys). They run on :func:`fastconv.group_norm` / :func:`fastconv.layer_norm` (and, for an
``InstanceNorm2d`` in eval mode with tracked statistics, :func:`fastconv.batch_norm`).
"""
from __future__ import annotations

import warnings

import numpy as np

from .. import functional as F
from .._args import _is_int
from .layers import _float_dtype, _place, _pos_int
from .module import Module, Parameter, is_grad_enabled

__all__ = ["GroupNorm", "LayerNorm", "InstanceNorm2d"]


def _eps(eps, who):
    eps = float(eps)
    if not eps >= 0:
        raise ValueError(f"{who}: eps must be >= 0, got {eps!r}")
    return eps


class GroupNorm(Module):
    """Group normalisation over (N, C, *), as ``torch.nn.GroupNorm``: ``num_groups`` must
    divide ``num_channels``; ``affine`` gives per-channel ``weight`` (ones) and ``bias``
    (zeros)."""

    _saved_names = ("_x", "_mean", "_invstd")

    def __init__(self, num_groups, num_channels, eps=1e-5, affine=True, device=None,
                 dtype=None):
        super().__init__()
        who = "GroupNorm"
        self.num_groups = _pos_int(num_groups, "num_groups", who)
        self.num_channels = _pos_int(num_channels, "num_channels", who)
        if self.num_channels % self.num_groups:
            raise ValueError(f"{who}: num_channels={num_channels} must be divisible by "
                             f"num_groups={num_groups}")
        self.eps = _eps(eps, who)
        self.affine = bool(affine)
        dt = _float_dtype(dtype, who)
        self.weight = Parameter(np.ones(self.num_channels, dt)) if affine else None
        self.bias = Parameter(np.zeros(self.num_channels, dt)) if affine else None
        self._clear_saved()
        _place(self, device)

    def forward(self, x):
        if x.ndim < 2 or x.shape[1] != self.num_channels:
            raise ValueError(f"GroupNorm: expected input (N, {self.num_channels}, *), got "
                             f"shape {tuple(x.shape)}")
        w = None if self.weight is None else self.weight.data
        b = None if self.bias is None else self.bias.data
        y, mean, invstd = F.group_norm(x, self.num_groups, w, b, self.eps, return_stats=True)
        if is_grad_enabled():
            self._x, self._mean, self._invstd = x, mean, invstd
        return y

    def backward(self, grad_out):
        x = self._need_saved(self._x)
        w = None if self.weight is None else self.weight.data
        gx, gw, gb = F.group_norm_backward(grad_out, x, self.num_groups, w, self._mean,
                                           self._invstd)
        self._clear_saved()
        if self.affine:
            self.weight.accumulate_grad(gw)
            self.bias.accumulate_grad(gb)
        return gx

    def extra_repr(self):
        return f"{self.num_groups}, {self.num_channels}, eps={self.eps}, affine={self.affine}"


class LayerNorm(Module):
    """Layer normalisation over the trailing ``normalized_shape``, as ``torch.nn.LayerNorm``:
    ``elementwise_affine`` gives ``weight`` (ones) and, unless ``bias=False``, ``bias``
    (zeros), both shaped ``normalized_shape``."""

    _saved_names = ("_x", "_mean", "_invstd")

    def __init__(self, normalized_shape, eps=1e-5, elementwise_affine=True, bias=True,
                 device=None, dtype=None):
        super().__init__()
        who = "LayerNorm"
        if _is_int(normalized_shape):
            normalized_shape = (normalized_shape,)
        try:
            shape = tuple(_pos_int(s, "normalized_shape", who) for s in normalized_shape)
        except TypeError:
            raise TypeError(f"{who}: normalized_shape must be an int or a sequence of ints, "
                            f"got {normalized_shape!r}") from None
        if not shape:
            raise ValueError(f"{who}: normalized_shape must not be empty")
        self.normalized_shape = shape
        self.eps = _eps(eps, who)
        self.elementwise_affine = bool(elementwise_affine)
        dt = _float_dtype(dtype, who)
        self.weight = Parameter(np.ones(shape, dt)) if elementwise_affine else None
        self.bias = Parameter(np.zeros(shape, dt)) if elementwise_affine and bias else None
        self._clear_saved()
        _place(self, device)

    def forward(self, x):
        w = None if self.weight is None else self.weight.data
        b = None if self.bias is None else self.bias.data
        y, mean, invstd = F.layer_norm(x, self.normalized_shape, w, b, self.eps,
                                       return_stats=True)
        if is_grad_enabled():
            self._x, self._mean, self._invstd = x, mean, invstd
        return y

    def backward(self, grad_out):
        x = self._need_saved(self._x)
        w = None if self.weight is None else self.weight.data
        gx, gw, gb = F.layer_norm_backward(grad_out, x, self.normalized_shape, w, self._mean,
                                           self._invstd)
        self._clear_saved()
        if self.weight is not None:
            self.weight.accumulate_grad(gw)
        if self.bias is not None:
            self.bias.accumulate_grad(gb)
        return gx

    def extra_repr(self):
        return (f"{self.normalized_shape}, eps={self.eps}, "
                f"elementwise_affine={self.elementwise_affine}")


class InstanceNorm2d(Module):
    """Instance normalisation of (N, C, H, W) or (C, H, W), as ``torch.nn.InstanceNorm2d``
    (defaults ``affine=False``, ``track_running_stats=False``).

    Each sample's channel is normalised with its own statistics (group norm with one
    channel per group) in training mode, and in eval mode unless ``track_running_stats``:
    then eval mode uses ``running_mean``/``running_var``, which training updates with the
    batch's average instance mean and unbiased variance (``momentum``), as torch does.
    """

    _saved_names = ("_x", "_mean", "_invstd", "_instance")

    def __init__(self, num_features, eps=1e-5, momentum=0.1, affine=False,
                 track_running_stats=False, device=None, dtype=None):
        super().__init__()
        who = "InstanceNorm2d"
        self.num_features = _pos_int(num_features, "num_features", who)
        self.eps = _eps(eps, who)
        self.momentum = None if momentum is None else float(momentum)
        self.affine = bool(affine)
        self.track_running_stats = bool(track_running_stats)
        dt = _float_dtype(dtype, who)
        C = self.num_features
        self.weight = Parameter(np.ones(C, dt)) if affine else None
        self.bias = Parameter(np.zeros(C, dt)) if affine else None
        if self.track_running_stats:
            self.register_buffer("running_mean", np.zeros(C, dt))
            self.register_buffer("running_var", np.ones(C, dt))
            self.register_buffer("num_batches_tracked", np.zeros((), np.int64))
        else:
            self.register_buffer("running_mean", None)
            self.register_buffer("running_var", None)
            self.register_buffer("num_batches_tracked", None)
        self._clear_saved()
        _place(self, device)

    def reset_running_stats(self):
        if self.track_running_stats:
            self.running_mean[...] = 0
            self.running_var[...] = 1
            self.num_batches_tracked[...] = 0

    def forward(self, x):
        who = "InstanceNorm2d"
        if x.ndim not in (3, 4):
            raise ValueError(f"{who}: input must be 3-D (C, H, W) or 4-D (N, C, H, W), got "
                             f"shape {tuple(x.shape)}")
        x4 = x[None] if x.ndim == 3 else x
        C = x4.shape[1]
        if C != self.num_features:
            if self.affine or self.track_running_stats:
                raise ValueError(f"{who}: input has {C} channels, expected "
                                 f"{self.num_features}")
            warnings.warn(f"{who}: input has {C} channels but num_features is "
                          f"{self.num_features}; without affine or tracked statistics the "
                          "argument is unused", stacklevel=2)
        w = None if self.weight is None else self.weight.data
        b = None if self.bias is None else self.bias.data
        instance = self.training or not self.track_running_stats
        if instance:
            L = x4.shape[2] * x4.shape[3]
            if self.training and L <= 1:
                raise ValueError(f"{who}: expected more than 1 spatial element when "
                                 f"training, got input shape {tuple(x.shape)}")
            y, mean, invstd = F.group_norm(x4, C, w, b, self.eps, return_stats=True)
            if self.training and self.track_running_stats:
                self._update_running(x4, mean, L)
        else:
            y, mean, invstd = F.batch_norm(x4, self.running_mean, self.running_var, w, b,
                                           training=False, eps=self.eps, return_stats=True)
        if is_grad_enabled():
            self._x, self._mean, self._invstd, self._instance = x4, mean, invstd, instance
        return y[0] if x.ndim == 3 else y

    def _update_running(self, x4, mean, L):
        m = self.momentum if self.momentum is not None else 0.0
        N, C = x4.shape[:2]
        var = x4.reshape(N, C, L).var(axis=2) * (L / (L - 1))
        self.running_mean *= 1 - m
        self.running_mean += m * mean.mean(axis=0)
        self.running_var *= 1 - m
        self.running_var += m * var.mean(axis=0).astype(self.running_var.dtype, copy=False)

    def backward(self, grad_out):
        x = self._need_saved(self._x)
        unbatched = grad_out.ndim == 3
        g4 = grad_out[None] if unbatched else grad_out
        w = None if self.weight is None else self.weight.data
        if self._instance:
            gx, gw, gb = F.group_norm_backward(g4, x, x.shape[1], w, self._mean, self._invstd)
        else:
            gx, gw, gb = F.batch_norm_backward(g4, x, w, self._mean, self._invstd,
                                               training=False)
        self._clear_saved()
        if self.affine:
            self.weight.accumulate_grad(gw)
            self.bias.accumulate_grad(gb)
        return gx[0] if unbatched else gx

    def extra_repr(self):
        return (f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, "
                f"affine={self.affine}, track_running_stats={self.track_running_stats}")

