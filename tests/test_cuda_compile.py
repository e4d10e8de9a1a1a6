"""Compile checks of the CUDA kernels that need no GPU.

* nvcc compiles every csrc/cuda/*.cu for sm_80 and sm_90 with the NVRTC-path options and
  exactly the template instantiations the run-time path requests; any error, warning or
  register spill fails.
* NVRTC itself (the run-time compiler CuPy uses) compiles every file with the run-time
  options and resolves every name expression, when libnvrtc can be found (set
  FASTCONV_NVRTC_LIB, or install nvidia-cuda-nvrtc-cu12); otherwise nvcc -ptx stands in.
* The Winograd transform matrices in conv_winograd.cu compute correlations exactly.
* The backend imports and reports itself unavailable (not an error) without CuPy or a GPU.

Skipped, with the reason, when nvcc is not on PATH.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import glob
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest

from fastconv.backends.cuda import _source

SRC = _source.source_dir()
CU_FILES = sorted(os.path.basename(p) for p in glob.glob(str(SRC / "*.cu")))
NVCC = shutil.which("nvcc")
needs_nvcc = pytest.mark.skipif(NVCC is None, reason="nvcc (CUDA toolkit) is not on PATH")
ARCHS = ("sm_80", "sm_90")


def test_catalog_covers_every_kernel():
    """Every __global__ function in every .cu file is requested by the run-time path (so the
    compile checks below see it), and every requested name exists in its file."""
    assert sorted(_source.KERNELS) == CU_FILES
    glob_re = re.compile(r"__global__\s+void\s+(?:__launch_bounds__\([^)]*\)\s*)?(\w+)")
    for f in CU_FILES:
        defined = set(glob_re.findall((SRC / f).read_text()))
        requested = {re.sub(r"<.*", "", n).split("::")[-1] for n in _source.KERNELS[f]}
        assert defined == requested, f"{f}: defined {sorted(defined)} != requested " \
                                     f"{sorted(requested)}"


def test_assemble_inlines_headers():
    text = _source.assemble("conv_implicit_gemm.cu")
    assert '#include "' not in text
    assert "gemm_tile" in text and "block_sum" in text
    assert text.count("namespace fc {") >= 3  # the file and both headers, each once


@needs_nvcc
@pytest.mark.parametrize("fname", CU_FILES)
def test_nvcc_compiles_without_spills(fname, tmp_path):
    src = tmp_path / fname
    src.write_text(_source.instantiation_source(fname))
    cmd = [NVCC, *_source.NVRTC_OPTIONS, "-Xptxas", "-v", "-c", str(src),
           "-o", str(tmp_path / "out.o")]
    for a in ARCHS:
        cmd += ["-gencode", f"arch=compute_{a[3:]},code={a}"]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    out = res.stdout + res.stderr
    assert res.returncode == 0, f"nvcc failed on {fname}:\n{out}"
    assert "warning" not in out.lower(), f"nvcc warnings on {fname}:\n{out}"
    entries = re.findall(r"Compiling entry function '(\w+)' for '(sm_\d+)'", out)
    for a in ARCHS:
        got = sum(1 for _, arch in entries if arch == a)
        assert got == len(_source.KERNELS[fname]), \
            f"{fname}: {got} kernels compiled for {a}, expected {len(_source.KERNELS[fname])}"
    spills = re.findall(r"Function properties for (\w+)\s*\n\s*(\d+) bytes stack frame, "
                        r"(\d+) bytes spill stores, (\d+) bytes spill loads", out)
    assert spills, f"no ptxas statistics parsed for {fname}:\n{out}"
    bad = [(fn, st, ld) for fn, _, st, ld in spills if int(st) or int(ld)]
    assert not bad, f"{fname}: register spills (function, store bytes, load bytes): {bad}"


# ----------------------------------------------------------------------------- NVRTC


def _find_nvrtc():
    env = os.environ.get("FASTCONV_NVRTC_LIB")
    cands = [env] if env else []
    for p in sys.path:
        cands += sorted(glob.glob(os.path.join(p, "nvidia", "cuda_nvrtc", "lib", "libnvrtc.so*")))
    found = ctypes.util.find_library("nvrtc")
    if found:
        cands.append(found)
    cands += glob.glob("/usr/local/cuda/lib64/libnvrtc.so*")
    for c in cands:
        if not c or "builtins" in c or ".alt." in c:
            continue
        try:
            return ctypes.CDLL(c), c
        except OSError:
            continue
    return None, None


def _nvrtc_compile(lib, source, name, options, name_exprs):
    """Compiles with NVRTC, returns (ok, log, {name_expr: lowered name})."""
    prog = ctypes.c_void_p()
    chk = lambda r, what: r == 0 or pytest.fail(f"{what} returned NVRTC error {r}")
    chk(lib.nvrtcCreateProgram(ctypes.byref(prog), source.encode(), name.encode(), 0, None,
                               None), "nvrtcCreateProgram")
    try:
        for n in name_exprs:
            chk(lib.nvrtcAddNameExpression(prog, n.encode()), "nvrtcAddNameExpression")
        opts = (ctypes.c_char_p * len(options))(*[o.encode() for o in options])
        rc = lib.nvrtcCompileProgram(prog, len(options), opts)
        size = ctypes.c_size_t()
        lib.nvrtcGetProgramLogSize(prog, ctypes.byref(size))
        buf = ctypes.create_string_buffer(size.value)
        lib.nvrtcGetProgramLog(prog, buf)
        log = buf.value.decode(errors="replace")
        lowered = {}
        if rc == 0:
            for n in name_exprs:
                p = ctypes.c_char_p()
                chk(lib.nvrtcGetLoweredName(prog, n.encode(), ctypes.byref(p)),
                    f"nvrtcGetLoweredName({n})")
                lowered[n] = p.value.decode()
        return rc == 0, log, lowered
    finally:
        lib.nvrtcDestroyProgram(ctypes.byref(prog))


NVRTC_LIB, NVRTC_PATH = _find_nvrtc()


@pytest.mark.parametrize("fname", CU_FILES)
def test_runtime_compile_path(fname, tmp_path):
    """What cupy.RawModule does at run time: NVRTC on the assembled source with the
    run-time options and name expressions (nvcc -ptx stands in when libnvrtc is absent)."""
    names = _source.KERNELS[fname]
    if NVRTC_LIB is not None:
        for a in ARCHS[:1]:  # nvcc above covers both architectures; one keeps this quick
            ok, log, lowered = _nvrtc_compile(
                NVRTC_LIB, _source.assemble(fname), fname,
                [*_source.NVRTC_OPTIONS, f"-arch=compute_{a[3:]}"], names)
            assert ok, f"NVRTC ({NVRTC_PATH}) failed on {fname} for {a}:\n{log}"
            assert "warning" not in log.lower(), f"NVRTC warnings on {fname}:\n{log}"
            assert set(lowered) == set(names) and all(v.startswith("_Z") for v in
                                                      lowered.values()), lowered
        return
    if NVCC is None:
        pytest.skip("neither libnvrtc nor nvcc is available")
    src = tmp_path / fname
    src.write_text(_source.instantiation_source(fname))
    res = subprocess.run([NVCC, *_source.NVRTC_OPTIONS, "-arch=compute_80", "-ptx", str(src),
                          "-o", str(tmp_path / "out.ptx")],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    ptx = (tmp_path / "out.ptx").read_text()
    assert ptx.count(".entry") == len(names)


# ----------------------------------------------------------------------------- Winograd


def _tables(text, spec_m, fn):
    """The constant table of Wino<m>::fn in conv_winograd.cu, as a NumPy array."""
    start = text.index(f"template <> struct Wino<{spec_m}>")
    part = text[text.index(f"float {fn}(int i, int j)", start):]
    lit = part[part.index("= {") + 2: part.index("};") + 1]
    lit = re.sub(r"(?<=[\d.])f\b", "", lit).replace("{", "[").replace("}", "]")
    return np.array(eval(lit), dtype=np.float64)  # noqa: S307 - our own source file


@pytest.mark.parametrize("m", [2, 4])
def test_winograd_tables_compute_correlation(m):
    text = (SRC / "conv_winograd.cu").read_text()
    BT, G, AT = (_tables(text, m, f) for f in ("bt", "g", "at"))
    a = m + 2
    assert BT.shape == (a, a) and G.shape == (a, 3) and AT.shape == (m, a)
    rng = np.random.default_rng(m)
    for _ in range(5):
        d, g = rng.standard_normal((a, a)), rng.standard_normal((3, 3))
        y = AT @ ((G @ g @ G.T) * (BT @ d @ BT.T)) @ AT.T
        ref = np.array([[np.sum(d[i:i + 3, j:j + 3] * g) for j in range(m)] for i in range(m)])
        np.testing.assert_allclose(y, ref, rtol=1e-12, atol=1e-12)


# ----------------------------------------------------------------------------- no GPU


def test_unavailable_backend_reports_reason():
    """Without CuPy or a device the backend is listed as unavailable with a reason, and
    `import fastconv` is unaffected."""
    import fastconv
    from fastconv.backends import cuda

    ok, reason = cuda.availability()
    try:
        import cupy  # noqa: F401
        has_cupy = True
    except Exception:
        has_cupy = False
    if not has_cupy:
        assert not ok and "CuPy" in reason
    info = fastconv.backends()["cuda"]
    assert info["available"] == ok and info["reason"] == ("" if ok else reason)
    if not ok:
        with pytest.raises(RuntimeError, match="cuda"):
            fastconv.conv2d(np.zeros((1, 1, 3, 3), np.float32), np.zeros((1, 1, 3, 3),
                            np.float32), backend="cuda")


# ----------------------------------------------------------------------------- host emulation
# The kernels themselves, compiled for the CPU against tests/host_emu.cuh and driven by the
# backend's own launch wrappers (tests/_hostemu.py): index arithmetic, tile
# edges, predicates, split-K, workspace chunking and barrier structure, checked against the
# NumPy reference. Not evidence about real-GPU timing or memory-model behaviour.

from conftest import CONV_CASES, CONV_IDS, WINOGRAD_CASES, WINOGRAD_IDS, assert_close  # noqa: E402

from fastconv import _args as A  # noqa: E402
from fastconv.backends import reference as REF  # noqa: E402
import _hostemu  # noqa: E402

needs_cxx = pytest.mark.skipif(_hostemu.compiler() is None, reason="no host C++ compiler")
f32 = np.float32
WINO_SCALE = {"winograd_f23": 4, "winograd_f43": 40}
EMU_TILE_CASES = [
    # Kg = 130 > 128 selects the large tile and leaves a ragged M edge.
    ("k130_large_tile", (1, 4, 12, 12), (130, 4, 3, 3), dict(padding=1)),
    ("npq_odd_stride2", (3, 5, 7, 5), (9, 5, 3, 3), dict(padding=1, stride=2)),
    ("groups3_rect", (2, 9, 10, 11), (6, 3, 2, 3), dict(padding=(1, 0), groups=3)),
]


@pytest.fixture(scope="module")
def emu(tmp_path_factory):
    if _hostemu.compiler() is None:
        pytest.skip("no host C++ compiler for the emulation")
    with _hostemu.emulate(tmp_path_factory.mktemp("cuda_emu")) as be:
        yield be


def _rand(shape, seed):
    return np.random.default_rng(seed).standard_normal(shape).astype(f32)


def _emu_conv(be, xs, ws, kw, algos, scale=None):
    x4 = xs if len(xs) == 4 else (1, *xs)
    x, w, b = _rand(x4, 1), _rand(ws, 2), _rand((ws[0],), 3)
    spec = A.conv_spec(x4, ws, kw.get("stride", 1), kw.get("padding", 0),
                       kw.get("dilation", 1), kw.get("groups", 1))
    gy = _rand(spec.y_shape, 4)
    y_r = REF.conv2d_forward(x, w, b, spec)
    gx_r = REF.conv2d_backward_data(gy, w, spec)
    gw_r = REF.conv2d_backward_weight(gy, x, spec)
    W = _hostemu._wrap
    for algo in algos:
        s = (scale or {}).get(algo, 1)
        t_fwd = spec.C // spec.groups * spec.R * spec.S
        assert_close(be.conv2d_forward(W(x), W(w), W(b), spec, algo), y_r, f32,
                     terms=t_fwd * s, what=f"{algo} forward")
        assert_close(be.conv2d_forward(W(x), W(w), None, spec, algo), y_r - b[:, None, None],
                     f32, terms=t_fwd * s, what=f"{algo} forward, no bias")
        assert_close(be.conv2d_backward_data(W(gy), W(w), spec, algo), gx_r, f32,
                     terms=spec.K // spec.groups * spec.R * spec.S * s, what=f"{algo} grad_x")
        if algo in be.ALGOS["conv2d_backward_weight"]:
            assert_close(be.conv2d_backward_weight(W(gy), W(x), spec, algo), gw_r, f32,
                         terms=spec.N * spec.P * spec.Q, what=f"{algo} grad_w")


@needs_cxx
@pytest.mark.parametrize("name,xs,ws,kw", CONV_CASES + EMU_TILE_CASES,
                         ids=CONV_IDS + [c[0] for c in EMU_TILE_CASES])
def test_emulated_conv(emu, name, xs, ws, kw):
    _emu_conv(emu, xs, ws, kw, ("direct", "implicit_gemm", "im2col"))


@needs_cxx
@pytest.mark.parametrize("name,xs,ws,kw", WINOGRAD_CASES + [
    ("w_pad3_negative_bwd_pad", (1, 3, 6, 7), (4, 3, 3, 3), dict(padding=3))],
    ids=WINOGRAD_IDS + ["w_pad3_negative_bwd_pad"])
def test_emulated_winograd(emu, name, xs, ws, kw):
    _emu_conv(emu, xs, ws, kw, ("winograd_f23", "winograd_f43"), WINO_SCALE)


@needs_cxx
def test_emulated_workspace_chunks(emu, monkeypatch):
    from fastconv.backends.cuda import _runtime

    monkeypatch.setattr(_runtime, "WORKSPACE_ELEMS", 1500)
    _emu_conv(emu, (5, 4, 9, 9), (6, 4, 3, 3), dict(padding=1),
              ("im2col", "winograd_f23", "winograd_f43"), WINO_SCALE)


@needs_cxx
def test_emulated_dense_gemm_transposes(emu):
    """The SGEMM alone: every transpose, unaligned leading dimensions, the L reduction,
    split-K with atomics, bias and beta."""
    from fastconv.backends.cuda import _runtime as rt

    W = _hostemu._wrap
    M, N, K = 70, 133, 37
    a, b = _rand((M, K), 1), _rand((K, N), 2)
    for ta, tb in ((False, False), (True, False), (False, True)):
        am = W(a.T.copy() if ta else a)
        bm = W(b.T.copy() if tb else b)
        c = W(np.full((M, N), np.nan, f32))
        rt.gemm(am, bm, c, M=M, N=N, Kd=K, lda=M if ta else K, ldb=K if tb else N, ldc=N,
                ta=ta, tb=tb)
        assert_close(c, a.astype(np.float64) @ b, f32, terms=K, what=f"ta={ta} tb={tb}")
    # Large tile, L = 3 stacked reductions, split into 3 atomic parts, bias, on a zeroed C.
    M, N, K, L = 130, 129, 21, 3
    a, b, bias = _rand((L, M, K), 3), _rand((L, K, N), 4), _rand((M,), 5)
    c = W(np.zeros((M, N), f32))
    rt.gemm(W(a), W(b), c, M=M, N=N, Kd=K, L=L, lda=K, ldb=N, ldc=N, sAl=M * K, sBl=K * N,
            bias=W(bias), splits=3)
    ref = np.einsum("lmk,lkn->mn", a.astype(np.float64), b) + bias[:, None]
    assert_close(c, ref, f32, terms=K * L, what="L-reduction, split-K")
    c0 = _rand((M, N), 6)
    c = W(c0.copy())
    rt.gemm(W(a[0]), W(b[0]), c, M=M, N=N, Kd=K, lda=K, ldb=N, ldc=N, alpha=0.5, beta=2.0)
    assert_close(c, 0.5 * (a[0].astype(np.float64) @ b[0]) + 2 * c0, f32, terms=K, what="beta")


POOL_KW = [
    dict(kernel_size=2),
    dict(kernel_size=3, stride=2, padding=1, ceil_mode=True),
    dict(kernel_size=(3, 2), stride=(2, 1), padding=(1, 0), dilation=(2, 1)),
]
AVG_KW = [
    dict(kernel_size=3, stride=2, padding=1),
    dict(kernel_size=3, stride=2, padding=1, count_include_pad=False, ceil_mode=True),
    dict(kernel_size=(2, 3), stride=(1, 2), padding=(1, 1), divisor_override=5),
]


@needs_cxx
def test_emulated_pooling(emu):
    W = _hostemu._wrap
    x = _rand((2, 3, 11, 10), 1)
    x[0, 1, 2, 3] = np.nan
    x[1, 2, 4:7, 4:7] = -np.inf
    for kw in POOL_KW:
        spec = A.pool_spec("max_pool2d", x.shape, kw["kernel_size"], kw.get("stride"),
                           kw.get("padding", 0), kw.get("dilation", 1), kw.get("ceil_mode", False))
        y, idx = emu.max_pool2d(W(x), spec, True)
        yr, ir = REF.max_pool2d(x, spec, True)
        np.testing.assert_array_equal(y, yr)
        np.testing.assert_array_equal(idx, ir)
        gy = _rand(yr.shape, 2)
        assert_close(emu.max_pool2d_backward(W(gy), W(idx), x.shape),
                     REF.max_pool2d_backward(gy, ir, x.shape), f32, terms=9)
    xa = _rand((2, 3, 9, 12), 3)
    for kw in AVG_KW:
        spec = A.pool_spec("avg_pool2d", xa.shape, kw["kernel_size"], kw.get("stride"),
                           kw.get("padding", 0), 1, kw.get("ceil_mode", False),
                           kw.get("count_include_pad", True), kw.get("divisor_override"))
        assert_close(emu.avg_pool2d(W(xa), spec), REF.avg_pool2d(xa, spec), f32, terms=9)
        gy = _rand(spec.y_shape, 4)
        assert_close(emu.avg_pool2d_backward(W(gy), spec), REF.avg_pool2d_backward(gy, spec),
                     f32, terms=9)
    for out in ((1, 1), (3, 4), (7, 5), (12, 13)):
        assert_close(emu.adaptive_avg_pool2d(W(xa), out), REF.adaptive_avg_pool2d(xa, out),
                     f32, terms=108)
        gy = _rand((2, 3, *out), 5)
        assert_close(emu.adaptive_avg_pool2d_backward(W(gy), xa.shape),
                     REF.adaptive_avg_pool2d_backward(gy, xa.shape), f32, terms=9)


@needs_cxx
@pytest.mark.parametrize("shape", [(4, 3, 5, 7, 1), (2, 5, 8, 1), (3, 2, 1, 1), (6, 2, 300, 1)])
def test_emulated_batch_norm(emu, shape):
    """(N, C, L, 1) views as the functional layer passes them; L % 4 == 0 takes float4s."""
    shape = (shape[0], shape[1], int(np.prod(shape[2:])), 1)
    W = _hostemu._wrap
    x = _rand(shape, 1) * 3 + 5
    C = shape[1]
    w, b = _rand((C,), 2), _rand((C,), 3)
    y, mean, var = emu.batch_norm_train(W(x), W(w), W(b), 1e-5)
    yr, meanr, varr = REF.batch_norm_train(x, w, b, 1e-5)
    m = x.size // C
    for a, e, what in ((y, yr, "y"), (mean, meanr, "mean"), (var, varr, "var")):
        assert_close(a, e, f32, terms=m, what=what)
    rv = np.abs(_rand((C,), 4)) + 0.5
    assert_close(emu.batch_norm_eval(W(x), W(meanr), W(rv), W(w), W(b), 1e-5),
                 REF.batch_norm_eval(x, meanr, rv, w, b, 1e-5), f32, what="eval")
    invstd = (1 / np.sqrt(varr.astype(np.float64) + 1e-5)).astype(f32)
    gy = _rand(shape, 5)
    for training in (True, False):
        got = emu.batch_norm_backward(W(gy), W(x), W(w), W(meanr), W(invstd), training)
        want = REF.batch_norm_backward(gy, x, w, meanr, invstd, training)
        for a, e, what in zip(got, want, ("gx", "gw", "gb")):
            assert_close(a, e, f32, terms=m, what=f"{what} training={training}")


@needs_cxx
def test_emulated_relu(emu):
    W = _hostemu._wrap
    x = _rand((37,), 1)
    x[3] = np.nan
    gy = _rand((37,), 2)
    for off in (0, 1):  # offset 1: not 16-byte aligned -> scalar path
        xv = W(x)[off:]
        y = emu.relu(xv)
        np.testing.assert_array_equal(y, REF.relu(np.asarray(xv)))
        np.testing.assert_array_equal(emu.relu_backward(W(gy)[off:], y),
                                      REF.relu_backward(gy[off:], np.asarray(y)))
