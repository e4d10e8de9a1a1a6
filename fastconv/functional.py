"""The public ops: validate -> normalise arguments -> dispatch.

Arrays are NCHW. NumPy in -> NumPy out (CPU); CuPy in -> CuPy out (GPU). Argument
meaning, defaults and output shapes follow ``torch.nn.functional``. A 3-D (C,H,W) input
is one unbatched sample. Every op takes ``backend=`` (None: chosen from the array type).
"""
from __future__ import annotations

import math
import sys

import numpy as np

from . import _args as A
from ._dispatch import choose_conv_algo, get_backend, get_precision, op_impl

__all__ = [
    "conv2d", "conv2d_backward", "max_pool2d", "max_pool2d_backward", "avg_pool2d",
    "avg_pool2d_backward", "adaptive_avg_pool2d", "adaptive_avg_pool2d_backward",
    "batch_norm", "batch_norm_backward", "relu", "relu_", "relu_backward", "linear",
    "linear_backward",
    "cross_entropy", "cross_entropy_backward",
]


_xp = A.xp


def _contig(a, lib):
    """C-contiguous plain-array view or copy (backends assume C order and a base ndarray:
    np.matrix and other subclasses change indexing semantics)."""
    if a is None:
        return a
    if lib == "numpy" and type(a) is not np.ndarray:
        a = a.view(np.ndarray)
    if a.flags.c_contiguous:
        return a
    return _xp(lib).ascontiguousarray(a)


def _batched(op, x, name="input"):
    """(4-D view, was_unbatched)."""
    A.check_ndim(op, name, x, (3, 4), " (C,H,W) or (N,C,H,W)")
    return (x[None], True) if x.ndim == 3 else (x, False)


def _resolve(op, backend, arrays, *, float_only=True, optional=("bias",)):
    """Checks the array arguments (those not named in ``optional`` must not be None) and
    resolves the backend -> (lib, dtype, backend name, backend module)."""
    for nm, a in arrays.items():
        if a is None and nm not in optional:
            raise TypeError(f"{op}: {nm} must be an array, got None")
    lib, dtype = A.check_arrays(op, arrays, float_only=float_only)
    name, mod = get_backend(backend, lib, dtype, op)
    return lib, dtype, name, mod


# ----------------------------------------------------------------------------- convolution


def conv2d(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, *, algo="auto",
           backend=None, plan=None):
    """2-D cross-correlation, as ``torch.nn.functional.conv2d``.

    ``x`` is (N,C,H,W) or (C,H,W); ``weight`` is (K, C/groups, R, S); ``bias`` is (K,) or
    None. ``padding`` is an int, a pair, ``"same"`` or ``"valid"``. ``algo`` is ``"auto"``,
    ``"direct"``, ``"im2col"``, ``"winograd_f23"``, ``"winograd_f43"`` or (GPU)
    ``"implicit_gemm"``; an algorithm named explicitly that cannot serve the shape raises
    ``ValueError``. Returns (N,K,P,Q) (or (K,P,Q) for an unbatched input).

    ``plan``: a :class:`ConvPlan` from :func:`conv_plan` for exactly these arguments' shapes,
    dtypes, library and options (not checked again; ``nn.Conv2d`` keeps one per input
    shape), so the call skips validation and reuses the plan's algorithm choices.
    """
    if plan is None:
        plan = conv_plan(x, weight, bias, stride, padding, dilation, groups, backend=backend)
    return _conv2d_planned(plan, x, weight, bias, algo)


