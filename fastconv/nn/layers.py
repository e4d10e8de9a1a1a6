"""The layers: thin modules over :mod:`fastconv.functional` with explicit backward passes.

Constructor arguments follow ``torch.nn``. Each layer stores in ``forward`` only what its
``backward`` reads (nothing under :func:`fastconv.nn.no_grad`) and drops it in ``backward``.
Layers never copy an activation: they keep references to arrays the ops already made.
"""
from __future__ import annotations

from collections import OrderedDict

import numpy as np

from .. import functional as F
from .._args import pair, positive_int
from .._dispatch import WINOGRAD_TILES
from . import init
from .module import Module, Parameter, array_lib, is_grad_enabled, overwritable

__all__ = ["Conv2d", "BatchNorm2d", "ReLU", "MaxPool2d", "AvgPool2d", "AdaptiveAvgPool2d",
           "Linear", "Flatten", "Dropout", "Identity", "Sequential", "Chain"]

# The layers take every algorithm of the dispatcher's table but depthwise, which
# (groups == C only) is reached through algo="auto".
_CONV_ALGOS = ("auto", "direct", "im2col", *WINOGRAD_TILES, "implicit_gemm")


def _float_dtype(dtype, who):
    dt = np.dtype(np.float32 if dtype is None else dtype)
    if dt not in (np.dtype(np.float32), np.dtype(np.float64)):
        raise TypeError(f"{who}: dtype must be float32 or float64, got {dt}")
    return dt


def _pos_int(v, name, who):
    return positive_int(v, name, who)


def _place(module, device):
    if device not in (None, "cpu"):
        module.to(device)
    return module


class Conv2d(Module):
    """2-D convolution layer, as ``torch.nn.Conv2d``; ``algo`` picks the convolution
    algorithm for forward and backward (see :func:`fastconv.conv2d`).

    A frozen weight (``weight.requires_grad = False``) makes backward pass
    ``need_weight_grad=False``, so its gradient is never computed; as the first trainable
    layer of a network (see :class:`Chain`) it also skips its input gradient.
    """

    _saved_names = ("_x",)

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1,
                 groups=1, bias=True, padding_mode="zeros", device=None, dtype=None, *,
                 algo="auto"):
        super().__init__()
        who = "Conv2d"
        self.in_channels = _pos_int(in_channels, "in_channels", who)
        self.out_channels = _pos_int(out_channels, "out_channels", who)
        self.groups = _pos_int(groups, "groups", who)
        if self.in_channels % self.groups or self.out_channels % self.groups:
            raise ValueError(f"{who}: groups={groups} must divide in_channels={in_channels} "
                             f"and out_channels={out_channels}")
        self.kernel_size = pair(kernel_size, "kernel_size", minimum=1, op=who)
        self.stride = pair(stride, "stride", minimum=1, op=who)
        self.dilation = pair(dilation, "dilation", minimum=1, op=who)
        if isinstance(padding, str):
            if padding not in ("same", "valid"):
                raise ValueError(f"{who}: padding must be an int, a pair, 'same' or 'valid', "
                                 f"got {padding!r}")
            if padding == "same" and self.stride != (1, 1):
                raise ValueError(f"{who}: padding='same' is not supported for stride "
                                 f"{self.stride}")
            self.padding = padding
        else:
            self.padding = pair(padding, "padding", minimum=0, op=who)
        if padding_mode != "zeros":
            raise ValueError(f"{who}: only padding_mode='zeros' is supported, got "
                             f"{padding_mode!r}")
        if algo not in _CONV_ALGOS:
            raise ValueError(f"{who}: algo must be one of {', '.join(_CONV_ALGOS)}, got {algo!r}")
        self.algo = algo
        dt = _float_dtype(dtype, who)
        kh, kw = self.kernel_size
        self.weight = Parameter(np.empty((self.out_channels, self.in_channels // self.groups,
                                          kh, kw), dt))
        self.bias = Parameter(np.empty(self.out_channels, dt)) if bias else None
        init.default_layer_init(self.weight, self.bias)
        self._x = None
        _place(self, device)

    def _conv_args(self):
        return self.stride, self.padding, self.dilation, self.groups

    # Plans kept per layer: a training run sees one or two input shapes (the last, smaller
    # batch), evaluation a few more.
    _PLANS_KEPT = 8

    def _plan(self, x, w, b):
        """The :class:`fastconv.functional.ConvPlan` for these arguments: made (validating
        them as ``conv2d`` does) on the first call with their shapes, then reused, so the
        spec, the backend and the algorithms are settled once per input shape."""
        args = self._conv_args()
        try:
            key = (type(x), x.shape, x.dtype, type(w), w.shape, w.dtype,
                   None if b is None else (type(b), b.shape, b.dtype), args)
        except AttributeError:  # not an array: conv_plan raises conv2d's error
            return F.conv_plan(x, w, b, *args)
        plans = self.__dict__.get("_plans")
        if plans is None:  # also a layer unpickled from before plans existed
            plans = {}
            object.__setattr__(self, "_plans", plans)
        plan = plans.get(key)
        if plan is None:
            plan = F.conv_plan(x, w, b, *args)
            if len(plans) >= self._PLANS_KEPT:
                plans.pop(next(iter(plans)))
            plans[key] = plan
        return plan

    def _params(self):
        return self.weight.data, None if self.bias is None else self.bias.data

    def forward(self, x):
        w, b = self._params()
        y = F.conv2d(x, w, b, *self._conv_args(), algo=self.algo, plan=self._plan(x, w, b))
        self._x = x if is_grad_enabled() else None
        return y

    def backward(self, grad_out):
        return self._backward(grad_out, True)

    def _backward_params_only(self, grad_out):
        self._backward(grad_out, False)

    def _backward(self, grad_out, need_x):
        x = self._need_saved(self._x)
        need_w = self.weight.requires_grad
        need_b = self.bias is not None and self.bias.requires_grad
        if not (need_x or need_w or need_b):
            self._x = None
            return None
        w, b = self._params()
        gx, gw, gb = F.conv2d_backward(grad_out, x, w, *self._conv_args(),
                                       need_input_grad=need_x, need_weight_grad=need_w,
                                       need_bias_grad=need_b, algo=self.algo,
                                       plan=self._plan(x, w, b))  # the forward's
        self._x = None
        self.weight.accumulate_grad(gw)
        if need_b:
            self.bias.accumulate_grad(gb)
        return gx

    def extra_repr(self):
        s = (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
             f"stride={self.stride}, padding={self.padding}")
        if self.dilation != (1, 1):
            s += f", dilation={self.dilation}"
        if self.groups != 1:
            s += f", groups={self.groups}"
        if self.bias is None:
            s += ", bias=False"
        if self.algo != "auto":
            s += f", algo={self.algo!r}"
        return s


