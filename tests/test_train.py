"""Training: LeNet-5 really learns the digits, transfer learning with a frozen backbone
computes no weight gradients and leaves the backbone bit-identical, the CIFAR-10 reader
(restricted unpickler) on files written in the original format, and `fastconv train`."""
from __future__ import annotations

import pickle
import re

import numpy as np
import pytest

import fastconv.functional as Fn
from fastconv import data as D
from fastconv import io, models, nn, optim
from fastconv.cli import main
from fastconv.train import fit


def test_lenet5_learns_digits_quickly():
    """A CI-sized run: 3 epochs on a 720-image training subset reach >= 85% on the full
    held-out test split (chance is 10%); loss falls every epoch."""
    ds = D.load_digits()
    ds.x_train, ds.y_train = ds.x_train[:720], ds.y_train[:720]
    nn.init.manual_seed(0)
    model = models.lenet5()
    opt = optim.Adam(model.parameters(), lr=3e-3)
    hist = fit(model, ds, epochs=3, batch_size=32, optimizer=opt, progress=False, log=None,
               shift=1)
    losses = [h["train_loss"] for h in hist]
    assert losses[0] > losses[1] > losses[2]
    assert hist[-1]["test_acc"] >= 0.85, hist


@pytest.mark.slow
def test_default_training_command_reaches_97_percent(capsys, tmp_path):
    """`fastconv train --model lenet5 --data digits` with its defaults (about 1-2 minutes on
    2 cores)."""
    assert main(["train", "--model", "lenet5", "--data", "digits", "--no-progress",
                 "--save", str(tmp_path / "lenet.safetensors")]) == 0
    out = capsys.readouterr().out
    acc = float(re.search(r"final test accuracy: ([\d.]+)%", out).group(1))
    assert acc >= 97.0, out
    meta = io.load_checkpoint(tmp_path / "lenet.safetensors", models.lenet5())
    assert abs(meta["test_acc"] - acc / 100) < 1e-4


def test_transfer_learning_frozen_backbone(monkeypatch):
    nn.init.manual_seed(0)
    model = models.resnet20(num_classes=10)
    model.requires_grad_(False)
    model.fc = nn.Linear(64, 3)                     # new head, trainable
    model.eval()                                    # frozen batch-norm statistics too
    before = {k: np.array(v, copy=True) for k, v in model.state_dict().items()
              if not k.startswith("fc.")}
    fc_before = model.fc.weight.data.copy()
    flags = []
    real = Fn.conv2d_backward

    def spy(*args, **kwargs):
        flags.append(kwargs["need_weight_grad"])
        return real(*args, **kwargs)

    from fastconv.nn import layers

    monkeypatch.setattr(layers.F, "conv2d_backward", spy)
    opt = optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1, momentum=0.9)
    assert len(opt.param_groups[0]["params"]) == 2
    ds = D.synthetic(64, 16, (3, 16, 16), num_classes=3, seed=1)
    crit = nn.CrossEntropyLoss()
    for xb, yb in D.batches(ds.x_train, ds.y_train, 16):
        opt.zero_grad()
        crit(model(xb), yb)
        model.backward(crit.backward())
        opt.step()
    assert flags and not any(flags), "a frozen conv computed its weight gradient"
    assert len(flags) == 4 * sum(1 for m in model.modules() if isinstance(m, nn.Conv2d))
    for name, p in model.named_parameters():
        if name.startswith("fc."):
            assert p.grad is not None
        else:
            assert p.grad is None, name
    after = model.state_dict()
    for k, v in before.items():
        assert v.dtype == after[k].dtype
        np.testing.assert_array_equal(after[k], v, err_msg=k)   # bit-identical
    assert not np.array_equal(model.fc.weight.data, fc_before)


# ----------------------------------------------------------------------------- CIFAR-10


def _write_batch(path, n, seed, legacy_numpy_path=False):
    rng = np.random.default_rng(seed)
    d = {b"batch_label": b"testing batch", b"labels": [int(v) for v in rng.integers(0, 10, n)],
         b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
         b"filenames": [f"img_{i}.png".encode() for i in range(n)]}
    raw = pickle.dumps(d, protocol=2)
    if legacy_numpy_path:
        # The original files name NumPy 1.x's module path; protocol 2 spells globals as
        # text lines, so renaming the module in place keeps the stream valid.
        raw = raw.replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
        assert b"numpy.core.multiarray" in raw
    path.write_bytes(raw)
    return d


def _write_cifar(root):
    d = root / "cifar-10-batches-py"
    d.mkdir()
    batches = [_write_batch(d / f"data_batch_{i}", 4, i, legacy_numpy_path=i % 2 == 0)
               for i in range(1, 6)]
    test = _write_batch(d / "test_batch", 6, 9)
    return batches, test


