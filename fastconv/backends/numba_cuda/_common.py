"""Array-library plumbing shared by the numba.cuda kernels.

Kernels take anything with ``__cuda_array_interface__`` (CuPy, numba device arrays)
and, under the CUDA simulator (NUMBA_ENABLE_CUDASIM=1), plain NumPy arrays. Outputs
are allocated in the inputs' library so CuPy in -> CuPy out (NumPy in -> NumPy out
under the simulator).
"""
from __future__ import annotations

import numpy as np
from numba import cuda

jit = cuda.jit(cache=True)
device = cuda.jit(device=True, cache=True)

THREADS_1D = 128  # threads per block of the one-thread-per-element kernels


def lib_of(a) -> str:
    mod = type(a).__module__.split(".")[0]
    if isinstance(a, np.ndarray):
        return "numpy"
    return "cupy" if mod == "cupy" else "numba"


def empty(shape, like, dtype=np.float32):
    lib = lib_of(like)
    if lib == "cupy":
        import cupy

        return cupy.empty(shape, dtype)
    if lib == "numpy":
        return np.empty(shape, dtype)
    return cuda.device_array(shape, dtype)


def zeros(shape, like, dtype=np.float32):
    lib = lib_of(like)
    if lib == "cupy":
        import cupy

        return cupy.zeros(shape, dtype)
    if lib == "numpy":
        return np.zeros(shape, dtype)
    return cuda.to_device(np.zeros(shape, dtype))


def launch1d(n: int):
    """(blocks, threads) covering n elements with one thread each."""
    t = THREADS_1D  # read at call time: the simulator tests shrink it
    return max(1, -(-n // t)), t


def flat(a):
    """A 1-D view of a C-contiguous array (any supported library)."""
    return a.reshape(-1) if lib_of(a) != "numba" else a.reshape(a.size)
