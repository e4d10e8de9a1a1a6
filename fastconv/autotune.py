"""Autotuning for ``algo="auto"``: time the candidates once per key and remember the winner."""
from __future__ import annotations

import os

_enabled = [os.environ.get("FASTCONV_AUTOTUNE", "0") not in ("", "0", "false", "False")]


def autotune(flag: bool = True) -> None:
    """Turns autotuning of ``algo="auto"`` on or off for this process."""
    _enabled[0] = bool(flag)


def enabled() -> bool:
    return _enabled[0]


def tuned_choice(backend, op, spec, dtype, candidates, runner):
    """The remembered (or newly timed) fastest of ``candidates``; None to use the heuristic."""
    return None
