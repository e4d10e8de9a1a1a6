"""Inference-time fusions: folding batch norm into a convolution, and conv + bias + ReLU.

``fold_batch_norm`` rewrites ``bn(conv(x))`` (batch norm in eval mode, i.e. with running
statistics) as one convolution with a new weight and bias, which removes a full pass over
the activations. ``conv2d_bias_relu`` runs ``relu(conv2d(x, w, b))`` with the ReLU applied
in place on the convolution's output (no second activation-sized array).
"""
from __future__ import annotations

from . import _args as A
from . import functional as _F

__all__ = ["fold_batch_norm", "conv2d_bias_relu"]


def _xp_of(a):
    return A.xp(A.array_module_name(a))


def fold_batch_norm(conv_w, conv_b, bn_weight, bn_bias, running_mean, running_var, eps=1e-5):
    """Folds an inference-mode batch norm into the preceding convolution.

    For ``y = bn(conv2d(x, conv_w, conv_b))`` with
    ``bn(z) = (z - running_mean) / sqrt(running_var + eps) * bn_weight + bn_bias`` per output
    channel, returns ``(w, b)`` such that ``conv2d(x, w, b)`` equals ``y`` (up to rounding)::

        scale = bn_weight / sqrt(running_var + eps)
        w = conv_w * scale[:, None, None, None]
        b = (conv_b - running_mean) * scale + bn_bias        # conv_b None counts as 0

    ``conv_w`` is (K, C/groups, R, S); every vector has K elements; ``bn_weight`` /
    ``bn_bias`` None mean 1 / 0 (``affine=False``). The arithmetic is done in float64 and
    the results have ``conv_w``'s dtype; the inputs are not modified. Only valid for
    inference: in training mode batch norm uses the batch statistics, not the running ones.
    """
    op = "fold_batch_norm"
    named = {"conv_w": conv_w, "conv_b": conv_b, "bn_weight": bn_weight, "bn_bias": bn_bias,
             "running_mean": running_mean, "running_var": running_var}
    lib, dtype = A.check_arrays(op, named)
    if conv_w.ndim != 4:
        raise ValueError(f"{op}: conv_w must be 4-D (K, C/groups, R, S), got shape "
                         f"{tuple(conv_w.shape)}")
    K = conv_w.shape[0]
    for name in ("conv_b", "bn_weight", "bn_bias", "running_mean", "running_var"):
        v = named[name]
        if v is None:
            if name in ("running_mean", "running_var"):
                raise ValueError(f"{op}: {name} is required")
            continue
        if tuple(v.shape) != (K,):
            raise ValueError(f"{op}: {name} must have shape ({K},) to match conv_w "
                             f"{tuple(conv_w.shape)}, got {tuple(v.shape)}")
    eps = A.finite_float(eps, "eps", op)
    if eps < 0:
        raise ValueError(f"{op}: eps must be >= 0, got {eps}")
    xp = _xp_of(conv_w)
    f64 = xp.float64
    var = running_var.astype(f64)
    if bool((var + eps <= 0).any()):
        raise ValueError(f"{op}: running_var + eps must be positive in every channel")
    scale = 1.0 / xp.sqrt(var + eps)
    if bn_weight is not None:
        scale = scale * bn_weight.astype(f64)
    shift = -running_mean.astype(f64)
    if conv_b is not None:
        shift = shift + conv_b.astype(f64)
    b = shift * scale
    if bn_bias is not None:
        b = b + bn_bias.astype(f64)
    w = conv_w.astype(f64) * scale[:, None, None, None]
    return w.astype(dtype), b.astype(dtype)


def conv2d_bias_relu(x, w, b, stride=1, padding=0, dilation=1, groups=1, *, algo="auto",
                     backend=None):
    """``relu(conv2d(x, w, b, ...))`` with the ReLU as an in-place epilogue.

    Arguments as :func:`fastconv.conv2d` (``b`` may be None). The convolution adds the bias;
    the ReLU then overwrites the convolution's output (:func:`fastconv.functional.relu_`:
    the backend's in-place kernel, a C++ one on ``native``), so no second activation-sized
    array is allocated. NaN propagates as in :func:`fastconv.relu`.
    """
    y = _F.conv2d(x, w, b, stride, padding, dilation, groups, algo=algo, backend=backend)
    return _F.relu_(y, backend=backend)
