"""Pictures of what a CNN learned (matplotlib, in the ``cli`` extra): a layer's filters, the
feature maps one input produces, and training curves.

Every picture has a fixed pixel size so scripts and tests can rely on it: a grid of
``cols x rows`` tiles of ``tile`` pixels each, plus a ``TITLE_PX`` strip on top
(:func:`grid_size`); curves are ``CURVES_SIZE`` pixels. The ``fastconv viz`` command
(``filters`` and ``features``) and ``fastconv train --plot`` call these functions.
"""
from __future__ import annotations

import math
import os

import numpy as np

__all__ = ["grid_size", "plot_filters", "plot_features", "plot_history", "load_model",
           "load_image", "layer_weight", "feature_maps", "TITLE_PX", "CURVES_SIZE"]

TITLE_PX = 32
CURVES_SIZE = (1000, 400)
_DPI = 100


def _plt():
    try:
        import matplotlib

        matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt
    except ImportError:
        raise RuntimeError("pictures need matplotlib (pip install fastconv[cli])") from None
    return plt


def grid_size(n: int, tile: int = 64) -> tuple[int, int, int, int]:
    """``(cols, rows, width_px, height_px)`` of the picture of ``n`` tiles: a near-square
    grid (``cols = ceil(sqrt(n))``) of ``tile``-pixel tiles under a title strip."""
    cols = max(1, math.ceil(math.sqrt(n)))
    rows = max(1, math.ceil(n / cols))
    return cols, rows, cols * tile, rows * tile + TITLE_PX


def _save_grid(tiles, path, title, tile, cmap):
    plt = _plt()
    n = len(tiles)
    cols, rows, w, h = grid_size(n, tile)
    fig = plt.figure(figsize=(w / _DPI, h / _DPI), dpi=_DPI)
    top = 1 - TITLE_PX / h
    fig.text(0.5, 1 - TITLE_PX / (2 * h), title, ha="center", va="center", fontsize=9)
    pad = 1.0 / tile  # one pixel between tiles
    for i, t in enumerate(tiles):
        r, c = divmod(i, cols)
        ax = fig.add_axes([c / cols + pad / cols, top - (r + 1) * top / rows + pad / rows,
                           (1 - 2 * pad) / cols, (1 - 2 * pad) * top / rows])
        ax.imshow(t, cmap=None if t.ndim == 3 else cmap, interpolation="nearest",
                  vmin=0.0, vmax=1.0, aspect="auto")
        ax.set_axis_off()
    fig.savefig(os.fspath(path), dpi=_DPI, format="png")
    plt.close(fig)
    return w, h


def _unit(a):
    """``a`` scaled to [0, 1] (a constant array becomes 0.5)."""
    a = np.asarray(a, np.float64)
    lo, hi = float(a.min()), float(a.max())
    return np.full_like(a, 0.5) if hi <= lo else (a - lo) / (hi - lo)


def plot_filters(weight, path, *, title="filters", max_filters=64, channel=0, tile=64):
    """Writes a grid of convolution filters (``weight`` of shape (O, I, kh, kw)) to the PNG
    ``path``. Filters with three input channels (a first layer on RGB images) are drawn in
    colour; otherwise input channel ``channel`` of each filter is drawn in grey. Each filter
    is scaled to its own range. Returns the picture's (width, height) in pixels."""
    w = np.asarray(weight.get() if hasattr(weight, "get") else weight)
    if w.ndim != 4:
        raise ValueError(f"plot_filters: weight must be 4-D (O, I, kh, kw), got shape "
                         f"{w.shape}")
    if not 0 <= channel < w.shape[1]:
        raise ValueError(f"plot_filters: channel {channel} out of range for {w.shape[1]} "
                         "input channels")
    w = w[:max_filters]
    if w.shape[1] == 3:
        tiles = [_unit(f.transpose(1, 2, 0)) for f in w]
    else:
        tiles = [_unit(f[channel]) for f in w]
    return _save_grid(tiles, path, f"{title} ({w.shape[0]} of {np.asarray(weight).shape[0]}, "
                      f"{w.shape[2]}x{w.shape[3]})", tile, "gray")


