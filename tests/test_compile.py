"""fastconv.compile: compiled logits against eager fastconv and a PyTorch twin; fusion,
snapshot semantics, errors, buffer reuse and threads."""
from __future__ import annotations

import threading

import numpy as np
import pytest

import fastconv as fc
from fastconv import models, nn
from fastconv.benchmark.network import build_network
from fastconv.engine import compiler as E

from conftest import random_bn_stats, requires_torch, torch

RTOL = 1e-4


def _rel(a, b):
    return float(np.max(np.abs(np.asarray(a, np.float64) - b)) / np.max(np.abs(b)))


class Square(nn.Module):
    """A layer the compiler cannot know: it must run eagerly."""

    def forward(self, x):
        return x * x


def _custom():
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
        Square(),
        nn.Conv2d(8, 8, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(8),
        nn.AvgPool2d(2), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 4 * 4, 5), nn.ReLU(),
        nn.Dropout(), nn.Linear(5, 3))


CASES = {
    "resnet18": (lambda: models.resnet18(num_classes=10, stem="cifar", widths=(8, 16, 32, 64)),
                 (2, 3, 16, 16)),
    "resnet18-imagenet": (lambda: models.resnet18(num_classes=7, widths=(8, 16, 16, 16)),
                          (1, 3, 64, 64)),
    "resnet50": (lambda: models.resnet50(num_classes=10, stem="cifar", widths=(8, 8, 16, 16)),
                 (2, 3, 16, 16)),
    "vgg11": (lambda: models.vgg11(num_classes=10), (1, 3, 32, 32)),
    "lenet5": (lambda: models.lenet5(), (3, 1, 32, 32)),
    "custom": (_custom, (2, 3, 16, 16)),
}


def _case(name, seed=0):
    factory, shape = CASES[name]
    nn.init.manual_seed(seed)
    m = random_bn_stats(factory(), seed).eval()
    x = np.random.default_rng(seed + 1).standard_normal(shape).astype(np.float32)
    return m, x


def _eager(m, x):
    with nn.no_grad():
        return m(x)


@pytest.mark.parametrize("name", list(CASES))
def test_compiled_matches_eager(name):
    m, x = _case(name)
    y = fc.compile(m)(x)
    ref = _eager(m, x)
    assert y.shape == ref.shape and y.dtype == ref.dtype
    assert _rel(y, ref) <= RTOL


@requires_torch
@pytest.mark.parametrize("name", [n for n in CASES if n != "custom"])
def test_compiled_matches_the_pytorch_twin(name):
    from fastconv.benchmark.twin import torch_twin

    m, x = _case(name)
    t = torch_twin(m)
    with torch.no_grad():
        ref = t(torch.from_numpy(x)).double().numpy()
    assert _rel(fc.compile(m)(x), ref) <= RTOL
    assert _rel(_eager(m, x), ref) <= RTOL


@requires_torch
def test_custom_model_matches_a_hand_built_torch_model():
    m, x = _case("custom")
    tnn = torch.nn

    class TSquare(tnn.Module):
        def forward(self, v):
            return v * v

    t = tnn.Sequential(
        tnn.Conv2d(3, 8, 3, padding=1), tnn.BatchNorm2d(8), tnn.ReLU(), TSquare(),
        tnn.Conv2d(8, 8, 3, stride=2, padding=1, bias=False), tnn.BatchNorm2d(8),
        tnn.AvgPool2d(2), tnn.ReLU(), tnn.Flatten(), tnn.Linear(128, 5), tnn.ReLU(),
        tnn.Dropout(), tnn.Linear(5, 3)).eval()
    t.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in m.state_dict().items()})
    with torch.no_grad():
        ref = t(torch.from_numpy(x)).double().numpy()
    assert _rel(fc.compile(m)(x), ref) <= RTOL


