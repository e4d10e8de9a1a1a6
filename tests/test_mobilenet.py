"""fastconv.models.mobilenet_v2 and the ReLU6 / LeakyReLU layers: torchvision's layout
(state_dict keys and shapes, parameter count), eval logits and train-mode gradients
against a torch twin built from torch.nn with the same keys (torchvision is not a
dependency), a training step that lowers the loss, and the activations' forward,
backward and NaN semantics against torch."""
from __future__ import annotations

import numpy as np
import pytest

import fastconv
import fastconv.io
import fastconv.optim
from fastconv import nn
from fastconv.models import mobilenet_v2
from conftest import HAVE_TORCH, assert_close, randn, random_bn_stats, requires_torch

if HAVE_TORCH:
    import torch
    from torch import nn as tnn


# ------------------------------------------------------------------ the torch twin
def _twin(num_classes=1000):
    """torchvision's MobileNetV2 (width 1.0) rebuilt from torch.nn, same module names."""

    def cbr(i, o, k=3, s=1, g=1):
        return tnn.Sequential(tnn.Conv2d(i, o, k, s, (k - 1) // 2, groups=g, bias=False),
                              tnn.BatchNorm2d(o), tnn.ReLU6(inplace=True))

    class IR(tnn.Module):
        def __init__(self, i, o, s, t):
            super().__init__()
            h = int(round(i * t))
            self.res = s == 1 and i == o
            layers = [cbr(i, h, 1)] if t != 1 else []
            layers += [cbr(h, h, s=s, g=h), tnn.Conv2d(h, o, 1, bias=False), tnn.BatchNorm2d(o)]
            self.conv = tnn.Sequential(*layers)

        def forward(self, x):
            return x + self.conv(x) if self.res else self.conv(x)

    class Twin(tnn.Module):
        def __init__(self):
            super().__init__()
            feats = [cbr(3, 32, s=2)]
            c_in = 32
            for t, c, n, s in ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2),
                               (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)):
                for i in range(n):
                    feats.append(IR(c_in, c, s if i == 0 else 1, t))
                    c_in = c
            feats.append(cbr(c_in, 1280, 1))
            self.features = tnn.Sequential(*feats)
            self.classifier = tnn.Sequential(tnn.Dropout(0.2), tnn.Linear(1280, num_classes))

        def forward(self, x):
            x = torch.nn.functional.adaptive_avg_pool2d(self.features(x), 1)
            return self.classifier(torch.flatten(x, 1))

    return Twin()


def test_parameter_count_and_keys():
    m = mobilenet_v2()
    n = sum(p.data.size for p in m.parameters())
    assert n == 3_504_872
    sd = m.state_dict()
    for key, shape in [("features.0.0.weight", (32, 3, 3, 3)), ("features.0.1.running_var", (32,)),
                       ("features.1.conv.0.0.weight", (32, 1, 3, 3)),
                       ("features.1.conv.1.weight", (16, 32, 1, 1)),
                       ("features.2.conv.0.0.weight", (96, 16, 1, 1)),
                       ("features.2.conv.1.0.weight", (96, 1, 3, 3)),
                       ("features.2.conv.3.bias", (24,)),
                       ("features.17.conv.2.weight", (320, 960, 1, 1)),
                       ("features.18.0.weight", (1280, 320, 1, 1)),
                       ("classifier.1.weight", (1000, 1280)), ("classifier.1.bias", (1000,))]:
        assert tuple(sd[key].shape) == shape, key
    assert mobilenet_v2(num_classes=10).classifier[1].weight.data.shape == (10, 1280)
    assert fastconv.models.get_model("mobilenet_v2", num_classes=7).classifier[1].out_features == 7


@requires_torch
def test_state_dict_matches_torch_twin():
    ours = {k: tuple(v.shape) for k, v in mobilenet_v2().state_dict().items()}
    theirs = {k: tuple(v.shape) for k, v in _twin().state_dict().items()}
    assert ours.keys() == theirs.keys() and ours == theirs


