"""Shared by the bench scripts (run as ``python bench/<script>.py``, which puts this
directory on sys.path)."""
from __future__ import annotations

import glob
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# (name, C, H, K, R, stride, padding): ResNet-18's distinct convolution shapes.
RESNET18_LAYERS = [
    ("stem 7x7/2 3->64 @224", 3, 224, 64, 7, 2, 3),
    ("3x3/1 64 @56", 64, 56, 64, 3, 1, 1),
    ("3x3/1 128 @28", 128, 28, 128, 3, 1, 1),
    ("3x3/1 256 @14", 256, 14, 256, 3, 1, 1),
    ("3x3/1 512 @7", 512, 7, 512, 3, 1, 1),
    ("3x3/2 64->128 @56", 64, 56, 128, 3, 2, 1),
    ("3x3/2 128->256 @28", 128, 28, 256, 3, 2, 1),
    ("3x3/2 256->512 @14", 256, 14, 512, 3, 2, 1),
    ("1x1/2 64->128 @56", 64, 56, 128, 1, 2, 0),
    ("1x1/2 128->256 @28", 128, 28, 256, 1, 2, 0),
    ("1x1/2 256->512 @14", 256, 14, 512, 1, 2, 0),
]


def fma_peak(threads: int, dtype="float32") -> tuple[float, str]:
    """The machine peak every "% of peak" here is against -> (GFLOP/s, how): fastconv's
    FMA-chain micro-benchmark (fastconv.benchmark.peak) for the ISA in use, on ``threads``
    threads. Call after use_source_tree()."""
    from fastconv.benchmark import peak as P

    res = P.peak_gflops(dtype, threads)
    return res["gflops"], res["method"]


def use_source_tree() -> None:
    """Imports fastconv from the source tree when it holds a developer build
    (tools/build_inplace.sh); otherwise the installed package is used."""
    if glob.glob(os.path.join(ROOT, "fastconv", "_native*")) and ROOT not in sys.path:
        sys.path.insert(0, ROOT)
