"""Process-wide settings read by the dispatcher, the autotune cache and the backends: the
version, which backends run on a GPU, and the CPU thread count.

It imports no other fastconv module at load time, so ``fastconv._dispatch`` and
``fastconv.autotune`` both read it without importing each other. The thread count
reaches a backend only through :func:`apply_threads`.
"""
from __future__ import annotations

import os

VERSION = "0.1.0"

GPU_BACKENDS = ("cuda", "numba_cuda")

# The most threads set_num_threads accepts: far above any real core count, far below the
# C int the kernels' OpenMP num_threads() clauses take (2**40 used to wrap there).
MAX_THREADS = 4096
# 0: unset (all cores); else the count from set_num_threads / FASTCONV_NUM_THREADS.
_threads = [0]
# A bad FASTCONV_NUM_THREADS, reported at first use rather than as a traceback at import.
_env_error: list = [None]


def check_thread_count(n, what: str) -> int:
    """``n`` as an int in [0, MAX_THREADS]; ValueError naming ``what`` otherwise."""
    from ._args import is_int

    if not is_int(n):
        raise ValueError(f"{what} must be a non-negative int (0: all cores), got {n!r}")
    n = int(n)
    if n < 0:
        raise ValueError(f"{what} must be a non-negative int (0: all cores), got {n}")
    if n > MAX_THREADS:
        raise ValueError(f"{what} must be at most {MAX_THREADS}, "
                         f"got {n}")
    return n


def raise_env_error() -> None:
    """Raises the ValueError of a bad FASTCONV_NUM_THREADS, if there was one."""
    if _env_error[0] is not None:
        raise ValueError(_env_error[0])


def set_configured_threads(n: int) -> None:
    """Records a checked count (0: all cores); clears a bad FASTCONV_NUM_THREADS."""
    _env_error[0] = None
    _threads[0] = n


def configured_threads() -> int:
    """0 when unset (all cores), else the count from set_num_threads/FASTCONV_NUM_THREADS."""
    raise_env_error()
    return _threads[0]


def num_threads() -> int:
    """The number of CPU threads the kernels use: the configured count, else the native
    runtime's (all cores), else the machine's core count when the extension is missing."""
    raise_env_error()
    if _threads[0] > 0:
        return _threads[0]
    try:
        from . import _native
    except ImportError:
        return os.cpu_count() or 1
    return _native.num_threads()


def apply_threads(mod, n: int | None = None) -> None:
    """Hands a thread count to a backend module that takes one (its ``set_num_threads``).

    ``n`` None: the configured count, and nothing when none is set (a backend loaded later
    keeps its default, all cores). The one place a count reaches a backend."""
    if n is None:
        n = _threads[0]
        if n == 0:
            return
    setter = getattr(mod, "set_num_threads", None)
    if setter is not None:
        setter(n)


def _init_threads_from_env():
    env = os.environ.get("FASTCONV_NUM_THREADS")
    if env is None or not env.strip():
        return
    try:
        value = int(env)
    except ValueError:
        value = env
    try:
        _threads[0] = check_thread_count(value, "FASTCONV_NUM_THREADS")
    except ValueError as e:
        _env_error[0] = str(e)


_init_threads_from_env()