class ConvPlan:
    """What :func:`conv2d` and :func:`conv2d_backward` derive from the arguments' shapes,
    dtypes and library alone: the validated spec, the backend, and (filled in on first use)
    the algorithm of each op. A layer keeps one per input shape (``nn.Conv2d``), so a
    training step validates, resolves the backend and picks each algorithm once per shape.
    It holds no arrays. Copies share it (a backend module cannot be deep-copied, and
    everything in a plan follows from the shapes)."""

    __slots__ = ("spec", "lib", "dtype", "name", "mod", "unbatched", "algos")

    def __init__(self, spec, lib, dtype, name, mod, unbatched):
        self.spec, self.lib, self.dtype, self.name, self.mod = spec, lib, dtype, name, mod
        self.unbatched = unbatched
        self.algos = {}

    def __copy__(self):
        return self

    def __deepcopy__(self, memo):
        return self

    def fits_grad(self, grad_out) -> bool:
        """Whether ``grad_out`` matches the forward this plan was made for (same library,
        dtype and output shape), so its backward needs no further checks."""
        shape = self.spec.y_shape[1:] if self.unbatched else self.spec.y_shape
        lib_ok = (type(grad_out) is np.ndarray if self.lib == "numpy"
                  else self.lib == "cupy" and A.is_cupy_array(grad_out))
        return lib_ok and grad_out.dtype == self.dtype and tuple(grad_out.shape) == shape

    def algo(self, op, mod, algo, runner):
        """The algorithm for ``op`` under the current precision and autotune settings,
        chosen once (``runner`` runs the op on this call's arrays, for autotuning)."""
        key = (op, algo, get_precision(), _autotune_on())
        chosen = self.algos.get(key)
        if chosen is None:
            chosen = choose_conv_algo(self.name, mod, op, self.spec, self.dtype, algo,
                                      runner=runner)
            self.algos[key] = chosen
        return chosen


def _autotune_on() -> bool:
    mod = sys.modules.get("fastconv.autotune")
    return mod is not None and mod.enabled()


def conv_plan(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, *,
              backend=None, op="conv2d") -> ConvPlan:
    """Validates :func:`conv2d`'s arguments (its errors, prefixed ``op``) -> a
    :class:`ConvPlan` for them, to pass as ``plan=`` to conv2d and conv2d_backward."""
    lib, dtype, name, mod = _resolve(op, backend, {"input": x, "weight": weight, "bias": bias})
    x4, unbatched = _batched(op, x)
    spec = A.conv_spec(x4.shape, weight.shape, stride, padding, dilation, groups, op=op)
    if bias is not None and tuple(bias.shape) != (spec.K,):
        raise ValueError(f"{op}: bias must have shape ({spec.K},), got {tuple(bias.shape)}")
    return ConvPlan(spec, lib, dtype, name, mod, unbatched)


def _conv2d_planned(plan: ConvPlan, x, weight, bias, algo="auto"):
    mod, spec, lib = plan.mod, plan.spec, plan.lib
    x4 = x[None] if plan.unbatched else x
    x4, w, b = _contig(x4, lib), _contig(weight, lib), _contig(bias, lib)
    fn = op_impl(plan.name, mod, "conv2d_forward")
    chosen = plan.algo("conv2d_forward", mod, algo, lambda a: fn(x4, w, b, spec, a))
    y = fn(x4, w, b, spec, chosen)
    return y[0] if plan.unbatched else y


def conv2d_backward(grad_out, x, weight, stride=1, padding=0, dilation=1, groups=1, *,
                    need_input_grad=True, need_weight_grad=True, need_bias_grad=True,
                    algo="auto", backend=None, plan=None):
    """Gradients of :func:`conv2d` -> ``(grad_x, grad_w, grad_b)``, None where not needed.

    ``grad_out`` has the forward output's shape. With a Winograd ``algo`` the weight
    gradient is computed by the best other algorithm (Winograd has no weight form here).
    ``plan``: the forward's :class:`ConvPlan` (see :func:`conv2d`); used when ``grad_out``
    fits it (:meth:`ConvPlan.fits_grad`), else every argument is checked as without it.
    """
    if plan is not None and plan.fits_grad(grad_out):
        return _conv2d_backward_planned(plan, grad_out, x, weight, need_input_grad,
                                        need_weight_grad, need_bias_grad, algo)
    op = "conv2d_backward"
    lib, dtype, name, mod = _resolve(op, backend,
                                     {"grad_out": grad_out, "input": x, "weight": weight})
    x4, unbatched = _batched(op, x)
    if grad_out.ndim != x.ndim:
        raise ValueError(f"{op}: grad_out must have the same rank as input, got shapes "
                         f"{tuple(grad_out.shape)} and {tuple(x.shape)}")
    gy4 = grad_out[None] if unbatched else grad_out
    spec = A.conv_spec(x4.shape, weight.shape, stride, padding, dilation, groups, op=op)
    A.check_grad_shape(op, "grad_out", gy4, spec.y_shape)
    plan = ConvPlan(spec, lib, dtype, name, mod, unbatched)
    return _conv2d_backward_planned(plan, grad_out, x, weight, need_input_grad,
                                    need_weight_grad, need_bias_grad, algo)