def _pair(num_classes=10, seed=0):
    """A fastconv model and its torch twin holding the same random weights and stats."""
    nn.init.manual_seed(seed)
    ours = mobilenet_v2(num_classes=num_classes).to(np.float64)  # before loading: no rounding
    twin = _twin(num_classes).double()
    r = np.random.default_rng(seed)
    sd = {}
    for k, v in ours.state_dict().items():
        v = np.asarray(v)
        if k.endswith("num_batches_tracked"):
            sd[k] = v
            continue
        if k.endswith("running_var"):
            v = r.uniform(0.5, 1.5, v.shape)
        elif k.endswith("running_mean") or k.endswith(".bias"):
            v = r.normal(0, 0.1, v.shape)
        elif k.endswith("weight") and v.ndim == 1:
            v = r.uniform(0.5, 1.5, v.shape)
        sd[k] = v.astype(np.float64)
    ours.load_state_dict(sd)
    missing, unexpected = twin.load_state_dict(
        {k: torch.from_numpy(v) for k, v in sd.items() if not k.endswith("num_batches_tracked")},
        strict=False)
    assert not unexpected and all(k.endswith("num_batches_tracked") for k in missing)
    return ours, twin


@requires_torch
def test_eval_logits_match_torch():
    ours, twin = _pair()
    ours.eval()
    twin.eval()
    x = randn((2, 3, 64, 64), np.float64, 3)
    y = ours(x)
    with torch.no_grad():
        y_t = twin(torch.from_numpy(x)).numpy()
    assert y.dtype == np.float64
    assert_close(y, y_t, np.float64, 10_000, "eval logits")


@requires_torch
def test_train_gradients_match_torch():
    """Train mode (batch statistics, dropout off so the masks agree): the gradients of
    every parameter and of the input match torch's autograd."""
    ours, twin = _pair(seed=1)
    ours.train()
    twin.train()
    ours.classifier[0].p = 0.0
    twin.classifier[0].p = 0.0
    x = randn((3, 3, 48, 48), np.float64, 4)
    target = np.array([1, 4, 9])
    crit = nn.CrossEntropyLoss()
    ours.zero_grad()
    loss = crit(ours(x), target)
    gx = ours.backward(crit.backward())
    xt = torch.from_numpy(x).requires_grad_()
    loss_t = torch.nn.functional.cross_entropy(twin(xt), torch.from_numpy(target))
    loss_t.backward()
    assert abs(loss - loss_t.item()) < 1e-10
    assert_close(gx, xt.grad.numpy(), np.float64, 10_000, "grad x")
    tp = dict(twin.named_parameters())
    names = 0
    for name, p in ours.named_parameters():
        assert_close(p.grad, tp[name].grad.numpy(), np.float64, 10_000, name)
        names += 1
    assert names == len(tp)


def test_training_step_lowers_the_loss():
    nn.init.manual_seed(0)
    model = mobilenet_v2(num_classes=4)
    model.train()
    model.classifier[0].p = 0.0
    opt = fastconv.optim.SGD(model.parameters(), lr=0.01)
    crit = nn.CrossEntropyLoss()
    x = randn((4, 3, 32, 32), np.float32, 1)
    t = np.array([0, 1, 2, 3])
    losses = []
    for _ in range(8):
        model.zero_grad()
        losses.append(crit(model(x), t))
        model.backward(crit.backward())
        opt.step()
    assert np.isfinite(losses).all() and losses[-1] < losses[0]


def test_weights_keyword(tmp_path):
    m = mobilenet_v2(num_classes=5)
    path = tmp_path / "w.npz"
    fastconv.io.save_weights(str(path), m)
    m2 = mobilenet_v2(num_classes=5, weights=str(path))
    for (k, a), (_, b) in zip(m.state_dict().items(), m2.state_dict().items()):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b), err_msg=k)
    with pytest.raises(ValueError, match="num_classes"):
        mobilenet_v2(num_classes=0)


