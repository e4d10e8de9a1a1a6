"""The implementations ``fastconv bench`` times: every fastconv backend x algorithm, and the
peers a user would otherwise reach for (PyTorch, plain NumPy, SciPy) when installed.

An implementation is an :class:`Impl` whose ``prepare(layer, data, pass_)`` returns either a
zero-argument callable that runs the pass and returns the result as a NumPy array, or a
string saying why it does not apply (it is then reported as skipped, with that note).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

PASSES = ("fwd", "bwd_data", "bwd_weight")
PASS_OPS = {"fwd": "conv2d_forward", "bwd_data": "conv2d_backward_data",
            "bwd_weight": "conv2d_backward_weight"}
# SciPy's correlate2d is one 2-D plane at a time: past this many calls a layer would take
# minutes, which says nothing a user does not already know.
SCIPY_MAX_CALLS = 4096


@dataclass
class Impl:
    """One timed implementation. ``backend``/``algo`` are set for fastconv's own."""

    name: str
    kind: str  # "fastconv" or "peer"
    prepare: Callable
    backend: str | None = None
    algo: str | None = None
    passes: tuple = PASSES
    # Waits for queued device work (GPU backends) so a timing covers the kernel.
    sync: Callable = field(default=lambda: None)
    # Device array -> NumPy, for validation only (never inside the timed region).
    to_host: Callable = field(default=np.asarray)


# ----------------------------------------------------------------------------- fastconv


def _gpu_io(backend):
    """(to_device, to_numpy, sync) for a backend's array library."""
    from .._dispatch import GPU_BACKENDS

    if backend in GPU_BACKENDS:
        import cupy

        return cupy.asarray, cupy.asnumpy, lambda: cupy.cuda.Device().synchronize()
    return (lambda a: a), np.asarray, (lambda: None)


def _fastconv_prepare(backend, algo):
    def prepare(layer, data, pass_):
        import fastconv

        from .. import _dispatch

        mod = _dispatch.load_backend(backend)
        op = PASS_OPS[pass_]
        if algo not in _dispatch.implemented_algos(mod, op):
            return f"{backend} has no {algo} {pass_}"
        why = _dispatch.obstacle(algo, layer.spec())
        if why is not None:
            return why
        dev = _gpu_io(backend)[0]
        x, w, b, gy = (dev(data[k]) for k in ("x", "w", "b", "gy"))
        kw = dict(layer.kwargs, algo=algo, backend=backend)
        if pass_ == "fwd":
            return lambda: fastconv.conv2d(x, w, b, **kw)
        if pass_ == "bwd_data":
            return lambda: fastconv.conv2d_backward(
                gy, x, w, need_weight_grad=False, need_bias_grad=False, **kw)[0]
        return lambda: fastconv.conv2d_backward(
            gy, x, w, need_input_grad=False, need_bias_grad=False, **kw)[1]

    return prepare


def fastconv_impls(backends=None, algos=None, include_reference=False) -> tuple[list, dict]:
    """One Impl per available backend x implemented algorithm, enumerated from the
    dispatcher (so algorithms merged later show up without changes here).

    Returns (impls, skipped) where skipped maps backend -> why it is not benchmarked.
    ``reference`` (the slow NumPy oracle) is only timed when named in ``backends``.
    """
    import fastconv

    from .. import _dispatch

    out, skipped = [], {}
    for name, st in fastconv.backends().items():
        if backends is not None and name not in backends:
            continue
        if name == "reference" and not include_reference and (backends is None):
            continue
        if not st["available"]:
            skipped[name] = st["reason"]
            continue
        mod = _dispatch.load_backend(name)
        found = []
        for op in _dispatch.CONV_OPS:
            for a in _dispatch.implemented_algos(mod, op):
                if a not in found:
                    found.append(a)
        for a in found:
            if algos is not None and a not in algos:
                continue
            passes = tuple(p for p in PASSES if a in _dispatch.implemented_algos(mod, PASS_OPS[p]))
            if name in _dispatch.GPU_BACKENDS:
                _, host, sync = _gpu_io(name)
            else:
                host, sync = np.asarray, (lambda: None)
            out.append(Impl(f"{name}:{a}", "fastconv", _fastconv_prepare(name, a), name, a,
                            passes, sync, host))
    return out, skipped


