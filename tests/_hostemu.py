"""Runs the CUDA kernels on the CPU, for logic tests on machines without a GPU.

The .cu sources are compiled with the host C++ compiler against tests/host_emu.cuh (CUDA
threads as fibers, one block at a time) and the backend's Python wrappers are pointed at
them with NumPy standing in for CuPy, so the very launch code and kernels the GPU runs are
exercised, with the real grids, tiles, predicates, split-K and chunking. Uninitialised
allocations are filled with NaN so that reading one shows up.

What it cannot show: timing, races under the real memory model, and NVRTC code
generation. It is a test helper (like NUMBA_ENABLE_CUDASIM), not a backend, so it lives under
tests/ with its header and the wheel does not ship either.
"""
from __future__ import annotations

import contextlib
import ctypes
import hashlib
import shutil
import subprocess
import sys
import types
from pathlib import Path

import numpy as np

from fastconv.backends.cuda._source import KERNELS, assemble, source_dir

# The emulation header sits next to this file; the kernel sources come from the package
# (csrc/cuda in a source tree, fastconv/cuda_src when installed).
_HEADER = Path(__file__).resolve().parent / "host_emu.cuh"


def compiler() -> str | None:
    """The host C++ compiler used for emulation, or None (also when the CUDA sources or the
    emulation header are missing)."""
    if source_dir() is None or not _HEADER.is_file():
        return None
    return shutil.which("g++") or shutil.which("clang++")


def build(filename: str, workdir: Path) -> ctypes.CDLL:
    """Compiles ``filename`` for host emulation (cached in workdir by source hash)."""
    names = KERNELS[filename]
    header = _HEADER.read_text()
    table = ",\n  ".join(f"&fc_emu::run<&{n}>" for n in names)
    src = (header + "\n" + assemble(filename) + "\nstatic fc_emu::Entry fc_table[] = {\n  "
           + table + "\n};\n"
           'extern "C" int fc_emu_launch(int k, unsigned gx, unsigned gy, unsigned gz, '
           "unsigned bx, void** args, int fibers) {\n"
           "  return fc_emu::launch(fc_table[k], gx, gy, gz, bx, args, fibers);\n}\n")
    key = hashlib.sha1(src.encode()).hexdigest()[:16]
    so = workdir / f"{filename}.{key}.so"
    if not so.exists():
        cpp = workdir / f"{filename}.{key}.cpp"
        cpp.write_text(src)
        # No _FORTIFY_SOURCE: its longjmp check rejects the jumps between fiber stacks.
        cmd = [compiler(), "-std=c++17", "-O1", "-U_FORTIFY_SOURCE", "-shared", "-fPIC", "-w", str(cpp), "-o", str(so)]
        res = subprocess.run(cmd, capture_output=True, text=True)
        if res.returncode:
            raise RuntimeError(f"host compile of {filename} failed:\n{res.stderr[-6000:]}")
    lib = ctypes.CDLL(str(so))
    lib.fc_emu_launch.restype = ctypes.c_int
    return lib


class _Ptr:
    def __init__(self, p):
        self.ptr = p


class EmuArray(np.ndarray):
    """A NumPy array with CuPy's ``.data.ptr``."""

    @property
    def data(self):
        return _Ptr(self.ctypes.data)


def _wrap(a):
    return np.ascontiguousarray(a).view(EmuArray)


def _fake_cupy():
    cp = types.ModuleType("cupy")
    cp.float32, cp.int64, cp.ndarray = np.float32, np.int64, np.ndarray

    def empty(shape, dtype=np.float32):
        a = np.empty(shape, dtype)
        a.fill(np.nan if np.dtype(dtype).kind == "f" else -12345)
        return a.view(EmuArray)

    cp.empty = empty
    cp.zeros = lambda shape, dtype=np.float32: np.zeros(shape, dtype).view(EmuArray)
    cp.empty_like = lambda a: empty(a.shape, a.dtype)
    cp.asarray = _wrap
    cp.ascontiguousarray = _wrap
    cp.asnumpy = np.asarray
    props = {"multiProcessorCount": 4}
    cp.cuda = types.SimpleNamespace(runtime=types.SimpleNamespace(
        getDevice=lambda: 0, getDeviceCount=lambda: 1,
        getDeviceProperties=lambda d: props))
    return cp


# Kernels that synchronise a block (run as fibers); the rest run thread after thread. A
# kernel missing here that reaches a barrier raises an error rather than misbehaving.
BARRIER_KERNELS = ("fc::gemm<", "fc::igemm_", "fc::direct_bwd_weight", "fc::depthwise_bwd_weight",
                   "fc::bn_stats_partial", "fc::bn_bwd_partial")


