"""fastconv.models: torchvision parameter counts and state_dict names, whole-model float64
finite-difference gradients, and equivalence with the same networks written in PyTorch
(logits, loss, input gradient, every parameter gradient and the running statistics, in
train and eval mode)."""
from __future__ import annotations

import numpy as np
import pytest

from fastconv import models, nn
from conftest import randn, requires_torch, torch
from test_nn_layers import directional_fd_check, entrywise_fd_check

# torchvision's published parameter counts (torchvision.models docs / sum(p.numel())).
TORCHVISION_PARAMS = {"vgg11": 132_863_336, "resnet34": 21_797_672, "alexnet": 61_100_840}


@pytest.mark.parametrize("name", sorted(TORCHVISION_PARAMS))
def test_parameter_counts_match_torchvision(name):
    m = models.get_model(name)
    assert sum(p.size for p in m.parameters()) == TORCHVISION_PARAMS[name]


def test_lenet5_and_resnet20_sizes():
    # LeNet-5: 6*(25+1) + 16*(6*25+1) + 120*(400+1) + 84*(120+1) + 10*(84+1).
    assert sum(p.size for p in models.lenet5().parameters()) == 61_706
    # ResNet-20 with 1x1 projection shortcuts: 0.27M as in He et al. (option B adds the
    # two projections and their batch norms: 16*32 + 64 + 32*64 + 128 = 2,752).
    assert sum(p.size for p in models.resnet20().parameters()) == 272_474


def test_torchvision_state_dict_names():
    keys = list(models.resnet18().state_dict())
    assert keys[:6] == ["conv1.weight", "bn1.weight", "bn1.bias", "bn1.running_mean",
                        "bn1.running_var", "bn1.num_batches_tracked"]
    for k in ("layer1.0.conv1.weight", "layer2.0.downsample.0.weight",
              "layer2.0.downsample.1.running_var", "layer4.1.bn2.bias", "fc.weight", "fc.bias"):
        assert k in keys
    assert "layer1.0.downsample.0.weight" not in keys
    r50 = models.resnet50().state_dict()
    assert r50["layer1.0.downsample.0.weight"].shape == (256, 64, 1, 1)
    assert r50["layer3.2.conv3.weight"].shape == (1024, 256, 1, 1)
    assert r50["fc.weight"].shape == (1000, 2048)
    assert len(r50) == 320  # torchvision's resnet50 state_dict has 320 entries
    vgg = models.vgg11(num_classes=10).state_dict()
    conv_idx = [0, 3, 6, 8, 11, 13, 16, 18]
    assert list(vgg) == ([f"features.{i}.{w}" for i in conv_idx for w in ("weight", "bias")]
                         + [f"classifier.{i}.{w}" for i in (0, 3, 6) for w in ("weight", "bias")])
    cifar = models.resnet18(num_classes=10, stem="cifar").state_dict()
    assert cifar["conv1.weight"].shape == (64, 3, 3, 3) and cifar["fc.weight"].shape == (10, 512)
    with pytest.raises(ValueError, match="stem"):
        models.resnet18(stem="tiny")
    with pytest.raises(ValueError, match="model must be"):
        models.get_model("alexnet9")


def test_pytorch_style_initialisation():
    nn.init.manual_seed(0)
    m = models.resnet50()
    w = m.layer3[0].conv2.weight.data
    fan_out = w.shape[0] * w.shape[2] * w.shape[3]
    assert abs(w.std() - np.sqrt(2.0 / fan_out)) < 0.02 * np.sqrt(2.0 / fan_out)
    assert np.all(m.layer1[0].bn1.weight.data == 1) and np.all(m.layer1[0].bn1.bias.data == 0)
    bound = 1 / np.sqrt(2048)
    assert np.abs(m.fc.weight.data).max() <= bound and m.fc.weight.data.std() > 0.5 * bound / 1.8


# ----------------------------------------------------------------------------- gradients

