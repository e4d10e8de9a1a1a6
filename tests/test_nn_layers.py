"""fastconv.nn layers: float64 finite-difference gradients, PyTorch equivalence (forward,
input gradient and every parameter gradient, train and eval mode), the Module API
(state_dict, modes, freezing, accumulation, devices) and argument errors."""
from __future__ import annotations

import numpy as np
import pytest

import fastconv
import fastconv.functional as Fn
from fastconv import nn
from conftest import randn, requires_torch, torch

# ----------------------------------------------------------------------------- helpers


def _params(m):
    return list(m.named_parameters())


def directional_fd_check(module, x, *, seed=0, eps=1e-6, n_dirs=3, reseed=None, rtol=1e-6,
                         only=None):
    """Checks backward against central differences of L = sum(forward(x) * R) along random
    directions in (input, parameters) space: a check of every gradient at once.

    ``only`` restricts the parameter part of the directions to the named parameters (in
    a deep network a step along all millions of weights at once crosses ReLU kinks, so the
    difference quotient stops being accurate); every gradient is still checked to exist."""
    rng = np.random.default_rng(seed)

    def loss(xx):
        if reseed is not None:
            nn.init.manual_seed(reseed)
        return float((module(xx) * R).sum())

    if reseed is not None:
        nn.init.manual_seed(reseed)
    y = module(x)
    R = rng.standard_normal(y.shape)
    module.zero_grad()
    gx = module.backward(R.copy())
    assert gx.shape == x.shape
    params = [p for _, p in _params(module) if p.requires_grad]
    for p in params:
        assert p.grad is not None and p.grad.shape == p.shape
    if only is not None:
        named = dict(_params(module))
        params = [named[n] for n in only]
    for _ in range(n_dirs):
        vx = rng.standard_normal(x.shape)
        vps = [rng.standard_normal(p.shape) for p in params]
        analytic = float((gx * vx).sum()) + sum(float((p.grad * v).sum())
                                               for p, v in zip(params, vps))
        saved = [p.data.copy() for p in params]
        for p, v, s in zip(params, vps, saved):
            p.data[...] = s + eps * v
        lp = loss(x + eps * vx)
        for p, v, s in zip(params, vps, saved):
            p.data[...] = s - eps * v
        lm = loss(x - eps * vx)
        for p, s in zip(params, saved):
            p.data[...] = s
        numeric = (lp - lm) / (2 * eps)
        assert abs(numeric - analytic) <= rtol * max(1.0, abs(analytic)), \
            f"directional derivative: numeric {numeric!r} vs analytic {analytic!r}"
    return gx


def entrywise_fd_check(module, x, *, seed=0, eps=1e-6, k=6, only=None):
    """A few individual input and parameter entries (of the parameters named in ``only``,
    default all) against central differences."""
    rng = np.random.default_rng(seed)
    y = module(x)
    R = rng.standard_normal(y.shape)
    module.zero_grad()
    gx = module.backward(R.copy())

    def L():
        return float((module(x) * R).sum())

    targets = [("x", x, gx)] + [(n, p.data, p.grad) for n, p in _params(module)
                                if only is None or n in only]
    for name, arr, grad in targets:
        for flat in rng.choice(arr.size, size=min(k, arr.size), replace=False):
            idx = np.unravel_index(flat, arr.shape)
            old = arr[idx]
            arr[idx] = old + eps
            lp = L()
            arr[idx] = old - eps
            lm = L()
            arr[idx] = old
            num = (lp - lm) / (2 * eps)
            assert abs(num - grad[idx]) <= 1e-6 * max(1.0, abs(num)), \
                f"{name}{idx}: numeric {num} vs analytic {grad[idx]}"


