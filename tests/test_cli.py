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
