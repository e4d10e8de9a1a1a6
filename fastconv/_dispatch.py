"""The backend registry and the one place where backends and algorithms are chosen.

* Backend: ``backend=None`` means CuPy array -> ``cuda``, anything else -> ``native``.
  A named backend must be available, accept the array library and the dtype.
* Algorithm: a named ``algo`` must be implemented by the backend for that op and able to
  serve the shape (else ``ValueError`` with the reason); ``"auto"`` asks the autotune cache
  (when enabled) and otherwise the per-backend heuristic in :mod:`fastconv._heuristics`.
"""
from __future__ import annotations

import importlib
import os
import threading

from . import _settings
from ._settings import GPU_BACKENDS

BACKENDS = ("native", "numba", "cuda", "numba_cuda", "reference")
# The algorithm table. Every backend, the layers and the dispatcher read these names from
# here; a new Winograd tile is one entry in WINOGRAD_TILES plus its kernels.
# Winograd F(m, 3) algorithms: name -> m, the output tile edge (the input tile is m + 2).
# All of them share one obstacle (ConvSpec.winograd_obstacle) and have no weight-gradient form.
WINOGRAD_TILES = {"winograd_f23": 2, "winograd_f43": 4}
CONV_ALGOS = ("direct", "im2col", *WINOGRAD_TILES, "implicit_gemm", "depthwise")
CONV_OPS = ("conv2d_forward", "conv2d_backward_data", "conv2d_backward_weight")

_MODULES = {
    "native": "fastconv.backends.native",
    "numba": "fastconv.backends.numba_cpu",
    "cuda": "fastconv.backends.cuda",
    "numba_cuda": "fastconv.backends.numba_cuda",
    "reference": "fastconv.backends.reference",
}
_DEFAULT_LIBS = {"cuda": ("cupy",), "numba_cuda": ("cupy", "numba")}
_loaded: dict[str, object] = {}
_failed: dict[str, str] = {}
_lock = threading.Lock()


def load_backend(name: str):
    """The backend module ``name`` (one of BACKENDS), imported once; None when it is
    unavailable, with the reason kept for :func:`backends`. For the command line, the
    benchmarks and the tests, which address a backend module by name."""
    _raise_env_error()
    with _lock:
        if name in _loaded:
            return _loaded[name]
        if name in _failed:
            return None
        try:
            mod = importlib.import_module(_MODULES[name])
            ok, reason = mod.availability() if hasattr(mod, "availability") else (True, "")
        except Exception as e:  # any import-time failure makes the backend unavailable
            ok, reason = False, f"{type(e).__name__}: {e}"
        if ok:
            # set_num_threads may have run before this backend was first needed.
            _settings.apply_threads(mod)
            _loaded[name] = mod
            return mod
        _failed[name] = reason or "unavailable"
        return None


# The former private name, kept for callers outside this package.
_load = load_backend


def backends() -> dict[str, dict]:
    """Every backend with ``{"available": bool, "reason": str}`` (reason empty if available)."""
    out = {}
    for name in BACKENDS:
        mod = load_backend(name)
        out[name] = {"available": mod is not None, "reason": "" if mod else _failed[name]}
    return out


def _check_name(backend) -> str:
    if not isinstance(backend, str) or backend not in BACKENDS:
        raise ValueError(f"backend must be None or one of {', '.join(BACKENDS)}; got {backend!r}")
    return backend


_DTYPE_NAMES: dict = {}


def _dtype_name(dtype) -> str:
    """str(dtype), remembered: NumPy builds the name anew on every call (~15 us), and
    every op resolves its backend with it."""
    try:
        return _DTYPE_NAMES[dtype]
    except (KeyError, TypeError):  # TypeError: an unhashable stand-in for a dtype
        name = str(dtype)
        try:
            _DTYPE_NAMES[dtype] = name
        except TypeError:
            pass
        return name