# (id, fastconv factory, input shape); the torch twin is built from the same arguments.
LAYER_CASES = [
    ("conv3x3", lambda: nn.Conv2d(3, 4, 3, padding=1, dtype=np.float64), (2, 3, 7, 6)),
    ("conv_stride2_nobias", lambda: nn.Conv2d(3, 5, 3, stride=2, padding=1, bias=False,
                                              dtype=np.float64), (2, 3, 9, 8)),
    ("conv_groups_dilation", lambda: nn.Conv2d(4, 6, 3, padding=2, dilation=2, groups=2,
                                               dtype=np.float64), (1, 4, 8, 8)),
    ("conv_depthwise", lambda: nn.Conv2d(4, 4, 3, padding=1, groups=4, dtype=np.float64),
     (2, 4, 5, 5)),
    ("conv_1x1", lambda: nn.Conv2d(5, 3, 1, dtype=np.float64), (3, 5, 4, 4)),
    ("conv_same_even", lambda: nn.Conv2d(2, 3, (4, 2), padding="same", dtype=np.float64),
     (1, 2, 7, 6)),
    ("conv_c1_n1", lambda: nn.Conv2d(1, 2, 5, dtype=np.float64), (1, 1, 9, 9)),
    ("bn", lambda: nn.BatchNorm2d(3, dtype=np.float64), (4, 3, 5, 4)),
    ("bn_no_affine", lambda: nn.BatchNorm2d(3, affine=False, dtype=np.float64), (2, 3, 3, 3)),
    ("bn_untracked", lambda: nn.BatchNorm2d(2, track_running_stats=False, dtype=np.float64),
     (3, 2, 2, 3)),
    ("relu", lambda: nn.ReLU(), (2, 3, 4, 5)),
    ("maxpool2", lambda: nn.MaxPool2d(2), (2, 3, 6, 7)),
    ("maxpool3s2p1", lambda: nn.MaxPool2d(3, 2, 1), (2, 2, 7, 7)),
    ("maxpool_ceil_dil", lambda: nn.MaxPool2d(2, 2, 0, dilation=2, ceil_mode=True),
     (1, 2, 8, 9)),
    ("avgpool3s2p1", lambda: nn.AvgPool2d(3, 2, 1), (2, 3, 7, 6)),
    ("avgpool_nopadcount_ceil", lambda: nn.AvgPool2d(3, 2, 1, ceil_mode=True,
                                                     count_include_pad=False), (1, 2, 8, 8)),
    ("adaptive_2x3", lambda: nn.AdaptiveAvgPool2d((2, 3)), (2, 3, 5, 7)),
    ("adaptive_global", lambda: nn.AdaptiveAvgPool2d(1), (2, 3, 4, 4)),
    ("linear", lambda: nn.Linear(12, 5, dtype=np.float64), (4, 12)),
    ("linear_nobias", lambda: nn.Linear(7, 3, bias=False, dtype=np.float64), (1, 7)),
    ("flatten", lambda: nn.Flatten(), (2, 3, 2, 2)),
    ("sequential", lambda: nn.Sequential(
        nn.Conv2d(2, 4, 3, padding=1, dtype=np.float64), nn.BatchNorm2d(4, dtype=np.float64),
        nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(4 * 3 * 3, 3, dtype=np.float64)),
     (3, 2, 6, 6)),
]
LAYER_IDS = [c[0] for c in LAYER_CASES]


def _torch_twin(m):
    """The torch.nn module with the same structure and the same state as ``m``."""
    tnn = torch.nn
    if isinstance(m, nn.Sequential):
        t = tnn.Sequential(*[_torch_twin(c) for c in m])
    elif isinstance(m, nn.Conv2d):
        t = tnn.Conv2d(m.in_channels, m.out_channels, m.kernel_size, m.stride, m.padding,
                       m.dilation, m.groups, bias=m.bias is not None)
    elif isinstance(m, nn.BatchNorm2d):
        t = tnn.BatchNorm2d(m.num_features, m.eps, m.momentum, m.affine,
                            m.track_running_stats)
    elif isinstance(m, nn.ReLU):
        t = tnn.ReLU()
    elif isinstance(m, nn.MaxPool2d):
        t = tnn.MaxPool2d(m.kernel_size, m.stride, m.padding, m.dilation, ceil_mode=m.ceil_mode)
    elif isinstance(m, nn.AvgPool2d):
        t = tnn.AvgPool2d(m.kernel_size, m.stride, m.padding, m.ceil_mode, m.count_include_pad,
                          m.divisor_override)
    elif isinstance(m, nn.AdaptiveAvgPool2d):
        t = tnn.AdaptiveAvgPool2d(m.output_size)
    elif isinstance(m, nn.Linear):
        t = tnn.Linear(m.in_features, m.out_features, bias=m.bias is not None)
    elif isinstance(m, nn.Flatten):
        t = tnn.Flatten(m.start_dim, m.end_dim)
    else:
        raise AssertionError(type(m))
    t = t.double()
    t.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in m.state_dict().items()},
                      strict=True)
    return t


