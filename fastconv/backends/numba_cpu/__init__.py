"""The ``numba`` backend: Numba-compiled CPU kernels (float32 and float64).

Convolution algorithms, one module each: ``conv_direct`` (direct summation),
``conv_im2col`` (Numba packing + BLAS GEMM through ``np.dot``), ``conv_winograd``
(F(2x2,3x3) and F(4x4,3x3); forward and backward-data), ``conv_depthwise`` (groups ==
C, row-wise loops without a padded copy). Pooling, batch norm and ReLU
are Numba kernels too. ``linear`` and ``cross_entropy`` are delegated explicitly to
the native C++ backend (see :mod:`.misc`).

Kernels compile on first use with ``cache=True``, so a machine pays the compile cost
once; ``fastconv info --compile-times`` (fastconv.cli.numba_times) reports it. The dispatcher imports this package lazily,
so ``import fastconv`` does not import numba.
"""
from __future__ import annotations

import sys

import numpy as np

from ... import _settings

from ..._dispatch import WINOGRAD_TILES, is_winograd, winograd_tile
from . import conv_depthwise, conv_direct, conv_im2col, conv_winograd
from .misc import (  # noqa: F401
    cross_entropy,
    cross_entropy_backward,
    linear,
    linear_backward,
    relu,
    relu_backward,
)
from .norm import batch_norm_backward, batch_norm_eval, batch_norm_train  # noqa: F401
from .pool import (  # noqa: F401
    adaptive_avg_pool2d,
    adaptive_avg_pool2d_backward,
    avg_pool2d,
    avg_pool2d_backward,
    max_pool2d,
    max_pool2d_backward,
)

ALGOS = {
    "conv2d_forward": ("direct", "im2col", *WINOGRAD_TILES, "depthwise"),
    "conv2d_backward_data": ("direct", "im2col", *WINOGRAD_TILES, "depthwise"),
    "conv2d_backward_weight": ("direct", "im2col", "depthwise"),
}
DTYPES = ("float32", "float64")
ARRAY_LIBS = ("numpy",)


def availability():
    """Always (True, ""): this package imports numba, so a missing numba fails the import
    and the dispatcher reports that error as the reason."""
    return True, ""


def conv2d_forward(x, w, b, spec, algo):
    """Convolution forward with the named algorithm (validated arguments)."""
    if algo == "direct":
        return conv_direct.forward(x, w, b, spec)
    if algo == "im2col":
        return conv_im2col.forward(x, w, b, spec)
    if is_winograd(algo):
        return conv_winograd.forward(x, w, b, spec, winograd_tile(algo))
    if algo == "depthwise":
        return conv_depthwise.forward(x, w, b, spec)
    raise ValueError(f"numba backend: unknown conv2d_forward algo {algo!r}")


def conv2d_backward_data(gy, w, spec, algo):
    """grad_x of the convolution with the named algorithm."""
    if algo == "direct":
        return conv_direct.backward_data(gy, w, spec)
    if algo == "im2col":
        return conv_im2col.backward_data(gy, w, spec)
    if is_winograd(algo):
        return conv_winograd.backward_data(gy, w, spec, winograd_tile(algo))
    if algo == "depthwise":
        return conv_depthwise.backward_data(gy, w, spec)
    raise ValueError(f"numba backend: unknown conv2d_backward_data algo {algo!r}")


def conv2d_backward_weight(gy, x, spec, algo):
    """grad_w of the convolution with the named algorithm (direct, im2col, depthwise)."""
    if algo == "depthwise":
        return conv_depthwise.backward_weight(gy, x, spec)
    if algo == "direct":
        return conv_direct.backward_weight(gy, x, spec)
    if algo == "im2col":
        return conv_im2col.backward_weight(gy, x, spec)
    raise ValueError(f"numba backend: unknown conv2d_backward_weight algo {algo!r}")


def set_num_threads(n: int) -> None:
    """Threads for the prange kernels (0: every thread numba was started with).

    The GEMM step of im2col/Winograd runs in the BLAS library NumPy/SciPy link, which
    keeps its own thread setting (OPENBLAS_NUM_THREADS etc.).
    """
    import numba

    limit = numba.config.NUMBA_NUM_THREADS
    numba.set_num_threads(limit if n <= 0 else min(int(n), limit))


def get_num_threads() -> int:
    import numba

    return numba.get_num_threads()


# fastconv.set_num_threads may have run before this package was imported (also when it is
# imported directly rather than through the dispatcher).
_settings.apply_threads(sys.modules[__name__])