def get_backend(backend, lib: str, dtype, op: str):
    """Resolves ``backend`` for arrays of library ``lib`` and ``dtype``; returns
    ``(name, module)``."""
    name = ("cuda" if lib == "cupy" else "native") if backend is None else _check_name(backend)
    mod = load_backend(name)
    if mod is None:
        raise RuntimeError(f"{op}: backend {name!r} is not available: {_failed[name]}")
    libs = getattr(mod, "ARRAY_LIBS", None) or _DEFAULT_LIBS.get(name, ("numpy",))
    if callable(libs):
        libs = libs()
    if lib not in libs:
        raise TypeError(f"{op}: backend {name!r} takes {' or '.join(libs)} arrays, got a {lib} "
                        "array")
    dtypes = getattr(mod, "DTYPES", ("float32", "float64"))
    if dtype is not None and _dtype_name(dtype) not in dtypes:
        raise TypeError(f"{op}: backend {name!r} supports {', '.join(dtypes)}, got {dtype}")
    return name, mod


def op_impl(name: str, mod, op: str):
    fn = getattr(mod, op, None)
    if fn is None:
        raise ValueError(f"backend {name!r} does not implement {op}")
    return fn


def implemented_algos(mod, op: str) -> tuple[str, ...]:
    algos = getattr(mod, "ALGOS", {})
    algos = algos() if callable(algos) else algos
    return tuple(algos.get(op, ()))


def serving_algos(name: str, mod, op: str, spec) -> list[str]:
    """Algorithms that the backend implements for ``op`` and that can serve ``spec``."""
    return [a for a in implemented_algos(mod, op) if backend_obstacle(mod, a, op, spec) is None]


def is_winograd(algo: str) -> bool:
    """Whether ``algo`` is one of the Winograd F(m, 3) algorithms of WINOGRAD_TILES."""
    return algo in WINOGRAD_TILES


def winograd_tile(algo: str) -> int:
    """The output tile edge m of the Winograd algorithm ``algo`` (F(m, 3))."""
    return WINOGRAD_TILES[algo]


def obstacle(algo: str, spec) -> str | None:
    """Why ``algo`` cannot serve ``spec`` in principle (None: it can)."""
    if is_winograd(algo):
        return spec.winograd_obstacle()
    if algo == "depthwise":
        return depthwise_obstacle(spec)
    return None


def depthwise_obstacle(spec) -> str | None:
    """Why the depthwise kernels cannot serve ``spec`` (None: groups == C, one input
    channel per group, any channel multiplier K / C)."""
    if spec.groups != spec.C or spec.C // spec.groups != 1:
        return (f"needs groups == in_channels (one input channel per group), got "
                f"groups={spec.groups} with {spec.C} input channels")
    return None


def backend_obstacle(mod, algo: str, op: str, spec) -> str | None:
    """:func:`obstacle`, then the backend's own limits (its ``algo_obstacle``, if any)."""
    why = obstacle(algo, spec)
    own = getattr(mod, "algo_obstacle", None)
    if why is None and own is not None:
        why = own(algo, op, spec)
    return why


