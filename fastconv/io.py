"""Checkpoints without pickle: safetensors (``.safetensors``) or NumPy ``.npz`` files.

A checkpoint holds the model's ``state_dict`` under ``model.<key>``, the optimizer's array
state under ``optim.<param index>.<name>``, and everything else (optimizer
hyper-parameters, scalar state, scheduler state, user metadata such as the epoch) as one
JSON document: safetensors' string metadata, or a ``__meta__`` uint8 array in ``.npz``
files. ``.npz`` files are read with ``allow_pickle=False``.

Loading is all-or-nothing: the whole file is read and every key and shape checked against
the model (and optimizer) before anything is written, so a truncated, corrupt or
mismatched file raises ``ValueError`` / ``KeyError`` and leaves them unchanged. Saving
writes a temporary file and renames it, so an interrupted save never clobbers the
previous checkpoint.

Plain weight files (for example torchvision weights converted to safetensors, keys
``conv1.weight``, ...) load with :func:`load_weights` / :func:`load_checkpoint`, and so do
``.pth`` / ``.pt`` files written by ``torch.save``: :func:`load_torch` reads them without
torch and without running pickled code.

Hostile files: a ``.npz`` member must be a plain ``.npy`` array (raw pickles and object
arrays are refused), every declared shape must match the member's real size, and a
model's keys and shapes are checked from the headers before any array is read or
inflated, so a lying header or a deflate bomb costs no memory.
"""
from __future__ import annotations

import io as _io
import json
import os
import tempfile
import zipfile

import numpy as np

from ._args import is_cupy_array
from .nn.module import Module, _commit_staged

__all__ = ["save_checkpoint", "load_checkpoint", "save_weights", "load_weights",
           "read_arrays", "load_torch"]

_FORMAT = "fastconv-checkpoint-1"
_META_KEY = "__meta__"


_TORCH_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt")


def _kind(path, reading=False) -> str:
    p = os.fspath(path)
    if p.endswith(".safetensors"):
        return "safetensors"
    if p.endswith(".npz"):
        return "npz"
    if reading and p.endswith(_TORCH_SUFFIXES):
        return "torch"
    if reading:
        raise ValueError(f"weight file path must end in .safetensors, .npz, .pth or .pt, "
                         f"got {p!r}")
    raise ValueError(f"checkpoint path must end in .safetensors or .npz, got {p!r}")


def _host(a) -> np.ndarray:
    if is_cupy_array(a):
        a = a.get()
    # np.ascontiguousarray would turn a 0-d array (num_batches_tracked) into shape (1,).
    return a if a.flags.c_contiguous else np.ascontiguousarray(a)


