"""Hostile and extreme inputs (issue: no crash, hang or silent wrong answer on any input),
each against PyTorch as the oracle, plus the precision setting. Every test here failed
before its fix."""
from __future__ import annotations

import itertools
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import fastconv as fc
from fastconv import _dispatch

from conftest import FASTCONV_PATH, F, requires_torch, torch

CPU_BACKENDS = [b for b in ("native", "numba", "reference") if fc.backends()[b]["available"]]


# ------------------------------------------------------------------- silent wrong answers


@requires_torch
@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_cross_entropy_keeps_log2_next_to_huge_logits(backend, dtype):
    z = np.array([[0, 1e30, 1e30], [3, -1e30, 2]], dtype)
    t = np.array([1, 0])
    zt = torch.from_numpy(z).requires_grad_()
    loss = F.cross_entropy(zt, torch.from_numpy(t))
    loss.backward()
    assert fc.cross_entropy(z, t, backend=backend) == pytest.approx(loss.item(), rel=1e-6)
    np.testing.assert_allclose(fc.cross_entropy_backward(z, t, backend=backend),
                               zt.grad.numpy(), rtol=1e-6, atol=1e-7)


# ------------------------------------------------------------------- crashes and blow-ups


@requires_torch
def test_max_pool_window_far_wider_than_the_input():
    # Was: std::bad_alloc thrown inside an OpenMP region (abort), 7.6 GB and ~20 s.
    # (native only: the reference and numba loops are O(kernel) by design.)
    x = np.random.default_rng(0).random((1, 2, 1, 3)).astype(np.float32)
    kw = dict(kernel_size=(1, 1_200_000_001), padding=(0, 600_000_000))
    y, i = fc.max_pool2d(x, **kw, return_indices=True)
    ty, ti = F.max_pool2d(torch.from_numpy(x), **kw, return_indices=True)
    np.testing.assert_array_equal(y, ty.numpy())
    np.testing.assert_array_equal(i, ti.numpy())