def _block(kind):
    nn.init.manual_seed(3)
    if kind == "bottleneck":
        ds = nn.Sequential(nn.Conv2d(6, 16, 1, stride=2, bias=False), nn.BatchNorm2d(16))
        return nn.Bottleneck(6, 4, stride=2, downsample=ds).to(np.float64), (2, 6, 6, 6)
    if kind == "bottleneck_identity":
        return nn.Bottleneck(16, 4).to(np.float64), (2, 16, 4, 4)
    return nn.BasicBlock(4, 4).to(np.float64), (2, 4, 5, 5)


@pytest.mark.parametrize("kind", ["bottleneck", "bottleneck_identity", "basic"])
@pytest.mark.parametrize("mode", ["train", "eval"])
def test_residual_block_gradients_fd(kind, mode):
    blk, shape = _block(kind)
    blk.train(mode == "train")
    directional_fd_check(blk, randn(shape, np.float64, 1))


class _Loss(nn.Module):
    """model + cross-entropy as one module, so the FD helper checks d(loss)/d(everything)."""

    def __init__(self, model, target):
        super().__init__()
        self.model = model
        self.crit = nn.CrossEntropyLoss()
        self.target = target

    def forward(self, x):
        return np.array(self.crit(self.model(x), self.target))

    def backward(self, g):
        return self.model.backward(self.crit.backward(float(g)))


def _tiny(name):
    nn.init.manual_seed(4)
    if name == "lenet5":
        return models.lenet5().to(np.float64), (3, 1, 32, 32)
    if name == "resnet18_cifar":
        return models.resnet18(num_classes=5, stem="cifar").to(np.float64), (2, 3, 8, 8)
    if name == "resnet18_imagenet":
        return models.resnet18(num_classes=4).to(np.float64), (2, 3, 32, 32)
    if name == "resnet20":
        return models.resnet20(num_classes=3).to(np.float64), (2, 3, 8, 8)
    raise AssertionError(name)


# Parameters checked entry by entry in the ResNets (LeNet-5: all, along random directions):
# the stem, a block's convolution and batch norm, a downsample projection, the classifier.
# (A random direction through millions of weights at once crosses ReLU kinks.)
_FD_PARAMS = {
    "lenet5": None,
    "resnet18_cifar": ["model.conv1.weight", "model.layer1.0.bn1.weight",
                       "model.layer2.0.downsample.0.weight", "model.layer3.1.conv2.weight",
                       "model.layer4.0.bn2.bias", "model.fc.weight"],
    "resnet20": ["model.conv1.weight", "model.layer1.2.conv1.weight",
                 "model.layer2.0.downsample.1.weight", "model.layer3.0.bn1.bias",
                 "model.fc.bias"],
}


@pytest.mark.parametrize("name,mode", [("lenet5", "train"), ("lenet5", "eval"),
                                       ("resnet18_cifar", "train"), ("resnet18_cifar", "eval"),
                                       ("resnet20", "train"), ("resnet20", "eval")])
def test_whole_model_gradients_fd(name, mode):
    """Training-mode ResNets: the loss's gradient with respect to the input only. Their
    parameter gradients in training mode are checked against PyTorch below (and each block
    type against finite differences above): with two to eight values per channel the
    training-mode batch norms leave channels whose ReLU input is within rounding of 0, so
    a finite difference through a stem weight straddles kinks (off by a few %)."""
    model, shape = _tiny(name)
    model.train(mode == "train")
    target = np.arange(shape[0]) % 3
    x = randn(shape, np.float64, 2)
    if _FD_PARAMS[name] is None:
        directional_fd_check(_Loss(model, target), x, n_dirs=2)
    elif mode == "train":
        # ResNet-18's last stage runs at 1x1 here: its batch norms see 2 values per
        # channel, which makes the loss strongly curved: at eps=1e-6 the central difference
        # is still off by ~1e-4 relative, converging to the analytic value as eps shrinks.
        directional_fd_check(_Loss(model, target), x, n_dirs=2, only=[], eps=1e-7, rtol=1e-5)
    else:
        entrywise_fd_check(_Loss(model, target), x, k=3, only=_FD_PARAMS[name])


# ----------------------------------------------------------------------------- vs PyTorch

