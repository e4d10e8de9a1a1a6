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
