"""Parameter initialisation, as ``torch.nn.init`` (same distributions and fan rules).

Every function draws from one module-level NumPy generator (seeded by :func:`manual_seed`)
in the parameter's precision and moves the result to the parameter's device, so a model built after ``manual_seed(s)`` is reproducible on CPU and GPU alike.
Dropout masks on the CPU draw from the same generator.
"""
from __future__ import annotations

import math

import numpy as np

from .module import Parameter, array_lib

__all__ = ["manual_seed", "generator", "calculate_gain", "uniform_", "normal_", "constant_",
           "zeros_", "ones_", "kaiming_uniform_", "kaiming_normal_", "xavier_uniform_",
           "xavier_normal_"]

_rng = [np.random.default_rng()]


def manual_seed(seed: int) -> None:
    """Seeds the generator used by initialisation and (CPU) dropout."""
    _rng[0] = np.random.default_rng(seed)


def generator() -> np.random.Generator:
    """The shared generator."""
    return _rng[0]


def _fill(p: Parameter, values: np.ndarray) -> Parameter:
    if not isinstance(p, Parameter):
        raise TypeError(f"expected a Parameter, got {type(p).__name__}")
    xp = array_lib(p.data)
    p.data[...] = xp.asarray(values.astype(p.data.dtype, copy=False))
    return p


def _fans(shape) -> tuple[int, int]:
    if len(shape) < 2:
        raise ValueError(f"fan in/out need at least 2 dimensions, got shape {tuple(shape)}")
    receptive = int(np.prod(shape[2:])) if len(shape) > 2 else 1
    return shape[1] * receptive, shape[0] * receptive


def calculate_gain(nonlinearity: str, param=None) -> float:
    """The recommended gain for a nonlinearity (``torch.nn.init.calculate_gain``)."""
    if nonlinearity in ("linear", "conv2d", "sigmoid"):
        return 1.0
    if nonlinearity == "tanh":
        return 5.0 / 3
    if nonlinearity == "relu":
        return math.sqrt(2.0)
    if nonlinearity == "leaky_relu":
        slope = 0.01 if param is None else float(param)
        return math.sqrt(2.0 / (1 + slope ** 2))
    raise ValueError(f"nonlinearity must be linear, conv2d, sigmoid, tanh, relu or "
                     f"leaky_relu, got {nonlinearity!r}")


def _dtype(p):
    # Draw in the parameter's precision: a float64 temporary for VGG's 100M-weight layer
    # would cost 800 MB.
    return np.float32 if p.data.dtype == np.float32 else np.float64


def uniform_(p, a: float = 0.0, b: float = 1.0):
    """U(a, b)."""
    dt = _dtype(p)
    v = generator().random(p.shape, dtype=dt)
    v *= dt(b - a)
    v += dt(a)
    return _fill(p, v)


def normal_(p, mean: float = 0.0, std: float = 1.0):
    """N(mean, std^2)."""
    dt = _dtype(p)
    v = generator().standard_normal(p.shape, dtype=dt)
    v *= dt(std)
    v += dt(mean)
    return _fill(p, v)


def constant_(p, value: float):
    return _fill(p, np.full(p.shape, value, np.float64))


def zeros_(p):
    return constant_(p, 0.0)


def ones_(p):
    return constant_(p, 1.0)


def _kaiming_std(p, a, mode, nonlinearity):
    if mode not in ("fan_in", "fan_out"):
        raise ValueError(f"mode must be 'fan_in' or 'fan_out', got {mode!r}")
    fan_in, fan_out = _fans(p.shape)
    fan = fan_in if mode == "fan_in" else fan_out
    return calculate_gain(nonlinearity, a) / math.sqrt(max(fan, 1))


def kaiming_uniform_(p, a: float = 0.0, mode: str = "fan_in", nonlinearity: str = "leaky_relu"):
    """He uniform initialisation: U(-b, b) with b = gain * sqrt(3 / fan)."""
    bound = math.sqrt(3.0) * _kaiming_std(p, a, mode, nonlinearity)
    return uniform_(p, -bound, bound)


def kaiming_normal_(p, a: float = 0.0, mode: str = "fan_in", nonlinearity: str = "leaky_relu"):
    """He normal initialisation: N(0, (gain / sqrt(fan))^2)."""
    return normal_(p, 0.0, _kaiming_std(p, a, mode, nonlinearity))


def xavier_uniform_(p, gain: float = 1.0):
    fan_in, fan_out = _fans(p.shape)
    bound = gain * math.sqrt(6.0 / (fan_in + fan_out))
    return uniform_(p, -bound, bound)


def xavier_normal_(p, gain: float = 1.0):
    fan_in, fan_out = _fans(p.shape)
    return normal_(p, 0.0, gain * math.sqrt(2.0 / (fan_in + fan_out)))


def default_layer_init(weight: Parameter, bias: Parameter | None) -> None:
    """PyTorch's default for Conv2d and Linear: kaiming_uniform_(a=sqrt(5)) for the weight
    (i.e. U(+-1/sqrt(fan_in))) and U(+-1/sqrt(fan_in)) for the bias."""
    kaiming_uniform_(weight, a=math.sqrt(5))
    if bias is not None:
        fan_in, _ = _fans(weight.shape)
        bound = 1 / math.sqrt(fan_in) if fan_in > 0 else 0.0
        uniform_(bias, -bound, bound)
