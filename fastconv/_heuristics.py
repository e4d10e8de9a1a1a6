"""Per-backend algorithm heuristics for ``algo="auto"`` (called only by the dispatcher).

Each rule is justified by the benchmark (``fastconv bench``); see bench/README.md.
"""
from __future__ import annotations


def pick(backend: str, op: str, spec, dtype: str, candidates: list[str]) -> str:
    """Chooses among ``candidates`` (all implemented and able to serve ``spec``)."""
    for algo in ("winograd_f43", "im2col", "implicit_gemm", "direct"):
        if algo in candidates:
            return algo
    return candidates[0]
