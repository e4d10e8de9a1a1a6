"""The native heuristic's batch-size-aware decisions (fastconv/_heuristics.py, issue 13):
1x1 padding-0 layers run on the pointwise kernel (``direct``) for the forward pass and the
data gradient at every batch size; Winograd F(4,3) needs enough 4x4 output tiles over the
batch, so batch 1 and 2 at 7x7 take ``direct``; the dispatcher
reaches these choices through ``algo="auto"``."""
from __future__ import annotations

import numpy as np
import pytest

import fastconv
from fastconv._args import conv_spec
from fastconv._heuristics import pick

EVERY = ["direct", "im2col", "winograd_f23", "winograd_f43"]
TWO = ["direct", "im2col"]
OPS = ["conv2d_forward", "conv2d_backward_data", "conv2d_backward_weight"]


def _spec(n, c, hw, k, r, stride=1, padding=0, groups=1, op="conv2d_forward"):
    return conv_spec((n, c, hw, hw), (k, c // groups, r, r), stride, padding, 1, groups, op=op)


@pytest.mark.parametrize("n", [1, 2, 8, 16])
@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("c,hw,k,stride", [(64, 56, 256, 1), (256, 56, 64, 1),
                                           (1024, 14, 256, 1), (2048, 7, 512, 1),
                                           (256, 56, 512, 2), (1024, 14, 2048, 2)])
def test_pointwise_layers(n, op, c, hw, k, stride):
    s = _spec(n, c, hw, k, 1, stride, op=op)
    want = "im2col" if op == "conv2d_backward_weight" else "direct"
    assert pick("native", op, s, "float32", TWO) == want


@pytest.mark.parametrize("op", ["conv2d_forward", "conv2d_backward_data"])
@pytest.mark.parametrize("n,hw,want", [
    (1, 56, "winograd_f43"), (1, 28, "winograd_f43"), (1, 14, "winograd_f43"),
    (1, 7, "direct"), (2, 14, "winograd_f43"), (2, 7, "direct"), (4, 7, "winograd_f43"),
    (8, 7, "winograd_f43"), (16, 7, "winograd_f43"), (16, 56, "winograd_f43")])
def test_winograd_needs_tiles(op, n, hw, want):
    s = _spec(n, 256, hw, 256, 3, padding=1, op=op)
    assert pick("native", op, s, "float32", EVERY) == want


def test_padded_1x1_is_not_pointwise():
    """A 1x1 layer with padding is no plain GEMM over x: the older 1x1 rule (im2col past
    a shallow reduction) still decides it."""
    s = _spec(8, 256, 14, 256, 1, padding=1)
    assert pick("native", "conv2d_forward", s, "float32", TWO) == "im2col"


@pytest.mark.parametrize("n,hw,r,want", [(1, 7, 3, "direct"), (4, 7, 3, "winograd_f43"),
                                         (1, 14, 1, "direct")])
def test_auto_dispatch_follows_heuristic(n, hw, r, want):
    """The dispatcher's algo="auto" choice (no autotune runner) is the heuristic's, and
    the chosen path computes the right result."""
    from fastconv import _dispatch
    spec = _spec(n, 32, hw, 32, r, padding=r // 2)
    mod = _dispatch.load_backend("native")
    got = _dispatch.choose_conv_algo("native", mod, "conv2d_forward", spec, "float32", "auto")
    assert got == want
    x = np.random.default_rng(0).standard_normal(spec.x_shape).astype(np.float32)
    w = np.random.default_rng(1).standard_normal(spec.w_shape).astype(np.float32)
    y = fastconv.conv2d(x, w, padding=r // 2)
    ref = fastconv.conv2d(x, w, padding=r // 2, backend="reference")
    # relative to the output's scale: Winograd F(4,3) in fp32 carries ~1e-5 of it
    assert np.max(np.abs(y - ref)) <= 1e-4 * np.max(np.abs(ref))
