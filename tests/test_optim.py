"""fastconv.optim: SGD/Adam updates and StepLR/CosineAnnealingLR rates against torch.optim
step for step, frozen/gradient-less parameters, state_dict round trips and argument
errors."""
from __future__ import annotations

import math

import numpy as np
import pytest

from fastconv import nn, optim
from conftest import requires_torch, torch

SGD_CASES = [dict(lr=0.1), dict(lr=0.05, momentum=0.9), dict(lr=0.05, momentum=0.9,
                                                               nesterov=True),
             dict(lr=0.1, momentum=0.5, dampening=0.3, weight_decay=1e-2)]
ADAM_CASES = [dict(lr=1e-2), dict(lr=3e-3, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.1)]


def _run(ours_cls, torch_cls, kw, steps=5):
    rng = np.random.default_rng(0)
    shapes = [(3, 4), (5,), (2, 1, 3, 3)]
    init = [rng.standard_normal(s) for s in shapes]
    grads = [[rng.standard_normal(s) for s in shapes] for _ in range(steps)]
    ps = [nn.Parameter(a.copy()) for a in init]
    opt = ours_cls(ps, **kw)
    ts = [torch.tensor(a.copy(), requires_grad=True) for a in init]
    topt = torch_cls(ts, **kw)
    for g in grads:
        for p, t, gi in zip(ps, ts, g):
            p.grad = gi.copy()
            t.grad = torch.from_numpy(gi.copy())
        opt.step()
        topt.step()
    for p, t in zip(ps, ts):
        np.testing.assert_allclose(p.data, t.detach().numpy(), rtol=1e-12, atol=1e-14)
    return opt, ps


@requires_torch
@pytest.mark.torch
@pytest.mark.parametrize("kw", SGD_CASES, ids=lambda k: ",".join(k))
def test_sgd_matches_torch(kw):
    _run(optim.SGD, torch.optim.SGD, kw)


@requires_torch
@pytest.mark.torch
@pytest.mark.parametrize("kw", ADAM_CASES, ids=lambda k: ",".join(k))
def test_adam_matches_torch(kw):
    _run(optim.Adam, torch.optim.Adam, kw)


def test_sgd_by_hand():
    p = nn.Parameter(np.array([1.0, -2.0]))
    opt = optim.SGD([p], lr=0.1, momentum=0.9)
    p.grad = np.array([1.0, 1.0])
    opt.step()
    np.testing.assert_allclose(p.data, [0.9, -2.1])
    opt.step()  # buffer = 0.9 * 1 + 1 = 1.9
    np.testing.assert_allclose(p.data, [0.71, -2.29])


def test_adam_first_step_is_lr_times_sign():
    p = nn.Parameter(np.array([1.0, -2.0, 3.0]))
    opt = optim.Adam([p], lr=0.01)
    p.grad = np.array([5.0, -0.1, 1e-3])
    opt.step()
    np.testing.assert_allclose(p.data, [0.99, -1.99, 2.99], rtol=1e-5)


def test_skips_frozen_and_gradless_parameters():
    a, b, c = (nn.Parameter(np.ones(2)) for _ in range(3))
    b.requires_grad = False
    opt = optim.SGD([a, b, c], lr=0.5, momentum=0.9)
    a.grad = np.ones(2)
    b.grad = np.ones(2)  # frozen: must not move even with a gradient
    opt.step()
    np.testing.assert_array_equal(a.data, 0.5)
    np.testing.assert_array_equal(b.data, 1.0)
    np.testing.assert_array_equal(c.data, 1.0)
    opt.zero_grad()
    assert a.grad is None and b.grad is None


def test_float32_parameters_stay_float32():
    p = nn.Parameter(np.ones(3, np.float32))
    for opt in (optim.SGD([p], lr=0.1, momentum=0.9, weight_decay=0.1), optim.Adam([p])):
        p.grad = np.ones(3, np.float32)
        opt.step()
        opt.step()
        assert p.data.dtype == np.float32


def test_state_dict_roundtrip_continues_identically():
    rng = np.random.default_rng(1)
    grads = [rng.standard_normal(4) for _ in range(6)]
    for cls, kw in ((optim.SGD, dict(lr=0.1, momentum=0.9)), (optim.Adam, dict(lr=0.01))):
        p = nn.Parameter(np.zeros(4))
        opt = cls([p], **kw)
        for g in grads[:3]:
            p.grad = g
            opt.step()
        sd = opt.state_dict()
        q = nn.Parameter(p.data.copy())
        opt2 = cls([q], **kw)
        opt2.load_state_dict(sd)
        for g in grads[3:]:
            p.grad = g
            q.grad = g
            opt.step()
            opt2.step()
        np.testing.assert_array_equal(p.data, q.data)


