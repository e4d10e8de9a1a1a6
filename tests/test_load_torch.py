"""fastconv.io.load_torch and weights=: files written by torch.save load without torch.

PyTorch is the oracle: torch twins of ResNet-18/50 and AlexNet (built here from torch.nn with
torchvision's key names; torchvision is not installed) save their state dicts, and a
subprocess in which ``import torch`` fails loads them into fastconv's models and must
reproduce the twins' logits. The crafted-file tests need no torch at all.
"""
from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
import zipfile
from collections import OrderedDict

import numpy as np
import pytest

from fastconv import io, models
from conftest import FASTCONV_PATH, requires_torch, torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# ----------------------------------------------------------------------------- torch twins

def _twins():
    tnn = torch.nn

    class Basic(tnn.Module):
        expansion = 1

        def __init__(self, inp, planes, stride=1, downsample=None):
            super().__init__()
            self.conv1 = tnn.Conv2d(inp, planes, 3, stride, 1, bias=False)
            self.bn1 = tnn.BatchNorm2d(planes)
            self.conv2 = tnn.Conv2d(planes, planes, 3, 1, 1, bias=False)
            self.bn2 = tnn.BatchNorm2d(planes)
            self.downsample = downsample

        def forward(self, x):
            idt = x if self.downsample is None else self.downsample(x)
            out = torch.relu(self.bn1(self.conv1(x)))
            return torch.relu(self.bn2(self.conv2(out)) + idt)

    class Bottleneck(tnn.Module):
        expansion = 4

        def __init__(self, inp, planes, stride=1, downsample=None):
            super().__init__()
            self.conv1 = tnn.Conv2d(inp, planes, 1, bias=False)
            self.bn1 = tnn.BatchNorm2d(planes)
            self.conv2 = tnn.Conv2d(planes, planes, 3, stride, 1, bias=False)
            self.bn2 = tnn.BatchNorm2d(planes)
            self.conv3 = tnn.Conv2d(planes, planes * 4, 1, bias=False)
            self.bn3 = tnn.BatchNorm2d(planes * 4)
            self.downsample = downsample

        def forward(self, x):
            idt = x if self.downsample is None else self.downsample(x)
            out = torch.relu(self.bn1(self.conv1(x)))
            out = torch.relu(self.bn2(self.conv2(out)))
            return torch.relu(self.bn3(self.conv3(out)) + idt)

    class ResNet(tnn.Module):
        def __init__(self, block, layers, num_classes):
            super().__init__()
            self.conv1 = tnn.Conv2d(3, 64, 7, 2, 3, bias=False)
            self.bn1 = tnn.BatchNorm2d(64)
            self.maxpool = tnn.MaxPool2d(3, 2, 1)
            inp = 64
            for i, (n, w) in enumerate(zip(layers, (64, 128, 256, 512))):
                stride = 1 if i == 0 else 2
                ds = None
                if stride != 1 or inp != w * block.expansion:
                    ds = tnn.Sequential(tnn.Conv2d(inp, w * block.expansion, 1, stride,
                                                   bias=False),
                                        tnn.BatchNorm2d(w * block.expansion))
                blocks = [block(inp, w, stride, ds)]
                inp = w * block.expansion
                blocks += [block(inp, w) for _ in range(1, n)]
                setattr(self, f"layer{i + 1}", tnn.Sequential(*blocks))
            self.avgpool = tnn.AdaptiveAvgPool2d(1)
            self.fc = tnn.Linear(inp, num_classes)

        def forward(self, x):
            x = self.maxpool(torch.relu(self.bn1(self.conv1(x))))
            for i in range(1, 5):
                x = getattr(self, f"layer{i}")(x)
            return self.fc(torch.flatten(self.avgpool(x), 1))

    class AlexNet(tnn.Module):
        """torchvision.models.AlexNet."""

        def __init__(self, num_classes=1000):
            super().__init__()
            self.features = tnn.Sequential(
                tnn.Conv2d(3, 64, 11, 4, 2), tnn.ReLU(True), tnn.MaxPool2d(3, 2),
                tnn.Conv2d(64, 192, 5, padding=2), tnn.ReLU(True), tnn.MaxPool2d(3, 2),
                tnn.Conv2d(192, 384, 3, padding=1), tnn.ReLU(True),
                tnn.Conv2d(384, 256, 3, padding=1), tnn.ReLU(True),
                tnn.Conv2d(256, 256, 3, padding=1), tnn.ReLU(True), tnn.MaxPool2d(3, 2))
            self.avgpool = tnn.AdaptiveAvgPool2d((6, 6))
            self.classifier = tnn.Sequential(
                tnn.Dropout(0.5), tnn.Linear(9216, 4096), tnn.ReLU(True), tnn.Dropout(0.5),
                tnn.Linear(4096, 4096), tnn.ReLU(True), tnn.Linear(4096, num_classes))

        def forward(self, x):
            return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))

    return {
        "resnet18": (lambda nc: ResNet(Basic, [2, 2, 2, 2], nc), (2, 3, 64, 64)),
        "resnet50": (lambda nc: ResNet(Bottleneck, [3, 4, 6, 3], nc), (2, 3, 64, 64)),
        "alexnet": (lambda nc: AlexNet(nc), (2, 3, 96, 96)),
    }


