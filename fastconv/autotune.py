"""Autotuning for ``algo="auto"``: time the candidates once per key and remember the winner.

By default ``algo="auto"`` uses the per-backend heuristic. With :func:`autotune(True)
<autotune>` (or ``FASTCONV_AUTOTUNE=1``) the first call with a new key times every
candidate algorithm and remembers the fastest, in memory and in a JSON file in the user
cache directory, so the next run (and every other process on this machine) reuses it
instead of re-tuning: the complaint cuDNN's benchmark mode draws, re-tuning every shape in
every run, does not apply.

The key is (backend, op, the full convolution spec, dtype, options, threads) plus the
device (CPU model, or GPU name for GPU backends) and the fastconv version, so a cache
shared between machines (a network home directory) or between fastconv versions keeps each
one's entries apart instead of handing one machine's winner to another.

The file is written atomically (temporary file in the same directory, then ``os.replace``)
and merged on write under a lock file (``fcntl.flock`` where available), so two processes
tuning at once never corrupt it or lose each other's entries. A corrupt or foreign file is
ignored with one :class:`CacheWarning` and replaced by a valid one on the next write.

Cache location: ``$FASTCONV_CACHE_DIR``, else ``$XDG_CACHE_HOME/fastconv``, else
``~/.cache/fastconv``; the file is ``autotune.json`` there.
"""
from __future__ import annotations

import json
import os
import platform
import sys
import tempfile
import threading
import time
import types
import warnings
from pathlib import Path

from ._settings import GPU_BACKENDS, VERSION, num_threads

__all__ = [
    "autotune", "enabled", "tuned_choice", "CacheWarning", "cache_dir", "cache_path",
    "cache_entries", "cache_info", "clear_cache", "make_key", "device_name",
]

FORMAT = "fastconv-autotune"
FORMAT_VERSION = 1
CACHE_FILE = "autotune.json"
# An entry per (machine, version, layer); past this many the oldest are dropped on write so
# a long-lived shared cache cannot grow without bound.
MAX_ENTRIES = 20000

_enabled = [os.environ.get("FASTCONV_AUTOTUNE", "0").strip().lower()
            not in ("", "0", "false", "no", "off")]


class CacheWarning(UserWarning):
    """The autotune cache file was unreadable, corrupt or foreign and is being ignored."""


def autotune(flag: bool = True) -> None:
    """Turns autotuning of ``algo="auto"`` on or off for this process.

    When on, the first call of each new (backend, op, shape, dtype, threads) key times every
    algorithm that can serve it and remembers the fastest, in memory and on disk.
    """
    _enabled[0] = bool(flag)


def enabled() -> bool:
    """Whether ``algo="auto"`` is autotuned (else it uses the heuristic)."""
    return _enabled[0]


# ----------------------------------------------------------------------------- location