def plot_features(maps, path, *, title="feature maps", max_maps=64, tile=64):
    """Writes a grid of the feature maps ``maps`` (C, H, W) of one input to the PNG
    ``path``, each scaled to its own range. Returns (width, height) in pixels."""
    m = np.asarray(maps.get() if hasattr(maps, "get") else maps)
    if m.ndim == 4 and m.shape[0] == 1:
        m = m[0]
    if m.ndim != 3:
        raise ValueError(f"plot_features: maps must be (C, H, W), got shape {m.shape}")
    c = m.shape[0]
    m = m[:max_maps]
    return _save_grid([_unit(x) for x in m], path,
                      f"{title} ({len(m)} of {c} channels, {m.shape[1]}x{m.shape[2]})", tile,
                      "viridis")


def plot_history(history, path, *, title="training"):
    """Writes loss and accuracy per epoch (train and test) from :func:`fastconv.train.fit`
    history records to the PNG ``path`` (``CURVES_SIZE`` pixels)."""
    if not history:
        raise ValueError("plot_history: no epochs to plot")
    plt = _plt()
    ep = [r["epoch"] for r in history]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(CURVES_SIZE[0] / _DPI, CURVES_SIZE[1] / _DPI),
                                 dpi=_DPI)
    a1.plot(ep, [r["train_loss"] for r in history], "o-", label="train")
    a1.plot(ep, [r["test_loss"] for r in history], "s-", label="test")
    a1.set_xlabel("epoch")
    a1.set_ylabel("cross-entropy loss")
    a1.legend()
    a2.plot(ep, [100 * r["train_acc"] for r in history], "o-", label="train")
    a2.plot(ep, [100 * r["test_acc"] for r in history], "s-", label="test")
    a2.set_xlabel("epoch")
    a2.set_ylabel("accuracy (%)")
    a2.legend()
    fig.suptitle(title)
    fig.savefig(os.fspath(path), dpi=_DPI, format="png")
    plt.close(fig)
    return CURVES_SIZE


# ----------------------------------------------------------------------------- sources

def load_model(source, model_name=None, num_classes=None):
    """A model from ``source``: a name in :data:`fastconv.models.MODELS` (freshly
    initialised) or a weight/checkpoint file (``.safetensors``/``.npz``/``.pth``/``.pt``).
    For a file the architecture comes from ``model_name``, else from the checkpoint's
    ``model_name`` metadata (``fastconv train --save`` writes it); the number of classes,
    input channels and ResNet stem are read off the weights."""
    from . import io, models
    from .models._weights import head_name

    if source in models.MODELS and not os.path.exists(source):
        kw = {} if num_classes is None else {"num_classes": num_classes}
        return models.get_model(source, **kw)
    arrays, meta = io.read_arrays(source)
    sd = io._model_part(arrays, meta)
    name = model_name or (meta.get("metadata") or {}).get("model_name")
    if name is None:
        raise ValueError(f"{os.fspath(source)!r} does not say which model it holds: pass "
                         f"--model (one of {', '.join(models.MODELS)})")
    if name not in models.MODELS:
        raise ValueError(f"model must be one of {', '.join(models.MODELS)}, got {name!r}")
    probe = models.get_model(name) if name not in ("vgg11", "vgg16", "alexnet") else None
    head = head_name(probe) if probe is not None else "classifier.6"
    kw = {}
    if head + ".weight" in sd:
        kw["num_classes"] = int(sd[head + ".weight"].shape[0])
    first = next((v for v in sd.values() if v.ndim == 4), None)
    if first is not None:
        kw["in_channels"] = int(first.shape[1])
    if name.startswith("resnet") and name != "resnet20" and "conv1.weight" in sd:
        kw["stem"] = "cifar" if sd["conv1.weight"].shape[-1] == 3 else "imagenet"
    model = models.get_model(name, **kw)
    model.load_state_dict(sd)
    return model


