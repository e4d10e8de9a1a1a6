"""``fastconv.compile(model)``: a frozen, inference-only plan of a :mod:`fastconv.nn` model.

What compiling does (once, at ``compile`` time):

* walks the module tree (``Chain`` / ``Sequential`` and their subclasses, ``BasicBlock`` and
  ``Bottleneck``, torchvision-style ``InvertedResidual`` blocks, anything registered with
  :func:`register_lowering`) into a flat list of steps;
* folds every eval-mode ``BatchNorm2d`` that follows a ``Conv2d`` into the convolution's
  weight and bias (:func:`fastconv.fusion.fold_batch_norm`);
* fuses the bias, a residual add (the last convolution of a residual block's main branch)
  and a following ``ReLU`` / ``ReLU6`` into the convolution's output stage
  (``csrc/common/epilogue.h``): ``y = clamp(conv(x, w) + b + residual, lo, hi)``;
* fuses a ``ReLU`` after a ``Linear``; drops ``Identity`` and eval-mode ``Dropout``;
* runs every other module (a layer the matcher does not know) as it runs in eager mode,
  in eval mode under ``no_grad``, on a private copy.

And once per input shape (on the first call with that shape; up to
:attr:`CompiledModel.max_plans` shapes are kept):

* the dispatcher (``fastconv._dispatch.choose_conv_algo``) picks each convolution's
  algorithm for that shape (and for ``fastconv.get_precision()``, when it exists);
* weights are prepacked for that algorithm when the backend offers ``prepack``;
* every convolution output buffer is allocated once and reused on every later call with
  that shape; buffers whose value is dead are shared between layers (liveness), so the
  activations of a ResNet take a few buffers, not one per layer.

A call then runs the steps in order. Each kernel call releases the GIL (the C++ kernels and
NumPy's in-place ufuncs), so other Python threads run during the forward pass; between
steps the GIL is taken for a few microseconds. This is the Python step list; a C++ plan
runner holding the whole pass under one GIL release is not built yet.

Semantics:

* **A snapshot.** Weights, folded weights and batch-norm statistics are copied at compile
  time; later changes to the source model (``load_state_dict``, training, ``train()``) are
  not seen. Compile again after changing the model.
* **Inference only**: no backward pass; the model must be in eval mode at compile time
  (``ValueError`` otherwise).
* The input must be (N, C, H, W) (or (C, H, W): one sample) with the channel count and dtype
  of the model's first layer, else ``ValueError`` naming what was expected.
* The returned array is a fresh array (not one of the reused buffers), so results of
  earlier calls stay valid.
* **Threads**: one compiled model may be called from several threads; the calls are
  serialised by a lock (the buffers are shared). For parallel inference, compile one
  model per thread.
"""
from __future__ import annotations

import copy
import inspect
import threading
from collections import OrderedDict

import numpy as np

from .. import _args as A
from .. import nn
from .._dispatch import choose_conv_algo, get_backend, op_impl
from ..fusion import fold_batch_norm
from ..nn.module import no_grad

__all__ = ["compile", "CompiledModel", "register_lowering"]

_INF = float("inf")
_NO_CLAMP = (-_INF, _INF)
_OP = "compile"


# ----------------------------------------------------------------------------- helpers


# Activation buffers start on a cache line: the kernels read 64-byte vectors (two AVX2
# ones) from each channel row, and NumPy's large allocations sit 16 bytes past a page,
# so every such pair would straddle two lines.
_LINE = 64


def _line_aligned_empty(shape, dtype):
    dtype = np.dtype(dtype)
    n = int(np.prod(shape, dtype=np.int64))
    raw = np.empty(n * dtype.itemsize + _LINE, np.uint8)
    off = -raw.ctypes.data % _LINE
    return raw[off:off + n * dtype.itemsize].view(dtype).reshape(shape)


def _nbytes(*arrays) -> int:
    return int(sum(a.nbytes for a in arrays if a is not None))


