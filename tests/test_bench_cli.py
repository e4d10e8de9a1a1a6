"""``fastconv bench``: suites, validate-before-time, timing, outputs (JSON/CSV/PNG), --tune,
and the autotune lines of ``fastconv info``."""
from __future__ import annotations

import csv
import json

import numpy as np
import pytest

import fastconv
from fastconv import _native
from fastconv import autotune as AT
from fastconv import cli
from fastconv.benchmark import impls as I
from fastconv.benchmark import peak as P
from fastconv.benchmark import report, runner
from fastconv.benchmark import suites as S

try:
    import torch
except ImportError:  # torch is an optional peer
    torch = None

TINY = "2,3,9,9,4,3,3,1,1"  # N,C,H,W,K,R,S,stride,pad


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    """A private cache dir and a fixed peak (measuring it is tested on its own)."""
    monkeypatch.setenv("FASTCONV_CACHE_DIR", str(tmp_path / "cache"))
    AT._forget_memory()
    monkeypatch.setattr(P, "measure_peak", lambda dtype="float32", threads=1, **k: {
        "gflops": 100.0, "method": "fixed for tests", "candidates": {}})
    yield
    AT._forget_memory()


def _bench(tmp_path, *extra):
    paths = {k: tmp_path / f"out.{k}" for k in ("json", "csv", "png")}
    rc = cli.main(["bench", "--shape", TINY, "--reps", "2", "--warmup", "0", "--no-progress",
                   "--json", str(paths["json"]), "--csv", str(paths["csv"]),
                   "--plot", str(paths["png"]), *extra])
    return rc, paths


# ----------------------------------------------------------------------------- suites


@pytest.mark.parametrize("name,gmacs", [("resnet18", 1.8136), ("resnet50", 4.0871),
                                        ("vgg16", 15.3466)])
def test_suite_flops_match_the_published_network_totals(name, gmacs):
    """Conv multiply-adds per 224x224 image: ResNet-18 1.81 G, ResNet-50 4.09 G, VGG-16
    15.35 G (the published 1.82 / 4.09 / 15.47 G minus the fully connected layers)."""
    layers = S.suite(name, 1)
    total = sum(layer.flops * layer.count for layer in layers) / 2 / 1e9
    assert total == pytest.approx(gmacs, rel=1e-4)
    assert S.suite(name, 3)[0].N == 3


def test_resnet_layer_counts():
    assert sum(layer.count for layer in S.suite("resnet18")) == 20  # 17 3x3/7x7 + 3 downsample
    assert sum(layer.count for layer in S.suite("resnet50")) == 53  # 49 + 4 downsample


def test_deepbench_subset_scaling():
    layers = S.suite("deepbench", 16)
    assert len(layers) == len(S.DEEPBENCH_SUBSET)
    ds1 = layers[0]  # (700, 161, 1, 32, 32, 20, 5, 0, 0, 2, 2): w, h, ..., filter_w, filter_h
    assert (ds1.N, ds1.C, ds1.H, ds1.W, ds1.K, ds1.R, ds1.S) == (4, 1, 161, 700, 32, 5, 20)
    assert ds1.stride == (2, 2)
    assert all(layer.N >= 1 for layer in S.suite("deepbench", 1))
    for layer in layers:
        layer.spec()  # every entry is a valid convolution


def test_parse_shape():
    layer = S.parse_shape("2,3,9,9,4,3,3,2,1")
    assert layer.x_shape == (2, 3, 9, 9) and layer.w_shape == (4, 3, 3, 3)
    assert layer.stride == (2, 2) and layer.padding == (1, 1)
    assert S.parse_shape("1,4,8,8,4,3,3,1,1,2,2").groups == 2
    with pytest.raises(ValueError, match="C must be an int"):
        S.parse_shape("2,x,9,9,4,3,3")
    with pytest.raises(ValueError, match="N,C,H,W,K,R,S"):
        S.parse_shape("2,3,9")
    with pytest.raises(ValueError, match="K must be positive"):
        S.parse_shape("2,3,9,9,0,3,3")
    with pytest.raises(ValueError, match="larger than"):
        S.parse_shape("1,3,2,2,4,5,5")


def test_suite_rejects_bad_arguments():
    with pytest.raises(ValueError, match="unknown suite"):
        S.suite("alexnet")
    with pytest.raises(ValueError, match="batch"):
        S.suite("resnet18", 0)


# ----------------------------------------------------------------------------- peers


