"""fastconv.shapes against PyTorch's layer arithmetic and hand-computed values."""
from __future__ import annotations

import numpy as np
import pytest

import fastconv as fc
from fastconv.shapes import conv_flops, conv_params, out_size, receptive_field, same_padding

from conftest import HAVE_TORCH, requires_torch

if HAVE_TORCH:
    import torch
    import torch.nn.functional as F


def test_out_size_known_values():
    assert out_size(224, 7, 3, 2) == 112
    assert out_size(112, 3, 1, 2) == 56
    assert out_size(5, 2, 0, 2, ceil_mode=True) == 3
    assert out_size(6, 3, 1, 2, ceil_mode=True) == 4
    assert out_size(5, 3, 1, 3, ceil_mode=True) == 2   # a 3rd window would start in the padding
    assert out_size(10, 3, 0, 1, dilation=3) == 4


@requires_torch
@pytest.mark.parametrize("W,K,P,S,d,ceil", [(7, 3, 1, 2, 1, True), (6, 3, 1, 2, 1, True),
                                              (9, 2, 1, 3, 1, True), (11, 3, 1, 2, 2, False),
                                              (5, 5, 2, 3, 1, True), (5, 3, 1, 3, 1, True)])
def test_out_size_matches_torch_pooling(W, K, P, S, d, ceil):
    y = F.max_pool2d(torch.zeros(1, 1, W, W), K, S, P, d, ceil_mode=ceil)
    assert out_size(W, K, P, S, d, ceil_mode=ceil) == y.shape[-1]


def test_out_size_errors():
    with pytest.raises(ValueError, match="larger than the padded input"):
        out_size(3, 5)
    with pytest.raises(ValueError, match="S must be >= 1"):
        out_size(3, 1, S=0)
    with pytest.raises(TypeError, match="W must be an int"):
        out_size(3.0, 1)


def test_same_padding_puts_extra_after():
    assert same_padding(3) == (1, 1)
    assert same_padding(4) == (1, 2)
    assert same_padding(3, dilation=2) == (2, 2)


def test_receptive_field_recurrence():
    assert receptive_field([(3, 1), (3, 1)]) == 5
    assert receptive_field([(3, 1, 2)]) == 5
    # ResNet stem: 7x7/2 conv then 3x3/2 pool: 7 + (3-1)*2 = 11
    assert receptive_field([(7, 2), (3, 2)]) == 11
    assert receptive_field([{"kernel": 3, "stride": 2}, {"kernel": 3}]) == 7
    with pytest.raises(TypeError, match=r"layers\[0\]"):
        receptive_field([3])


def test_conv_params_and_flops():
    assert conv_params(64, 128, 3) == 128 * 64 * 9 + 128
    assert conv_params(64, 64, (3, 3), groups=64, bias=False) == 64 * 9
    with pytest.raises(ValueError, match="groups=3"):
        conv_params(64, 64, 3, groups=3)
    # ResNet-18 layer1 conv at batch 1: 2 * 64*56*56 * 64*9
    assert conv_flops((1, 64, 56, 56), (64, 64, 3, 3), padding=1) == 2 * 64 * 56 * 56 * 64 * 9
    assert conv_flops((64, 56, 56), (64, 64, 3, 3), padding=1) == 2 * 64 * 56 * 56 * 64 * 9
    assert fc.conv_flops((2, 4, 8, 8), (4, 1, 3, 3), stride=2, padding=1, groups=4) == \
        2 * 2 * 4 * 4 * 4 * 1 * 9
    assert np.isscalar(conv_flops((1, 3, 224, 224), (64, 3, 7, 7), 2, 3))