def _randomise_bn(m, seed):
    g = torch.Generator().manual_seed(seed)
    for mod in m.modules():
        if isinstance(mod, torch.nn.BatchNorm2d):
            c = mod.num_features
            mod.running_mean.copy_(0.1 * torch.randn(c, generator=g))
            mod.running_var.copy_(0.5 + torch.rand(c, generator=g))
            mod.weight.data.copy_(0.5 + torch.rand(c, generator=g))
            mod.bias.data.copy_(0.1 * torch.randn(c, generator=g))
            mod.num_batches_tracked.fill_(7)


# The child: torch is made unimportable before fastconv is, so nothing can lean on it.
_CHILD = r"""
import sys, json
sys.modules["torch"] = None
import numpy as np
try:
    import torch  # noqa: F401
    raise SystemExit("torch importable in the child")
except ImportError:
    pass
sys.path.insert(0, sys.argv[1])
from fastconv import models
jobs = json.loads(sys.argv[2])
for job in jobs:
    m = models.get_model(job["model"], num_classes=job["num_classes"], weights=job["weights"])
    m.eval()
    np.save(job["out"], m(np.load(job["x"])))
assert "torch" not in {k for k, v in sys.modules.items() if v is not None}
"""


@requires_torch
@pytest.mark.torch
def test_torch_saved_state_dicts_give_the_twins_logits_without_torch(tmp_path):
    torch.manual_seed(0)
    jobs, expected = [], {}
    for i, (name, (make, shape)) in enumerate(_twins().items()):
        twin = make(10 if name == "alexnet" else 7)
        _randomise_bn(twin, i)
        twin.eval()
        # Alternate the two serialisations torch writes: zip (default) and legacy.
        legacy = name == "resnet18"
        path = tmp_path / f"{name}.pth"
        torch.save(twin.state_dict(), path, _use_new_zipfile_serialization=not legacy)
        x = np.random.default_rng(i).standard_normal(shape).astype(np.float32)
        np.save(tmp_path / f"{name}_x.npy", x)
        with torch.no_grad():
            expected[name] = twin(torch.from_numpy(x)).numpy()
        jobs.append(dict(model=name, num_classes=expected[name].shape[1], weights=str(path),
                         x=str(tmp_path / f"{name}_x.npy"), out=str(tmp_path / f"{name}_y.npy")))
        del twin
    proc = subprocess.run([sys.executable, "-c", _CHILD, FASTCONV_PATH, json.dumps(jobs)],
                          capture_output=True, text=True, timeout=600, cwd=FASTCONV_PATH)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for job in jobs:
        got = np.load(job["out"])
        ref = expected[job["model"]]
        err = np.max(np.abs(got - ref)) / max(1.0, np.max(np.abs(ref)))
        assert err <= 1e-4, f"{job['model']}: relative logit error {err:.3g}"