def _conv2d_backward_planned(plan: ConvPlan, grad_out, x, weight, need_input_grad=True,
                             need_weight_grad=True, need_bias_grad=True, algo="auto"):
    mod, spec, lib = plan.mod, plan.spec, plan.lib
    x4 = x[None] if plan.unbatched else x
    gy4 = grad_out[None] if plan.unbatched else grad_out
    gy4, x4, w = _contig(gy4, lib), _contig(x4, lib), _contig(weight, lib)
    gx = gw = gb = None
    if need_input_grad:
        fn = op_impl(plan.name, mod, "conv2d_backward_data")
        a = plan.algo("conv2d_backward_data", mod, algo, lambda a: fn(gy4, w, spec, a))
        gx = fn(gy4, w, spec, a)
        gx = gx[0] if plan.unbatched else gx
    if need_weight_grad:
        fn = op_impl(plan.name, mod, "conv2d_backward_weight")
        a = plan.algo("conv2d_backward_weight", mod, algo, lambda a: fn(gy4, x4, spec, a))
        gw = fn(gy4, x4, spec, a)
    if need_bias_grad:
        gb = gy4.sum(axis=(0, 2, 3), dtype=gy4.dtype)
    return gx, gw, gb


# ----------------------------------------------------------------------------- pooling


def max_pool2d(x, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False,
               return_indices=False, *, backend=None):
    """Max pooling as ``torch.nn.functional.max_pool2d``.

    With ``return_indices`` also returns int64 indices ``h*W + w`` into each input plane
    (PyTorch's convention), which :func:`max_pool2d_backward` takes. NaN propagates.
    A window that holds no input element (dilation can step over the whole input) gives
    -inf and index -1, which gets no gradient; PyTorch reports an index outside the
    plane there.
    """
    op = "max_pool2d"
    lib, dtype, name, mod = _resolve(op, backend, {"input": x})
    x4, unbatched = _batched(op, x)
    spec = A.pool_spec(op, x4.shape, kernel_size, stride, padding, dilation, ceil_mode)
    y, idx = op_impl(name, mod, op)(_contig(x4, lib), spec, bool(return_indices))
    if unbatched:
        y, idx = y[0], (idx[0] if idx is not None else None)
    return (y, idx) if return_indices else y


def max_pool2d_backward(grad_out, indices, input_shape, *, backend=None):
    """Gradient of :func:`max_pool2d` from the indices it returned -> grad of the input."""
    op = "max_pool2d_backward"
    lib, dtype, name, mod = _resolve(op, backend, {"grad_out": grad_out})
    x_shape = A.input_shape_4d(op, input_shape)
    A.check_arrays(op, {"grad_out": grad_out, "indices": indices}, float_only=False)
    if indices.dtype != np.int64:
        raise TypeError(f"{op}: indices must be int64, got {indices.dtype}")
    if tuple(indices.shape) != tuple(grad_out.shape):
        raise ValueError(f"{op}: indices shape {tuple(indices.shape)} must equal grad_out "
                         f"shape {tuple(grad_out.shape)}")
    gy4 = grad_out[None] if grad_out.ndim == 3 else grad_out
    idx4 = indices[None] if indices.ndim == 3 else indices
    A.check_ndim(op, "grad_out", gy4, (4,))
    if gy4.shape[:2] != x_shape[:2]:
        raise ValueError(f"{op}: grad_out shape {tuple(grad_out.shape)} does not match "
                         f"input_shape {tuple(input_shape)}")
    plane = x_shape[2] * x_shape[3]
    if idx4.size and (int(idx4.min()) < -1 or int(idx4.max()) >= plane):
        raise ValueError(f"{op}: indices must lie in [-1, {plane}) for input_shape "
                         f"{tuple(input_shape)} (-1: a window with no input element)")
    gx = op_impl(name, mod, op)(_contig(gy4, lib), _contig(idx4, lib), x_shape)
    return gx[0] if len(input_shape) == 3 else gx