@pytest.mark.parametrize("name,factory,shape", LAYER_CASES, ids=LAYER_IDS)
@pytest.mark.parametrize("mode", ["train", "eval"])
def test_layer_gradients_finite_differences(name, factory, shape, mode):
    nn.init.manual_seed(1)
    m = factory().train(mode == "train")
    x = randn(shape, np.float64, seed=3)
    directional_fd_check(m, x)


@pytest.mark.parametrize("name,factory,shape", [c for c in LAYER_CASES
                                                 if c[0] in ("conv_groups_dilation", "bn",
                                                             "linear", "avgpool3s2p1")],
                         ids=["conv_groups_dilation", "bn", "linear", "avgpool3s2p1"])
def test_layer_gradients_entrywise(name, factory, shape):
    nn.init.manual_seed(2)
    entrywise_fd_check(factory(), randn(shape, np.float64, seed=4))


@requires_torch
@pytest.mark.torch
@pytest.mark.parametrize("name,factory,shape", LAYER_CASES, ids=LAYER_IDS)
@pytest.mark.parametrize("mode", ["train", "eval"])
def test_layer_matches_torch(name, factory, shape, mode):
    nn.init.manual_seed(5)
    m = factory()
    if isinstance(m, (nn.BatchNorm2d, nn.Sequential)):
        # Non-trivial running statistics so eval mode is not the identity.
        for b in (mm for mm in m.modules() if isinstance(mm, nn.BatchNorm2d)):
            if b.track_running_stats:
                b.running_mean[...] = randn(b.running_mean.shape, np.float64, 8)
                b.running_var[...] = 0.5 + np.abs(randn(b.running_var.shape, np.float64, 9))
    t = _torch_twin(m)
    m.train(mode == "train")
    t.train(mode == "train")
    x = randn(shape, np.float64, seed=6)
    y = m(x)
    xt = torch.from_numpy(x.copy()).requires_grad_()
    yt = t(xt)
    np.testing.assert_allclose(y, yt.detach().numpy(), rtol=1e-10, atol=1e-12)
    R = randn(y.shape, np.float64, seed=7)
    gx = m.backward(R)
    yt.backward(torch.from_numpy(R))
    np.testing.assert_allclose(gx, xt.grad.numpy(), rtol=1e-9, atol=1e-11)
    tparams = dict(t.named_parameters())
    for pname, p in m.named_parameters():
        np.testing.assert_allclose(p.grad, tparams[pname].grad.numpy(), rtol=1e-9, atol=1e-11,
                                   err_msg=pname)
    tstate = t.state_dict()
    for k, v in m.state_dict().items():  # running statistics updated identically
        np.testing.assert_allclose(v, tstate[k].numpy(), rtol=1e-12, atol=1e-14, err_msg=k)


@requires_torch
@pytest.mark.torch
def test_float32_layers_match_torch():
    nn.init.manual_seed(0)
    m = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                      nn.MaxPool2d(2), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4))
    t = _torch_twin(m).float()
    x = randn((4, 3, 8, 8), np.float32, 1)
    y = m(x)
    assert y.dtype == np.float32
    xt = torch.from_numpy(x.copy()).requires_grad_()
    yt = t(xt)
    np.testing.assert_allclose(y, yt.detach().numpy(), rtol=1e-4, atol=1e-5)
    R = randn(y.shape, np.float32, 2)
    gx = m.backward(R)
    yt.backward(torch.from_numpy(R))
    assert gx.dtype == np.float32
    np.testing.assert_allclose(gx, xt.grad.numpy(), rtol=1e-4, atol=1e-5)
    tp = dict(t.named_parameters())
    for n, p in m.named_parameters():
        assert p.grad.dtype == np.float32
        np.testing.assert_allclose(p.grad, tp[n].grad.numpy(), rtol=1e-3, atol=1e-4)


