"""Reading ``torch.save`` files without torch and without running pickled code.

A file written by ``torch.save(state_dict, path)`` is a zip archive (``<name>/data.pkl``:
a pickle of the state dict whose tensors refer, through pickle's persistent ids, to raw
storages stored as ``<name>/data/<key>``), or, before torch 1.6 and with
``_use_new_zipfile_serialization=False``, the legacy stream: five pickles (magic number,
protocol version, system info, the object, the storage keys) followed by the storages'
bytes.

The pickle is read by an unpickler whose ``find_class`` knows only the handful of globals a
state dict needs, each mapped onto a NumPy-side stand-in; any other global (``os.system``,
a module class, ``builtins.eval`` ...) is refused with a ``ValueError`` naming it, before
anything is called. Tensors come out of the pickle as descriptions (storage, offset, shape,
strides); they are checked against the storage's declared size, and the bytes are read only
afterwards, never more than the archive member's real size, so a lying or truncated file
costs no more memory than it holds.
"""
from __future__ import annotations

import collections
import io
import os
import pickle
import struct
import zipfile

import numpy as np

__all__ = ["load_torch"]

# torch storage type name -> (numpy dtype of the raw bytes, dtype handed back)
_STORAGES = {
    "DoubleStorage": ("<f8", "<f8"),
    "FloatStorage": ("<f4", "<f4"),
    "HalfStorage": ("<f2", "<f2"),
    "BFloat16Storage": ("<u2", "bfloat16"),
    "LongStorage": ("<i8", "<i8"),
    "IntStorage": ("<i4", "<i4"),
    "ShortStorage": ("<i2", "<i2"),
    "CharStorage": ("i1", "i1"),
    "ByteStorage": ("u1", "u1"),
    "BoolStorage": ("?", "?"),
    "ComplexFloatStorage": ("<c8", "<c8"),
    "ComplexDoubleStorage": ("<c16", "<c16"),
}

_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_LEGACY_PROTOCOL = 1001
# data.pkl of a ResNet-152 is ~100 KB; anything near this is not a state dict.
_MAX_PICKLE = 64 << 20


class _Storage:
    """A storage named by the pickle: its key, raw dtype and element count (its bytes are
    read later)."""

    __slots__ = ("key", "raw", "kind", "numel", "data")

    def __init__(self, key, raw, kind, numel):
        self.key, self.raw, self.kind, self.numel, self.data = key, raw, kind, numel, None


class _Tensor:
    """A tensor described by ``_rebuild_tensor_v2``: a strided view of a storage."""

    __slots__ = ("storage", "offset", "shape", "stride")

    def __init__(self, storage, offset, shape, stride):
        self.storage, self.offset, self.shape, self.stride = storage, offset, shape, stride


class _StorageType:
    """Stand-in for ``torch.FloatStorage`` and friends (only ever a persistent-id tag)."""

    def __init__(self, name):
        self.name = name

    def __call__(self, *args):
        raise ValueError(f"torch file constructs torch.{self.name} directly, which a state "
                         "dict never does")


def _int(v, what):
    if isinstance(v, bool) or not isinstance(v, int):
        raise ValueError(f"torch file: {what} must be an int, got {type(v).__name__}")
    return v


def _int_tuple(v, what):
    if not isinstance(v, tuple):
        raise ValueError(f"torch file: {what} must be a tuple of ints, got {type(v).__name__}")
    out = tuple(_int(x, what) for x in v)
    if any(x < 0 for x in out):
        raise ValueError(f"torch file: negative entry in {what} {out}")
    return out


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False,
                       backward_hooks=None, metadata=None):
    if not isinstance(storage, _Storage):
        raise ValueError("torch file: a tensor whose storage is not a storage record")
    offset = _int(storage_offset, "storage offset")
    shape = _int_tuple(size, "tensor size")
    strides = _int_tuple(stride, "tensor stride")
    if len(shape) != len(strides):
        raise ValueError(f"torch file: tensor size {shape} and stride {strides} differ in "
                         "length")
    n = 1
    for d in shape:
        n *= d
    if offset < 0:
        raise ValueError(f"torch file: negative storage offset {offset}")
    if n:
        last = offset + sum((d - 1) * s for d, s in zip(shape, strides))
        if last >= storage.numel:
            raise ValueError(f"torch file: a tensor of size {shape}, stride {strides} at offset "
                             f"{offset} reaches element {last} of a storage of "
                             f"{storage.numel}")
        # Stride-0 (expanded) views could turn a small storage into a huge array.
        if n > storage.numel:
            raise ValueError(f"torch file: a tensor of {n} elements over a storage of "
                             f"{storage.numel} (an expanded view) is not a state-dict tensor")
    return _Tensor(storage, offset, shape, strides)


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None, *state):
    if not isinstance(data, _Tensor):
        raise ValueError("torch file: a Parameter that does not hold a tensor")
    return data