@requires_torch
@pytest.mark.torch
@pytest.mark.parametrize("zipped", [True, False], ids=["zip", "legacy"])
def test_every_dtype_offset_and_stride(tmp_path, zipped):
    g = torch.Generator().manual_seed(3)
    base = torch.randn(40, generator=g)
    sd = OrderedDict([
        ("f32", torch.randn(2, 3, 4, generator=g)),
        ("f64", torch.randn(3, generator=g, dtype=torch.float64)),
        ("f16", torch.randn(5, generator=g).half()),
        ("bf16", torch.randn(5, generator=g).to(torch.bfloat16)),
        ("i64", torch.arange(-3, 4)),
        ("i32", torch.arange(6, dtype=torch.int32)),
        ("i16", torch.arange(6, dtype=torch.int16)),
        ("i8", torch.arange(-4, 4, dtype=torch.int8)),
        ("u8", torch.arange(250, 256, dtype=torch.uint8)),
        ("bool", torch.tensor([True, False, True])),
        ("scalar", torch.tensor(7)),
        ("empty", torch.zeros(0, 4)),
        ("offset", base[7:19].view(3, 4)),          # shares `base`'s storage, offset 7
        ("strided", base.view(5, 8).t()),           # transposed view
        ("step", base[1::3]),                       # stride 3
        ("param", torch.nn.Parameter(torch.ones(2, 2))),
    ])
    path = tmp_path / "all.pt"
    torch.save(sd, path, _use_new_zipfile_serialization=zipped)
    out = io.load_torch(path)
    assert list(out) == list(sd)
    for k, t in sd.items():
        ref = t.detach()
        ref = ref.float().numpy() if ref.dtype == torch.bfloat16 else ref.numpy()
        assert out[k].dtype == ref.dtype, k
        assert out[k].flags.c_contiguous and out[k].flags.writeable, k
        np.testing.assert_array_equal(out[k], ref, err_msg=k)
    # A torch checkpoint dict wrapping the state dict is unwrapped.
    torch.save({"epoch": 3, "state_dict": sd}, tmp_path / "ck.pth")
    assert list(io.load_torch(tmp_path / "ck.pth")) == list(sd)


# ----------------------------------------------------------------------------- crafted files

def _zip_torch(path, pkl: bytes, records: dict, prefix="archive/"):
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:
        z.writestr(prefix + "data.pkl", pkl)
        z.writestr(prefix + "byteorder", b"little")
        for k, v in records.items():
            z.writestr(f"{prefix}data/{k}", v)
        z.writestr(prefix + "version", b"3\n")


def _pickle_state(entries, storage_name="FloatStorage"):
    """Hand-built pickle of {key: _rebuild_tensor_v2(storage, offset, size, stride)}, the
    same opcodes torch.save writes (no torch needed)."""

    def glob(module, name):
        return b"c" + module.encode() + b"\n" + name.encode() + b"\n"

    out = [b"\x80\x02", glob("collections", "OrderedDict"), b")R", b"("]
    for key, (skey, numel, offset, size, stride) in entries.items():
        out.append(pickle.dumps(key, 2)[2:-1])
        out.append(glob("torch._utils", "_rebuild_tensor_v2"))
        out.append(b"(")
        pid = ("storage", None, skey, "cpu", numel)
        out.append(b"(" + pickle.dumps("storage", 2)[2:-1] + glob("torch", storage_name)
                   + b"".join(pickle.dumps(v, 2)[2:-1] for v in pid[2:]) + b"tQ")
        out.append(b"".join(pickle.dumps(v, 2)[2:-1] for v in (offset, size, stride)))
        out.append(b"\x89" + glob("collections", "OrderedDict") + b")R")
        out.append(b"tR")
    out.append(b"u.")
    return b"".join(out)


def test_crafted_state_dict_loads(tmp_path):
    """The hand-written opcodes above are what torch writes: they load (so the refusals
    below fail for the reason they test, not because the crafting is off)."""
    data = np.arange(6, dtype="<f4")
    pkl = _pickle_state({"w": ("0", 6, 1, (2, 2), (2, 1))})
    _zip_torch(tmp_path / "ok.pth", pkl, {"0": data.tobytes()})
    out = io.load_torch(tmp_path / "ok.pth")
    np.testing.assert_array_equal(out["w"], [[1, 2], [3, 4]])