def avg_pool2d(x, kernel_size, stride=None, padding=0, ceil_mode=False,
               count_include_pad=True, divisor_override=None, *, backend=None):
    """Average pooling as ``torch.nn.functional.avg_pool2d``."""
    op = "avg_pool2d"
    lib, dtype, name, mod = _resolve(op, backend, {"input": x})
    x4, unbatched = _batched(op, x)
    spec = A.pool_spec(op, x4.shape, kernel_size, stride, padding, 1, ceil_mode,
                       count_include_pad, divisor_override)
    y = op_impl(name, mod, op)(_contig(x4, lib), spec)
    return y[0] if unbatched else y


def avg_pool2d_backward(grad_out, input_shape, kernel_size, stride=None, padding=0,
                        ceil_mode=False, count_include_pad=True, divisor_override=None, *,
                        backend=None):
    """Gradient of :func:`avg_pool2d` with respect to its input."""
    op = "avg_pool2d_backward"
    lib, dtype, name, mod = _resolve(op, backend, {"grad_out": grad_out})
    x_shape = A.input_shape_4d(op, input_shape)
    spec = A.pool_spec(op, x_shape, kernel_size, stride, padding, 1, ceil_mode,
                       count_include_pad, divisor_override)
    gy4 = grad_out[None] if grad_out.ndim == 3 else grad_out
    A.check_grad_shape(op, "grad_out", gy4, spec.y_shape)
    gx = op_impl(name, mod, op)(_contig(gy4, lib), spec)
    return gx[0] if len(input_shape) == 3 else gx


def adaptive_avg_pool2d(x, output_size, *, backend=None):
    """Adaptive average pooling as ``torch.nn.functional.adaptive_avg_pool2d``.

    ``output_size`` is an int or a pair (None keeps that input size); it may exceed the input.
    """
    op = "adaptive_avg_pool2d"
    lib, dtype, name, mod = _resolve(op, backend, {"input": x})
    x4, unbatched = _batched(op, x)
    if min(x4.shape[1:]) < 1:
        raise ValueError(f"{op}: input shape {tuple(x.shape)} has an empty channel or spatial "
                         "dimension")
    out_hw = A.adaptive_output_size(op, output_size, x4.shape[2], x4.shape[3])
    y = op_impl(name, mod, op)(_contig(x4, lib), out_hw)
    return y[0] if unbatched else y


def adaptive_avg_pool2d_backward(grad_out, input_shape, *, backend=None):
    """Gradient of :func:`adaptive_avg_pool2d` with respect to its input."""
    op = "adaptive_avg_pool2d_backward"
    lib, dtype, name, mod = _resolve(op, backend, {"grad_out": grad_out})
    x_shape = A.input_shape_4d(op, input_shape)
    gy4 = grad_out[None] if grad_out.ndim == 3 else grad_out
    A.check_ndim(op, "grad_out", gy4, (4,))
    if gy4.shape[:2] != x_shape[:2] or min(x_shape[1:]) < 1:
        raise ValueError(f"{op}: grad_out shape {tuple(grad_out.shape)} does not match "
                         f"input_shape {tuple(input_shape)}")
    gx = op_impl(name, mod, op)(_contig(gy4, lib), x_shape)
    return gx[0] if len(input_shape) == 3 else gx


# ----------------------------------------------------------------------------- batch norm


def _bn_view(op, x):
    """(N, C, L, 1) view of an input with channels on axis 1 (as F.batch_norm)."""
    if x.ndim < 2:
        raise ValueError(f"{op}: input must have at least 2 dimensions (N, C, ...), got shape "
                         f"{tuple(x.shape)}")
    n, c = x.shape[:2]
    if c < 1:
        raise ValueError(f"{op}: input shape {tuple(x.shape)} has no channels")
    return x.reshape(n, c, math.prod(x.shape[2:]), 1)  # explicit L: n may be 0


