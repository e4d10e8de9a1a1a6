"""examples/autoencoder.py in its quick mode: it trains (the reconstruction error falls,
on the training and the held-out digits) and writes a valid PNG of reconstructions."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import FASTCONV_PATH

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

pytest.importorskip("sklearn", reason="the digits dataset needs scikit-learn")
pytest.importorskip("matplotlib", reason="the example plots with matplotlib")


def test_autoencoder_quick(tmp_path):
    png, metrics = tmp_path / "recon.png", tmp_path / "losses.json"
    env = dict(os.environ, PYTHONPATH=FASTCONV_PATH, FASTCONV_NUM_THREADS="2")
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "examples", "autoencoder.py"),
                           "--quick", "--out", str(png), "--metrics", str(metrics)],
                          capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    m = json.loads(metrics.read_text())
    assert len(m["train"]) == 2 and len(m["test"]) == 2
    assert m["train"][-1] < m["train"][0]
    # Training must have learnt something beyond the first step: the held-out error ends
    # well below where the untrained network started.
    assert m["test"][-1] < 0.5 * m["initial_test"]
    raw = png.read_bytes()
    assert raw[:8] == b"\x89PNG\r\n\x1a\n"
    import matplotlib.image as mpimg

    img = mpimg.imread(str(png))
    assert img.ndim == 3 and img.shape[0] > 100 and img.shape[1] > 400
    assert float(np.std(img[..., :3])) > 0.05  # not a blank canvas
