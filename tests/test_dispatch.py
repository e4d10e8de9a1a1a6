"""The dispatcher's decisions: backend from the array type, algorithm from the shape,
refusals with reasons, thread settings, backends() report."""
from __future__ import annotations

import numpy as np
import pytest

import fastconv as fc
from fastconv import _dispatch
from fastconv._args import conv_spec


def test_backends_report_every_name_with_reason():
    info = fc.backends()
    assert set(info) == {"native", "numba", "cuda", "numba_cuda", "reference"}
    for name, st in info.items():
        assert isinstance(st["available"], bool)
        assert st["available"] or st["reason"], name
    assert info["native"]["available"] and info["reference"]["available"]
    import fastconv.backends.reference  # noqa: F401  (shadows the attribute; still callable)

    assert fc.backends() == info


def test_numpy_goes_to_native():
    name, mod = _dispatch.get_backend(None, "numpy", np.dtype(np.float32), "conv2d")
    assert name == "native"


def test_cupy_arrays_go_to_cuda():
    with pytest.raises(RuntimeError, match="backend 'cuda' is not available") as e:
        _dispatch.get_backend(None, "cupy", np.dtype(np.float32), "conv2d")
    if fc.backends()["cuda"]["available"]:  # pragma: no cover - GPU machines only
        pytest.fail("cuda is available but the lookup failed: " + str(e.value))


def _choice(op, xs, ws, **kw):
    mod = _dispatch.load_backend("native")
    return _dispatch.choose_conv_algo("native", mod, op, conv_spec(xs, ws, **kw),
                                      np.dtype(np.float32), "auto")


def test_auto_never_picks_an_algorithm_that_cannot_serve():
    for kw in (dict(stride=2, padding=1), dict(dilation=2, padding=2), dict(groups=2, padding=1)):
        a = _choice("conv2d_forward", (2, 64, 28, 28), (64, 32 if kw.get("groups") else 64, 3, 3),
                    **kw)
        assert not a.startswith("winograd"), (kw, a)
    assert not _choice("conv2d_forward", (2, 64, 28, 28), (64, 64, 5, 5), padding=2) \
        .startswith("winograd")


def test_auto_choice_is_deterministic_and_implemented():
    mod = _dispatch.load_backend("native")
    for op in _dispatch.CONV_OPS:
        a = _choice(op, (16, 64, 56, 56), (64, 64, 3, 3), padding=1)
        assert a in _dispatch.implemented_algos(mod, op)
        assert a == _choice(op, (16, 64, 56, 56), (64, 64, 3, 3), padding=1)


def test_winograd_weight_gradient_uses_another_algorithm():
    mod = _dispatch.load_backend("native")
    if "winograd_f43" not in _dispatch.implemented_algos(mod, "conv2d_forward"):
        pytest.skip("native Winograd is not built in this checkout")
    spec = conv_spec((1, 8, 8, 8), (8, 8, 3, 3), padding=1)
    a = _dispatch.choose_conv_algo("native", mod, "conv2d_backward_weight", spec,
                                   np.dtype(np.float32), "winograd_f43")
    assert not a.startswith("winograd")


def test_named_algorithm_not_implemented_is_refused():
    x, w = np.zeros((1, 2, 5, 5), np.float32), np.zeros((2, 2, 3, 3), np.float32)
    with pytest.raises(ValueError, match="implicit_gemm.*not implemented by backend 'native'"):
        fc.conv2d(x, w, algo="implicit_gemm")


def test_reference_backend_refuses_unknown_dtype_and_library():
    with pytest.raises(TypeError, match="float16"):
        fc.relu(np.zeros(3, np.float16), backend="reference")


def test_set_num_threads_roundtrip_and_validation():
    before = fc.get_num_threads()
    try:
        fc.set_num_threads(1)
        assert fc.get_num_threads() == 1
        from fastconv import _native

        assert _native.num_threads() == 1
    finally:
        fc.set_num_threads(before)
    with pytest.raises(ValueError, match="n must be a non-negative int"):
        fc.set_num_threads(-1)


def test_threads_env_variable(tmp_path):
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", "import fastconv; print(fastconv.get_num_threads())"],
                         env={**__import__("os").environ, "FASTCONV_NUM_THREADS": "1"},
                         capture_output=True, text=True, check=True, cwd=tmp_path)
    assert out.stdout.strip() == "1"


