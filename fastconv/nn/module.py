"""``Module`` and ``Parameter``: the layer API with explicit forward and backward passes.

There is no autograd tape. Each layer keeps, during ``forward``, exactly what its
``backward`` needs (the input of a convolution, the output of a ReLU, the indices of a max
pool) and releases it when ``backward`` has run, so one ``forward`` pairs with one
``backward``. Parameter gradients accumulate (``+=``) into ``Parameter.grad`` until
``zero_grad`` clears them; a parameter with ``requires_grad=False`` never gets a gradient,
and layers skip computing it.
"""
from __future__ import annotations

import contextlib
import threading
from collections import OrderedDict

import numpy as np

from .._args import is_cupy_array, xp

__all__ = ["Module", "Parameter", "no_grad", "is_grad_enabled", "array_lib", "to_device"]

_state = threading.local()


def is_grad_enabled() -> bool:
    """False inside :func:`no_grad`: layers then keep nothing for a backward pass."""
    return getattr(_state, "grad_enabled", True)


def overwritable(x) -> bool:
    """An in-place activation may write over x: no backward will read it (gradients are
    off) and x is a writable C-contiguous array."""
    return (not is_grad_enabled() and getattr(x, "flags", None) is not None
            and bool(x.flags.c_contiguous) and bool(getattr(x.flags, "writeable", True)))


@contextlib.contextmanager
def no_grad():
    """Context in which forward passes keep no activations (inference, evaluation)."""
    old = is_grad_enabled()
    _state.grad_enabled = False
    try:
        yield
    finally:
        _state.grad_enabled = old


def array_lib(a):
    """``numpy`` or ``cupy``: the array library ``a`` belongs to."""
    if isinstance(a, np.ndarray):
        return np
    if is_cupy_array(a):
        return xp("cupy")
    raise TypeError(f"expected a numpy or cupy array, got {type(a).__module__}."
                    f"{type(a).__name__}")


def _cupy():
    try:
        import cupy
    except ImportError as e:
        raise RuntimeError("device 'cuda' needs CuPy (pip install fastconv[gpu]); "
                           f"importing it failed: {e}") from None
    return cupy


def to_device(a, device: str):
    """``a`` on ``device`` ("cpu": a NumPy array, "cuda": a CuPy array); no copy if already
    there."""
    if a is None:
        return None
    if device == "cpu":
        return a if isinstance(a, np.ndarray) else a.get()
    if device == "cuda":
        return _cupy().asarray(a)
    raise ValueError(f"device must be 'cpu' or 'cuda', got {device!r}")


def _device_of(a) -> str:
    return "cpu" if isinstance(a, np.ndarray) else "cuda"


def _commit_staged(staged) -> None:
    """Writes checked ``(target, source)`` pairs in place (see Module._stage_state_dict)."""
    for target, src in staged:
        target[...] = array_lib(target).asarray(src.astype(target.dtype, copy=False))


def _lossy(src: np.ndarray, dtype: np.dtype):
    """Why converting ``src`` to ``dtype`` would change values beyond rounding (None if it
    would not): floats overflowing to inf, integers wrapping around."""
    if src.size == 0 or src.dtype == dtype:
        return None
    if dtype.kind == "f":
        big = float(np.max(np.abs(src)))
        if big > float(np.finfo(dtype).max):
            return f"|value| up to {big:g} overflows to inf"
        return None
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        lo, hi = src.min(), src.max()
        if int(lo) < info.min or int(hi) > info.max:
            return f"values in [{int(lo)}, {int(hi)}] outside [{info.min}, {info.max}]"
    return None


class _Traced:
    """Base of the shape-only values :mod:`fastconv.nn.summary` sends through a model."""

    def trace(self, module):  # pragma: no cover - overridden
        raise NotImplementedError


class Parameter:
    """A trainable array: ``.data`` (NumPy or CuPy), ``.grad`` (None until a backward pass
    produces one) and ``.requires_grad``."""

    __slots__ = ("data", "grad", "requires_grad")

    def __init__(self, data, requires_grad: bool = True):
        array_lib(data)
        self.data = data
        self.grad = None
        self.requires_grad = bool(requires_grad)

    @property
    def shape(self):
        return tuple(self.data.shape)

    @property
    def dtype(self):
        return self.data.dtype

    @property
    def size(self) -> int:
        return int(self.data.size)

    def accumulate_grad(self, g) -> None:
        """``grad += g`` (``g`` is adopted as ``grad`` when there is none yet, so callers pass
        arrays they own); ignored when ``requires_grad`` is False."""
        if not self.requires_grad or g is None:
            return
        if tuple(g.shape) != tuple(self.data.shape):
            raise ValueError(f"gradient shape {tuple(g.shape)} does not match parameter shape "
                             f"{tuple(self.data.shape)}")
        if self.grad is None:
            self.grad = g if g.dtype == self.data.dtype else g.astype(self.data.dtype)
        else:
            self.grad += g

    def __repr__(self):
        return (f"Parameter(shape={self.shape}, dtype={self.dtype}, "
                f"requires_grad={self.requires_grad})")


