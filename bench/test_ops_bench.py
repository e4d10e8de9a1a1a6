"""pytest-benchmark suite: the non-convolution ops of a ResNet-18 step, fastconv native vs
PyTorch, grouped per case so the two appear side by side.

    PYTHONPATH=. pytest bench/test_ops_bench.py --benchmark-only --benchmark-group-by=group
    FASTCONV_BENCH_BATCH=16 ...   (default 2 keeps a run short)

Each case is validated against PyTorch before it is timed. ``bench/ops_cpu.py`` prints the
same cases as one table with GB/s and the percentage of the measured memory bandwidth.
"""
from __future__ import annotations

import os

import pytest

torch = pytest.importorskip("torch", reason="the benchmark compares against PyTorch")

import fastconv as fc  # noqa: E402
from ops_cpu import resnet18_cases  # noqa: E402

BATCH = int(os.environ.get("FASTCONV_BENCH_BATCH", "2"))
THREADS = int(os.environ.get("FASTCONV_BENCH_THREADS", "2"))
CASES = {c.name: c for c in resnet18_cases(BATCH)}


@pytest.fixture(scope="module", autouse=True)
def _threads():
    from fastconv.backends import native

    before_fc, before_t = native.get_num_threads(), torch.get_num_threads()
    fc.set_num_threads(THREADS)
    native.set_num_threads(THREADS)  # fc.set_num_threads misses a backend not yet loaded
    torch.set_num_threads(THREADS)
    yield
    fc.set_num_threads(before_fc)
    native.set_num_threads(before_fc)
    torch.set_num_threads(before_t)


@pytest.mark.parametrize("impl", ["fastconv", "torch"])
@pytest.mark.parametrize("name", list(CASES))
def test_resnet18_op(benchmark, name, impl):
    case = CASES[name]
    with torch.no_grad():
        case.check(case.ours(), case.theirs())
        fn = case.ours if impl == "fastconv" else case.theirs
        benchmark.group = name
        benchmark.extra_info["bytes"] = case.traffic
        benchmark(fn)