def test_fusion_plan_of_resnet18():
    """Every batch norm folded, every residual add and ReLU in a conv's output stage: the
    plan of ResNet-18 is its 20 convolutions, the pools, flatten and fc; nothing else."""
    m, x = _case("resnet18-imagenet")
    cm = fc.compile(m)
    kinds = [s.kind for s in cm.steps]
    assert kinds.count("conv") == 20
    assert set(kinds) == {"conv", "max_pool2d", "adaptive_avg_pool2d", "flatten", "linear"}
    convs = [s for s in cm.steps if isinstance(s, E._Conv)]
    assert all("bn" in s.fused for s in convs)
    assert sum("residual" in s.fused for s in convs) == 8  # one per BasicBlock
    # a residual conv's activation is the block's ReLU, applied after the add
    assert all(s.clamp == (0.0, float("inf")) for s in convs if "residual" in s.fused)
    # downsample convs have no activation
    assert sum(s.clamp == E._NO_CLAMP for s in convs) == 3


def test_bottleneck_and_unfusable_layers():
    m, _ = _case("resnet50")
    convs = [s for s in fc.compile(m).steps if isinstance(s, E._Conv)]
    assert len(convs) == 53 and sum("residual" in s.fused for s in convs) == 16
    cm = fc.compile(_case("custom")[0])
    kinds = [s.kind for s in cm.steps]
    # conv+bn+relu, Square eagerly, conv+bn (the ReLU after the pool cannot fuse), pool,
    # relu, flatten, linear+relu, linear (dropout gone)
    assert kinds == ["conv", "eager", "conv", "avg_pool2d", "act", "flatten", "linear",
                     "linear"]


def test_algorithms_come_from_the_dispatcher(monkeypatch):
    """The plan asks choose_conv_algo once per conv per input shape, and uses its answer."""
    calls = []
    real = E.choose_conv_algo

    def spy(name, mod, op, spec, dtype, algo, runner=None, prepacked=False):
        choice = real(name, mod, op, spec, dtype, algo, runner, prepacked=prepacked)
        calls.append((spec.x_shape, choice))
        return choice

    monkeypatch.setattr(E, "choose_conv_algo", spy)
    m, x = _case("resnet18")
    cm = fc.compile(m)
    cm(x)
    cm(x)
    n_conv = sum(isinstance(s, E._Conv) for s in cm.steps)
    assert len(calls) == n_conv  # the second call re-uses the plan
    cm(x[:1])
    assert len(calls) == 2 * n_conv  # a new batch size is a new plan
    chosen = [a for s in cm.steps if isinstance(s, E._Conv) for a in s.algos.values()]
    assert sorted(chosen) == sorted(c for _, c in calls)


def test_layer_algo_is_passed_to_the_dispatcher():
    m = nn.Sequential(nn.Conv2d(2, 4, 3, padding=1, algo="im2col")).eval()
    x = np.random.default_rng(0).standard_normal((1, 2, 8, 8)).astype(np.float32)
    cm = fc.compile(m)
    np.testing.assert_allclose(cm(x), _eager(m, x), rtol=1e-5, atol=1e-6)
    assert list(cm.steps[0].algos.values()) == ["im2col"]


def test_train_mode_is_refused():
    m, _ = _case("resnet18")
    m.train()
    with pytest.raises(ValueError, match="eval mode"):
        fc.compile(m)
    m.eval()
    m.layer1[0].bn1.train()
    with pytest.raises(ValueError, match="layer1.0.bn1"):
        fc.compile(m)


def test_wrong_inputs_are_refused():
    m, x = _case("resnet18")
    cm = fc.compile(m)
    with pytest.raises(ValueError, match="3 channels, got 4"):
        cm(np.zeros((1, 4, 16, 16), np.float32))
    with pytest.raises(ValueError, match="dtype must be float32"):
        cm(x.astype(np.float64))
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        cm(np.zeros((16, 16), np.float32))
    with pytest.raises(TypeError, match="NumPy array"):
        cm([[0.0]])
    mlp = fc.compile(nn.Sequential(nn.Linear(6, 2)).eval())
    with pytest.raises(ValueError, match=r"\(N, 6\)"):
        mlp(np.zeros((2, 5), np.float32))
    with pytest.raises(TypeError, match="fastconv.nn.Module"):
        fc.compile(lambda v: v)


def test_unbatched_input():
    m, x = _case("lenet5")
    cm = fc.compile(m)
    np.testing.assert_allclose(cm(x[0]), cm(x[:1])[0], rtol=0, atol=0)