def _activation_clamp(m):
    """(lo, hi) for an activation module the output stage can fuse, else None."""
    if isinstance(m, nn.ReLU):
        return (0.0, _INF)
    relu6 = getattr(nn, "ReLU6", None)
    if relu6 is not None and isinstance(m, relu6):
        return (0.0, 6.0)
    return None


def _is_noop(m) -> bool:
    return isinstance(m, (nn.Identity, nn.Dropout))


def _is_plain_chain(m) -> bool:
    """A Chain whose forward is Chain's own: its data flow is exactly ``_chain()``."""
    return isinstance(m, nn.Chain) and type(m).forward is nn.Chain.forward


def _flatten_chain(mods):
    """Expands nested plain chains, so fusion sees across Sequential boundaries."""
    out = []
    for m in mods:
        if _is_plain_chain(m):
            out.extend(_flatten_chain(m._chain()))
        else:
            out.append(m)
    return out


def _foldable_bn(m, K) -> bool:
    return (isinstance(m, nn.BatchNorm2d) and m.track_running_stats
            and m.running_mean is not None and m.num_features == K)


def _apply_clamp(y, clamp):
    lo, hi = clamp
    if hi == _INF and lo > -_INF:
        np.maximum(y, lo, out=y)  # keeps NaN, as relu does
    elif lo > -_INF or hi < _INF:
        np.clip(y, lo, hi, out=y)


# ----------------------------------------------------------------------------- steps
# A step reads registers (ints; 0 is the input) and writes one. ``bind`` is called once
# per input shape with the input registers' shapes and an allocator, and returns
# (output shape, run), where run(regs) computes the output into regs[self.y].


class _Step:
    kind = "?"
    inplace_ok = False  # may write its output over its (dead) first input

    def __init__(self, name, xs, y):
        self.name, self.xs, self.y = name, list(xs), y

    def weight_bytes(self) -> int:
        return 0

    def describe(self) -> str:
        return self.kind


class _Conv(_Step):
    kind = "conv"

    def __init__(self, name, conv, w, b, xs, y, residual=None, clamp=_NO_CLAMP, fused=()):
        super().__init__(name, xs + ([residual] if residual is not None else []), y)
        self.w = np.ascontiguousarray(w)
        self.b = None if b is None else np.ascontiguousarray(b)
        self.stride, self.padding = conv.stride, conv.padding
        self.dilation, self.groups, self.algo_req = conv.dilation, conv.groups, conv.algo
        self.has_residual = residual is not None
        self.clamp = clamp
        self.fused = tuple(fused)
        self.algos = {}  # input shape -> chosen algorithm (for describe / tests)
        self._packed = {}  # (algo, per-sample input shape) -> prepacked weights

    @property
    def in_channels(self):
        return self.w.shape[1] * self.groups

    def weight_bytes(self):
        return _nbytes(self.w, self.b) + sum(_nbytes(p) for p in self._packed.values()
                                             if isinstance(p, np.ndarray))

    def describe(self):
        k = f"conv {self.w.shape[2]}x{self.w.shape[3]}/{self.stride[0]} " \
            f"{self.in_channels}->{self.w.shape[0]}"
        return k + "".join(f" +{f}" for f in self.fused)

    def bind(self, shapes, alloc, eng):
        xshape = shapes[0]
        spec = A.conv_spec(xshape, self.w.shape, self.stride, self.padding, self.dilation,
                           self.groups, op=_OP)
        fn = eng.op("conv2d_forward")
        w, b = self.w, self.b
        algo = choose_conv_algo(eng.backend_name, eng.backend, "conv2d_forward", spec,
                                eng.dtype, self.algo_req,
                                runner=lambda a: fn(np.zeros(xshape, eng.dtype), w, b, spec, a),
                                prepacked=eng.takes_packed)
        self.algos[tuple(xshape)] = algo
        self.bind_flops = spec.flops
        y = alloc(spec.y_shape)
        kw = {"clamp": self.clamp, "out": y}
        packed = self._prepack(eng, spec, algo)
        if packed is not None:
            kw["packed"] = packed
        xr, yr = self.xs[0], self.y
        if self.has_residual:
            rr = self.xs[1]

            def run(regs):
                regs[yr] = fn(regs[xr], w, b, spec, algo, residual=regs[rr], **kw)
        else:
            def run(regs):
                regs[yr] = fn(regs[xr], w, b, spec, algo, **kw)
        return spec.y_shape, run

    def _prepack(self, eng, spec, algo):
        """Weights prepared for ``algo`` once, when the backend offers ``prepack(w, spec,
        algo)`` and its conv2d_forward takes ``packed=`` (probed, so a backend that adds
        them is used without a change here)."""
        if not eng.takes_packed:
            return None
        key = (algo, spec.x_shape[1:])
        if key not in self._packed:
            self._packed[key] = eng.prepack(self.w, spec, algo)
        return self._packed[key]