def cache_dir() -> Path:
    """The fastconv cache directory (FASTCONV_CACHE_DIR, XDG_CACHE_HOME/fastconv or
    ~/.cache/fastconv). Not created here."""
    env = os.environ.get("FASTCONV_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "fastconv"


def cache_path() -> Path:
    """Path of the autotune cache file (it may not exist yet)."""
    return cache_dir() / CACHE_FILE


# ----------------------------------------------------------------------------- keys


def _version() -> str:
    return VERSION


_device_names: dict[str, str] = {}


def cpu_model() -> str:
    """The CPU model name (from /proc/cpuinfo where there is one)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown-cpu"


def _gpu_name() -> str:
    """Name of the current CUDA device (per device: a machine may mix GPU models)."""
    try:
        import cupy

        dev = cupy.cuda.Device().id
    except Exception:  # no usable GPU: the key still separates it from CPU entries
        return "gpu:unknown"
    key = f"gpu{dev}"
    if key not in _device_names:
        try:
            raw = cupy.cuda.runtime.getDeviceProperties(dev).get("name", b"gpu")
            _device_names[key] = "gpu:" + (raw.decode() if isinstance(raw, bytes) else str(raw))
        except Exception:  # properties unavailable: fall back to the ordinal
            _device_names[key] = f"gpu:device{dev}"
    return _device_names[key]


def device_name(backend: str) -> str:
    """What the timings of ``backend`` depend on: the GPU name for GPU backends, else the
    CPU model (with the core count: a VM's model string does not say how many it got)."""
    if backend in GPU_BACKENDS:
        return _gpu_name()
    if "cpu" not in _device_names:
        _device_names["cpu"] = f"cpu:{cpu_model()} x{os.cpu_count() or 1}"
    return _device_names["cpu"]


def _spec_str(spec) -> str:
    """Every field of a ConvSpec that can change the timing, in a fixed order."""
    f = (spec.N, spec.C, spec.H, spec.W, spec.K, spec.R, spec.S)
    return (f"x{f[0]},{f[1]},{f[2]},{f[3]}_w{f[4]},{f[5]},{f[6]}_s{spec.stride[0]},"
            f"{spec.stride[1]}_p{spec.padding[0]},{spec.padding[1]},{spec.padding_end[0]},"
            f"{spec.padding_end[1]}_d{spec.dilation[0]},{spec.dilation[1]}_g{spec.groups}")


def _threads_for(backend: str) -> int:
    return 0 if backend in GPU_BACKENDS else int(num_threads())


def make_key(backend: str, op: str, spec, dtype, options=None, threads: int | None = None) -> str:
    """The cache key of one tuning decision (a string, so it is a JSON object key)."""
    if threads is None:
        threads = _threads_for(backend)
    opts = "" if not options else ",".join(f"{k}={options[k]}" for k in sorted(options))
    return "|".join((f"v{_version()}", device_name(backend), backend, op, _spec_str(spec),
                     _dtype_name(dtype), f"t{threads}", opts))


def _dtype_name(dtype) -> str:
    """'float32' for np.float32, np.dtype('float32') or 'float32' alike."""
    import numpy as np

    try:
        return np.dtype(dtype).name
    except TypeError:
        return str(dtype)


def _key_is_local(key: str) -> bool:
    """Whether a key belongs to this fastconv version on this machine."""
    parts = key.split("|")
    if len(parts) < 3 or parts[0] != f"v{_version()}":
        return False
    return parts[1] == device_name(parts[2]) if parts[2] else False


# ----------------------------------------------------------------------------- file I/O

_mem_lock = threading.RLock()
_state: dict = {"path": None, "entries": {}, "warned": set()}


def _warn_once(path: Path, why: str) -> None:
    """One warning per cache file per process, whatever else goes wrong with it."""
    key = str(path)
    if key in _state["warned"]:
        return
    _state["warned"].add(key)
    warnings.warn(f"fastconv autotune cache {path}: {why}; ignoring it (it will be rewritten "
                  "on the next tuning)", CacheWarning, stacklevel=4)


def _valid_entry(v) -> bool:
    return isinstance(v, dict) and isinstance(v.get("algo"), str)


class _NewerFormat(OSError):
    """The file was written by a fastconv with a newer cache format: leave it alone."""


def _read(path: Path) -> dict:
    """The entries of the cache file; {} (with one warning) when it is corrupt or foreign."""
    return _read_doc(path)[0]


def _read_doc(path: Path) -> tuple[dict, str]:
    """(entries, state) with state 'ok', 'missing', 'bad' or 'newer'."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return {}, "missing"
    except OSError as e:
        _warn_once(path, f"unreadable: {e}")
        return {}, "bad"
    try:
        doc = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        _warn_once(path, f"corrupt: not valid JSON ({e})")
        return {}, "bad"
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        _warn_once(path, "foreign: not a fastconv autotune cache")
        return {}, "bad"
    version = doc.get("format_version")
    if version != FORMAT_VERSION:
        newer = isinstance(version, int) and version > FORMAT_VERSION
        _warn_once(path, f"foreign: format version {version!r}, this fastconv reads "
                         f"{FORMAT_VERSION}" + ("; a newer fastconv's cache is left as it is"
                                                if newer else ""))
        return {}, "newer" if newer else "bad"
    entries = doc.get("entries")
    if not isinstance(entries, dict):
        _warn_once(path, "corrupt: 'entries' is not an object")
        return {}, "bad"
    return {k: v for k, v in entries.items() if isinstance(k, str) and _valid_entry(v)}, "ok"


class _FileLock:
    """An exclusive advisory lock on ``<cache>.lock`` (no-op where fcntl is missing: the
    atomic replace still keeps the file valid, only a concurrent entry could be lost)."""

    def __init__(self, path: Path):
        self.path = path.with_name(path.name + ".lock")
        self.fd = None

    def __enter__(self):
        try:
            import fcntl
        except ImportError:
            return self
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        fcntl.flock(self.fd, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc):
        if self.fd is not None:
            import fcntl

            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None


def _prune(entries: dict) -> dict:
    if len(entries) <= MAX_ENTRIES:
        return entries
    keep = sorted(entries.items(), key=lambda kv: kv[1].get("time", 0.0))[-MAX_ENTRIES:]
    return dict(keep)


def _write_merged(path: Path, new: dict) -> dict:
    """Merges ``new`` into the file under the lock and replaces it atomically; returns the
    merged entries. Raises OSError when the directory is not writable."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with _FileLock(path):
        merged, state = _read_doc(path)
        if state == "newer":
            # Overwriting would destroy a newer fastconv's choices; this process keeps its
            # own in memory instead.
            raise _NewerFormat(f"{path} has a newer cache format")
        merged.update(new)
        merged = _prune(merged)
        doc = {"format": FORMAT, "format_version": FORMAT_VERSION, "entries": merged}
        fd, tmp = tempfile.mkstemp(prefix=".autotune-", suffix=".tmp", dir=path.parent)
        try:
            os.chmod(tmp, 0o644)  # mkstemp's 0600 would hide a shared cache from others
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(doc, f, indent=1, sort_keys=True)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise
    return merged


def _sync_from_disk(path: Path) -> None:
    """Loads the file's entries into memory (entries in memory win: they are this process's
    fresh measurements)."""
    disk = _read(path)
    disk.update(_state["entries"])
    _state["entries"] = disk


def _entries_for(path: Path) -> dict:
    if _state["path"] != path:
        _state["path"] = path
        _state["entries"] = {}
        _sync_from_disk(path)
    return _state["entries"]


def _forget_memory() -> None:
    """Drops the in-memory cache (as a fresh process would start); for tests."""
    with _mem_lock:
        _state["path"] = None
        _state["entries"] = {}
        _state["warned"] = set()


def remember(key: str, entry: dict) -> None:
    """Stores one decision in memory and merges it into the cache file."""
    path = cache_path()
    with _mem_lock:
        _entries_for(path)[key] = entry
        try:
            merged = _write_merged(path, {key: entry})
        except _NewerFormat:
            return  # already warned when it was read
        except OSError as e:
            _warn_once(path, f"unwritable: {e}")
            return
        merged.update(_state["entries"])
        _state["entries"] = merged


def lookup(key: str):
    """The remembered entry for ``key`` (memory, then the file), or None."""
    path = cache_path()
    with _mem_lock:
        entries = _entries_for(path)
        if key not in entries:
            # Another process may have tuned it since we last read the file.
            _sync_from_disk(path)
            entries = _state["entries"]
        return entries.get(key)


def cache_entries(local_only: bool = False) -> int:
    """Number of valid entries in the cache file (``local_only``: only those for this
    machine and fastconv version)."""
    entries = _read_quiet(cache_path())
    if local_only:
        return sum(1 for k in entries if _key_is_local(k))
    return len(entries)


def _read_quiet(path: Path) -> dict:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CacheWarning)
        return _read(path)


def cache_info() -> dict:
    """Where the cache is and what it holds, for ``fastconv info``."""
    path = cache_path()
    entries = _read_quiet(path)
    return {"path": str(path), "exists": path.exists(), "entries": len(entries),
            "local_entries": sum(1 for k in entries if _key_is_local(k)),
            "enabled": enabled()}


def clear_cache() -> None:
    """Deletes the cache file and forgets every decision in memory."""
    path = cache_path()
    with _mem_lock:
        path.parent.mkdir(parents=True, exist_ok=True)
        with _FileLock(path):
            try:
                path.unlink()
            except FileNotFoundError:
                pass
        _forget_memory()


# ----------------------------------------------------------------------------- timing

# The clock and the GPU sync are module-level so tests can inject a fake clock.
_clock = time.perf_counter
# A candidate slower than this many seconds on its first run is timed once, not REPEATS
# times: tuning a big layer must not take minutes.
SLOW_S = 0.5
REPEATS = 3


def _sync(backend: str) -> None:
    if backend in GPU_BACKENDS:
        try:
            import cupy

            cupy.cuda.Device().synchronize()
        except Exception:  # no device to wait for: nothing was queued either
            pass


def time_candidate(backend: str, runner, algo: str, repeats: int | None = None) -> float:
    """Median seconds of ``runner(algo)`` after one untimed warm-up run."""
    repeats = REPEATS if repeats is None else repeats
    t0 = _clock()
    runner(algo)  # warm-up: JIT compiles, workspace allocation, caches
    _sync(backend)
    first = _clock() - t0
    if first > SLOW_S:
        return first
    times = []
    for _ in range(max(1, repeats)):
        t0 = _clock()
        runner(algo)
        _sync(backend)
        times.append(_clock() - t0)
    times.sort()
    return times[len(times) // 2]


def tuned_choice(backend, op, spec, dtype, candidates, runner, options=None):
    """The remembered (or newly timed) fastest of ``candidates``; None to use the heuristic.

    ``runner(algo)`` runs the op with that algorithm. A candidate that raises is skipped;
    if every one does, returns None. A remembered winner that is no longer a candidate
    (an algorithm removed, say) is re-tuned.
    """
    candidates = list(candidates)
    if not candidates:
        return None
    if len(candidates) == 1:
        return candidates[0]
    key = make_key(backend, op, spec, dtype, options)
    hit = lookup(key)
    if hit is not None and hit["algo"] in candidates:
        return hit["algo"]
    times = {}
    for algo in candidates:
        try:
            times[algo] = time_candidate(backend, runner, algo)
        except Exception:  # noqa: BLE001 - a failing algorithm simply cannot win
            continue
    if not times:
        return None
    best = min(times, key=times.get)
    remember(key, {"algo": best, "ms": {a: round(t * 1e3, 6) for a, t in times.items()},
                   "time": time.time()})
    return best


# ----------------------------------------------------------------------------- the switch
# ``fastconv.autotune`` is both this module and the on/off switch of the DESIGN contract
# (``fastconv.autotune(True)``). Which object the package attribute ends up holding depends
# on import order (importing the submodule sets it to the module; the package's lazy
# loader sets it to ``getattr(module, "autotune")``), so the module itself is made callable
# and is also its own ``autotune`` attribute: ``fastconv.autotune(True)``,
# ``fastconv.autotune.autotune(True)`` and ``fastconv.autotune.enabled()`` all work in any
# order.
_set_enabled = autotune


class _CallableModule(types.ModuleType):
    def __call__(self, flag: bool = True) -> None:
        """Turns autotuning of ``algo="auto"`` on or off for this process."""
        _set_enabled(flag)


sys.modules[__name__].__class__ = _CallableModule
autotune = sys.modules[__name__]