def _torch_models():
    tnn = torch.nn

    class TBasic(tnn.Module):
        expansion = 1

        def __init__(self, inplanes, planes, stride=1, downsample=None):
            super().__init__()
            self.conv1 = tnn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
            self.bn1 = tnn.BatchNorm2d(planes)
            self.relu = tnn.ReLU()
            self.conv2 = tnn.Conv2d(planes, planes, 3, 1, 1, bias=False)
            self.bn2 = tnn.BatchNorm2d(planes)
            self.downsample = downsample

        def forward(self, x):
            idt = x if self.downsample is None else self.downsample(x)
            out = self.relu(self.bn1(self.conv1(x)))
            return self.relu(self.bn2(self.conv2(out)) + idt)

    class TBottleneck(tnn.Module):
        expansion = 4

        def __init__(self, inplanes, planes, stride=1, downsample=None):
            super().__init__()
            self.conv1 = tnn.Conv2d(inplanes, planes, 1, bias=False)
            self.bn1 = tnn.BatchNorm2d(planes)
            self.conv2 = tnn.Conv2d(planes, planes, 3, stride, 1, bias=False)
            self.bn2 = tnn.BatchNorm2d(planes)
            self.conv3 = tnn.Conv2d(planes, planes * 4, 1, bias=False)
            self.bn3 = tnn.BatchNorm2d(planes * 4)
            self.relu = tnn.ReLU()
            self.downsample = downsample

        def forward(self, x):
            idt = x if self.downsample is None else self.downsample(x)
            out = self.relu(self.bn1(self.conv1(x)))
            out = self.relu(self.bn2(self.conv2(out)))
            return self.relu(self.bn3(self.conv3(out)) + idt)

    class TResNet(tnn.Module):
        """torchvision.models.resnet.ResNet, with the CIFAR stem option."""

        def __init__(self, block, layers, num_classes, stem, widths=(64, 128, 256, 512)):
            super().__init__()
            self.inplanes = widths[0]
            if stem == "imagenet":
                self.conv1 = tnn.Conv2d(3, widths[0], 7, 2, 3, bias=False)
                self.maxpool = tnn.MaxPool2d(3, 2, 1)
            else:
                self.conv1 = tnn.Conv2d(3, widths[0], 3, 1, 1, bias=False)
                self.maxpool = tnn.Identity()
            self.bn1 = tnn.BatchNorm2d(widths[0])
            self.relu = tnn.ReLU()
            self.stages = []
            for i, (n, w) in enumerate(zip(layers, widths)):
                stride = 1 if i == 0 else 2
                ds = None
                if stride != 1 or self.inplanes != w * block.expansion:
                    ds = tnn.Sequential(tnn.Conv2d(self.inplanes, w * block.expansion, 1,
                                                   stride, bias=False),
                                        tnn.BatchNorm2d(w * block.expansion))
                blocks = [block(self.inplanes, w, stride, ds)]
                self.inplanes = w * block.expansion
                blocks += [block(self.inplanes, w) for _ in range(1, n)]
                setattr(self, f"layer{i + 1}", tnn.Sequential(*blocks))
                self.stages.append(f"layer{i + 1}")
            self.avgpool = tnn.AdaptiveAvgPool2d(1)
            self.fc = tnn.Linear(widths[-1] * block.expansion, num_classes)

        def forward(self, x):
            x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
            for s in self.stages:
                x = getattr(self, s)(x)
            return self.fc(torch.flatten(self.avgpool(x), 1))

    class TLeNet(tnn.Module):
        def __init__(self):
            super().__init__()
            self.features = tnn.Sequential(tnn.Conv2d(1, 6, 5), tnn.ReLU(), tnn.MaxPool2d(2),
                                           tnn.Conv2d(6, 16, 5), tnn.ReLU(), tnn.MaxPool2d(2))
            self.classifier = tnn.Sequential(tnn.Linear(400, 120), tnn.ReLU(),
                                             tnn.Linear(120, 84), tnn.ReLU(),
                                             tnn.Linear(84, 10))

        def forward(self, x):
            return self.classifier(torch.flatten(self.features(x), 1))

    return {
        "lenet5": lambda: TLeNet(),
        "resnet18_cifar": lambda: TResNet(TBasic, [2, 2, 2, 2], 5, "cifar"),
        "resnet18_imagenet": lambda: TResNet(TBasic, [2, 2, 2, 2], 4, "imagenet"),
        "resnet20": lambda: TResNet(TBasic, [3, 3, 3], 3, "cifar", (16, 32, 64)),
        "bottleneck": lambda: TBottleneck(6, 4, 2, tnn.Sequential(
            tnn.Conv2d(6, 16, 1, 2, bias=False), tnn.BatchNorm2d(16))),
    }