class _Pool(_Step):
    def __init__(self, name, m, xs, y, kind):
        super().__init__(name, xs, y)
        self.m, self.kind = m, kind

    def describe(self):
        return f"{self.kind} {self.m.kernel_size[0]}x{self.m.kernel_size[1]}" \
               f"/{self.m.stride[0]}"

    def bind(self, shapes, alloc, eng):
        m, xr, yr = self.m, self.xs[0], self.y
        if self.kind == "max_pool2d":
            spec = A.pool_spec(self.kind, shapes[0], m.kernel_size, m.stride, m.padding,
                               m.dilation, m.ceil_mode)
            fn = eng.op("max_pool2d")

            def run(regs):
                regs[yr] = fn(regs[xr], spec, False)[0]
        else:
            spec = A.pool_spec(self.kind, shapes[0], m.kernel_size, m.stride, m.padding, 1,
                               m.ceil_mode, m.count_include_pad, m.divisor_override)
            fn = eng.op("avg_pool2d")

            def run(regs):
                regs[yr] = fn(regs[xr], spec)
        return spec.y_shape, run


class _AdaptivePool(_Step):
    kind = "adaptive_avg_pool2d"

    def __init__(self, name, m, xs, y):
        super().__init__(name, xs, y)
        self.output_size = m.output_size

    def bind(self, shapes, alloc, eng):
        N, C, H, W = shapes[0]
        out_hw = A.adaptive_output_size(self.kind, self.output_size, H, W)
        fn = eng.op("adaptive_avg_pool2d")
        xr, yr = self.xs[0], self.y

        def run(regs):
            regs[yr] = fn(regs[xr], out_hw)
        return (N, C, *out_hw), run


class _Linear(_Step):
    kind = "linear"

    def __init__(self, name, m, xs, y, clamp=_NO_CLAMP):
        super().__init__(name, xs, y)
        self.w = np.ascontiguousarray(m.weight.data).copy()
        self.b = None if m.bias is None else m.bias.data.copy()
        self.clamp = clamp

    def weight_bytes(self):
        return _nbytes(self.w, self.b)

    def describe(self):
        return f"linear {self.w.shape[1]}->{self.w.shape[0]}" + \
            (" +relu" if self.clamp != _NO_CLAMP else "")

    def bind(self, shapes, alloc, eng):
        xshape = shapes[0]
        if len(xshape) != 2 or xshape[1] != self.w.shape[1]:
            raise ValueError(f"{_OP}: {self.name} (Linear) expects (N, {self.w.shape[1]}) "
                             f"inputs, got {tuple(xshape)}")
        fn = eng.op("linear")
        w, b, clamp, xr, yr = self.w, self.b, self.clamp, self.xs[0], self.y
        self.bind_flops = 2 * xshape[0] * w.shape[0] * w.shape[1]

        def run(regs):
            y = fn(regs[xr], w, b)
            _apply_clamp(y, clamp)
            regs[yr] = y
        return (xshape[0], w.shape[0]), run


