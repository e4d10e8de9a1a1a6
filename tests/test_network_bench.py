"""`fastconv bench --network`: the whole-network benchmark (fastconv.benchmark.network)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from fastconv import cli
from fastconv.benchmark import network as NW
from fastconv.benchmark import peak as P

from conftest import requires_torch


@pytest.fixture(autouse=True)
def fixed_peak(tmp_path, monkeypatch):
    monkeypatch.setenv("FASTCONV_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(P, "measure_peak", lambda dtype="float32", threads=1, **k: {
        "gflops": 100.0, "method": "fixed for tests"})


def _have(mod):
    try:
        __import__(mod)
        return True
    except ImportError:
        return False


def test_run_without_peers_times_compiled_and_eager():
    rows, skipped = NW.run(["lenet5"], [1, 2], peers=(), threads=1, rounds=2, reps=1,
                           pause=0.0, peak=100.0)
    assert skipped == {}
    assert [(r["batch"], r["contender"]) for r in rows] == [
        (1, "fastconv compiled"), (1, "fastconv eager"),
        (2, "fastconv compiled"), (2, "fastconv eager")]
    for r in rows:
        assert r["status"] == "ok" and r["ms"] > 0 and r["timed_calls"] == 2
        assert r["max_err"] <= 1e-4
        assert r["flops"] == 2 * r["batch"] * 416520  # LeNet-5: 416,520 multiply-adds
        assert r["images_per_s"] == pytest.approx(r["batch"] / (r["ms"] * 1e-3))
        assert r["pct_peak"] == pytest.approx(r["gflops"])  # peak 100
    c, e = rows[0], rows[1]
    assert c["vs"]["fastconv eager"] == pytest.approx(e["ms"] / c["ms"])
    assert e["vs"]["fastconv compiled"] == pytest.approx(c["ms"] / e["ms"])


def test_a_contender_with_wrong_logits_is_not_timed(monkeypatch):
    real = NW.contenders

    def broken(*a, **k):
        cands, cm = real(*a, **k)
        cands.append(NW.Contender("liar", lambda x: np.zeros((x.shape[0], 10), np.float32)))
        return cands, cm

    monkeypatch.setattr(NW, "contenders", broken)
    rows, _ = NW.run(["lenet5"], [1], peers=(), threads=1, rounds=1, reps=1, pause=0.0)
    liar = [r for r in rows if r["contender"] == "liar"][0]
    assert liar["status"].startswith("FAIL") and liar["ms"] is None
    assert liar["timed_calls"] == 0


def test_unknown_network_and_peer_are_refused():
    with pytest.raises(ValueError, match="unknown network"):
        NW.run(["alexnet9"], [1], peers=())
    with pytest.raises(ValueError, match="unknown peer"):
        NW.run(["lenet5"], [1], peers=("tensorflow",))


@requires_torch
@pytest.mark.skipif(not (_have("onnxruntime") and _have("openvino") and _have("onnx")),
                    reason="the peers extra (onnxruntime, openvino, onnx) is not installed")
def test_cli_smoke_run_with_every_peer(tmp_path, capsys):
    out = tmp_path / "net.json"
    rc = cli.main(["bench", "--network", "lenet5", "--batch", "1,2", "--threads", "1",
                   "--rounds", "1", "--reps", "1", "--pause", "0", "--no-progress",
                   "--json", str(out)])
    assert rc == 0
    text = capsys.readouterr().out
    assert "lenet5, batch 1" in text and "compiled x" in text
    doc = json.loads(out.read_text())
    names = {r["contender"] for r in doc["results"]}
    assert names == {"fastconv compiled", "fastconv eager", "torch", "onnxruntime",
                     "openvino"}
    for r in doc["results"]:
        assert r["status"] == "ok", r
        assert r["max_err"] <= 1e-4
        assert r["ms"] > 0 and set(r["vs"]) == names - {r["contender"]}
    assert doc["meta"]["peak_gflops"] == 100.0


def test_cli_errors(capsys):
    assert cli.main(["bench", "--network", "nope", "--no-progress"]) == 2
    assert "unknown network" in capsys.readouterr().err
    assert cli.main(["bench", "--network", "lenet5", "--peers", "numpy"]) == 2
    assert "unknown peer" in capsys.readouterr().err
    assert cli.main(["bench", "resnet18", "--batch", "1,8"]) == 2
    assert "one size" in capsys.readouterr().err


def test_without_torch_the_peers_say_what_is_missing(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_torch(name, *a, **k):
        if name == "torch" or name.startswith("torch."):
            raise ImportError("No module named 'torch'")
        return real_import(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", no_torch)
    rows, skipped = NW.run(["lenet5"], [1], peers=("torch", "onnxruntime"), threads=1,
                           rounds=1, reps=1, pause=0.0)
    assert set(skipped) == {"torch", "onnxruntime"}
    assert all("PyTorch is not installed" in why for why in skipped.values())
    assert {r["contender"] for r in rows} == {"fastconv compiled", "fastconv eager"}