# ----------------------------------------------------------------------------- loss


def test_cross_entropy_loss_module_fd():
    rng = np.random.default_rng(0)
    logits = rng.standard_normal((5, 4))
    target = np.array([0, 3, 1, 1, 2])
    crit = nn.CrossEntropyLoss()
    loss = crit(logits, target)
    assert isinstance(loss, float)
    g = crit.backward()
    eps = 1e-6
    for idx in [(0, 0), (1, 3), (4, 2), (2, 1)]:
        lp = logits.copy()
        lp[idx] += eps
        lm = logits.copy()
        lm[idx] -= eps
        num = (nn.CrossEntropyLoss()(lp, target) - nn.CrossEntropyLoss()(lm, target)) / (2 * eps)
        assert abs(num - g[idx]) < 1e-8
    crit(logits, target)
    np.testing.assert_allclose(crit.backward(2.5), 2.5 * g, rtol=1e-14)


@requires_torch
@pytest.mark.torch
def test_cross_entropy_loss_matches_torch():
    rng = np.random.default_rng(1)
    logits = rng.standard_normal((6, 5)) * 3
    target = rng.integers(0, 5, 6)
    crit = nn.CrossEntropyLoss()
    loss = crit(logits, target)
    lt = torch.from_numpy(logits).requires_grad_()
    ref = torch.nn.CrossEntropyLoss()(lt, torch.from_numpy(target))
    ref.backward()
    assert abs(loss - ref.item()) < 1e-12
    np.testing.assert_allclose(crit.backward(), lt.grad.numpy(), rtol=1e-10, atol=1e-14)


def test_loss_backward_without_forward_errors():
    with pytest.raises(RuntimeError, match="without a preceding"):
        nn.CrossEntropyLoss().backward()
    with pytest.raises(ValueError, match="reduction"):
        nn.CrossEntropyLoss(reduction="sum")


# ----------------------------------------------------------------------------- dropout


def test_dropout_train_eval_and_gradient():
    nn.init.manual_seed(0)
    d = nn.Dropout(0.25)
    x = np.ones((200, 50))
    y = d(x)
    kept = y != 0
    assert 0.7 < kept.mean() < 0.8
    np.testing.assert_allclose(y[kept], 1 / 0.75)
    g = d.backward(np.full_like(x, 2.0))
    np.testing.assert_array_equal(g, np.where(kept, 2 / 0.75, 0.0))
    d.eval()
    assert d(x) is x
    assert d.backward(x) is x
    # With a fixed mask dropout is linear; the FD check reseeds so both passes draw it.
    d.train()
    directional_fd_check(d, randn((3, 4, 5), np.float64), reseed=11)
    with pytest.raises(ValueError, match="p must"):
        nn.Dropout(1.5)
    np.testing.assert_array_equal(nn.Dropout(1.0)(x), 0)


# ----------------------------------------------------------------------------- batch norm


def test_batchnorm_running_stats_and_modes():
    bn = nn.BatchNorm2d(3, dtype=np.float64)
    x = randn((4, 3, 5, 5), np.float64, 1) * 2 + 1
    bn(x)
    m = x.mean(axis=(0, 2, 3))
    v = x.var(axis=(0, 2, 3), ddof=1)
    np.testing.assert_allclose(bn.running_mean, 0.1 * m, rtol=1e-12)
    np.testing.assert_allclose(bn.running_var, 0.9 + 0.1 * v, rtol=1e-12)
    assert int(bn.num_batches_tracked) == 1
    bn.eval()
    rm = bn.running_mean.copy()
    y = bn(x)
    np.testing.assert_array_equal(bn.running_mean, rm)     # eval does not update
    assert int(bn.num_batches_tracked) == 1
    expect = (x - rm[None, :, None, None]) / np.sqrt(bn.running_var[None, :, None, None] + 1e-5)
    np.testing.assert_allclose(y, expect, rtol=1e-10, atol=1e-12)
    # momentum=None: cumulative average of the batch statistics.
    cum = nn.BatchNorm2d(3, momentum=None, dtype=np.float64)
    x2 = randn((4, 3, 5, 5), np.float64, 2)
    cum(x)
    cum(x2)
    np.testing.assert_allclose(cum.running_mean, (m + x2.mean(axis=(0, 2, 3))) / 2, rtol=1e-12)


