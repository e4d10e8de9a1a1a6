"""The rest of the convolution family, built on the conv2d and batch-norm kernels.

Nothing here has a kernel of its own; every op is a view onto ops every backend already
has, reached through the dispatcher, so each backend's fast paths are shared, not copied:

* ``conv_transpose2d`` is the data gradient of the convolution it transposes. With torch's
  transposed weight layout ``(C_in, C_out/groups, R, S)``, that convolution maps an
  ``(N, C_out, H_out, W_out)`` input to ``(N, C_in, H, W)`` with the same weight array read
  as ``(K, C/groups, R, S)``. So the forward pass is ``conv2d_backward_data``, the input
  gradient is ``conv2d_forward`` and the weight gradient is ``conv2d_backward_weight`` with
  the two activations' roles swapped.
* ``conv1d`` is ``conv2d`` on an ``(N, C, 1, L)`` view with a ``1 x R`` kernel.
* ``group_norm`` and ``layer_norm`` normalise rows: ``(N, G, C/G * L)`` and
  ``(prod(leading dims), prod(normalized_shape))``. Each row is one "channel" of the
  backend's batch-norm kernels on a ``(1, rows, M, 1)`` view (C++ on ``native``, float64
  accumulation on ``reference``, Numba on ``numba``, CUDA on ``cuda``), which give the
  row statistics, the normalised rows and, in backward, the gradient through the
  statistics. The affine part (per channel for group norm, per element for layer norm)
  is an array expression in the input's array library (NumPy or CuPy).

Signatures and errors follow ``torch.nn.functional``. Backward passes mirror
:func:`fastconv.conv2d_backward`: gradients first, then the forward's inputs, then what the
forward saved.
"""
from __future__ import annotations

import math

import numpy as np

from . import _args as A
from ._dispatch import choose_conv_algo, op_impl
from .functional import _batched, _contig, _resolve, _xp

__all__ = [
    "conv_transpose2d", "conv_transpose2d_backward", "conv_transpose_output_size",
    "conv1d", "conv1d_backward", "group_norm", "group_norm_backward", "layer_norm",
    "layer_norm_backward",
]


# ----------------------------------------------------------------------------- transposed


def conv_transpose_output_size(size, kernel, stride, padding, output_padding, dilation):
    """Output length of a transposed convolution along one axis (as torch):
    ``(size - 1) * stride - 2 * padding + dilation * (kernel - 1) + output_padding + 1``."""
    return (size - 1) * stride - 2 * padding + dilation * (kernel - 1) + output_padding + 1