def test_load_state_dict_mismatch_leaves_optimizer_unchanged():
    p = nn.Parameter(np.zeros(4))
    opt = optim.SGD([p], lr=0.1, momentum=0.9)
    p.grad = np.ones(4)
    opt.step()
    bad = opt.state_dict()
    bad["state"][0]["momentum_buffer"] = np.zeros(5)
    bad["param_groups"][0]["lr"] = 7.0
    with pytest.raises(ValueError, match="shape"):
        opt.load_state_dict(bad)
    assert opt.param_groups[0]["lr"] == 0.1
    np.testing.assert_array_equal(opt.state[0]["momentum_buffer"], 1.0)
    with pytest.raises(ValueError, match="groups"):
        opt.load_state_dict({"state": {}, "param_groups": []})


def test_param_groups():
    a, b = nn.Parameter(np.ones(1)), nn.Parameter(np.ones(1))
    opt = optim.SGD([{"params": [a]}, {"params": [b], "lr": 0.5}], lr=0.1)
    a.grad = b.grad = np.ones(1)
    opt.step()
    np.testing.assert_allclose([a.data[0], b.data[0]], [0.9, 0.5])
    with pytest.raises(ValueError, match="more than one group"):
        optim.SGD([{"params": [a]}, {"params": [a]}], lr=0.1)


def test_argument_errors():
    p = nn.Parameter(np.ones(1))
    with pytest.raises(ValueError, match="lr"):
        optim.SGD([p], lr=-1)
    with pytest.raises(TypeError, match="lr"):
        optim.SGD([p], lr="fast")
    with pytest.raises(ValueError, match="nesterov"):
        optim.SGD([p], lr=0.1, nesterov=True)
    with pytest.raises(ValueError, match="betas"):
        optim.Adam([p], betas=(0.9, 1.0))
    with pytest.raises(ValueError, match="empty"):
        optim.Adam([])
    with pytest.raises(TypeError, match="single Parameter"):
        optim.Adam(p)
    with pytest.raises(TypeError, match="Parameters"):
        optim.Adam([np.ones(2)])
    with pytest.raises(ValueError, match="step_size"):
        optim.StepLR(optim.SGD([p], lr=0.1), 0)
    with pytest.raises(ValueError, match="T_max"):
        optim.CosineAnnealingLR(optim.SGD([p], lr=0.1), 0)


@requires_torch
@pytest.mark.torch
@pytest.mark.parametrize("kind", ["step", "cosine"])
def test_schedules_match_torch(kind):
    p = nn.Parameter(np.ones(1))
    t = torch.ones(1, requires_grad=True)
    opt, topt = optim.SGD([p], lr=0.1), torch.optim.SGD([t], lr=0.1)
    if kind == "step":
        s, ts = optim.StepLR(opt, 3, 0.5), torch.optim.lr_scheduler.StepLR(topt, 3, 0.5)
    else:
        s = optim.CosineAnnealingLR(opt, 7, 1e-3)
        ts = torch.optim.lr_scheduler.CosineAnnealingLR(topt, 7, 1e-3)
    for _ in range(9):
        assert math.isclose(s.get_last_lr()[0], ts.get_last_lr()[0], rel_tol=1e-9)
        topt.step()
        s.step()
        ts.step()


def test_schedule_values_and_state():
    p = nn.Parameter(np.ones(1))
    opt = optim.SGD([p], lr=1.0)
    s = optim.CosineAnnealingLR(opt, 4)
    lrs = []
    for _ in range(5):
        lrs.append(opt.param_groups[0]["lr"])
        s.step()
    np.testing.assert_allclose(lrs, [1, (1 + math.cos(math.pi / 4)) / 2, 0.5,
                                     (1 + math.cos(3 * math.pi / 4)) / 2, 0], atol=1e-15)
    s2 = optim.CosineAnnealingLR(optim.SGD([p], lr=1.0), 4)
    s2.load_state_dict({"last_epoch": 2, "base_lrs": [1.0]})
    assert s2.get_last_lr() == [0.5]
