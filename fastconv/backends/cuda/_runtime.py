"""Compiling and launching the CUDA kernels through CuPy.

Each source file becomes one ``cupy.RawModule`` per device, compiled by NVRTC on first use
with every kernel of that file (all template configurations, via ``name_expressions``) and
then served from CuPy's on-disk kernel cache in later processes. Launches go to CuPy's
current stream; nothing here synchronises with the host.
"""
from __future__ import annotations

import threading

import cupy
import numpy as np

from ._source import KERNELS, NVRTC_OPTIONS, THREADS, assemble

_modules: dict[tuple[int, str], object] = {}
_sm_counts: dict[int, int] = {}
_lock = threading.Lock()

INT32_MAX = 2**31 - 1
NULL = np.uint64(0)  # a null pointer argument (kernels test pointers for null)

# Workspace budget (elements) for im2col columns and Winograd transforms; larger batches
# are processed in chunks of images.
WORKSPACE_ELEMS = 1 << 26


def i32(v) -> np.int32:
    return np.int32(v)


def i64(v) -> np.int64:
    return np.int64(v)


def f32(v) -> np.float32:
    return np.float32(v)


def ptr_or_null(a):
    return NULL if a is None else a


def kernel(filename: str, name: str):
    """The compiled kernel ``name`` of ``filename`` for the current device (memoised)."""
    dev = cupy.cuda.runtime.getDevice()
    key = (dev, filename)
    mod = _modules.get(key)
    if mod is None:
        with _lock:
            mod = _modules.get(key)
            if mod is None:
                mod = cupy.RawModule(code=assemble(filename), options=NVRTC_OPTIONS,
                                     name_expressions=list(KERNELS[filename]))
                _modules[key] = mod
    return mod.get_function(name)


def sm_count() -> int:
    """Multiprocessors of the current device (cached; a device attribute, not a sync)."""
    dev = cupy.cuda.runtime.getDevice()
    n = _sm_counts.get(dev)
    if n is None:
        n = int(cupy.cuda.runtime.getDeviceProperties(dev)["multiProcessorCount"])
        _sm_counts[dev] = n
    return n


def check_elems(what: str, *counts: int) -> None:
    """The kernels index with 32-bit ints: refuse tensors of 2**31 elements or more."""
    for c in counts:
        if c > INT32_MAX:
            raise ValueError(f"cuda backend: {what} has {c} elements; the CUDA kernels index "
                             f"with 32-bit integers and accept at most {INT32_MAX}")


def grid1d(n: int) -> tuple[int]:
    """Blocks for a grid-stride loop over n items: enough to fill the GPU, no more."""
    return (max(1, min((n + THREADS - 1) // THREADS, sm_count() * 32)),)


def launch(filename: str, name: str, grid, args, block=(THREADS,)):
    """Launches on CuPy's current stream."""
    for g, lim in zip(grid, (INT32_MAX, 65535, 65535)):
        if g > lim:
            raise ValueError(f"cuda backend: {name} needs a grid of {tuple(grid)} blocks, "
                             "beyond the CUDA grid limits")
    kernel(filename, name)(tuple(grid), tuple(block), args)


def aligned16(*arrays) -> bool:
    return all(a.data.ptr % 16 == 0 for a in arrays)


def gemm(a, b, c, *, M, N, Kd, lda, ldb, ldc, ta=False, tb=False, L=1, sAl=0, sBl=0,
         Zo=1, Z2=1, sAo=0, sAi=0, sBo=0, sBi=0, sCo=0, sCi=0, bias=None, sbias=0,
         alpha=1.0, beta=0.0, splits=1):
    """C[z] (+)= alpha * sum_l op(A[z,l]) op(B[z,l]) + bias, z = zo*Z2 + zi (see gemm.cu).

    ``a``, ``b``, ``c`` are CuPy arrays (any shape) whose data pointers are the bases; with
    ``splits`` > 1 the product is added atomically into ``c``, which must be zeroed.
    Batch entry zi adds ``bias[zi * sbias + m]``.
    """
    if min(M, N) <= 0 or Zo * Z2 == 0:
        return
    from ._source import GEMM_TILES, gemm_name

    tile = pick_tile(M, N, Zo * Z2)
    BM, BN = GEMM_TILES[tile][:2]
    grid = ((N + BN - 1) // BN, (M + BM - 1) // BM, Zo * Z2 * splits)
    launch("gemm.cu", gemm_name(tile, ta, tb), grid,
           (a, b, c, ptr_or_null(bias), i32(M), i32(N), i32(Kd), i32(L), i32(lda), i32(ldb),
            i32(ldc), i64(sAl), i64(sBl), i64(sAo), i64(sAi), i64(sBo), i64(sBi), i64(sCo),
            i64(sCi), i32(Z2), i32(sbias), i32(splits), f32(alpha), f32(beta)))


def pick_tile(M: int, N: int, Z: int = 1) -> str:
    """The 128x128 tile when it still fills every SM at least once, else the 64x64 tile
    (four times the blocks: a partly idle GPU costs more than smaller tiles do)."""
    if M < 128 or N < 128:
        return "small"
    return "large" if -(-M // 128) * -(-N // 128) * Z >= sm_count() else "small"


def choose_splits(blocks: int, k_len: int, bk: int, max_z: int) -> int:
    """Split-K factor that brings ``blocks`` up to ~2 waves, keeping >= 8 K tiles per split."""
    want = max(1, -(-2 * sm_count() // max(blocks, 1)))
    most = max(1, k_len // (8 * bk))
    return int(max(1, min(want, most, max_z)))