@pytest.mark.parametrize("kw", [dict(stride=(1, 1), padding=(1, 1), dilation=(1, 1)),
                                dict(stride=(2, 1), padding=(0, 2), dilation=(1, 1)),
                                dict(stride=(1, 1), padding=(2, 2), dilation=(2, 2))])
def test_numpy_and_scipy_peers_match_reference(kw):
    from fastconv.backends import reference

    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 3, 10, 9))
    w = rng.standard_normal((4, 3, 3, 3))
    b = rng.standard_normal(4)
    spec = fastconv._args.conv_spec(x.shape, w.shape, **kw)
    want = reference.conv2d_forward(x, w, b, spec)
    np.testing.assert_allclose(I.numpy_conv2d(x, w, b, groups=1, **kw), want, atol=1e-10)
    if kw["dilation"] == (1, 1):
        np.testing.assert_allclose(I.scipy_conv2d(x, w, b, kw["stride"], kw["padding"]),
                                   want, atol=1e-10)


# ----------------------------------------------------------------------------- timing


def test_reported_time_is_the_median(monkeypatch):
    costs = iter([9.0, 5e-3, 1e-3, 3e-3, 2e-3, 4e-3])  # validating run, then 5 timed runs
    t = [0.0]

    def prepare(layer, data, pass_):
        def fn():
            t[0] += next(costs)
            return I._numpy_prepare(layer, data, pass_)()
        return fn

    monkeypatch.setattr(runner, "_clock", lambda: t[0])
    monkeypatch.setattr(runner, "SLOW_S", 100.0)
    layer = S.parse_shape(TINY)
    row = runner.measure(I.Impl("fake", "peer", prepare), layer, runner.make_data(layer),
                         "fwd", warmup=0, reps=5)
    assert row["status"] == "ok"
    assert row["ms"] == pytest.approx(3.0) and row["ms_min"] == pytest.approx(1.0)
    assert row["reps"] == 5


def test_timing_stops_at_the_budget(monkeypatch):
    """A slow pass is timed until the budget is spent, not ``reps`` times."""
    t = [0.0]

    def prepare(layer, data, pass_):
        def fn():
            t[0] += 4.0
            return I._numpy_prepare(layer, data, pass_)()
        return fn

    monkeypatch.setattr(runner, "_clock", lambda: t[0])
    layer = S.parse_shape(TINY)
    row = runner.measure(I.Impl("slow", "peer", prepare), layer, runner.make_data(layer),
                         "fwd", warmup=3, reps=10)
    assert row["status"] == "ok" and row["reps"] == 2 and row["ms"] == pytest.approx(4000.0)
    assert t[0] == pytest.approx(4.0 * 3)  # validating run + 2 timed, no warm-up


def test_check_close():
    e = np.ones((2, 3))
    assert runner.check_close(e + 1e-6, e, "float32", 9)[0]
    assert not runner.check_close(e + 1e-2, e, "float32", 9)[0]
    assert not runner.check_close(e[:1], e, "float32", 9)[0]
    bad = e.copy()
    bad[0, 0] = np.nan
    assert not runner.check_close(bad, e, "float32", 9)[0]


# ----------------------------------------------------------------------------- the command


def test_bench_shape_outputs_parse(tmp_path, capsys):
    rc, paths = _bench(tmp_path, "--backward")
    assert rc == 0
    printed = capsys.readouterr().out
    assert "native:direct" in printed and "GFLOP/s" in printed

    doc = json.loads(paths["json"].read_text())
    assert doc["meta"]["peak_gflops"] == 100.0
    assert doc["meta"]["threads"] == fastconv.get_num_threads()
    rows = doc["results"]
    flops = 2 * 2 * 4 * 9 * 9 * 3 * 3 * 3
    ours = [r for r in rows if r["impl"] == "native:direct"]
    assert {r["pass"] for r in ours} == {"fwd", "bwd_data", "bwd_weight"}
    for r in ours:
        assert r["status"] == "ok" and r["ms"] > 0 and r["flops"] == flops
        assert r["gflops"] == pytest.approx(flops / (r["ms"] * 1e-3) / 1e9)
        assert r["pct_peak"] == pytest.approx(r["gflops"])  # peak fixed at 100
    if torch is not None:
        t = {r["pass"]: r for r in rows if r["impl"] == "torch"}
        assert {"fwd", "bwd_data", "bwd_weight"} <= set(t)
        for r in ours:
            assert r["vs_torch"] == pytest.approx(t[r["pass"]]["ms"] / r["ms"])
    assert any(r["impl"] == "numpy" and r["status"] == "ok" for r in rows)
    assert any(r["impl"] == "scipy" and r["status"] == "ok" for r in rows)  # a tiny layer

    with open(paths["csv"], newline="") as f:
        table = list(csv.DictReader(f))
    assert len(table) == len(rows)
    assert set(table[0]) == set(report.CSV_FIELDS)
    assert {r["impl"] for r in table} == {r["impl"] for r in rows}

    png = paths["png"].read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 1000


