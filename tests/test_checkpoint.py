"""fastconv.io checkpoints: safetensors and .npz round trips (model, optimizer, schedule,
metadata), torchvision-style weight files, and clean errors that leave the model
unchanged for truncated, corrupt, pickled or mismatched files."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest

from fastconv import io, models, nn, optim
from conftest import randn

FORMATS = ["safetensors", "npz"]


def _trained(seed=0):
    nn.init.manual_seed(seed)
    m = models.resnet20(num_classes=4)
    opt = optim.SGD(m.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    sched = optim.StepLR(opt, 2, 0.5)
    x = randn((4, 3, 8, 8), np.float32, seed)
    crit = nn.CrossEntropyLoss()
    for _ in range(2):
        opt.zero_grad()
        crit(m(x), np.arange(4))
        m.backward(crit.backward())
        opt.step()
        sched.step()
    return m, opt, sched


def _snapshot(m):
    return {k: np.array(v, copy=True) for k, v in m.state_dict().items()}


def _assert_state_equal(m, snap):
    sd = m.state_dict()
    assert list(sd) == list(snap)
    for k, v in sd.items():
        assert v.dtype == snap[k].dtype and v.shape == snap[k].shape, k
        np.testing.assert_array_equal(v, snap[k], err_msg=k)


@pytest.mark.parametrize("fmt", FORMATS)
def test_roundtrip_model_optimizer_schedule(tmp_path, fmt):
    m, opt, sched = _trained()
    path = tmp_path / f"ck.{fmt}"
    io.save_checkpoint(path, m, opt, sched, epoch=2, note="hello")
    m2, opt2, sched2 = _trained(seed=5)
    meta = io.load_checkpoint(path, m2, opt2, sched2)
    assert meta == {"epoch": 2, "note": "hello"}
    _assert_state_equal(m2, _snapshot(m))
    assert int(m2.bn1.num_batches_tracked) == 2
    assert opt2.param_groups[0]["lr"] == opt.param_groups[0]["lr"] == 0.05
    assert sched2.last_epoch == 2
    for i, s in opt.state.items():
        np.testing.assert_array_equal(opt2.state[i]["momentum_buffer"], s["momentum_buffer"])
    # The next step is identical.
    x = randn((4, 3, 8, 8), np.float32, 9)
    for model, o in ((m, opt), (m2, opt2)):
        crit = nn.CrossEntropyLoss()
        o.zero_grad()
        crit(model(x), np.arange(4))
        model.backward(crit.backward())
        o.step()
    _assert_state_equal(m2, _snapshot(m))


@pytest.mark.parametrize("fmt", FORMATS)
def test_adam_state_roundtrip(tmp_path, fmt):
    nn.init.manual_seed(0)
    m = models.lenet5()
    opt = optim.Adam(m.parameters(), lr=1e-3)
    crit = nn.CrossEntropyLoss()
    crit(m(randn((2, 1, 32, 32), np.float32)), np.array([1, 2]))
    m.backward(crit.backward())
    opt.step()
    io.save_checkpoint(tmp_path / f"a.{fmt}", m, opt)
    m2 = models.lenet5()
    opt2 = optim.Adam(m2.parameters(), lr=1e-3)
    io.load_checkpoint(tmp_path / f"a.{fmt}", m2, opt2)
    assert opt2.state[0]["step"] == 1
    np.testing.assert_array_equal(opt2.state[3]["exp_avg_sq"], opt.state[3]["exp_avg_sq"])


@pytest.mark.parametrize("fmt", FORMATS)
def test_truncated_file_errors_and_leaves_model_unchanged(tmp_path, fmt):
    m, opt, _ = _trained()
    path = tmp_path / f"ck.{fmt}"
    io.save_checkpoint(path, m, opt)
    data = path.read_bytes()
    m2, opt2, _ = _trained(seed=3)
    snap = _snapshot(m2)
    lr = opt2.param_groups[0]["lr"]
    for cut in (len(data) // 2, len(data) - 7, 20):
        path.write_bytes(data[:cut])
        with pytest.raises(ValueError, match="truncated or corrupt"):
            io.load_checkpoint(path, m2, opt2)
        _assert_state_equal(m2, snap)
        assert opt2.param_groups[0]["lr"] == lr
    path.write_bytes(b"\x00" * 64)
    with pytest.raises(ValueError, match="truncated or corrupt"):
        io.load_checkpoint(path, m2)
    _assert_state_equal(m2, snap)


@pytest.mark.parametrize("fmt", FORMATS)
def test_mismatched_checkpoint_errors_and_leaves_model_unchanged(tmp_path, fmt):
    m, opt, _ = _trained()
    path = tmp_path / f"ck.{fmt}"
    io.save_checkpoint(path, m, opt)
    other = models.resnet20(num_classes=7)              # fc shape differs
    snap = _snapshot(other)
    with pytest.raises(ValueError, match=r"fc\.weight.*\(4, 64\).*\(7, 64\)"):
        io.load_checkpoint(path, other)
    _assert_state_equal(other, snap)
    lenet = models.lenet5()                              # different keys altogether
    snap = _snapshot(lenet)
    with pytest.raises(KeyError, match="missing keys"):
        io.load_checkpoint(path, lenet)
    _assert_state_equal(lenet, snap)
    # The model fits but the optimizer does not (Adam state into SGD): nothing changes.
    m2, _, _ = _trained(seed=4)
    snap = _snapshot(m2)
    with pytest.raises(ValueError, match="SGD state, not Adam"):
        io.load_checkpoint(path, m2, optim.Adam(m2.parameters()))
    _assert_state_equal(m2, snap)
    # Optimizer over a different parameter list: nothing changes either.
    with pytest.raises(ValueError, match="optimizer state does not fit"):
        io.load_checkpoint(path, m2, optim.SGD(list(m2.parameters())[:3], lr=0.1,
                                               momentum=0.9))
    _assert_state_equal(m2, snap)


def test_plain_weight_file_loads_like_torchvision_weights(tmp_path):
    """A torchvision state_dict converted with safetensors (keys conv1.weight, ...) loads
    unchanged, including the int64 num_batches_tracked scalars."""
    from safetensors.numpy import save_file

    src = models.resnet18(num_classes=10, stem="cifar")
    sd = {k: np.array(v) for k, v in src.state_dict().items()}
    save_file(sd, str(tmp_path / "tv.safetensors"))
    dst = models.resnet18(num_classes=10, stem="cifar")
    io.load_checkpoint(tmp_path / "tv.safetensors", dst)
    _assert_state_equal(dst, sd)
    io.save_weights(tmp_path / "w.npz", src)
    weights = io.load_weights(tmp_path / "w.npz")
    assert set(weights) == set(sd)
    io.save_checkpoint(tmp_path / "c.safetensors", src)
    assert set(io.load_weights(tmp_path / "c.safetensors")) == set(sd)


def test_npz_with_pickled_object_is_refused(tmp_path):
    path = tmp_path / "evil.npz"
    np.savez(path, **{"conv1.weight": np.array([{"a": 1}], dtype=object)})
    m = models.lenet5()
    snap = _snapshot(m)
    with pytest.raises(ValueError, match="truncated or corrupt|pickle"):
        io.load_checkpoint(path, m)
    _assert_state_equal(m, snap)


def test_no_pickle_in_written_files(tmp_path):
    m, opt, sched = _trained()
    io.save_checkpoint(tmp_path / "c.npz", m, opt, sched, epoch=1)
    with np.load(tmp_path / "c.npz", allow_pickle=False) as z:  # would raise on objects
        meta = json.loads(z["__meta__"].tobytes().decode())
        assert all(z[k].dtype != object for k in z.files)
    assert meta["optimizer"]["type"] == "SGD"
    with pytest.raises(TypeError, match="without pickle"):
        io.save_checkpoint(tmp_path / "d.npz", m, note=object())
    assert not os.path.exists(tmp_path / "d.npz")


def test_bad_paths():
    m = models.lenet5()
    with pytest.raises(ValueError, match=r"\.safetensors or \.npz"):
        io.save_checkpoint("model.pt", m)
    with pytest.raises(FileNotFoundError):
        io.load_checkpoint("/nonexistent/x.npz", m)


# ----------------------------------------------------------------------------- hostile files
# Each of these was accepted, crashed or ballooned before the checks in io/module/optim.

def _adam_checkpoint(tmp_path, fmt="npz"):
    nn.init.manual_seed(0)
    m = models.lenet5()
    opt = optim.Adam(m.parameters(), lr=1e-3)
    crit = nn.CrossEntropyLoss()
    x = randn((2, 1, 32, 32), np.float32)
    opt.zero_grad()
    crit(m(x), np.array([0, 1]))
    m.backward(crit.backward())
    opt.step()
    path = tmp_path / f"adam.{fmt}"
    io.save_checkpoint(path, m, opt)
    return m, opt, path


def _rewrite_meta(path, edit):
    """Rewrites the JSON metadata of an .npz checkpoint through ``edit(meta)``."""
    with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    meta = json.loads(arrays.pop("__meta__").tobytes().decode())
    edit(meta)
    np.savez(path, **arrays, __meta__=np.frombuffer(json.dumps(meta).encode(), np.uint8))


@pytest.mark.parametrize("bad", ["abc", -5, None, [1, 2], 1.5, True])
def test_bad_adam_step_is_refused_before_anything_changes(tmp_path, bad):
    m, opt, path = _adam_checkpoint(tmp_path)

    def edit(meta):
        meta["optimizer"]["scalars"]["0"]["step"] = bad

    _rewrite_meta(path, edit)
    nn.init.manual_seed(9)
    fresh = models.lenet5()
    opt3 = optim.Adam(fresh.parameters(), lr=1e-3)
    snap = _snapshot(fresh)
    with pytest.raises(ValueError, match="step"):
        io.load_checkpoint(path, fresh, opt3)
    _assert_state_equal(fresh, snap)
    assert opt3.state == {}


def test_incomplete_or_unknown_optimizer_state_is_refused(tmp_path):
    m, opt, path = _adam_checkpoint(tmp_path)

    def drop(meta):
        del meta["optimizer"]["scalars"]["0"]["step"]

    _rewrite_meta(path, drop)
    with pytest.raises(ValueError, match="expected all of"):
        io.load_checkpoint(path, models.lenet5(), optim.Adam(models.lenet5().parameters()))
    m, opt, path = _adam_checkpoint(tmp_path)

    def extra(meta):
        meta["optimizer"]["scalars"]["0"]["bogus"] = 1

    _rewrite_meta(path, extra)
    with pytest.raises(ValueError, match="unknown state"):
        io.load_checkpoint(path, models.lenet5(), optim.Adam(models.lenet5().parameters()))


@pytest.mark.parametrize("bad", [5, "x", [1]])
def test_malformed_optimizer_metadata_is_a_clear_error(tmp_path, bad):
    m, opt, path = _adam_checkpoint(tmp_path)

    def edit(meta):
        meta["optimizer"] = bad

    _rewrite_meta(path, edit)
    fresh = models.lenet5()
    snap = _snapshot(fresh)
    with pytest.raises(ValueError, match="malformed optimizer metadata"):
        io.load_checkpoint(path, fresh, optim.Adam(fresh.parameters()))
    with pytest.raises(ValueError, match="malformed optimizer metadata"):
        io.load_checkpoint(path, fresh)
    _assert_state_equal(fresh, snap)


def test_raw_pickle_member_in_npz_is_a_value_error(tmp_path):
    import pickle
    import zipfile

    marker = tmp_path / "ran"
    path = tmp_path / "evil.npz"
    good = {k: np.array(v) for k, v in models.lenet5().state_dict().items()}
    del good["features.0.weight"]
    np.savez(path, **good)
    with zipfile.ZipFile(path, "a") as z:
        z.writestr("features.0.weight.npy", pickle.dumps(("os", f"touch {marker}")))
        z.writestr("extra.pkl", b"\x80\x02cos\nsystem\n(X\x01\x00\x00\x00xtR.")
    m = models.lenet5()
    with pytest.raises(ValueError, match="not a .npy array|not a valid .npy"):
        io.load_checkpoint(path, m)
    with pytest.raises(ValueError):
        io.load_weights(path)
    assert not marker.exists()


def _npy_header(shape, dtype="<f4"):
    import io as _io

    buf = _io.BytesIO()
    np.lib.format.write_array_header_1_0(
        buf, {"descr": dtype, "fortran_order": False, "shape": shape})
    return buf.getvalue()


def test_huge_declared_shape_is_refused_without_allocating(tmp_path):
    import resource
    import zipfile

    path = tmp_path / "huge.npz"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("conv1.weight.npy", _npy_header((1 << 40,)) + b"\0" * 64)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(ValueError, match="declares shape"):
        io.load_checkpoint(path, models.lenet5())
    with pytest.raises(ValueError, match="declares shape"):
        io.read_arrays(path)
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 64 * 1024  # KiB


def test_deflate_bomb_is_refused_before_it_is_inflated(tmp_path):
    """A small file whose member inflates to 1 GiB: a key the model does not have, or the
    right key with the wrong shape, is refused from the headers; memory stays flat."""
    import resource
    import zipfile

    m = models.lenet5()
    good = {k: np.array(v) for k, v in m.state_dict().items()}
    snap = _snapshot(m)
    n = 1 << 28  # float32 elements: 1 GiB
    chunk = b"\0" * (1 << 24)
    for key, match in (("bomb", r"unexpected keys: bomb"),
                       ("features.0.weight", r"features\.0\.weight: checkpoint shape")):
        path = tmp_path / "bomb.npz"
        np.savez_compressed(path, **{k: v for k, v in good.items() if k != key})
        with zipfile.ZipFile(path, "a", zipfile.ZIP_DEFLATED, compresslevel=1) as z:
            with z.open(f"{key}.npy", "w", force_zip64=True) as f:
                f.write(_npy_header((n,)))
                for _ in range((n * 4) // len(chunk)):
                    f.write(chunk)
        assert os.path.getsize(path) < 8 << 20
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        with pytest.raises((KeyError, ValueError), match=match):
            io.load_checkpoint(path, m)
        with pytest.raises((KeyError, ValueError), match=match):
            models.lenet5(weights=path)
        assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 100 * 1024  # KiB
        _assert_state_equal(m, snap)


def test_lossy_conversions_are_refused():
    m = models.resnet20()
    sd = {k: np.array(v) for k, v in m.state_dict().items()}
    snap = _snapshot(m)
    big = dict(sd)
    big["conv1.weight"] = np.full(sd["conv1.weight"].shape, 1e300)  # float64 -> inf in f32
    with pytest.raises(ValueError, match=r"conv1\.weight.*overflows"):
        m.load_state_dict(big)
    wrap = dict(sd)
    wrap["bn1.num_batches_tracked"] = np.array(2**64 - 1, np.uint64)  # would wrap to -1
    with pytest.raises(ValueError, match=r"bn1\.num_batches_tracked.*outside"):
        m.load_state_dict(wrap)
    _assert_state_equal(m, snap)
    ok = dict(sd)
    ok["conv1.weight"] = sd["conv1.weight"].astype(np.float64)   # in range: fine
    ok["bn1.num_batches_tracked"] = np.array(3, np.uint64)
    m.load_state_dict(ok)
    assert int(m.bn1.num_batches_tracked) == 3
