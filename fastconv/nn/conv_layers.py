"""The other convolution layers: ``Conv1d`` and ``ConvTranspose2d``, as in ``torch.nn``.

Same house rules as :mod:`fastconv.nn.layers`: constructor arguments, defaults, weight
layouts, initialisation (kaiming-uniform with a = sqrt(5), bias U(+-1/sqrt(fan_in)), fan_in
from ``weight.shape[1:]`` as torch computes it) and state-dict keys as torch; a forward in
grad mode keeps a reference to its input for backward; gradients accumulate into ``.grad``.
"""
from __future__ import annotations

import numpy as np

from .. import functional as F
from .._args import pair
from ..functional_family import _single, conv_transpose_output_size
from . import init
from .layers import _CONV_ALGOS, _float_dtype, _place, _pos_int
from .module import Module, Parameter, is_grad_enabled

__all__ = ["Conv1d", "ConvTranspose2d"]


def _common(mod, who, in_channels, out_channels, groups, padding_mode, algo):
    mod.in_channels = _pos_int(in_channels, "in_channels", who)
    mod.out_channels = _pos_int(out_channels, "out_channels", who)
    mod.groups = _pos_int(groups, "groups", who)
    if mod.in_channels % mod.groups or mod.out_channels % mod.groups:
        raise ValueError(f"{who}: groups={groups} must divide in_channels={in_channels} "
                         f"and out_channels={out_channels}")
    if padding_mode != "zeros":
        raise ValueError(f"{who}: only padding_mode='zeros' is supported, got "
                         f"{padding_mode!r}")
    if algo not in _CONV_ALGOS:
        raise ValueError(f"{who}: algo must be one of {', '.join(_CONV_ALGOS)}, got {algo!r}")
    mod.algo = algo


class Conv1d(Module):
    """1-D convolution over (N, C, L) or (C, L), as ``torch.nn.Conv1d``; weight
    (out_channels, in_channels/groups, kernel_size). Runs on :func:`fastconv.conv1d`."""

    _saved_names = ("_x",)

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1,
                 groups=1, bias=True, padding_mode="zeros", device=None, dtype=None, *,
                 algo="auto"):
        super().__init__()
        who = "Conv1d"
        _common(self, who, in_channels, out_channels, groups, padding_mode, algo)
        self.kernel_size = (_single(kernel_size, "kernel_size", who, 1),)
        self.stride = (_single(stride, "stride", who, 1),)
        self.dilation = (_single(dilation, "dilation", who, 1),)
        if isinstance(padding, str):
            if padding not in ("same", "valid"):
                raise ValueError(f"{who}: padding must be an int, 'same' or 'valid', got "
                                 f"{padding!r}")
            if padding == "same" and self.stride != (1,):
                raise ValueError(f"{who}: padding='same' is not supported for stride "
                                 f"{self.stride}")
            self.padding = padding
        else:
            self.padding = (_single(padding, "padding", who, 0),)
        dt = _float_dtype(dtype, who)
        self.weight = Parameter(np.empty((self.out_channels, self.in_channels // self.groups,
                                          self.kernel_size[0]), dt))
        self.bias = Parameter(np.empty(self.out_channels, dt)) if bias else None
        init.default_layer_init(self.weight, self.bias)
        self._x = None
        _place(self, device)

    def _conv_args(self):
        pad = self.padding if isinstance(self.padding, str) else self.padding[0]
        return self.stride[0], pad, self.dilation[0], self.groups

    def forward(self, x):
        y = F.conv1d(x, self.weight.data, None if self.bias is None else self.bias.data,
                     *self._conv_args(), algo=self.algo)
        self._x = x if is_grad_enabled() else None
        return y

    def backward(self, grad_out):
        x = self._need_saved(self._x)
        need_w = self.weight.requires_grad
        need_b = self.bias is not None and self.bias.requires_grad
        gx, gw, gb = F.conv1d_backward(grad_out, x, self.weight.data, *self._conv_args(),
                                       need_weight_grad=need_w, need_bias_grad=need_b,
                                       algo=self.algo)
        self._x = None
        self.weight.accumulate_grad(gw)
        if need_b:
            self.bias.accumulate_grad(gb)
        return gx

    def extra_repr(self):
        s = (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
             f"stride={self.stride}, padding={self.padding!r}")
        if self.dilation != (1,):
            s += f", dilation={self.dilation}"
        if self.groups != 1:
            s += f", groups={self.groups}"
        if self.bias is None:
            s += ", bias=False"
        return s


