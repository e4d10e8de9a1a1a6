"""Batch normalisation in numba.cuda.

Per-channel statistics use one block per channel: every thread accumulates a strided
slice of the channel, then the block combines the partial sums with a shared-memory
tree reduction (log2(threads) steps). Mean and centred variance are two passes over
the data in the same kernel (no E[x^2] - E[x]^2 cancellation). The elementwise
normalisation and the data gradient are separate one-thread-per-element kernels.
"""
from __future__ import annotations

import math

import numpy as np
from numba import cuda, float32

from ._common import launch1d, device, empty, jit

RED = 128  # threads per reduction block (a power of two)


@device
def _tree_sum(part, t):
    """Sums part[0:RED] into part[0] (all threads of the block must call it)."""
    cuda.syncthreads()
    half = RED // 2
    while half > 0:
        if t < half:
            part[t] += part[t + half]
        cuda.syncthreads()
        half //= 2
    total = part[0]
    cuda.syncthreads()  # everyone has read part[0] before it is reused
    return total


@jit
def _stats(x, mean, var):
    N, C, L = x.shape
    c = cuda.blockIdx.x
    t = cuda.threadIdx.x
    part = cuda.shared.array(RED, dtype=float32)
    m = N * L
    acc = float32(0.0)
    for e in range(t, m, RED):
        acc += x[e // L, c, e % L]
    part[t] = acc
    mu = _tree_sum(part, t) / float32(m)
    acc = float32(0.0)
    for e in range(t, m, RED):
        d = x[e // L, c, e % L] - mu
        acc += d * d
    part[t] = acc
    v = _tree_sum(part, t) / float32(m)
    if t == 0:
        mean[c] = mu
        var[c] = v


@jit
def _normalize(x, mean, var, w, b, eps, y):
    N, C, L = x.shape
    i = cuda.grid(1)
    if i >= N * C * L:
        return
    c = (i // L) % C
    scale = w[c] / math.sqrt(var[c] + float32(eps))
    y[i // (C * L), c, i % L] = (x[i // (C * L), c, i % L] - mean[c]) * scale + b[c]


@jit
def _bwd_reduce(gy, x, mean, invstd, gw, gb):
    N, C, L = x.shape
    c = cuda.blockIdx.x
    t = cuda.threadIdx.x
    part = cuda.shared.array(RED, dtype=float32)
    m = N * L
    mu = mean[c]
    sg = float32(0.0)
    sgx = float32(0.0)
    for e in range(t, m, RED):
        g = gy[e // L, c, e % L]
        sg += g
        sgx += g * (x[e // L, c, e % L] - mu)
    part[t] = sg
    total_g = _tree_sum(part, t)
    part[t] = sgx
    total_gx = _tree_sum(part, t)
    if t == 0:
        gb[c] = total_g
        gw[c] = total_gx * invstd[c]


@jit
def _bwd_data(gy, x, w, mean, invstd, gw, gb, training, gx):
    N, C, L = x.shape
    i = cuda.grid(1)
    if i >= N * C * L:
        return
    c = (i // L) % C
    n = i // (C * L)
    j = i % L
    istd = invstd[c]
    g = gy[n, c, j]
    if training:
        m = float32(N * L)
        g = g - gb[c] / m - (x[n, c, j] - mean[c]) * istd * gw[c] / m
    gx[n, c, j] = w[c] * istd * g


def _flat(a):
    return a.reshape(a.shape[0], a.shape[1], -1)


def batch_norm_train(x, w, b, eps):
    C = x.shape[1]
    y = empty(x.shape, x)
    mean = empty((C,), x)
    var = empty((C,), x)
    xf, yf = _flat(x), _flat(y)
    _stats[C, RED](xf, mean, var)
    _normalize[launch1d(int(np.prod(x.shape)))](xf, mean, var, w, b, float(eps), yf)
    return y, mean, var


def batch_norm_eval(x, mean, var, w, b, eps):
    y = empty(x.shape, x)
    total = int(np.prod(x.shape))
    if total:
        _normalize[launch1d(total)](_flat(x), mean, var, w, b, float(eps), _flat(y))
    return y


def batch_norm_backward(gy, x, w, mean, invstd, training):
    C = x.shape[1]
    gx = empty(x.shape, x)
    gw = empty((C,), x)
    gb = empty((C,), x)
    gyf, xf = _flat(gy), _flat(x)
    _bwd_reduce[C, RED](gyf, xf, mean, invstd, gw, gb)
    total = int(np.prod(x.shape))
    if total:
        _bwd_data[launch1d(total)](gyf, xf, w, mean, invstd, gw, gb, bool(training),
                                      _flat(gx))
    return gx, gw, gb