class BatchNorm2d(Module):
    """Batch normalisation over (N, H, W) per channel, as ``torch.nn.BatchNorm2d``.

    Training mode normalises with the batch statistics and updates ``running_mean`` /
    ``running_var`` (unbiased variance) and ``num_batches_tracked``; evaluation mode uses
    the running statistics. ``momentum=None`` gives the cumulative average, as PyTorch.
    """

    _saved_names = ("_x", "_mean", "_invstd", "_batch_stats")

    def __init__(self, num_features, eps=1e-5, momentum=0.1, affine=True,
                 track_running_stats=True, device=None, dtype=None):
        super().__init__()
        who = "BatchNorm2d"
        self.num_features = _pos_int(num_features, "num_features", who)
        self.eps = float(eps)
        if not self.eps >= 0:
            raise ValueError(f"{who}: eps must be >= 0, got {eps!r}")
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
        if x.ndim != 4:
            raise ValueError(f"BatchNorm2d: input must be 4-D (N, C, H, W), got shape "
                             f"{tuple(x.shape)}")
        if x.shape[1] != self.num_features:
            raise ValueError(f"BatchNorm2d: input has {x.shape[1]} channels, expected "
                             f"{self.num_features}")
        batch_stats = self.training or not self.track_running_stats
        momentum = 0.0
        if self.training and self.track_running_stats:
            self.num_batches_tracked[...] += 1
            momentum = (1.0 / float(self.num_batches_tracked) if self.momentum is None
                        else self.momentum)
        w = None if self.weight is None else self.weight.data
        b = None if self.bias is None else self.bias.data
        # Without tracked statistics the buffers are None and batch statistics are used in
        # both modes, as in PyTorch.
        if not is_grad_enabled():  # nothing to keep for backward
            return F.batch_norm(x, self.running_mean, self.running_var, w, b,
                                training=batch_stats, momentum=momentum, eps=self.eps)
        y, mean, invstd = F.batch_norm(x, self.running_mean, self.running_var, w, b,
                                       training=batch_stats, momentum=momentum, eps=self.eps,
                                       return_stats=True)
        self._x, self._mean, self._invstd, self._batch_stats = x, mean, invstd, batch_stats
        return y

    def backward(self, grad_out):
        x = self._need_saved(self._x)
        w = None if self.weight is None else self.weight.data
        gx, gw, gb = F.batch_norm_backward(grad_out, x, w, self._mean, self._invstd,
                                           training=self._batch_stats)
        self._clear_saved()
        if self.affine:
            self.weight.accumulate_grad(gw)
            self.bias.accumulate_grad(gb)
        return gx

    def extra_repr(self):
        return (f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, "
                f"affine={self.affine}, track_running_stats={self.track_running_stats}")


