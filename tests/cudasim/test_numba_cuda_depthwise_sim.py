"""The numba_cuda depthwise algorithm (algo="depthwise": groups == C, any channel
multiplier) under the CUDA simulator: forward and both gradients against the NumPy
reference and PyTorch on awkward sizes, the shared-memory obstacle, the dispatcher's
refusal of non-depthwise shapes, and the production tile sizes on one tiny shape.

A logic check (indexing, tiling, ragged tile edges, filter chunking), not proof that the
kernels run correctly or fast on a GPU. The simulator runs each GPU thread as a Python
thread, so the shapes are small; conftest.py shrinks the tiles so they still cross
several tiles with partial ones at the edges (test_depthwise_shapes_cross_tile_edges).
"""
from __future__ import annotations

import numpy as np
import pytest

import fastconv as fc
from fastconv.backends import reference as ref
from fastconv._args import conv_spec

try:
    import torch
    import torch.nn.functional as F
except ImportError:  # torch is an optional oracle
    torch = None

from sim_helpers import F32, B, close, rnd  # noqa: E402


def _case(name, N, C, m, H, W, k, **kw):
    kh, kw_ = (k, k) if isinstance(k, int) else k
    return (name, (N, C, H, W), (m * C, 1, kh, kw_), dict(groups=C, **kw))


# Multipliers 1-4 (4 with the simulated KC=3: a full and a partial filter chunk), strides
# 1/2/3 and unequal, dilation, asymmetric "same" padding with an even kernel, a kernel
# larger than the input with padding past its reach, a one-column input, an empty batch.
DW = [
    _case("k3_s1", 2, 2, 1, 5, 4, 3, padding=1),
    _case("k3_s2_m2", 1, 2, 2, 5, 7, 3, stride=2, padding=1),
    _case("m3_dil_s21", 1, 1, 3, 5, 4, 3, stride=(2, 1), padding=(2, 1), dilation=(2, 1)),
    _case("m4_chunks", 1, 2, 4, 4, 5, 3, padding=1),
    _case("same_even", 1, 1, 1, 3, 5, (4, 2), padding="same"),
    _case("k5_gt_input", 1, 1, 2, 3, 4, 5, padding=3),
    _case("s3_rect", 1, 1, 1, 7, 8, (1, 3), stride=3, padding=(0, 1)),
    _case("q1", 1, 1, 2, 5, 1, (3, 1), padding=(1, 0)),
    _case("n0", 0, 2, 2, 5, 5, 3, padding=1),
]
IDS = [c[0] for c in DW]


def _run(x, w, b, gy, kw):
    y = fc.conv2d(x, w, b, **kw, algo="depthwise", backend=B)
    gx, gw, gb = fc.conv2d_backward(gy, x, w, **kw, algo="depthwise", backend=B)
    return y, gx, gw, gb


_RESULTS: dict = {}  # case -> (inputs, kernel outputs): the simulator runs each case once


def _case_results(name, xs, ws, kw):
    if name not in _RESULTS:
        x, w, b = rnd(xs, 1), rnd(ws, 2), rnd(ws[:1], 3)
        gy = rnd(conv_spec(xs, ws, **kw).y_shape, 4)
        _RESULTS[name] = (x, w, b, gy), _run(x, w, b, gy, kw)
    return _RESULTS[name]


def _oracle(oracle, x, w, b, gy, spec, kw):
    if oracle == "reference":
        return (ref.conv2d_forward(x, w, b, spec), ref.conv2d_backward_data(gy, w, spec),
                ref.conv2d_backward_weight(gy, x, spec), gy.astype(np.float64).sum((0, 2, 3)))
    xt = torch.from_numpy(x.astype(np.float64)).requires_grad_()
    wt = torch.from_numpy(w.astype(np.float64)).requires_grad_()
    bt = torch.from_numpy(b.astype(np.float64)).requires_grad_()
    yt = F.conv2d(xt, wt, bt, **kw)
    yt.backward(torch.from_numpy(gy.astype(np.float64)))
    return yt.detach().numpy(), xt.grad.numpy(), wt.grad.numpy(), bt.grad.numpy()


ORACLES = ["reference", pytest.param("torch", marks=[pytest.mark.torch, pytest.mark.skipif(
    torch is None, reason="PyTorch (the oracle) not installed")])]


@pytest.mark.parametrize("oracle", ORACLES)
@pytest.mark.parametrize("name,xs,ws,kw", DW, ids=IDS)
def test_depthwise_forward_backward(name, xs, ws, kw, oracle):
    (x, w, b, gy), got = _case_results(name, xs, ws, kw)
    spec = conv_spec(xs, ws, **kw)
    m, rs, npq = spec.K // spec.C, spec.R * spec.S, max(1, spec.N * spec.P * spec.Q)
    for what, a, e, terms in zip(("forward", "grad_x", "grad_w", "grad_b"), got,
                                 _oracle(oracle, x, w, b, gy, spec, kw),
                                 (rs, m * rs, npq, npq)):
        close(a, e, terms, f"{what} vs {oracle}")


