"""Argument normalisation and validation for every public op, in one place.

Each public op in :mod:`fastconv.functional` turns its arguments into a frozen spec
here (``ConvSpec``, ``PoolSpec``) before any backend sees them, so every backend gets
the same, already-checked description and the same error messages.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .shapes import _is_int, pool_out_len

# --------------------------------------------------------------------------- scalars

is_int = _is_int


def pair(value, name: str, *, minimum: int | None = None, op: str = "") -> tuple[int, int]:
    """An int or a pair of ints -> a pair, checked against ``minimum``."""
    where = f"{op}: " if op else ""
    if _is_int(value):
        out = (int(value), int(value))
    elif isinstance(value, (tuple, list)) and len(value) == 2 and all(_is_int(v) for v in value):
        out = (int(value[0]), int(value[1]))
    else:
        raise TypeError(f"{where}{name} must be an int or a pair of ints, got {value!r}")
    if minimum is not None and min(out) < minimum:
        kind = "positive" if minimum == 1 else f">= {minimum}"
        raise ValueError(f"{where}{name} must be {kind}, got {value!r}")
    return out


def positive_int(value, name: str, op: str = "") -> int:
    """A positive int (TypeError for a non-int, ValueError for < 1), prefixed by ``op``."""
    where = f"{op}: " if op else ""
    if not _is_int(value):
        raise TypeError(f"{where}{name} must be an int, got {value!r}")
    if int(value) < 1:
        raise ValueError(f"{where}{name} must be positive, got {value!r}")
    return int(value)


# --------------------------------------------------------------------------- arrays

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def is_cupy_array(a) -> bool:
    """Whether ``a`` is a CuPy array, told by its type's module (CuPy is not imported)."""
    return type(a).__module__.split(".", 1)[0] == "cupy"


def xp(lib: str):
    """The array module for a library name of :func:`array_module_name` (``"cupy"``
    imports CuPy; any other name is NumPy's)."""
    if lib == "cupy":
        import cupy

        return cupy
    return np


def array_module_name(a) -> str:
    """'numpy' or 'cupy' for a supported array; TypeError for anything else."""
    if isinstance(a, np.ndarray):
        return "numpy"
    if is_cupy_array(a):
        return "cupy"
    mod = type(a).__module__.split(".")[0]
    if mod == "numba" and hasattr(a, "__cuda_array_interface__"):
        return "numba"
    raise TypeError(f"expected a numpy or cupy array, got {type(a).__module__}.{type(a).__name__}")


def check_arrays(op: str, named: dict, *, float_only: bool = True):
    """Checks that all given arrays share one array library and one float dtype.

    Returns (library name, dtype). ``named`` maps argument name -> array (None skipped).
    """
    lib = dtype = first = None
    for name, a in named.items():
        if a is None:
            continue
        try:
            this_lib = array_module_name(a)
        except TypeError as e:
            raise TypeError(f"{op}: {name}: {e}") from None
        if lib is None:
            lib, dtype, first = this_lib, a.dtype, name
            if float_only and np.dtype(dtype) not in FLOAT_DTYPES:
                raise TypeError(f"{op}: {name} has dtype {dtype}; supported dtypes are "
                                "float32 and float64")
            continue
        if this_lib != lib:
            raise TypeError(f"{op}: {name} is a {this_lib} array but {first} is a {lib} array; "
                            "do not mix array libraries")
        if float_only and a.dtype != dtype:
            raise TypeError(f"{op}: {name} has dtype {a.dtype} but {first} has dtype {dtype}; "
                            "dtypes must match")
    return lib, dtype


def check_ndim(op: str, name: str, a, allowed: tuple[int, ...], meaning: str = ""):
    if a.ndim not in allowed:
        want = " or ".join(f"{d}-D" for d in allowed)
        raise ValueError(f"{op}: {name} must be {want}{meaning}, got shape {tuple(a.shape)}")


# --------------------------------------------------------------------------- convolution