# ------------------------------------------------------------------ activations
SPECIALS = np.array([np.nan, -np.inf, -7.0, -1.0, -0.0, 0.0, 1e-8, 3.0, 5.999, 6.0, 6.5,
                     np.inf], np.float64)


@requires_torch
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("make", [
    (lambda: nn.ReLU6(), lambda: tnn.ReLU6()),
    (lambda: nn.LeakyReLU(), lambda: tnn.LeakyReLU()),
    (lambda: nn.LeakyReLU(0.2), lambda: tnn.LeakyReLU(0.2)),
    (lambda: nn.LeakyReLU(-0.5), lambda: tnn.LeakyReLU(-0.5)),
    (lambda: nn.LeakyReLU(0.0), lambda: tnn.LeakyReLU(0.0)),
], ids=["relu6", "leaky_default", "leaky_0.2", "leaky_neg", "leaky_0"])
def test_activation_matches_torch(make, dtype):
    ours, theirs = make[0](), make[1]()
    x = np.concatenate([SPECIALS, randn((40,), np.float64, 2) * 5]).astype(dtype).reshape(4, 13)
    gy = randn(x.shape, dtype, 3)
    y = ours(x)
    gx = ours.backward(gy)
    xt = torch.from_numpy(x).requires_grad_()
    yt = theirs(xt)
    yt.backward(torch.from_numpy(gy))
    assert y.dtype == gx.dtype == dtype
    np.testing.assert_array_equal(y, yt.detach().numpy())  # NaN in the same places
    # torch's ReLU6 gradient at NaN depends on whether the element falls in its vector or
    # scalar loop; ours is always 0 there (the vector loop's answer).
    nan = np.isnan(x)
    np.testing.assert_array_equal(gx[~nan], xt.grad.numpy()[~nan])
    if isinstance(ours, nn.ReLU6):
        assert not gx[nan].any()
    else:
        np.testing.assert_array_equal(gx[nan], gy[nan] * dtype(ours.negative_slope))


def test_activation_errors_and_repr():
    with pytest.raises(TypeError, match="negative_slope"):
        nn.LeakyReLU("0.1")
    with pytest.raises(RuntimeError, match="backward"):
        nn.ReLU6().backward(np.ones(3))
    assert "0.2" in repr(nn.LeakyReLU(0.2))


# ------------------------------------------------------------------ fastconv.compile
@pytest.mark.parametrize("shape", [(2, 3, 64, 64), (1, 3, 40, 56)], ids=["n2_64", "n1_40x56"])
def test_compiled_matches_eager(shape):
    """fastconv.compile on the whole eval-mode model: the logits match eager within float32
    rounding (batch norm folded into the convolutions changes the rounding, nothing else);
    every convolution is compiled (none runs eagerly), each depthwise 3x3 runs the
    depthwise kernels and every inverted residual with a skip connection fuses its add."""
    from fastconv.engine import compiler as E

    nn.init.manual_seed(3)
    m = random_bn_stats(mobilenet_v2(num_classes=10), 3).eval()
    x = np.random.default_rng(4).standard_normal(shape).astype(np.float32)
    with nn.no_grad():
        eager = m(x)
    cm = fastconv.compile(m)
    y = cm(x)
    assert y.shape == eager.shape == (shape[0], 10) and y.dtype == np.float32
    err = float(np.max(np.abs(y.astype(np.float64) - eager)) / np.max(np.abs(eager)))
    assert err <= 1e-4, f"compiled vs eager: relative error {err:.2e}"
    convs = [s for s in cm.steps if isinstance(s, E._Conv)]
    assert len(convs) == 52  # 17 blocks (16 with an expansion) * 3 - 1, the stem, the head
    depthwise = [s for s in convs if s.groups > 1]
    assert len(depthwise) == 17
    assert all(set(s.algos.values()) == {"depthwise"} for s in depthwise), \
        [s.algos for s in depthwise]
    assert sum("residual" in s.fused for s in convs) == 10
    np.testing.assert_array_equal(cm(x), y)  # a second call reuses the buffers: same logits