def test_cifar10_reader(tmp_path):
    batches, test = _write_cifar(tmp_path)
    ds = D.load_cifar10(tmp_path)
    assert ds.x_train.shape == (20, 3, 32, 32) and ds.x_train.dtype == np.float32
    assert ds.x_test.shape == (6, 3, 32, 32)
    np.testing.assert_array_equal(ds.y_train, np.concatenate([b[b"labels"] for b in batches]))
    # Channel-major rows: the first 1024 bytes are the red plane.
    raw = batches[0][b"data"][1]
    expect_red = (raw[:1024].reshape(32, 32) / 255.0 - D.CIFAR10_MEAN[0]) / D.CIFAR10_STD[0]
    np.testing.assert_allclose(ds.x_train[1, 0], expect_red, rtol=1e-5, atol=1e-6)
    x, y = D.read_cifar10_batch(tmp_path / "cifar-10-batches-py" / "test_batch")
    np.testing.assert_array_equal(x.reshape(6, -1), test[b"data"])


class _Evil:
    def __reduce__(self):
        import os

        return (os.system, ("echo pwned",))


def test_cifar10_reader_refuses_foreign_globals(tmp_path):
    path = tmp_path / "data_batch_1"
    path.write_bytes(pickle.dumps({b"data": _Evil(), b"labels": [1]}, protocol=2))
    with pytest.raises(ValueError, match="refusing to load global (posix|os|nt).system"):
        D.read_cifar10_batch(path)
    path.write_bytes(pickle.dumps({b"data": np.zeros((1, 5), np.uint8), b"labels": [1]},
                                  protocol=2))
    with pytest.raises(ValueError, match="shape"):
        D.read_cifar10_batch(path)
    path.write_bytes(b"\x80\x02}q\x00")  # truncated
    with pytest.raises(ValueError, match="not a CIFAR-10 python batch"):
        D.read_cifar10_batch(path)
    with pytest.raises(FileNotFoundError, match="test_batch"):
        D.load_cifar10(tmp_path)


def test_cli_train_cifar10_and_synthetic_with_checkpoint(tmp_path, capsys):
    _write_cifar(tmp_path)
    assert main(["train", "--model", "lenet5", "--data", "cifar10", "--data-dir",
                 str(tmp_path), "--epochs", "1", "--batch-size", "8", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "20 training, 6 test images of 3x32x32" in out and "epoch 1/1" in out
    ck = tmp_path / "r20.npz"
    assert main(["train", "--model", "resnet20", "--data", "synthetic", "--limit", "32",
                 "--epochs", "1", "--batch-size", "16", "--optimizer", "sgd", "--no-progress",
                 "--save", str(ck)]) == 0
    out = capsys.readouterr().out
    assert re.search(r"epoch 1/1: train loss [\d.]+ acc [\d.]+% \| test loss", out)
    m = models.resnet20(num_classes=10)
    meta = io.load_checkpoint(ck, m, optim.SGD(m.parameters(), lr=0.1, momentum=0.9))
    assert meta["model_name"] == "resnet20" and meta["epochs"] == 1


def test_cli_train_errors(tmp_path):
    try:
        import cupy  # noqa: F401
        have_cupy = True
    except ImportError:
        have_cupy = False
    if not have_cupy:
        with pytest.raises(RuntimeError, match="CuPy"):
            main(["train", "--device", "cuda", "--epochs", "1"])
    with pytest.raises(ValueError, match="data directory"):
        main(["train", "--data", "cifar10", "--epochs", "1"])
    with pytest.raises(FileNotFoundError, match="CIFAR-10 batches not found"):
        main(["train", "--data", "cifar10", "--data-dir", str(tmp_path), "--epochs", "1"])
    with pytest.raises(SystemExit):
        main(["train", "--model", "alexnet9"])


def test_digits_dataset_shape_and_split():
    ds = D.load_digits()
    assert ds.x_train.shape[1:] == (1, 32, 32) and ds.x_train.dtype == np.float32
    assert len(ds.y_train) + len(ds.y_test) == 1797
    assert abs(len(ds.y_test) - 0.2 * 1797) <= 10
    assert set(np.unique(ds.y_test)) == set(range(10))
    # Standardised with the training set's statistics; the 4-pixel frame is background.
    assert abs(float(ds.x_train.mean())) < 1e-4 and abs(float(ds.x_train.std()) - 1) < 1e-3
    assert np.all(ds.x_train[:, :, :4, :] == ds.x_train[0, 0, 0, 0])