class _OrderedDict(collections.OrderedDict):
    """The state dict's own class; torch's ``_metadata`` lands in its ``__dict__``."""


_GLOBALS = {
    ("collections", "OrderedDict"): _OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    **{("torch", name): _StorageType(name) for name in _STORAGES},
}


class _Unpickler(pickle.Unpickler):
    """Resolves only :data:`_GLOBALS`; storages become :class:`_Storage` records."""

    def __init__(self, stream, storages: dict, legacy: bool):
        super().__init__(stream)
        self._storages = storages
        self._legacy = legacy

    def find_class(self, module, name):
        try:
            return _GLOBALS[(module, name)]
        except (KeyError, TypeError):
            raise ValueError(f"torch file refers to {module}.{name}, which is not part of a "
                             "state dict; refusing to load it (only tensors, storages and "
                             "OrderedDict are allowed)") from None

    def persistent_load(self, pid):
        if not isinstance(pid, tuple) or not pid or pid[0] != "storage":
            raise ValueError(f"torch file: unsupported persistent id {str(pid)[:80]}")
        if self._legacy:
            if len(pid) != 6:
                raise ValueError("torch file: malformed legacy storage record")
            _, stype, key, _location, numel, view = pid
            if view is not None:
                raise ValueError("torch file: legacy storage views are not supported")
        else:
            if len(pid) != 5:
                raise ValueError("torch file: malformed storage record")
            _, stype, key, _location, numel = pid
        if not isinstance(stype, _StorageType):
            raise ValueError("torch file: storage record without a storage type")
        if not isinstance(key, str):
            raise ValueError("torch file: storage key must be a string")
        numel = _int(numel, "storage size")
        if numel < 0:
            raise ValueError(f"torch file: negative storage size {numel}")
        raw, kind = _STORAGES[stype.name]
        st = self._storages.get(key)
        if st is None:
            st = self._storages[key] = _Storage(key, raw, kind, numel)
        elif (st.raw, st.numel) != (raw, numel):
            raise ValueError(f"torch file: storage {key!r} is declared twice differently")
        return st


def _load_pickle(data: bytes, storages, legacy):
    try:
        return _Unpickler(io.BytesIO(data), storages, legacy).load()
    except ValueError:
        raise
    except (pickle.UnpicklingError, EOFError, TypeError, AttributeError, IndexError,
            KeyError, struct.error, OverflowError, MemoryError, RecursionError,
            UnicodeDecodeError) as e:
        raise ValueError(f"torch file: corrupt pickle ({type(e).__name__}: {e})") from None


def _collect(obj, path):
    """The ``{key: tensor}`` mapping of a loaded object: a state dict, or a checkpoint dict
    holding one under ``state_dict`` / ``model`` / ``model_state_dict``."""
    if not isinstance(obj, dict):
        raise ValueError(f"torch file {path!r} holds a {type(obj).__name__}, not a state dict")
    if obj and all(isinstance(v, _Tensor) for v in obj.values()):
        bad = [k for k in obj if not isinstance(k, str)]
        if bad:
            raise ValueError(f"torch file {path!r}: non-string keys {bad[:5]}")
        return obj
    for name in ("state_dict", "model_state_dict", "model"):
        inner = obj.get(name)
        if isinstance(inner, dict) and inner and \
                all(isinstance(v, _Tensor) for v in inner.values()):
            return _collect(inner, path)
    odd = [k for k, v in obj.items() if not isinstance(v, _Tensor)]
    raise ValueError(f"torch file {path!r}: entries {odd[:5]} are not tensors (not a state "
                     "dict)")


