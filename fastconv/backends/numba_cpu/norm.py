"""Batch normalisation (training / inference forward, backward) in Numba.

Statistics are per channel, so the kernels parallelise over channels and each thread
reduces its channel in float64 (two passes: mean, then centred variance, which avoids
the cancellation of E[x^2] - E[x]^2). Inputs arrive as (N, C, L, 1) views.
"""
from __future__ import annotations

import math

import numpy as np
from numba import prange

from ._common import kernel


@kernel
def _train(x, w, b, eps, y, mean_out, var_out):
    N, C, L = x.shape
    m = N * L
    for c in prange(C):
        s = 0.0
        for n in range(N):
            for i in range(L):
                s += x[n, c, i]
        mean = s / m
        v = 0.0
        for n in range(N):
            for i in range(L):
                d = x[n, c, i] - mean
                v += d * d
        var = v / m
        scale = w[c] / math.sqrt(var + eps)
        shift = b[c] - mean * scale
        for n in range(N):
            for i in range(L):
                y[n, c, i] = x[n, c, i] * scale + shift
        mean_out[c] = mean
        var_out[c] = var


@kernel
def _eval(x, mean, var, w, b, eps, y):
    N, C, L = x.shape
    for nc in prange(N * C):
        n = nc // C
        c = nc % C
        scale = w[c] / math.sqrt(var[c] + eps)
        shift = b[c] - mean[c] * scale
        for i in range(L):
            y[n, c, i] = x[n, c, i] * scale + shift


@kernel
def _backward(gy, x, w, mean, invstd, training, gx, gw, gb):
    N, C, L = x.shape
    m = N * L
    for c in prange(C):
        mu = mean[c]
        istd = invstd[c]
        sg = 0.0
        sgx = 0.0
        for n in range(N):
            for i in range(L):
                g = gy[n, c, i]
                sg += g
                sgx += g * (x[n, c, i] - mu)
        sgx *= istd
        gb[c] = sg
        gw[c] = sgx
        scale = w[c] * istd
        if training:
            a = sg / m
            bcoef = sgx / m * istd
            for n in range(N):
                for i in range(L):
                    gx[n, c, i] = scale * (gy[n, c, i] - a - (x[n, c, i] - mu) * bcoef)
        else:
            for n in range(N):
                for i in range(L):
                    gx[n, c, i] = scale * gy[n, c, i]


def _flat(a):
    return a.reshape(a.shape[0], a.shape[1], -1)


def batch_norm_train(x, w, b, eps):
    """-> (y, batch mean, biased batch variance)."""
    C = x.shape[1]
    y = np.empty_like(x)
    mean = np.empty(C, x.dtype)
    var = np.empty(C, x.dtype)
    _train(_flat(x), w, b, float(eps), _flat(y), mean, var)
    return y, mean, var


def batch_norm_eval(x, mean, var, w, b, eps):
    """y = (x - running_mean) / sqrt(running_var + eps) * w + b."""
    y = np.empty_like(x)
    _eval(_flat(x), mean, var, w, b, float(eps), _flat(y))
    return y


def batch_norm_backward(gy, x, w, mean, invstd, training):
    """-> (grad_x, grad_w, grad_b); ``training=False`` treats the statistics as constants."""
    C = x.shape[1]
    gx = np.empty_like(x)
    gw = np.empty(C, x.dtype)
    gb = np.empty(C, x.dtype)
    _backward(_flat(gy), _flat(x), w, mean, invstd, bool(training), _flat(gx), gw, gb)
    return gx, gw, gb
