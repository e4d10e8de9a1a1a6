"""conv_transpose2d / conv_transpose2d_backward / nn.ConvTranspose2d: every CPU backend and
data-gradient algorithm against PyTorch (a fixed edge-case list and a seeded held-out
sweep over stride, padding, output_padding, dilation and groups), float64 finite
differences, torch's errors, and the identity it is built on (the convolution's data
gradient, through the dispatcher)."""
from __future__ import annotations

import numpy as np
import pytest

import fastconv as fc
import fastconv.nn as nn
from fastconv import _dispatch
from fastconv.functional_family import _transpose_spec

from _backends import CPU_BACKENDS, dtypes, module
from conftest import assert_close, fd_grad, randn, requires_torch

try:
    import torch
    import torch.nn.functional as TF
except ImportError:  # torch is an optional oracle
    torch = TF = None

# (name, x_shape, w_shape (C_in, C_out/groups, R, S), kwargs)
CASES = [
    ("basic", (2, 3, 5, 5), (3, 4, 3, 3), dict()),
    ("dcgan_s2p1", (2, 8, 4, 4), (8, 4, 4, 4), dict(stride=2, padding=1)),
    ("s2_outpad1", (1, 4, 5, 6), (4, 3, 3, 3), dict(stride=2, padding=1, output_padding=1)),
    ("s3_outpad2_rect", (2, 3, 4, 5), (3, 2, 3, 2), dict(stride=(3, 2), padding=(1, 0),
                                                         output_padding=(2, 1))),
    ("dilated", (1, 3, 6, 5), (3, 5, 3, 3), dict(dilation=2, padding=1)),
    # output_padding >= stride is legal when it is below the dilation.
    ("outpad_below_dilation", (2, 2, 4, 4), (2, 3, 3, 3), dict(dilation=3, output_padding=2)),
    ("groups2", (2, 6, 5, 5), (6, 2, 3, 3), dict(groups=2, stride=2, padding=1)),
    ("depthwise", (2, 4, 6, 6), (4, 1, 3, 3), dict(groups=4, padding=1)),
    ("depthwise_mult2", (1, 3, 5, 4), (3, 2, 4, 4), dict(groups=3, stride=2, padding=1)),
    ("1x1", (2, 7, 3, 5), (7, 5, 1, 1), dict()),
    ("1x1_stride2", (2, 5, 3, 3), (5, 4, 1, 1), dict(stride=2, output_padding=1)),
    ("c1_to_c3", (1, 1, 6, 6), (1, 3, 5, 5), dict(stride=2, padding=2, output_padding=1)),
    ("big_padding", (1, 3, 6, 6), (3, 2, 5, 5), dict(padding=3)),
    ("wide", (1, 17, 5, 3), (17, 19, 3, 3), dict(padding=1)),
    ("n0", (0, 3, 4, 4), (3, 2, 3, 3), dict(stride=2)),
    ("unbatched", (3, 4, 4), (3, 2, 3, 3), dict(stride=2, padding=1, output_padding=1)),
]
IDS = [c[0] for c in CASES]