def _compare_with_torch(ours, theirs, x, target, mode, loss=True):
    theirs = theirs.double()
    theirs.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in
                            ours.state_dict().items()}, strict=True)
    ours.train(mode == "train")
    theirs.train(mode == "train")
    xt = torch.from_numpy(x.copy()).requires_grad_()
    out_t = theirs(xt)
    out = ours(x)
    np.testing.assert_allclose(out, out_t.detach().numpy(), rtol=1e-9, atol=1e-11)
    if loss:
        crit = nn.CrossEntropyLoss()
        lval = crit(out, target)
        lt = torch.nn.functional.cross_entropy(out_t, torch.from_numpy(target))
        assert abs(lval - lt.item()) < 1e-10
        gx = ours.backward(crit.backward())
        lt.backward()
    else:
        R = randn(out.shape, np.float64, 5)
        gx = ours.backward(R)
        out_t.backward(torch.from_numpy(R))
    np.testing.assert_allclose(gx, xt.grad.numpy(), rtol=1e-7,
                               atol=1e-8 * np.abs(xt.grad.numpy()).max())
    tp = dict(theirs.named_parameters())
    names = [n for n, _ in ours.named_parameters()]
    assert sorted(names) == sorted(tp)
    for n, p in ours.named_parameters():
        # Tolerance relative to the tensor's scale: at 1x1 spatial size with N=2 the last
        # stage's batch norms see two values per channel and amplify rounding.
        ref = tp[n].grad.numpy()
        np.testing.assert_allclose(p.grad, ref, rtol=1e-7, atol=1e-8 * np.abs(ref).max(),
                                   err_msg=n)
    ts = theirs.state_dict()
    for k, v in ours.state_dict().items():
        # Scale-relative: a running mean of nearly-cancelling batch means keeps only the
        # absolute accuracy of the activations it averages.
        ref = ts[k].numpy()
        np.testing.assert_allclose(v, ref, rtol=1e-10,
                                   atol=1e-10 * max(np.abs(ref).max(initial=0), 1e-3), err_msg=k)


@requires_torch
@pytest.mark.torch
@pytest.mark.parametrize("name", ["lenet5", "resnet18_cifar", "resnet18_imagenet", "resnet20"])
@pytest.mark.parametrize("mode", ["train", "eval"])
def test_model_matches_torch(name, mode):
    ours, shape = _tiny(name)
    if mode == "eval":  # non-trivial running statistics: one training-mode pass first
        ours.train()
        ours(randn(shape, np.float64, 9))
    x = randn(shape, np.float64, 6)
    target = np.arange(shape[0]) % 3
    _compare_with_torch(ours, _torch_models()[name](), x, target, mode)


@requires_torch
@pytest.mark.torch
@pytest.mark.parametrize("mode", ["train", "eval"])
def test_bottleneck_matches_torch(mode):
    blk, shape = _block("bottleneck")
    _compare_with_torch(blk, _torch_models()["bottleneck"](), randn(shape, np.float64, 1),
                        None, mode, loss=False)


def test_float32_model_forward_is_float32():
    nn.init.manual_seed(0)
    m = models.resnet20()
    y = m(randn((2, 3, 16, 16), np.float32))
    assert y.dtype == np.float32 and y.shape == (2, 10)
    g = m.backward(np.ones_like(y))
    assert g.dtype == np.float32 and g.shape == (2, 3, 16, 16)
    assert all(p.grad.dtype == np.float32 for p in m.parameters())
