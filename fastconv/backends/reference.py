"""The NumPy reference: plain, obviously-correct implementations of every op.

This is the oracle the optimised kernels are tested against. It accumulates in
float64 and returns the input's dtype. It is written for clarity, not speed: each
convolution is a sum over the R*S kernel taps of one matrix product.
"""
from __future__ import annotations

import numpy as np

from .._args import ConvSpec, PoolSpec, adaptive_windows

ALGOS = {
    "conv2d_forward": ("direct",),
    "conv2d_backward_data": ("direct",),
    "conv2d_backward_weight": ("direct",),
}
DTYPES = ("float32", "float64")

# ----------------------------------------------------------------------------- conv


def _pad(x, spec: ConvSpec):
    (pt, pl), (pb, pr) = spec.padding, spec.padding_end
    return np.pad(x, ((0, 0), (0, 0), (pt, pb), (pl, pr)))


def _tap(spec: ConvSpec, r: int, s: int):
    """Slices of the padded input read by kernel tap (r, s) for every output pixel."""
    (sh, sw), (dh, dw) = spec.stride, spec.dilation
    h0, w0 = r * dh, s * dw
    return (slice(h0, h0 + sh * (spec.P - 1) + 1, sh), slice(w0, w0 + sw * (spec.Q - 1) + 1, sw))


def _groups(spec: ConvSpec):
    Cg, Kg = spec.C // spec.groups, spec.K // spec.groups
    for g in range(spec.groups):
        yield slice(g * Cg, (g + 1) * Cg), slice(g * Kg, (g + 1) * Kg)


def conv2d_forward(x, w, b, spec: ConvSpec, algo="direct"):
    xp = _pad(x.astype(np.float64), spec)
    w64 = w.astype(np.float64)
    y = np.zeros(spec.y_shape, np.float64)
    for cs, ks in _groups(spec):
        for r in range(spec.R):
            for s in range(spec.S):
                hs, ws = _tap(spec, r, s)
                y[:, ks] += np.einsum("nchw,kc->nkhw", xp[:, cs, hs, ws], w64[ks, :, r, s])
    if b is not None:
        y += b.astype(np.float64)[None, :, None, None]
    return y.astype(x.dtype)


def conv2d_backward_data(gy, w, spec: ConvSpec, algo="direct"):
    (pt, pl), (pb, pr) = spec.padding, spec.padding_end
    gxp = np.zeros((spec.N, spec.C, spec.H + pt + pb, spec.W + pl + pr), np.float64)
    gy64, w64 = gy.astype(np.float64), w.astype(np.float64)
    for cs, ks in _groups(spec):
        for r in range(spec.R):
            for s in range(spec.S):
                hs, ws = _tap(spec, r, s)
                gxp[:, cs, hs, ws] += np.einsum("nkhw,kc->nchw", gy64[:, ks], w64[ks, :, r, s])
    return gxp[:, :, pt:pt + spec.H, pl:pl + spec.W].astype(gy.dtype)


def conv2d_backward_weight(gy, x, spec: ConvSpec, algo="direct"):
    xp = _pad(x.astype(np.float64), spec)
    gy64 = gy.astype(np.float64)
    gw = np.zeros(spec.w_shape, np.float64)
    for cs, ks in _groups(spec):
        for r in range(spec.R):
            for s in range(spec.S):
                hs, ws = _tap(spec, r, s)
                gw[ks, :, r, s] = np.einsum("nkhw,nchw->kc", gy64[:, ks], xp[:, cs, hs, ws])
    return gw.astype(gy.dtype)


# ----------------------------------------------------------------------------- pooling


def _window_rows(size, out, k, s, p, d, i):
    """Input index of tap i for each output position, and whether it is inside."""
    pos = np.arange(out) * s - p + i * d
    return pos, (pos >= 0) & (pos < size)


def max_pool2d(x, spec: PoolSpec, want_indices=True):
    N, C, H, W = x.shape
    y = np.full(spec.y_shape, -np.inf, np.float64)
    idx = np.full(spec.y_shape, -1, np.int64)
    x64 = x.astype(np.float64)
    for i in range(spec.kernel[0]):
        hpos, hok = _window_rows(H, spec.P, spec.kernel[0], spec.stride[0], spec.padding[0],
                                 spec.dilation[0], i)
        for j in range(spec.kernel[1]):
            wpos, wok = _window_rows(W, spec.Q, spec.kernel[1], spec.stride[1],
                                     spec.padding[1], spec.dilation[1], j)
            ok = hok[:, None] & wok[None, :]
            val = x64[:, :, np.clip(hpos, 0, H - 1)][:, :, :, np.clip(wpos, 0, W - 1)]
            flat = (np.clip(hpos, 0, H - 1)[:, None] * W + np.clip(wpos, 0, W - 1)[None, :])
            # PyTorch: the first in-window position is the default index; a later value
            # replaces the current one if it is larger or NaN (so the last NaN wins).
            first = ok & (idx < 0)
            idx = np.where(first, flat, idx)
            take = ok & ((val > y) | np.isnan(val))
            y = np.where(take, val, y)
            idx = np.where(take, flat, idx)
    return y.astype(x.dtype), (idx if want_indices else None)


