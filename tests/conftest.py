"""Shared oracle fixtures and the edge-case sweeps every kernel family is tested over.

The oracles are fastconv.backends.reference (NumPy, float64 accumulation) and PyTorch
when it is installed. Nothing here calls the code under test.
"""
from __future__ import annotations

import os

import numpy as np
import pytest

try:
    import torch
    import torch.nn.functional as F

    torch.set_num_threads(2)
except ImportError:  # torch is an optional oracle
    torch = F = None

HAVE_TORCH = torch is not None
requires_torch = pytest.mark.skipif(not HAVE_TORCH, reason="PyTorch (the oracle) not installed")

DTYPES = [np.float32, np.float64]
# Absolute/relative tolerances against a float64 reference, scaled by sqrt(terms) in
# assert_close: float32 convolutions over C*R*S terms carry rounding of ~1e-7 * sqrt(terms).
TOL = {np.dtype(np.float32): 2e-5, np.dtype(np.float64): 1e-12}


def rng(seed=0):
    return np.random.default_rng(seed)


def randn(shape, dtype, seed=0):
    return rng(seed).standard_normal(shape).astype(dtype)


def assert_close(actual, expected, dtype=None, terms=1, what=""):
    """Relative-to-scale closeness: |a - e| <= tol * sqrt(terms) * max(1, max|e|)."""
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != {expected.shape}"
    dtype = np.dtype(dtype or actual.dtype)
    scale = max(1.0, float(np.max(np.abs(expected)))) if expected.size else 1.0
    tol = TOL[dtype] * np.sqrt(max(terms, 1)) * scale
    err = float(np.max(np.abs(actual.astype(np.float64) - expected.astype(np.float64)))) \
        if expected.size else 0.0
    assert err <= tol, f"{what}: max abs error {err:.3g} > tol {tol:.3g}"


def fd_grad(f, a, eps=1e-6):
    """Central finite differences of the scalar f() w.r.t. every element of a (float64;
    each element is perturbed in place and restored, so a may be any view), for the
    gradient checks."""
    g = np.zeros_like(a)
    for i in np.ndindex(a.shape):
        old = a[i]
        a[i] = old + eps
        up = f()
        a[i] = old - eps
        down = f()
        a[i] = old
        g[i] = (up - down) / (2 * eps)
    return g


# (name, x_shape, w_shape, kwargs): awkward sizes on purpose. Shared by every conv test.
CONV_CASES = [
    ("basic3x3", (2, 3, 8, 8), (4, 3, 3, 3), dict(padding=1)),
    ("odd_hw", (1, 5, 7, 9), (6, 5, 3, 3), dict(padding=1)),
    ("1x1", (2, 8, 5, 5), (7, 8, 1, 1), dict()),
    ("1x1_stride2", (2, 8, 7, 7), (4, 8, 1, 1), dict(stride=2)),
    ("kernel_wider_than_input", (1, 2, 3, 3), (3, 2, 5, 5), dict(padding=2)),
    ("dilation_padding", (2, 3, 11, 10), (4, 3, 3, 3), dict(padding=2, dilation=2)),
    ("stride_3_2", (2, 4, 13, 12), (5, 4, 3, 3), dict(stride=(3, 2), padding=1)),
    ("groups2", (2, 6, 9, 9), (4, 3, 3, 3), dict(padding=1, groups=2)),
    ("depthwise_mult2", (2, 4, 8, 8), (8, 1, 3, 3), dict(padding=1, groups=4)),
    ("c1", (3, 1, 10, 10), (2, 1, 5, 5), dict(padding=2)),
    ("c3_stem7x7", (1, 3, 17, 17), (8, 3, 7, 7), dict(stride=2, padding=3)),
    ("same_even_kernel", (1, 3, 9, 8), (2, 3, 4, 2), dict(padding="same")),
    ("same_dilated", (1, 2, 10, 10), (3, 2, 3, 3), dict(padding="same", dilation=3)),
    ("valid", (2, 3, 9, 9), (4, 3, 3, 3), dict(padding="valid")),
    ("asym_pad", (1, 3, 10, 7), (4, 3, 3, 3), dict(padding=(0, 2))),
    ("rect_kernel", (2, 3, 9, 12), (4, 3, 1, 5), dict(padding=(0, 2))),
    ("n1_tile_edges", (1, 16, 13, 11), (17, 16, 3, 3), dict(padding=1)),
    ("wide_channels", (1, 33, 6, 6), (19, 33, 3, 3), dict(padding=1)),
    ("n0", (0, 3, 8, 8), (4, 3, 3, 3), dict(padding=1)),
    ("unbatched", (3, 8, 8), (4, 3, 3, 3), dict(padding=1)),
]
CONV_IDS = [c[0] for c in CONV_CASES]

