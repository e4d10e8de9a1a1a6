"""The ``native`` backend: C++ kernels in fastconv._native (AVX-512 / AVX2 / generic)."""
from __future__ import annotations

from ... import _native
from .conv import (  # noqa: F401
    ALGOS,
    algo_obstacle,
    conv2d_backward_data,
    conv2d_backward_weight,
    conv2d_forward,
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
from .signal import signal_corr2d, signal_extend2d  # noqa: F401
from .ndimage import (  # noqa: F401
    ndimage_correlate1d, ndimage_correlate2d, ndimage_separable2d, ndimage_uniform1d)
from .misc import (  # noqa: F401
    cross_entropy,
    cross_entropy_backward,
    linear,
    linear_backward,
    relu,
    relu_backward,
)

DTYPES = ("float32", "float64")
ARRAY_LIBS = ("numpy",)


def set_num_threads(n: int) -> None:
    _native.set_num_threads(n)


def get_num_threads() -> int:
    return _native.num_threads()


def isa() -> str:
    """The instruction-set path the kernels run on."""
    return _native.active_isa()