def _sweep(n=24, seed=2024):
    """Seeded random configurations, generated and never tuned (held out)."""
    g = np.random.default_rng(seed)
    out = []
    while len(out) < n:
        groups = int(g.choice([1, 1, 2, 3]))
        cin = groups * int(g.integers(1, 4))
        cout = groups * int(g.integers(1, 4))
        R, S = (int(v) for v in g.integers(1, 5, 2))
        stride = tuple(int(v) for v in g.integers(1, 4, 2))
        dilation = tuple(int(v) for v in g.integers(1, 3, 2))
        padding = tuple(int(v) for v in g.integers(0, 3, 2))
        op = tuple(int(g.integers(0, max(s, d))) for s, d in zip(stride, dilation))
        H, W = (int(v) for v in g.integers(1, 7, 2))
        kw = dict(stride=stride, padding=padding, output_padding=op, dilation=dilation,
                  groups=groups)
        outs = [(n_ - 1) * s - 2 * p + d * (k - 1) + o + 1 for n_, s, p, d, k, o in
                zip((H, W), stride, padding, dilation, (R, S), op)]
        if min(outs) < 1:
            continue
        out.append((f"sweep{len(out)}", (int(g.integers(1, 3)), cin, H, W),
                    (cin, cout // groups, R, S), kw))
    return out


SWEEP = _sweep()


def _case_inputs(case, dtype):
    name, xs, ws, kw = case
    g = kw.get("groups", 1)
    x = randn(xs, dtype, 0)
    w = randn(ws, dtype, 1)
    b = randn((ws[1] * g,), dtype, 2)
    return x, w, b


def _torch(x, w, b, gy_seed=9, **kw):
    xt = torch.from_numpy(np.ascontiguousarray(x)).requires_grad_()
    wt = torch.from_numpy(w).requires_grad_()
    bt = torch.from_numpy(b).requires_grad_()
    y = TF.conv_transpose2d(xt, wt, bt, **kw)
    gy = torch.from_numpy(randn(tuple(y.shape), x.dtype, gy_seed))
    y.backward(gy)
    return y.detach().numpy(), gy.numpy(), xt.grad.numpy(), wt.grad.numpy(), bt.grad.numpy()


def _terms(ws, kw):
    # Terms summed per output element: at most C_in * R * S.
    return ws[0] * ws[2] * ws[3]


def _params(cases):
    return [pytest.param(be, dt, c, id=f"{be}-{np.dtype(dt).name}-{c[0]}")
            for be in CPU_BACKENDS for dt in dtypes(be) for c in cases]


@requires_torch
@pytest.mark.parametrize("backend,dtype,case", _params(CASES + SWEEP))
def test_forward_backward_match_torch(backend, dtype, case):
    name, xs, ws, kw = case
    x, w, b = _case_inputs(case, dtype)
    ty, gy, tgx, tgw, tgb = _torch(x, w, b, **kw)
    y = fc.conv_transpose2d(x, w, b, **kw, backend=backend)
    assert y.dtype == dtype and y.shape == ty.shape
    n = _terms(ws, kw)
    assert_close(y, ty, np.float32, n, f"{name} forward")
    gx, gw, gb = fc.conv_transpose2d_backward(gy, x, w, **kw, backend=backend)
    assert gx.shape == x.shape and gw.shape == w.shape and gb.shape == b.shape
    assert_close(gx, tgx, np.float32, n, f"{name} grad_x")
    assert_close(gw, tgw, np.float32, n * max(1, y.size // max(1, y.shape[1])), f"{name} grad_w")
    assert_close(gb, tgb, np.float32, max(1, y.size), f"{name} grad_b")


def _algo_params():
    """(backend, algo, case) for every data-gradient algorithm able to serve the case."""
    out = []
    for be in CPU_BACKENDS:
        for algo in _dispatch.implemented_algos(module(be), "conv2d_backward_data"):
            for case in CASES:
                name, xs, ws, kw = case
                x4 = xs if len(xs) == 4 else (1, *xs)
                spec, _ = _transpose_spec("t", x4, ws, kw.get("stride", 1),
                                          kw.get("padding", 0), kw.get("output_padding", 0),
                                          kw.get("groups", 1), kw.get("dilation", 1))
                if _dispatch.obstacle(algo, spec) is None:
                    out.append(pytest.param(be, algo, case, id=f"{be}-{algo}-{name}"))
    return out


@pytest.mark.parametrize("backend,algo,case", _algo_params())
def test_every_data_gradient_algorithm_against_reference(backend, algo, case):
    name, xs, ws, kw = case
    x, w, b = _case_inputs(case, np.float32)
    y = fc.conv_transpose2d(x, w, b, **kw, algo=algo, backend=backend)
    x64, w64, b64 = (a.astype(np.float64) for a in (x, w, b))
    expect = fc.conv_transpose2d(x64, w64, b64, **kw, backend="reference")
    assert_close(y, expect, np.float32, _terms(ws, kw), f"{backend}/{algo}/{name}")
    gy = randn(y.shape, np.float32, 4)
    gx, gw, gb = fc.conv_transpose2d_backward(gy, x, w, **kw, algo=algo, backend=backend)
    egx, egw, egb = fc.conv_transpose2d_backward(gy.astype(np.float64), x64, w64, **kw,
                                                 backend="reference")
    assert_close(gx, egx, np.float32, _terms(ws, kw), f"{backend}/{algo}/{name} grad_x")
    assert_close(gw, egw, np.float32, max(1, gy.size), f"{backend}/{algo}/{name} grad_w")


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_is_the_convolution_data_gradient(backend):
    """Forward == conv2d_backward's grad_x of the convolution it transposes, bit for bit
    (the same kernel through the same dispatcher decision)."""
    x, w, _ = _case_inputs(CASES[2], np.float32)
    kw = dict(stride=2, padding=1)
    y = fc.conv_transpose2d(x, w, None, output_padding=1, **kw, backend=backend)
    z = np.zeros(y.shape, np.float32)
    gx, _, _ = fc.conv2d_backward(x, z, w, **kw, need_weight_grad=False,
                                  need_bias_grad=False, backend=backend)
    np.testing.assert_array_equal(y, gx)
    gy = randn(y.shape, np.float32, 3)
    tgx, _, _ = fc.conv_transpose2d_backward(gy, x, w, output_padding=1, **kw,
                                             need_weight_grad=False, backend=backend)
    np.testing.assert_array_equal(tgx, fc.conv2d(gy, w, None, **kw, backend=backend))


FD_CASES = [
    ("fd_s2_outpad_groups", (2, 4, 3, 3), (4, 1, 3, 2), dict(stride=(2, 1), padding=(1, 0),
                                                            output_padding=(1, 0), groups=2)),
    ("fd_dilated_outpad", (1, 2, 3, 4), (2, 2, 2, 3), dict(dilation=2, output_padding=1,
                                                          padding=1)),
]


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("case", FD_CASES, ids=[c[0] for c in FD_CASES])
def test_gradients_finite_differences(case, backend):
    name, xs, ws, kw = case
    x, w, b = _case_inputs(case, np.float64)
    G = randn(fc.conv_transpose2d(x, w, b, **kw, backend="reference").shape, np.float64, 5)

    def loss():
        return float((fc.conv_transpose2d(x, w, b, **kw, backend=backend) * G).sum())

    gx, gw, gb = fc.conv_transpose2d_backward(G, x, w, **kw, backend=backend)
    np.testing.assert_allclose(gx, fd_grad(loss, x), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(gw, fd_grad(loss, w), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(gb, fd_grad(loss, b), rtol=1e-6, atol=1e-7)


def test_need_flags_and_none():
    x, w, b = _case_inputs(CASES[1], np.float32)
    y = fc.conv_transpose2d(x, w, b, stride=2, padding=1)
    gx, gw, gb = fc.conv_transpose2d_backward(y, x, w, stride=2, padding=1,
                                              need_input_grad=False, need_weight_grad=False,
                                              need_bias_grad=False)
    assert gx is None and gw is None and gb is None


ERRORS = [
    # (x_shape, w_shape, kwargs, exception, words in the message)
    ((1, 3, 4, 4), (3, 2, 3, 3), dict(stride=2, output_padding=2), ValueError,
     "output_padding must be smaller than either stride or dilation"),
    ((1, 3, 4, 4), (3, 2, 3, 3), dict(output_padding=1), ValueError, "output_padding"),
    ((1, 3, 4, 4), (4, 2, 3, 3), dict(), ValueError, "channels"),
    ((1, 3, 4, 4), (3, 2, 3, 3), dict(groups=2), ValueError, "groups=2"),
    ((1, 3, 1, 1), (3, 2, 1, 1), dict(padding=1), ValueError, "output size"),
    ((1, 3, 4, 4), (3, 2, 3, 3), dict(padding="same"), ValueError, "padding"),
    ((1, 3, 4, 4), (3, 2, 3, 3), dict(padding=-1), ValueError, "padding"),
    ((1, 3, 4, 4), (3, 2, 3, 3), dict(stride=0), ValueError, "stride"),
    ((1, 3, 4, 4), (3, 2, 3, 3), dict(dilation=0), ValueError, "dilation"),
    ((1, 3, 4, 4), (3, 2, 3, 3), dict(output_padding=-1), ValueError, "output_padding"),
    ((1, 3, 4, 4), (3, 2, 3), dict(), ValueError, "weight must be 4-D"),
    ((3, 4), (3, 2, 3, 3), dict(), ValueError, "input"),
]


@pytest.mark.parametrize("xs,ws,kw,exc,words", ERRORS)
def test_errors(xs, ws, kw, exc, words):
    x, w = np.zeros(xs, np.float32), np.zeros(ws, np.float32)
    with pytest.raises(exc, match=words):
        fc.conv_transpose2d(x, w, **kw)


@requires_torch
@pytest.mark.parametrize("kw", [dict(stride=2, output_padding=2), dict(output_padding=1),
                                dict(padding=1, stride=1)], ids=["op_ge_s", "op1_s1", "neg"])
def test_torch_refuses_what_we_refuse(kw):
    """The size errors above are torch's own: it refuses the same arguments."""
    xs = (1, 3, 1, 1) if kw.get("padding") else (1, 3, 4, 4)
    ws = (3, 2, 1, 1) if kw.get("padding") else (3, 2, 3, 3)
    with pytest.raises(RuntimeError):
        TF.conv_transpose2d(torch.zeros(xs), torch.zeros(ws), **kw)
    with pytest.raises(ValueError):
        fc.conv_transpose2d(np.zeros(xs, np.float32), np.zeros(ws, np.float32), **kw)


def test_backward_errors():
    x, w = np.zeros((1, 3, 4, 4), np.float32), np.zeros((3, 2, 3, 3), np.float32)
    with pytest.raises(ValueError, match="grad_out"):
        fc.conv_transpose2d_backward(np.zeros((1, 2, 5, 5), np.float32), x, w)
    with pytest.raises(TypeError, match="dtype"):
        fc.conv_transpose2d_backward(np.zeros((1, 2, 6, 6), np.float64), x, w)
    with pytest.raises(ValueError, match="bias"):
        fc.conv_transpose2d(x, w, np.zeros(3, np.float32))


# ----------------------------------------------------------------------------- layer


@requires_torch
@pytest.mark.parametrize("args,kw,call", [
    ((4, 6, 3), dict(stride=2, padding=1, output_padding=1, groups=2), {}),
    ((4, 6, (4, 3)), dict(stride=2, padding=1, bias=False, dilation=(1, 2)), {}),
    ((4, 6, 3), dict(stride=2, padding=1), dict(output_size=(10, 12))),
], ids=["groups_outpad", "nobias_dilated", "output_size"])
def test_layer_matches_torch_twin(args, kw, call):
    fm = nn.ConvTranspose2d(*args, **kw, dtype=np.float64)
    tm = torch.nn.ConvTranspose2d(*args, **kw, dtype=torch.float64)
    assert list(fm.state_dict()) == list(tm.state_dict())
    assert fm.weight.shape == tuple(tm.weight.shape)
    tm.load_state_dict({k: torch.from_numpy(np.asarray(v)) for k, v in fm.state_dict().items()})
    x = randn((2, 4, 5, 6), np.float64, 1)
    xt = torch.from_numpy(x).requires_grad_()
    yt = tm(xt, **call)
    y = fm(x, **call)
    np.testing.assert_allclose(y, yt.detach().numpy(), rtol=1e-10, atol=1e-12)
    gy = randn(y.shape, np.float64, 2)
    yt.backward(torch.from_numpy(gy))
    gx = fm.backward(gy)
    np.testing.assert_allclose(gx, xt.grad.numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(fm.weight.grad, tm.weight.grad.numpy(), rtol=1e-10, atol=1e-11)
    if fm.bias is not None:
        np.testing.assert_allclose(fm.bias.grad, tm.bias.grad.numpy(), rtol=1e-10, atol=1e-11)
    # Gradients accumulate.
    fm(x, **call)
    fm.backward(gy)
    np.testing.assert_allclose(fm.weight.grad, 2 * tm.weight.grad.numpy(), rtol=1e-10,
                               atol=1e-11)


def test_layer_init_is_torchs_kaiming_uniform():
    """fan_in is weight.shape[1] * kH * kW = (out/groups) * k * k, as torch computes it."""
    m = nn.ConvTranspose2d(64, 32, 4, groups=2)
    bound = 1 / np.sqrt(16 * 4 * 4)
    assert m.weight.shape == (64, 16, 4, 4)
    assert np.abs(m.weight.data).max() <= bound
    assert np.abs(m.weight.data).max() > 0.9 * bound
    assert np.abs(m.bias.data).max() <= bound


def test_layer_errors():
    with pytest.raises(ValueError, match="output_padding"):
        nn.ConvTranspose2d(3, 4, 3, stride=1, output_padding=1)
    with pytest.raises(ValueError, match="groups"):
        nn.ConvTranspose2d(3, 4, 3, groups=2)
    m = nn.ConvTranspose2d(3, 4, 3, stride=2)
    with pytest.raises(ValueError, match="valid sizes"):
        m(np.zeros((1, 3, 4, 4), np.float32), output_size=(12, 12))
    with pytest.raises(RuntimeError):
        m.backward(np.zeros((1, 4, 9, 9), np.float32))


# ----------------------------------------------------------------------------- summary


def test_summary_knows_the_new_layers():
    from fastconv import shapes
    from fastconv.nn.summary import summary, summary_rows

    g = nn.Sequential(nn.ConvTranspose2d(100, 64, 4, 1, 0, bias=False), nn.GroupNorm(8, 64),
                      nn.ReLU(), nn.ConvTranspose2d(64, 32, 4, 2, 1, output_padding=1),
                      nn.InstanceNorm2d(32, affine=True), nn.ConvTranspose2d(32, 3, 3, 2, 1),
                      nn.LayerNorm((3, 17, 17)))
    rows, out = summary_rows(g, (2, 100, 1, 1))
    assert [r.out_shape for r in rows] == [(2, 64, 4, 4)] * 3 + [(2, 32, 9, 9)] * 2 + \
        [(2, 3, 17, 17)] * 2
    x = np.zeros((2, 100, 1, 1), np.float32)
    with nn.no_grad():
        assert g(x).shape == out == (2, 3, 17, 17)
    assert [r.params for r in rows] == [100 * 64 * 16, 128, 0, 64 * 32 * 16 + 32, 64, 32 * 3 * 9
                                        + 3, 2 * 3 * 17 * 17]
    # FLOPs: 2 per multiply-add, one per (input pixel, output channel, kernel tap).
    assert rows[0].flops == 2 * 2 * 100 * 1 * 64 * 16
    assert rows[3].flops == 2 * 2 * 64 * 16 * 32 * 16
    assert rows[5].flops == 2 * 2 * 32 * 81 * 3 * 9
    # Receptive field: ceil(4/1)=4 taps, then ceil(4/2)=2 at jump 1, then ceil(3/2)=2 at
    # jump 1/2 -> 4, 5, 5.5 (shown rounded up: 6).
    assert [r.rf[0] for r in rows] == [4, 4, 4, 5, 5, 6, 6]
    assert shapes.conv_transpose_out_size(4, 4, 1, 2, 1, 1) == 9
    with pytest.raises(ValueError, match="output_padding"):
        shapes.conv_transpose_out_size(4, 4, 1, 2, output_padding=2)
    assert "ConvTranspose2d" in summary(g, (100, 1, 1))

    c = nn.Sequential(nn.Conv1d(3, 8, 5, padding="same"), nn.ReLU(),
                      nn.Conv1d(8, 16, 3, stride=2, dilation=2, groups=2))
    rows, out = summary_rows(c, (3, 64))
    assert out == (1, 16, 30) and [r.rf[0] for r in rows] == [5, 5, 9]
    assert rows[0].flops == 2 * 8 * 64 * 3 * 5 and rows[2].flops == 2 * 16 * 30 * 4 * 3
    with nn.no_grad():
        assert c(np.zeros((1, 3, 64), np.float32)).shape == out
    with pytest.raises(ValueError, match=r"\(N, C, L\)"):
        summary_rows(c, (1, 3, 8, 8))


# (C_in, C_out, H=W, stride, padding) of DCGAN's generator (4x4 kernels) -> whether each op
# of the transposed layer runs on im2col under algo="auto" on native (measured faster there
# for all three ops: a 1x1 input, and C_in * 16 >= 4096; the others keep the heuristic's
# choice for the equivalent convolution).
DCGAN = [((100, 512, 1, 1, 0), True), ((512, 256, 4, 2, 1), True), ((256, 128, 8, 2, 1), True),
         ((128, 64, 16, 2, 1), False), ((64, 3, 32, 2, 1), False)]
OPS = ("conv2d_backward_data", "conv2d_forward", "conv2d_backward_weight")


@pytest.mark.parametrize("N", [1, 8])
@pytest.mark.parametrize("layer,im2col", DCGAN, ids=[f"{c[0]}to{c[1]}@{c[2]}" for c, _ in DCGAN])
def test_native_auto_algorithm_on_dcgan_layers(layer, im2col, N, monkeypatch):
    """The ops conv_transpose2d and its backward run under algo="auto" on native: im2col on
    the layers measured faster with it, the dispatcher's own choice on the others; the
    autotuner and a named algorithm are left alone."""
    from fastconv import autotune
    from fastconv.functional_family import _transposed_algo

    Cin, Cout, H, s, p = layer
    spec, extra = _transpose_spec("t", (N, Cin, H, H), (Cin, Cout, 4, 4), s, p, 0, 1, 1)
    assert extra == (0, 0)
    mod = _dispatch._load("native")
    f32 = np.dtype(np.float32)
    for op in OPS:
        got = _transposed_algo("native", mod, op, spec, f32, "auto", None, (H, H))
        plain = _dispatch.choose_conv_algo("native", mod, op, spec, f32, "auto")
        assert got == ("im2col" if im2col else plain), (op, got, plain)
        assert _transposed_algo("native", mod, op, spec, f32, "direct", None, (H, H)) == "direct"
    # End to end: the native entry points see exactly those algorithms.
    seen = []
    for op in OPS:
        real = getattr(mod, op)

        def spy(*args, _real=real, _op=op):
            seen.append((_op, args[-1]))
            return _real(*args)

        monkeypatch.setattr(mod, op, spy)
    g = np.random.default_rng(0)
    x = g.standard_normal((N, Cin, H, H), dtype=np.float32)
    w = g.standard_normal((Cin, Cout, 4, 4), dtype=np.float32)
    y = fc.conv_transpose2d(x, w, None, s, p)
    fc.conv_transpose2d_backward(np.ones_like(y), x, w, s, p)
    assert [op for op, _ in seen] == list(OPS)
    if im2col:
        assert {a for _, a in seen} == {"im2col"}, seen
        monkeypatch.setattr(autotune, "enabled", lambda: True)
        # With the autotuner on, the dispatcher (its cache or timing) decides, not this rule.
        calls = []
        monkeypatch.setattr(_dispatch, "choose_conv_algo",
                            lambda *a, **k: calls.append(a[5]) or "direct")
        from fastconv import functional_family as ff

        monkeypatch.setattr(ff, "choose_conv_algo", _dispatch.choose_conv_algo)
        assert ff._transposed_algo("native", mod, OPS[0], spec, f32, "auto", None, (H, H)) \
            == "direct"
        assert calls == ["auto"]
