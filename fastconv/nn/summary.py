"""``summary(model, input_shape)``: the worked size calculation of a CNN as a table.

Nothing is computed on arrays: a shape-only value (:class:`_Meta`) is sent through the
model's own ``forward``, and every leaf layer it reaches reports its output shape (from
:mod:`fastconv.shapes`), parameter count, receptive field and FLOPs. Residual additions
merge the two branches (shapes must agree; the receptive field is the larger one).

Receptive field: size of the input window that can influence one output pixel, per axis,
through r_out = r_in + (k - 1) * dilation * jump_in and jump_out = jump_in * stride.
After Flatten every output depends on the whole feature map, which counts as one window
over it. A transposed convolution with stride s reads ceil(k_eff / s) input positions per
output position and divides the jump by s (a fraction of an input pixel; the table shows
the field rounded up). A 1-D layer is the width axis of a height-1 2-D one. FLOPs: 2 per
multiply-add of convolutions and linear layers (bias additions, elementwise layers,
normalisation and pooling are not counted, the usual convention).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from fractions import Fraction

from .. import shapes
from .._args import adaptive_output_size
from . import conv_layers as CL
from . import layers as L
from . import norm_layers as NL
from .module import Module, _Traced

__all__ = ["summary", "summary_rows"]


@dataclass
class Row:
    name: str
    kind: str
    out_shape: tuple
    params: int
    trainable: int
    rf: tuple
    flops: int


@dataclass
class _Tracer:
    names: dict
    rows: list = field(default_factory=list)


class _Meta(_Traced):
    """A shape plus the receptive-field state (per-axis field size and jump)."""

    def __init__(self, shape, rf=(1, 1), jump=(1, 1), tracer=None):
        self.shape = tuple(int(s) for s in shape)
        self.rf = tuple(rf)
        self.jump = tuple(jump)
        self.tracer = tracer

    @property
    def ndim(self):
        return len(self.shape)

    def _like(self, shape, rf=None, jump=None):
        return _Meta(shape, rf or self.rf, jump or self.jump, self.tracer)

    def __add__(self, other):
        if not isinstance(other, _Meta):
            return self
        if other.shape != self.shape:
            raise ValueError(f"summary: residual branches have different shapes {self.shape} "
                             f"and {other.shape}")
        return self._like(self.shape, tuple(map(max, self.rf, other.rf)),
                          tuple(map(max, self.jump, other.jump)))

    __iadd__ = __radd__ = __add__

    def trace(self, module: Module):
        rule = _RULES.get(type(module))
        if rule is None:
            for cls, fn in _RULES.items():
                if isinstance(module, cls):
                    rule = fn
                    break
        if rule is None:
            # A container: run its own forward on shapes.
            return module.forward(self)
        out, flops = rule(module, self)
        params = sum(p.size for p in module._parameters.values())
        trainable = sum(p.size for p in module._parameters.values() if p.requires_grad)
        rf = tuple(int(math.ceil(r)) for r in out.rf)
        if len(out.shape) == 3:
            rf = (rf[1], rf[1])  # a sequence: only the width axis has a field
        self.tracer.rows.append(Row(self.tracer.names.get(id(module), "?"),
                                    type(module).__name__, out.shape, params, trainable,
                                    rf, flops))
        return out


def _window(m: _Meta, kernel, stride, dilation):
    rf = tuple(r + (k - 1) * d * j for r, k, d, j in zip(m.rf, kernel, dilation, m.jump))
    jump = tuple(j * s for j, s in zip(m.jump, stride))
    return rf, jump


def _need4(m, who, channels=None):
    if len(m.shape) != 4:
        raise ValueError(f"summary: {who} needs a 4-D (N, C, H, W) input, got {m.shape}")
    if channels is not None and m.shape[1] != channels:
        raise ValueError(f"summary: {who} expects {channels} input channels, got shape "
                         f"{m.shape}")


def _conv(mod: L.Conv2d, m: _Meta):
    _need4(m, "Conv2d", mod.in_channels)
    N, C, H, W = m.shape
    (kh, kw), (sh, sw), (dh, dw) = mod.kernel_size, mod.stride, mod.dilation
    if mod.padding == "valid":
        pads = ((0, 0), (0, 0))
    elif mod.padding == "same":
        pads = (shapes.same_padding(kh, dh), shapes.same_padding(kw, dw))
    else:
        pads = ((mod.padding[0],) * 2, (mod.padding[1],) * 2)
    # out_size pads symmetrically; an odd 'same' total is served by padding the sum evenly.
    P = shapes.out_size(H + sum(pads[0]), kh, 0, sh, dh)
    Q = shapes.out_size(W + sum(pads[1]), kw, 0, sw, dw)
    flops = shapes.conv_flops((N, C, H, W), tuple(mod.weight.shape), mod.stride,
                              mod.padding, mod.dilation, mod.groups)
    rf, jump = _window(m, mod.kernel_size, mod.stride, mod.dilation)
    return m._like((N, mod.out_channels, P, Q), rf, jump), flops


def _conv1d(mod: CL.Conv1d, m: _Meta):
    if len(m.shape) != 3 or m.shape[1] != mod.in_channels:
        raise ValueError(f"summary: Conv1d needs a 3-D (N, {mod.in_channels}, L) input, got "
                         f"{m.shape}")
    N, C, Lin = m.shape
    (k,), (s,), (d,) = mod.kernel_size, mod.stride, mod.dilation
    if mod.padding == "valid":
        pads = (0, 0)
    elif mod.padding == "same":
        pads = shapes.same_padding(k, d)
    else:
        pads = (mod.padding[0],) * 2
    Lout = shapes.out_size(Lin + sum(pads), k, 0, s, d)
    flops = shapes.conv_flops((N, C, 1, Lin), (*mod.weight.shape[:2], 1, k), (1, s),
                              (0, pads[0]) if mod.padding != "same" else "same", (1, d),
                              mod.groups)
    rf, jump = _window(m, (1, k), (1, s), (1, d))
    return m._like((N, mod.out_channels, Lout), rf, jump), flops


def _conv_transpose(mod: CL.ConvTranspose2d, m: _Meta):
    _need4(m, "ConvTranspose2d", mod.in_channels)
    N, C, H, W = m.shape
    out = tuple(shapes.conv_transpose_out_size(n, k, p, s, d, op) for n, k, p, s, d, op in
                zip((H, W), mod.kernel_size, mod.padding, mod.stride, mod.dilation,
                    mod.output_padding))
    kh, kw = mod.kernel_size
    flops = 2 * N * C * H * W * (mod.out_channels // mod.groups) * kh * kw
    # ceil(k_eff / s) input positions reach one output position; the jump shrinks by s.
    reach = tuple(-(-(d * (k - 1) + 1) // s) for k, s, d in
                  zip(mod.kernel_size, mod.stride, mod.dilation))
    rf = tuple(r + (n - 1) * j for r, n, j in zip(m.rf, reach, m.jump))
    jump = tuple(Fraction(j) / s for j, s in zip(m.jump, mod.stride))
    return m._like((N, mod.out_channels, *out), rf, jump), flops


def _channels_norm(mod, m: _Meta):
    who = type(mod).__name__
    if isinstance(mod, NL.InstanceNorm2d):
        _need4(m, who, mod.num_features if (mod.affine or mod.track_running_stats) else None)
    elif len(m.shape) < 2 or m.shape[1] != mod.num_channels:
        raise ValueError(f"summary: GroupNorm expects (N, {mod.num_channels}, ...), got "
                         f"{m.shape}")
    return m._like(m.shape), 0


def _layer_norm(mod: NL.LayerNorm, m: _Meta):
    k = len(mod.normalized_shape)
    if tuple(m.shape[len(m.shape) - k:]) != mod.normalized_shape:
        raise ValueError(f"summary: LayerNorm normalises {mod.normalized_shape}, got input "
                         f"shape {m.shape}")
    return m._like(m.shape), 0


def _pool(mod, m: _Meta):
    _need4(m, type(mod).__name__)
    N, C, H, W = m.shape
    P, Q = (shapes.out_size(s, k, p, st, d, mod.ceil_mode)
            for s, k, p, st, d in zip((H, W), mod.kernel_size, mod.padding, mod.stride,
                                      mod.dilation))
    rf, jump = _window(m, mod.kernel_size, mod.stride, mod.dilation)
    return m._like((N, C, P, Q), rf, jump), 0


def _adaptive(mod: L.AdaptiveAvgPool2d, m: _Meta):
    _need4(m, "AdaptiveAvgPool2d")
    N, C, H, W = m.shape
    OH, OW = adaptive_output_size("AdaptiveAvgPool2d", mod.output_size, H, W)
    # The widest adaptive window is ceil(size / out) (+1 when the windows overlap unevenly);
    # the jump between windows is size / out, exact for the usual divisible case.
    kern = tuple(-(-s // o) + (1 if s % o and o > 1 else 0) for s, o in ((H, OH), (W, OW)))
    stride = tuple(max(s // o, 1) for s, o in ((H, OH), (W, OW)))
    rf, jump = _window(m, kern, stride, (1, 1))
    return m._like((N, C, OH, OW), rf, jump), 0


def _flatten(mod: L.Flatten, m: _Meta):
    out = mod._out_shape(m.shape)
    if len(m.shape) == 4 and mod.start_dim == 1:
        rf, jump = _window(m, m.shape[2:], (1, 1), (1, 1))
        return m._like(out, rf, jump), 0
    return m._like(out), 0


def _linear(mod: L.Linear, m: _Meta):
    if not m.shape or m.shape[-1] != mod.in_features:
        raise ValueError(f"summary: Linear expects {mod.in_features} input features, got "
                         f"shape {m.shape}")
    rows = 1
    for s in m.shape[:-1]:
        rows *= s
    flops = 2 * rows * mod.in_features * mod.out_features
    return m._like((*m.shape[:-1], mod.out_features)), flops


def _same(mod, m: _Meta):
    if isinstance(mod, L.BatchNorm2d):
        _need4(m, "BatchNorm2d", mod.num_features)
    return m._like(m.shape), 0


_RULES = {
    L.Conv2d: _conv, L.MaxPool2d: _pool, L.AvgPool2d: _pool,
    L.AdaptiveAvgPool2d: _adaptive, L.Flatten: _flatten, L.Linear: _linear,
    L.BatchNorm2d: _same, L.ReLU: _same, L.Dropout: _same, L.Identity: _same,
    CL.Conv1d: _conv1d, CL.ConvTranspose2d: _conv_transpose,
    NL.GroupNorm: _channels_norm, NL.InstanceNorm2d: _channels_norm,
    NL.LayerNorm: _layer_norm,
}


def summary_rows(model: Module, input_shape):
    """The per-layer rows of :func:`summary` (name, kind, out_shape, params, trainable, rf,
    flops), in execution order."""
    if not isinstance(model, Module):
        raise TypeError(f"summary: model must be a fastconv.nn.Module, got "
                        f"{type(model).__name__}")
    try:
        shape = tuple(int(s) for s in input_shape)
    except (TypeError, ValueError):
        raise TypeError(f"summary: input_shape must be a sequence of ints, got "
                        f"{input_shape!r}") from None
    # A model that starts on sequences (its first layer a Conv1d) takes (N, C, L) or
    # (C, L); any other model (N, C, H, W) or (C, H, W).
    first = next((m for _, m in model.named_modules() if not m._modules), None)
    rank = 3 if isinstance(first, CL.Conv1d) else 4
    if len(shape) == rank - 1:
        shape = (1, *shape)
    if len(shape) != rank or min(shape) < 1:
        want = "(N, C, L) or (C, L)" if rank == 3 else "(N, C, H, W) or (C, H, W)"
        raise ValueError(f"summary: input_shape must be {want} with positive sizes, got "
                         f"{tuple(input_shape)}")
    names = {id(m): (n or type(m).__name__) for n, m in model.named_modules()}
    tracer = _Tracer(names)
    out = model(_Meta(shape, tracer=tracer))
    return tracer.rows, out.shape


def _fmt_int(n):
    return f"{n:,}"


def summary(model: Module, input_shape) -> str:
    """A table of every layer's output shape, parameters, receptive field and MFLOPs for
    an input of ``input_shape`` ((N, C, H, W) or (C, H, W)), with totals.

    Parameters shared by several layers are counted once in the totals.
    """
    rows, out_shape = summary_rows(model, input_shape)
    header = ("Layer", "Type", "Output shape", "Params", "RF", "MFLOPs")
    table = []
    for r in rows:
        rf = str(r.rf[0]) if r.rf[0] == r.rf[1] else f"{r.rf[0]}x{r.rf[1]}"
        table.append((r.name, r.kind, "x".join(map(str, r.out_shape)), _fmt_int(r.params),
                      rf, f"{r.flops / 1e6:,.2f}"))
    widths = [max(len(h), *(len(t[i]) for t in table)) if table else len(h)
              for i, h in enumerate(header)]
    right = (False, False, True, True, True, True)

    def line(cells):
        return "  ".join(c.rjust(w) if rj else c.ljust(w)
                         for c, w, rj in zip(cells, widths, right)).rstrip()

    rule = "-" * len(line(header))
    total = sum(p.size for p in model.parameters())
    trainable = sum(p.size for p in model.parameters() if p.requires_grad)
    flops = sum(r.flops for r in rows)
    shape = tuple(int(s) for s in input_shape)
    out = [f"{type(model).__name__} summary for input {'x'.join(map(str, shape))}", rule,
           line(header), rule, *(line(t) for t in table), rule,
           f"Output shape:         {'x'.join(map(str, out_shape))}",
           f"Total params:         {_fmt_int(total)}",
           f"Trainable params:     {_fmt_int(trainable)}",
           f"Non-trainable params: {_fmt_int(total - trainable)}",
           f"Total MFLOPs:         {flops / 1e6:,.2f} (2 per multiply-add; conv and linear)",
           f"Receptive field:      {rows[-1].rf[0] if rows else 1}"
           + (f"x{rows[-1].rf[1]}" if rows and rows[-1].rf[0] != rows[-1].rf[1] else "")]
    return "\n".join(out)
