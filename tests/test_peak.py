"""The FMA-chain peak micro-benchmark (csrc/cpu/peak.cpp), THE peak of `fastconv bench`."""
from __future__ import annotations

import pytest

from fastconv import _native

# Vector bytes per ISA path (csrc/cpu/simd.h); the chains are 12 wide, 2 flops per FMA.
VEC_BYTES = {"generic": 16, "avx2": 32, "avx512": 64}


@pytest.mark.parametrize("isa", ["generic", "avx2", "avx512"], indirect=True)
@pytest.mark.parametrize("dtype,size", [("float32", 4), ("float64", 8)])
def test_chain_flops_match_the_isa_vector_width(isa, dtype, size):
    assert _native.fma_chain_flops(dtype) == 12 * 2 * VEC_BYTES[isa] // size


@pytest.mark.parametrize("isa", ["generic", "avx2", "avx512"], indirect=True)
def test_peak_is_positive_on_every_isa_path(isa):
    assert _native.fma_peak_gflops("float32", 1, 0.05) > 0
    assert _native.fma_peak_gflops("float64", 1, 0.05) > 0


def test_wider_vectors_give_a_higher_peak():
    """The AVX2 chains do twice the generic path's lanes and fuse the multiply-add, so they
    must measure clearly faster; a loop that the compiler simplified or that stalls on its
    dependency chain would not. Best of three against machine noise."""
    if "avx2" not in _native.compiled_isas() or "avx2" not in _native.cpu_features():
        pytest.skip("no AVX2 on this CPU/build")
    old = _native.active_isa()
    try:
        _native.set_isa("generic")
        generic = max(_native.fma_peak_gflops("float32", 1, 0.05) for _ in range(3))
        _native.set_isa("avx2")
        avx2 = max(_native.fma_peak_gflops("float32", 1, 0.05) for _ in range(3))
    finally:
        _native.set_isa(old)
    assert avx2 > 1.5 * generic


@pytest.mark.parametrize("kw,match", [
    (dict(dtype="int8"), "dtype"), (dict(threads=0), "threads"), (dict(seconds=0.0), "seconds"),
    (dict(seconds=1e9), "seconds")])
def test_bad_arguments_raise_value_error(kw, match):
    args = dict(dtype="float32", threads=1, seconds=0.01) | kw
    with pytest.raises(ValueError, match=match):
        _native.fma_peak_gflops(**args)
