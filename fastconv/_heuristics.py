"""Per-backend algorithm heuristics for ``algo="auto"`` (called only by the dispatcher).

Each rule is justified by the benchmark: ``fastconv bench resnet18 --backward --backend
native`` and ``fastconv bench --shape ...`` (per pass, batch 16, 2 threads, on the 2-core
Zen 4 CI box; figures in bench/README.md):

* ``winograd_f43`` where it can serve (3x3, stride 1, no dilation, groups 1) and both
  channel counts are at least 16: 1.6x-2.1x PyTorch forward on ResNet-18's 3x3 layers
  and the fastest data gradient; thin layers do not repay its O(C + K) transforms per
  tile.
* ``direct`` for kernels larger than 1x1 in the forward pass, the weight gradient and the
  stride-1 data gradient: its register-blocked channels-last kernels beat the
  im2col GEMM on every such ResNet-18 and LeNet layer measured (1.1x-1.5x on ResNet's
  3x3 layers, 2x-5x on LeNet's thin 5x5 layers, whose GEMM would be nearly empty), and
  on depthwise layers.
* ``im2col`` (the packed GEMM with im2col fused into its packing) for 1x1 weight
  gradients (a GEMM reducing over pixels; except thin layers), and for strided data
  gradients of larger kernels (the direct kernel's phase-decomposed path is 1.2x-1.5x
  slower on the stem and ResNet's 3x3 downsampling layers). 1x1 forward passes and data
  gradients: see the pointwise rule below.

Small batches (issue 13; ``python bench/conv_layers_ort.py --batch 1,8 --algos`` and
``python bench/conv_cpu.py --batch 16``): the batch size ``spec.N`` enters the decision
where the amount of independent work depends on it.

* 1x1 layers with padding 0 go to ``direct`` for the forward pass and the data gradient
  at every batch size: ``direct`` runs them on the pointwise kernel
  (csrc/cpu/conv_pointwise.cpp), a GEMM that reads the activation rows in place where
  the im2col path first copies them into packed panels (a full copy of x for a stride-1
  1x1 layer), and that splits filters as well as columns over the threads, so one image
  keeps both cores busy.
* Winograd F(4,3) needs enough 4x4 output tiles, ``N * ceil(P/4) * ceil(Q/4)``: its
  transform-domain GEMMs are (K x C) . (C x tiles), and with fewer than
  ``_MIN_WINOGRAD_TILES`` = 16 tiles (batch 1 at 7x7 has 4, batch 2 at 7x7 has 8; batch 1
  at 14x14 has 16) they are too narrow to fill a register tile per thread while the
  filter transform (K*C 6x6 tiles, per call) is not amortised. Those layers take the
  ``direct`` kernel (its channels-last path serves small planes). Measured at batch 1
  (1 thread, min of 10 calls, ``bench/conv_layers_ort.py --threads 1 --stat min``): on
  512@7x7 direct 9.7 ms vs F(4,3) 17.6 ms; on 256@14x14 (16 tiles) F(4,3) 6.5 ms vs
  direct 10.8 ms, hence 16 and not 32.

For ``cuda`` the rule follows the kernels' design, not a GPU measurement (no GPU has run
them yet): Winograd F(4,3) where it serves and both channel counts are at least 16 (the
transform-domain GEMM tiles are 16 wide), ``direct`` where a group has fewer than 8
input or output channels (depthwise and thin layers: the implicit GEMM's 64- or 128-row
tiles would be mostly padding), otherwise ``implicit_gemm`` (no column buffer in GPU
memory).

For ``numba`` (``python bench/numba_cpu.py``, batch 16, 2 threads): its Winograd
transforms work a row of tiles at a time, so they pay off on large planes only. F(4,3)
is its fastest on ResNet-18's 3x3 stride-1 layers at 56x56 and 28x28, F(2,3) at 14x14
(1.3x its F(4,3)), im2col through NumPy's BLAS at 7x7 (2x its F(4,3)) and on the
strided layers; its direct kernel trails.

``numba_cuda`` has not been measured on hardware and keeps the plain preference order
(winograd_f43, im2col, implicit_gemm, direct).
"""
from __future__ import annotations

# A 1x1 forward pass reducing over at most this many channels per group: direct wins.
_MAX_SHALLOW_1X1_CHANNELS = 64
_MIN_GEMM_ROWS = 4
_MIN_WINOGRAD_CHANNELS = 16
# Fewest 4x4 output tiles (over the whole batch) for which native Winograd F(4,3) is picked.
_MIN_WINOGRAD_TILES = 16
# Output planes (P*Q) from which numba's Winograd variants beat its im2col.
_NUMBA_F43_MIN_PLANE = 28 * 28
_NUMBA_F23_MIN_PLANE = 14 * 14
# Below this many channels per group the CUDA implicit GEMM's tiles are mostly padding.
_CUDA_MIN_GEMM_CHANNELS = 8


