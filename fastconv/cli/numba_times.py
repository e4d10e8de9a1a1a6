"""First-call times of the ``numba`` backend's kernel families, for ``fastconv info
--compile-times``: command-line work, kept out of the backend (which sits below the
argument checks this builds its specs with)."""
from __future__ import annotations

import time

import numpy as np

from .._args import conv_spec, pool_spec

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
    from fastconv.backends import numba_cpu as nb
    from fastconv.backends.numba_cpu._common import start_runtime

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
        for algo in nb.ALGOS["conv2d_forward"]:
            args = dw_args if algo == "depthwise" else dense_args
            jobs[f"conv2d_forward[{algo}]"] = (
                lambda a=algo, args=args: nb.conv2d_forward(*args["fwd"], a))
        for algo in nb.ALGOS["conv2d_backward_data"]:
            def bwd(a=algo):
                if a == "depthwise":
                    nb.conv2d_backward_data(*dw_args["bwd"], a)
                    return
                nb.conv2d_backward_data(gy, w, spec, a)
                if not nb.is_winograd(a):
                    nb.conv2d_backward_data(gy2, w, spec2, a)
            jobs[f"conv2d_backward_data[{algo}]"] = bwd
        for algo in nb.ALGOS["conv2d_backward_weight"]:
            args = dw_args if algo == "depthwise" else dense_args
            jobs[f"conv2d_backward_weight[{algo}]"] = (
                lambda a=algo, args=args: nb.conv2d_backward_weight(*args["wgt"], a))
        t0 = time.perf_counter()
        y, idx = nb.max_pool2d(x, pspec, True)  # the backward jobs need its outputs
        _compile_times[f"max_pool2d:{name}"] = time.perf_counter() - t0
        jobs.update({
            "max_pool2d_backward": lambda: nb.max_pool2d_backward(y, idx, x.shape),
            "avg_pool2d": lambda: nb.avg_pool2d(x, pspec),
            "avg_pool2d_backward": lambda: nb.avg_pool2d_backward(y, pspec),
            "adaptive_avg_pool2d": lambda: nb.adaptive_avg_pool2d(x, (4, 5)),
            "adaptive_avg_pool2d_backward": (
                lambda: nb.adaptive_avg_pool2d_backward(np.ones((1, 2, 4, 5), dt), x.shape)),
            "batch_norm_train": lambda: nb.batch_norm_train(xb, c, c, 1e-5),
            "batch_norm_eval": lambda: nb.batch_norm_eval(xb, c, c, c, c, 1e-5),
            "batch_norm_backward": lambda: nb.batch_norm_backward(xb, xb, c, c, c, True),
            "relu": lambda: nb.relu(x),
            "relu_backward": lambda: nb.relu_backward(x, x),
        })
        for key, fn in jobs.items():
            t0 = time.perf_counter()
            fn()
            _compile_times[f"{key}:{name}"] = time.perf_counter() - t0
    return dict(_compile_times)