class ReLU(Module):
    """max(x, 0). ``inplace=True``: under :func:`~fastconv.nn.no_grad` the input is
    overwritten and returned, as in torch (no second array); with gradients enabled the
    output is always a new array, because backward reads it."""

    _saved_names = ("_y",)

    def __init__(self, inplace: bool = False):
        super().__init__()
        self.inplace = bool(inplace)
        self._y = None

    def forward(self, x):
        if self.inplace and overwritable(x):
            self._y = None
            return F.relu_(x)
        y = F.relu(x)
        self._y = y if is_grad_enabled() else None
        return y

    def backward(self, grad_out):
        gx = F.relu_backward(grad_out, self._need_saved(self._y))
        self._y = None
        return gx


class MaxPool2d(Module):
    """Max pooling, as ``torch.nn.MaxPool2d`` (``return_indices`` returns ``(y, indices)``)."""

    _saved_names = ("_idx", "_x_shape")

    def __init__(self, kernel_size, stride=None, padding=0, dilation=1, return_indices=False,
                 ceil_mode=False):
        super().__init__()
        who = "MaxPool2d"
        self.kernel_size = pair(kernel_size, "kernel_size", minimum=1, op=who)
        self.stride = self.kernel_size if stride is None else pair(stride, "stride", minimum=1,
                                                                    op=who)
        self.padding = pair(padding, "padding", minimum=0, op=who)
        self.dilation = pair(dilation, "dilation", minimum=1, op=who)
        self.return_indices = bool(return_indices)
        self.ceil_mode = bool(ceil_mode)
        self._clear_saved()

    def forward(self, x):
        keep = is_grad_enabled()
        out = F.max_pool2d(x, self.kernel_size, self.stride, self.padding, self.dilation,
                           self.ceil_mode, return_indices=keep or self.return_indices)
        y, idx = out if isinstance(out, tuple) else (out, None)
        if keep:
            self._idx, self._x_shape = idx, tuple(x.shape)
        return (y, idx) if self.return_indices else y

    def backward(self, grad_out):
        idx = self._need_saved(self._idx)
        gx = F.max_pool2d_backward(grad_out, idx, self._x_shape)
        self._clear_saved()
        return gx

    def extra_repr(self):
        return (f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"
                + (f", dilation={self.dilation}" if self.dilation != (1, 1) else "")
                + (", ceil_mode=True" if self.ceil_mode else ""))


class AvgPool2d(Module):
    """Average pooling, as ``torch.nn.AvgPool2d``."""

    _saved_names = ("_x_shape",)

    def __init__(self, kernel_size, stride=None, padding=0, ceil_mode=False,
                 count_include_pad=True, divisor_override=None):
        super().__init__()
        who = "AvgPool2d"
        self.kernel_size = pair(kernel_size, "kernel_size", minimum=1, op=who)
        self.stride = self.kernel_size if stride is None else pair(stride, "stride", minimum=1,
                                                                    op=who)
        self.padding = pair(padding, "padding", minimum=0, op=who)
        self.ceil_mode = bool(ceil_mode)
        self.count_include_pad = bool(count_include_pad)
        self.divisor_override = divisor_override
        self.dilation = (1, 1)
        self._x_shape = None

    def _args(self):
        return (self.kernel_size, self.stride, self.padding, self.ceil_mode,
                self.count_include_pad, self.divisor_override)

    def forward(self, x):
        y = F.avg_pool2d(x, *self._args())
        self._x_shape = tuple(x.shape) if is_grad_enabled() else None
        return y

    def backward(self, grad_out):
        gx = F.avg_pool2d_backward(grad_out, self._need_saved(self._x_shape), *self._args())
        self._x_shape = None
        return gx

    def extra_repr(self):
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"


