"""Small datasets for the training examples, as float32 NCHW arrays; no downloads.

* ``digits``: scikit-learn's bundled 8x8 handwritten digits (1,797 images), each pixel
  replicated 3x3 (24x24) and zero-padded to 32x32 like MNIST in LeNet-5, split into a
  stratified training and held-out test set.
* ``cifar10``: the standard CIFAR-10 "python version" batches from a local directory.
* ``synthetic``: random class templates plus noise, for smoke tests and benchmarks.

About the CIFAR-10 files: they are Python pickles (dicts holding a NumPy array), and
unpickling runs whatever callables the file names, so loading an untrusted pickle can
execute code. :func:`load_cifar10` therefore uses an unpickler that resolves *only* the
globals a genuine batch needs (NumPy's array/dtype reconstruction, and ``_codecs.encode``
with which Python 3 writes bytes at protocol 2) and refuses everything else, and then
checks that the result has the expected keys, dtype and shape.
"""
from __future__ import annotations

import io
import os
import pickle
from dataclasses import dataclass

import numpy as np

__all__ = ["Dataset", "load_digits", "load_cifar10", "read_cifar10_batch", "synthetic",
           "load_dataset", "batches", "random_shift", "CIFAR10_MEAN", "CIFAR10_STD"]

CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)


@dataclass
class Dataset:
    """Training and test arrays: x (N, C, H, W) float32, y (N,) int64."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int
    name: str = ""

    @property
    def input_shape(self):
        return tuple(self.x_train.shape[1:])


def _stratified_split(y, test_fraction, seed):
    rng = np.random.default_rng(seed)
    test = []
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        rng.shuffle(idx)
        test.extend(idx[:int(round(len(idx) * test_fraction))])
    mask = np.zeros(len(y), bool)
    mask[test] = True
    return np.flatnonzero(~mask), np.flatnonzero(mask)


def load_digits(test_fraction: float = 0.2, seed: int = 0) -> Dataset:
    """scikit-learn's 8x8 digits as 1x32x32 images (standardised with the training set's
    mean and std) with a stratified held-out test split."""
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must lie in (0, 1), got {test_fraction}")
    try:
        from sklearn.datasets import load_digits as sk_digits
    except ImportError as e:
        raise RuntimeError("the digits dataset needs scikit-learn (pip install "
                           f"scikit-learn): {e}") from None
    d = sk_digits()
    imgs = d.images.astype(np.float32) / 16.0
    imgs = np.kron(imgs, np.ones((3, 3), np.float32))           # 8x8 -> 24x24
    imgs = np.pad(imgs, ((0, 0), (4, 4), (4, 4)))[:, None]       # -> 1x32x32
    y = d.target.astype(np.int64)
    tr, te = _stratified_split(y, test_fraction, seed)
    mean, std = float(imgs[tr].mean()), float(imgs[tr].std())
    imgs = (imgs - mean) / std
    return Dataset(imgs[tr], y[tr], imgs[te], y[te], 10, "digits")


class _CifarUnpickler(pickle.Unpickler):
    """Resolves only the globals a CIFAR-10 batch needs; anything else is refused."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("_codecs", "encode"),
    }

    def find_class(self, module, name):
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load global {module}.{name} from a "
                                     "CIFAR-10 batch (only NumPy array reconstruction is "
                                     "allowed)")


