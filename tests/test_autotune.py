"""The autotuner: timed choice, the persistent cache (restart, corruption, foreign entries,
concurrent writers) and its use by the dispatcher for ``algo="auto"``."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import fastconv
from fastconv import _dispatch
from fastconv import autotune as AT
from fastconv._args import conv_spec

ROOT = Path(__file__).resolve().parents[1]
SPEC = conv_spec((2, 8, 12, 12), (16, 8, 3, 3), 1, 1, 1, 1)
OP = "conv2d_forward"


@pytest.fixture(autouse=True)
def cache_dir(tmp_path, monkeypatch):
    """Every test gets an empty cache directory and a process state as after start-up."""
    d = tmp_path / "cache"
    monkeypatch.setenv("FASTCONV_CACHE_DIR", str(d))
    was = AT.enabled()
    AT._forget_memory()
    yield d
    AT._forget_memory()
    AT.autotune(was)


class FakeClock:
    """A clock that only moves when the fake runner 'runs' an algorithm."""

    def __init__(self, cost):
        self.t = 0.0
        self.cost = cost
        self.calls = []

    def __call__(self):
        return self.t

    def run(self, algo):
        self.calls.append(algo)
        self.t += self.cost[algo]


def _env():
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def _never(algo):
    raise AssertionError(f"runner called for {algo}: the cached choice was not used")


# ----------------------------------------------------------------------------- timing


@pytest.mark.parametrize("cost,winner", [
    ({"direct": 5e-3, "im2col": 1e-3, "winograd_f43": 3e-3}, "im2col"),
    ({"direct": 2e-3, "im2col": 4e-3, "winograd_f43": 3e-3}, "direct"),
    ({"direct": 9e-3, "im2col": 4e-3, "winograd_f43": 1e-4}, "winograd_f43"),
])
def test_tuned_choice_is_the_fastest(monkeypatch, cost, winner):
    clock = FakeClock(cost)
    monkeypatch.setattr(AT, "_clock", clock)
    got = AT.tuned_choice("native", OP, SPEC, np.dtype(np.float32), list(cost), clock.run)
    assert got == winner
    # every candidate was warmed up and then timed REPEATS times
    for a in cost:
        assert clock.calls.count(a) == 1 + AT.REPEATS
    entry = AT.lookup(AT.make_key("native", OP, SPEC, np.dtype(np.float32)))
    assert entry["algo"] == winner
    assert entry["ms"] == pytest.approx({a: c * 1e3 for a, c in cost.items()})


def test_median_not_first_or_mean(monkeypatch):
    """One slow outlier among the timed runs does not decide the choice."""
    seq = {"direct": [1e-3, 1e-3, 50e-3, 1e-3], "im2col": [2e-3, 2e-3, 2e-3, 2e-3]}
    t = [0.0]

    def run(algo):
        t[0] += seq[algo].pop(0)

    monkeypatch.setattr(AT, "_clock", lambda: t[0])
    assert AT.tuned_choice("native", OP, SPEC, "float32", ["direct", "im2col"], run) == "direct"


def test_second_call_uses_memory(monkeypatch):
    clock = FakeClock({"direct": 2e-3, "im2col": 1e-3})
    monkeypatch.setattr(AT, "_clock", clock)
    assert AT.tuned_choice("native", OP, SPEC, "float32", ["direct", "im2col"], clock.run) \
        == "im2col"
    assert AT.tuned_choice("native", OP, SPEC, "float32", ["direct", "im2col"], _never) \
        == "im2col"


def test_key_separates_shape_dtype_threads_backend():
    base = AT.make_key("native", OP, SPEC, "float32", threads=2)
    other_spec = conv_spec((2, 8, 12, 12), (16, 8, 3, 3), 2, 1, 1, 1)
    assert AT.make_key("native", OP, other_spec, "float32", threads=2) != base
    assert AT.make_key("native", OP, SPEC, "float64", threads=2) != base
    assert AT.make_key("native", OP, SPEC, "float32", threads=1) != base
    assert AT.make_key("numba", OP, SPEC, "float32", threads=2) != base
    assert AT.make_key("native", "conv2d_backward_data", SPEC, "float32", threads=2) != base
    assert AT.make_key("native", OP, SPEC, "float32", {"fused": 1}, threads=2) != base
    assert fastconv.__version__ in base and AT.cpu_model() in base
    for same in (np.float32, np.dtype(np.float32)):
        assert AT.make_key("native", OP, SPEC, same, threads=2) == base


def test_failing_candidate_is_skipped(monkeypatch):
    clock = FakeClock({"direct": 5e-3, "im2col": 1e-3})

    def run(algo):
        if algo == "im2col":
            raise RuntimeError("workspace too large")
        clock.run(algo)

    monkeypatch.setattr(AT, "_clock", clock)
    assert AT.tuned_choice("native", OP, SPEC, "float32", ["direct", "im2col"], run) == "direct"

    def broken(algo):
        raise RuntimeError("no")

    spec2 = SPEC.with_batch(3)
    assert AT.tuned_choice("native", OP, spec2, "float32", ["direct", "im2col"], broken) is None


def test_stale_winner_is_retuned(monkeypatch):
    """A remembered algorithm that is no longer a candidate is not returned."""
    clock = FakeClock({"direct": 2e-3, "im2col": 1e-3, "winograd_f23": 3e-3})
    monkeypatch.setattr(AT, "_clock", clock)
    AT.tuned_choice("native", OP, SPEC, "float32", ["direct", "im2col"], clock.run)
    got = AT.tuned_choice("native", OP, SPEC, "float32", ["direct", "winograd_f23"], clock.run)
    assert got == "direct"


# ----------------------------------------------------------------------------- persistence


def test_cache_location_env(monkeypatch, tmp_path):
    monkeypatch.setenv("FASTCONV_CACHE_DIR", str(tmp_path / "a"))
    assert AT.cache_path() == tmp_path / "a" / "autotune.json"
    monkeypatch.delenv("FASTCONV_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert AT.cache_path() == tmp_path / "xdg" / "fastconv" / "autotune.json"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert AT.cache_path() == tmp_path / "home" / ".cache" / "fastconv" / "autotune.json"


def test_round_trip_across_restart(monkeypatch, cache_dir):
    clock = FakeClock({"direct": 2e-3, "im2col": 1e-3})
    monkeypatch.setattr(AT, "_clock", clock)
    assert AT.tuned_choice("native", OP, SPEC, "float32", ["direct", "im2col"], clock.run) \
        == "im2col"
    doc = json.loads(AT.cache_path().read_text())
    assert doc["format"] == AT.FORMAT and len(doc["entries"]) == 1
    assert AT.cache_entries() == 1 and AT.cache_entries(local_only=True) == 1
    # In-process restart: memory dropped, the file answers.
    AT._forget_memory()
    assert AT.tuned_choice("native", OP, SPEC, "float32", ["direct", "im2col"], _never) \
        == "im2col"
    # A real new process reads the same file and does not re-time.
    code = textwrap.dedent("""
        import numpy as np
        from fastconv import autotune as AT
        from fastconv._args import conv_spec
        spec = conv_spec((2, 8, 12, 12), (16, 8, 3, 3), 1, 1, 1, 1)
        def never(a):
            raise SystemExit("re-timed " + a)
        print(AT.tuned_choice("native", "conv2d_forward", spec, "float32",
                              ["direct", "im2col"], never))
    """)
    env = _env()
    env["FASTCONV_CACHE_DIR"] = str(cache_dir)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "im2col"


def test_corrupt_cache_warns_once_then_works(monkeypatch, cache_dir):
    cache_dir.mkdir(parents=True)
    AT.cache_path().write_text('{"format": "fastconv-autotune", "entries": {trunc')
    clock = FakeClock({"direct": 2e-3, "im2col": 1e-3})
    monkeypatch.setattr(AT, "_clock", clock)
    with pytest.warns(AT.CacheWarning, match="corrupt") as record:
        got = AT.tuned_choice("native", OP, SPEC, "float32", ["direct", "im2col"], clock.run)
        AT.tuned_choice("native", OP, SPEC.with_batch(5), "float32", ["direct", "im2col"],
                        clock.run)
        AT.lookup("no-such-key")
    assert got == "im2col"
    assert len([w for w in record if issubclass(w.category, AT.CacheWarning)]) == 1
    # the file was rewritten valid, with both entries
    doc = json.loads(AT.cache_path().read_text())
    assert len(doc["entries"]) == 2
    AT._forget_memory()
    assert AT.tuned_choice("native", OP, SPEC, "float32", ["direct", "im2col"], _never) \
        == "im2col"


@pytest.mark.parametrize("content", [
    b"\x00\xff\xfe binary garbage",
    b"[1, 2, 3]",
    b'{"format": "someone-else", "entries": {}}',
    b'{"format": "fastconv-autotune", "format_version": "x", "entries": {}}',
    b'{"format": "fastconv-autotune", "format_version": 1, "entries": [1]}',
])
def test_unusable_file_is_ignored_with_one_warning(monkeypatch, cache_dir, content):
    cache_dir.mkdir(parents=True)
    AT.cache_path().write_bytes(content)
    clock = FakeClock({"direct": 2e-3, "im2col": 1e-3})
    monkeypatch.setattr(AT, "_clock", clock)
    with pytest.warns(AT.CacheWarning) as record:
        assert AT.tuned_choice("native", OP, SPEC, "float32", ["direct", "im2col"],
                               clock.run) == "im2col"
    assert len(record) == 1
    assert json.loads(AT.cache_path().read_text())["format_version"] == AT.FORMAT_VERSION


def test_newer_format_is_left_alone(monkeypatch, cache_dir):
    """A cache written by a newer fastconv (format_version 2+) is neither used nor
    overwritten: this process keeps its choices in memory."""
    cache_dir.mkdir(parents=True)
    newer = b'{"format": "fastconv-autotune", "format_version": 99, "entries": {"k": 1}}'
    AT.cache_path().write_bytes(newer)
    clock = FakeClock({"direct": 2e-3, "im2col": 1e-3})
    monkeypatch.setattr(AT, "_clock", clock)
    with pytest.warns(AT.CacheWarning, match="newer") as record:
        assert AT.tuned_choice("native", OP, SPEC, "float32", ["direct", "im2col"],
                               clock.run) == "im2col"
    assert len(record) == 1
    assert AT.cache_path().read_bytes() == newer
    assert AT.tuned_choice("native", OP, SPEC, "float32", ["direct", "im2col"], _never) \
        == "im2col"


def test_cache_file_is_readable_by_others(monkeypatch):
    clock = FakeClock({"direct": 2e-3, "im2col": 1e-3})
    monkeypatch.setattr(AT, "_clock", clock)
    AT.tuned_choice("native", OP, SPEC, "float32", ["direct", "im2col"], clock.run)
    assert AT.cache_path().stat().st_mode & 0o044 == 0o044


def test_foreign_version_or_cpu_entries_are_ignored_but_kept(monkeypatch, cache_dir):
    """Entries another fastconv version or another CPU wrote never decide here (and are
    not deleted: a cache shared by machines keeps each one's choices)."""
    key = AT.make_key("native", OP, SPEC, "float32")
    parts = key.split("|")
    other_version = "|".join(["v0.0.0-other"] + parts[1:])
    other_cpu = "|".join(parts[:1] + ["cpu:Some Other CPU x64"] + parts[2:])
    cache_dir.mkdir(parents=True)
    AT.cache_path().write_text(json.dumps({
        "format": AT.FORMAT, "format_version": AT.FORMAT_VERSION,
        "entries": {other_version: {"algo": "direct"}, other_cpu: {"algo": "direct"}}}))
    assert AT.cache_entries() == 2 and AT.cache_entries(local_only=True) == 0
    clock = FakeClock({"direct": 2e-3, "im2col": 1e-3})
    monkeypatch.setattr(AT, "_clock", clock)
    assert AT.tuned_choice("native", OP, SPEC, "float32", ["direct", "im2col"], clock.run) \
        == "im2col"
    assert clock.calls, "the foreign entries were used instead of timing"
    entries = json.loads(AT.cache_path().read_text())["entries"]
    assert set(entries) == {key, other_version, other_cpu}


def test_unwritable_cache_dir_warns_once_and_still_chooses(monkeypatch, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    monkeypatch.setenv("FASTCONV_CACHE_DIR", str(blocker / "sub"))
    clock = FakeClock({"direct": 2e-3, "im2col": 1e-3})
    monkeypatch.setattr(AT, "_clock", clock)
    with pytest.warns(AT.CacheWarning, match="unwritable") as record:
        assert AT.tuned_choice("native", OP, SPEC, "float32", ["direct", "im2col"],
                               clock.run) == "im2col"
        assert AT.tuned_choice("native", OP, SPEC.with_batch(3), "float32",
                               ["direct", "im2col"], clock.run) == "im2col"
    assert len(record) == 1
    # remembered in memory all the same
    assert AT.tuned_choice("native", OP, SPEC, "float32", ["direct", "im2col"], _never) \
        == "im2col"


_WRITER = textwrap.dedent("""
    import sys, time
    from fastconv import autotune as AT
    tag, n, start = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
    while time.time() < start:
        time.sleep(0.001)
    for i in range(n):
        AT.remember(f"test|{tag}|{i}", {"algo": "direct", "time": time.time()})
""")


def test_concurrent_writers_keep_every_entry(cache_dir):
    import time

    n = 25
    start = time.time() + 2.0  # both processes start writing at the same moment
    procs = [subprocess.Popen([sys.executable, "-c", _WRITER, tag, str(n), str(start)],
                              env={**_env(), "FASTCONV_CACHE_DIR": str(cache_dir)},
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for tag in ("a", "b")]
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
    doc = json.loads(AT.cache_path().read_text())
    assert set(doc["entries"]) == {f"test|{t}|{i}" for t in "ab" for i in range(n)}
    assert not list(cache_dir.glob(".autotune-*.tmp")), "temporary files left behind"


def test_clear_cache(monkeypatch):
    clock = FakeClock({"direct": 2e-3, "im2col": 1e-3})
    monkeypatch.setattr(AT, "_clock", clock)
    AT.tuned_choice("native", OP, SPEC, "float32", ["direct", "im2col"], clock.run)
    assert AT.cache_entries() == 1
    AT.clear_cache()
    assert AT.cache_entries() == 0 and not AT.cache_path().exists()


# ----------------------------------------------------------------------------- switch


def test_switch_in_any_import_order():
    fastconv.autotune(True)
    assert AT.enabled() and fastconv.autotune.enabled()
    fastconv.autotune(False)
    assert not AT.enabled()
    AT.autotune(True)
    assert fastconv.autotune.enabled()


@pytest.mark.parametrize("value,expected", [("1", "True"), ("0", "False"), ("", "False"),
                                            ("true", "True"), ("off", "False")])
def test_env_switch(value, expected):
    env = {**_env(), "FASTCONV_AUTOTUNE": value}
    out = subprocess.run([sys.executable, "-c",
                          "import fastconv; print(fastconv.autotune.enabled())"],
                         env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == expected


# ----------------------------------------------------------------------------- dispatcher


class _TwoAlgoBackend:
    """A stand-in backend module implementing two algorithms for the forward pass."""

    ALGOS = {"conv2d_forward": ("direct", "im2col")}


def test_dispatcher_uses_the_tuner_only_when_enabled(monkeypatch):
    from fastconv._heuristics import pick

    heuristic = pick("native", OP, SPEC, "float32", ["direct", "im2col"])
    other = {"direct": "im2col", "im2col": "direct"}[heuristic]
    clock = FakeClock({heuristic: 5e-3, other: 1e-3})  # the heuristic's choice is slower
    monkeypatch.setattr(AT, "_clock", clock)
    mod = _TwoAlgoBackend()
    # Off: the heuristic decides and nothing is run.
    AT.autotune(False)
    got = _dispatch.choose_conv_algo("native", mod, OP, SPEC, np.dtype(np.float32), "auto",
                                     runner=clock.run)
    assert got == heuristic and clock.calls == []
    # On: timed, and the faster algorithm wins over the heuristic's choice.
    AT.autotune(True)
    got = _dispatch.choose_conv_algo("native", mod, OP, SPEC, np.dtype(np.float32), "auto",
                                     runner=clock.run)
    assert got == other and set(clock.calls) == {"direct", "im2col"}
    # A named algorithm is never overridden by the tuner.
    assert _dispatch.choose_conv_algo("native", mod, OP, SPEC, np.dtype(np.float32),
                                      heuristic, runner=clock.run) == heuristic


def test_conv2d_auto_with_autotune_on_is_correct():
    """End to end through the public op: the result is right whatever was chosen."""
    from fastconv.backends import reference

    AT.autotune(True)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 9, 9)).astype(np.float32)
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    y = fastconv.conv2d(x, w, padding=1)
    spec = conv_spec(x.shape, w.shape, 1, 1, 1, 1)
    np.testing.assert_allclose(y, reference.conv2d_forward(x, w, None, spec), atol=1e-4)
