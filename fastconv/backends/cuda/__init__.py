"""The ``cuda`` backend: hand-written CUDA C++ kernels (csrc/cuda) compiled at run time by
NVRTC through CuPy and cached per device (CuPy's on-disk kernel cache).

Importing this package never needs CuPy or a GPU; :func:`availability` says whether the
backend can run and why not. Conv algorithms: ``direct``, ``implicit_gemm``, ``im2col``
(+ our tiled SGEMM), ``winograd_f23`` and ``winograd_f43`` (forward and input gradient;
the weight gradient has no Winograd form). float32 only. ``linear`` and ``cross_entropy``
use CuPy operations (``cupy.matmul``), not our kernels.
"""
from __future__ import annotations

from ..._dispatch import WINOGRAD_TILES
from ._source import source_dir

ALGOS = {
    "conv2d_forward": ("direct", "implicit_gemm", "im2col", *WINOGRAD_TILES, "depthwise"),
    "conv2d_backward_data": ("direct", "implicit_gemm", "im2col", *WINOGRAD_TILES, "depthwise"),
    "conv2d_backward_weight": ("direct", "implicit_gemm", "im2col", "depthwise"),
}
DTYPES = ("float32",)
ARRAY_LIBS = ("cupy",)

_OPS = {
    "conv": ("conv2d_forward", "conv2d_backward_data", "conv2d_backward_weight"),
    "pool": ("max_pool2d", "max_pool2d_backward", "avg_pool2d", "avg_pool2d_backward",
             "adaptive_avg_pool2d", "adaptive_avg_pool2d_backward"),
    "norm": ("batch_norm_train", "batch_norm_eval", "batch_norm_backward"),
    "misc": ("relu", "relu_backward", "linear", "linear_backward", "cross_entropy",
             "cross_entropy_backward"),
    "signal": ("signal_call", "ndimage_filter"),
}


def availability() -> tuple[bool, str]:
    """(True, "") when CuPy, a CUDA driver and device, NVRTC and the kernel sources are all
    present; otherwise (False, the first thing missing)."""
    try:
        import cupy
    except Exception as e:  # ImportError, or a CuPy build that fails to load its libraries
        return False, (f"CuPy is not importable ({type(e).__name__}: {e}); install "
                       "fastconv[gpu] (cupy-cuda12x)")
    try:
        n = cupy.cuda.runtime.getDeviceCount()
    except Exception as e:
        return False, f"no usable CUDA driver or device ({type(e).__name__}: {e})"
    if n < 1:
        return False, "CuPy found no CUDA device"
    try:
        cupy.cuda.nvrtc.getVersion()
    except Exception as e:
        return False, f"NVRTC (run-time compiler) is not usable ({type(e).__name__}: {e})"
    if source_dir() is None:
        return False, "the CUDA kernel sources (fastconv/cuda_src or csrc/cuda) are missing"
    return True, ""


def __getattr__(name):
    # Ops load on first use so that importing the package needs no CuPy.
    for mod, names in _OPS.items():
        if name in names:
            import importlib

            fn = getattr(importlib.import_module(f"{__name__}.{mod}"), name)
            globals()[name] = fn
            return fn
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