def test_max_pool_huge_window_is_quick_and_small_in_a_subprocess():
    code = textwrap.dedent("""
        import time, numpy as np, fastconv as fc

        def hwm_kb():  # this process's peak resident size so far
            return int([l for l in open("/proc/self/status")
                        if l.startswith("VmHWM:")][0].split()[1])

        x = np.ones((1, 2, 1, 1), 'f4')
        fc.max_pool2d(x, 1)  # load the backend before the baseline
        before, t = hwm_kb(), time.perf_counter()
        y = fc.max_pool2d(x, kernel_size=(1, 1_200_000_001), padding=(0, 600_000_000))
        assert y.shape == (1, 2, 1, 1) and (y == 1).all(), y
        print(time.perf_counter() - t, hwm_kb() - before)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=FASTCONV_PATH,
                         timeout=120, env={**os.environ, "FASTCONV_NUM_THREADS": "2"})
    assert out.returncode == 0, out.stderr
    secs, rss_kb = out.stdout.split()
    # Before the fix: 18-23 s and 7.6 GB for this call.
    assert float(secs) < 2.0 and int(rss_kb) < 500_000, out.stdout


@requires_torch
@pytest.mark.parametrize("seed", range(6))
def test_max_pool_sparse_path_matches_torch(seed):
    # Windows wide enough (padding far beyond the row) for the tap-range path, with
    # NaN, ties and -inf, every geometry checked against torch's values and indices.
    r = np.random.default_rng(seed)
    W = int(r.integers(2, 6))
    x = r.integers(0, 3, (2, 2, 4, W)).astype(np.float32)
    x[0, 0, 1, 0] = np.nan
    x[1, 1, :, :] = -np.inf
    kw_ = int(r.integers(600, 900))
    pw = kw_ // 2  # the most padding pooling allows: windows reach far past the row
    args = dict(kernel_size=(2, kw_), stride=(1, int(r.integers(1, 300))), padding=(1, pw),
                dilation=(1, int(r.integers(1, 2))), ceil_mode=bool(r.integers(0, 2)))
    y, i = fc.max_pool2d(x, **args, return_indices=True)
    ty, ti = F.max_pool2d(torch.from_numpy(x), **args, return_indices=True)
    np.testing.assert_array_equal(y, ty.numpy())
    np.testing.assert_array_equal(i, ti.numpy())


# ------------------------------------------------------------------- half-applied updates


def test_batch_norm_read_only_buffer_leaves_both_unchanged():
    x = np.random.default_rng(1).random((2, 3, 4, 4)).astype(np.float32)
    rm, rv = np.zeros(3, np.float32), np.ones(3, np.float32)
    rv.flags.writeable = False
    with pytest.raises(ValueError, match="running_var must be writable"):
        fc.batch_norm(x, rm, rv, training=True)
    np.testing.assert_array_equal(rm, 0)


# ------------------------------------------------------------------- valid input refused


@requires_torch
@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("training", [False, True])
def test_batch_norm_empty_batch_as_torch(backend, training):
    x = np.ones((0, 3, 4, 4), np.float32)
    rm, rv = np.zeros(3, np.float32), np.ones(3, np.float32)
    trm, trv = torch.zeros(3), torch.ones(3)
    y = fc.batch_norm(x, rm, rv, training=training, backend=backend)
    ty = F.batch_norm(torch.from_numpy(x), trm, trv, training=training)
    assert y.shape == tuple(ty.shape)
    np.testing.assert_array_equal(rm, trm.numpy())
    np.testing.assert_array_equal(rv, trv.numpy())
    gx, gw, gb = fc.batch_norm_backward(x, x, np.ones(3, np.float32), np.zeros(3, np.float32),
                                        np.ones(3, np.float32), training=training,
                                        backend=backend)
    assert gx.shape == x.shape
    np.testing.assert_array_equal(gw, 0)
    np.testing.assert_array_equal(gb, 0)


@requires_torch
@pytest.mark.parametrize("training", [False, True])
def test_batch_norm_layer_empty_batch_as_torch(training):
    # Was NumPy's reshape error from the layer's forward and backward (item 11).
    m, tm = fc.nn.BatchNorm2d(3), torch.nn.BatchNorm2d(3)
    m.train(training)
    tm.train(training)
    x = np.ones((0, 3, 4, 4), np.float32)
    tx = torch.from_numpy(x).requires_grad_()
    ty = tm(tx)
    ty.sum().backward()
    y = m(x)
    gx = m.backward(np.ones_like(y))
    assert y.shape == tuple(ty.shape) and gx.shape == tuple(tx.grad.shape)
    np.testing.assert_array_equal(m.weight.grad, tm.weight.grad.numpy())
    np.testing.assert_array_equal(m.bias.grad, tm.bias.grad.numpy())
    np.testing.assert_array_equal(m.running_mean, tm.running_mean.numpy())
    np.testing.assert_array_equal(m.running_var, tm.running_var.numpy())


@requires_torch
@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("rows,inp,out", [(2, 0, 3), (2, 3, 0), (0, 3, 4), (0, 0, 0)])
def test_linear_with_an_empty_dimension_as_torch(backend, rows, inp, out):
    r = np.random.default_rng(2)
    x = r.random((rows, inp)).astype(np.float32)
    w = r.random((out, inp)).astype(np.float32)
    b = r.random(out).astype(np.float32)
    gy = r.random((rows, out)).astype(np.float32)
    tx, tw, tb = (torch.from_numpy(a).requires_grad_() for a in (x, w, b))
    ty = F.linear(tx, tw, tb)
    ty.backward(torch.from_numpy(gy))
    np.testing.assert_allclose(fc.linear(x, w, b, backend=backend), ty.detach().numpy())
    gx, gw, gb = fc.linear_backward(gy, x, w, backend=backend)
    np.testing.assert_allclose(gx, tx.grad.numpy())
    np.testing.assert_allclose(gw, tw.grad.numpy())
    np.testing.assert_allclose(gb, tb.grad.numpy(), rtol=1e-6)


@requires_torch
def test_out_size_agrees_with_torch_on_every_small_geometry():
    mismatches = []
    for W, K, P, S, d, cm in itertools.product(range(1, 7), range(1, 6), range(3), range(1, 4),
                                               range(1, 4), (False, True)):
        if P > K // 2:
            continue
        try:
            ours = fc.shapes.out_size(W, K, P, S, d, cm)
        except ValueError:
            ours = None
        try:
            theirs = F.max_pool2d(torch.ones(1, 1, 1, W), (1, K), (1, S), (0, P), (1, d),
                                  ceil_mode=cm).shape[-1] or None
        except RuntimeError:
            theirs = None
        if ours != theirs:
            mismatches.append((W, K, P, S, d, cm, ours, theirs))
    assert not mismatches, mismatches[:10]
    assert fc.shapes.out_size(1, 2, 0, 2, 1, True) == 1


# ------------------------------------------------------------------- arguments refused


def test_arguments_that_torch_refuses():
    x = np.ones((2, 3, 4, 4), np.float32)
    rm, rv = np.zeros(3, np.float32), np.ones(3, np.float32)
    with pytest.raises(TypeError, match="count_include_pad must be a bool"):
        fc.avg_pool2d(x, 2, count_include_pad="no")
    with pytest.raises(TypeError, match="eps must be a number"):
        fc.batch_norm(x, rm, rv, eps="1e-5")
    with pytest.raises(ValueError, match="eps must be > 0 when training"):
        fc.batch_norm(x, rm, rv, training=True, eps=0)
    with pytest.raises(TypeError, match="input must be an array, got None"):
        fc.conv2d_backward(np.ones((1, 1, 2, 2), np.float32), None,
                           np.ones((1, 1, 3, 3), np.float32))
    with pytest.raises(TypeError, match="weight must be an array, got None"):
        fc.conv2d(x, None)


@pytest.mark.filterwarnings("ignore:the matrix subclass:PendingDeprecationWarning")
def test_matrix_subclass_is_computed_as_a_plain_array():
    y = fc.relu(np.matrix([[1.0, -2.0]], np.float32))
    assert type(y) is np.ndarray
    np.testing.assert_array_equal(y, [[1.0, 0.0]])


def test_max_pool_backward_refuses_indices_outside_the_plane():
    x = np.random.default_rng(3).random((1, 1, 4, 4)).astype(np.float32)
    y, i = fc.max_pool2d(x, 2, return_indices=True)
    with pytest.raises(ValueError, match="indices must lie in"):
        fc.max_pool2d_backward(np.ones_like(y), i, (1, 1, 2, 2))


# ------------------------------------------------------------------- precision


@pytest.fixture
def precision():
    before = fc.get_precision()
    yield fc.set_precision
    fc.set_precision(before)


def _auto(spec_args, op="conv2d_forward"):
    from fastconv._args import conv_spec

    spec = conv_spec(*spec_args)
    dtype = np.dtype(np.float32)
    name, mod = _dispatch.get_backend("native", "numpy", dtype, op)
    return _dispatch.choose_conv_algo(name, mod, op, spec, dtype, "auto")


def test_precision_highest_keeps_auto_off_f43(precision):
    layer = ((8, 64, 56, 56), (64, 64, 3, 3), 1, 1, 1, 1)
    precision("high")
    assert fc.get_precision() == "high"
    assert _auto(layer) == "winograd_f43"
    precision("highest")
    assert _auto(layer) not in _dispatch.LOW_PRECISION_ALGOS
    # Named explicitly, an algorithm is used as asked whatever the setting.
    x = np.random.default_rng(4).random((1, 16, 8, 8)).astype(np.float32)
    w = np.random.default_rng(5).random((16, 16, 3, 3)).astype(np.float32)
    y = fc.conv2d(x, w, padding=1, algo="winograd_f43")
    ref = fc.conv2d(x.astype(np.float64), w.astype(np.float64), padding=1, backend="reference")
    np.testing.assert_allclose(y, ref, rtol=1e-4, atol=1e-4)


def test_precision_refuses_unknown_values(precision):
    with pytest.raises(ValueError, match="precision must be one of highest, high"):
        precision("medium")
    env = {**os.environ, "FASTCONV_PRECISION": "low"}
    out = subprocess.run([sys.executable, "-c", "import fastconv"], capture_output=True,
                         text=True, env=env, timeout=60, cwd=FASTCONV_PATH)
    assert out.returncode != 0 and "FASTCONV_PRECISION must be one of" in out.stderr
    env["FASTCONV_PRECISION"] = "highest"
    out = subprocess.run([sys.executable, "-c", "import fastconv; print(fastconv.get_precision())"],
                         capture_output=True, text=True, env=env, timeout=60, cwd=FASTCONV_PATH)
    assert out.stdout.strip() == "highest", out.stderr