def _to_numpy(storage_bytes: bytes, st: _Storage, big_endian: bool) -> np.ndarray:
    raw = np.dtype(st.raw)
    if big_endian:
        raw = raw.newbyteorder(">")
    if len(storage_bytes) != st.numel * raw.itemsize:
        raise ValueError(f"torch file: storage {st.key!r} holds {len(storage_bytes)} bytes, "
                         f"its record says {st.numel} x {raw.itemsize}")
    return np.frombuffer(storage_bytes, raw)


def _materialise(t: _Tensor) -> np.ndarray:
    base = t.storage.data
    item = base.itemsize
    view = np.lib.stride_tricks.as_strided(
        base[t.offset:] if base.size else base, shape=t.shape,
        strides=tuple(s * item for s in t.stride), writeable=False)
    out = np.array(view, dtype=view.dtype.newbyteorder("="), order="C")
    if t.storage.kind == "bfloat16":
        # bfloat16 is the top half of a float32: shift it into place.
        out = (out.astype(np.uint32) << 16).view(np.float32)
    return out


def _dtype_of(t: _Tensor) -> np.dtype:
    return np.dtype(np.float32) if t.storage.kind == "bfloat16" else np.dtype(t.storage.kind)


def _finish(obj, path, read_storage, big_endian, check):
    tensors = _collect(obj, path)
    if check is not None:
        # Keys and shapes are judged before a single storage byte is read.
        check({k: (t.shape, _dtype_of(t)) for k, t in tensors.items()})
    needed = {}
    for t in tensors.values():
        needed[t.storage.key] = t.storage
    for key, st in needed.items():
        st.data = _to_numpy(read_storage(st), st, big_endian)
    return {k: _materialise(t) for k, t in tensors.items()}


def _read_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, expected: int, path) -> bytes:
    if info.file_size != expected:
        raise ValueError(f"torch file {path!r}: member {info.filename!r} is {info.file_size} "
                         f"bytes, expected {expected}")
    with zf.open(info) as f:
        # Read no more than the member should hold: a lying header cannot balloon memory.
        data = f.read(expected + 1)
    if len(data) != expected:
        raise ValueError(f"torch file {path!r}: member {info.filename!r} has "
                         f"{len(data)} bytes, expected {expected}")
    return data


def _load_zip(path, check):
    with zipfile.ZipFile(path) as zf:
        infos = {i.filename: i for i in zf.infolist()}
        pkl = [n for n in infos if n.endswith("/data.pkl") and n.count("/") == 1]
        if len(pkl) != 1:
            if "data.pkl" in infos:
                pkl = ["data.pkl"]
            else:
                raise ValueError(f"{path!r} is a zip file but not one torch.save wrote (no "
                                 "data.pkl)")
        prefix = pkl[0][: -len("data.pkl")]
        info = infos[pkl[0]]
        if info.file_size > _MAX_PICKLE:
            raise ValueError(f"torch file {path!r}: data.pkl is {info.file_size} bytes, too "
                             "large for a state dict")
        data = _read_member(zf, info, info.file_size, path)
        big_endian = False
        bo = infos.get(prefix + "byteorder")
        if bo is not None:
            order = _read_member(zf, bo, bo.file_size, path) if bo.file_size < 16 else b"?"
            if order not in (b"little", b"big"):
                raise ValueError(f"torch file {path!r}: unknown byte order {order[:16]!r}")
            big_endian = order == b"big"
        storages: dict = {}
        obj = _load_pickle(data, storages, legacy=False)

        def read_storage(st):
            name = f"{prefix}data/{st.key}"
            if name not in infos:
                raise ValueError(f"torch file {path!r}: storage record {name!r} is missing")
            return _read_member(zf, infos[name], st.numel * np.dtype(st.raw).itemsize, path)

        return _finish(obj, path, read_storage, big_endian, check)