def _transpose_spec(op, x4_shape, w_shape, stride, padding, output_padding, groups, dilation):
    """The ConvSpec of the convolution whose data gradient is this transposed convolution,
    plus the (rows, cols) of zeros the input needs at the bottom/right (see below)."""
    if len(w_shape) != 4:
        raise ValueError(f"{op}: weight must be 4-D (C_in, C_out/groups, R, S), got shape "
                         f"{tuple(w_shape)}")
    N, C, H, W = (int(v) for v in x4_shape)
    Cin_w, Cout_g, R, S = (int(v) for v in w_shape)
    stride = A.pair(stride, "stride", minimum=1, op=op)
    if isinstance(padding, str):
        raise ValueError(f"{op}: padding must be an int or a pair of ints (string padding is "
                         f"not supported for transposed convolutions), got {padding!r}")
    pad = A.pair(padding, "padding", minimum=0, op=op)
    out_pad = A.pair(output_padding, "output_padding", minimum=0, op=op)
    dilation = A.pair(dilation, "dilation", minimum=1, op=op)
    groups = A.positive_int(groups, "groups", op)
    if min(C, H, W) < 1:
        raise ValueError(f"{op}: input shape {tuple(x4_shape)} has an empty channel or "
                         "spatial dimension")
    if min(Cin_w, Cout_g, R, S) < 1:
        raise ValueError(f"{op}: weight shape {tuple(w_shape)} has an empty dimension")
    if Cin_w != C:
        raise ValueError(f"{op}: weight of shape {tuple(w_shape)} expects input with "
                         f"weight.shape[0]={Cin_w} channels, got input shape {tuple(x4_shape)}")
    if C % groups:
        raise ValueError(f"{op}: groups={groups} must divide the input channels C={C}")
    for i, axis in enumerate(("height", "width")):
        if not (out_pad[i] < stride[i] or out_pad[i] < dilation[i]):
            raise ValueError(
                f"{op}: output_padding must be smaller than either stride or dilation, got "
                f"output_padding={out_pad}, stride={stride}, dilation={dilation} ({axis})")
    Ho = conv_transpose_output_size(H, R, stride[0], pad[0], out_pad[0], dilation[0])
    Wo = conv_transpose_output_size(W, S, stride[1], pad[1], out_pad[1], dilation[1])
    if Ho < 1 or Wo < 1:
        raise ValueError(f"{op}: output size would be {Ho}x{Wo} (input {H}x{W}, kernel "
                         f"{R}x{S}, stride={stride}, padding={pad}, output_padding={out_pad}, "
                         f"dilation={dilation}); it must be at least 1x1")
    spec = A.conv_spec((N, Cout_g * groups, Ho, Wo), w_shape, stride, pad, dilation, groups,
                       op=op)
    # The convolution over the output maps back to (P, Q) = (H, W) except when
    # output_padding >= stride (allowed if it is below the dilation): then it has
    # output_padding // stride more rows/cols, which the transposed input does not reach;
    # they take zeros.
    extra = (spec.P - H, spec.Q - W)
    assert min(extra) >= 0, (spec, x4_shape)
    return spec, extra


# Transposed layers on ``native`` whose three ops all run faster on im2col than on the
# heuristic's choice for ordinary convolutions (direct), measured per op on DCGAN's
# generator at batch 1 and 8: a 1x1 input (its forward is one outer-product GEMM; direct
# took 1.3-1.7x im2col's time at batch 1, its weight gradient 1.2-3.4x) and a deep input
# whose equivalent convolution reduces over at least this many products per output
# (C_in * R * S: 512->256 and 256->128 4x4/2, where direct's input and weight gradients
# took 1.1-2.5x im2col's). On 128->64 and 64->3 the two were within noise of each other,
# so those keep the heuristic's choice.
_TRANSPOSED_IM2COL_MIN_REDUCTION = 4096


def _transposed_prefers_im2col(spec, x_hw) -> bool:
    """Whether a transposed layer (``spec`` of its equivalent convolution, ``x_hw`` the
    transposed input's spatial size) runs all its ops on im2col (see above)."""
    if spec.groups != 1:
        return False
    return tuple(x_hw) == (1, 1) or spec.K * spec.R * spec.S >= _TRANSPOSED_IM2COL_MIN_REDUCTION


def _transposed_algo(name, mod, op, spec, dtype, algo, runner, x_hw):
    """The algorithm for one op of a transposed convolution: the dispatcher's choice,
    except that ``"auto"`` on ``native`` without the autotuner takes im2col on the layers
    where it was measured faster (:func:`_transposed_prefers_im2col`). The decision lives
    here because it is about transposed layers: the dispatcher's heuristic sees only the
    equivalent convolution, whose best algorithm as an ordinary layer differs."""
    if algo == "auto" and name == "native" and _transposed_prefers_im2col(spec, x_hw):
        import importlib

        from . import _dispatch

        autotune = importlib.import_module("fastconv.autotune")
        if not autotune.enabled() and \
                "im2col" in _dispatch.serving_algos(name, mod, op, spec):
            algo = "im2col"
    return choose_conv_algo(name, mod, op, spec, dtype, algo, runner=runner)


def _pad_end(a, extra, lib):
    if extra == (0, 0):
        return a
    return _xp(lib).pad(a, ((0, 0), (0, 0), (0, extra[0]), (0, extra[1])))


