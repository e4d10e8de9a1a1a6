"""Native scipy.signal-style 2-D correlation (``csrc/cpu/signal.cpp``).

fastconv/signal.py validates, normalises and chooses the method; these ops take
C-contiguous float32, float64 or int64 arrays (integers are computed modulo 2**64).
"""
from __future__ import annotations

from ... import _native


def signal_corr2d(x, k, y, offset, boundary, fill):
    """``y[b, m, n] = sum_ij ext(x[b])[m + oh + i, n + ow + j] * k[i, j]`` (direct sum)."""
    _native.signal_corr2d(x, k, y, offset, boundary, fill)
    return y


def signal_extend2d(x, xp, offset, boundary, fill):
    """``xp[b, r, c] = ext(x[b])[r + oh, c + ow]``: the padded image the FFT path uses."""
    _native.signal_extend2d(x, xp, offset, boundary, fill)
    return xp
