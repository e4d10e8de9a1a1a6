"""Where the CUDA sources live, how they are assembled for NVRTC, and which kernels
(template instantiations included) the run-time path asks for.

This module imports neither CuPy nor anything GPU-related: the compile test
(tests/test_cuda_compile.py) uses it to compile exactly what the run-time path compiles.
"""
from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path

from ..._dispatch import WINOGRAD_TILES

# Options handed to NVRTC (through cupy.RawModule) and, with an -arch, to nvcc in the tests.
NVRTC_OPTIONS = ("-std=c++17", "-DFC_NVRTC=1")

# Register-blocked GEMM tile configurations: name -> (BM, BN, BK, TM, TN); both use 256
# threads. "large" amortises loads best; "small" wastes less on narrow problems.
GEMM_TILES = {"large": (128, 128, 8, 8, 8), "small": (64, 64, 16, 4, 4)}
THREADS = 256


def _tile(name: str) -> str:
    return ",".join(str(v) for v in GEMM_TILES[name])


def gemm_name(tile: str, ta: bool, tb: bool) -> str:
    """Name expression of the dense GEMM kernel for a tile and the transposes."""
    return f"fc::gemm<{_tile(tile)},{str(ta).lower()},{str(tb).lower()}>"


def igemm_name(kind: str, tile: str) -> str:
    """Name expression of an implicit-GEMM kernel; kind is fwd, bwd_data or bwd_weight."""
    return f"fc::igemm_{kind}<{_tile(tile)}>"


def wino_name(stage: str, m: int) -> str:
    """Name expression of a Winograd transform kernel (stage: filter, input, output)."""
    return f"fc::wino_{stage}<{m}>"


# Every kernel each source file provides, exactly as the run-time path names it.
KERNELS: dict[str, tuple[str, ...]] = {
    "gemm.cu": tuple(gemm_name(t, ta, tb) for t in GEMM_TILES
                     for ta, tb in ((False, False), (True, False), (False, True))),
    "conv_implicit_gemm.cu": tuple(igemm_name(k, t) for k in ("fwd", "bwd_data", "bwd_weight")
                                   for t in GEMM_TILES),
    "conv_direct.cu": ("fc::direct_fwd", "fc::direct_bwd_data", "fc::direct_bwd_weight"),
    "conv_depthwise.cu": ("fc::depthwise_fwd", "fc::depthwise_bwd_data",
                          "fc::depthwise_bwd_weight"),
    "conv_im2col.cu": ("fc::im2col", "fc::col2im"),
    "conv_winograd.cu": tuple(wino_name(s, m) for s in ("filter", "input", "output")
                              for m in WINOGRAD_TILES.values()),
    "pool.cu": ("fc::max_pool_fwd", "fc::max_pool_bwd", "fc::avg_pool_fwd", "fc::avg_pool_bwd",
                "fc::adaptive_avg_fwd", "fc::adaptive_avg_bwd"),
    "norm.cu": ("fc::bn_stats_partial", "fc::bn_stats_finalize", "fc::bn_apply",
                     "fc::bn_eval_coef", "fc::bn_bwd_partial", "fc::bn_bwd_finalize",
                     "fc::bn_bwd_apply"),
    "misc.cu": ("fc::relu_fwd", "fc::relu_bwd"),
}


def source_dir() -> Path | None:
    """The directory holding the .cu/.cuh files: ``fastconv/cuda_src`` in an installed wheel,
    else ``<repo>/csrc/cuda`` for an in-tree or editable run; None if neither exists."""
    pkg = Path(__file__).resolve().parents[2]  # .../fastconv
    for cand in (pkg / "cuda_src", pkg.parent / "csrc" / "cuda"):
        if (cand / "common.cuh").is_file():
            return cand
    return None


_INCLUDE = re.compile(r'^\s*#\s*include\s+"([^"]+)"\s*$', re.M)


@lru_cache(maxsize=None)
def assemble(filename: str) -> str:
    """The source of ``filename`` with its local ``#include "x.cuh"`` lines pasted in
    (each header once). NVRTC then needs no include path, and CuPy's kernel cache, which
    hashes the source text, notices header edits."""
    root = source_dir()
    if root is None:
        raise FileNotFoundError("fastconv CUDA sources not found (neither fastconv/cuda_src "
                                "nor csrc/cuda exists)")
    seen: set[str] = set()

    def expand(name: str) -> str:
        text = (root / name).read_text()

        def sub(m):
            inc = m.group(1)
            if inc in seen:
                return f"// (already included: {inc})"
            seen.add(inc)
            return f"// ---- begin {inc}\n{expand(inc)}\n// ---- end {inc}"

        return _INCLUDE.sub(sub, text)

    return expand(filename)


def instantiation_source(filename: str) -> str:
    """The assembled source plus a table taking the address of every run-time kernel, which
    makes an offline compiler (nvcc) instantiate and compile the same template set that
    NVRTC compiles through ``name_expressions``."""
    refs = ",\n  ".join(f"(const void*)&{n}" for n in KERNELS[filename])
    # A host-side table with external linkage: referenced, so no unused-variable warning.
    return (assemble(filename) + "\n// Instantiations requested at run time.\n"
            f"const void* fc_instantiated[] = {{\n  {refs}\n}};\n")
