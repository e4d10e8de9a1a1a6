"""Shared pieces of the Numba CPU kernels: the decorators and index helpers.

Every kernel is compiled with ``cache=True`` so the (slow, minutes on 2 cores) JIT
compilation happens once per machine; later processes load the machine code from
numba's on-disk cache.
"""
from __future__ import annotations

import numba
from numba import prange

# The kernels keep the GIL: numba's parallel runtime is only thread-safe for concurrent
# launches with some threading layers (tbb, omp), so calls from several Python threads
# are serialised rather than risked; each call already uses every configured core.

# Convolution arithmetic: fastmath lets LLVM reassociate the accumulation loops into
# SIMD reductions; the result is tested against the float64 reference.
kernel = numba.njit(parallel=True, fastmath=True, cache=True)
# Pooling / ReLU keep IEEE semantics: max pooling must propagate NaN as PyTorch does,
# which fastmath's no-NaN assumption would silently break.
strict_kernel = numba.njit(parallel=True, fastmath=False, cache=True)


@numba.njit(inline="always", cache=True)
def tap_range(out, size, stride, off):
    """Output positions o in [lo, hi) whose input index o*stride + off lies in [0, size).

    Replaces per-pixel bounds checks (and a padded copy of the input) by a loop range.
    """
    lo = 0
    if off < 0:
        lo = (-off + stride - 1) // stride
    # A tap that starts past the whole output (padding and dilation larger than the
    # output) must give an empty range inside [0, out]: callers zero-fill [0, lo).
    if lo > out:
        lo = out
    last = size - 1 - off
    hi = 0
    if last >= 0:
        hi = last // stride + 1
    if hi > out:
        hi = out
    if hi < lo:
        hi = lo
    return lo, hi


def batch_chunk(per_image: int, n: int, budget: int = 1 << 22) -> int:
    """Images per chunk so that a workspace of ``per_image`` elements each stays near
    ``budget`` elements (16 MiB of float32): bounded memory, still large GEMMs."""
    return max(1, min(n, budget // max(per_image, 1)))


@kernel
def start_runtime(a):
    """A trivial parallel kernel: its first call starts numba's thread pool, a one-off
    cost that ``fastconv.cli.numba_times.compile_times`` reports on its own rather than
    charging it to whichever kernel family happens to run first."""
    for i in prange(a.shape[0]):
        a[i] = 0