def _check_chan(op, name, v, C):
    if v is not None and tuple(v.shape) != (C,):
        raise ValueError(f"{op}: {name} must have shape ({C},), got {tuple(v.shape)}")


def batch_norm(x, running_mean, running_var, weight=None, bias=None, training=False,
               momentum=0.1, eps=1e-5, *, return_stats=False, backend=None):
    """Batch normalisation over axis 1, as ``torch.nn.functional.batch_norm``.

    In training mode it normalises with the batch statistics and, if given, updates
    ``running_mean``/``running_var`` in place (unbiased variance, ``momentum``). With
    ``return_stats`` returns ``(y, mean, invstd)`` (the values ``batch_norm_backward`` takes).
    """
    op = "batch_norm"
    lib, dtype, name, mod = _resolve(op, backend, {
        "input": x, "running_mean": running_mean, "running_var": running_var,
        "weight": weight, "bias": bias},
        optional=("running_mean", "running_var", "weight", "bias"))
    xv = _contig(_bn_view(op, x), lib)
    C = xv.shape[1]
    for nm, v in (("running_mean", running_mean), ("running_var", running_var),
                  ("weight", weight), ("bias", bias)):
        _check_chan(op, nm, v, C)
    eps = A.finite_float(eps, "eps", op)
    if eps < 0 or (training and eps == 0):
        raise ValueError(f"{op}: eps must be {'> 0 when training' if training else '>= 0'}, "
                         f"got {eps}")
    xp = _xp(lib)
    w = weight if weight is not None else xp.ones(C, dtype)
    b = bias if bias is not None else xp.zeros(C, dtype)
    if training:
        m = xv.shape[0] * xv.shape[2]
        if m == 1:
            raise ValueError(f"{op}: expected more than 1 value per channel when training, got "
                             f"input shape {tuple(x.shape)}")
        if (running_mean is None) != (running_var is None):
            raise ValueError(f"{op}: pass both running_mean and running_var, or neither")
        momentum = A.finite_float(momentum, "momentum", op)
        # Both buffers are checked before either changes: no half-applied update.
        for nm, v in (("running_mean", running_mean), ("running_var", running_var)):
            if v is not None and not A.is_writable(v):
                raise ValueError(f"{op}: {nm} must be writable (it is updated in place when "
                                 "training)")
        if m == 0:
            # An empty batch, as torch: an empty output and unchanged running statistics.
            y = xp.empty(x.shape, dtype)
            mean, invstd = xp.zeros(C, dtype), xp.full(C, 1 / np.sqrt(eps), dtype)
            return (y, mean, invstd) if return_stats else y
        y, mean, var = op_impl(name, mod, "batch_norm_train")(xv, w, b, eps)
        if running_mean is not None:
            running_mean *= 1 - momentum
            running_mean += momentum * mean
            running_var *= 1 - momentum
            running_var += (momentum * m / (m - 1)) * var
        invstd = 1 / xp.sqrt(var + dtype.type(eps))
    else:
        if running_mean is None or running_var is None:
            raise ValueError(f"{op}: running_mean and running_var are required when "
                             "training=False")
        y = (xp.empty(xv.shape, dtype) if xv.size == 0 else
             op_impl(name, mod, "batch_norm_eval")(xv, _contig(running_mean, lib),
                                                   _contig(running_var, lib), w, b, eps))
        y = y.reshape(x.shape)
        if not return_stats:
            return y
        mean, invstd = running_mean.copy(), 1 / xp.sqrt(running_var + dtype.type(eps))
    y = y.reshape(x.shape)
    return (y, mean, invstd.astype(dtype, copy=False)) if return_stats else y