def _write(path, arrays: dict, meta: dict) -> None:
    kind = _kind(path)
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=os.path.basename(path), dir=directory)
    os.close(fd)
    try:
        text = json.dumps(meta)
        if kind == "safetensors":
            from safetensors.numpy import save_file

            save_file(arrays, tmp, metadata={"fastconv": text})
        else:
            with open(tmp, "wb") as f:
                np.savez(f, **arrays, **{_META_KEY: np.frombuffer(text.encode(), np.uint8)})
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _npz_specs(zf: zipfile.ZipFile, path):
    """``{key: (shape, dtype, member, header length, fortran)}`` of an ``.npz`` archive, from
    the ``.npy`` headers alone; every declared size is checked against the member's real
    size, so nothing later allocates more than the file holds."""
    specs = {}
    for info in zf.infolist():
        name = info.filename
        if not name.endswith(".npy"):
            raise ValueError(f"checkpoint {path!r}: member {name!r} is not a .npy array "
                             "(raw pickles and other members are refused)")
        with zf.open(info) as f:
            head = f.read(min(info.file_size, 1 << 16))
        bio = _io.BytesIO(head)
        try:
            version = np.lib.format.read_magic(bio)
            if version == (1, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_1_0(bio)
            elif version in ((2, 0), (3, 0)):
                shape, fortran, dtype = np.lib.format.read_array_header_2_0(bio)
            else:
                raise ValueError(f"unsupported .npy version {version}")
        except (ValueError, EOFError, SyntaxError, TypeError) as e:
            raise ValueError(f"checkpoint {path!r}: member {name!r} is not a valid .npy "
                             f"array ({e})") from None
        if dtype.hasobject or dtype.kind not in "fiub":
            raise ValueError(f"checkpoint {path!r}: array {name[:-4]!r} has unsupported dtype "
                             f"{dtype} (object arrays need pickle, which is refused)")
        count = 1
        for d in shape:
            count *= int(d)
        if count * dtype.itemsize != info.file_size - bio.tell():
            raise ValueError(f"checkpoint {path!r}: array {name[:-4]!r} declares shape "
                             f"{shape} ({count * dtype.itemsize} bytes) but its member holds "
                             f"{info.file_size - bio.tell()} (truncated or corrupt)")
        specs[name[:-4]] = (tuple(int(d) for d in shape), dtype, info, bio.tell(), fortran)
    return specs


def _npz_read(zf, path, key, spec) -> np.ndarray:
    shape, dtype, info, hlen, fortran = spec
    nbytes = info.file_size - hlen
    with zf.open(info) as f:
        f.read(hlen)
        # Bounded read: a member whose stream inflates past its declared size is cut off
        # and refused instead of filling memory.
        data = f.read(nbytes + 1)
    if len(data) != nbytes:
        raise ValueError(f"checkpoint {path!r}: array {key!r} holds {len(data)} bytes, its "
                         f"header says {nbytes}")
    a = np.frombuffer(data, dtype).reshape(shape, order="F" if fortran else "C")
    return np.ascontiguousarray(a) if fortran else a.copy()


class _Reader:
    """An opened weight file: ``specs`` ({key: (shape, dtype)}) and ``meta`` come from its
    headers; :meth:`read` then reads the arrays (after the caller checked the specs)."""

    def __init__(self, path, kind):
        self.path, self.kind = path, kind
        self.meta_text = None
        self._npz = None
        if kind == "safetensors":
            from safetensors import safe_open

            with safe_open(path, framework="np") as f:
                self.meta_text = (f.metadata() or {}).get("fastconv")
                self.specs = {}
                for k in f.keys():
                    sl = f.get_slice(k)
                    self.specs[k] = (tuple(sl.get_shape()), sl.get_dtype())
        else:
            self._zf = zipfile.ZipFile(path)
            try:
                self._npz = _npz_specs(self._zf, path)
                meta = self._npz.pop(_META_KEY, None)
                if meta is not None:
                    raw = _npz_read(self._zf, path, _META_KEY, meta)
                    if raw.dtype != np.uint8 or raw.ndim != 1:
                        raise ValueError(f"checkpoint {path!r}: malformed metadata")
                    self.meta_text = raw.tobytes().decode()
            except BaseException:
                self._zf.close()
                raise
            self.specs = {k: (v[0], v[1]) for k, v in self._npz.items()}

    def read(self) -> dict:
        if self.kind == "safetensors":
            from safetensors import safe_open

            with safe_open(self.path, framework="np") as f:
                return {k: f.get_tensor(k) for k in f.keys()}
        return {k: _npz_read(self._zf, self.path, k, spec) for k, spec in self._npz.items()}

    def close(self):
        if self._npz is not None:
            self._zf.close()


_READ_ERRORS = (OSError, ValueError, EOFError, zipfile.BadZipFile, UnicodeDecodeError,
                KeyError, NotImplementedError, RuntimeError, json.JSONDecodeError)


def _corrupt(path, e):
    if isinstance(e, FileNotFoundError):
        return e
    if isinstance(e, ValueError) and str(e).startswith(("checkpoint ", "torch file",
                                                        "cannot read")):
        return ValueError(str(e))
    if not isinstance(e, _READ_ERRORS) and type(e).__name__ != "SafetensorError":
        return None
    return ValueError(f"cannot read checkpoint {path!r} (truncated or corrupt?): "
                      f"{type(e).__name__}: {e}")


def _read_checked(path, check=None) -> tuple[dict, dict]:
    """Reads a weight file: headers first, ``check(specs, meta)`` (which may raise), then the
    arrays. ``.pth``/``.pt`` files go through :func:`load_torch`."""
    kind = _kind(path, reading=True)
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint file {path!r} does not exist")
    if kind == "torch":
        try:
            return load_torch(path, check=None if check is None else
                              (lambda specs: check(specs, {}))), {}
        except _CheckFailed as e:
            raise e.error from None
    reader = None
    try:
        reader = _Reader(path, kind)
        meta = json.loads(reader.meta_text) if reader.meta_text else {}
        if not isinstance(meta, dict):
            raise ValueError(f"checkpoint {path!r}: malformed metadata")
        for k, (_, dt) in reader.specs.items():
            if isinstance(dt, np.dtype) and dt.kind not in "fiub":
                raise ValueError(f"checkpoint {path!r}: array {k!r} has unsupported dtype "
                                 f"{dt}")
        if check is not None:
            check(reader.specs, meta)
        arrays = reader.read()
    except _CheckFailed as e:
        raise e.error from None
    except Exception as e:
        err = _corrupt(path, e)
        if err is None:
            raise
        raise err from None
    finally:
        if reader is not None:
            reader.close()
    for k, a in arrays.items():
        if a.dtype.kind not in "fiub":
            raise ValueError(f"checkpoint {path!r}: array {k!r} has unsupported dtype {a.dtype}")
    return arrays, meta


class _CheckFailed(Exception):
    """Carries a check's own error past the corrupt-file translation."""

    def __init__(self, error):
        super().__init__(str(error))
        self.error = error


def read_arrays(path) -> tuple[dict, dict]:
    """Reads every array of a ``.safetensors`` / ``.npz`` (or ``.pth``/``.pt``) file eagerly
    -> ``(arrays, metadata)``; ``ValueError`` naming the file if it is truncated, corrupt or
    holds anything but plain numeric arrays."""
    return _read_checked(path)


def load_torch(path, *, check=None) -> dict:
    """Reads a state dict written by ``torch.save`` (``.pth`` / ``.pt``) -> ``{key: numpy
    array}``, without importing torch and without running pickled code; see
    :func:`fastconv._torchfile.load_torch`."""
    from ._torchfile import load_torch as _load

    return _load(path, check=check)


def save_weights(path, model_or_state) -> None:
    """Writes a plain state_dict (keys as ``model.state_dict()``) to ``path``."""
    sd = model_or_state.state_dict() if isinstance(model_or_state, Module) else model_or_state
    _write(path, {k: _host(v) for k, v in sd.items()}, {"format": "weights"})


def load_weights(path) -> dict:
    """Reads a weight file (``.safetensors``, ``.npz``, or ``.pth``/``.pt`` written by
    ``torch.save``) as a ``{key: numpy array}`` dict (for ``load_state_dict``)."""
    arrays, meta = read_arrays(path)
    return _model_part(arrays, meta)


def _model_part(arrays, meta):
    if meta.get("format") == _FORMAT:
        return {k[len("model."):]: v for k, v in arrays.items() if k.startswith("model.")}
    return arrays


def _json_value(v, where):
    if isinstance(v, (bool, int, float, str)) or v is None:
        return v
    if isinstance(v, (list, tuple)):
        return [_json_value(x, where) for x in v]
    if isinstance(v, dict):
        return {str(k): _json_value(x, where) for k, x in v.items()}
    if isinstance(v, (np.integer, np.floating, np.bool_)):
        return v.item()
    raise TypeError(f"save_checkpoint: {where} holds a {type(v).__name__}, which cannot be "
                    "stored without pickle")


def save_checkpoint(path, model: Module, optimizer=None, scheduler=None, **metadata) -> None:
    """Saves the model (and optionally the optimizer and LR schedule state) plus JSON-able
    ``metadata`` (epoch, accuracy, ...) to a ``.safetensors`` or ``.npz`` file."""
    if not isinstance(model, Module):
        raise TypeError(f"save_checkpoint: model must be a Module, got {type(model).__name__}")
    arrays = {f"model.{k}": _host(v) for k, v in model.state_dict().items()}
    meta = {"format": _FORMAT, "metadata": _json_value(metadata, "metadata")}
    if optimizer is not None:
        sd = optimizer.state_dict()
        scalars = {}
        for i, s in sd["state"].items():
            for name, v in s.items():
                if hasattr(v, "shape") and tuple(v.shape) != ():
                    arrays[f"optim.{i}.{name}"] = _host(v)
                else:
                    scalars.setdefault(str(i), {})[name] = _json_value(v, "optimizer state")
        meta["optimizer"] = {"type": type(optimizer).__name__,
                             "param_groups": _json_value(sd["param_groups"], "param_groups"),
                             "scalars": scalars}
    if scheduler is not None:
        meta["scheduler"] = {"type": type(scheduler).__name__,
                             "state": _json_value(scheduler.state_dict(), "scheduler")}
    _write(path, arrays, meta)


def _model_checker(model, strict, where, keep=None):
    """A ``check`` for :func:`_read_checked`: the file's keys and shapes must fit ``model``
    (``keep(key) -> False`` drops a key from the comparison, e.g. a skipped head)."""

    def check(specs, meta):
        if meta.get("format") == _FORMAT:
            specs = {k[len("model."):]: v for k, v in specs.items() if k.startswith("model.")}
        shapes = {k: tuple(v[0]) for k, v in specs.items() if keep is None or keep(k)}
        try:
            model._check_shapes(shapes, strict)
        except (KeyError, ValueError) as e:
            raise _CheckFailed(type(e)(f"{where}: {e.args[0]}")) from None
        if "optimizer" in meta and not isinstance(meta["optimizer"], dict):
            raise _CheckFailed(ValueError(f"{where}: malformed optimizer metadata (a "
                                          f"{type(meta['optimizer']).__name__}, not a dict)"))
        if "scheduler" in meta and not isinstance(meta["scheduler"], dict):
            raise _CheckFailed(ValueError(f"{where}: malformed scheduler metadata"))

    return check


def load_checkpoint(path, model: Module, optimizer=None, scheduler=None, strict=True) -> dict:
    """Loads a checkpoint written by :func:`save_checkpoint` (or a plain weight file, also a
    ``.pth``/``.pt`` state dict written by ``torch.save``) into ``model`` and, when given,
    ``optimizer`` / ``scheduler``. Returns the saved metadata.

    Everything is read and checked first; on any error nothing is modified. Keys and shapes
    are compared with the model from the file's headers, before the arrays are read.
    """
    where = f"checkpoint {os.fspath(path)!r}"
    arrays, meta = _read_checked(path, _model_checker(model, strict, where))
    model_sd = _model_part(arrays, meta)
    try:
        staged_model = model._stage_state_dict(model_sd, strict)[0]
    except (KeyError, ValueError) as e:
        raise type(e)(f"{where}: {e.args[0]}") from None
    staged_opt = staged_sched = None
    if optimizer is not None:
        om = meta.get("optimizer")
        if om is None:
            raise ValueError(f"{where} holds no optimizer state")
        if not isinstance(om, dict) or not isinstance(om.get("scalars", {}), dict):
            raise ValueError(f"{where}: malformed optimizer metadata")
        if om.get("type") != type(optimizer).__name__:
            raise ValueError(f"{where} holds {om.get('type')} state, not "
                             f"{type(optimizer).__name__}")
        state: dict = {}
        try:
            for k, v in arrays.items():
                if k.startswith("optim."):
                    _, i, name = k.split(".", 2)
                    state.setdefault(int(i), {})[name] = v
            for i, s in om.get("scalars", {}).items():
                if not isinstance(s, dict):
                    raise ValueError(f"scalar state of parameter {i} is not a dict")
                state.setdefault(int(i), {}).update(s)
            staged_opt = optimizer._stage({"state": state,
                                           "param_groups": om["param_groups"]})
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"{where}: optimizer state does not fit: {e}") from None
    if scheduler is not None:
        sm = meta.get("scheduler")
        if not isinstance(sm, dict) or sm.get("type") != type(scheduler).__name__:
            raise ValueError(f"{where} holds no {type(scheduler).__name__} state")
        staged_sched = sm.get("state")
        if not (isinstance(staged_sched, dict) and isinstance(staged_sched.get("last_epoch"), int)
                and isinstance(staged_sched.get("base_lrs"), list)
                and len(staged_sched["base_lrs"]) == len(scheduler.base_lrs)):
            raise ValueError(f"{where}: scheduler state does not fit this scheduler")
    _commit_staged(staged_model)
    if staged_opt is not None:
        optimizer._commit(staged_opt)
    if staged_sched is not None:
        scheduler.load_state_dict(staged_sched)
    return meta.get("metadata", {})