class _Kernel:
    def __init__(self, lib, index, name):
        self.lib, self.index, self.name = lib, index, name

    def __call__(self, grid, block, args):
        grid = tuple(grid) + (1,) * (3 - len(grid))
        holders = []
        for a in args:
            if isinstance(a, np.ndarray) and a.ndim > 0 or isinstance(a, EmuArray):
                assert a.flags.c_contiguous, f"{self.name}: non-contiguous array argument"
                holders.append(ctypes.c_void_p(a.ctypes.data))
            elif isinstance(a, np.int32):
                holders.append(ctypes.c_int32(int(a)))
            elif isinstance(a, np.int64):
                holders.append(ctypes.c_int64(int(a)))
            elif isinstance(a, np.uint64):
                holders.append(ctypes.c_uint64(int(a)))
            elif isinstance(a, np.float32):
                holders.append(ctypes.c_float(float(a)))
            else:
                raise TypeError(f"{self.name}: unsupported kernel argument {type(a)}")
        argv = (ctypes.c_void_p * len(holders))(
            *[ctypes.cast(ctypes.pointer(h), ctypes.c_void_p) for h in holders])
        rc = self.lib.fc_emu_launch(self.index, *(ctypes.c_uint(int(g)) for g in grid),
                                    ctypes.c_uint(int(block[0])), argv,
                                    ctypes.c_int(int(self.name.startswith(BARRIER_KERNELS))))
        if rc == 1:
            raise RuntimeError(f"{self.name}: threads of a block diverged at a barrier")
        if rc == 2:
            raise RuntimeError(f"{self.name} reached a barrier; list it in BARRIER_KERNELS")


_MODULES = ("_runtime", "conv", "pool", "norm", "misc")


def _patch(workdir: Path):
    """Applies the emulation; returns (backend package, undo function)."""
    fake = _fake_cupy()
    saved_sys = sys.modules.get("cupy")
    import importlib

    if saved_sys is None:
        sys.modules["cupy"] = fake  # lets the wrapper modules import without CuPy
    try:
        mods = {m: importlib.import_module(f"fastconv.backends.cuda.{m}") for m in _MODULES}
    finally:
        if saved_sys is None:
            del sys.modules["cupy"]
    libs: dict[str, ctypes.CDLL] = {}

    def kernel(filename, name):
        if filename not in libs:
            libs[filename] = build(filename, workdir)
        return _Kernel(libs[filename], KERNELS[filename].index(name), name)

    rt = mods["_runtime"]
    saved = {m: mod.cupy for m, mod in mods.items()}
    saved_kernel, saved_sm = rt.kernel, dict(rt._sm_counts)
    for mod in mods.values():
        mod.cupy = fake
    rt.kernel = kernel
    rt._sm_counts.clear()

    def undo():
        for m, mod in mods.items():
            mod.cupy = saved[m]
        rt.kernel = saved_kernel
        rt._sm_counts.clear()
        rt._sm_counts.update(saved_sm)

    return importlib.import_module("fastconv.backends.cuda"), undo


@contextlib.contextmanager
def emulate(workdir: Path):
    """Points the cuda backend's wrappers at host-compiled kernels and NumPy arrays;
    yields the backend package. Restores everything on exit."""
    be, undo = _patch(workdir)
    try:
        yield be
    finally:
        undo()


def install(workdir: Path):
    """Process-wide opt-in (``FASTCONV_CUDA_EMULATE=1`` in tests/test_cuda_gpu.py): makes
    ``import cupy`` give the NumPy stand-in, routes its arrays through the public functional
    API to the ``cuda`` backend, and runs that backend's kernels host-emulated. Lets the GPU
    test-suite itself be exercised without a GPU. Not reversible; never used by fastconv
    itself. Returns the stand-in ``cupy`` module."""
    if "cupy" in sys.modules and not getattr(sys.modules["cupy"], "_fastconv_emu", False):
        raise RuntimeError("the real CuPy is already imported; emulation would mix the two")
    from fastconv import _args, _dispatch

    be, _ = _patch(workdir)
    fake = be._runtime.cupy
    fake._fastconv_emu = True

    def fallback(name):
        fn = getattr(np, name)
        if not callable(fn):
            return fn

        def wrapped(*a, **k):
            r = fn(*a, **k)
            return r.view(EmuArray) if isinstance(r, np.ndarray) else r

        return wrapped

    fake.__getattr__ = fallback

    class _Stream:
        def __init__(self, *a, **k):
            pass

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def synchronize(self):
            pass

    fake.cuda.Stream = _Stream
    sys.modules["cupy"] = fake
    original = _args.array_module_name

    def array_module_name(a):
        return "cupy" if isinstance(a, EmuArray) else original(a)

    _args.array_module_name = array_module_name
    with _dispatch._lock:
        _dispatch._failed.pop("cuda", None)
        _dispatch._loaded["cuda"] = be
    return fake