class ConvTranspose2d(Module):
    """2-D transposed convolution, as ``torch.nn.ConvTranspose2d``; weight
    (in_channels, out_channels/groups, kH, kW). ``forward(x, output_size=None)``: as in
    torch, ``output_size`` ((H, W) or a full shape) picks the output padding for that call.
    Runs on :func:`fastconv.conv_transpose2d` (the convolution data-gradient kernels)."""

    _saved_names = ("_x", "_out_pad")

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0,
                 output_padding=0, groups=1, bias=True, dilation=1, padding_mode="zeros",
                 device=None, dtype=None, *, algo="auto"):
        super().__init__()
        who = "ConvTranspose2d"
        _common(self, who, in_channels, out_channels, groups, padding_mode, algo)
        self.kernel_size = pair(kernel_size, "kernel_size", minimum=1, op=who)
        self.stride = pair(stride, "stride", minimum=1, op=who)
        if isinstance(padding, str):
            raise ValueError(f"{who}: padding must be an int or a pair (string padding is "
                             f"not supported for transposed convolutions), got {padding!r}")
        self.padding = pair(padding, "padding", minimum=0, op=who)
        self.output_padding = pair(output_padding, "output_padding", minimum=0, op=who)
        self.dilation = pair(dilation, "dilation", minimum=1, op=who)
        for i in range(2):
            if not (self.output_padding[i] < self.stride[i]
                    or self.output_padding[i] < self.dilation[i]):
                raise ValueError(f"{who}: output_padding must be smaller than either stride "
                                 f"or dilation, got output_padding={self.output_padding}, "
                                 f"stride={self.stride}, dilation={self.dilation}")
        dt = _float_dtype(dtype, who)
        kh, kw = self.kernel_size
        self.weight = Parameter(np.empty((self.in_channels, self.out_channels // self.groups,
                                          kh, kw), dt))
        self.bias = Parameter(np.empty(self.out_channels, dt)) if bias else None
        init.default_layer_init(self.weight, self.bias)
        self._clear_saved()
        _place(self, device)

    def _output_padding(self, x_shape, output_size):
        """torch's ``_output_padding``: the padding that yields ``output_size``."""
        if output_size is None:
            return self.output_padding
        size = [int(s) for s in output_size]
        if len(size) in (3, 4):
            size = size[-2:]
        if len(size) != 2:
            raise ValueError(f"ConvTranspose2d: output_size must have 2, 3 or 4 elements, "
                             f"got {output_size!r}")
        out = []
        for i in range(2):
            lo = conv_transpose_output_size(int(x_shape[-2 + i]), self.kernel_size[i],
                                            self.stride[i], self.padding[i], 0,
                                            self.dilation[i])
            hi = lo + self.stride[i] - 1
            if not lo <= size[i] <= hi:
                raise ValueError(f"ConvTranspose2d: requested an output size of {size}, but "
                                 f"valid sizes range from {lo} to {hi} (for an input of "
                                 f"{tuple(x_shape[-2:])}) in dimension {i}")
            out.append(size[i] - lo)
        return tuple(out)

    def _conv_args(self, out_pad):
        return self.stride, self.padding, out_pad, self.groups, self.dilation

    def forward(self, x, output_size=None):
        out_pad = self._output_padding(x.shape, output_size)
        y = F.conv_transpose2d(x, self.weight.data,
                               None if self.bias is None else self.bias.data,
                               *self._conv_args(out_pad), algo=self.algo)
        if is_grad_enabled():
            self._x, self._out_pad = x, out_pad
        return y

    def backward(self, grad_out):
        x = self._need_saved(self._x)
        need_w = self.weight.requires_grad
        need_b = self.bias is not None and self.bias.requires_grad
        gx, gw, gb = F.conv_transpose2d_backward(
            grad_out, x, self.weight.data, *self._conv_args(self._out_pad),
            need_weight_grad=need_w, need_bias_grad=need_b, algo=self.algo)
        self._clear_saved()
        self.weight.accumulate_grad(gw)
        if need_b:
            self.bias.accumulate_grad(gb)
        return gx

    def extra_repr(self):
        s = (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
             f"stride={self.stride}, padding={self.padding}")
        if self.output_padding != (0, 0):
            s += f", output_padding={self.output_padding}"
        if self.dilation != (1, 1):
            s += f", dilation={self.dilation}"
        if self.groups != 1:
            s += f", groups={self.groups}"
        if self.bias is None:
            s += ", bias=False"
        return s
