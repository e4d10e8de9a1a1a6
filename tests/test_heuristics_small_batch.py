"""The native heuristic's batch-size-aware decisions (fastconv/_heuristics.py, issue 13):
1x1 padding-0 layers run on ``direct`` (its pointwise kernel) for the forward pass and
the data gradient at every batch size and stride; larger kernels with filters given per
call take the im2col GEMM at batch <= 8 on at most 64 output columns over the batch (one
image at 7x7); Winograd F(4,3) needs enough 4x4
output tiles over the batch (fewer on deep layers or with prepacked filters); the
dispatcher reaches these choices through ``algo="auto"``."""
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
@pytest.mark.parametrize("prepacked", [False, True])
def test_pointwise_layers(n, op, c, hw, k, stride, prepacked):
    s = _spec(n, c, hw, k, 1, stride, op=op)
    want = "im2col" if op == "conv2d_backward_weight" else "direct"
    assert pick("native", op, s, "float32", TWO, prepacked=prepacked) == want


@pytest.mark.parametrize("n,c,hw,k,want", [
    (1, 64, 56, 128, "direct"), (1, 256, 14, 512, "im2col"), (1, 512, 14, 512, "im2col"),
    (2, 256, 14, 512, "direct"), (8, 128, 28, 256, "direct"), (8, 64, 56, 128, "direct"),
    (8, 128, 56, 128, "direct"), (16, 256, 14, 512, "direct"), (1, 3, 224, 64, "direct"),
    (1, 8, 14, 16, "direct")])
def test_strided_3x3_forward_at_small_batch(n, c, hw, k, want):
    """Strided 3x3 forward passes take the GEMM at batch <= 8 with >= 16 channels only on
    at most 64 output columns (one image at 7x7), and only with the filters given per
    call; the stem and thin layers stay direct, and so does every backward pass."""
    r = 7 if c == 3 else 3
    s = _spec(n, c, hw, k, r, 2, padding=r // 2)
    assert pick("native", "conv2d_forward", s, "float32", TWO) == want
    assert pick("native", "conv2d_forward", s, "float32", TWO, prepacked=True) == "direct"
    sb = _spec(n, c, hw, k, r, 2, padding=r // 2, op="conv2d_backward_weight")
    assert pick("native", "conv2d_backward_weight", sb, "float32", TWO) == "direct"


@pytest.mark.parametrize("op", ["conv2d_forward", "conv2d_backward_data"])
@pytest.mark.parametrize("n,hw,want", [
    (1, 56, "winograd_f43"), (1, 28, "winograd_f43"), (1, 14, "direct"),
    (1, 7, "direct"), (2, 14, "winograd_f43"), (2, 7, "direct"), (4, 7, "direct"),
    (8, 7, "winograd_f43"), (16, 7, "winograd_f43"), (16, 56, "winograd_f43")])
def test_winograd_needs_tiles(op, n, hw, want):
    """256 channels: F(4,3) from 32 tiles; below, direct (one image at 7x7: its filter
    blocks are packed inside the tasks), and the data gradient follows."""
    s = _spec(n, 256, hw, 256, 3, padding=1, op=op)
    assert pick("native", op, s, "float32", EVERY) == want


@pytest.mark.parametrize("n,c,hw,stride,want", [
    (1, 512, 7, 1, "direct"), (1, 1024, 4, 1, "im2col"), (2, 256, 5, 1, "im2col"),
    (1, 512, 14, 2, "im2col"), (1, 256, 14, 2, "im2col"), (1, 64, 8, 1, "direct")])
def test_small_plane_forward_with_filters_per_call(n, c, hw, stride, want):
    """At most 64 output columns over the batch, filters given per call: the GEMM, except
    for one image at stride 1 with a reduction of at most 4608 columns (512 channels of
    3x3), where the direct kernel packs each filter block inside its task."""
    s = _spec(n, c, hw, c, 3, stride, padding=1)
    assert pick("native", "conv2d_forward", s, "float32", TWO) == want
    assert pick("native", "conv2d_forward", s, "float32", TWO, prepacked=True) == "direct"


@pytest.mark.parametrize("n,hw,want", [(1, 28, "direct"), (2, 28, "winograd_f43"),
                                       (8, 7, "direct"), (1, 56, "winograd_f43")])
def test_winograd_needs_more_tiles_on_shallower_layers(n, hw, want):
    """Below 256 channels F(4,3) needs 64 tiles: 128@28x28 at batch 1 has 49."""
    s = _spec(n, 128, hw, 128, 3, padding=1)
    assert pick("native", "conv2d_forward", s, "float32", EVERY) == want


def test_padded_1x1_is_not_pointwise():
    """A 1x1 layer with padding is no plain GEMM over x: the older 1x1 rule (im2col past
    a shallow reduction) still decides it."""
    s = _spec(8, 256, 14, 256, 1, padding=1)
    assert pick("native", "conv2d_forward", s, "float32", TWO) == "im2col"


@pytest.mark.parametrize("n,hw,r,want", [(1, 7, 3, "direct"), (2, 5, 3, "im2col"), (4, 7, 3, "direct"),
                                         (16, 7, 3, "winograd_f43"), (1, 14, 1, "direct")])
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


@pytest.mark.parametrize("n,c,hw,want", [(1, 128, 28, "winograd_f43"), (1, 64, 28, "winograd_f43"),
                                         (1, 256, 14, "direct"), (1, 512, 7, "direct"),
                                         (2, 512, 7, "direct"), (8, 512, 7, "winograd_f43")])
def test_prepacked_filters_lower_the_winograd_bar(n, c, hw, want):
    """With the filter transform done once (fastconv.compile), F(4,3) pays from 32 tiles
    on any layer with >= 16 channels, and below that the direct kernel's prepacked panels
    beat the GEMM; the data gradient is never prepacked."""
    s = _spec(n, c, hw, c, 3, padding=1)
    assert pick("native", "conv2d_forward", s, "float32", EVERY, prepacked=True) == want
    if want == "winograd_f43" and c < 256:
        assert pick("native", "conv2d_forward", s, "float32", EVERY) != want
    sb = _spec(n, c, hw, c, 3, padding=1, op="conv2d_backward_data")
    assert pick("native", "conv2d_backward_data", sb, "float32", EVERY, prepacked=True) == \
        pick("native", "conv2d_backward_data", sb, "float32", EVERY)


def test_compile_prepacks_winograd_where_eager_does_not():
    """A compiled 128-channel 3x3 layer at 28x28, batch 1, runs F(4,3) on prepacked
    filters; the eager call on the same layer runs direct; both give the same output."""
    import fastconv.nn as nn
    conv = nn.Conv2d(128, 128, 3, padding=1)
    conv.eval()
    x = np.random.default_rng(2).standard_normal((1, 128, 28, 28)).astype(np.float32)
    eng = fastconv.compile(conv)
    y = eng(x)
    assert "winograd_f43" in eng.describe()
    ref = fastconv.conv2d(x, conv.weight.data if hasattr(conv.weight, "data") else conv.weight,
                          conv.bias.data if hasattr(conv.bias, "data") else conv.bias,
                          padding=1, backend="reference")
    assert np.max(np.abs(y - ref)) <= 1e-4 * np.max(np.abs(ref))