def pick(backend: str, op: str, spec, dtype: str, candidates: list[str]) -> str:
    """Chooses among ``candidates`` (all implemented and able to serve ``spec``)."""
    Cg, Kg = spec.C // spec.groups, spec.K // spec.groups
    if "depthwise" in candidates and backend == "native":
        # Depthwise layers (candidates can all serve spec, so groups == C) get their own
        # kernel: the direct kernel blocks over a group's channels, of which there is one,
        # and im2col's GEMM has one row per group. bench/depthwise.py times it against
        # PyTorch and ONNX Runtime on MobileNetV2's layers.
        return "depthwise"
    wide = spec.groups == 1 and min(Cg, Kg) >= _MIN_WINOGRAD_CHANNELS
    wide_winograd = wide and "winograd_f43" in candidates  # candidates can all serve spec
    if backend == "cuda":
        if wide_winograd:
            return "winograd_f43"
        if "direct" in candidates and min(Cg, Kg) < _CUDA_MIN_GEMM_CHANNELS:
            return "direct"
        if "implicit_gemm" in candidates:
            return "implicit_gemm"
    if backend == "numba":
        if wide:
            plane = spec.P * spec.Q
            if plane >= _NUMBA_F43_MIN_PLANE and "winograd_f43" in candidates:
                return "winograd_f43"
            if plane >= _NUMBA_F23_MIN_PLANE and "winograd_f23" in candidates:
                return "winograd_f23"
        if "im2col" in candidates:
            return "im2col"
    if backend != "native":
        # Not measured here: the first of the usual preference order.
        for algo in ("winograd_f43", "im2col", "implicit_gemm", "direct"):
            if algo in candidates:
                return algo
        return candidates[0]
    if wide_winograd and _winograd_tiles(spec) >= _MIN_WINOGRAD_TILES:
        return "winograd_f43"
    if "im2col" not in candidates:
        return "direct" if "direct" in candidates else candidates[0]
    if "direct" not in candidates:
        return "im2col"
    return "im2col" if _im2col_wins(op, spec, Cg) else "direct"


def _winograd_tiles(spec) -> int:
    """4x4 output tiles of F(4,3) over the whole batch (the transform GEMMs' width)."""
    return spec.N * -(-spec.P // 4) * -(-spec.Q // 4)


def _pointwise(spec) -> bool:
    """1x1 with padding 0: the direct algorithm runs it on the pointwise kernel."""
    return (spec.R, spec.S) == (1, 1) and tuple(spec.padding) == (0, 0) and \
        tuple(getattr(spec, "padding_end", (0, 0))) == (0, 0)


def _im2col_wins(op: str, spec, Cg: int) -> bool:
    if spec.groups > 1 and Cg == 1:
        return False  # depthwise: a GEMM of one row per group
    if _pointwise(spec) and op in ("conv2d_forward", "conv2d_backward_data"):
        return False  # the pointwise kernel: no copy of the activation, filters x columns
    if (spec.R, spec.S) == (1, 1):
        if min(Cg, spec.K // spec.groups) < _MIN_GEMM_ROWS:
            return False  # the GEMM's 14-row register tile would be mostly padding
        return not (op == "conv2d_forward" and Cg <= _MAX_SHALLOW_1X1_CHANNELS)
    return op == "conv2d_backward_data" and spec.stride != (1, 1)


# ----------------------------------------------------------------------------- signal
# fastconv.signal's method choice (scipy.signal.correlate2d / convolve2d).
#
# "direct" (the default) is the exact path: SciPy's direct sum. "fft" only when asked for
# by name, or by method="auto" when the cost model says it is cheaper: the direct kernel
# does ho*wo*kh*kw multiply-adds, the FFT about _FFT_COST of them per N log2 N of the
# padded transform (calibrated single-threaded with scipy.fft: the crossover is near a
# 21x21 kernel on a 512x512 float32 image). Below _FFT_MIN_TAPS taps direct always wins.
# Integers and long double never use the FFT.
_FFT_COST = {"float32": 20.0, "float64": 16.0}
_FFT_MIN_TAPS = 64


def pick_correlate_method(method: str, real_dtype: str, out_hw, k_shape, fft_len) -> str:
    """``"direct"`` or ``"fft"`` for a correlation producing ``out_hw`` with kernel
    ``k_shape``; ``fft_len(n)`` is the padded transform length for ``n`` points."""
    import math

    if method != "auto" or real_dtype not in _FFT_COST:
        return "fft" if method == "fft" else "direct"
    ho, wo = out_hw
    kh, kw = k_shape
    taps = kh * kw
    if taps < _FFT_MIN_TAPS or ho * wo == 0:
        return "direct"
    n = fft_len(ho + kh - 1) * fft_len(wo + kw - 1)
    return "fft" if ho * wo * taps > _FFT_COST[real_dtype] * n * math.log2(max(n, 2)) else "direct"