def batch_norm_backward(grad_out, x, weight, mean, invstd, training=True, *, backend=None):
    """Gradients of :func:`batch_norm` -> ``(grad_x, grad_w, grad_b)``.

    ``mean``/``invstd`` are what ``batch_norm(..., return_stats=True)`` returned. With
    ``training=False`` the statistics are treated as constants. ``weight`` None means 1.
    """
    op = "batch_norm_backward"
    lib, dtype, name, mod = _resolve(op, backend, {
        "grad_out": grad_out, "input": x, "weight": weight, "mean": mean, "invstd": invstd},
        optional=("weight", "mean", "invstd"))
    xv = _contig(_bn_view(op, x), lib)
    if tuple(grad_out.shape) != tuple(x.shape):
        raise ValueError(f"{op}: grad_out shape {tuple(grad_out.shape)} must equal input "
                         f"shape {tuple(x.shape)}")
    C = xv.shape[1]
    for nm, v in (("weight", weight), ("mean", mean), ("invstd", invstd)):
        _check_chan(op, nm, v, C)
    if mean is None or invstd is None:
        raise ValueError(f"{op}: mean and invstd are required")
    w = weight if weight is not None else _xp(lib).ones(C, dtype)
    if xv.size == 0:
        xp = _xp(lib)
        return xp.zeros(x.shape, dtype), xp.zeros(C, dtype), xp.zeros(C, dtype)
    gyv = _contig(grad_out.reshape(xv.shape), lib)
    gx, gw, gb = op_impl(name, mod, op)(gyv, xv, _contig(w, lib), _contig(mean, lib),
                                        _contig(invstd, lib), bool(training))
    return gx.reshape(x.shape), gw, gb


# ----------------------------------------------------------------------------- the rest


def relu(x, *, backend=None):
    """max(x, 0), elementwise (any shape)."""
    lib, dtype, name, mod = _resolve("relu", backend, {"input": x})
    return op_impl(name, mod, "relu")(_contig(x, lib))


def relu_(x, *, backend=None):
    """In place: ``x = max(x, 0)`` elementwise (any shape, NaN propagates); returns ``x``.

    ``x`` must be C-contiguous. A backend with an in-place kernel (its ``relu_``, e.g.
    ``native``) runs it; elsewhere ``maximum(x, 0, out=x)`` does, so no second array is
    allocated either way.
    """
    op = "relu_"
    lib, dtype, name, mod = _resolve(op, backend, {"input": x})
    if not x.flags.c_contiguous:
        raise ValueError(f"{op}: input must be C-contiguous (it is written in place)")
    fn = getattr(mod, "relu_", None)
    if fn is not None and (lib != "numpy" or type(x) is np.ndarray):
        return fn(x)
    # maximum(NaN, 0) is NaN, matching relu; -0.0 stays as produced.
    return _xp(lib).maximum(x, 0, out=x)


def relu_backward(grad_out, y, *, backend=None):
    """Gradient of :func:`relu` given its output ``y``: grad_out where y > 0, else 0."""
    op = "relu_backward"
    lib, dtype, name, mod = _resolve(op, backend, {"grad_out": grad_out, "output": y})
    if tuple(grad_out.shape) != tuple(y.shape):
        raise ValueError(f"{op}: grad_out shape {tuple(grad_out.shape)} must equal output "
                         f"shape {tuple(y.shape)}")
    return op_impl(name, mod, op)(_contig(grad_out, lib), _contig(y, lib))


def _linear_check(op, x, weight):
    if weight.ndim != 2:
        raise ValueError(f"{op}: weight must be 2-D (out_features, in_features), got shape "
                         f"{tuple(weight.shape)}")
    if x.ndim < 1 or x.shape[-1] != weight.shape[1]:
        raise ValueError(f"{op}: input's last dimension must equal weight.shape[1]="
                         f"{weight.shape[1]}, got input shape {tuple(x.shape)}")


def _rows(a):
    """(rows, last) 2-D view over the last axis; explicit sizes, since either may be 0."""
    return a.reshape(math.prod(a.shape[:-1]), a.shape[-1])


def linear(x, weight, bias=None, *, backend=None):
    """``x @ weight.T + bias`` over the last axis, as ``torch.nn.functional.linear``."""
    op = "linear"
    lib, dtype, name, mod = _resolve(op, backend, {"input": x, "weight": weight, "bias": bias})
    _linear_check(op, x, weight)
    if bias is not None and tuple(bias.shape) != (weight.shape[0],):
        raise ValueError(f"{op}: bias must have shape ({weight.shape[0]},), got "
                         f"{tuple(bias.shape)}")
    x2 = _contig(_rows(x), lib)
    if x2.size == 0 or weight.size == 0:
        # An empty product (no rows, no inputs or no outputs), as torch: the bias alone.
        xp = _xp(lib)
        y = xp.zeros((x2.shape[0], weight.shape[0]), dtype)
        if bias is not None:
            y += bias
    else:
        y = op_impl(name, mod, op)(x2, _contig(weight, lib), _contig(bias, lib))
    return y.reshape(*x.shape[:-1], weight.shape[0])