def test_backend_and_algo_filters(tmp_path):
    rc, paths = _bench(tmp_path, "--backend", "native", "--algo", "direct", "--peers", "none")
    assert rc == 0
    rows = json.loads(paths["json"].read_text())["results"]
    assert {r["impl"] for r in rows} == {"native:direct"}


def test_reference_is_timed_only_when_named(tmp_path):
    rc, paths = _bench(tmp_path, "--peers", "none")
    assert "reference:direct" not in {r["impl"] for r in
                                      json.loads(paths["json"].read_text())["results"]}
    rc, paths = _bench(tmp_path, "--backend", "reference", "--peers", "none")
    assert rc == 0
    assert {r["impl"] for r in json.loads(paths["json"].read_text())["results"]} == \
        {"reference:direct"}


def test_broken_implementation_is_marked_fail_and_not_timed(tmp_path, monkeypatch):
    real_conv2d, real_bwd = fastconv.conv2d, fastconv.conv2d_backward
    calls = {"fwd": 0}

    def is_target(k):  # break native:direct only; every other implementation stays right
        return k.get("backend") == "native" and k.get("algo") == "direct"

    def broken_conv2d(*a, **k):
        y = real_conv2d(*a, **k)
        if is_target(k):
            calls["fwd"] += 1
            y[0, 0, 0, 0] += 0.5  # one wrong pixel is enough
        return y

    def broken_bwd(*a, **k):
        gx, gw, gb = real_bwd(*a, **k)
        if gw is not None and is_target(k):
            gw = gw * 1.01
        return gx, gw, gb

    monkeypatch.setattr(fastconv, "conv2d", broken_conv2d)
    monkeypatch.setattr(fastconv, "conv2d_backward", broken_bwd)
    rc, paths = _bench(tmp_path, "--backward", "--peers", "numpy")
    assert rc == 1  # a fastconv implementation failed validation
    rows = {(r["impl"], r["pass"]): r for r in
            json.loads(paths["json"].read_text())["results"]}
    fwd = rows[("native:direct", "fwd")]
    assert fwd["status"] == "FAIL" and fwd["ms"] is None and fwd["gflops"] is None
    assert "wrong result" in fwd["note"]
    assert calls["fwd"] == 1, "a failing implementation was timed"
    assert rows[("native:direct", "bwd_weight")]["status"] == "FAIL"
    assert rows[("native:direct", "bwd_data")]["status"] == "ok"
    assert rows[("numpy", "fwd")]["status"] == "ok"
    # Every other implementation is right, or (depthwise on this dense layer) cannot serve it.
    assert all(r["status"] == "ok" or (r["status"] == "skip" and "depthwise" in impl)
               for (impl, _), r in rows.items() if impl not in ("native:direct", "native:auto"))


def test_raising_implementation_is_an_error_row(tmp_path, monkeypatch):
    def boom(*a, **k):
        raise RuntimeError("kernel exploded")

    monkeypatch.setattr(fastconv, "conv2d", boom)
    rc, paths = _bench(tmp_path, "--peers", "none")
    row = json.loads(paths["json"].read_text())["results"][0]
    assert rc == 1 and row["status"] == "error" and "kernel exploded" in row["note"]


def test_threads_flag_sets_and_restores(tmp_path):
    before = fastconv._dispatch.configured_threads()
    rc, paths = _bench(tmp_path, "--threads", "1", "--peers", "none")
    assert rc == 0
    assert json.loads(paths["json"].read_text())["meta"]["threads"] == 1
    assert fastconv._dispatch.configured_threads() == before


@pytest.mark.parametrize("argv,msg", [
    (["--shape", "2,3,x,9,4,3,3"], "H must be an int"),
    (["--backend", "nosuch"], "unknown backend"),
    (["--algo", "fft"], "unknown algorithm"),
    (["--threads", "0"], "--threads"),
    (["nosuchsuite"], "unknown suite"),
])
def test_bad_arguments_exit_2_with_a_message(argv, msg, capsys):
    assert cli.main(["bench", "--no-progress", *argv]) == 2
    assert msg in capsys.readouterr().err