# ----------------------------------------------------------------------------- peers


def _torch_prepare(layer, data, pass_):
    import torch
    import torch.nn.functional as F

    x, w, b, gy = (torch.from_numpy(data[k]) for k in ("x", "w", "b", "gy"))
    kw = layer.kwargs

    def run(fn):
        def go():
            with torch.no_grad():
                return fn().numpy()
        return go

    if pass_ == "fwd":
        return run(lambda: F.conv2d(x, w, b, **kw))
    if pass_ == "bwd_data":
        return run(lambda: torch.nn.grad.conv2d_input(x.shape, w, gy, **kw))
    return run(lambda: torch.nn.grad.conv2d_weight(x, w.shape, gy, **kw))


def numpy_conv2d(x, w, b, stride, padding, dilation, groups):
    """What a NumPy user writes: a strided window view and one tensordot (groups=1)."""
    from numpy.lib.stride_tricks import sliding_window_view

    (sh, sw), (ph, pw), (dh, dw) = stride, padding, dilation
    K, C, R, S = w.shape
    xp = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw))) if (ph or pw) else x
    win = sliding_window_view(xp, ((R - 1) * dh + 1, (S - 1) * dw + 1), axis=(2, 3))
    win = win[:, :, ::sh, ::sw, ::dh, ::dw]  # (N, C, P, Q, R, S)
    y = np.tensordot(win, w, axes=([1, 4, 5], [1, 2, 3]))  # (N, P, Q, K)
    y = y.transpose(0, 3, 1, 2)
    if b is not None:
        y = y + b[None, :, None, None]
    return np.ascontiguousarray(y)


def _numpy_prepare(layer, data, pass_):
    if pass_ != "fwd":
        return "forward only (a NumPy user has no backward)"
    if layer.groups != 1:
        return "groups != 1 (a plain tensordot cannot express it)"
    x, w, b = data["x"], data["w"], data["b"]
    return lambda: numpy_conv2d(x, w, b, layer.stride, layer.padding, layer.dilation, 1)


def scipy_conv2d(x, w, b, stride, padding):
    """SciPy as a user would: correlate2d per (image, output, input channel), summed."""
    from scipy.signal import correlate2d

    (sh, sw), (ph, pw) = stride, padding
    N, K = x.shape[0], w.shape[0]
    xp = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw))) if (ph or pw) else x
    first = None
    for n in range(N):
        for k in range(K):
            acc = sum(correlate2d(xp[n, c], w[k, c], mode="valid") for c in range(x.shape[1]))
            acc = acc[::sh, ::sw]
            if first is None:
                first = np.empty((N, K) + acc.shape, x.dtype)
            first[n, k] = acc + (b[k] if b is not None else 0)
    return first


def _scipy_prepare(layer, data, pass_):
    if pass_ != "fwd":
        return "forward only"
    if layer.groups != 1 or layer.dilation != (1, 1):
        return "groups/dilation not expressible with correlate2d"
    calls = layer.N * layer.K * layer.C
    if calls > SCIPY_MAX_CALLS:
        return f"skipped: {calls} correlate2d calls (> {SCIPY_MAX_CALLS}); tiny layers only"
    x, w, b = data["x"], data["w"], data["b"]
    return lambda: scipy_conv2d(x, w, b, layer.stride, layer.padding)


def peer_impls(names=None) -> tuple[list, dict]:
    """Installed peers (PyTorch, NumPy, SciPy); returns (impls, skipped-with-reason)."""
    out, skipped = [], {}
    want = set(names) if names is not None else {"torch", "numpy", "scipy"}
    if "torch" in want:
        try:
            import torch  # noqa: F401

            out.append(Impl("torch", "peer", _torch_prepare))
        except ImportError:
            skipped["torch"] = "PyTorch not installed"
    if "numpy" in want:
        out.append(Impl("numpy", "peer", _numpy_prepare, passes=("fwd",)))
    if "scipy" in want:
        try:
            import scipy.signal  # noqa: F401

            out.append(Impl("scipy", "peer", _scipy_prepare, passes=("fwd",)))
        except ImportError:
            skipped["scipy"] = "SciPy not installed"
    return out, skipped
