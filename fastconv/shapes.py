"""Size arithmetic for convolution and pooling layers.

These follow ``torch.nn`` exactly (floor division, ``ceil_mode`` dropping a window
that would start in the right padding), so they can be used to plan a network
before running it.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence

__all__ = ["out_size", "conv_transpose_out_size", "same_padding", "receptive_field",
           "conv_params", "conv_flops"]


def _is_int(v) -> bool:
    """An integer that is not a bool (anything with ``__index__``: int, NumPy ints).
    The one integer test of the package (fastconv._args re-exports it as ``is_int``)."""
    return not isinstance(v, bool) and hasattr(v, "__index__")


def _check_int(value, name: str, minimum: int) -> int:
    if not _is_int(value):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r}")
    value = int(value.__index__())
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return value


def out_size(W: int, K: int, P: int = 0, S: int = 1, dilation: int = 1,
             ceil_mode: bool = False) -> int:
    """Output length of a convolution / pooling window sliding over ``W`` samples.

    ``K`` is the kernel size, ``P`` the padding on each side, ``S`` the stride.
    With ``ceil_mode`` (pooling) the last partial window is kept unless it would
    start inside the right padding, as PyTorch does. Raises ``ValueError`` when the
    output would be empty.

    >>> out_size(224, 7, 3, 2)
    112
    """
    W = _check_int(W, "W", 0)
    K = _check_int(K, "K", 1)
    P = _check_int(P, "P", 0)
    S = _check_int(S, "S", 1)
    dilation = _check_int(dilation, "dilation", 1)
    span = W + 2 * P - dilation * (K - 1) - 1
    if span < 0 and not ceil_mode:
        raise ValueError(
            f"kernel (K={K}, dilation={dilation}) is larger than the padded input "
            f"(W={W}, P={P})")
    n = pool_out_len(W, K, S, P, dilation, bool(ceil_mode))
    if n < 1:
        raise ValueError(f"output would be empty (W={W}, K={K}, P={P}, S={S}, "
                         f"dilation={dilation}, ceil_mode={bool(ceil_mode)})")
    return n


def pool_out_len(size: int, k: int, s: int, p: int, d: int, ceil_mode: bool) -> int:
    """PyTorch's output length rule for validated integers (may return < 1: empty).

    ``ceil_mode`` rounds the window count up (a window may hang over the bottom/right
    edge, even when the padded input is shorter than the window) but drops a last window
    that would start inside the right padding.
    """
    n = (size + 2 * p - d * (k - 1) - 1 + (s - 1 if ceil_mode else 0)) // s + 1
    if ceil_mode and (n - 1) * s >= size + p:
        n -= 1
    return n


def conv_transpose_out_size(W: int, K: int, P: int = 0, S: int = 1, dilation: int = 1,
                           output_padding: int = 0) -> int:
    """Output length of a transposed convolution over ``W`` samples (as PyTorch):
    ``(W - 1) * S - 2 * P + dilation * (K - 1) + output_padding + 1``.

    ``output_padding`` must be smaller than the stride or the dilation. Raises
    ``ValueError`` when the output would be empty.

    >>> conv_transpose_out_size(4, 4, 1, 2)
    8
    """
    W = _check_int(W, "W", 1)
    K = _check_int(K, "K", 1)
    P = _check_int(P, "P", 0)
    S = _check_int(S, "S", 1)
    dilation = _check_int(dilation, "dilation", 1)
    output_padding = _check_int(output_padding, "output_padding", 0)
    if not (output_padding < S or output_padding < dilation):
        raise ValueError(f"output_padding={output_padding} must be smaller than either the "
                         f"stride S={S} or the dilation {dilation}")
    n = (W - 1) * S - 2 * P + dilation * (K - 1) + output_padding + 1
    if n < 1:
        raise ValueError(f"output size would be {n} (W={W}, K={K}, P={P}, S={S}, "
                         f"dilation={dilation}, output_padding={output_padding})")
    return n


def same_padding(K: int, dilation: int = 1) -> tuple[int, int]:
    """(before, after) padding that keeps the size at stride 1; odd extra goes after."""
    K = _check_int(K, "K", 1)
    dilation = _check_int(dilation, "dilation", 1)
    total = dilation * (K - 1)
    return total // 2, total - total // 2


def receptive_field(layers: Iterable) -> int:
    """Receptive field of a stack of layers, first layer first.

    Each layer is ``(kernel, stride)`` or ``(kernel, stride, dilation)`` (or a dict
    with those keys). Uses R_l = R_{l-1} + (K_l - 1) * d_l * prod(strides below).

    >>> receptive_field([(3, 1), (3, 1)])
    5
    >>> receptive_field([(7, 2), (3, 2), (3, 1)])
    19
    """
    rf, jump = 1, 1
    for i, layer in enumerate(layers):
        if isinstance(layer, dict):
            k, s, d = layer["kernel"], layer.get("stride", 1), layer.get("dilation", 1)
        elif isinstance(layer, Sequence) and len(layer) in (2, 3):
            k, s, d = (*layer, 1) if len(layer) == 2 else layer
        else:
            raise TypeError(f"layers[{i}] must be (kernel, stride[, dilation]), got {layer!r}")
        k = _check_int(k, f"layers[{i}] kernel", 1)
        s = _check_int(s, f"layers[{i}] stride", 1)
        d = _check_int(d, f"layers[{i}] dilation", 1)
        rf += (k - 1) * d * jump
        jump *= s
    return rf


def conv_params(in_channels: int, out_channels: int, kernel_size, groups: int = 1,
                bias: bool = True) -> int:
    """Number of parameters of a Conv2d layer."""
    from ._args import pair

    kh, kw = pair(kernel_size, "kernel_size", minimum=1)
    in_channels = _check_int(in_channels, "in_channels", 1)
    out_channels = _check_int(out_channels, "out_channels", 1)
    groups = _check_int(groups, "groups", 1)
    if in_channels % groups or out_channels % groups:
        raise ValueError(f"groups={groups} must divide in_channels={in_channels} and "
                         f"out_channels={out_channels}")
    return out_channels * (in_channels // groups) * kh * kw + (out_channels if bias else 0)


def conv_flops(x_shape, w_shape, stride=1, padding=0, dilation=1, groups=1) -> int:
    """Floating-point operations (2 per multiply-add) of one conv2d forward pass.

    ``x_shape`` is (N, C, H, W) or (C, H, W); ``w_shape`` is (K, C/groups, R, S).
    """
    from ._args import conv_spec

    spec = conv_spec(tuple(x_shape), tuple(w_shape), stride, padding, dilation, groups)
    return spec.flops