def test_batchnorm_errors():
    with pytest.raises(ValueError, match="channels"):
        nn.BatchNorm2d(3)(np.zeros((2, 4, 3, 3), np.float32))
    with pytest.raises(ValueError, match="4-D"):
        nn.BatchNorm2d(3)(np.zeros((2, 3), np.float32))


# ----------------------------------------------------------------------------- Module API


def _small_net():
    nn.init.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 2, 3, dtype=np.float64), nn.BatchNorm2d(2, dtype=np.float64),
                         nn.ReLU(), nn.Flatten(), nn.Linear(2 * 4 * 4, 3, dtype=np.float64))


def test_gradients_accumulate_and_zero_grad():
    net = _small_net()
    x = randn((2, 1, 6, 6), np.float64)
    R = randn((2, 3), np.float64, 1)
    net.eval()  # same function twice, so accumulated grads are exactly doubled
    net(x)
    net.backward(R)
    first = {n: p.grad.copy() for n, p in net.named_parameters()}
    net(x)
    net.backward(R)
    for n, p in net.named_parameters():
        np.testing.assert_allclose(p.grad, 2 * first[n], rtol=1e-13, err_msg=n)
    net.zero_grad()
    assert all(p.grad is None for p in net.parameters())


def test_backward_needs_forward_and_releases_activations():
    conv = nn.Conv2d(1, 1, 3, dtype=np.float64)
    x = randn((1, 1, 5, 5), np.float64)
    y = conv(x)
    conv.backward(np.ones_like(y))
    with pytest.raises(RuntimeError, match="without a preceding"):
        conv.backward(np.ones_like(y))
    with nn.no_grad():
        conv(x)
    with pytest.raises(RuntimeError, match="without a preceding"):
        conv.backward(np.ones_like(y))


def test_named_parameters_and_state_dict_order():
    net = _small_net()
    assert [n for n, _ in net.named_parameters()] == [
        "0.weight", "0.bias", "1.weight", "1.bias", "4.weight", "4.bias"]
    assert list(net.state_dict()) == [
        "0.weight", "0.bias", "1.weight", "1.bias", "1.running_mean", "1.running_var",
        "1.num_batches_tracked", "4.weight", "4.bias"]
    assert net.state_dict()["1.num_batches_tracked"].dtype == np.int64
    assert len(list(net.parameters())) == 6


def test_load_state_dict_roundtrip_and_errors_leave_model_unchanged():
    a, b = _small_net(), _small_net()
    nn.init.manual_seed(9)
    for p in a.parameters():
        nn.init.normal_(p)
    b.load_state_dict({k: v.copy() for k, v in a.state_dict().items()})
    for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values()):
        np.testing.assert_array_equal(va, vb, err_msg=k)
    before = {k: v.copy() for k, v in b.state_dict().items()}
    bad = {k: v.copy() + 1 for k, v in a.state_dict().items()}
    bad["4.weight"] = np.zeros((3, 5))
    with pytest.raises(ValueError, match=r"4\.weight.*\(3, 5\)"):
        b.load_state_dict(bad)
    missing = dict(a.state_dict())
    del missing["1.running_var"]
    with pytest.raises(KeyError, match="missing keys: 1.running_var"):
        b.load_state_dict(missing)
    extra = dict(a.state_dict(), **{"5.weight": np.zeros(3)})
    with pytest.raises(KeyError, match="unexpected keys: 5.weight"):
        b.load_state_dict(extra)
    nan = {k: v.copy() for k, v in a.state_dict().items()}
    nan["0.bias"][0] = np.nan
    with pytest.raises(ValueError, match="non-finite"):
        b.load_state_dict(nan)
    for k, v in b.state_dict().items():
        np.testing.assert_array_equal(v, before[k], err_msg=k)
    # strict=False loads the common keys and reports the rest.
    missing_keys, unexpected = b.load_state_dict(extra, strict=False)
    assert unexpected == ["5.weight"] and missing_keys == []