def conv_transpose2d(x, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1,
                     dilation=1, *, algo="auto", backend=None):
    """2-D transposed convolution, as ``torch.nn.functional.conv_transpose2d``.

    ``x`` is (N, C_in, H, W) or (C_in, H, W); ``weight`` is (C_in, C_out/groups, R, S);
    ``bias`` is (C_out,) or None. The output is (N, C_out, H_out, W_out) with
    ``H_out = (H - 1) * stride - 2 * padding + dilation * (R - 1) + output_padding + 1``.
    ``output_padding`` must be smaller than the stride or the dilation (per axis).
    It runs as the data gradient of the equivalent convolution; ``algo`` names the
    data-gradient algorithm (``"auto"``: the dispatcher's choice).
    """
    op = "conv_transpose2d"
    lib, dtype, name, mod = _resolve(op, backend, {"input": x, "weight": weight, "bias": bias})
    x4, unbatched = _batched(op, x)
    spec, extra = _transpose_spec(op, x4.shape, weight.shape, stride, padding, output_padding,
                                  groups, dilation)
    if bias is not None and tuple(bias.shape) != (spec.C,):
        raise ValueError(f"{op}: bias must have shape ({spec.C},), got {tuple(bias.shape)}")
    gy = _contig(_pad_end(x4, extra, lib), lib)
    w = _contig(weight, lib)
    fn = op_impl(name, mod, "conv2d_backward_data")
    chosen = _transposed_algo(name, mod, "conv2d_backward_data", spec, dtype, algo,
                              lambda a: fn(gy, w, spec, a), x4.shape[2:])
    y = fn(gy, w, spec, chosen)
    if bias is not None:
        y += bias.reshape(1, -1, 1, 1)
    return y[0] if unbatched else y


def conv_transpose2d_backward(grad_out, x, weight, stride=1, padding=0, output_padding=0,
                              groups=1, dilation=1, *, need_input_grad=True,
                              need_weight_grad=True, need_bias_grad=True, algo="auto",
                              backend=None):
    """Gradients of :func:`conv_transpose2d` -> ``(grad_x, grad_w, grad_b)``, None where
    not needed. ``grad_out`` has the forward output's shape.

    The input gradient is the forward convolution of ``grad_out`` with ``weight``; the
    weight gradient is the convolution's weight gradient with ``x`` as its output
    gradient and ``grad_out`` as its input.
    """
    op = "conv_transpose2d_backward"
    lib, dtype, name, mod = _resolve(op, backend,
                                     {"grad_out": grad_out, "input": x, "weight": weight})
    x4, unbatched = _batched(op, x)
    if grad_out.ndim != x.ndim:
        raise ValueError(f"{op}: grad_out must have the same rank as input, got shapes "
                         f"{tuple(grad_out.shape)} and {tuple(x.shape)}")
    gy4 = grad_out[None] if unbatched else grad_out
    spec, extra = _transpose_spec(op, x4.shape, weight.shape, stride, padding, output_padding,
                                  groups, dilation)
    A.check_grad_shape(op, "grad_out", gy4, spec.x_shape)
    gy4, w = _contig(gy4, lib), _contig(weight, lib)
    gx = gw = gb = None
    if need_input_grad:
        fn = op_impl(name, mod, "conv2d_forward")
        a = _transposed_algo(name, mod, "conv2d_forward", spec, dtype, algo,
                             lambda a: fn(gy4, w, None, spec, a), x4.shape[2:])
        gx = fn(gy4, w, None, spec, a)
        if extra != (0, 0):
            gx = _contig(gx[:, :, :x4.shape[2], :x4.shape[3]], lib)
        gx = gx[0] if unbatched else gx
    if need_weight_grad:
        xs = _contig(_pad_end(x4, extra, lib), lib)
        fn = op_impl(name, mod, "conv2d_backward_weight")
        a = _transposed_algo(name, mod, "conv2d_backward_weight", spec, dtype, algo,
                             lambda a: fn(xs, gy4, spec, a), x4.shape[2:])
        gw = fn(xs, gy4, spec, a)
    if need_bias_grad:
        gb = gy4.sum(axis=(0, 2, 3), dtype=gy4.dtype)
    return gx, gw, gb


