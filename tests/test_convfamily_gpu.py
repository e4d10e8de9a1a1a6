"""conv_transpose2d, conv1d, group_norm and layer_norm on the ``cuda`` backend (CuPy
arrays), forward and backward, against the NumPy reference on host copies. Marked ``gpu``;
skipped with the reason when CuPy or a CUDA device is missing. As in test_cuda_gpu.py,
``FASTCONV_CUDA_EMULATE=1`` runs it without a GPU on the host-emulated kernels (a check of
the array plumbing and launch code, not of the GPU)."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import pytest

import fastconv as fc
from fastconv.backends import cuda as cuda_backend

from conftest import assert_close, randn

pytestmark = pytest.mark.gpu

if os.environ.get("FASTCONV_CUDA_EMULATE") == "1":
    import _hostemu

    if _hostemu.compiler() is None:
        pytest.skip("FASTCONV_CUDA_EMULATE=1 but no host C++ compiler", allow_module_level=True)
    cupy = _hostemu.install(Path(tempfile.mkdtemp(prefix="fastconv_emu_")))
else:
    _ok, _why = cuda_backend.availability()
    if not _ok:
        pytest.skip(f"cuda backend unavailable: {_why}", allow_module_level=True)
    import cupy  # noqa: E402

f32 = np.float32
REF = dict(backend="reference")


def _host(a):
    return None if a is None else cupy.asnumpy(a)


def _dev(*arrays):
    return [cupy.asarray(a) for a in arrays]


@pytest.mark.parametrize("kw", [dict(stride=2, padding=1, output_padding=1),
                                dict(stride=2, padding=1, groups=2),
                                dict(dilation=2, output_padding=1),
                                dict()], ids=["outpad", "groups", "dilated", "plain"])
def test_conv_transpose2d(kw):
    x, w, b = randn((2, 4, 5, 5), f32, 0), randn((4, 3, 4, 4), f32, 1), randn((3 * kw.get(
        "groups", 1),), f32, 2)
    y_r = fc.conv_transpose2d(x, w, b, **kw, **REF)
    gy = randn(y_r.shape, f32, 3)
    gx_r, gw_r, gb_r = fc.conv_transpose2d_backward(gy, x, w, **kw, **REF)
    xd, wd, bd, gyd = _dev(x, w, b, gy)
    y = fc.conv_transpose2d(xd, wd, bd, **kw)
    assert type(y) is type(xd)
    assert_close(_host(y), y_r, f32, 64, "forward")
    gx, gw, gb = fc.conv_transpose2d_backward(gyd, xd, wd, **kw)
    assert_close(_host(gx), gx_r, f32, 64, "grad_x")
    assert_close(_host(gw), gw_r, f32, gy.size, "grad_w")
    assert_close(_host(gb), gb_r, f32, gy.size, "grad_b")


@pytest.mark.parametrize("kw", [dict(padding="same", groups=2), dict(stride=2, dilation=2)],
                         ids=["same_groups", "strided"])
def test_conv1d(kw):
    x, w, b = randn((2, 4, 13), f32, 0), randn((6, 2 if kw.get("groups") else 4, 3), f32, 1), \
        randn((6,), f32, 2)
    y_r = fc.conv1d(x, w, b, **kw, **REF)
    gy = randn(y_r.shape, f32, 3)
    gx_r, gw_r, gb_r = fc.conv1d_backward(gy, x, w, **kw, **REF)
    xd, wd, bd, gyd = _dev(x, w, b, gy)
    assert_close(_host(fc.conv1d(xd, wd, bd, **kw)), y_r, f32, 12, "forward")
    gx, gw, gb = fc.conv1d_backward(gyd, xd, wd, **kw)
    assert_close(_host(gx), gx_r, f32, 18, "grad_x")
    assert_close(_host(gw), gw_r, f32, gy.size, "grad_w")


def test_group_norm_and_layer_norm():
    x, w, b = randn((2, 6, 5, 4), f32, 0), randn((6,), f32, 1), randn((6,), f32, 2)
    gy = randn(x.shape, f32, 3)
    y_r, m_r, i_r = fc.group_norm(x, 3, w, b, return_stats=True, **REF)
    g_r = fc.group_norm_backward(gy, x, 3, w, m_r, i_r, **REF)
    xd, wd, bd, gyd = _dev(x, w, b, gy)
    y, m, i = fc.group_norm(xd, 3, wd, bd, return_stats=True)
    assert_close(_host(y), y_r, f32, 40, "group_norm")
    for got, want, what in zip(fc.group_norm_backward(gyd, xd, 3, wd, m, i), g_r,
                               ("grad_x", "grad_w", "grad_b")):
        assert_close(_host(got), want, f32, 60, f"group_norm {what}")
    lw, lb = randn((5, 4), f32, 4), randn((5, 4), f32, 5)
    y_r, m_r, i_r = fc.layer_norm(x, (5, 4), lw, lb, return_stats=True, **REF)
    g_r = fc.layer_norm_backward(gy, x, (5, 4), lw, m_r, i_r, **REF)
    lwd, lbd = _dev(lw, lb)
    y, m, i = fc.layer_norm(xd, (5, 4), lwd, lbd, return_stats=True)
    assert_close(_host(y), y_r, f32, 20, "layer_norm")
    for got, want, what in zip(fc.layer_norm_backward(gyd, xd, (5, 4), lwd, m, i), g_r,
                               ("grad_x", "grad_w", "grad_b")):
        assert_close(_host(got), want, f32, 60, f"layer_norm {what}")