def linear_backward(grad_out, x, weight, *, backend=None):
    """Gradients of :func:`linear` -> ``(grad_x, grad_w, grad_b)``."""
    op = "linear_backward"
    lib, dtype, name, mod = _resolve(op, backend,
                                     {"grad_out": grad_out, "input": x, "weight": weight})
    _linear_check(op, x, weight)
    if tuple(grad_out.shape) != (*x.shape[:-1], weight.shape[0]):
        raise ValueError(f"{op}: grad_out has shape {tuple(grad_out.shape)}, expected "
                         f"{(*x.shape[:-1], weight.shape[0])}")
    gy2 = _contig(_rows(grad_out), lib)
    x2 = _contig(_rows(x), lib)
    if x2.size == 0 or weight.size == 0:
        xp = _xp(lib)
        gx = xp.zeros(x2.shape, dtype)
        gw = xp.zeros(weight.shape, dtype)
        gb = xp.zeros(weight.shape[0], dtype)
        if x2.shape[0] and weight.shape[0]:  # no inputs: only the bias has a gradient
            gb = gy2.sum(axis=0, dtype=dtype)
        return gx.reshape(x.shape), gw, gb
    gx, gw, gb = op_impl(name, mod, op)(gy2, x2, _contig(weight, lib))
    return gx.reshape(x.shape), gw, gb


def _ce_check(op, logits, target, lib):
    A.check_ndim(op, "logits", logits, (2,), " (N, classes)")
    A.check_arrays(op, {"logits": logits, "target": target}, float_only=False)
    if target.ndim != 1 or target.shape[0] != logits.shape[0]:
        raise ValueError(f"{op}: target must have shape ({logits.shape[0]},), got "
                         f"{tuple(target.shape)}")
    if target.dtype.kind not in "iu":
        raise TypeError(f"{op}: target must hold integer class indices, got {target.dtype}")
    if target.size and (int(target.min()) < 0 or int(target.max()) >= logits.shape[1]):
        raise ValueError(f"{op}: target values must lie in [0, {logits.shape[1]}), got "
                         f"[{int(target.min())}, {int(target.max())}]")
    return _contig(logits, lib), _contig(target.astype(np.int64, copy=False), lib)


def cross_entropy(logits, target, *, backend=None):
    """Mean cross-entropy of ``logits`` (N, classes) against class indices ``target`` (N,).

    Computed through a numerically stable log-softmax. Returns a Python float.
    """
    op = "cross_entropy"
    lib, dtype, name, mod = _resolve(op, backend, {"logits": logits})
    lg, tg = _ce_check(op, logits, target, lib)
    return float(op_impl(name, mod, op)(lg, tg))


def cross_entropy_backward(logits, target, *, backend=None):
    """Gradient of the mean :func:`cross_entropy` with respect to ``logits``."""
    op = "cross_entropy_backward"
    lib, dtype, name, mod = _resolve(op, backend, {"logits": logits})
    lg, tg = _ce_check(op, logits, target, lib)
    return op_impl(name, mod, op)(lg, tg)


# The rest of the conv family (conv_transpose2d, conv1d, group/layer norm) lives in its own
# module on top of the helpers above; re-exported here so F.<name> reaches every op.
from .functional_family import (  # noqa: E402,F401
    conv1d,
    conv1d_backward,
    conv_transpose2d,
    conv_transpose2d_backward,
    group_norm,
    group_norm_backward,
    layer_norm,
    layer_norm_backward,
)

__all__ += ["conv1d", "conv1d_backward", "conv_transpose2d", "conv_transpose2d_backward",
            "group_norm", "group_norm_backward", "layer_norm", "layer_norm_backward"]
