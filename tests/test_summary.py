"""fastconv.summary: parameter totals against torchvision's published counts, receptive
fields computed by hand, FLOPs against a count taken from PyTorch's own layers, output
shapes, and the `fastconv summary` command."""
from __future__ import annotations

import re

import numpy as np
import pytest

import fastconv
from fastconv import models, nn
from fastconv.cli import main
from fastconv.nn.summary import summary_rows
from conftest import requires_torch, torch


def _total(text, label):
    m = re.search(label + r":\s+([\d,.]+)", text)
    return float(m.group(1).replace(",", ""))


# torchvision's published parameter counts.
@pytest.mark.parametrize("name,count", [("resnet18", 11_689_512), ("resnet50", 25_557_032),
                                        ("vgg16", 138_357_544)])
def test_parameter_totals_match_torchvision(name, count):
    text = fastconv.summary(models.get_model(name), (1, 3, 224, 224))
    assert _total(text, "Total params") == count
    assert _total(text, "Trainable params") == count
    assert "Output shape:         1x1000" in text


def test_lenet5_table_by_hand():
    rows, out = summary_rows(models.lenet5(), (1, 1, 32, 32))
    by = {r.name: r for r in rows}
    assert out == (1, 10)
    assert by["features.0"].out_shape == (1, 6, 28, 28) and by["features.0"].params == 156
    assert by["features.2"].out_shape == (1, 6, 14, 14)
    assert by["features.5"].out_shape == (1, 16, 5, 5)
    # Receptive fields: 5; pool 5+1=6 (jump 2); conv 6+4*2=14; pool 14+1*2=16 (jump 4);
    # flatten over the 5x5 map: 16+4*4=32, the whole image.
    assert [by[n].rf[0] for n in ("features.0", "features.2", "features.3", "features.5",
                                  "flatten", "classifier.4")] == [5, 6, 14, 16, 32, 32]
    # FLOPs: 2 * MACs. conv1: 6*28*28*25; conv2: 16*10*10*150; fcs: 400*120+120*84+84*10.
    assert by["features.0"].flops == 2 * 6 * 28 * 28 * 25
    assert by["features.3"].flops == 2 * 16 * 10 * 10 * 6 * 25
    assert sum(r.flops for r in rows) == 2 * (6 * 28 * 28 * 25 + 16 * 100 * 150 + 400 * 120
                                              + 120 * 84 + 84 * 10)


def test_resnet18_receptive_fields_by_hand():
    rows, _ = summary_rows(models.resnet18(), (1, 3, 224, 224))
    by = {r.name: r for r in rows}
    # conv1 7/2: 7 (jump 2); maxpool 3/2: 7+2*2=11 (jump 4); layer1: four 3x3 convs:
    # 11+4*2*4=43; layer2.0.conv1 stride 2: 43+2*4=51 (jump 8), three more: 51+3*2*8=99;
    # layer3: 99+2*8=115 (jump 16), +3*2*16=211; layer4: 211+2*16=243 (jump 32),
    # +3*2*32=435.
    expect = {"conv1": 7, "maxpool": 11, "layer1.1.conv2": 43, "layer2.0.conv1": 51,
              "layer2.1.conv2": 99, "layer3.0.conv1": 115, "layer3.1.conv2": 211,
              "layer4.0.conv1": 243, "layer4.1.conv2": 435}
    for name, rf in expect.items():
        assert by[name].rf == (rf, rf), name
    assert by["layer4.0.downsample.0"].out_shape == (1, 512, 7, 7)
    # The residual sum takes the larger field of its branches (the 1x1 shortcut's is
    # smaller), so the block output keeps the main path's 435.
    assert by["layer4.1.relu_out"].rf == (435, 435)
    # The 7x7 global pool then spans the whole map: 435 + 6*32 = 627.
    assert by["avgpool"].rf == (627, 627)
    assert fastconv.receptive_field([(7, 2), (3, 2)] + [(3, 1)] * 4) == 43