def test_train_eval_propagate():
    net = nn.Sequential(nn.Sequential(nn.BatchNorm2d(2), nn.Dropout()), nn.ReLU())
    net.eval()
    assert not any(m.training for m in net.modules())
    net.train()
    assert all(m.training for m in net.modules())


def test_frozen_conv_does_not_compute_weight_grad(monkeypatch):
    calls = []
    real = Fn.conv2d_backward

    def spy(*args, **kwargs):
        calls.append((kwargs["need_weight_grad"], kwargs["need_bias_grad"]))
        return real(*args, **kwargs)

    from fastconv.nn import layers

    monkeypatch.setattr(layers.F, "conv2d_backward", spy)
    conv = nn.Conv2d(2, 3, 3, padding=1, dtype=np.float64)
    conv.weight.requires_grad = False
    x = randn((1, 2, 4, 4), np.float64)
    conv(x)
    gx = conv.backward(np.ones((1, 3, 4, 4)))
    assert calls == [(False, True)]
    assert conv.weight.grad is None and conv.bias.grad is not None
    assert gx.shape == x.shape
    conv.requires_grad_(False)
    conv(x)
    conv.backward(np.ones((1, 3, 4, 4)))
    assert calls[-1] == (False, False)


def test_to_dtype_and_device_errors():
    net = _small_net().to(np.float32)
    assert all(p.dtype == np.float32 for p in net.parameters())
    assert net.state_dict()["1.num_batches_tracked"].dtype == np.int64
    with pytest.raises(ValueError, match="device must be"):
        net.to("tpu")
    with pytest.raises(TypeError, match="float32 or float64"):
        net.to(np.int32)
    try:
        import cupy  # noqa: F401
    except ImportError:
        with pytest.raises(RuntimeError, match="CuPy"):
            net.to("cuda")
    assert net.device == "cpu"


@pytest.mark.gpu
def test_to_cuda_roundtrip_matches_cpu():
    cupy = pytest.importorskip("cupy")
    if not fastconv.backends()["cuda"]["available"]:
        pytest.skip("the cuda backend is not available: "
                    + fastconv.backends()["cuda"]["reason"])
    net = _small_net().to(np.float32)
    x = randn((2, 1, 6, 6), np.float32)
    y_cpu = net(x)
    net.to("cuda")
    y_gpu = net(cupy.asarray(x))
    np.testing.assert_allclose(cupy.asnumpy(y_gpu), y_cpu, rtol=1e-4, atol=1e-5)
    net.to("cpu")
    assert isinstance(net.state_dict()["0.weight"], np.ndarray)


def test_constructor_errors_name_the_argument():
    with pytest.raises(ValueError, match="groups"):
        nn.Conv2d(3, 4, 3, groups=2)
    with pytest.raises(ValueError, match="kernel_size"):
        nn.Conv2d(3, 4, 0)
    with pytest.raises(ValueError, match="algo"):
        nn.Conv2d(3, 4, 3, algo="fft")
    with pytest.raises(ValueError, match="padding"):
        nn.Conv2d(3, 4, 3, padding="full")
    with pytest.raises(TypeError, match="in_features"):
        nn.Linear(2.5, 3)
    with pytest.raises(TypeError, match="dtype"):
        nn.Linear(2, 3, dtype=np.int64)
    with pytest.raises(TypeError, match="Module"):
        nn.Sequential(nn.ReLU(), "relu")


def test_conv_algo_is_passed_through():
    x = randn((1, 2, 6, 6), np.float64)
    conv = nn.Conv2d(2, 3, 3, padding=1, dtype=np.float64, algo="direct")
    y = conv(x)
    np.testing.assert_allclose(y, fastconv.conv2d(x, conv.weight.data, conv.bias.data,
                                                  padding=1, backend="reference"),
                               rtol=1e-12, atol=1e-12)
    assert "algo='direct'" in repr(conv)


def test_parameter_repr_and_shape_checks():
    p = nn.Parameter(np.zeros((2, 3), np.float32))
    assert p.shape == (2, 3) and "requires_grad=True" in repr(p)
    with pytest.raises(ValueError, match="gradient shape"):
        p.accumulate_grad(np.zeros(3, np.float32))
    with pytest.raises(TypeError):
        nn.Parameter([1.0, 2.0])