def test_pickle_calling_os_system_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "pwned"
    pkl = (b"\x80\x02cos\nsystem\n(" + pickle.dumps(f"touch {marker}", 2)[2:-1] + b"tR.")
    for kind in ("zip", "legacy"):
        path = tmp_path / f"evil_{kind}.pth"
        if kind == "zip":
            _zip_torch(path, pkl, {})
        else:
            path.write_bytes(pickle.dumps(0x1950A86A20F9469CFC6C, 2)
                             + pickle.dumps(1001, 2)
                             + pickle.dumps({"little_endian": True}, 2) + pkl)
        with pytest.raises(ValueError, match=r"os\.system"):
            io.load_torch(path)
        m = models.lenet5()
        with pytest.raises(ValueError, match=r"os\.system"):
            models.lenet5(weights=path)
        with pytest.raises(ValueError, match=r"os\.system"):
            io.load_checkpoint(path, m)
    # The same pickle under the ordinary unpickler would have run the command: the
    # refusal above is what stopped it.
    assert not marker.exists()
    for module, name in (("builtins", "eval"), ("torch.nn.modules.conv", "Conv2d"),
                         ("copyreg", "_reconstructor"), ("torch", "load")):
        path = tmp_path / "other.pth"
        _zip_torch(path, b"\x80\x02c" + f"{module}\n{name}\n".encode() + b")R.", {})
        with pytest.raises(ValueError, match=rf"{module}\.{name}"):
            io.load_torch(path)


