"""The ``numba_cuda`` backend: numba.cuda kernels on GPU arrays (float32).

Takes CuPy arrays or anything with ``__cuda_array_interface__`` and returns outputs in
the same library. Under the CUDA simulator (``NUMBA_ENABLE_CUDASIM=1``) it also takes
NumPy arrays, which is how the kernels' logic is tested without a GPU; the simulator
checks indexing and synchronisation logic, not performance or real-hardware races.

Convolution: ``direct`` (shared-memory tiles), ``implicit_gemm`` (tiled GEMM with
operands gathered on the fly) for all three ops, ``winograd_f23`` for forward and
backward-data, and ``depthwise`` (groups == C, any channel multiplier) for all three. Pooling, batch norm (shared-memory tree reductions) and ReLU too.
``linear`` and ``cross_entropy`` are not offered here.
"""
from __future__ import annotations

from . import conv_direct, conv_implicit_gemm, conv_winograd
from ._common import zeros
from .misc import relu, relu_backward  # noqa: F401
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
    "conv2d_forward": ("direct", "implicit_gemm", "winograd_f23", "depthwise"),
    "conv2d_backward_data": ("direct", "implicit_gemm", "winograd_f23", "depthwise"),
    "conv2d_backward_weight": ("direct", "implicit_gemm", "depthwise"),
}
DTYPES = ("float32",)


def simulated() -> bool:
    """True when numba runs CUDA kernels in its Python simulator."""
    import numba

    return bool(numba.config.ENABLE_CUDASIM)


def ARRAY_LIBS():  # noqa: N802 - the dispatcher reads this name (a tuple or a callable)
    """CuPy and numba device arrays; NumPy too under the simulator."""
    return ("cupy", "numba", "numpy") if simulated() else ("cupy", "numba")


def availability():
    """(ok, reason): needs a usable CUDA device, or the simulator."""
    try:
        from numba import cuda
    except Exception as e:  # pragma: no cover - numba without its CUDA target
        return False, f"numba.cuda cannot be imported: {type(e).__name__}: {e}"
    if simulated():
        return True, ""
    if not cuda.is_available():
        return False, ("no usable CUDA device/driver for numba.cuda "
                       "(set NUMBA_ENABLE_CUDASIM=1 to run the kernels in the simulator)")
    return True, ""


# depthwise (groups == C) is the direct kernels with one input channel per group.
_KERNELS = {"direct": conv_direct, "implicit_gemm": conv_implicit_gemm,
            "depthwise": conv_direct}
_TILED_FORWARD = {"direct": conv_direct, "depthwise": conv_direct}


def algo_obstacle(algo: str, op: str, spec) -> str | None:
    """Why this backend's ``algo`` cannot serve ``op`` on ``spec`` (None: it can); the
    dispatcher reports it for a named algorithm and leaves the algorithm out of auto."""
    kern = _TILED_FORWARD.get(algo)
    if kern is not None and op == "conv2d_forward" and \
            kern.forward_tile_bytes(spec) > kern.SHMEM_LIMIT:
        # A huge dilated/strided window does not fit one block's shared memory (the
        # implicit GEMM streams the same sum through fixed-size tiles instead).
        return (f"the {algo} kernel's input tile ({kern.forward_tile_bytes(spec)} "
                f"bytes) exceeds one block's shared memory ({kern.SHMEM_LIMIT} bytes); "
                "use implicit_gemm")
    return None


def conv2d_forward(x, w, b, spec, algo):
    """Convolution forward with the named algorithm (validated float32 arrays)."""
    if b is None:
        b = zeros((spec.K,), x)
    if algo == "winograd_f23":
        return conv_winograd.forward(x, w, b, spec)
    if algo in _KERNELS:
        return _KERNELS[algo].forward(x, w, b, spec)
    raise ValueError(f"numba_cuda backend: unknown conv2d_forward algo {algo!r}")


def conv2d_backward_data(gy, w, spec, algo):
    """grad_x with the named algorithm."""
    if algo == "winograd_f23":
        return conv_winograd.backward_data(gy, w, spec, zeros((spec.C,), gy))
    if algo in _KERNELS:
        return _KERNELS[algo].backward_data(gy, w, spec)
    raise ValueError(f"numba_cuda backend: unknown conv2d_backward_data algo {algo!r}")


def conv2d_backward_weight(gy, x, spec, algo):
    """grad_w with the named algorithm (direct, implicit_gemm or depthwise)."""
    if algo in _KERNELS:
        return _KERNELS[algo].backward_weight(gy, x, spec)
    raise ValueError(f"numba_cuda backend: unknown conv2d_backward_weight algo {algo!r}")