def test_float64_model():
    m = nn.Sequential(nn.Conv2d(2, 3, 3, dtype=np.float64), nn.BatchNorm2d(3, dtype=np.float64),
                      nn.ReLU())
    random_bn_stats(m)
    m.eval()
    x = np.random.default_rng(0).standard_normal((2, 2, 7, 7))
    cm = fc.compile(m)
    assert _rel(cm(x), _eager(m, x)) <= 1e-12
    with pytest.raises(ValueError, match="float64"):
        cm(x.astype(np.float32))


def test_snapshot_later_changes_to_the_model_are_not_seen():
    m, x = _case("resnet18")
    cm = fc.compile(m)
    before = cm(x)
    for p in m.parameters():
        p.data[...] = 0
    m.bn1.running_mean[...] = 5
    m.train()
    np.testing.assert_array_equal(cm(x), before)


def test_snapshot_of_eagerly_run_layers():
    class Scale(nn.Module):
        def __init__(self):
            super().__init__()
            self.k = 2.0

        def forward(self, v):
            return v * self.k

    m = nn.Sequential(nn.Conv2d(1, 2, 3), Scale()).eval()
    x = np.ones((1, 1, 5, 5), np.float32)
    cm = fc.compile(m)
    before = cm(x)
    m[1].k = 100.0
    np.testing.assert_array_equal(cm(x), before)


def test_buffers_are_reused_across_calls_and_batch_sizes():
    m, x = _case("resnet18")
    cm = fc.compile(m)
    x1 = x[:1].copy()
    y2a, y1a = cm(x), cm(x1)
    plan2 = cm._plan(x.shape)
    bufs = [id(b) for b in plan2.buffers]
    y2b, y1b = cm(x), cm(x1)
    assert [id(b) for b in cm._plan(x.shape).buffers] == bufs  # the same arrays
    np.testing.assert_array_equal(y2a, y2b)
    np.testing.assert_array_equal(y1a, y1b)
    np.testing.assert_allclose(y1a[0], y2a[0], rtol=1e-5, atol=1e-6)
    assert y2a is not y2b and not np.shares_memory(y2a, y2b)  # results are fresh arrays
    # liveness: fewer buffers than convolutions
    n_conv = sum(isinstance(s, E._Conv) for s in cm.steps)
    assert 0 < len(plan2.buffers) < n_conv
    report = cm.memory_report()
    assert set(report["activation_buffer_bytes"]) == {tuple(x.shape), tuple(x1.shape)}
    assert report["activation_buffer_bytes"][tuple(x.shape)] == plan2.buffer_bytes


def test_plan_cache_is_bounded():
    m, x = _case("lenet5")
    cm = fc.compile(m)
    cm.max_plans = 2
    for n in (1, 2, 3, 4):
        cm(np.zeros((n, 1, 32, 32), np.float32))
    assert len(cm._plans) == 2


def test_memory_report_counts_the_prepared_weights():
    m, _ = _case("resnet18")
    cm = fc.compile(m)
    r = cm.memory_report()
    params = sum(p.data.nbytes for p in m.parameters())
    assert r["source_parameter_bytes"] == params
    # folded convs gain a bias each (K floats) and the BN parameters disappear
    bn = sum(mod.weight.data.nbytes + mod.bias.data.nbytes for mod in m.modules()
             if isinstance(mod, nn.BatchNorm2d))
    conv_bias = sum(mod.out_channels * 4 for mod in m.modules() if isinstance(mod, nn.Conv2d))
    assert r["prepared_weight_bytes"] == params - bn + conv_bias
    assert r["extra_bytes"] == r["prepared_weight_bytes"] + r["eager_bytes"]


def test_flops_of_resnet18():
    m, _ = build_network("resnet18")
    # 1.814 G multiply-adds per 224x224 image (convolutions and fc)
    assert fc.compile(m).flops((1, 3, 224, 224)) == pytest.approx(2 * 1.8142e9, rel=1e-3)