class AdaptiveAvgPool2d(Module):
    """Adaptive average pooling to ``output_size``, as ``torch.nn.AdaptiveAvgPool2d``."""

    _saved_names = ("_x_shape",)

    def __init__(self, output_size):
        super().__init__()
        self.output_size = output_size
        self._x_shape = None

    def forward(self, x):
        y = F.adaptive_avg_pool2d(x, self.output_size)
        self._x_shape = tuple(x.shape) if is_grad_enabled() else None
        return y

    def backward(self, grad_out):
        gx = F.adaptive_avg_pool2d_backward(grad_out, self._need_saved(self._x_shape))
        self._x_shape = None
        return gx

    def extra_repr(self):
        return f"output_size={self.output_size}"


class Linear(Module):
    """``y = x @ weight.T + bias``, as ``torch.nn.Linear``."""

    _saved_names = ("_x",)

    def __init__(self, in_features, out_features, bias=True, device=None, dtype=None):
        super().__init__()
        who = "Linear"
        self.in_features = _pos_int(in_features, "in_features", who)
        self.out_features = _pos_int(out_features, "out_features", who)
        dt = _float_dtype(dtype, who)
        self.weight = Parameter(np.empty((self.out_features, self.in_features), dt))
        self.bias = Parameter(np.empty(self.out_features, dt)) if bias else None
        init.default_layer_init(self.weight, self.bias)
        self._x = None
        _place(self, device)

    def forward(self, x):
        y = F.linear(x, self.weight.data, None if self.bias is None else self.bias.data)
        self._x = x if is_grad_enabled() else None
        return y

    def backward(self, grad_out):
        gx, gw, gb = F.linear_backward(grad_out, self._need_saved(self._x), self.weight.data)
        self._x = None
        self.weight.accumulate_grad(gw)
        if self.bias is not None:
            self.bias.accumulate_grad(gb)
        return gx

    def _backward_params_only(self, grad_out):
        # The head of a frozen backbone: dW = g^T x, db = sum g; no g @ W for the input.
        x = self._need_saved(self._x)
        self._x = None
        if x.ndim != 2 or grad_out.shape != (x.shape[0], self.out_features):
            self._x = x
            self.backward(grad_out)
            return
        if self.weight.requires_grad:
            self.weight.accumulate_grad(grad_out.T @ x)
        if self.bias is not None and self.bias.requires_grad:
            self.bias.accumulate_grad(grad_out.sum(axis=0))

    def extra_repr(self):
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"bias={self.bias is not None}")


class Flatten(Module):
    """Flattens dimensions ``start_dim..end_dim`` into one (a view, no copy)."""

    _saved_names = ("_x_shape",)

    def __init__(self, start_dim: int = 1, end_dim: int = -1):
        super().__init__()
        self.start_dim, self.end_dim = int(start_dim), int(end_dim)
        self._x_shape = None

    def _out_shape(self, shape):
        nd = len(shape)
        s = self.start_dim + nd if self.start_dim < 0 else self.start_dim
        e = self.end_dim + nd if self.end_dim < 0 else self.end_dim
        if not (0 <= s < nd and 0 <= e < nd) or s > e:
            raise ValueError(f"Flatten: start_dim={self.start_dim}, end_dim={self.end_dim} "
                             f"invalid for an input of shape {tuple(shape)}")
        return (*shape[:s], int(np.prod(shape[s:e + 1], dtype=np.int64)), *shape[e + 1:])

    def forward(self, x):
        y = x.reshape(self._out_shape(tuple(x.shape)))
        self._x_shape = tuple(x.shape) if is_grad_enabled() else None
        return y

    def backward(self, grad_out):
        gx = grad_out.reshape(self._need_saved(self._x_shape))
        self._x_shape = None
        return gx


