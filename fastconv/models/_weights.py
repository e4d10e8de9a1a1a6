"""``weights=PATH`` for the model constructors: strict loading of a state dict from a
``.pth``/``.pt`` (written by ``torch.save``), ``.safetensors`` or ``.npz`` file, with the
classification head either loaded (its size must match ``num_classes``) or skipped (the
transfer-learning case: a pretrained backbone under a fresh head)."""
from __future__ import annotations

import os

from .. import nn

__all__ = ["head_name", "load_into", "maybe_load"]


def head_name(model) -> str:
    """The dotted name of ``model``'s classification head: ``model._head`` when the class
    names it, else its last ``Linear`` layer (``fc`` of a ResNet, ``classifier.6`` of VGG and
    AlexNet)."""
    name = getattr(model, "_head", None)
    if name:
        return name
    last = None
    for n, m in model.named_modules():
        if isinstance(m, nn.Linear):
            last = n
    if last is None:
        raise ValueError(f"{type(model).__name__} has no Linear layer to treat as its head")
    return last


def load_into(model, path, *, skip_head: bool = False):
    """Loads the weight file ``path`` into ``model`` (strictly: every key of the model must
    be in the file and no other, shapes equal; ``num_batches_tracked`` may be absent).

    ``skip_head=False``: the head is loaded too, and a head sized for another number of
    classes is an error naming the keys. ``skip_head=True``: the file's head entries (if
    any) are ignored and the model keeps its freshly initialised head. Keys and shapes are
    checked from the file's headers before its arrays are read; on any error the model is
    unchanged. Returns ``model``.
    """
    from .. import io

    where = f"weights {os.fspath(path)!r}"
    head = head_name(model)
    own = model.state_dict()
    head_keys = [k for k in own if k.startswith(head + ".")]

    def is_head(k):
        return k.startswith(head + ".")

    def model_specs(specs, meta):
        if meta.get("format") == io._FORMAT:
            return {k[len("model."):]: v for k, v in specs.items() if k.startswith("model.")}
        return specs

    def check(specs, meta):
        specs = model_specs(specs, meta)
        if not skip_head:
            bad = [f"{k}: file {tuple(specs[k][0])}, model {tuple(own[k].shape)}"
                   for k in head_keys if k in specs and tuple(specs[k][0]) != tuple(own[k].shape)]
            if bad:
                raise io._CheckFailed(ValueError(
                    f"{where}: the head {head!r} does not fit num_classes ({'; '.join(bad)}); "
                    "pass skip_head=True to keep a new head and load only the backbone"))
        shapes = {k: tuple(v[0]) for k, v in specs.items() if not (skip_head and is_head(k))}
        if skip_head:
            shapes.update({k: tuple(own[k].shape) for k in head_keys})
        try:
            model._check_shapes(shapes, strict=True)
        except (KeyError, ValueError) as e:
            raise io._CheckFailed(type(e)(f"{where}: {e.args[0]}")) from None

    arrays, meta = io._read_checked(path, check)
    sd = io._model_part(arrays, meta)
    if skip_head:
        sd = {k: v for k, v in sd.items() if not is_head(k)}
        sd.update({k: own[k] for k in head_keys})
    try:
        model.load_state_dict(sd, strict=True)
    except (KeyError, ValueError) as e:
        raise type(e)(f"{where}: {e.args[0]}") from None
    return model


def maybe_load(model, weights, skip_head=False):
    """``load_into(model, weights, skip_head=...)`` when ``weights`` is a path; the model
    unchanged when it is None."""
    if weights is None:
        if skip_head:
            raise ValueError("skip_head=True needs weights=PATH")
        return model
    if not isinstance(weights, (str, os.PathLike)):
        raise TypeError(f"weights must be a path to a .pth/.pt/.safetensors/.npz file, got "
                        f"{type(weights).__name__}")
    return load_into(model, weights, skip_head=skip_head)