def max_pool2d_backward(gy, idx, x_shape):
    N, C, H, W = x_shape
    gx = np.zeros((N * C, H * W), np.float64)
    rows = np.repeat(np.arange(N * C), gy.shape[2] * gy.shape[3])
    flat, g = idx.reshape(-1), gy.astype(np.float64).reshape(-1)
    real = flat >= 0  # -1: the window held no input element and gets no gradient
    np.add.at(gx, (rows[real], flat[real]), g[real])
    return gx.reshape(x_shape).astype(gy.dtype)


def _avg_windows(spec: PoolSpec, axis: int):
    """Per output index along one axis: clipped [start, end) and the padded extent."""
    size = spec.H if axis == 0 else spec.W
    out = spec.P if axis == 0 else spec.Q
    k, s, p = spec.kernel[axis], spec.stride[axis], spec.padding[axis]
    start = np.arange(out) * s - p
    end = np.minimum(start + k, size + p)
    padded = end - start
    return np.maximum(start, 0), np.minimum(end, size), padded


def _avg_divisors(spec: PoolSpec):
    h0, h1, hp = _avg_windows(spec, 0)
    w0, w1, wp = _avg_windows(spec, 1)
    if spec.divisor_override is not None:
        div = np.full((spec.P, spec.Q), float(spec.divisor_override))
    elif spec.count_include_pad:
        div = (hp[:, None] * wp[None, :]).astype(np.float64)
    else:
        div = ((h1 - h0)[:, None] * (w1 - w0)[None, :]).astype(np.float64)
    return (h0, h1, w0, w1), div


def avg_pool2d(x, spec: PoolSpec):
    (h0, h1, w0, w1), div = _avg_divisors(spec)
    x64 = x.astype(np.float64)
    y = np.zeros(spec.y_shape, np.float64)
    for p in range(spec.P):
        for q in range(spec.Q):
            if h0[p] >= h1[p] or w0[q] >= w1[q]:
                continue  # window entirely in the padding: PyTorch gives 0, not 0/0
            y[:, :, p, q] = x64[:, :, h0[p]:h1[p], w0[q]:w1[q]].sum(axis=(2, 3)) / div[p, q]
    return y.astype(x.dtype)


def avg_pool2d_backward(gy, spec: PoolSpec):
    (h0, h1, w0, w1), div = _avg_divisors(spec)
    gy64 = gy.astype(np.float64)
    gx = np.zeros(spec.x_shape, np.float64)
    for p in range(spec.P):
        for q in range(spec.Q):
            if h0[p] >= h1[p] or w0[q] >= w1[q]:
                continue
            gx[:, :, h0[p]:h1[p], w0[q]:w1[q]] += (gy64[:, :, p, q] / div[p, q])[:, :, None, None]
    return gx.astype(gy.dtype)


def adaptive_avg_pool2d(x, out_hw):
    N, C, H, W = x.shape
    OH, OW = out_hw
    hs, he = adaptive_windows(H, OH)
    ws, we = adaptive_windows(W, OW)
    x64 = x.astype(np.float64)
    y = np.empty((N, C, OH, OW), np.float64)
    for p in range(OH):
        for q in range(OW):
            y[:, :, p, q] = x64[:, :, hs[p]:he[p], ws[q]:we[q]].mean(axis=(2, 3))
    return y.astype(x.dtype)


def adaptive_avg_pool2d_backward(gy, x_shape):
    N, C, H, W = x_shape
    OH, OW = gy.shape[2:]
    hs, he = adaptive_windows(H, OH)
    ws, we = adaptive_windows(W, OW)
    gy64 = gy.astype(np.float64)
    gx = np.zeros(x_shape, np.float64)
    for p in range(OH):
        for q in range(OW):
            area = (he[p] - hs[p]) * (we[q] - ws[q])
            gx[:, :, hs[p]:he[p], ws[q]:we[q]] += (gy64[:, :, p, q] / area)[:, :, None, None]
    return gx.astype(gy.dtype)


