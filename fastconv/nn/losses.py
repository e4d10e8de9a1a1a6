"""Losses. A loss is a module: ``loss = criterion(logits, target)`` returns a float and
``criterion.backward()`` returns the gradient of the logits for ``model.backward``."""
from __future__ import annotations

from .. import functional as F
from .module import Module

__all__ = ["CrossEntropyLoss"]


class CrossEntropyLoss(Module):
    """Mean cross-entropy of logits (N, classes) against integer class indices (N,), as
    ``torch.nn.CrossEntropyLoss()`` (log-softmax computed stably)."""

    _saved_names = ("_logits", "_target")

    def __init__(self, reduction: str = "mean"):
        super().__init__()
        if reduction != "mean":
            raise ValueError(f"CrossEntropyLoss: only reduction='mean' is supported, got "
                             f"{reduction!r}")
        self.reduction = reduction
        self._clear_saved()

    def forward(self, logits, target) -> float:
        loss = F.cross_entropy(logits, target)
        self._logits, self._target = logits, target
        return loss

    def backward(self, grad_out: float = 1.0):
        """d(loss)/d(logits), scaled by ``grad_out``."""
        logits = self._need_saved(self._logits)
        g = F.cross_entropy_backward(logits, self._target)
        self._clear_saved()
        if grad_out != 1.0:
            g *= g.dtype.type(grad_out)
        return g