@pytest.fixture
def second_native_algo(monkeypatch):
    """Makes the native backend offer a second algorithm name ("im2col", served by the
    direct kernels) for all three passes, so enumeration and tuning have a choice to make
    whatever algorithms this build has."""
    from fastconv.backends import native
    from fastconv.backends.native import conv

    monkeypatch.setattr(native, "ALGOS", {op: ("direct", "im2col") for op in I.PASS_OPS.values()})
    monkeypatch.setitem(conv._BINDINGS, "im2col", conv._BINDINGS["direct"])


def test_algorithms_are_enumerated_from_the_dispatcher(tmp_path, second_native_algo):
    rc, paths = _bench(tmp_path, "--backend", "native", "--peers", "none", "--backward")
    assert rc == 0
    rows = json.loads(paths["json"].read_text())["results"]
    assert {(r["impl"], r["pass"]) for r in rows} == {
        (i, p) for i in ("native:direct", "native:im2col") for p in I.PASS_OPS}
    assert all(r["status"] == "ok" for r in rows)


def test_tune_fills_the_cache(monkeypatch, capsys, second_native_algo):
    """--tune runs each layer's passes through algo='auto' with autotuning on; every
    multi-candidate (layer, pass) ends up in the cache, then autotune is off again."""
    tiny = [S.Layer("tiny", 1, 3, 8, 8, 4, 3, 3, (1, 1), (1, 1)),
            S.Layer("tiny1x1", 1, 4, 6, 6, 5, 1, 1)]
    monkeypatch.setattr(S, "suite", lambda name, batch=16: tiny)
    AT.autotune(False)
    assert cli.main(["bench", "--tune", "resnet18", "--backend", "native"]) == 0
    out = capsys.readouterr().out
    assert "tiny1x1" in out and str(AT.cache_path()) in out.replace("\n", "")
    assert not AT.enabled()
    from fastconv import _dispatch

    mod = _dispatch.load_backend("native")
    expected = 0
    for layer in tiny:
        for op in _dispatch.CONV_OPS:
            if len(_dispatch.serving_algos("native", mod, op, layer.spec())) > 1:
                expected += 1
                key = AT.make_key("native", op, layer.spec(), np.dtype("float32"))
                assert AT.lookup(key) is not None
    assert expected == 6 and AT.cache_entries() == expected


def test_info_shows_the_cache(capsys):
    assert cli.main(["info"]) == 0
    out = capsys.readouterr().out
    assert "autotune cache:" in out and str(AT.cache_path()) in out


def test_measure_peak_is_the_fma_peak_and_cached(monkeypatch, tmp_path):
    monkeypatch.undo()  # the real measurement, not the fixed one
    monkeypatch.setenv("FASTCONV_CACHE_DIR", str(tmp_path / "peakcache"))
    res = P.measure_peak("float32", 1)
    fma = P.measure_fma_peak("float32", 1, seconds=0.1)
    assert res["gflops"] > 0 and fma["gflops"] > 0 and res["gemm_gflops"] > 0
    assert "FMA chains" in res["method"] and _native.active_isa() in res["method"]
    # The peak is the FMA rate, not the GEMM's. A GEMM reaches at most the FMA peak; the
    # 2x slack is for other processes on a shared machine (the two are measured at
    # different moments).
    assert res["gemm_gflops"] <= 2 * max(res["gflops"], fma["gflops"])
    calls = []
    monkeypatch.setattr(P, "measure_peak", lambda *a, **k: calls.append(1) or
                        {"gflops": 42.0, "method": "m", "candidates": {}})
    first = P.peak_gflops("float32", 3)
    second = P.peak_gflops("float32", 3)
    assert first["gflops"] == second["gflops"] == 42.0
    assert not first["cached"] and second["cached"] and len(calls) == 1
    assert (tmp_path / "peakcache" / "peak.json").exists()


@pytest.mark.skipif(fastconv.backends()["cuda"]["available"],
                    reason="the reason line is printed only where the cuda backend is missing")
def test_skip_reasons_keep_their_brackets(tmp_path, capsys):
    # rich markup used to swallow "[gpu]" in "install fastconv[gpu]".
    _bench(tmp_path)
    assert "fastconv[gpu]" in capsys.readouterr().out