@dataclass(frozen=True)
class ConvSpec:
    """A validated 2-D convolution. Padding is split into top/left (``padding``) and
    bottom/right (``padding_end``) because padding='same' can be asymmetric."""

    N: int
    C: int
    H: int
    W: int
    K: int
    R: int
    S: int
    P: int
    Q: int
    stride: tuple[int, int]
    padding: tuple[int, int]
    padding_end: tuple[int, int]
    dilation: tuple[int, int]
    groups: int

    @property
    def x_shape(self):
        return (self.N, self.C, self.H, self.W)

    @property
    def w_shape(self):
        return (self.K, self.C // self.groups, self.R, self.S)

    @property
    def y_shape(self):
        return (self.N, self.K, self.P, self.Q)

    @property
    def flops(self) -> int:
        return 2 * self.N * self.K * self.P * self.Q * (self.C // self.groups) * self.R * self.S

    def winograd_obstacle(self) -> str | None:
        """Why Winograd F(m,3) cannot serve this convolution, or None if it can."""
        if (self.R, self.S) != (3, 3):
            return f"needs a 3x3 kernel, got {self.R}x{self.S}"
        if self.stride != (1, 1):
            return f"needs stride 1, got stride={self.stride}"
        if self.dilation != (1, 1):
            return f"needs dilation 1, got dilation={self.dilation}"
        if self.groups != 1:
            return f"needs groups=1, got groups={self.groups}"
        return None

    def with_batch(self, n: int) -> "ConvSpec":
        from dataclasses import replace

        return replace(self, N=n)


def _conv_padding(padding, R, S, dilation, stride, op):
    if isinstance(padding, str):
        if padding == "valid":
            return (0, 0), (0, 0)
        if padding == "same":
            if stride != (1, 1):
                raise ValueError(f"{op}: padding='same' is not supported for strided "
                                 f"convolutions (stride={stride})")
            th, tw = dilation[0] * (R - 1), dilation[1] * (S - 1)
            return (th // 2, tw // 2), (th - th // 2, tw - tw // 2)
        raise ValueError(f"{op}: padding must be an int, a pair, 'same' or 'valid', "
                         f"got {padding!r}")
    p = pair(padding, "padding", minimum=0, op=op)
    return p, p


def conv_spec(x_shape, w_shape, stride=1, padding=0, dilation=1, groups=1, *,
              op: str = "conv2d") -> ConvSpec:
    """Validates conv2d arguments given the (4-D) input and weight shapes."""
    if len(x_shape) == 3:
        x_shape = (1, *x_shape)
    if len(x_shape) != 4:
        raise ValueError(f"{op}: input must be 3-D (C,H,W) or 4-D (N,C,H,W), got shape "
                         f"{tuple(x_shape)}")
    if len(w_shape) != 4:
        raise ValueError(f"{op}: weight must be 4-D (K, C/groups, R, S), got shape "
                         f"{tuple(w_shape)}")
    N, C, H, W = (int(v) for v in x_shape)
    K, Cg, R, S = (int(v) for v in w_shape)
    stride = pair(stride, "stride", minimum=1, op=op)
    dilation = pair(dilation, "dilation", minimum=1, op=op)
    groups = positive_int(groups, "groups", op)
    if min(C, H, W) < 1:
        raise ValueError(f"{op}: input shape {tuple(x_shape)} has an empty channel or "
                         "spatial dimension")
    if min(K, Cg, R, S) < 1:
        raise ValueError(f"{op}: weight shape {tuple(w_shape)} has an empty dimension")
    if C % groups:
        raise ValueError(f"{op}: groups={groups} must divide the input channels C={C}")
    if K % groups:
        raise ValueError(f"{op}: groups={groups} must divide the output channels "
                         f"(weight.shape[0]={K})")
    if Cg * groups != C:
        raise ValueError(f"{op}: weight.shape[1]={Cg} times groups={groups} must equal the "
                         f"input channels C={C} (input {tuple(x_shape)}, weight "
                         f"{tuple(w_shape)})")
    pad, pad_end = _conv_padding(padding, R, S, dilation, stride, op)
    eff_r, eff_s = dilation[0] * (R - 1) + 1, dilation[1] * (S - 1) + 1
    span_h, span_w = H + pad[0] + pad_end[0], W + pad[1] + pad_end[1]
    if eff_r > span_h or eff_s > span_w:
        raise ValueError(
            f"{op}: kernel size {R}x{S} (dilation={dilation}, effective {eff_r}x{eff_s}) is "
            f"larger than the padded input {span_h}x{span_w} (input {H}x{W}, "
            f"padding={padding!r})")
    P = (span_h - eff_r) // stride[0] + 1
    Q = (span_w - eff_s) // stride[1] + 1
    return ConvSpec(N, C, H, W, K, R, S, P, Q, stride, pad, pad_end, dilation, groups)


# --------------------------------------------------------------------------- pooling


@dataclass(frozen=True)
class PoolSpec:
    """A validated pooling window (symmetric padding; ceil_mode folded into P, Q)."""

    N: int
    C: int
    H: int
    W: int
    P: int
    Q: int
    kernel: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int]
    dilation: tuple[int, int]
    ceil_mode: bool
    count_include_pad: bool = True
    divisor_override: int | None = None

    @property
    def x_shape(self):
        return (self.N, self.C, self.H, self.W)

    @property
    def y_shape(self):
        return (self.N, self.C, self.P, self.Q)


def pool_spec(op, x_shape, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False,
              count_include_pad=True, divisor_override=None) -> PoolSpec:
    if len(x_shape) == 3:
        x_shape = (1, *x_shape)
    if len(x_shape) != 4:
        raise ValueError(f"{op}: input must be 3-D (C,H,W) or 4-D (N,C,H,W), got shape "
                         f"{tuple(x_shape)}")
    N, C, H, W = (int(v) for v in x_shape)
    kernel = pair(kernel_size, "kernel_size", minimum=1, op=op)
    stride = kernel if stride is None or (isinstance(stride, (tuple, list)) and not stride) \
        else pair(stride, "stride", minimum=1, op=op)
    pad = pair(padding, "padding", minimum=0, op=op)
    dilation = pair(dilation, "dilation", minimum=1, op=op)
    for nm, v in (("ceil_mode", ceil_mode), ("count_include_pad", count_include_pad)):
        if not isinstance(v, (bool, np.bool_)):
            raise TypeError(f"{op}: {nm} must be a bool, got {v!r}")
    if min(C, H, W) < 1:
        raise ValueError(f"{op}: input shape {tuple(x_shape)} has an empty channel or "
                         "spatial dimension")
    for i, axis in enumerate(("height", "width")):
        if pad[i] > kernel[i] // 2:
            raise ValueError(f"{op}: padding={padding!r} must be at most half of kernel_size="
                             f"{kernel_size!r} (got {pad[i]} > {kernel[i]}//2 in {axis})")
    if divisor_override is not None:
        if not _is_int(divisor_override):
            raise TypeError(f"{op}: divisor_override must be an int or None, got "
                            f"{divisor_override!r}")
        if int(divisor_override) == 0:
            raise ValueError(f"{op}: divisor_override must be non-zero")
        divisor_override = int(divisor_override)
    P = pool_out_len(H, kernel[0], stride[0], pad[0], dilation[0], bool(ceil_mode))
    Q = pool_out_len(W, kernel[1], stride[1], pad[1], dilation[1], bool(ceil_mode))
    if P < 1 or Q < 1:
        raise ValueError(f"{op}: output size would be {P}x{Q} (input {H}x{W}, kernel_size="
                         f"{kernel_size!r}, stride={stride}, padding={padding!r}, dilation="
                         f"{dilation}); it must be at least 1x1")
    return PoolSpec(N, C, H, W, P, Q, kernel, stride, pad, dilation, bool(ceil_mode),
                    bool(count_include_pad), divisor_override)


def adaptive_output_size(op, output_size, H, W) -> tuple[int, int]:
    if _is_int(output_size) or output_size is None:
        output_size = (output_size, output_size)
    if not (isinstance(output_size, (tuple, list)) and len(output_size) == 2):
        raise TypeError(f"{op}: output_size must be an int or a pair, got {output_size!r}")
    out = []
    for v, full in zip(output_size, (H, W)):
        if v is None:
            out.append(full)
        elif not _is_int(v):
            raise TypeError(f"{op}: output_size must hold ints or None, got {output_size!r}")
        elif int(v) < 1:
            raise ValueError(f"{op}: output_size must be positive, got {output_size!r}")
        else:
            out.append(int(v))
    return out[0], out[1]


def adaptive_windows(size: int, out: int):
    """PyTorch's adaptive window bounds: [floor(i*size/out), ceil((i+1)*size/out))."""
    starts = [(i * size) // out for i in range(out)]
    ends = [-((-(i + 1) * size) // out) for i in range(out)]
    return starts, ends


def check_grad_shape(op, name, a, shape):
    if tuple(a.shape) != tuple(shape):
        raise ValueError(f"{op}: {name} has shape {tuple(a.shape)}, expected {tuple(shape)}")


def input_shape_4d(op, input_shape):
    if not isinstance(input_shape, (tuple, list)) or len(input_shape) not in (3, 4) or \
            not all(_is_int(v) and int(v) >= 0 for v in input_shape):
        raise ValueError(f"{op}: input_shape must be (C,H,W) or (N,C,H,W) of non-negative ints, "
                         f"got {input_shape!r}")
    shape = tuple(int(v) for v in input_shape)
    return (1, *shape) if len(shape) == 3 else shape


def is_writable(a) -> bool:
    """False for a read-only NumPy array (CuPy arrays are always writable)."""
    flags = getattr(a, "flags", None)
    return bool(getattr(flags, "writeable", True))


def finite_float(v, name, op):
    if isinstance(v, (str, bytes)):  # float("1e-5") would parse: refuse as torch does
        raise TypeError(f"{op}: {name} must be a number, got {v!r}")
    try:
        f = float(v)
    except (TypeError, ValueError):
        raise TypeError(f"{op}: {name} must be a number, got {v!r}") from None
    if not math.isfinite(f):
        raise ValueError(f"{op}: {name} must be finite, got {v!r}")
    return f