@pytest.mark.parametrize("how", ["env", "call"])
def test_thread_count_reaches_a_backend_loaded_later(tmp_path, how):
    """The count set before the first op (by FASTCONV_NUM_THREADS or set_num_threads) is
    the one the native kernels run with once the backend loads."""
    import os
    import subprocess
    import sys

    env = dict(os.environ)
    env.pop("FASTCONV_NUM_THREADS", None)
    if how == "env":
        env["FASTCONV_NUM_THREADS"] = "1"
    code = ("import numpy as np, fastconv\n"
            + ("fastconv.set_num_threads(1)\n" if how == "call" else "")
            + "fastconv.conv2d(np.zeros((1, 1, 3, 3), 'f4'), np.zeros((1, 1, 3, 3), 'f4'))\n"
            "from fastconv import _native\nprint(_native.num_threads())")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                         text=True, check=True, cwd=tmp_path)
    assert out.stdout.strip() == "1"


def test_import_does_not_import_numba_or_torch(tmp_path):
    import subprocess
    import sys

    code = ("import sys, fastconv, numpy as np; fastconv.conv2d(np.zeros((1,1,3,3),'f4'), "
            "np.zeros((1,1,3,3),'f4')); print('numba' in sys.modules, 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=tmp_path)
    assert out.stdout.split() == ["False", "False"]


@pytest.mark.parametrize("isa", ["generic", "avx2", "avx512"])
def test_isa_paths_agree(isa):
    from fastconv import _native

    if isa not in _native.compiled_isas().split():
        pytest.skip(f"{isa} path not compiled on this architecture")
    best = _native.active_isa()
    x = np.random.default_rng(0).standard_normal((2, 8, 9, 9)).astype(np.float32)
    w = np.random.default_rng(1).standard_normal((5, 8, 3, 3)).astype(np.float32)
    ref = fc.conv2d(x, w, padding=1, backend="reference")
    try:
        _native.set_isa(isa)
    except ValueError:
        pytest.skip(f"this CPU lacks {isa}")
    try:
        y = fc.conv2d(x, w, padding=1, algo="direct")
    finally:
        _native.set_isa(best)
    np.testing.assert_allclose(y, ref, rtol=1e-4, atol=1e-4)


def test_cuda_heuristic_decisions():
    """algo='auto' on cuda: Winograd F(4,3) for wide 3x3 stride-1 layers, direct for thin
    or depthwise groups, implicit GEMM otherwise (never the column-buffer im2col)."""
    from fastconv._heuristics import pick

    every = ["direct", "implicit_gemm", "im2col", "winograd_f23", "winograd_f43"]
    op = "conv2d_forward"
    resnet = conv_spec((32, 64, 56, 56), (64, 64, 3, 3), 1, 1, 1, 1, op=op)
    assert pick("cuda", op, resnet, "float32", every) == "winograd_f43"
    no_wino = [a for a in every if not a.startswith("winograd")]
    assert pick("cuda", op, resnet, "float32", no_wino) == "implicit_gemm"
    down = conv_spec((32, 64, 56, 56), (128, 64, 1, 1), 2, 0, 1, 1, op=op)
    assert pick("cuda", op, down, "float32", ["direct", "implicit_gemm", "im2col"]) \
        == "implicit_gemm"
    stem = conv_spec((32, 3, 224, 224), (64, 3, 7, 7), 2, 3, 1, 1, op=op)
    assert pick("cuda", op, stem, "float32", ["direct", "implicit_gemm"]) == "direct"
    dw = conv_spec((8, 32, 56, 56), (32, 1, 3, 3), 1, 1, 1, 32, op=op)
    assert pick("cuda", op, dw, "float32", every) == "direct"
    assert pick("cuda", op, dw, "float32", every + ["depthwise"]) == "depthwise"
    assert pick("cuda", op, dw, "float32", ["implicit_gemm"]) == "implicit_gemm"


@pytest.mark.parametrize("backend", ["native", "numba", "cuda", "numba_cuda"])
@pytest.mark.parametrize("op", ["conv2d_forward", "conv2d_backward_data",
                                "conv2d_backward_weight"])
def test_depthwise_layers_get_the_depthwise_kernel(backend, op):
    """groups == C (multiplier 1 or 2): every backend that offers a depthwise kernel gets
    it from algo='auto', for all three passes."""
    from fastconv._heuristics import pick

    for k in (32, 64):
        dw = conv_spec((2, 32, 14, 14), (k, 1, 3, 3), 2, 1, 1, 32, op=op)
        cands = ["direct", "im2col", "implicit_gemm", "depthwise"]
        assert pick(backend, op, dw, "float32", cands) == "depthwise"


@pytest.mark.parametrize("op", ["conv2d_forward", "conv2d_backward_data",
                                "conv2d_backward_weight"])
def test_native_heuristic_decisions(op):
    """algo='auto' on native (the rules in _heuristics.py, measured on ResNet-18 and LeNet
    layers): Winograd F(4,3) for wide 3x3 stride-1 layers, direct for other spatial
    kernels, depthwise and 1x1 forward / data gradients (the pointwise kernel), im2col
    for 1x1 weight gradients and for strided data gradients of larger kernels."""
    from fastconv._heuristics import pick

    every = ["direct", "im2col", "winograd_f23", "winograd_f43"]
    two = ["direct", "im2col"]
    fwd, bwd_data = op == "conv2d_forward", op == "conv2d_backward_data"

    def spec(x, w, stride=1, padding=0, groups=1):
        return conv_spec(x, w, stride, padding, 1, groups, op=op)

    resnet = spec((16, 64, 56, 56), (64, 64, 3, 3), padding=1)
    assert pick("native", op, resnet, "float32", every) == "winograd_f43"
    assert pick("native", op, resnet, "float32", two) == "direct"
    assert pick("native", op, resnet, "float32", ["im2col"]) == "im2col"
    thin = spec((16, 8, 32, 32), (8, 8, 3, 3), padding=1)  # too thin for Winograd
    assert pick("native", op, thin, "float32", every) == "direct"
    strided = spec((16, 64, 56, 56), (128, 64, 3, 3), stride=2, padding=1)
    assert pick("native", op, strided, "float32", two) == ("im2col" if bwd_data else "direct")
    stem = spec((16, 3, 224, 224), (64, 3, 7, 7), stride=2, padding=3)
    assert pick("native", op, stem, "float32", two) == ("im2col" if bwd_data else "direct")
    lenet = spec((32, 1, 32, 32), (6, 1, 5, 5))
    assert pick("native", op, lenet, "float32", two) == "direct"
    # 1x1: the pointwise kernel (direct) but for the weight gradient
    down = spec((16, 64, 56, 56), (128, 64, 1, 1), stride=2)
    bwd_w = op == "conv2d_backward_weight"
    assert pick("native", op, down, "float32", two) == ("im2col" if bwd_w else "direct")
    deep1x1 = spec((16, 256, 56, 56), (64, 256, 1, 1))
    assert pick("native", op, deep1x1, "float32", two) == ("im2col" if bwd_w else "direct")
    thin1x1 = spec((16, 2, 8, 8), (64, 2, 1, 1))
    assert pick("native", op, thin1x1, "float32", two) == "direct"
    dw = spec((8, 32, 56, 56), (32, 1, 3, 3), padding=1, groups=32)
    assert pick("native", op, dw, "float32", two) == "direct"


@pytest.mark.parametrize("hw,want", [(56, "winograd_f43"), (28, "winograd_f43"),
                                     (14, "winograd_f23"), (7, "im2col")])
def test_numba_heuristic_decisions(hw, want):
    """algo='auto' on numba: Winograd only on planes large enough for its row-of-tiles
    transforms (F(4,3) from 28x28, F(2,3) from 14x14), im2col otherwise."""
    from fastconv._heuristics import pick

    every = ["direct", "im2col", "winograd_f23", "winograd_f43"]
    op = "conv2d_forward"
    layer = conv_spec((16, 256, hw, hw), (256, 256, 3, 3), 1, 1, 1, 1, op=op)
    assert pick("numba", op, layer, "float32", every) == want
    strided = conv_spec((16, 64, 56, 56), (128, 64, 3, 3), 2, 1, 1, 1, op=op)
    assert pick("numba", op, strided, "float32", ["direct", "im2col"]) == "im2col"
    thin = conv_spec((16, 8, 56, 56), (8, 8, 3, 3), 1, 1, 1, 1, op=op)
    assert pick("numba", op, thin, "float32", every) == "im2col"
    assert pick("numba", op, thin, "float32", ["direct"]) == "direct"