def test_conv2d_layer_decides_once_per_input_shape(monkeypatch):
    """A Conv2d layer validates and picks each op's algorithm once per input shape (its
    plan), and the planned calls give exactly what the functional ops give."""
    calls = []
    real = Fn.choose_conv_algo

    def counting(name, mod, op, *a, **k):
        calls.append(op)
        return real(name, mod, op, *a, **k)

    monkeypatch.setattr(Fn, "choose_conv_algo", counting)
    layer = nn.Conv2d(3, 4, 3, padding=1)
    x = randn((2, 3, 9, 8), np.float32)
    g = randn((2, 4, 9, 8), np.float32, 1)
    for _ in range(3):
        y = layer(x)
        gx = layer.backward(g)
    assert sorted(calls) == ["conv2d_backward_data", "conv2d_backward_weight", "conv2d_forward"]
    w, b = layer.weight.data, layer.bias.data
    np.testing.assert_array_equal(y, Fn.conv2d(x, w, b, padding=1))
    rgx, rgw, rgb = Fn.conv2d_backward(g, x, w, padding=1)
    np.testing.assert_array_equal(gx, rgx)
    np.testing.assert_array_equal(layer.weight.grad, 3 * rgw)
    np.testing.assert_array_equal(layer.bias.grad, 3 * rgb)
    del calls[:]  # (the functional calls above choose per call)
    layer(x)
    assert calls == []
    layer(x[:1])  # a new shape: a new plan
    assert calls == ["conv2d_forward"]
    before = fastconv.get_precision()
    try:
        fastconv.set_precision("highest" if before == "high" else "high")
        layer(x)  # the precision setting is part of the choice
        assert calls == ["conv2d_forward"] * 2
    finally:
        fastconv.set_precision(before)


def test_conv2d_layer_backward_checks_a_grad_that_does_not_fit_the_plan():
    layer = nn.Conv2d(3, 4, 3, padding=1)
    layer(randn((2, 3, 6, 6), np.float32))
    with pytest.raises(TypeError, match="dtypes must match"):
        layer.backward(randn((2, 4, 6, 6), np.float64))
    layer(randn((2, 3, 6, 6), np.float32))
    with pytest.raises(ValueError, match="grad_out"):
        layer.backward(randn((2, 4, 5, 6), np.float32))


@pytest.mark.parametrize("factory,ref", [
    (lambda: nn.ReLU(inplace=True), lambda a: np.maximum(a, 0)),
    (lambda: nn.ReLU6(inplace=True), lambda a: np.clip(a, 0, 6))], ids=["relu", "relu6"])
def test_inplace_activation_overwrites_only_without_grad(factory, ref):
    """inplace=True: under no_grad the input itself is overwritten and returned (torch's
    semantics); with gradients on, and for inputs it cannot write (read-only, not
    C-contiguous), a new array with the same values; backward still works in grad mode."""
    m = factory()
    x = randn((2, 3, 4, 5), np.float64) * 8
    want = ref(x)
    with nn.no_grad():
        a = x.copy()
        y = m(a)
        assert y is a and np.array_equal(a, want)
        ro = x.copy()
        ro.flags.writeable = False
        y = m(ro)
        assert y is not ro and np.array_equal(y, want) and np.array_equal(ro, x)
        t = np.asfortranarray(x)
        y = m(t)
        assert np.array_equal(y, want) and np.array_equal(t, x)
    a = x.copy()
    y = m(a)
    assert y is not a and np.array_equal(a, x) and np.array_equal(y, want)
    g = m.backward(np.ones_like(y))
    assert np.array_equal(g, ((x > 0) & (x < 6 if "6" in type(m).__name__ else True)) * 1.0)


def test_batchnorm_without_grad_matches_grad_mode():
    """Under no_grad BatchNorm2d skips its saved statistics; the values are the same."""
    bn = nn.BatchNorm2d(3, dtype=np.float64)
    bn.running_mean[...] = [0.1, -0.2, 0.3]
    bn.running_var[...] = [0.5, 1.5, 2.0]
    bn.eval()
    x = randn((2, 3, 4, 4), np.float64)
    y = bn(x)
    with nn.no_grad():
        y2 = bn(x)
    assert np.array_equal(y, y2) and bn._x is not None