class Module:
    """Base class of every layer and model.

    Subclasses assign ``Parameter``s, sub-``Module``s and buffers (via
    :meth:`register_buffer`) as attributes in ``__init__``, and implement ``forward(x)`` and
    ``backward(grad_out) -> grad_in``. ``state_dict`` keys are the dotted attribute paths
    (``layer1.0.conv1.weight``), in registration order, as in PyTorch.
    """

    def __init__(self):
        object.__setattr__(self, "_parameters", OrderedDict())
        object.__setattr__(self, "_buffers", OrderedDict())
        object.__setattr__(self, "_modules", OrderedDict())
        object.__setattr__(self, "training", True)

    # ------------------------------------------------------------------ registration

    def __setattr__(self, name, value):
        if "_parameters" not in self.__dict__:
            raise AttributeError(f"{type(self).__name__}.__init__ must call "
                                 "super().__init__() before assigning attributes")
        if name in self._buffers and not isinstance(value, (Parameter, Module)):
            if value is not None:
                array_lib(value)
            self._buffers[name] = value
            return
        for table in (self._parameters, self._modules, self._buffers):
            table.pop(name, None)
        if isinstance(value, Parameter):
            self._parameters[name] = value
        elif isinstance(value, Module):
            self._modules[name] = value
        elif value is None and name in ("weight", "bias"):
            # Keep "no bias" visible as an attribute without registering anything.
            object.__setattr__(self, name, None)
            return
        else:
            object.__setattr__(self, name, value)
            return
        self.__dict__.pop(name, None)

    def __getattr__(self, name):
        d = self.__dict__
        for table in ("_parameters", "_modules", "_buffers"):
            if table in d and name in d[table]:
                return d[table][name]
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def __delattr__(self, name):
        for table in (self._parameters, self._modules, self._buffers):
            if name in table:
                del table[name]
                return
        object.__delattr__(self, name)

    def register_buffer(self, name: str, value) -> None:
        """A non-trainable array that belongs to the state (BatchNorm's running statistics)."""
        if value is not None:
            array_lib(value)
        for table in (self._parameters, self._modules):
            table.pop(name, None)
        self.__dict__.pop(name, None)
        self._buffers[name] = value

    def __setstate__(self, state):  # pragma: no cover - copy.deepcopy support
        self.__dict__.update(state)

    # ------------------------------------------------------------------ traversal

    def named_children(self):
        yield from self._modules.items()

    def children(self):
        for _, m in self.named_children():
            yield m

    def named_modules(self, prefix: str = ""):
        """(dotted name, module) for this module and every descendant, each once."""
        seen = set()

        def walk(mod, pre):
            if id(mod) in seen:
                return
            seen.add(id(mod))
            yield pre, mod
            for name, child in mod._modules.items():
                yield from walk(child, f"{pre}.{name}" if pre else name)

        yield from walk(self, prefix)

    def modules(self):
        for _, m in self.named_modules():
            yield m

    def named_parameters(self, prefix: str = ""):
        """(dotted name, Parameter) pairs, each parameter once."""
        seen = set()
        for mname, mod in self.named_modules(prefix):
            for pname, p in mod._parameters.items():
                if id(p) not in seen:
                    seen.add(id(p))
                    yield (f"{mname}.{pname}" if mname else pname), p

    def parameters(self):
        for _, p in self.named_parameters():
            yield p

    def named_buffers(self, prefix: str = ""):
        for mname, mod in self.named_modules(prefix):
            for bname, b in mod._buffers.items():
                if b is not None:
                    yield (f"{mname}.{bname}" if mname else bname), b

    def _state_slots(self):
        """(key, owner module, table, attribute name) for every state_dict entry, in
        PyTorch's order: a module's parameters, then its buffers, then its children."""
        out = []

        def walk(mod, pre):
            for name, p in mod._parameters.items():
                out.append((pre + name, mod, mod._parameters, name))
            for name, b in mod._buffers.items():
                if b is not None:
                    out.append((pre + name, mod, mod._buffers, name))
            for name, child in mod._modules.items():
                walk(child, f"{pre}{name}.")

        walk(self, "")
        return out

    # ------------------------------------------------------------------ modes

    def train(self, mode: bool = True):
        """Training mode (BatchNorm uses batch statistics, Dropout drops) for the whole tree."""
        for m in self.modules():
            object.__setattr__(m, "training", bool(mode))
        return self

    def eval(self):
        """Evaluation mode: ``train(False)``."""
        return self.train(False)

    def requires_grad_(self, requires_grad: bool = True):
        """Freezes (False) or unfreezes every parameter of this module."""
        for p in self.parameters():
            p.requires_grad = bool(requires_grad)
        return self

    def zero_grad(self) -> None:
        """Clears every parameter gradient (sets ``.grad`` to None, as PyTorch does by
        default, so a frozen parameter keeps ``grad is None``)."""
        for p in self.parameters():
            p.grad = None

    # ------------------------------------------------------------------ state

    def state_dict(self) -> "OrderedDict[str, object]":
        """Parameters and buffers by dotted name (the arrays themselves, not copies)."""
        sd = OrderedDict()
        for key, _, table, name in self._state_slots():
            v = table[name]
            sd[key] = v.data if isinstance(v, Parameter) else v
        return sd

    def load_state_dict(self, state_dict, strict: bool = True):
        """Copies arrays from ``state_dict`` into this module's parameters and buffers.

        Every key, shape and dtype kind is checked before anything is written, so a
        mismatched dictionary raises (``KeyError`` for missing/unexpected keys with
        ``strict``, ``ValueError`` for a shape mismatch) and leaves the module unchanged.
        Values may be NumPy or CuPy arrays (or anything ``numpy.asarray`` accepts); they are
        converted to each target's array library and dtype, and a conversion that would
        change values (float64 beyond float32's range, an integer outside the target's
        range) is refused. A missing ``num_batches_tracked`` is accepted, as in PyTorch
        (the buffer keeps its value). Returns ``(missing_keys, unexpected_keys)``.
        """
        staged, missing, unexpected = self._stage_state_dict(state_dict, strict)
        _commit_staged(staged)
        return missing, unexpected

    def _key_check(self, keys, strict):
        """``(slots, missing, unexpected)`` for a state dict with ``keys``; raises
        ``KeyError`` naming them under ``strict``. A missing ``num_batches_tracked`` is not
        an error (older PyTorch checkpoints have none): the buffer keeps its value."""
        slots = self._state_slots()
        own = {key for key, *_ in slots}
        keys = list(keys)
        present = set(keys)
        missing = [k for k, *_ in slots if k not in present
                   and not (k == "num_batches_tracked" or k.endswith(".num_batches_tracked"))]
        unexpected = [k for k in keys if k not in own]
        if strict and (missing or unexpected):
            parts = []
            for what, ks in (("missing", missing), ("unexpected", unexpected)):
                if ks:
                    more = f" (+{len(ks) - 10} more)" if len(ks) > 10 else ""
                    parts.append(f"{what} keys: {', '.join(ks[:10])}{more}")
            raise KeyError(f"load_state_dict for {type(self).__name__}: {'; '.join(parts)}")
        return slots, missing, unexpected

    def _check_shapes(self, shapes: dict, strict=True) -> None:
        """Checks a state dict's keys and shapes (``{key: shape}``) without its values:
        the same ``KeyError`` / ``ValueError`` :meth:`load_state_dict` would raise."""
        slots, _, _ = self._key_check(shapes.keys(), strict)
        errors = []
        for key, _, table, name in slots:
            if key in shapes:
                cur = table[name]
                target = cur.data if isinstance(cur, Parameter) else cur
                if tuple(shapes[key]) != tuple(target.shape):
                    errors.append(f"{key}: checkpoint shape {tuple(shapes[key])} != model "
                                  f"shape {tuple(target.shape)}")
        if errors:
            more = f"; (+{len(errors) - 10} more)" if len(errors) > 10 else ""
            raise ValueError(f"load_state_dict for {type(self).__name__}: "
                             + "; ".join(errors[:10]) + more)

    def _stage_state_dict(self, state_dict, strict=True):
        """The checking half of :meth:`load_state_dict`: ``([(target, source)], missing,
        unexpected)``, raising on any mismatch; nothing is written."""
        if not hasattr(state_dict, "keys"):
            raise TypeError(f"state_dict must be a mapping, got {type(state_dict).__name__}")
        slots, missing, unexpected = self._key_check(state_dict.keys(), strict)
        staged, errors = [], []
        for key, _, table, name in slots:
            if key not in state_dict:
                continue
            cur = table[name]
            target = cur.data if isinstance(cur, Parameter) else cur
            src = state_dict[key]
            if is_cupy_array(src):
                src = src.get()
            src = np.asarray(src)
            if tuple(src.shape) != tuple(target.shape):
                errors.append(f"{key}: checkpoint shape {tuple(src.shape)} != model shape "
                              f"{tuple(target.shape)}")
            elif src.dtype.kind not in "fiub" or \
                    (target.dtype.kind == "f") != (src.dtype.kind == "f"):
                errors.append(f"{key}: checkpoint dtype {src.dtype} cannot be loaded into "
                              f"{target.dtype}")
            elif target.dtype.kind == "f" and not np.all(np.isfinite(src)):
                errors.append(f"{key}: checkpoint holds non-finite values")
            elif (why := _lossy(src, target.dtype)) is not None:
                errors.append(f"{key}: checkpoint values do not fit {target.dtype}: {why}")
            else:
                staged.append((target, src))
        if errors:
            more = f"; (+{len(errors) - 10} more)" if len(errors) > 10 else ""
            raise ValueError(f"load_state_dict for {type(self).__name__}: "
                             + "; ".join(errors[:10]) + more)
        return staged, missing, unexpected

    # ------------------------------------------------------------------ devices, dtypes

    def to(self, device=None, dtype=None):
        """Moves every parameter, gradient and buffer to ``device`` ("cpu" or "cuda";
        CuPy is imported only for "cuda") and/or casts floating ones to ``dtype``.
        ``to(np.float64)`` is accepted as a dtype-only call. Returns ``self``."""
        if device is not None and not isinstance(device, str):
            device, dtype = None, device
        if device is not None and device not in ("cpu", "cuda"):
            raise ValueError(f"device must be 'cpu' or 'cuda', got {device!r}")
        if dtype is not None:
            dtype = np.dtype(dtype)
            if dtype not in (np.dtype(np.float32), np.dtype(np.float64)):
                raise TypeError(f"dtype must be float32 or float64, got {dtype}")
        if device == "cuda":
            _cupy()

        def conv(a):
            if a is None:
                return None
            if device is not None:
                a = to_device(a, device)
            if dtype is not None and a.dtype.kind == "f" and a.dtype != dtype:
                a = a.astype(dtype)
            return a

        for mod in self.modules():
            for p in mod._parameters.values():
                p.data, p.grad = conv(p.data), conv(p.grad)
            for name, b in list(mod._buffers.items()):
                mod._buffers[name] = conv(b)
            mod._clear_saved()
        return self

    def cpu(self):
        return self.to("cpu")

    def cuda(self):
        return self.to("cuda")

    @property
    def device(self) -> str:
        for p in self.parameters():
            return _device_of(p.data)
        return "cpu"

    # ------------------------------------------------------------------ passes

    def forward(self, *args):
        raise NotImplementedError(f"{type(self).__name__} does not implement forward")

    def backward(self, grad_out):
        raise NotImplementedError(f"{type(self).__name__} does not implement backward")

    def __call__(self, *args, **kwargs):
        if args and isinstance(args[0], _Traced):
            return args[0].trace(self)
        return self.forward(*args, **kwargs)

    def has_trainable(self) -> bool:
        """True if any parameter of this module (or a descendant) has ``requires_grad``."""
        return any(p.requires_grad for p in self.parameters())

    def _backward_params_only(self, grad_out) -> None:
        """Backward when nobody needs this module's input gradient (it is the first
        trainable layer of the network): parameter gradients only. Layers that can skip
        their input gradient (Conv2d, Linear, chains, residual blocks) override this; the
        default runs ``backward`` and drops the result."""
        self.backward(grad_out)

    def _release(self) -> None:
        """Drops what this module and its descendants saved for a backward that will not
        come (a frozen part of the network below every trainable layer)."""
        for m in self.modules():
            m._clear_saved()

    # Saved-for-backward attributes of a layer, released by backward and by to().
    _saved_names: tuple = ()

    def _clear_saved(self):
        for name in self._saved_names:
            object.__setattr__(self, name, None)

    def _need_saved(self, value, what="forward"):
        if value is None:
            raise RuntimeError(f"{type(self).__name__}.backward called without a preceding "
                               f"{what} in grad mode (each forward pairs with one backward)")
        return value

    # ------------------------------------------------------------------ display

    def extra_repr(self) -> str:
        return ""

    def __repr__(self):
        lines = [f"{type(self).__name__}({self.extra_repr()}"]
        if not self._modules:
            return lines[0] + ")"
        for name, m in self._modules.items():
            sub = repr(m).replace("\n", "\n  ")
            lines.append(f"  ({name}): {sub}")
        return "\n".join(lines) + "\n)"
