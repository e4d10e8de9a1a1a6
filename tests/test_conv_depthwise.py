"""The depthwise convolution kernels (algo="depthwise": groups == C, any channel
multiplier) on native and numba: forward (with the fused output stage) and both
gradients against the NumPy reference and PyTorch over a sweep of kernel sizes, strides,
dilations and awkward sizes, on every ISA path; float64 finite differences; thread-count
invariance; the dispatcher's obstacle and the heuristic's choice."""
from __future__ import annotations

import numpy as np
import pytest

import fastconv
from fastconv._args import conv_spec
from fastconv._dispatch import obstacle
from conftest import DTYPES, assert_close, conv_inputs, randn, requires_torch, torch_conv

ISAS = ["generic", "avx2", "avx512"]


def _case(C, m, H, W, k, N=2, **kw):
    kh, kw_ = (k, k) if isinstance(k, int) else k
    return ((N, C, H, W), (m * C, 1, kh, kw_), dict(groups=C, **kw))


# (id, x_shape, w_shape, kwargs): multiplier 1 and 2, kernels 3/5/7 and rectangular,
# strides 1/2/3, dilation, odd sizes (rows not a multiple of any vector width), N=1,
# C=1, padding past the kernel's reach, kernels larger than the input, asymmetric
# "same" padding, huge padding/dilation (one zero row stands in for all of them).
DW_CASES = [
    ("k3_s1", *_case(8, 1, 9, 11, 3, padding=1)),
    ("k3_s2", *_case(6, 1, 13, 14, 3, stride=2, padding=1)),
    ("k3_s2_m2", *_case(5, 2, 15, 15, 3, stride=2, padding=1)),
    ("k5_s1", *_case(4, 1, 12, 19, 5, padding=2)),
    ("k5_s2_m2", *_case(3, 2, 17, 10, 5, stride=2, padding=2)),
    ("k7_s1", *_case(3, 1, 9, 40, 7, padding=3)),
    ("k7_s2", *_case(2, 1, 21, 23, 7, stride=2, padding=3, N=1)),
    ("dil2", *_case(4, 1, 11, 13, 3, padding=2, dilation=2)),
    ("dil_s2_m3", *_case(3, 3, 14, 13, 3, stride=2, padding=3, dilation=(3, 2))),
    ("rect_s31", *_case(4, 2, 12, 9, (3, 5), stride=(3, 1), padding=(1, 2))),
    ("c1", *_case(1, 1, 33, 37, 3, padding=1, N=3)),
    ("c1_m4", *_case(1, 4, 10, 10, 3, padding=1)),
    ("n1_7x7_960", *_case(64, 1, 7, 7, 3, padding=1, N=1)),
    ("nopad", *_case(5, 1, 8, 9, 3)),
    ("bigpad", *_case(3, 1, 4, 5, 3, padding=4)),
    ("kernel_gt_input", *_case(2, 1, 3, 3, 5, padding=2)),
    ("same_even", *_case(3, 1, 9, 8, (4, 2), padding="same")),
    ("huge_pad_dil", *_case(2, 1, 3, 3, 3, padding=40, dilation=40)),
    ("wide_row", *_case(2, 1, 5, 70, 3, stride=2, padding=1)),
    ("q1", *_case(3, 2, 6, 1, (3, 1), padding=(1, 0), N=1)),
]
DW_IDS = [c[0] for c in DW_CASES]
BACKENDS = ["native", "numba"]


def _run(x, w, b, gy, kw, backend):
    y = fastconv.conv2d(x, w, b, **kw, algo="depthwise", backend=backend)
    g = fastconv.conv2d_backward(gy, x, w, **kw, algo="depthwise", backend=backend)
    return (y,) + tuple(g)


