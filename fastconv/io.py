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
``conv1.weight``, ...) load with :func:`load_weights` / :func:`load_checkpoint`.
"""
from __future__ import annotations

import json
import os
import tempfile
import zipfile

import numpy as np

from .nn.module import Module, _commit_staged

__all__ = ["save_checkpoint", "load_checkpoint", "save_weights", "load_weights",
           "read_arrays"]

_FORMAT = "fastconv-checkpoint-1"
_META_KEY = "__meta__"


def _kind(path) -> str:
    p = os.fspath(path)
    if p.endswith(".safetensors"):
        return "safetensors"
    if p.endswith(".npz"):
        return "npz"
    raise ValueError(f"checkpoint path must end in .safetensors or .npz, got {p!r}")


def _host(a) -> np.ndarray:
    if type(a).__module__.split(".")[0] == "cupy":
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


def read_arrays(path) -> tuple[dict, dict]:
    """Reads every array of a ``.safetensors`` / ``.npz`` file eagerly -> ``(arrays,
    metadata)``; ``ValueError`` naming the file if it is truncated, corrupt or holds
    anything but plain numeric arrays."""
    kind = _kind(path)
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint file {path!r} does not exist")
    try:
        if kind == "safetensors":
            from safetensors import safe_open

            with safe_open(path, framework="np") as f:
                meta_text = (f.metadata() or {}).get("fastconv")
                arrays = {k: f.get_tensor(k) for k in f.keys()}
        else:
            # Our own handle: np.load(path) leaks its file when the zip is unreadable.
            with open(path, "rb") as fh, np.load(fh, allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.files}
            raw = arrays.pop(_META_KEY, None)
            meta_text = None if raw is None else raw.tobytes().decode()
        meta = json.loads(meta_text) if meta_text else {}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, UnicodeDecodeError,
            KeyError) as e:
        raise ValueError(f"cannot read checkpoint {path!r} (truncated or corrupt?): "
                         f"{type(e).__name__}: {e}") from None
    except Exception as e:  # safetensors' own error type (SafetensorError)
        if type(e).__name__ != "SafetensorError":
            raise
        raise ValueError(f"cannot read checkpoint {path!r} (truncated or corrupt?): {e}") \
            from None
    if not isinstance(meta, dict):
        raise ValueError(f"checkpoint {path!r}: malformed metadata")
    for k, a in arrays.items():
        if a.dtype.kind not in "fiub":
            raise ValueError(f"checkpoint {path!r}: array {k!r} has unsupported dtype {a.dtype}")
    return arrays, meta


def save_weights(path, model_or_state) -> None:
    """Writes a plain state_dict (keys as ``model.state_dict()``) to ``path``."""
    sd = model_or_state.state_dict() if isinstance(model_or_state, Module) else model_or_state
    _write(path, {k: _host(v) for k, v in sd.items()}, {"format": "weights"})


def load_weights(path) -> dict:
    """Reads a weight file as a ``{key: numpy array}`` dict (for ``load_state_dict``)."""
    arrays, meta = read_arrays(path)
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


def load_checkpoint(path, model: Module, optimizer=None, scheduler=None, strict=True) -> dict:
    """Loads a checkpoint written by :func:`save_checkpoint` (or a plain weight file) into
    ``model`` and, when given, ``optimizer`` / ``scheduler``. Returns the saved metadata.

    Everything is read and checked first; on any error nothing is modified.
    """
    arrays, meta = read_arrays(path)
    where = f"checkpoint {os.fspath(path)!r}"
    if meta.get("format") == _FORMAT:
        model_sd = {k[len("model."):]: v for k, v in arrays.items() if k.startswith("model.")}
    else:
        model_sd = arrays
    try:
        staged_model = model._stage_state_dict(model_sd, strict)[0]
    except (KeyError, ValueError) as e:
        raise type(e)(f"{where}: {e.args[0]}") from None
    staged_opt = staged_sched = None
    if optimizer is not None:
        om = meta.get("optimizer")
        if om is None:
            raise ValueError(f"{where} holds no optimizer state")
        if om.get("type") != type(optimizer).__name__:
            raise ValueError(f"{where} holds {om.get('type')} state, not "
                             f"{type(optimizer).__name__}")
        state: dict = {}
        for k, v in arrays.items():
            if k.startswith("optim."):
                _, i, name = k.split(".", 2)
                state.setdefault(int(i), {})[name] = v
        for i, s in om.get("scalars", {}).items():
            state.setdefault(int(i), {}).update(s)
        try:
            staged_opt = optimizer._stage({"state": state,
                                           "param_groups": om["param_groups"]})
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"{where}: optimizer state does not fit: {e}") from None
    if scheduler is not None:
        sm = meta.get("scheduler")
        if sm is None or sm.get("type") != type(scheduler).__name__:
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