# ----------------------------------------------------------------------------- batch norm


def _chan(v):
    return np.asarray(v, np.float64)[None, :, None, None]


def batch_norm_train(x, w, b, eps):
    x64 = x.astype(np.float64)
    mean = x64.mean(axis=(0, 2, 3))
    var = ((x64 - _chan(mean)) ** 2).mean(axis=(0, 2, 3))
    y = (x64 - _chan(mean)) / np.sqrt(_chan(var) + eps) * _chan(w) + _chan(b)
    return y.astype(x.dtype), mean.astype(x.dtype), var.astype(x.dtype)


def batch_norm_eval(x, mean, var, w, b, eps):
    x64 = x.astype(np.float64)
    y = (x64 - _chan(mean)) / np.sqrt(_chan(var) + eps) * _chan(w) + _chan(b)
    return y.astype(x.dtype)


def batch_norm_backward(gy, x, w, mean, invstd, training):
    gy64, x64 = gy.astype(np.float64), x.astype(np.float64)
    xhat = (x64 - _chan(mean)) * _chan(invstd)
    gb = gy64.sum(axis=(0, 2, 3))
    gw = (gy64 * xhat).sum(axis=(0, 2, 3))
    scale = _chan(w) * _chan(invstd)
    if training:
        m = x.shape[0] * x.shape[2] * x.shape[3]
        gx = scale * (gy64 - _chan(gb) / m - xhat * _chan(gw) / m)
    else:
        gx = scale * gy64
    dt = x.dtype
    return gx.astype(dt), gw.astype(dt), gb.astype(dt)


# ----------------------------------------------------------------------------- the rest


def relu(x):
    return np.maximum(x, 0).astype(x.dtype, copy=False)


def relu_backward(gy, y):
    return np.where(y > 0, gy, 0).astype(gy.dtype, copy=False)


def linear(x, w, b):
    y = x.astype(np.float64) @ w.astype(np.float64).T
    if b is not None:
        y += b.astype(np.float64)
    return y.astype(x.dtype)


def linear_backward(gy, x, w):
    gy64 = gy.astype(np.float64).reshape(-1, gy.shape[-1])
    x64 = x.astype(np.float64).reshape(-1, x.shape[-1])
    gx = (gy64 @ w.astype(np.float64)).reshape(x.shape)
    gw = gy64.T @ x64
    gb = gy64.sum(axis=0)
    dt = x.dtype
    return gx.astype(dt), gw.astype(dt), gb.astype(dt)


def _log_softmax(logits):
    z = logits.astype(np.float64)
    z = z - z.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def cross_entropy(logits, target):
    if logits.shape[0] == 0:
        return float("nan")
    lsm = _log_softmax(logits)
    return float(-lsm[np.arange(logits.shape[0]), target].mean())


def cross_entropy_backward(logits, target):
    n = logits.shape[0]
    g = np.exp(_log_softmax(logits))
    g[np.arange(n), target] -= 1.0
    return (g / max(n, 1)).astype(logits.dtype)


# ----------------------------------------------------------------------------- ndimage
# The scipy.ndimage-style passes of fastconv/ndimage.py, summed in float64 in SciPy's
# order (taps in order, zero taps of the n-d correlation skipped).


def _ndi_index(idx, n, mode):
    """Source index of extended coordinates idx on an axis of length n (-1: cval)."""
    idx = np.asarray(idx, dtype=np.int64)
    inside = (idx >= 0) & (idx < n)
    if mode == 0:
        return np.where(inside, idx, -1)
    if mode == 1:
        return np.clip(idx, 0, n - 1)
    if mode == 2:
        r = idx % (2 * n)
        return np.where(r < n, r, 2 * n - 1 - r)
    if mode == 3:
        if n == 1:
            return np.zeros_like(idx)
        r = idx % (2 * n - 2)
        return np.where(r < n, r, 2 * n - 2 - r)
    return idx % n


def _ndi_extend(x, axis, lo, length, mode, cval):
    """x extended along axis: element p is ext(x)[p - lo], p < length."""
    src = _ndi_index(np.arange(length) - lo, x.shape[axis], mode)
    ext = np.take(x, np.maximum(src, 0), axis=axis).astype(np.float64)
    if mode == 0:
        shape = [1] * x.ndim
        shape[axis] = length
        ext = np.where((src < 0).reshape(shape), float(cval), ext)
    return ext


