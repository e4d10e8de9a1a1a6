"""Compiled inference: ``fastconv.compile(model)`` -> a frozen, inference-only callable.

See :mod:`fastconv.engine.compiler` for what compiling does and what it guarantees.
"""
from __future__ import annotations

from .compiler import CompiledModel, compile, register_lowering

__all__ = ["compile", "CompiledModel", "register_lowering"]