def test_truncated_and_corrupt_files_give_value_errors(tmp_path):
    data = np.arange(64, dtype="<f4")
    pkl = _pickle_state({"a": ("0", 64, 0, (8, 8), (8, 1)), "b": ("1", 4, 0, (4,), (1,))})
    good = tmp_path / "good.pth"
    _zip_torch(good, pkl, {"0": data.tobytes(), "1": data[:4].tobytes()})
    raw = good.read_bytes()
    assert set(io.load_torch(good)) == {"a", "b"}
    bad = tmp_path / "bad.pth"
    for cut in range(0, len(raw), max(1, len(raw) // 97)):
        bad.write_bytes(raw[:cut])
        with pytest.raises(ValueError):
            io.load_torch(bad)
    rng = np.random.default_rng(0)
    for _ in range(60):
        b = bytearray(raw)
        for i in rng.integers(0, len(b), 4):
            b[i] = int(rng.integers(0, 256))
        bad.write_bytes(bytes(b))
        try:
            io.load_torch(bad)
        except ValueError:
            pass
    # Lies about sizes: storage shorter than its record, a view beyond the storage, a huge
    # declared storage (must not be allocated), negative strides, an expanded view.
    cases = {
        "short record": ({"a": ("0", 64, 0, (8, 8), (8, 1))}, {"0": data[:10].tobytes()}),
        "view past storage": ({"a": ("0", 64, 1, (8, 8), (8, 1))}, {"0": data.tobytes()}),
        "huge storage": ({"a": ("0", 1 << 40, 0, (1 << 20, 1 << 20), (1 << 20, 1))},
                         {"0": data.tobytes()}),
        "negative stride": ({"a": ("0", 64, 63, (8,), (-1,))}, {"0": data.tobytes()}),
        "expanded": ({"a": ("0", 64, 0, (1 << 30, 64), (0, 1))}, {"0": data.tobytes()}),
        "missing record": ({"a": ("7", 64, 0, (64,), (1,))}, {"0": data.tobytes()}),
    }
    for what, (entries, records) in cases.items():
        _zip_torch(bad, _pickle_state(entries), records)
        with pytest.raises(ValueError):
            io.load_torch(bad)
    bad.write_bytes(b"not a torch file at all")
    with pytest.raises(ValueError, match="not a file torch.save wrote"):
        io.load_torch(bad)
    with pytest.raises(FileNotFoundError):
        io.load_torch(tmp_path / "absent.pth")


def test_non_state_dict_contents_are_refused(tmp_path):
    path = tmp_path / "list.pth"
    _zip_torch(path, pickle.dumps([1, 2, 3], 2), {})
    with pytest.raises(ValueError, match="not a state dict"):
        io.load_torch(path)
    _zip_torch(path, pickle.dumps({"epoch": 3}, 2), {})
    with pytest.raises(ValueError, match="not tensors"):
        io.load_torch(path)


# ----------------------------------------------------------------------------- weights=

def test_weights_keyword_strict_and_skip_head(tmp_path):
    src = models.resnet18(num_classes=10, stem="cifar")
    for fmt in ("npz", "safetensors"):
        path = tmp_path / f"r18.{fmt}"
        io.save_weights(path, src)
        dst = models.resnet18(num_classes=10, stem="cifar", weights=path)
        for k, v in src.state_dict().items():
            np.testing.assert_array_equal(dst.state_dict()[k], v, err_msg=k)
        # A head sized for other classes is an error naming the head and the way out.
        with pytest.raises(ValueError, match=r"fc\.weight.*skip_head=True"):
            models.resnet18(num_classes=3, stem="cifar", weights=path)
        fresh = models.resnet18(num_classes=3, stem="cifar", weights=path, skip_head=True)
        np.testing.assert_array_equal(fresh.conv1.weight.data, src.conv1.weight.data)
        assert fresh.fc.weight.shape == (3, 512)
    # Missing and unexpected keys are named; a checkpoint's model.* part loads too.
    sd = {k: np.array(v) for k, v in src.state_dict().items()}
    del sd["layer1.0.conv1.weight"]
    sd["extra.weight"] = np.zeros(3, np.float32)
    np.savez(tmp_path / "bad.npz", **sd)
    with pytest.raises(KeyError, match=r"missing keys: layer1\.0\.conv1\.weight.*"
                                       r"unexpected keys: extra\.weight"):
        models.resnet18(num_classes=10, stem="cifar", weights=tmp_path / "bad.npz")
    io.save_checkpoint(tmp_path / "ck.safetensors", src)
    models.resnet18(num_classes=10, stem="cifar", weights=tmp_path / "ck.safetensors")
    with pytest.raises(ValueError, match="skip_head=True needs weights"):
        models.resnet18(skip_head=True)
    with pytest.raises(ValueError, match=r"\.pth"):
        models.lenet5(weights=tmp_path / "w.h5")


# Loading for real is cheap for these; the big ones (VGG: 500 MB of weights) are checked
# to route weights= through the shared loader instead.
_SMALL = ("lenet5", "resnet20", "resnet18")


@pytest.mark.parametrize("name", sorted(models.MODELS))
def test_every_constructor_takes_weights(name, tmp_path, monkeypatch):
    kw = dict(num_classes=4)
    if name.startswith("resnet") and name != "resnet20":
        kw["stem"] = "cifar"
    if name not in _SMALL:
        calls = []
        monkeypatch.setattr(models._weights, "load_into",
                            lambda m, p, skip_head=False: calls.append((p, skip_head)) or m)
        m = models.get_model(name, weights="w.pth", skip_head=True, **kw)
        assert calls == [("w.pth", True)]
        assert models._weights.head_name(m) == {
            "alexnet": "classifier.6", "vgg11": "classifier.6", "vgg16": "classifier.6",
            "mobilenet_v2": "classifier.1"}.get(name, "fc")
        return
    src = models.get_model(name, **kw)
    path = tmp_path / "w.npz"
    io.save_weights(path, src)
    dst = models.get_model(name, weights=path, **kw)
    for k, v in src.state_dict().items():
        np.testing.assert_array_equal(dst.state_dict()[k], v, err_msg=k)
    other = models.get_model(name, weights=path, skip_head=True, **{**kw, "num_classes": 2})
    assert other.state_dict()[models._weights.head_name(other) + ".weight"].shape[0] == 2


def test_missing_num_batches_tracked_is_accepted():
    m = models.resnet20()
    sd = {k: np.array(v) for k, v in m.state_dict().items()
          if not k.endswith("num_batches_tracked")}
    sd["conv1.weight"] = sd["conv1.weight"] + 1
    missing, unexpected = m.load_state_dict(sd)
    assert missing == [] and unexpected == []
    np.testing.assert_array_equal(m.conv1.weight.data, sd["conv1.weight"])
    # Other missing keys still fail.
    del sd["fc.bias"]
    with pytest.raises(KeyError, match=r"fc\.bias"):
        m.load_state_dict(sd)


def test_alexnet_layout():
    m = models.alexnet()
    assert sum(p.size for p in m.parameters()) == 61_100_840
    keys = list(m.state_dict())
    assert keys == [f"{part}.{i}.{w}" for part, idx in (("features", (0, 3, 6, 8, 10)),
                                                        ("classifier", (1, 4, 6)))
                    for i in idx for w in ("weight", "bias")]
    assert m.avgpool.output_size == (6, 6)
    assert sum(isinstance(x, type(m.classifier[0])) for x in m.classifier) == 2