def choose_conv_algo(name: str, mod, op: str, spec, dtype, algo, runner=None,
                     prepacked: bool = False) -> str:
    """The algorithm that runs ``op``. ``runner(algo)`` runs the op (for autotuning).
    ``prepacked``: the caller prepares the filters once for the chosen algorithm (the
    backend's ``prepack``, as fastconv.compile does), so per-call filter work is free."""
    if algo != "auto" and algo not in CONV_ALGOS:
        raise ValueError(f"algo must be 'auto' or one of {', '.join(CONV_ALGOS)}; got {algo!r}")
    implemented = implemented_algos(mod, op)
    if algo != "auto":
        if algo in implemented:
            why = backend_obstacle(mod, algo, op, spec)
            if why is not None:
                raise ValueError(f"algo={algo!r} cannot serve this convolution: {why}")
            return algo
        if op == "conv2d_backward_weight" and is_winograd(algo) and \
                obstacle(algo, spec) is None:
            # Winograd has no weight-gradient form here; the weight gradient of a Winograd
            # layer is computed by the heuristic's choice among the other algorithms.
            algo = "auto"
        else:
            raise ValueError(f"algo={algo!r} is not implemented by backend {name!r} for {op} "
                             f"(available: {', '.join(implemented) or 'none'})")
    candidates = serving_algos(name, mod, op, spec)
    if _precision[0] == "highest":
        # Only algorithms as precise as direct summation (fastconv.set_precision).
        candidates = [a for a in candidates if a not in LOW_PRECISION_ALGOS] or candidates
    if not candidates:
        raise ValueError(f"backend {name!r} has no algorithm for {op}")
    if len(candidates) == 1:
        return candidates[0]
    # Imported by name: the package attribute fastconv.autotune may not be bound yet.
    autotune = importlib.import_module("fastconv.autotune")
    if runner is not None and autotune.enabled():
        # Each precision remembers its own winner (the "high" keys stay as before).
        options = {"precision": "highest"} if _precision[0] == "highest" else None
        tuned = autotune.tuned_choice(name, op, spec, dtype, candidates, runner, options)
        if tuned is not None:
            return tuned
    from ._heuristics import pick

    choice = pick(name, op, spec, str(dtype), candidates, prepacked=prepacked)
    assert choice in candidates, (choice, candidates)
    return choice


# ----------------------------------------------------------------------------- precision

PRECISIONS = ("highest", "high")
# Algorithms whose float32 rounding error is well above direct summation's: F(4,3)'s
# transforms (entries up to 8 and 1/24 in its matrices) give ~1e-5 of the output's
# maximum on ResNet shapes against ~1e-6 for direct, im2col and F(2,3) (README.md,
# "Precision"; measured by bench/precision_error.py).
LOW_PRECISION_ALGOS = ("winograd_f43",)
_precision = ["high"]


def set_precision(precision: str) -> None:
    """How precise ``algo="auto"`` must be, as ``torch.set_float32_matmul_precision``.

    ``"highest"``: auto picks only algorithms as precise as direct convolution (direct,
    im2col, Winograd F(2,3); about 1e-6 of the output's maximum in float32).
    ``"high"`` (the default): Winograd F(4,3) is allowed too (about 1e-5), which is
    1.3x-2x faster on 3x3 layers. An algorithm named explicitly (``algo=...``) is always
    used as asked. ``FASTCONV_PRECISION`` sets it at import. Compiled models
    (``fastconv.compile``) choose their algorithms when compiled, under the setting then.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"set_precision: precision must be one of {', '.join(PRECISIONS)}; "
                         f"got {precision!r}")
    _precision[0] = precision


def get_precision() -> str:
    """The current :func:`set_precision` setting."""
    return _precision[0]


def _init_precision_from_env():
    env = os.environ.get("FASTCONV_PRECISION")
    if env:
        try:
            set_precision(env)
        except ValueError:
            raise ValueError(f"FASTCONV_PRECISION must be one of {', '.join(PRECISIONS)}, got "
                             f"{env!r}") from None


_init_precision_from_env()


# ----------------------------------------------------------------------------- threads
# The count itself lives in fastconv._settings (the autotune keys read it too).

MAX_THREADS = _settings.MAX_THREADS
configured_threads = _settings.configured_threads
get_num_threads = _settings.num_threads
_raise_env_error = _settings.raise_env_error


def set_num_threads(n: int) -> None:
    """Number of CPU threads the native and numba kernels use (0: all cores, at most
    ``MAX_THREADS``). Replaces a FASTCONV_NUM_THREADS setting, valid or not."""
    n = _settings.check_thread_count(n, "set_num_threads: n")
    _settings.set_configured_threads(n)
    for name in ("native", "numba"):
        mod = _loaded.get(name)
        if mod is not None:
            _settings.apply_threads(mod, n)