# Shapes Winograd F(m,3) serves: 3x3, stride 1, dilation 1, groups 1, tiles that do
# not divide the output.
WINOGRAD_CASES = [
    ("w_basic", (2, 3, 8, 8), (4, 3, 3, 3), dict(padding=1)),
    ("w_odd", (1, 5, 7, 9), (6, 5, 3, 3), dict(padding=1)),
    ("w_nopad", (2, 4, 11, 10), (3, 4, 3, 3), dict()),
    ("w_pad2", (1, 3, 5, 6), (2, 3, 3, 3), dict(padding=2)),
    ("w_asym", (1, 3, 10, 7), (4, 3, 3, 3), dict(padding=(0, 1))),
    ("w_tiny", (1, 2, 3, 3), (2, 2, 3, 3), dict()),
    ("w_channels", (2, 33, 9, 13), (17, 33, 3, 3), dict(padding=1)),
    ("w_n0", (0, 3, 8, 8), (4, 3, 3, 3), dict(padding=1)),
    ("w_unbatched", (3, 6, 6), (4, 3, 3, 3), dict(padding=1)),
]
WINOGRAD_IDS = [c[0] for c in WINOGRAD_CASES]


def conv_inputs(x_shape, w_shape, dtype, seed=0, bias=True):
    x = randn(x_shape, dtype, seed)
    w = randn(w_shape, dtype, seed + 1)
    b = randn((w_shape[0],), dtype, seed + 2) if bias else None
    return x, w, b


def torch_conv(x, w, b, **kw):
    """PyTorch forward + gradients for a random grad_out: (y, gy, gx, gw, gb)."""
    xt = torch.from_numpy(np.ascontiguousarray(x)).requires_grad_()
    wt = torch.from_numpy(w).requires_grad_()
    bt = torch.from_numpy(b).requires_grad_() if b is not None else None
    y = F.conv2d(xt, wt, bt, **kw)
    gy = torch.from_numpy(randn(tuple(y.shape), x.dtype, 99))
    y.backward(gy)
    return (y.detach().numpy(), gy.numpy(), xt.grad.numpy(), wt.grad.numpy(),
            bt.grad.numpy() if bt is not None else None)


@pytest.fixture(autouse=True)
def _seed_numpy():
    np.random.seed(0)


def pytest_report_header(config):
    import fastconv

    try:
        from fastconv import _native

        isa = _native.active_isa()
    except ImportError as e:  # pragma: no cover - the build is broken
        isa = f"native module missing ({e})"
    return [f"fastconv {fastconv.__version__}; ISA path {isa}; torch "
            f"{torch.__version__ if HAVE_TORCH else 'not installed'}; "
            f"FASTCONV_ISA={os.environ.get('FASTCONV_ISA', '')}"]


# Shared fixtures of the native kernel tests (parametrise with ``indirect=True``).
@pytest.fixture
def isa(request):
    """Forces one ISA path for the test and restores the previous one."""
    from fastconv import _native

    old = _native.active_isa()
    try:
        _native.set_isa(request.param)
    except ValueError as e:
        pytest.skip(f"ISA path {request.param} not usable here: {e}")
    yield request.param
    _native.set_isa(old)


@pytest.fixture
def threads():
    """Restores the thread count a test changes."""
    import fastconv

    old = fastconv.get_num_threads()
    yield
    fastconv.set_num_threads(old)


# The directory holding the fastconv package these tests import: the source tree for a
# developer build (tools/build_inplace.sh), site-packages for an installed one (CI). Child
# processes get it on PYTHONPATH and as their cwd, so they import the same build (the
# source tree of a clean clone has no compiled extension).
import fastconv as _fastconv  # noqa: E402

FASTCONV_PATH = os.path.dirname(os.path.dirname(os.path.abspath(_fastconv.__file__)))


def random_bn_stats(model, seed=0):
    """Gives every BatchNorm2d of ``model`` non-trivial running statistics and affine
    parameters, so that a folding mistake in a compiled model shows."""
    from fastconv import nn

    rng = np.random.default_rng(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            C = m.num_features
            m.running_mean[...] = 0.1 * rng.standard_normal(C)
            m.running_var[...] = rng.uniform(0.5, 1.5, C)
            m.weight.data[...] = rng.uniform(0.5, 1.5, C)
            m.bias.data[...] = 0.1 * rng.standard_normal(C)
    return model
