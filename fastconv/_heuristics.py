"""Per-backend algorithm heuristics for ``algo="auto"`` (called only by the dispatcher).

Each rule is justified by the benchmark (``python bench/conv_cpu.py`` and the
direct-vs-im2col sweep described in bench/README.md):

* ``winograd_f43`` where it can serve (3x3, stride 1, no dilation, groups 1) and both
  channel counts are at least 16: its transforms cost O(C + K) per tile against the
  O(C*K) products they save, so thin layers do not repay them.
* ``im2col`` (the packed GEMM with im2col fused into its packing) otherwise, except
  where the GEMM's row dimension would be nearly empty: the micro-tile is 14 (AVX-512)
  or 6 rows, so with fewer than 4 output channels per group (forward, weight gradient)
  or 4 input channels per group (stride-1 data gradient, which runs as a forward
  convolution of the output gradient) most of each tile is wasted work. Measured on the
  2-core Zen 4 CI box (1 thread, CPU time): depthwise 3x3 at 56x56 forward 0.6x, weight
  gradient 0.4x direct/im2col time, i.e. direct wins; LeNet's C=1 and C=3 stems, data
  gradient 0.03x-0.1x, direct wins; every ResNet-18 layer and every layer with >= 8
  channels per group, im2col wins by 1.3x-15x.
* ``direct`` otherwise.

For ``cuda`` the rule follows the kernels' design, not a GPU measurement (no GPU has run
them yet): Winograd F(4,3) where it serves and both channel counts are at least 16 (the
transform-domain GEMM tiles are 16 wide), ``direct`` where a group has fewer than 8
input or output channels (depthwise and thin layers: the implicit GEMM's 64- or 128-row
tiles would be mostly padding), otherwise ``implicit_gemm`` (no column buffer in GPU
memory).

Other backends keep the plain preference order (winograd_f43, im2col, implicit_gemm,
direct) until someone measures them.
"""
from __future__ import annotations

# Fewer GEMM rows than this per group and the register tile is mostly padding.
_MIN_GEMM_ROWS = 4
_MIN_WINOGRAD_CHANNELS = 16
# Below this many channels per group the CUDA implicit GEMM's tiles are mostly padding.
_CUDA_MIN_GEMM_CHANNELS = 8


def _gemm_rows(op: str, spec) -> int:
    """Rows of the im2col GEMM for ``op`` (the dimension the micro-tile's MR spans)."""
    Cg, Kg = spec.C // spec.groups, spec.K // spec.groups
    if op == "conv2d_backward_data":
        if spec.stride == (1, 1):
            return Cg  # computed as a forward convolution producing Cg channels per group
        return Cg * spec.R * spec.S  # column-buffer rows
    return Kg


def pick(backend: str, op: str, spec, dtype: str, candidates: list[str]) -> str:
    """Chooses among ``candidates`` (all implemented and able to serve ``spec``)."""
    Cg, Kg = spec.C // spec.groups, spec.K // spec.groups
    if backend == "cuda":
        if ("winograd_f43" in candidates and spec.groups == 1
                and min(Cg, Kg) >= _MIN_WINOGRAD_CHANNELS):
            return "winograd_f43"
        if "direct" in candidates and min(Cg, Kg) < _CUDA_MIN_GEMM_CHANNELS:
            return "direct"
        if "implicit_gemm" in candidates:
            return "implicit_gemm"
    if backend != "native":
        # Not measured here: the first of the usual preference order.
        for algo in ("winograd_f43", "im2col", "implicit_gemm", "direct"):
            if algo in candidates:
                return algo
        return candidates[0]
    if ("winograd_f43" in candidates and spec.groups == 1
            and min(Cg, Kg) >= _MIN_WINOGRAD_CHANNELS):
        return "winograd_f43"
    if "im2col" in candidates:
        depthwise = spec.groups > 1 and Cg == 1
        if "direct" not in candidates or (not depthwise
                                          and _gemm_rows(op, spec) >= _MIN_GEMM_ROWS):
            return "im2col"
        return "direct"
    return "direct" if "direct" in candidates else candidates[0]
