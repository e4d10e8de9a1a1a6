"""Native scipy.ndimage-style filter passes (``csrc/cpu/ndimage.cpp``).

Arrays arrive from fastconv/ndimage.py C-contiguous, float32 or float64, viewed as
``(outer, n, inner)`` with the filter running along ``n``; ``y`` is written in place.
"""
from __future__ import annotations

from ... import _native


def ndimage_correlate1d(x, y, w, shift, sym, mode, cval):
    """``y[o, i, c] = sum_k w[k] ext(x[o, :, c])[i + k - shift]`` in SciPy's order."""
    _native.ndi_correlate1d(x, y, w, int(shift), int(sym), int(mode), cval)
    return y


def ndimage_uniform1d(x, y, size, shift, mode, cval):
    """SciPy's running-mean uniform filter of ``size`` taps along ``n`` (in float64)."""
    _native.ndi_uniform1d(x, y, int(size), int(shift), int(mode), float(cval))
    return y


def ndimage_correlate2d(x, y, w, shift, mode, cval):
    """2-D correlation of each plane ``x[b]`` with ``w`` (zero taps skipped)."""
    _native.ndi_correlate2d(x, y, w, (int(shift[0]), int(shift[1])), int(mode), cval)
    return y


def ndimage_separable2d(x, y, wh, ph, ww, pw, h_first, cval):
    """Two fused 1-D passes over each plane ``x[b]``: along H with ``wh`` and along W with
    ``ww`` (``ph``/``pw`` = ``(kind, length, shift, sym, mode)``, kind 1 a running mean of
    ``length`` taps), the H pass first when ``h_first``; each as ``ndimage_correlate1d`` /
    ``ndimage_uniform1d`` computes it, the intermediate rounded to ``x``'s dtype."""
    _native.ndi_separable2d(x, y, wh, tuple(int(v) for v in ph), ww,
                            tuple(int(v) for v in pw), bool(h_first), cval)
    return y