def test_two_threads_calling_one_compiled_model():
    """Calls from several threads are serialised by the model's lock: each gets its own
    correct result."""
    m, x = _case("resnet18")
    cm = fc.compile(m)
    xs = [np.random.default_rng(s).standard_normal(x.shape).astype(np.float32)
          for s in range(4)]
    refs = [cm(v) for v in xs]
    out = {}

    def work(i):
        for r in range(3):
            out[(i, r)] = cm(xs[(i + r) % 4])

    ts = [threading.Thread(target=work, args=(i,)) for i in range(2)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    for (i, r), y in out.items():
        np.testing.assert_array_equal(y, refs[(i + r) % 4])


def test_prepack_hook_is_used_when_the_backend_offers_it(monkeypatch):
    """A backend with prepack(w, spec, algo) and conv2d_forward(..., packed=) gets the
    packed weights, prepared once per algorithm and input shape."""
    seen = {"prepack": 0, "packed": []}
    m, x = _case("lenet5")
    cm = fc.compile(m)
    eng = cm._eng
    real = eng.op("conv2d_forward")

    def prepack(w, spec, algo):
        seen["prepack"] += 1
        return ("packed", w.shape, algo)

    def fwd(x, w, b, spec, algo, residual=None, clamp=E._NO_CLAMP, out=None, packed=None):
        seen["packed"].append(packed)
        return real(x, w, b, spec, algo, residual=residual, clamp=clamp, out=out)

    eng._ops["conv2d_forward"] = fwd
    eng.prepack, eng.takes_packed = prepack, True
    y = cm(x)
    cm(x)
    assert _rel(y, _eager(m, x)) <= RTOL
    assert seen["prepack"] == 2  # two convolutions, once each
    assert all(p[0] == "packed" for p in seen["packed"]) and len(seen["packed"]) == 4


def test_inverted_residual_layout_is_fused():
    """A torchvision-layout InvertedResidual (MobileNetV2) fuses conv -> bn -> ReLU6 and
    its residual add, and matches eager."""
    relu6 = getattr(nn, "ReLU6", None)
    if relu6 is None:
        class ReLU6(nn.Module):
            def forward(self, v):
                return np.clip(v, 0, 6)
        relu6 = ReLU6

    class InvertedResidual(nn.Module):
        def __init__(self, c, t):
            super().__init__()
            h = c * t
            self.use_res_connect = True
            self.conv = nn.Sequential(
                nn.Sequential(nn.Conv2d(c, h, 1, bias=False), nn.BatchNorm2d(h), relu6()),
                nn.Sequential(nn.Conv2d(h, h, 3, padding=1, groups=h, bias=False),
                              nn.BatchNorm2d(h), relu6()),
                nn.Conv2d(h, c, 1, bias=False), nn.BatchNorm2d(c))

        def forward(self, v):
            return v + self.conv(v)

    m = random_bn_stats(nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), InvertedResidual(8, 4),
                                 InvertedResidual(8, 2))).eval()
    x = np.random.default_rng(0).standard_normal((2, 3, 10, 10)).astype(np.float32) * 3
    cm = fc.compile(m)
    assert _rel(cm(x), _eager(m, x)) <= RTOL
    convs = [s for s in cm.steps if isinstance(s, E._Conv)]
    assert len(convs) == 7
    assert sum("residual" in s.fused for s in convs) == 2
    if getattr(nn, "ReLU6", None) is not None:  # fastconv's own ReLU6 fuses too
        assert [s.kind for s in cm.steps] == ["conv"] * 7
        assert sum("relu6" in s.fused for s in convs) == 4


def test_register_lowering_teaches_a_new_block():
    class Twice(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(4, 4, 3, padding=1)

        def forward(self, v):
            return fc.relu(self.conv(v) + v)

    E.register_lowering(Twice, lambda lw, mod, x: lw.chain([mod.conv], x, residual=x,
                                                            clamp=(0.0, float("inf"))))
    try:
        m = nn.Sequential(Twice()).eval()
        x = np.random.default_rng(0).standard_normal((1, 4, 6, 6)).astype(np.float32)
        cm = fc.compile(m)
        assert [s.kind for s in cm.steps] == ["conv"]
        assert _rel(cm(x), _eager(m, x)) <= RTOL
    finally:
        E._LOWERINGS[:] = [r for r in E._LOWERINGS if r[0] is not Twice]