class _Act(_Step):
    kind = "act"
    inplace_ok = True

    def __init__(self, name, xs, y, clamp):
        super().__init__(name, xs, y)
        self.clamp = clamp

    def describe(self):
        return "relu" if self.clamp[1] == _INF else f"clamp{self.clamp}"

    def bind(self, shapes, alloc, eng):
        y = alloc(shapes[0], inplace_of=self.xs[0])
        lo, hi = self.clamp
        xr, yr = self.xs[0], self.y
        if hi == _INF:
            def run(regs):
                regs[yr] = np.maximum(regs[xr], lo, out=y)
        else:
            def run(regs):
                regs[yr] = np.clip(regs[xr], lo, hi, out=y)
        return shapes[0], run


class _Add(_Step):
    kind = "add"
    inplace_ok = True

    def __init__(self, name, xs, y, clamp):
        super().__init__(name, xs, y)
        self.clamp = clamp

    def describe(self):
        return "add" + (" +relu" if self.clamp != _NO_CLAMP else "")

    def bind(self, shapes, alloc, eng):
        if tuple(shapes[0]) != tuple(shapes[1]):
            raise ValueError(f"{_OP}: {self.name}: residual shapes differ: {shapes[0]} and "
                             f"{shapes[1]}")
        y = alloc(shapes[0], inplace_of=self.xs[0])
        a, b, clamp, yr = self.xs[0], self.xs[1], self.clamp, self.y

        def run(regs):
            np.add(regs[a], regs[b], out=y)
            _apply_clamp(y, clamp)
            regs[yr] = y
        return shapes[0], run


class _Flatten(_Step):
    kind = "flatten"

    def __init__(self, name, m, xs, y):
        super().__init__(name, xs, y)
        self.m = m

    def bind(self, shapes, alloc, eng):
        out = self.m._out_shape(tuple(shapes[0]))
        xr, yr = self.xs[0], self.y

        def run(regs):
            regs[yr] = regs[xr].reshape(out)
        return out, run


class _Eager(_Step):
    """A module the matcher does not know, run as in eager mode (eval, no_grad) on a
    private deep copy (the snapshot)."""

    kind = "eager"

    def __init__(self, name, m, xs, y):
        super().__init__(name, xs, y)
        self.m = copy.deepcopy(m).eval()

    def weight_bytes(self):
        return sum(p.data.nbytes for p in self.m.parameters())

    def describe(self):
        return f"eager {type(self.m).__name__}"

    def bind(self, shapes, alloc, eng):
        m, xr, yr = self.m, self.xs[0], self.y
        with no_grad():
            probe = m(np.zeros(shapes[0], eng.dtype))

        def run(regs):
            with no_grad():
                regs[yr] = np.ascontiguousarray(m(regs[xr]))
        return tuple(probe.shape), run


# ----------------------------------------------------------------------------- lowering

_LOWERINGS: list = []


def register_lowering(cls, fn) -> None:
    """Teaches the compiler a module type: ``fn(lowerer, module, x_reg) -> y_reg``.

    ``lowerer`` offers ``chain(modules, x, residual=None, clamp=None)`` (fuses conv -> bn ->
    activation and, when ``residual`` is given, the residual add and ``clamp`` into the last
    convolution), ``module(m, x)`` and ``add(a, b, clamp)``. Later registrations win.
    """
    if not isinstance(cls, type) or not callable(fn):
        raise TypeError("register_lowering(cls, fn): cls must be a class and fn callable")
    _LOWERINGS.insert(0, (cls, fn))