class Dropout(Module):
    """Zeroes each element with probability ``p`` in training mode and scales the rest by
    1/(1-p); the identity in evaluation mode."""

    _saved_names = ("_mask",)

    def __init__(self, p: float = 0.5, inplace: bool = False):
        super().__init__()
        p = float(p)
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"Dropout: p must lie in [0, 1], got {p}")
        self.p = p
        self.inplace = bool(inplace)
        self._mask = None

    def forward(self, x):
        if not self.training or self.p == 0.0:
            self._mask = None
            return x
        xp = array_lib(x)
        if self.p == 1.0:
            mask = xp.zeros(x.shape, x.dtype)
        elif xp is np:
            mask = (init.generator().random(x.shape) >= self.p).astype(x.dtype)
            mask *= x.dtype.type(1.0 / (1.0 - self.p))
        else:
            mask = (xp.random.random(x.shape) >= self.p).astype(x.dtype)
            mask *= 1.0 / (1.0 - self.p)
        self._mask = mask if is_grad_enabled() else None
        return x * mask

    def backward(self, grad_out):
        if self._mask is None:
            # Identity in eval mode (or p == 0): nothing was saved because nothing is needed.
            return grad_out
        gx = grad_out * self._mask
        self._mask = None
        return gx

    def extra_repr(self):
        return f"p={self.p}"


class Identity(Module):
    """Passes its input through (a placeholder, e.g. the CIFAR stem's missing max pool)."""

    def forward(self, x):
        return x

    def backward(self, grad_out):
        return grad_out


def _backward_chain(chain, grad_out, need_input_grad):
    """Backward through modules applied in order. Without ``need_input_grad`` the pass
    stops at the first module holding a trainable parameter, which computes parameter
    gradients only; the frozen modules below it compute nothing (their saved activations
    are dropped). Returns the input gradient, or None when not needed."""
    if need_input_grad:
        for m in reversed(chain):
            grad_out = m.backward(grad_out)
        return grad_out
    first = next((i for i, m in enumerate(chain) if m.has_trainable()), None)
    if first is None:
        for m in chain:
            m._release()
        return None
    for m in reversed(chain[first + 1:]):
        grad_out = m.backward(grad_out)
    chain[first]._backward_params_only(grad_out)
    for m in chain[:first]:
        m._release()
    return None


class Chain(Module):
    """A module whose forward is a straight chain of sub-modules (``_chain()``), so its
    backward is the chain reversed. Models whose data flow is a chain derive from it.

    ``backward(grad_out, need_input_grad=False)`` is the training step's form: nobody
    uses the gradient of the network's input, so the first trainable layer computes only
    its parameter gradients (the stem convolution skips grad_x) and everything below it,
    a frozen backbone included, computes nothing. It returns None.
    """

    def _chain(self):
        return list(self._modules.values())

    def forward(self, x):
        for m in self._chain():
            x = m(x)
        return x

    def backward(self, grad_out, need_input_grad: bool = True):
        return _backward_chain(self._chain(), grad_out, need_input_grad)

    def _backward_params_only(self, grad_out):
        self.backward(grad_out, need_input_grad=False)


class Sequential(Chain):
    """Modules applied in order, named ``"0"``, ``"1"``, ... (or by an ``OrderedDict``)."""

    def __init__(self, *modules):
        super().__init__()
        if len(modules) == 1 and isinstance(modules[0], OrderedDict):
            items = modules[0].items()
        else:
            items = ((str(i), m) for i, m in enumerate(modules))
        for name, m in items:
            if not isinstance(m, Module):
                raise TypeError(f"Sequential: element {name!r} is a {type(m).__name__}, "
                                "not a Module")
            setattr(self, name, m)

    def append(self, module):
        if not isinstance(module, Module):
            raise TypeError(f"Sequential.append: expected a Module, got {type(module).__name__}")
        setattr(self, str(len(self._modules)), module)
        return self

    def __len__(self):
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules.values())

    def __getitem__(self, idx):
        mods = list(self._modules.values())
        if isinstance(idx, slice):
            return Sequential(OrderedDict(list(self._modules.items())[idx]))
        return mods[idx]

    def __setitem__(self, idx, module):
        if not isinstance(module, Module):
            raise TypeError(f"Sequential: expected a Module, got {type(module).__name__}")
        name = list(self._modules)[idx]
        self._modules[name] = module
