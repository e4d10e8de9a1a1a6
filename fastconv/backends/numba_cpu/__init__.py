"""The ``numba`` backend: Numba-compiled CPU kernels (float32 and float64).

Convolution algorithms, one module each: ``conv_direct`` (direct summation),
``conv_im2col`` (Numba packing + BLAS GEMM through ``np.dot``), ``conv_winograd``
(F(2x2,3x3) and F(4x4,3x3); forward and backward-data), ``conv_depthwise`` (groups ==
C, row-wise loops without a padded copy). Pooling, batch norm and ReLU
are Numba kernels too. ``linear`` and ``cross_entropy`` are delegated explicitly to
the native C++ backend (see :mod:`.misc`).

Kernels compile on first use with ``cache=True``, so a machine pays the compile cost
once; :func:`compile_times` reports it. The dispatcher imports this package lazily,
so ``import fastconv`` does not import numba.
"""
from __future__ import annotations

import sys
import time

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

_compile_times: dict[str, float] = {}


def compile_times(measure: bool = True) -> dict[str, float]:
    """Seconds of the first call of each kernel family, keyed ``"op[algo]:dtype"`` or
    ``"op:dtype"``: JIT compilation, or loading numba's disk cache when it is warm.

    With ``measure`` (the default) every family not yet timed in this process is called
    once on a tiny input and timed; the figures are recorded, so later calls return them
    without re-measuring. A family the process had already used before the first
    measurement shows only its (small) call time, as its compile cost was paid earlier.
    ``measure=False`` returns the figures recorded so far ({} before any measurement).
    ``"parallel_runtime"`` is the one-off start of numba's thread pool (plus compiling
    or loading a trivial kernel), which would otherwise land on the first family timed.
    """
    if _compile_times or not measure:
        return dict(_compile_times)
    from ..._args import conv_spec, pool_spec
    from ._common import start_runtime

    t0 = time.perf_counter()
    start_runtime(np.ones(4))
    _compile_times["parallel_runtime"] = time.perf_counter() - t0
    for dt in (np.float32, np.float64):
        name = np.dtype(dt).name
        x = np.ones((1, 2, 6, 6), dt)
        w = np.ones((3, 2, 3, 3), dt)
        b = np.zeros(3, dt)
        spec = conv_spec(x.shape, w.shape, 1, 1)
        gy = np.ones(spec.y_shape, dt)
        # Strided grad_x takes different kernels (direct scatter, im2col col2im path).
        spec2 = conv_spec(x.shape, w.shape, 2, 1)
        gy2 = np.ones(spec2.y_shape, dt)
        pspec = pool_spec("max_pool2d", x.shape, 2)
        c = np.ones(2, dt)
        xb = x.reshape(1, 2, -1, 1)
        # The depthwise kernels take only depthwise shapes (groups == C).
        wd = np.ones((4, 1, 3, 3), dt)
        sd = conv_spec(x.shape, wd.shape, 1, 1, 1, 2)
        gyd = np.ones(sd.y_shape, dt)
        dw_args = {"fwd": (x, wd, np.zeros(4, dt), sd), "bwd": (gyd, wd, sd),
                   "wgt": (gyd, x, sd)}
        dense_args = {"fwd": (x, w, b, spec), "bwd": (gy, w, spec), "wgt": (gy, x, spec)}
        jobs = {}
        for algo in ALGOS["conv2d_forward"]:
            args = dw_args if algo == "depthwise" else dense_args
            jobs[f"conv2d_forward[{algo}]"] = (
                lambda a=algo, args=args: conv2d_forward(*args["fwd"], a))
        for algo in ALGOS["conv2d_backward_data"]:
            def bwd(a=algo):
                if a == "depthwise":
                    conv2d_backward_data(*dw_args["bwd"], a)
                    return
                conv2d_backward_data(gy, w, spec, a)
                if not is_winograd(a):
                    conv2d_backward_data(gy2, w, spec2, a)
            jobs[f"conv2d_backward_data[{algo}]"] = bwd
        for algo in ALGOS["conv2d_backward_weight"]:
            args = dw_args if algo == "depthwise" else dense_args
            jobs[f"conv2d_backward_weight[{algo}]"] = (
                lambda a=algo, args=args: conv2d_backward_weight(*args["wgt"], a))
        t0 = time.perf_counter()
        y, idx = max_pool2d(x, pspec, True)  # the backward jobs need its outputs
        _compile_times[f"max_pool2d:{name}"] = time.perf_counter() - t0
        jobs.update({
            "max_pool2d_backward": lambda: max_pool2d_backward(y, idx, x.shape),
            "avg_pool2d": lambda: avg_pool2d(x, pspec),
            "avg_pool2d_backward": lambda: avg_pool2d_backward(y, pspec),
            "adaptive_avg_pool2d": lambda: adaptive_avg_pool2d(x, (4, 5)),
            "adaptive_avg_pool2d_backward": (
                lambda: adaptive_avg_pool2d_backward(np.ones((1, 2, 4, 5), dt), x.shape)),
            "batch_norm_train": lambda: batch_norm_train(xb, c, c, 1e-5),
            "batch_norm_eval": lambda: batch_norm_eval(xb, c, c, c, c, 1e-5),
            "batch_norm_backward": lambda: batch_norm_backward(xb, xb, c, c, c, True),
            "relu": lambda: relu(x),
            "relu_backward": lambda: relu_backward(x, x),
        })
        for key, fn in jobs.items():
            t0 = time.perf_counter()
            fn()
            _compile_times[f"{key}:{name}"] = time.perf_counter() - t0
    return dict(_compile_times)