class _Lowerer:
    def __init__(self):
        self.steps: list[_Step] = []
        self.nregs = 1  # register 0 is the input

    def _new(self):
        r = self.nregs
        self.nregs += 1
        return r

    def _name(self, m):
        return type(m).__name__

    def module(self, m, x):
        for cls, fn in _LOWERINGS:
            if isinstance(m, cls):
                return fn(self, m, x)
        if _is_plain_chain(m):
            return self.chain(m._chain(), x)
        if _is_inverted_residual(m):
            return _lower_inverted_residual(self, m, x)
        if _is_noop(m):
            return x
        clamp = _activation_clamp(m)
        if clamp is not None:
            return self._emit(_Act(self._name(m), [x], self._new(), clamp))
        if isinstance(m, nn.Conv2d):
            return self.chain([m], x)
        if isinstance(m, nn.MaxPool2d) and not m.return_indices:
            return self._emit(_Pool("MaxPool2d", m, [x], self._new(), "max_pool2d"))
        if isinstance(m, nn.AvgPool2d):
            return self._emit(_Pool("AvgPool2d", m, [x], self._new(), "avg_pool2d"))
        if isinstance(m, nn.AdaptiveAvgPool2d):
            return self._emit(_AdaptivePool("AdaptiveAvgPool2d", m, [x], self._new()))
        if isinstance(m, nn.Linear):
            return self.chain([m], x)
        if isinstance(m, nn.Flatten):
            return self._emit(_Flatten("Flatten", m, [x], self._new()))
        return self._emit(_Eager(self._name(m), m, [x], self._new()))

    def _emit(self, step):
        self.steps.append(step)
        return step.y

    def add(self, a, b, clamp=None):
        return self._emit(_Add("add", [a, b], self._new(), clamp or _NO_CLAMP))

    def chain(self, mods, x, residual=None, clamp=None):
        """Lowers a straight chain; see :func:`register_lowering`."""
        mods = [m for m in _flatten_chain(mods) if not _is_noop(m)]
        i = 0
        while i < len(mods):
            m = mods[i]
            if isinstance(m, nn.Conv2d):
                w = m.weight.data
                b = None if m.bias is None else m.bias.data
                fused, j = [], i + 1
                if j < len(mods) and _foldable_bn(mods[j], m.out_channels):
                    bn = mods[j]
                    w, b = fold_batch_norm(
                        w, b, None if bn.weight is None else bn.weight.data,
                        None if bn.bias is None else bn.bias.data, bn.running_mean,
                        bn.running_var, bn.eps)
                    fused.append("bn")
                    j += 1
                else:
                    w, b = w.copy(), None if b is None else b.copy()
                act = _activation_clamp(mods[j]) if j < len(mods) else None
                res = None
                if act is not None:
                    j += 1
                elif j == len(mods) and (residual is not None or clamp is not None):
                    # act(conv(x) + residual): the residual and the block's activation
                    # both go into the last convolution's output stage.
                    res, act = residual, clamp
                    residual, clamp = None, None
                    if res is not None:
                        fused.append("residual")
                if act is not None:
                    fused.append("relu" if act[1] == _INF else "relu6" if act[1] == 6.0
                                 else f"clamp{act}")
                x = self._emit(_Conv(f"Conv2d[{len(self.steps)}]", m, w, b, [x],
                                     self._new(), residual=res, clamp=act or _NO_CLAMP,
                                     fused=fused))
                i = j
            elif isinstance(m, nn.Linear):
                act = _activation_clamp(mods[i + 1]) if i + 1 < len(mods) else None
                x = self._emit(_Linear("Linear", m, [x], self._new(), act or _NO_CLAMP))
                i += 2 if act is not None else 1
            else:
                x = self.module(m, x)
                i += 1
        if residual is not None:  # the main branch did not end in a convolution
            x = self.add(x, residual, clamp)
        elif clamp is not None:
            x = self._emit(_Act("act", [x], self._new(), clamp))
        return x


def _lower_residual(lw, m, x):
    """BasicBlock / Bottleneck: relu_out(main(x) + shortcut(x)), the add and the ReLU in
    the last convolution's output stage."""
    short = x if m.downsample is None else lw.module(m.downsample, x)
    clamp = _activation_clamp(m.relu_out)
    if clamp is None:  # an activation the output stage cannot do: add, then run it
        y = lw.chain(list(m._main()), x, residual=short)
        return lw.module(m.relu_out, y)
    return lw.chain(list(m._main()), x, residual=short, clamp=clamp)