def _check_vs_reference(xs, ws, kw, dtype, backend, what):
    x, w, b = conv_inputs(xs, ws, dtype)
    y_ref = fastconv.conv2d(x, w, b, **kw, backend="reference")
    gy = randn(y_ref.shape, dtype, 5)
    y, gx, gw, gb = _run(x, w, b, gy, kw, backend)
    gx_r, gw_r, gb_r = fastconv.conv2d_backward(gy, x, w, **kw, backend="reference")
    assert y.dtype == gx.dtype == gw.dtype == dtype
    rs = ws[2] * ws[3]
    m = ws[0] // xs[1]
    assert_close(y, y_ref, dtype, rs, f"{what} forward")
    assert_close(gx, gx_r, dtype, m * rs, f"{what} backward-data")
    n_pix = max(1, y_ref.size // max(1, ws[0]))
    assert_close(gw, gw_r, dtype, n_pix, f"{what} backward-weight")
    assert_close(gb, gb_r, dtype, n_pix, f"{what} backward-bias")


@pytest.mark.parametrize("isa", ISAS, indirect=True)
@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("name,xs,ws,kw", DW_CASES, ids=DW_IDS)
def test_native_depthwise_vs_reference(name, xs, ws, kw, dtype, isa):
    _check_vs_reference(xs, ws, kw, dtype, "native", f"{isa}/{name}")


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("name,xs,ws,kw", DW_CASES, ids=DW_IDS)
def test_numba_depthwise_vs_reference(name, xs, ws, kw, dtype):
    _check_vs_reference(xs, ws, kw, dtype, "numba", f"numba/{name}")


@requires_torch
@pytest.mark.torch
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name,xs,ws,kw", DW_CASES, ids=DW_IDS)
def test_depthwise_vs_torch(name, xs, ws, kw, backend):
    x, w, b = conv_inputs(xs, ws, np.float32)
    y_t, gy, gx_t, gw_t, gb_t = torch_conv(x, w, b, **kw)
    y, gx, gw, gb = _run(x, w, b, gy, kw, backend)
    rs = ws[2] * ws[3]
    n_pix = max(1, y_t.size // ws[0])
    assert_close(y, y_t, np.float32, rs, f"{name} forward vs torch")
    assert_close(gx, gx_t, np.float32, ws[0] // xs[1] * rs, f"{name} backward-data vs torch")
    assert_close(gw, gw_t, np.float32, n_pix, f"{name} backward-weight vs torch")
    assert_close(gb, gb_t, np.float32, n_pix, f"{name} backward-bias vs torch")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("kw", [dict(padding=1), dict(stride=2, padding=1)])
def test_depthwise_zero_batch_and_unbatched(backend, kw):
    x = np.zeros((0, 4, 7, 7), np.float32)
    w = randn((8, 1, 3, 3), np.float32)
    y = fastconv.conv2d(x, w, **kw, groups=4, algo="depthwise", backend=backend)
    ref_shape = fastconv.conv2d(x, w, **kw, groups=4, backend="reference").shape
    assert y.shape == ref_shape and y.shape[0] == 0
    gx, gw, _ = fastconv.conv2d_backward(np.zeros(ref_shape, np.float32), x, w, **kw, groups=4,
                                         algo="depthwise", backend=backend)
    assert gx.shape == x.shape and gw.shape == w.shape and not gw.any()
    xu = randn((4, 9, 8), np.float32)
    yu = fastconv.conv2d(xu, w, **kw, groups=4, algo="depthwise", backend=backend)
    assert_close(yu, fastconv.conv2d(xu, w, **kw, groups=4, backend="reference"), np.float32, 9)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("kw", [dict(padding=1), dict(stride=2, padding=2, dilation=2)])
def test_depthwise_finite_differences(backend, kw):
    """float64 gradients against central differences of sum(y * gy)."""
    x, w, _ = conv_inputs((2, 3, 7, 8), (6, 1, 3, 3), np.float64, seed=3)
    kw = dict(kw, groups=3)
    gy = randn(fastconv.conv2d(x, w, **kw, backend="reference").shape, np.float64, 4)
    gx, gw, _ = fastconv.conv2d_backward(gy, x, w, **kw, algo="depthwise", backend=backend)

    def loss(xx, ww):
        return float(np.sum(fastconv.conv2d(xx, ww, **kw, algo="depthwise", backend=backend) * gy))

    eps = 1e-6
    r = np.random.default_rng(1)
    for arr, grad, name in ((x, gx, "x"), (w, gw, "w")):
        for _ in range(12):
            i = tuple(r.integers(0, n) for n in arr.shape)
            old = arr[i]
            arr[i] = old + eps
            up = loss(x, w)
            arr[i] = old - eps
            dn = loss(x, w)
            arr[i] = old
            fd = (up - dn) / (2 * eps)
            assert abs(fd - grad[i]) <= 1e-6 * max(1.0, abs(fd)), (name, i, fd, grad[i])


CLAMPS = {"none": (-np.inf, np.inf), "relu": (0.0, np.inf), "relu6": (0.0, 6.0)}


@pytest.mark.parametrize("isa", ISAS, indirect=True)
@pytest.mark.parametrize("clamp", list(CLAMPS))
@pytest.mark.parametrize("with_residual", [False, True])
@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("name,xs,ws,kw", [c for c in DW_CASES if c[0] in
                                           ("k3_s1", "k3_s2_m2", "k7_s2", "q1", "c1")])
def test_native_depthwise_fused_output_stage(name, xs, ws, kw, dtype, with_residual, clamp,
                                             isa):
    from fastconv.backends.native import conv as native_conv

    x, w, b = conv_inputs(xs, ws, dtype)
    x = x * 4  # so that ReLU6 clamps at both ends
    spec = conv_spec(x.shape, w.shape, kw.get("stride", 1), kw.get("padding", 0),
                     kw.get("dilation", 1), kw["groups"])
    ref = fastconv.conv2d(x.astype(np.float64), w.astype(np.float64), b.astype(np.float64),
                          **kw, backend="reference")
    res = randn(ref.shape, dtype, 11) if with_residual else None
    if res is not None:
        ref = ref + res
    lo, hi = CLAMPS[clamp]
    ref = np.minimum(np.maximum(ref, lo), hi)
    y = native_conv.conv2d_forward(x, w, b, spec, "depthwise", residual=res, clamp=(lo, hi))
    assert_close(y, ref, dtype, ws[2] * ws[3], f"{isa}/{name}")


@pytest.mark.parametrize("isa", ISAS, indirect=True)
def test_native_depthwise_clamp_keeps_nan(isa):
    from fastconv.backends.native import conv as native_conv

    x = np.ones((1, 2, 5, 19), np.float32)
    x[0, 1, 2, 17] = np.nan  # in the scalar tail of an 8- or 16-lane row
    x[0, 0, 2, 3] = np.nan   # in a full vector
    w = np.zeros((2, 1, 1, 1), np.float32) + 1
    spec = conv_spec(x.shape, w.shape, 1, 0, 1, 2)
    y = native_conv.conv2d_forward(x, w, None, spec, "depthwise", clamp=(0.0, 6.0))
    assert np.isnan(y[0, 1, 2, 17]) and np.isnan(y[0, 0, 2, 3])
    assert np.count_nonzero(np.isnan(y)) == 2


def test_native_depthwise_thread_invariance(threads):
    """One thread and every thread give the same bits (tasks never share outputs, and
    the weight gradient adds its partial sums in a fixed order)."""
    x, w, b = conv_inputs((1, 6, 17, 15), (12, 1, 3, 3), np.float32)
    gy = randn((1, 12, 9, 8), np.float32, 2)
    kw = dict(stride=2, padding=1, groups=6)
    outs = []
    for n in (1, 2, 3):
        fastconv.set_num_threads(n)
        outs.append(_run(x, w, b, gy, kw, "native"))
    for o in outs[1:]:
        for a, e in zip(o, outs[0]):
            np.testing.assert_array_equal(a, e)


def test_depthwise_obstacle_and_named_refusal():
    dw = conv_spec((1, 8, 9, 9), (16, 1, 3, 3), 1, 1, 1, 8)
    assert obstacle("depthwise", dw) is None
    grouped = conv_spec((1, 8, 9, 9), (8, 2, 3, 3), 1, 1, 1, 4)
    dense = conv_spec((1, 8, 9, 9), (8, 8, 3, 3), 1, 1, 1, 1)
    assert "groups" in obstacle("depthwise", grouped)
    assert "groups" in obstacle("depthwise", dense)
    x = randn((1, 8, 9, 9), np.float32)
    for backend in BACKENDS:
        with pytest.raises(ValueError, match="depthwise.*groups"):
            fastconv.conv2d(x, randn((8, 2, 3, 3), np.float32), groups=4, algo="depthwise",
                            backend=backend)


def test_native_binding_refuses_non_depthwise():
    from fastconv import _native

    x = np.zeros((1, 4, 5, 5), np.float32)
    w = np.zeros((4, 2, 3, 3), np.float32)
    y = np.zeros((1, 4, 3, 3), np.float32)
    with pytest.raises(ValueError, match="depthwise"):
        _native.conv_depthwise_fwd(x, w, None, y, (1, 1), (0, 0), (1, 1), 2)


@pytest.mark.parametrize("op", ["conv2d_forward", "conv2d_backward_data",
                                "conv2d_backward_weight"])
def test_heuristic_picks_depthwise(op):
    """algo='auto' takes the depthwise kernel for every depthwise layer, on native
    (bench/depthwise.py) and numba (2.3x-120x its im2col), and never for grouped or dense
    layers."""
    from fastconv._dispatch import choose_conv_algo, get_backend
    from fastconv._heuristics import pick

    for backend in BACKENDS:
        name, mod = get_backend(backend, "numpy", np.dtype("float32"), op)
        for xs, ws, st, g in [((1, 960, 7, 7), (960, 1, 3, 3), 1, 960),
                              ((1, 144, 56, 56), (144, 1, 3, 3), 2, 144),
                              ((8, 32, 112, 112), (64, 1, 5, 5), 1, 32)]:
            spec = conv_spec(xs, ws, st, 1, 1, g)
            choice = choose_conv_algo(name, mod, op, spec, np.float32, "auto")
            assert choice == "depthwise", (backend, choice)
        grouped = conv_spec((1, 8, 9, 9), (8, 2, 3, 3), 1, 1, 1, 4)
        assert choose_conv_algo(name, mod, op, grouped, np.float32, "auto") != "depthwise"
    dw = conv_spec((1, 960, 7, 7), (960, 1, 3, 3), 1, 1, 1, 960)
    assert pick("native", op, dw, "float32", ["direct", "im2col", "depthwise"]) == "depthwise"
    # Without the depthwise kernel the old rule stands.
    assert pick("native", op, dw, "float32", ["direct", "im2col"]) == "direct"


# ----------------------------------------------------------------- numba tap_range fix
@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("pd,algo", [(20, "auto"), (20, "im2col"), (20, "direct"),
                                     (10000, "auto"), (10000, "im2col")])
def test_numba_padding_and_dilation_past_the_output(pd, algo, dtype):
    """Issue 18 item 2: with padding = dilation = 20 on a 3x3 input the im2col packing's
    tap range started past the output row and zero-filled into the next rows (wrong
    results); at 10000 it wrote far out of bounds (a segfault). (The direct kernel pads a
    copy of the input, 20003 x 20003 at 10000, so it is only run at 20.)"""
    x, w, _ = conv_inputs((2, 3, 3, 3), (3, 3, 3, 3), dtype, seed=4)
    ref = fastconv.conv2d(x, w, padding=pd, dilation=pd, backend="reference")
    for _ in range(3):  # the old corruption depended on thread interleaving
        y = fastconv.conv2d(x, w, padding=pd, dilation=pd, algo=algo, backend="numba")
        assert_close(y, ref, dtype, 27, f"numba {algo} padding=dilation={pd}")


# ----------------------------------------------------------------- CUDA, host-emulated
# csrc/cuda/conv_depthwise.cu compiled for the CPU against tests/host_emu.cuh and driven
# by the cuda backend's own launch code: index arithmetic only, never a GPU run.
@pytest.fixture(scope="module")
def cuda_emu(tmp_path_factory):
    import _hostemu

    if _hostemu.compiler() is None:
        pytest.skip("no host C++ compiler for the emulation")
    with _hostemu.emulate(tmp_path_factory.mktemp("cuda_emu_dw")) as be:
        yield be


@pytest.mark.parametrize("name,xs,ws,kw", DW_CASES, ids=DW_IDS)
def test_cuda_depthwise_host_emulated(cuda_emu, name, xs, ws, kw):
    from fastconv.backends import reference as REF
    import _hostemu

    be, W = cuda_emu, _hostemu._wrap
    x, w, b = conv_inputs(xs, ws, np.float32)
    spec = conv_spec(xs, ws, kw.get("stride", 1), kw.get("padding", 0), kw.get("dilation", 1),
                     kw["groups"])
    gy = randn(spec.y_shape, np.float32, 4)
    rs = ws[2] * ws[3]
    assert "depthwise" in be.ALGOS["conv2d_backward_weight"]
    assert_close(be.conv2d_forward(W(x), W(w), W(b), spec, "depthwise"),
                 REF.conv2d_forward(x, w, b, spec), np.float32, rs, "forward")
    assert_close(be.conv2d_backward_data(W(gy), W(w), spec, "depthwise"),
                 REF.conv2d_backward_data(gy, w, spec), np.float32, ws[0] // xs[1] * rs, "grad_x")
    assert_close(be.conv2d_backward_weight(W(gy), W(x), spec, "depthwise"),
                 REF.conv2d_backward_weight(gy, x, spec), np.float32,
                 spec.N * spec.P * spec.Q, "grad_w")