def _load_legacy(path, check):
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        head = f.read(min(size, _MAX_PICKLE))
        stream = io.BytesIO(head)

        def small():
            try:
                return _Unpickler(stream, {}, legacy=True).load()
            except ValueError:
                raise
            except Exception as e:
                raise ValueError(f"torch file {path!r}: corrupt legacy header "
                                 f"({type(e).__name__})") from None

        if small() != _LEGACY_MAGIC:
            raise ValueError(f"{path!r} is neither a zip archive nor a legacy torch file")
        if small() != _LEGACY_PROTOCOL:
            raise ValueError(f"torch file {path!r}: unsupported legacy protocol version")
        info = small()
        if not isinstance(info, dict):
            raise ValueError(f"torch file {path!r}: corrupt legacy header")
        big_endian = not info.get("little_endian", True)
        storages: dict = {}
        try:
            unp = _Unpickler(stream, storages, legacy=True)
            obj = unp.load()
            keys = unp.load()
        except ValueError:
            raise
        except Exception as e:
            raise ValueError(f"torch file {path!r}: corrupt pickle ({type(e).__name__}: "
                             f"{e})") from None
        if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
            raise ValueError(f"torch file {path!r}: corrupt storage key list")
        # The storages follow, in the order of `keys`: an int64 element count, then bytes.
        f.seek(stream.tell())
        data = {}
        for key in keys:
            st = storages.get(key)
            if st is None:
                raise ValueError(f"torch file {path!r}: storage {key!r} listed but unused")
            hdr = f.read(8)
            if len(hdr) != 8:
                raise ValueError(f"torch file {path!r} is truncated (storage {key!r})")
            (n,) = struct.unpack(">q" if big_endian else "<q", hdr)
            nbytes = st.numel * np.dtype(st.raw).itemsize
            if n != st.numel or nbytes > size - f.tell():
                raise ValueError(f"torch file {path!r}: storage {key!r} declares {n} "
                                 f"elements, the record {st.numel} (or the file is truncated)")
            data[key] = f.read(nbytes)

    def read_storage(st):
        if st.key not in data:
            raise ValueError(f"torch file {path!r}: storage {st.key!r} is missing")
        return data[st.key]

    return _finish(obj, path, read_storage, big_endian, check)


def load_torch(path, *, check=None) -> dict:
    """Reads a state dict written by ``torch.save`` -> ``{key: numpy.ndarray}``.

    Zip archives (torch >= 1.6) and the legacy stream format are read without importing
    torch and without running any pickled code: only ``collections.OrderedDict``,
    ``torch._utils._rebuild_tensor_v2`` / ``_rebuild_parameter`` and the ``torch.*Storage``
    types are resolved, and any other global raises ``ValueError`` naming it. Every
    tensor is copied into its own C-contiguous array (storage offsets and strides applied);
    bfloat16 becomes float32, every other dtype keeps its NumPy equivalent. A checkpoint
    dict holding the state dict under ``state_dict`` / ``model_state_dict`` / ``model`` is
    unwrapped. A truncated, corrupt or foreign file raises ``ValueError``.

    ``check``, if given, is called with ``{key: (shape, dtype)}`` once the pickle is read and
    before any tensor data is: it may raise to stop the load (a model's shape check).
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"torch file {path!r} does not exist")
    with open(path, "rb") as f:
        magic = f.read(4)
    try:
        if magic[:2] == b"PK":
            return _load_zip(path, check)
        if magic[:1] == b"\x80":
            return _load_legacy(path, check)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError, struct.error,
            NotImplementedError, RuntimeError) as e:
        # RuntimeError: zipfile's "compression method not supported" and friends.
        raise ValueError(f"cannot read torch file {path!r} (truncated or corrupt?): "
                         f"{type(e).__name__}: {e}") from None
    raise ValueError(f"{path!r} is not a file torch.save wrote (neither a zip archive nor the "
                     "legacy pickle format; the pre-1.0 tar format is not supported)")