# ----------------------------------------------------------------------------- conv1d


def _single(value, name, op, minimum):
    if A._is_int(value):
        v = int(value)
    elif isinstance(value, (tuple, list)) and len(value) == 1 and A._is_int(value[0]):
        v = int(value[0])
    else:
        raise TypeError(f"{op}: {name} must be an int or a 1-tuple of ints, got {value!r}")
    if v < minimum:
        kind = "positive" if minimum == 1 else f">= {minimum}"
        raise ValueError(f"{op}: {name} must be {kind}, got {value!r}")
    return v


def _conv1d_args(op, stride, padding, dilation):
    """conv1d's options -> conv2d's, on an (N, C, 1, L) view (height 1, kernel height 1)."""
    s = _single(stride, "stride", op, 1)
    d = _single(dilation, "dilation", op, 1)
    if isinstance(padding, str):
        if padding not in ("same", "valid"):
            raise ValueError(f"{op}: padding must be an int, 'same' or 'valid', got "
                             f"{padding!r}")
        if padding == "same" and s != 1:
            raise ValueError(f"{op}: padding='same' is not supported for strided "
                             f"convolutions (stride={s})")
        p = padding
    else:
        p = (0, _single(padding, "padding", op, 0))
    return (1, s), p, (1, d)


def _view1d(op, x, weight):
    A.check_ndim(op, "input", x, (2, 3), " (C, L) or (N, C, L)")
    A.check_ndim(op, "weight", weight, (3,), " (K, C/groups, R)")
    unbatched = x.ndim == 2
    x3 = x[None] if unbatched else x
    return x3[:, :, None, :], weight[:, :, None, :], unbatched


def conv1d(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, *, algo="auto",
           backend=None):
    """1-D cross-correlation, as ``torch.nn.functional.conv1d``.

    ``x`` is (N, C, L) or (C, L); ``weight`` is (K, C/groups, R); ``bias`` (K,) or None.
    ``padding`` is an int, ``"same"`` or ``"valid"`` ('same' puts the odd extra element on
    the right). It runs as :func:`fastconv.conv2d` on an (N, C, 1, L) view.
    """
    op = "conv1d"
    lib, dtype, name, mod = _resolve(op, backend, {"input": x, "weight": weight, "bias": bias})
    x4, w4, unbatched = _view1d(op, x, weight)
    stride2, pad2, dil2 = _conv1d_args(op, stride, padding, dilation)
    spec = A.conv_spec(x4.shape, w4.shape, stride2, pad2, dil2, groups, op=op)
    if bias is not None and tuple(bias.shape) != (spec.K,):
        raise ValueError(f"{op}: bias must have shape ({spec.K},), got {tuple(bias.shape)}")
    x4, w4, b = _contig(x4, lib), _contig(w4, lib), _contig(bias, lib)
    fn = op_impl(name, mod, "conv2d_forward")
    chosen = choose_conv_algo(name, mod, "conv2d_forward", spec, dtype, algo,
                              runner=lambda a: fn(x4, w4, b, spec, a))
    y = fn(x4, w4, b, spec, chosen)[:, :, 0, :]
    return y[0] if unbatched else y