def test_cifar_stem_and_rectangular_input():
    rows, out = summary_rows(models.resnet18(num_classes=10, stem="cifar"), (8, 3, 32, 40))
    by = {r.name: r for r in rows}
    assert by["conv1"].out_shape == (8, 64, 32, 40)
    assert by["layer4.1.bn2"].out_shape == (8, 512, 4, 5)
    assert out == (8, 10)
    # 3x3 stem: 3; layer1's four 3x3 convs at jump 1: +8; each later stage: a stride-2
    # conv (+2 * jump) then three convs at the doubled jump (+3 * 2 * 2 * jump).
    assert by["layer4.1.conv2"].rf == (3 + 8 + (2 + 12) + (4 + 24) + (8 + 48),) * 2 == (109, 109)


@requires_torch
@pytest.mark.torch
@pytest.mark.parametrize("name,shape", [("resnet18", (1, 3, 224, 224)),
                                        ("lenet5", (3, 1, 32, 32))])
def test_flops_match_a_count_from_torch_layers(name, shape):
    """FLOPs counted independently: the same network built in PyTorch (weights loaded from
    ours), forward hooks on every Conv2d/Linear counting 2 * output elements * fan-in."""
    from test_models import _torch_models

    if name == "lenet5":
        m, t = models.lenet5(), _torch_models()["lenet5"]()
    else:
        m, t = models.resnet18(num_classes=4), _torch_models()["resnet18_imagenet"]()
    t.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in m.state_dict().items()})
    total = [0]

    def hook(mod, inp, out):
        fan_in = (mod.in_channels // mod.groups * mod.kernel_size[0] * mod.kernel_size[1]
                  if isinstance(mod, torch.nn.Conv2d) else mod.in_features)
        total[0] += 2 * out.numel() * fan_in

    for mod in t.modules():
        if isinstance(mod, (torch.nn.Conv2d, torch.nn.Linear)):
            mod.register_forward_hook(hook)
    with torch.no_grad():
        t(torch.zeros(shape))
    rows, _ = summary_rows(m, shape)
    assert sum(r.flops for r in rows) == total[0]


def test_resnet50_flops_known_value():
    # torchvision lists ResNet-50 at 4.09 GFLOPS, counting multiply-adds; ours counts 2 each.
    rows, _ = summary_rows(models.resnet50(), (1, 3, 224, 224))
    assert abs(sum(r.flops for r in rows) / 2 / 1e9 - 4.09) < 0.01
    rows, _ = summary_rows(models.resnet18(), (1, 3, 224, 224))
    assert abs(sum(r.flops for r in rows) / 2 / 1e9 - 1.81) < 0.01


def test_frozen_parameters_counted_as_non_trainable():
    m = models.lenet5()
    m.features.requires_grad_(False)
    text = fastconv.summary(m, (1, 32, 32))
    assert _total(text, "Non-trainable params") == 156 + 2416
    assert _total(text, "Trainable params") == 61_706 - 156 - 2416


def test_shape_errors():
    with pytest.raises(ValueError, match="input channels"):
        fastconv.summary(models.lenet5(), (1, 3, 32, 32))
    with pytest.raises(ValueError, match="kernel"):
        fastconv.summary(models.lenet5(), (1, 1, 8, 8))
    with pytest.raises(ValueError, match="input_shape"):
        fastconv.summary(models.lenet5(), (1, 32, 32, 1, 1))
    with pytest.raises(TypeError, match="Module"):
        fastconv.summary("lenet5", (1, 1, 32, 32))


def test_cli_summary(capsys):
    assert main(["summary", "resnet18", "--input", "1,3,224,224"]) == 0
    out = capsys.readouterr().out
    assert "layer4.1.conv2" in out and "11,689,512" in out and "Receptive field" in out
    assert main(["summary", "lenet5"]) == 0
    out = capsys.readouterr().out
    assert "61,706" in out and "1x10" in out
    with pytest.raises(SystemExit):
        main(["summary", "resnet18", "--input", "1,3,x"])


def test_summary_does_not_touch_arrays():
    m = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU())
    before = m[0].weight.data.copy()
    fastconv.summary(m, (2, 3, 9, 9))
    np.testing.assert_array_equal(m[0].weight.data, before)
    with pytest.raises(RuntimeError, match="without a preceding"):
        m[0].backward(np.zeros((2, 4, 7, 7), np.float32))
