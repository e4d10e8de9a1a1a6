"""pytest-benchmark versions of the ``fastconv bench`` suites.

    PYTHONPATH=. pytest bench/test_suites.py --benchmark-columns=median,ops \
        --benchmark-group-by=param:layer

Environment: FASTCONV_BENCH_SUITE (resnet18 | resnet50 | vgg16 | deepbench; default
resnet18), FASTCONV_BENCH_BATCH (default 2), FASTCONV_BENCH_PASSES (comma list of
fwd,bwd_data,bwd_weight; default fwd), FASTCONV_BENCH_THREADS (default: fastconv's count).
Every implementation is validated against the NumPy reference before it is timed (the
same check ``fastconv bench`` makes); GFLOP/s lands in each result's ``extra_info``.
"""
from __future__ import annotations

import os

import pytest

import fastconv
from fastconv.benchmark import impls as I
from fastconv.benchmark import runner
from fastconv.benchmark import suites as S

SUITE = os.environ.get("FASTCONV_BENCH_SUITE", "resnet18")
BATCH = int(os.environ.get("FASTCONV_BENCH_BATCH", "2"))
PASSES = [p for p in os.environ.get("FASTCONV_BENCH_PASSES", "fwd").split(",") if p]
THREADS = int(os.environ.get("FASTCONV_BENCH_THREADS", "0")) or fastconv.get_num_threads()

LAYERS = S.suite(SUITE, BATCH)
IMPLS = I.fastconv_impls()[0] + I.peer_impls(["torch", "numpy"])[0]


@pytest.fixture(scope="module", autouse=True)
def _threads():
    with runner.threads(THREADS):
        yield


@pytest.mark.parametrize("pass_", PASSES)
@pytest.mark.parametrize("impl", IMPLS, ids=[i.name for i in IMPLS])
@pytest.mark.parametrize("layer", LAYERS, ids=[lay.name for lay in LAYERS])
def test_conv(benchmark, layer, impl, pass_):
    if pass_ not in impl.passes:
        pytest.skip(f"{impl.name} has no {pass_}")
    data = runner.make_data(layer)
    check = runner.measure(impl, layer, data, pass_, warmup=0, reps=1)
    if check["status"] == "skip":
        pytest.skip(check["note"])
    assert check["status"] == "ok", check["note"]
    fn = impl.prepare(layer, data, pass_)

    def run():
        fn()
        impl.sync()

    benchmark.group = f"{SUITE} {pass_} {layer.name}"
    benchmark.extra_info.update(suite=SUITE, layer=layer.name, shape=layer.describe(),
                                flops=layer.flops, threads=THREADS)
    benchmark(run)
    benchmark.extra_info["gflops_median"] = layer.flops / benchmark.stats.stats.median / 1e9