def test_depthwise_no_bias_and_dispatch():
    """No bias; a non-depthwise shape is refused by name with the reason; auto on a
    depthwise shape picks the depthwise kernels, for every pass."""
    from fastconv import _dispatch

    x, w = rnd((1, 2, 5, 6), 1), rnd((4, 1, 3, 3), 2)
    spec = conv_spec(x.shape, w.shape, padding=1, groups=2)
    expected = ref.conv2d_forward(x, w, None, spec)
    close(fc.conv2d(x, w, padding=1, groups=2, algo="depthwise", backend=B), expected, 9)
    close(fc.conv2d(x, w, padding=1, groups=2, backend=B), expected, 9, "auto")
    name, mod = _dispatch.get_backend(B, "numpy", x.dtype, "conv2d")
    for op in _dispatch.CONV_OPS:
        assert "depthwise" in _dispatch.serving_algos(name, mod, op, spec), op
        assert _dispatch.choose_conv_algo(name, mod, op, spec, x.dtype, "auto") == "depthwise", op
    with pytest.raises(ValueError, match="groups == in_channels"):
        fc.conv2d(x, rnd((3, 2, 3, 3), 3), padding=1, algo="depthwise", backend=B)


def test_depthwise_shared_memory_limit(monkeypatch):
    """A window too large for the forward's shared-memory tile is an obstacle the
    dispatcher reports by name; backward-data stages fewer filters per chunk instead."""
    from fastconv.backends.numba_cuda import conv_direct as conv_depthwise  # depthwise runs them

    monkeypatch.setattr(conv_depthwise, "SHMEM_LIMIT", 80)
    x, w = rnd((1, 2, 4, 5), 1), rnd((6, 1, 3, 3), 2)
    kw = dict(padding=1, groups=2)
    spec = conv_spec(x.shape, w.shape, **kw)
    assert conv_depthwise.forward_tile_bytes(spec) > 80
    with pytest.raises(ValueError, match="depthwise kernel's input tile"):
        fc.conv2d(x, w, **kw, algo="depthwise", backend=B)
    gy = rnd(spec.y_shape, 4)
    gx, _, _ = fc.conv2d_backward(gy, x, w, **kw, algo="depthwise", backend=B,
                                  need_weight_grad=False)
    close(gx, ref.conv2d_backward_data(gy, w, spec), 27, "grad_x, one filter per chunk")


def test_depthwise_production_tile_sizes(monkeypatch):
    """The deployed tile sizes (not the shrunk ones) on one tiny shape, forward and
    backward-data (the weight gradient's reduction differs only in its power-of-two
    width, and 128 simulated threads per tap would cost most of this file's time)."""
    from fastconv.backends.numba_cuda import conv_direct as conv_depthwise  # depthwise runs them

    for name, value in (("TX", 16), ("TY", 8), ("KC", 32)):
        monkeypatch.setattr(conv_depthwise, name, value)
    x, w, b = rnd((1, 2, 5, 6), 1), rnd((4, 1, 3, 3), 2), rnd((4,), 3)
    kw = dict(stride=(1, 2), padding=1, groups=2)
    spec = conv_spec(x.shape, w.shape, **kw)
    gy = rnd(spec.y_shape, 4)
    close(fc.conv2d(x, w, b, **kw, algo="depthwise", backend=B),
          ref.conv2d_forward(x, w, b, spec), 9, "forward")
    gx, _, _ = fc.conv2d_backward(gy, x, w, **kw, algo="depthwise", backend=B,
                                  need_weight_grad=False)
    close(gx, ref.conv2d_backward_data(gy, w, spec), 18, "grad_x")


def test_depthwise_shapes_cross_tile_edges():
    """For every tiled axis of the three kernels, some shape above spans more than one
    tile (block) of the simulated size and ends in a partial one."""
    from fastconv.backends.numba_cuda import conv_direct as dwk  # the kernels depthwise runs

    seen: dict = {}
    for _, xs, ws, kw in DW:
        s = conv_spec(xs, ws, **kw)
        if s.N == 0:
            continue
        for key, extent, tile in (
                (("fwd", "q"), s.Q, dwk.TX), (("fwd", "p"), s.P, dwk.TY),
                (("bwd_data", "w"), s.W, dwk.TX), (("bwd_data", "h"), s.H, dwk.TY),
                (("bwd_data", "filter chunks"), s.K // s.C, dwk.KC),
                (("bwd_weight", "n*p*q"), s.N * s.P * s.Q, dwk.RED)):
            seen.setdefault(key, []).append((extent, tile))
    uncovered = [k for k, v in seen.items() if not any(e > t and e % t for e, t in v)]
    assert not uncovered, f"axes never crossing a ragged tile edge: {uncovered}"