def conv1d_backward(grad_out, x, weight, stride=1, padding=0, dilation=1, groups=1, *,
                    need_input_grad=True, need_weight_grad=True, need_bias_grad=True,
                    algo="auto", backend=None):
    """Gradients of :func:`conv1d` -> ``(grad_x, grad_w, grad_b)``, None where not needed."""
    op = "conv1d_backward"
    lib, dtype, name, mod = _resolve(op, backend,
                                     {"grad_out": grad_out, "input": x, "weight": weight})
    x4, w4, unbatched = _view1d(op, x, weight)
    if grad_out.ndim != x.ndim:
        raise ValueError(f"{op}: grad_out must have the same rank as input, got shapes "
                         f"{tuple(grad_out.shape)} and {tuple(x.shape)}")
    gy3 = grad_out[None] if unbatched else grad_out
    stride2, pad2, dil2 = _conv1d_args(op, stride, padding, dilation)
    spec = A.conv_spec(x4.shape, w4.shape, stride2, pad2, dil2, groups, op=op)
    A.check_grad_shape(op, "grad_out", gy3, (spec.N, spec.K, spec.Q))
    gy4 = _contig(gy3[:, :, None, :], lib)
    x4, w4 = _contig(x4, lib), _contig(w4, lib)
    gx = gw = gb = None
    if need_input_grad:
        fn = op_impl(name, mod, "conv2d_backward_data")
        a = choose_conv_algo(name, mod, "conv2d_backward_data", spec, dtype, algo,
                             runner=lambda a: fn(gy4, w4, spec, a))
        gx = fn(gy4, w4, spec, a)[:, :, 0, :]
        gx = gx[0] if unbatched else gx
    if need_weight_grad:
        fn = op_impl(name, mod, "conv2d_backward_weight")
        a = choose_conv_algo(name, mod, "conv2d_backward_weight", spec, dtype, algo,
                             runner=lambda a: fn(gy4, x4, spec, a))
        gw = fn(gy4, x4, spec, a)[:, :, 0, :]
    if need_bias_grad:
        gb = gy3.sum(axis=(0, 2), dtype=gy3.dtype)
    return gx, gw, gb


# ----------------------------------------------------------------------------- norms


def _eps(op, eps):
    eps = A.finite_float(eps, "eps", op)
    if eps < 0:
        raise ValueError(f"{op}: eps must be >= 0, got {eps}")
    return eps


def _row_stats(name, mod, lib, dtype, xr, eps):
    """Per-row mean and 1/sqrt(var + eps) of a (rows, M) array, and the normalised rows,
    from the backend's batch-norm kernel on a (1, rows, M, 1) view."""
    rows, M = xr.shape
    xp = _xp(lib)
    if rows == 0 or M == 0:
        nan = xp.full(rows, np.nan, dtype)
        return xp.empty_like(xr), nan, nan
    v = _contig(xr.reshape(1, rows, M, 1), lib)
    xhat, mean, var = op_impl(name, mod, "batch_norm_train")(
        v, xp.ones(rows, dtype), xp.zeros(rows, dtype), eps)
    invstd = (1 / xp.sqrt(var + dtype.type(eps))).astype(dtype, copy=False)
    return xhat.reshape(rows, M), mean, invstd


def _row_backward(name, mod, lib, dtype, g_xhat, xr, mean, invstd):
    """d loss / d x of xhat = (x - mean) * invstd per row, through the statistics."""
    rows, M = xr.shape
    xp = _xp(lib)
    if rows == 0 or M == 0:
        return xp.zeros_like(xr)
    gx, _, _ = op_impl(name, mod, "batch_norm_backward")(
        _contig(g_xhat.reshape(1, rows, M, 1), lib), _contig(xr.reshape(1, rows, M, 1), lib),
        xp.ones(rows, dtype), _contig(mean.reshape(rows), lib),
        _contig(invstd.reshape(rows), lib), True)
    return gx.reshape(rows, M)


def _sum(a, axis, name, dtype):
    """A reduction in the output dtype (float64 accumulation on the reference backend)."""
    acc = np.float64 if name == "reference" else dtype
    return a.sum(axis=axis, dtype=acc).astype(dtype, copy=False)


