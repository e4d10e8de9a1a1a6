"""The ``cuda`` backend's scipy.signal and scipy.ndimage ops: CuPy arrays go to
:mod:`cupyx.scipy.signal` / :mod:`cupyx.scipy.ndimage` (CuPy's own GPU kernels, not
fastconv's; no GPU result of these has been checked on hardware by this project)."""
from __future__ import annotations


def _cupyx(sub: str, name: str):
    try:
        import importlib

        mod = importlib.import_module(f"cupyx.scipy.{sub}")
    except ImportError as exc:
        raise ImportError(
            f"fastconv.{sub}.{name} got a CuPy array, which runs on the GPU through "
            f"cupyx.scipy.{sub}.{name}, but cupyx.scipy.{sub} cannot be imported ({exc}); "
            "install CuPy with SciPy support, or pass NumPy arrays") from exc
    fn = getattr(mod, name, None)
    if fn is None:
        raise ImportError(f"this CuPy has no cupyx.scipy.{sub}.{name}; upgrade CuPy or pass "
                          "NumPy arrays")
    return fn


def signal_call(name, in1, in2, mode, boundary, fillvalue):
    """``cupyx.scipy.signal.<name>(in1, in2, mode, boundary, fillvalue)``."""
    return _cupyx("signal", name)(in1, in2, mode, boundary, fillvalue)


def ndimage_filter(name, args, kwargs):
    """``cupyx.scipy.ndimage.<name>(*args, **kwargs)`` (None-valued keywords dropped)."""
    return _cupyx("ndimage", name)(*args, **{k: v for k, v in kwargs.items() if v is not None})