def _lower_inverted_residual(lw, m, x):
    """torchvision's InvertedResidual layout: ``x + conv(x)`` if ``use_res_connect`` else
    ``conv(x)``, ``conv`` a chain (expand 1x1 -> depthwise 3x3 -> project 1x1, each with
    batch norm; ReLU6 after the first two)."""
    if m.use_res_connect:
        return lw.chain([m.conv], x, residual=x)
    return lw.chain([m.conv], x)


def _register_builtin():
    from ..nn.blocks import _Residual

    def residual_rule(lw, m, x):
        if type(m).forward is _Residual.forward:
            return _lower_residual(lw, m, x)
        return lw._emit(_Eager(type(m).__name__, m, [x], lw._new()))

    register_lowering(_Residual, residual_rule)


_register_builtin()


def _is_inverted_residual(m) -> bool:
    """torchvision's InvertedResidual layout (MobileNetV2), recognised by name and
    attributes so the model need not be imported here."""
    return (type(m).__name__ == "InvertedResidual"
            and isinstance(getattr(m, "conv", None), nn.Chain)
            and isinstance(getattr(m, "use_res_connect", None), bool))


# ----------------------------------------------------------------------------- the engine


class _Engine:
    """The backend the steps call, resolved through the dispatcher once per dtype."""

    def __init__(self, dtype):
        self.dtype = np.dtype(dtype)
        self.backend_name, self.backend = get_backend(None, "numpy", self.dtype, _OP)
        self._ops = {}
        fwd = self.op("conv2d_forward")
        self.prepack = getattr(self.backend, "prepack", None) or getattr(
            getattr(self.backend, "conv", None), "prepack", None)
        try:
            takes = "packed" in inspect.signature(fwd).parameters
        except (TypeError, ValueError):
            takes = False
        self.takes_packed = bool(self.prepack is not None and takes)

    def op(self, name):
        if name not in self._ops:
            self._ops[name] = op_impl(self.backend_name, self.backend, name)
        return self._ops[name]


class _Plan:
    """The steps bound to one input shape: chosen algorithms, buffers, run closures."""

    def __init__(self, steps, nregs, out_reg, in_shape, eng):
        last_use = {0: len(steps)}  # the caller's input is never overwritten or reused
        for i, s in enumerate(steps):
            for r in s.xs:
                last_use[r] = max(last_use.get(r, -1), i)
        last_use[out_reg] = len(steps)
        root = {0: None}  # register -> the pooled buffer (id) it lives in, or None
        owner = {}  # buffer id -> [buffer, registers living in it]
        free: dict = {}
        self.buffers = []
        shapes = {0: tuple(in_shape)}

        def release(i):
            for bid, (buf, regs) in list(owner.items()):
                if all(last_use.get(r, -1) < i for r in regs):
                    free.setdefault((buf.shape, buf.dtype.str), []).append(buf)
                    del owner[bid]

        self.runs = []
        self.flops = 0  # convolutions and linear layers (2 per multiply-add)
        for i, s in enumerate(steps):
            release(i)
            made = []

            def alloc(shape, inplace_of=None, _i=i, _made=made):
                shape = tuple(int(d) for d in shape)
                bid = root.get(inplace_of) if inplace_of is not None else None
                if bid is not None and bid in owner and \
                        owner[bid][0].shape == shape and \
                        all(last_use.get(r, -1) <= _i for r in owner[bid][1]):
                    _made.append(bid)
                    return owner[bid][0]
                pool = free.get((shape, eng.dtype.str))
                buf = pool.pop() if pool else None
                if buf is None:
                    buf = _line_aligned_empty(shape, eng.dtype)
                    self.buffers.append(buf)
                owner[id(buf)] = [buf, []]
                _made.append(id(buf))
                return buf

            s.bind_flops = 0
            out_shape, run = s.bind([shapes[r] for r in s.xs], alloc, eng)
            self.flops += s.bind_flops
            shapes[s.y] = tuple(out_shape)
            if made:
                root[s.y] = made[-1]
                owner[made[-1]][1].append(s.y)
            elif isinstance(s, _Flatten) and root.get(s.xs[0]) in owner:
                root[s.y] = root[s.xs[0]]  # a view: the buffer lives while the view does
                owner[root[s.y]][1].append(s.y)
            else:
                root[s.y] = None
            self.runs.append(run)
        self.nregs = nregs
        self.out_reg = out_reg
        self.out_shape = shapes[out_reg]

    @property
    def buffer_bytes(self) -> int:
        return _nbytes(*self.buffers)

    def run(self, x):
        regs = [None] * self.nregs
        regs[0] = x
        for run in self.runs:
            run(regs)
        return np.array(regs[self.out_reg], copy=True)