def read_cifar10_batch(path) -> tuple[np.ndarray, np.ndarray]:
    """One CIFAR-10 python batch file -> (images (N, 3, 32, 32) uint8, labels (N,) int64)."""
    with open(path, "rb") as f:
        raw = f.read()
    try:
        d = _CifarUnpickler(io.BytesIO(raw), encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as e:
        raise ValueError(f"{path}: not a CIFAR-10 python batch: {e}") from None
    if not isinstance(d, dict):
        raise ValueError(f"{path}: not a CIFAR-10 python batch (a {type(d).__name__}, not "
                         "a dict)")
    d = {(k.decode() if isinstance(k, bytes) else k): v for k, v in d.items()}
    data, labels = d.get("data"), d.get("labels")
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or \
            data.shape[1] != 3 * 32 * 32:
        raise ValueError(f"{path}: 'data' must be a uint8 array of shape (N, 3072)")
    labels = np.asarray(labels, dtype=np.int64) if labels is not None else None
    if labels is None or labels.shape != (data.shape[0],) or \
            (labels.size and (labels.min() < 0 or labels.max() > 9)):
        raise ValueError(f"{path}: 'labels' must hold {data.shape[0]} ints in [0, 9]")
    return data.reshape(-1, 3, 32, 32), labels


def _cifar_norm(x_uint8):
    x = x_uint8.astype(np.float32) / 255.0
    x -= np.asarray(CIFAR10_MEAN, np.float32)[None, :, None, None]
    x /= np.asarray(CIFAR10_STD, np.float32)[None, :, None, None]
    return x


def load_cifar10(data_dir, limit: int | None = None) -> Dataset:
    """CIFAR-10 from ``data_dir`` (the extracted ``cifar-10-batches-py`` folder or its
    parent): ``data_batch_1..5`` for training and ``test_batch``, normalised per channel.
    ``limit`` keeps only the first ``limit`` training and test images."""
    d = os.fspath(data_dir)
    if os.path.isdir(os.path.join(d, "cifar-10-batches-py")):
        d = os.path.join(d, "cifar-10-batches-py")
    train_files = [os.path.join(d, f"data_batch_{i}") for i in range(1, 6)]
    test_file = os.path.join(d, "test_batch")
    missing = [f for f in (*train_files, test_file) if not os.path.isfile(f)]
    if missing:
        raise FileNotFoundError(f"CIFAR-10 batches not found in {d!r} (missing "
                                f"{', '.join(os.path.basename(m) for m in missing)}); "
                                "extract cifar-10-python.tar.gz there")
    parts = [read_cifar10_batch(f) for f in train_files]
    xtr = np.concatenate([p[0] for p in parts])
    ytr = np.concatenate([p[1] for p in parts])
    xte, yte = read_cifar10_batch(test_file)
    if limit is not None:
        xtr, ytr, xte, yte = xtr[:limit], ytr[:limit], xte[:limit], yte[:limit]
    return Dataset(_cifar_norm(xtr), ytr, _cifar_norm(xte), yte, 10, "cifar10")


def synthetic(n_train: int = 512, n_test: int = 128, shape=(3, 32, 32), num_classes: int = 10,
              noise: float = 1.0, seed: int = 0) -> Dataset:
    """Learnable random data: a fixed random template per class plus Gaussian noise."""
    rng = np.random.default_rng(seed)
    shape = tuple(int(s) for s in shape)
    templates = rng.standard_normal((num_classes, *shape)).astype(np.float32)

    def draw(n):
        y = rng.integers(0, num_classes, n).astype(np.int64)
        x = templates[y] + noise * rng.standard_normal((n, *shape)).astype(np.float32)
        return x, y

    xtr, ytr = draw(n_train)
    xte, yte = draw(n_test)
    return Dataset(xtr, ytr, xte, yte, num_classes, "synthetic")


def load_dataset(name: str, data_dir=None, *, input_shape=None, seed: int = 0,
                 limit: int | None = None) -> Dataset:
    """``digits``, ``cifar10`` (needs ``data_dir``) or ``synthetic`` (of ``input_shape``)."""
    if name == "digits":
        ds = load_digits(seed=seed)
    elif name == "cifar10":
        if data_dir is None:
            raise ValueError("the cifar10 dataset needs a data directory (--data-dir)")
        return load_cifar10(data_dir, limit)
    elif name == "synthetic":
        ds = synthetic(shape=input_shape or (3, 32, 32), seed=seed)
    else:
        raise ValueError(f"dataset must be digits, cifar10 or synthetic, got {name!r}")
    if limit is not None:
        ds.x_train, ds.y_train = ds.x_train[:limit], ds.y_train[:limit]
    return ds


def random_shift(x, max_shift: int, rng) -> np.ndarray:
    """Each image shifted by up to ``max_shift`` pixels in both directions (a copy).

    Pixels rolled across the border wrap around, which is only right where the border is
    uniform background: the digits' 4-pixel zero frame makes shifts up to 4 exact."""
    out = np.empty_like(x)
    shifts = rng.integers(-max_shift, max_shift + 1, size=(len(x), 2))
    for i, (dy, dx) in enumerate(shifts):
        out[i] = np.roll(x[i], (int(dy), int(dx)), axis=(-2, -1))
    return out


def batches(x, y, batch_size: int, shuffle: bool = False, rng=None):
    """Yields ``(x_batch, y_batch)`` slices (copies when shuffled, views otherwise)."""
    n = len(x)
    if shuffle:
        order = (rng or np.random.default_rng()).permutation(n)
        for i in range(0, n, batch_size):
            idx = order[i:i + batch_size]
            yield x[idx], y[idx]
    else:
        for i in range(0, n, batch_size):
            yield x[i:i + batch_size], y[i:i + batch_size]
