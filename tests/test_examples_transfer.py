"""The README's examples run (in their reduced forms) as the scripts users would run."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from conftest import FASTCONV_PATH

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(script, *args, timeout=600):
    env = dict(os.environ, PYTHONPATH=FASTCONV_PATH + os.pathsep + os.environ.get("PYTHONPATH", ""),
               MPLBACKEND="Agg")
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "examples", script), *args],
                          capture_output=True, text=True, timeout=timeout, env=env, cwd=FASTCONV_PATH)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    return proc.stdout


def test_numpy_dropin_example():
    out = _run("numpy_dropin.py", "--small")
    assert "conv2d (2, 3, 24, 24)" in out and out.rstrip().endswith("ok")


def test_size_calculation_example():
    out = _run("size_calculation.py")
    assert "flatten                  8 * 8 * 32 = 2048" in out
    assert "1x2048" in out                       # the summary table's Flatten row
    assert "Total params:         25,578" in out  # 448 + 4,640 + 2048*10+10


def test_transfer_learning_example(tmp_path):
    out = _run("transfer_learning.py", "--quick", "--workdir", str(tmp_path))
    assert (tmp_path / "lenet_digits0-4.npz").exists()
    assert "trainable: ['classifier.4.weight', 'classifier.4.bias']" in out
    line = next(l for l in out.splitlines() if "frozen pretrained backbone" in l)
    head, tuned = (float(t.rstrip("%;")) for t in line.split() if t.endswith(("%", "%;")))
    assert head > 40.0 and tuned > 40.0, out     # chance: 20%


@pytest.mark.parametrize("script", ["numpy_dropin.py", "transfer_learning.py",
                                    "size_calculation.py"])
def test_readme_links_each_example(script):
    with open(os.path.join(ROOT, "README.md")) as f:
        assert f"examples/{script}" in f.read()
