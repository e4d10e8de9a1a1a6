"""Command-line and thread-count inputs that used to give a traceback, or exit 0 with nothing
sensible run (issue 18, items 9, 13 and 14): each now ends in one ``fastconv: error:`` line
with exit status 2, or a ValueError naming the limit."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import fastconv as fc

from conftest import FASTCONV_PATH

ROOT = Path(__file__).resolve().parents[1]


def run_cli(*args, env_extra=None, timeout=300):
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([FASTCONV_PATH, env.get("PYTHONPATH", "")])
    env.pop("FASTCONV_TRACEBACK", None)
    env.pop("FASTCONV_NUM_THREADS", None)
    env.update(env_extra or {})
    return subprocess.run([sys.executable, "-m", "fastconv", *args], capture_output=True,
                          text=True, timeout=timeout, env=env, cwd=FASTCONV_PATH)


def assert_one_line_error(proc, *needles):
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("fastconv: error:"), proc.stderr
    assert "Traceback" not in proc.stderr
    for n in needles:
        assert n in lines[0], (n, lines[0])


@pytest.mark.parametrize("args, needle", [
    (["--batch-size", "0"], "--batch-size"),
    (["--batch-size", "-4"], "--batch-size"),
    (["--epochs", "-1"], "--epochs"),
    (["--epochs", "0"], "--epochs"),
    (["--limit", "0"], "--limit"),
    (["--limit", "-1"], "--limit"),
    (["--shift", "-3"], "--shift"),
    (["--threads", "-2"], "--threads"),
])
def test_train_refuses_non_positive_counts(args, needle):
    assert_one_line_error(run_cli("train", "--no-progress", *args), needle)


def test_summary_refuses_zero_classes():
    assert_one_line_error(run_cli("summary", "lenet5", "--num-classes", "0"), "--num-classes")


def test_bench_shape_beyond_memory_is_one_line():
    proc = run_cli("bench", "--shape", "100000,64,224,224,64,3,3", "--reps", "1",
                   "--no-progress")
    assert_one_line_error(proc, "out of memory")


@pytest.mark.parametrize("value, needle", [("abc", "'abc'"), ("-3", "-3"),
                                           ("5000", "at most 4096")])
def test_bad_threads_env_is_one_line_at_first_use(value, needle):
    proc = run_cli("info", env_extra={"FASTCONV_NUM_THREADS": value})
    assert_one_line_error(proc, "FASTCONV_NUM_THREADS", needle)
    # Importing fastconv still works; the error comes at the first kernel call.
    code = ("import numpy as np, fastconv as fc\n"
            "try:\n    fc.conv2d(np.ones((1, 1, 4, 4), 'f4'), np.ones((1, 1, 3, 3), 'f4'))\n"
            "except ValueError as e:\n    print('ValueError', e)\n")
    env = dict(os.environ, FASTCONV_NUM_THREADS=value,
               PYTHONPATH=os.pathsep.join([FASTCONV_PATH, os.environ.get("PYTHONPATH", "")]))
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       timeout=120, env=env, cwd=FASTCONV_PATH)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("ValueError FASTCONV_NUM_THREADS"), r.stdout


def test_set_num_threads_refuses_huge_counts_and_keeps_state():
    before = fc.get_num_threads()
    with pytest.raises(ValueError, match="at most 4096"):
        fc.set_num_threads(2**40)
    assert fc.get_num_threads() == before
    with pytest.raises(ValueError, match="non-negative"):
        fc.set_num_threads(-1)
    assert fc.get_num_threads() == before
    import numpy as np

    out = fc.conv2d(np.ones((1, 1, 4, 4), "f4"), np.ones((1, 1, 3, 3), "f4"))
    assert out.shape == (1, 1, 2, 2) and float(out.sum()) == 36.0
