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
  transform-domain GEMMs are (K x C) . (C x tiles), and with too few tiles they are too
  narrow to fill a register tile per thread while the filter transform (K*C 6x6 tiles,
  per call) is not amortised. The bar is ``_MIN_WINOGRAD_TILES`` = 64 tiles, or 32 on
  layers with both channel counts >= 256 (batch 1 at 7x7 has 4 tiles, batch 2 8, batch 8
  32; batch 1 at 14x14 16, at 28x28 49). Measured at 2 threads, interleaved, min of
  calls (the per-algorithm table of ``bench/conv_layers_ort.py --algos``): 128@28x28
  batch 1 (49 tiles) direct 2.3 ms vs F(4,3) 3.3 ms; 512@7x7 batch 8 (32 tiles) F(4,3)
  14.9 ms vs direct 23.7 ms; 256@14x14 batch 8 F(4,3) 11.5 ms vs im2col 20.5 ms.
* With the filters prepacked (``fastconv.compile``: the Winograd filter transform done
  once), F(4,3) takes every wide layer from 32 tiles. Measured as below (ms, batch 1,
  F(4,3) prepacked vs the direct kernel's prepacked channels-last panels): 64@56x56
  (196 tiles) 1.65 vs 2.13, 128@28x28 (49) 1.58 vs 2.21, but 256@14x14 (16) 2.27 vs 2.10
  and 512@7x7 (4) 4.66 vs 2.26; batch 8 512@7x7 (32) 7.6 vs 16.1.
* Forward passes at batch <= 8 (``_small_batch_gemm``) take the im2col GEMM, with the
  filters given per call, on kernels larger than 1x1 with >= 16
  channels whose output has at most 64 columns over the batch (``N * P * Q``; one image
  at 7x7). The direct kernel's channels-last path packs every filter value per call,
  about as much work as computing ~50 output pixels, while the GEMM reads the filters in
  place (gemm_driver.h) and splits filter rows across the threads; from two images at
  7x7 the direct kernel is ahead. Measured as above (ms, im2col vs direct, weights per
  call): batch 1 512@7x7 3.10 vs 3.32, 3x3/2 512->512@14 3.29 vs 3.65; batch 2 512@7x7
  6.07 vs 5.61; batch 1 256@14x14 2.82 vs 2.12, 3x3/2 128->256@28 1.66 vs 1.25; batch 8
  3x3/2 256->512@14 11.4 vs 9.5. With prepacked filters the direct kernel takes them
  all (batch 1 512@7x7 2.07 vs 3.10). One image at stride 1 with a reduction of at most
  4608 columns (``C * R * S``; 512 channels of 3x3) stays direct: there the direct kernel
  packs each 16-filter block inside the task that uses it (one task per block on such
  planes), so the packed panel stays in cache instead of going through memory (ms,
  direct vs im2col, batch 1: 512@7x7 2.88 vs 3.32, 256@7x7 0.82 vs 1.23, 32@7x7 0.075 vs
  0.132; but 1024@4x4, a 590 KB panel per block, 9.5 vs 4.9; strided layers pack up
  front: 3x3/2 512->512@14 4.2 vs 3.2). (Expanding 1x1 layers, K = 4 C, are 10-20% faster
  on the GEMM alone, but in ResNet-50 they carry the fused residual, which the
  pointwise kernel adds in its stores: 64->256@56 with residual 1.60 ms direct vs
  2.46 ms im2col.) Strided 1x1 layers stay on ``direct``: since the pointwise kernel
  copies the stride grid once when it splits the filters, it is level with or ahead of
  the GEMM (ms, direct vs im2col: batch 1 1x1/2 256->512@56 2.11 vs 2.64, 64->128@56
  0.28 vs 0.31, 1024->2048@14 2.27 vs 2.20; batch 8 64->128@56 1.79 vs 2.84,
  1024->2048@14 11.9 vs 11.4), and with prepacked filters its channels-last path takes
  the deep ones (1024->2048@14 1.90 ms at batch 1). Batch 16 keeps the rules measured there.

On every backend, depthwise layers (``groups == C``, any multiplier) take the backend's
own ``depthwise`` kernel wherever it offers one (numba's: forward 2.3x-120x its im2col,
both gradients together 2.6x-19x, on MobileNetV2's layers at batch 1 and 8; the GPU ones
unmeasured on hardware).

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

``numba_cuda`` has not been measured on hardware and otherwise keeps the plain
preference order (winograd_f43, im2col, implicit_gemm, direct).
"""
from __future__ import annotations

# A 1x1 forward pass reducing over at most this many channels per group: direct wins.
_MAX_SHALLOW_1X1_CHANNELS = 64
_MIN_GEMM_ROWS = 4
_MIN_WINOGRAD_CHANNELS = 16
# Fewest 4x4 output tiles (over the whole batch) for which native Winograd F(4,3) is
# picked; layers with both channel counts >= _DEEP_CHANNELS, or prepacked filters, from
# fewer tiles.
_MIN_WINOGRAD_TILES = 64
_MIN_WINOGRAD_TILES_DEEP = 32
_MIN_WINOGRAD_TILES_PREPACKED = 32
_DEEP_CHANNELS = 256
# Small-batch forward rules for the im2col GEMM (_small_batch_gemm).
_SMALL_BATCH = 8
_MIN_GEMM_CHANNELS_SMALL_BATCH = 16
# Output columns (N * P * Q) up to which a per-call filter pack outweighs its use.
_MAX_PACK_BOUND_COLS = 64
# Reduction length (C/groups * R * S) up to which a stride-1 direct kernel on one image
# packs its filters block by block inside its tasks (a 16-filter panel of <= 295 KB,
# cached for its use) instead of up front.
_MAX_IN_TASK_PACK_COLUMNS = 4608
# Output planes (P*Q) from which numba's Winograd variants beat its im2col.
_NUMBA_F43_MIN_PLANE = 28 * 28
_NUMBA_F23_MIN_PLANE = 14 * 14
# Below this many channels per group the CUDA implicit GEMM's tiles are mostly padding.
_CUDA_MIN_GEMM_CHANNELS = 8


def pick(backend: str, op: str, spec, dtype: str, candidates: list[str],
         prepacked: bool = False) -> str:
    """Chooses among ``candidates`` (all implemented and able to serve ``spec``).
    ``prepacked``: the filters are prepared once for the chosen algorithm (compiled
    inference), which moves Winograd's filter transform out of the call."""
    Cg, Kg = spec.C // spec.groups, spec.K // spec.groups
    if "depthwise" in candidates:
        # Depthwise layers (candidates can all serve spec, so groups == C) get the
        # backend's own kernel: the direct kernel blocks over a group's channels, of which
        # there is one, and im2col's GEMM has one row per group. bench/depthwise.py times
        # the native one against PyTorch and ONNX Runtime on MobileNetV2's layers; numba's
        # forward is 2.3x-120x its im2col and 1.8x-7x its direct kernel there, its
        # gradients 2.6x-19x its im2col (batch 1 and 8, interleaved); the GPU kernels
        # follow the same design, unmeasured on hardware.
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
    if wide_winograd and _winograd_pays(spec, prepacked and op == "conv2d_forward"):
        return "winograd_f43"
    if "im2col" not in candidates:
        return "direct" if "direct" in candidates else candidates[0]
    if "direct" not in candidates:
        return "im2col"
    return "im2col" if _im2col_wins(op, spec, Cg, prepacked) else "direct"


def _winograd_tiles(spec) -> int:
    """4x4 output tiles of F(4,3) over the whole batch (the transform GEMMs' width)."""
    return spec.N * -(-spec.P // 4) * -(-spec.Q // 4)


def _winograd_pays(spec, prepacked: bool = False) -> bool:
    """Enough tiles for F(4,3)'s transform-domain GEMMs: ``_MIN_WINOGRAD_TILES``, or from
    ``_MIN_WINOGRAD_TILES_DEEP`` on layers deep enough (both channel counts at least
    ``_DEEP_CHANNELS``) that the direct and GEMM paths are as short of columns, or with
    the filters transformed once (``prepacked``)."""
    tiles = _winograd_tiles(spec)
    if prepacked:
        return tiles >= _MIN_WINOGRAD_TILES_PREPACKED
    deep = min(spec.C, spec.K) >= _DEEP_CHANNELS
    return tiles >= (_MIN_WINOGRAD_TILES_DEEP if deep else _MIN_WINOGRAD_TILES)


def _small_batch_gemm(op: str, spec, Cg: int, prepacked: bool = False) -> bool:
    """Forward passes at batch <= ``_SMALL_BATCH`` that the im2col GEMM serves best (see
    the module notes): unless the filters are prepacked, kernels larger than 1x1 on so
    few output columns that packing the filters per call would dominate."""
    if op != "conv2d_forward" or spec.N > _SMALL_BATCH or spec.groups != 1:
        return False
    if _pointwise(spec) or prepacked:
        return False
    if spec.N == 1 and tuple(spec.stride) == (1, 1) and \
            Cg * spec.R * spec.S <= _MAX_IN_TASK_PACK_COLUMNS:
        return False  # the direct kernel packs each filter block inside its task
    return Cg >= _MIN_GEMM_CHANNELS_SMALL_BATCH and \
        spec.N * spec.P * spec.Q <= _MAX_PACK_BOUND_COLS


def _pointwise(spec) -> bool:
    """1x1 with padding 0: the direct algorithm runs it on the pointwise kernel."""
    return (spec.R, spec.S) == (1, 1) and tuple(spec.padding) == (0, 0) and \
        tuple(getattr(spec, "padding_end", (0, 0))) == (0, 0)


def _im2col_wins(op: str, spec, Cg: int, prepacked: bool = False) -> bool:
    if spec.groups > 1 and Cg == 1:
        return False  # depthwise: a GEMM of one row per group
    if _small_batch_gemm(op, spec, Cg, prepacked):
        return True
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