def layer_weight(source, layer, model_name=None):
    """The weight array of ``layer`` (a dotted module name such as ``conv1`` or
    ``features.0``) in ``source`` (a model name or weight file, see :func:`load_model`)."""
    model = load_model(source, model_name)
    mods = dict(model.named_modules())
    if layer not in mods or getattr(mods[layer], "weight", None) is None:
        convs = [n for n, m in mods.items() if getattr(m, "weight", None) is not None
                 and m.weight.data.ndim == 4]
        raise ValueError(f"--layer {layer!r} is not a convolution of {type(model).__name__}; "
                         f"its convolutions are {', '.join(convs[:12])}"
                         + (" ..." if len(convs) > 12 else ""))
    return mods[layer].weight.data


def load_image(path, channels: int, size=None) -> np.ndarray:
    """An image file (PNG or JPEG, or a ``.npy`` (H, W) / (H, W, C) array) as a float32
    (1, channels, H, W) batch in [0, 1]: grey for one channel, RGB for three, resized
    (bilinear) to ``size`` = (H, W) when given."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"image {path!r} does not exist")
    if path.endswith(".npy"):
        img = np.load(path, allow_pickle=False).astype(np.float64)
        if img.max() > 1.0:
            img = img / 255.0
    else:
        import matplotlib.image as mpimg

        try:
            img = np.asarray(mpimg.imread(path), np.float64)
        except Exception as e:  # PIL's and matplotlib's own error types
            raise ValueError(f"cannot read image {path!r}: {e}") from None
        if img.max() > 1.0:
            img = img / 255.0
    if img.ndim == 2:
        img = img[:, :, None]
    if img.ndim != 3:
        raise ValueError(f"image {path!r} has shape {img.shape}, expected (H, W[, C])")
    img = img[:, :, :3]
    if channels == 1:
        img = img.mean(axis=2, keepdims=True)
    elif img.shape[2] == 1:
        img = np.repeat(img, channels, axis=2)
    elif img.shape[2] != channels:
        raise ValueError(f"image {path!r} has {img.shape[2]} channels, the model wants "
                         f"{channels}")
    if size is not None:
        img = _resize(img, size)
    return np.ascontiguousarray(img.transpose(2, 0, 1)[None], dtype=np.float32)


def _resize(img, size):
    h, w = img.shape[:2]
    oh, ow = size
    ys = np.clip((np.arange(oh) + 0.5) * h / oh - 0.5, 0, h - 1)
    xs = np.clip((np.arange(ow) + 0.5) * w / ow - 0.5, 0, w - 1)
    y0, x0 = np.floor(ys).astype(int), np.floor(xs).astype(int)
    y1, x1 = np.minimum(y0 + 1, h - 1), np.minimum(x0 + 1, w - 1)
    fy, fx = (ys - y0)[:, None, None], (xs - x0)[None, :, None]
    top = img[y0][:, x0] * (1 - fx) + img[y0][:, x1] * fx
    bot = img[y1][:, x0] * (1 - fx) + img[y1][:, x1] * fx
    return top * (1 - fy) + bot * fy


def feature_maps(model, layer, x) -> np.ndarray:
    """The output of the module named ``layer`` when ``model`` (in evaluation mode) sees
    the batch ``x``: the forward pass stops there."""
    from . import nn

    mods = dict(model.named_modules())
    if layer not in mods or layer == "":
        raise ValueError(f"--layer {layer!r} is not a module of {type(model).__name__}; "
                         f"top-level modules: {', '.join(n for n, _ in model.named_children())}")
    target = mods[layer]

    class _Stop(Exception):
        pass

    captured = []
    inner = target.forward

    def grab(*args, **kw):
        captured.append(inner(*args, **kw))
        raise _Stop

    object.__setattr__(target, "forward", grab)
    model.eval()
    try:
        with nn.no_grad():
            model(x)
    except _Stop:
        pass
    finally:
        object.__delattr__(target, "forward")
    if not captured:
        raise ValueError(f"--layer {layer!r} is not used by {type(model).__name__}'s forward")
    return captured[0]