def _precision():
    import fastconv

    get = getattr(fastconv, "get_precision", None)
    return get() if callable(get) else None


class CompiledModel:
    """A frozen inference plan of a model; call it like the model: ``y = cm(x)``.

    Built by :func:`compile`. See the module docstring for the semantics (snapshot,
    shapes, threads).
    """

    max_plans = 8  # input shapes whose buffers are kept (least recently used dropped)

    def __init__(self, model):
        if not isinstance(model, nn.Module):
            raise TypeError(f"compile: expected a fastconv.nn.Module, got "
                            f"{type(model).__name__}")
        training = [name or type(model).__name__ for name, m in model.named_modules()
                    if m.training]
        if training:
            raise ValueError(f"compile: the model must be in eval mode (call model.eval() "
                             f"first); in training mode: {', '.join(training[:5])}"
                             f"{' ...' if len(training) > 5 else ''}")
        if getattr(model, "device", "cpu") not in ("cpu", None):
            raise ValueError(f"compile: only CPU models are supported, the model is on "
                             f"{model.device}")
        params = list(model.parameters())
        self.dtype = np.dtype(params[0].data.dtype if params else np.float32)
        self.source_parameter_bytes = sum(p.data.nbytes for p in params)
        self.model_name = type(model).__name__
        lw = _Lowerer()
        self.out_reg = lw.module(model, 0)
        self.steps, self.nregs = lw.steps, lw.nregs
        self._eng = _Engine(self.dtype)
        self._plans: OrderedDict = OrderedDict()
        self._lock = threading.Lock()
        first = self.steps[0] if self.steps else None
        self.in_channels = None
        self.in_ndim = None
        if isinstance(first, _Conv):
            self.in_channels, self.in_ndim = first.in_channels, 4
        elif isinstance(first, _Linear):
            self.in_channels, self.in_ndim = first.w.shape[1], 2

    # ------------------------------------------------------------------ calling

    def _check(self, x):
        if not isinstance(x, np.ndarray):
            raise TypeError(f"compiled {self.model_name}: input must be a NumPy array, got "
                            f"{type(x).__name__}")
        if x.dtype != self.dtype:
            raise ValueError(f"compiled {self.model_name}: input dtype must be {self.dtype} "
                             f"(the model's), got {x.dtype}")
        if self.in_ndim == 4:
            if x.ndim not in (3, 4):
                raise ValueError(f"compiled {self.model_name}: input must be (N, C, H, W) or "
                                 f"(C, H, W), got shape {tuple(x.shape)}")
            c = x.shape[-3]
            if c != self.in_channels:
                raise ValueError(f"compiled {self.model_name}: input must have "
                                 f"{self.in_channels} channels, got {c} (shape "
                                 f"{tuple(x.shape)})")
        elif self.in_ndim == 2:
            if x.ndim != 2 or x.shape[1] != self.in_channels:
                raise ValueError(f"compiled {self.model_name}: input must be (N, "
                                 f"{self.in_channels}), got shape {tuple(x.shape)}")

    def __call__(self, x):
        """Runs the compiled forward pass; returns a fresh array."""
        self._check(x)
        unbatched = self.in_ndim == 4 and x.ndim == 3
        if unbatched:
            x = x[None]
        x = np.ascontiguousarray(x)
        with self._lock:
            plan = self._plan(x.shape)
            y = plan.run(x)
        return y[0] if unbatched else y

    def _plan(self, shape):
        key = (tuple(shape), _precision())
        plan = self._plans.get(key)
        if plan is None:
            plan = _Plan(self.steps, self.nregs, self.out_reg, shape, self._eng)
            self._plans[key] = plan
            while len(self._plans) > self.max_plans:
                self._plans.popitem(last=False)
        else:
            self._plans.move_to_end(key)
        return plan

    def prepare(self, shape):
        """Builds (and keeps) the plan for an input shape now, so the first call with it
        does not pay for choosing algorithms and allocating buffers."""
        x = np.zeros(shape, self.dtype)
        self._check(x)
        shape = (1, *shape) if self.in_ndim == 4 and len(shape) == 3 else tuple(shape)
        with self._lock:
            self._plan(shape)
        return self

    # ------------------------------------------------------------------ reports

    def flops(self, shape) -> int:
        """Flops of one call on an input of ``shape``: 2 per multiply-add of every
        convolution and linear layer (what "effective GFLOP/s" divides); eagerly run
        layers are not counted."""
        self.prepare(shape)
        shape = (1, *shape) if self.in_ndim == 4 and len(shape) == 3 else tuple(shape)
        return self._plans[(tuple(shape), _precision())].flops

    def memory_report(self) -> dict:
        """Bytes the compiled model holds beyond the source model.

        ``prepared_weight_bytes``: folded / copied conv and linear weights and biases, plus
        prepacked forms (``packed`` is included when the backend prepacks); ``eager_bytes``:
        parameters of the private copies of eagerly run layers; ``extra_bytes``: their sum
        (all of it is extra: the compiled model is a snapshot and shares nothing with the
        source); ``activation_buffer_bytes``: reused buffers per prepared input shape;
        ``source_parameter_bytes``: the source model's parameters, for scale.
        """
        prepared = sum(s.weight_bytes() for s in self.steps if not isinstance(s, _Eager))
        eager = sum(s.weight_bytes() for s in self.steps if isinstance(s, _Eager))
        return {
            "prepared_weight_bytes": prepared,
            "eager_bytes": eager,
            "extra_bytes": prepared + eager,
            "source_parameter_bytes": self.source_parameter_bytes,
            "activation_buffer_bytes": {k[0]: p.buffer_bytes for k, p in self._plans.items()},
        }

    def describe(self) -> str:
        """One line per step: what it runs, what is fused into it, the chosen algorithm
        per prepared input shape."""
        lines = [f"compiled {self.model_name}: {len(self.steps)} steps, dtype {self.dtype}, "
                 f"backend {self._eng.backend_name}"]
        for i, s in enumerate(self.steps):
            extra = ""
            if isinstance(s, _Conv) and s.algos:
                extra = "  [" + ", ".join(f"{a}" for a in dict.fromkeys(s.algos.values())) + "]"
            lines.append(f"{i:3d}  {s.describe()}{extra}")
        return "\n".join(lines)

    def __repr__(self):
        return f"<CompiledModel of {self.model_name}: {len(self.steps)} steps>"


def compile(model) -> CompiledModel:  # noqa: A001 - the public name is fixed (DESIGN.md)
    """Compiles an eval-mode :mod:`fastconv.nn` model into a frozen inference callable.

    Batch norm is folded into the preceding convolution; bias, residual add and ReLU /
    ReLU6 run in the convolution's output stage; the dispatcher picks each convolution's
    algorithm once per input shape; buffers are reused across calls. The result is a
    snapshot: later changes to ``model`` are not seen. Raises ``ValueError`` for a model in
    training mode; calling it with an input whose channel count or dtype does not fit the
    model raises ``ValueError`` naming what was expected. See
    :mod:`fastconv.engine.compiler` for the details.
    """
    return CompiledModel(model)