def ndimage_correlate1d(x, y, w, shift, sym, mode, cval):
    n = x.shape[1]
    L = len(w)
    ext = _ndi_extend(x, 1, shift, n + L - 1, mode, cval)
    w = np.asarray(w, dtype=np.float64)
    tap = lambda k: ext[:, k:k + n, :]  # noqa: E731
    if sym and L & 1:
        c = L // 2
        acc = tap(c) * w[c]
        for k in range(c):
            acc = acc + ((tap(k) + tap(2 * c - k)) if sym > 0 else (tap(k) - tap(2 * c - k))) * w[k]
    else:
        acc = tap(L - 1) * w[L - 1]
        for k in range(L - 1):
            acc = acc + tap(k) * w[k]
    y[...] = acc
    return y


def ndimage_uniform1d(x, y, size, shift, mode, cval):
    n = x.shape[1]
    ext = _ndi_extend(x, 1, shift, n + size - 1, mode, cval)
    acc = np.zeros((x.shape[0], x.shape[2]))
    for k in range(size):
        acc = acc + ext[:, k, :]
    out = np.empty((x.shape[0], n, x.shape[2]))
    out[:, 0] = acc / size
    for i in range(1, n):
        acc = acc + (ext[:, i + size - 1, :] - ext[:, i - 1, :])
        out[:, i] = acc / size
    y[...] = out
    return y


def ndimage_separable2d(x, y, wh, ph, ww, pw, h_first, cval):
    """The two passes of the native fused kernel, one after the other, rounded to y's dtype
    in between."""
    def run(src, axis, w, p):
        kind, L, shift, sym, mode = p
        v = src if axis == 1 else src.reshape(-1, src.shape[2], 1)
        out = np.empty(v.shape, y.dtype)
        if kind == 1:
            ndimage_uniform1d(v, out, L, shift, mode, cval)
        else:
            ndimage_correlate1d(v, out, w, shift, sym, mode, cval)
        return out.reshape(src.shape)
    passes = [(1, wh, ph), (2, ww, pw)] if h_first else [(2, ww, pw), (1, wh, ph)]
    t = x
    for axis, w, p in passes:
        t = run(t, axis, w, p)
    y[...] = t
    return y


def ndimage_correlate_nd(x, w, shifts, mode, cval):
    """float64 n-d correlation: y = sum over non-zero w[t] (row-major) of shifted ext(x)."""
    ext = x.astype(np.float64)
    for ax in range(x.ndim):
        ext = _ndi_extend(ext, ax, shifts[ax], x.shape[ax] + w.shape[ax] - 1, mode, cval)
    y = np.zeros(x.shape)
    for t in zip(*np.nonzero(w)):
        y = y + w[t] * ext[tuple(slice(o, o + s) for o, s in zip(t, x.shape))]
    return y


def ndimage_correlate2d(x, y, w, shift, mode, cval):
    y[...] = ndimage_correlate_nd(x, np.pad(np.asarray(w, np.float64)[None], 0),
                                  (0, shift[0], shift[1]), mode, cval)
    return y


# ----------------------------------------------------------------------------- signal
# scipy.signal-style correlation (fastconv/signal.py): boundary 0 fill, 1 wrap, 2 symm.


def _signal_index(idx, n, bnd):
    idx = np.asarray(idx, dtype=np.int64)
    if bnd == 0 or n == 0:
        return np.where((idx >= 0) & (idx < n), idx, -1)
    if bnd == 1:
        return idx % n
    r = idx % (2 * n)
    return np.where(r < n, r, 2 * n - 1 - r)


def signal_extend2d(x, xp, offset, boundary, fill):
    Hp, Wp = xp.shape[1:]
    H, W = x.shape[1:]
    rows = _signal_index(np.arange(Hp) + offset[0], H, boundary)
    cols = _signal_index(np.arange(Wp) + offset[1], W, boundary)
    xp[...] = fill
    rin, cin = rows >= 0, cols >= 0
    if rin.any() and cin.any():
        xp[:, np.flatnonzero(rin)[:, None], np.flatnonzero(cin)[None, :]] = \
            x[:, rows[rin][:, None], cols[cin][None, :]]
    return xp


def signal_corr2d(x, k, y, offset, boundary, fill):
    """Shifted-view sum in the arrays' own type (int64 wraps, as the native kernel)."""
    ho, wo = y.shape[1:]
    kh, kw = k.shape
    xp = np.empty((x.shape[0], ho + kh - 1, wo + kw - 1), x.dtype)
    signal_extend2d(x, xp, offset, boundary, fill)
    acc = np.zeros(y.shape, x.dtype)
    with np.errstate(over="ignore"):
        for i in range(kh):
            for j in range(kw):
                acc += k[i, j] * xp[:, i:i + ho, j:j + wo]
    y[...] = acc
    return y
