"""Transfer learning helpers: freeze a pretrained backbone, unfreeze chosen blocks, and
build the optimizer's parameter groups (a learning rate for the head, a smaller one for
the unfrozen backbone), as the ``--freeze-backbone`` / ``--unfreeze`` / ``--lr-backbone``
options of ``fastconv train`` do.

Frozen parameters (``requires_grad=False``) get no gradient at all: a network's backward
in training (``model.backward(g, need_input_grad=False)``) stops at the first trainable
layer, which computes only its parameter gradients. Batch-norm layers whose parameters
are all frozen are kept in evaluation mode during training (:func:`freeze_bn_stats`),
so their running statistics stay the pretrained ones and the frozen part of the network
is bit-identical after training.
"""
from __future__ import annotations

from . import nn
from .models._weights import head_name

__all__ = ["freeze_backbone", "param_groups", "freeze_bn_stats", "head_name"]


def _module(model, name):
    mods = dict(model.named_modules())
    if name not in mods:
        top = ", ".join(n for n, _ in model.named_children())
        raise ValueError(f"--unfreeze: {type(model).__name__} has no module {name!r} "
                         f"(top-level modules: {top})")
    return mods[name]


def freeze_backbone(model, unfreeze=()):
    """Freezes every parameter of ``model`` except its head (:func:`head_name`) and the
    modules named in ``unfreeze`` (dotted names such as ``"layer4"``). Returns the
    dotted names of the trainable parameters."""
    head = head_name(model)
    model.requires_grad_(False)
    _module(model, head).requires_grad_(True)
    for name in unfreeze:
        _module(model, name).requires_grad_(True)
    return [n for n, p in model.named_parameters() if p.requires_grad]


def param_groups(model, lr, lr_backbone=None):
    """Optimizer parameter groups for fine-tuning: the head's trainable parameters at
    ``lr``, the rest of the trainable ones at ``lr_backbone`` (``lr`` when None), frozen
    ones left out; empty groups are dropped."""
    head = head_name(model) + "."
    head_ps, body_ps = [], []
    for n, p in model.named_parameters():
        if p.requires_grad:
            (head_ps if n.startswith(head) else body_ps).append(p)
    groups = []
    if body_ps:
        groups.append({"params": body_ps, "lr": lr if lr_backbone is None else lr_backbone})
    if head_ps:
        groups.append({"params": head_ps, "lr": lr})
    if not groups:
        raise ValueError("every parameter of the model is frozen: nothing to train")
    return groups


def freeze_bn_stats(model) -> int:
    """Puts every BatchNorm2d whose parameters are all frozen into evaluation mode (call it
    after ``model.train()``). Returns how many there are. Layers without affine
    parameters are left alone: they have nothing to freeze."""
    n = 0
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d) and m.affine and not m.has_trainable():
            m.eval()
            n += 1
    return n
