"""The command line: `fastconv info` and `python -m fastconv info`."""
from __future__ import annotations

import subprocess
import sys

from fastconv import cli


def test_info_lists_isa_threads_and_backends(capsys):
    assert cli.main(["info"]) == 0
    out = capsys.readouterr().out
    for needle in ("fastconv ", "CPU features:", "in use:", "threads:", "native", "reference",
                   "cuda"):
        assert needle in out


def test_python_dash_m_entry_point(tmp_path):
    # From a neutral directory, so the installed package (not a source checkout) is imported.
    r = subprocess.run([sys.executable, "-m", "fastconv", "info"], capture_output=True, text=True,
                       cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "backends:" in r.stdout


def test_info_compile_times_reports_every_numba_kernel_family(capsys):
    import fastconv

    if not fastconv.backends()["numba"]["available"]:
        assert cli.main(["info", "--compile-times"]) == 0
        assert "numba compile times: backend unavailable" in capsys.readouterr().out
        return
    assert cli.main(["info", "--compile-times"]) == 0
    out = capsys.readouterr().out
    assert "numba first-call times" in out
    lines = [ln.split() for ln in out.splitlines() if ln.startswith("  conv2d_")
             or ln.startswith("  max_pool2d") or ln.startswith("  batch_norm")]
    keys = {ln[0] for ln in lines}
    for fam in ("conv2d_forward[direct]", "conv2d_backward_weight[im2col]",
                "conv2d_forward[winograd_f43]", "batch_norm_backward"):
        for dt in ("float32", "float64"):
            assert f"{fam}:{dt}" in keys, (fam, dt, sorted(keys))
    assert all(float(ln[1]) >= 0 and ln[2] == "s" for ln in lines)


def test_command_line_errors_are_one_line_not_a_traceback(tmp_path):
    """A user error (here: CIFAR-10 batches missing from --data-dir) ends the command
    with status 2 and one 'fastconv: error:' line naming the problem."""
    r = subprocess.run([sys.executable, "-m", "fastconv", "train", "--data", "cifar10",
                        "--data-dir", str(tmp_path), "--epochs", "1", "--no-progress"],
                       capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr
    assert r.stderr.startswith("fastconv: error:") and "CIFAR-10" in r.stderr