def _gn_check(op, x, num_groups):
    if x.ndim < 2:
        raise ValueError(f"{op}: input must have at least 2 dimensions (N, C, ...), got shape "
                         f"{tuple(x.shape)}")
    G = A.positive_int(num_groups, "num_groups", op)
    C = x.shape[1]
    if C % G:
        raise ValueError(f"{op}: num_groups={G} must divide the number of channels C={C} "
                         f"(input shape {tuple(x.shape)})")
    return G


def group_norm(x, num_groups, weight=None, bias=None, eps=1e-5, *, return_stats=False,
               backend=None):
    """Group normalisation, as ``torch.nn.functional.group_norm``.

    ``x`` is (N, C, *); its channels are split into ``num_groups`` groups, each normalised
    over its channels and all trailing positions with the biased variance; ``weight`` and
    ``bias`` ((C,) or None) scale and shift per channel. With ``return_stats`` returns
    ``(y, mean, invstd)``, mean and 1/sqrt(var + eps) of shape (N, num_groups): what
    :func:`group_norm_backward` takes.
    """
    op = "group_norm"
    lib, dtype, name, mod = _resolve(op, backend, {"input": x, "weight": weight, "bias": bias},
                                     optional=("weight", "bias"))
    G = _gn_check(op, x, num_groups)
    N, C = x.shape[:2]
    for nm, v in (("weight", weight), ("bias", bias)):
        if v is not None and tuple(v.shape) != (C,):
            raise ValueError(f"{op}: {nm} must have shape ({C},), got {tuple(v.shape)}")
    eps = _eps(op, eps)
    M = math.prod(x.shape[1:]) // G
    xhat, mean, invstd = _row_stats(name, mod, lib, dtype, x.reshape(N * G, M), eps)
    y = xhat.reshape(N, C, M * G // C)
    if weight is not None:
        y = y * weight.reshape(1, C, 1)
    if bias is not None:
        y = y + bias.reshape(1, C, 1)
    y = y.reshape(x.shape)
    if return_stats:
        return y, mean.reshape(N, G), invstd.reshape(N, G)
    return y


def group_norm_backward(grad_out, x, num_groups, weight, mean, invstd, *, backend=None):
    """Gradients of :func:`group_norm` -> ``(grad_x, grad_w, grad_b)``.

    ``mean``/``invstd`` ((N, num_groups)) are what ``group_norm(..., return_stats=True)``
    returned; ``weight`` None means 1 (``grad_w``/``grad_b`` are still returned, (C,)).
    """
    op = "group_norm_backward"
    lib, dtype, name, mod = _resolve(op, backend, {
        "grad_out": grad_out, "input": x, "weight": weight, "mean": mean, "invstd": invstd},
        optional=("weight",))
    G = _gn_check(op, x, num_groups)
    N, C = x.shape[:2]
    A.check_grad_shape(op, "grad_out", grad_out, x.shape)
    if weight is not None and tuple(weight.shape) != (C,):
        raise ValueError(f"{op}: weight must have shape ({C},), got {tuple(weight.shape)}")
    for nm, v in (("mean", mean), ("invstd", invstd)):
        if v is None or tuple(v.shape) != (N, G):
            raise ValueError(f"{op}: {nm} must have shape ({N}, {G}), got "
                             f"{None if v is None else tuple(v.shape)}")
    M = math.prod(x.shape[1:]) // G
    L = M * G // C
    xg = x.reshape(N, G, M)
    xhat = ((xg - mean.reshape(N, G, 1)) * invstd.reshape(N, G, 1)).reshape(N, C, L)
    gy = grad_out.reshape(N, C, L)
    gw = _sum(gy * xhat, (0, 2), name, dtype)
    gb = _sum(gy, (0, 2), name, dtype)
    g = gy * weight.reshape(1, C, 1) if weight is not None else gy
    gx = _row_backward(name, mod, lib, dtype, g.reshape(N * G, M), xg.reshape(N * G, M),
                       mean, invstd)
    return gx.reshape(x.shape), gw, gb


def _ln_shape(op, x, normalized_shape):
    if A._is_int(normalized_shape):
        shape = (int(normalized_shape),)
    elif isinstance(normalized_shape, (tuple, list)) and normalized_shape and \
            all(A._is_int(v) for v in normalized_shape):
        shape = tuple(int(v) for v in normalized_shape)
    else:
        raise TypeError(f"{op}: normalized_shape must be an int or a non-empty sequence of "
                        f"ints, got {normalized_shape!r}")
    k = len(shape)
    if x.ndim < k or tuple(x.shape[x.ndim - k:]) != shape:
        raise ValueError(f"{op}: input shape {tuple(x.shape)} does not end in "
                         f"normalized_shape={list(shape)}")
    return shape, tuple(x.shape[:x.ndim - k])


def layer_norm(x, normalized_shape, weight=None, bias=None, eps=1e-5, *, return_stats=False,
               backend=None):
    """Layer normalisation, as ``torch.nn.functional.layer_norm``.

    Normalises over the trailing dimensions given by ``normalized_shape`` (biased
    variance); ``weight`` and ``bias`` (shaped ``normalized_shape`` or None) scale and shift
    elementwise. With ``return_stats`` returns ``(y, mean, invstd)``, each shaped like the
    leading dimensions ``x.shape[:-len(normalized_shape)]``.
    """
    op = "layer_norm"
    lib, dtype, name, mod = _resolve(op, backend, {"input": x, "weight": weight, "bias": bias},
                                     optional=("weight", "bias"))
    shape, lead = _ln_shape(op, x, normalized_shape)
    for nm, v in (("weight", weight), ("bias", bias)):
        if v is not None and tuple(v.shape) != shape:
            raise ValueError(f"{op}: {nm} must have shape {shape}, got {tuple(v.shape)}")
    eps = _eps(op, eps)
    rows, M = math.prod(lead), math.prod(shape)
    xhat, mean, invstd = _row_stats(name, mod, lib, dtype, x.reshape(rows, M), eps)
    y = xhat
    if weight is not None:
        y = y * weight.reshape(1, M)
    if bias is not None:
        y = y + bias.reshape(1, M)
    y = y.reshape(x.shape)
    if return_stats:
        return y, mean.reshape(lead), invstd.reshape(lead)
    return y


def layer_norm_backward(grad_out, x, normalized_shape, weight, mean, invstd, *, backend=None):
    """Gradients of :func:`layer_norm` -> ``(grad_x, grad_w, grad_b)``; ``grad_w``/``grad_b``
    are shaped ``normalized_shape`` (``weight`` None means 1).

    ``mean``/``invstd`` are what ``layer_norm(..., return_stats=True)`` returned.
    """
    op = "layer_norm_backward"
    lib, dtype, name, mod = _resolve(op, backend, {
        "grad_out": grad_out, "input": x, "weight": weight, "mean": mean, "invstd": invstd},
        optional=("weight",))
    shape, lead = _ln_shape(op, x, normalized_shape)
    A.check_grad_shape(op, "grad_out", grad_out, x.shape)
    if weight is not None and tuple(weight.shape) != shape:
        raise ValueError(f"{op}: weight must have shape {shape}, got {tuple(weight.shape)}")
    for nm, v in (("mean", mean), ("invstd", invstd)):
        if v is None or tuple(v.shape) != lead:
            raise ValueError(f"{op}: {nm} must have shape {lead}, got "
                             f"{None if v is None else tuple(v.shape)}")
    rows, M = math.prod(lead), math.prod(shape)
    xr, gy = x.reshape(rows, M), grad_out.reshape(rows, M)
    xhat = (xr - mean.reshape(rows, 1)) * invstd.reshape(rows, 1)
    gw = _sum(gy * xhat, 0, name, dtype).reshape(shape)
    gb = _sum(gy, 0, name, dtype).reshape(shape)
    g = gy * weight.reshape(1, M) if weight is not None else gy
    gx = _row_backward(name, mod, lib, dtype, g, xr, mean, invstd)
    return gx.reshape(x.shape), gw, gb
