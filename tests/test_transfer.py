"""Transfer learning: frozen parameters get no gradient (the stem skips grad_x), a frozen
backbone stays bit-identical while the new head learns, per-group learning rates match
torch.optim, the `train --weights --freeze-backbone --unfreeze --lr-backbone --plot`
command, and the `viz` pictures."""
from __future__ import annotations

import numpy as np
import pytest

from fastconv import data as D
from fastconv import finetune, io, models, nn, optim, viz
from fastconv.cli import main
from fastconv.train import fit
from conftest import requires_torch, torch


def _png_size(path):
    with open(path, "rb") as f:
        raw = f.read()
    assert raw[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    assert raw[12:16] == b"IHDR"
    from PIL import Image

    with Image.open(path) as im:
        im.verify()
    return int.from_bytes(raw[16:20], "big"), int.from_bytes(raw[20:24], "big")


def _spy(monkeypatch):
    calls = []
    from fastconv.nn import layers

    real = layers.F.conv2d_backward

    def spy(grad_out, x, w, *args, **kw):
        calls.append((tuple(x.shape), tuple(w.shape), kw["need_input_grad"],
                      kw["need_weight_grad"]))
        return real(grad_out, x, w, *args, **kw)

    monkeypatch.setattr(layers.F, "conv2d_backward", spy)
    return calls


def _grads(model, x, y, **kw):
    crit = nn.CrossEntropyLoss()
    model.zero_grad()
    crit(model(x), y)
    out = model.backward(crit.backward(), **kw)
    return out, {k: None if p.grad is None else p.grad.copy()
                 for k, p in model.named_parameters()}


def test_training_backward_skips_the_stem_input_gradient(monkeypatch):
    nn.init.manual_seed(0)
    m = models.resnet18(num_classes=5, stem="cifar")
    x = np.random.default_rng(0).standard_normal((2, 3, 16, 16)).astype(np.float32)
    y = np.array([1, 3])
    calls = _spy(monkeypatch)
    gx, full = _grads(m, x, y)
    assert gx.shape == x.shape and all(c[2] for c in calls)
    calls.clear()
    none, train = _grads(m, x, y, need_input_grad=False)
    assert none is None
    stem = [c for c in calls if c[0] == x.shape]
    assert stem == [(x.shape, (64, 3, 3, 3), False, True)], "stem computed grad_x"
    assert sum(not c[2] for c in calls) == 1
    for k in full:
        np.testing.assert_allclose(train[k], full[k], rtol=1e-5, atol=1e-6, err_msg=k)


def test_frozen_backbone_computes_nothing_and_unfrozen_block_skips_its_input(monkeypatch):
    nn.init.manual_seed(1)
    m = models.resnet18(num_classes=4, stem="cifar")
    x = np.random.default_rng(1).standard_normal((2, 3, 16, 16)).astype(np.float32)
    y = np.array([0, 2])
    _, full = _grads(m, x, y)
    calls = _spy(monkeypatch)
    finetune.freeze_backbone(m)
    _, head_only = _grads(m, x, y, need_input_grad=False)
    assert calls == [], "a frozen convolution ran its backward"
    assert {k for k, g in head_only.items() if g is not None} == {"fc.weight", "fc.bias"}
    np.testing.assert_allclose(head_only["fc.weight"], full["fc.weight"], rtol=1e-5, atol=1e-6)
    finetune.freeze_backbone(m, ["layer4"])
    _, top = _grads(m, x, y, need_input_grad=False)
    trained = {k for k, g in top.items() if g is not None}
    assert trained == {k for k in full if k.startswith(("layer4.", "fc."))}
    for k in trained:
        np.testing.assert_allclose(top[k], full[k], rtol=1e-4, atol=1e-6, err_msg=k)
    # Only layer4's convolutions ran; the two that read layer3's output (the first
    # block's conv1 and its downsample) skipped grad_x, the rest needed it.
    assert len(calls) == 5 and all(c[3] for c in calls)
    no_x = sorted(c[1] for c in calls if not c[2])
    assert no_x == [(512, 256, 1, 1), (512, 256, 3, 3)]


def test_frozen_backbone_stays_bit_identical_while_the_head_learns(monkeypatch):
    nn.init.manual_seed(2)
    model = models.resnet20(num_classes=3)
    ds = D.synthetic(96, 32, (3, 16, 16), num_classes=3, noise=0.5, seed=1)
    # Stand-in for pretraining: batch-norm statistics of the data (cumulative averages),
    # so the frozen features are on a sane scale.
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    for m in bns:
        m.momentum = None
    with nn.no_grad():
        for xb, _ in D.batches(ds.x_train, ds.y_train, 32):
            model(xb)
    for m in bns:
        m.momentum = 0.1
    finetune.freeze_backbone(model)
    before = {k: np.array(v, copy=True) for k, v in model.state_dict().items()}
    calls = _spy(monkeypatch)
    opt = optim.Adam(finetune.param_groups(model, 1e-2), lr=1e-2)
    hist = fit(model, ds, epochs=3, batch_size=16, optimizer=opt, progress=False, log=None)
    assert calls == []
    after = model.state_dict()
    for k, v in before.items():
        if k.startswith("fc."):
            assert not np.array_equal(after[k], v), k
        else:
            assert after[k].dtype == v.dtype
            np.testing.assert_array_equal(after[k], v, err_msg=k)  # running stats too
    losses = [h["train_loss"] for h in hist]
    assert losses[0] > losses[1] > losses[2], hist
    assert hist[-1]["test_acc"] > 0.5, hist     # chance: 1/3


@requires_torch
@pytest.mark.torch
@pytest.mark.parametrize("which", ["sgd", "adam"])
def test_parameter_groups_match_torch(which, tmp_path):
    rng = np.random.default_rng(0)
    init = [rng.standard_normal(s).astype(np.float32) for s in ((3, 4), (4,), (2, 2))]
    grads = [[rng.standard_normal(a.shape).astype(np.float32) for a in init] for _ in range(4)]
    ps = [nn.Parameter(a.copy()) for a in init]
    ts = [torch.tensor(a.copy(), requires_grad=True) for a in init]
    if which == "sgd":
        kw = dict(lr=0.1, momentum=0.9, weight_decay=1e-3)
        ours = optim.SGD([{"params": ps[:2]}, {"params": ps[2:], "lr": 0.01,
                                                 "momentum": 0.5}], **kw)
        theirs = torch.optim.SGD([{"params": ts[:2]}, {"params": ts[2:], "lr": 0.01,
                                                     "momentum": 0.5}], **kw)
    else:
        kw = dict(lr=1e-2, betas=(0.8, 0.99))
        ours = optim.Adam([{"params": ps[:1], "lr": 1e-3}, {"params": ps[1:]}], **kw)
        theirs = torch.optim.Adam([{"params": ts[:1], "lr": 1e-3}, {"params": ts[1:]}], **kw)
    assert [g["lr"] for g in ours.param_groups] == [g["lr"] for g in theirs.param_groups]
    for step, gs in enumerate(grads):
        for p, t, g in zip(ps, ts, gs):
            p.grad, t.grad = g.copy(), torch.from_numpy(g.copy())
        ours.step()
        theirs.step()
        if step == 1:
            # The groups survive a checkpoint round trip mid-run.
            m = nn.Module()
            for i, p in enumerate(ps):
                setattr(m, f"p{i}", p)
            io.save_checkpoint(tmp_path / "c.npz", m, ours)
            fresh = type(ours)([{"params": ps[:len(ours.param_groups[0]["params"])]},
                                {"params": ps[len(ours.param_groups[0]["params"]):]}], lr=0.5)
            io.load_checkpoint(tmp_path / "c.npz", m, fresh)
            assert [g["lr"] for g in fresh.param_groups] == \
                [g["lr"] for g in ours.param_groups]
            ours = fresh
    for p, t in zip(ps, ts):
        np.testing.assert_allclose(p.data, t.detach().numpy(), rtol=1e-5, atol=1e-6)


def test_param_groups_helper():
    m = models.resnet20(num_classes=3)
    finetune.freeze_backbone(m, ["layer3"])
    groups = finetune.param_groups(m, 1e-2, 1e-4)
    assert [g["lr"] for g in groups] == [1e-4, 1e-2]
    assert {id(p) for p in groups[1]["params"]} == {id(m.fc.weight), id(m.fc.bias)}
    assert {id(p) for p in groups[0]["params"]} == {id(p) for p in m.layer3.parameters()}
    with pytest.raises(ValueError, match="no module 'layer9'.*layer3"):
        finetune.freeze_backbone(m, ["layer9"])
    m.requires_grad_(False)
    with pytest.raises(ValueError, match="nothing to train"):
        finetune.param_groups(m, 0.1)


# ----------------------------------------------------------------------------- command line

def test_cli_transfer_recipe(tmp_path, capsys, monkeypatch):
    """Pretrain and save, then: frozen backbone + new head (with --plot), then fine-tune
    layer3 at a smaller rate."""
    real = D.synthetic
    monkeypatch.setattr(D, "synthetic", lambda **kw: real(48, 16, **kw))
    base = ["train", "--model", "resnet20", "--data", "synthetic", "--limit", "64",
            "--batch-size", "16", "--no-progress"]
    pre = tmp_path / "pre.safetensors"
    assert main(base + ["--epochs", "1", "--save", str(pre)]) == 0
    pre_sd = io.load_weights(pre)
    head = tmp_path / "head.npz"
    curves = tmp_path / "curves.png"
    assert main(base + ["--epochs", "1", "--weights", str(pre), "--freeze-backbone",
                        "--plot", str(curves), "--save", str(head), "--lr", "0.01"]) == 0
    out = capsys.readouterr().out
    assert "new head" in out and "head fc" in out
    assert _png_size(curves) == viz.CURVES_SIZE
    after = io.load_weights(head)
    for k, v in pre_sd.items():
        if k.startswith("fc."):
            assert not np.array_equal(after[k], v)
        else:
            np.testing.assert_array_equal(after[k], v, err_msg=k)
    tuned = tmp_path / "tuned.npz"
    assert main(base + ["--epochs", "1", "--weights", str(head), "--freeze-backbone",
                        "--unfreeze", "layer3", "--lr-backbone", "1e-4", "--save",
                        str(tuned)]) == 0
    ck = io.read_arrays(tuned)[1]
    lrs = [g["initial_lr"] for g in ck["optimizer"]["param_groups"]]
    assert lrs == [1e-4, 1e-3], lrs          # backbone (--lr-backbone), head (default lr)
    t = io.load_weights(tuned)
    changed = {k for k in t if not np.array_equal(t[k], after[k])}
    assert changed and all(k.startswith(("layer3.", "fc.")) for k in changed), changed
    with pytest.raises(ValueError, match="need --weights"):
        main(base + ["--epochs", "1", "--freeze-backbone"])
    with pytest.raises(ValueError, match="no module 'layer9'"):
        main(base + ["--epochs", "1", "--weights", str(pre), "--unfreeze", "layer9"])
    # Strict by default: a head for other classes needs --new-head (or a frozen backbone).
    lenet = tmp_path / "lenet.npz"
    io.save_weights(lenet, models.lenet5(num_classes=7))
    with pytest.raises(ValueError, match="skip_head"):
        main(["train", "--model", "lenet5", "--epochs", "1", "--limit", "32", "--no-progress",
              "--weights", str(lenet)])


def test_viz_filters_and_features_write_pngs_of_the_expected_size(tmp_path, capsys):
    ck = tmp_path / "r.safetensors"
    nn.init.manual_seed(0)
    io.save_checkpoint(ck, models.resnet18(num_classes=5, stem="cifar"), model_name="resnet18")
    out = tmp_path / "filters.png"
    assert main(["viz", "filters", str(ck), "--layer", "conv1", "-o", str(out)]) == 0
    assert _png_size(out) == viz.grid_size(64)[2:] == (512, 544)
    # A grey first layer (LeNet, 6 filters) and a fastconv model name as the source.
    assert main(["viz", "filters", "lenet5", "--layer", "features.0", "-o", str(out),
                 "--tile", "40"]) == 0
    assert _png_size(out) == viz.grid_size(6, 40)[2:] == (120, 112)
    img = tmp_path / "img.png"
    from PIL import Image

    Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 48, 3),
                                                      dtype=np.uint8)).save(img)
    maps = tmp_path / "maps.png"
    assert main(["viz", "features", str(ck), "--layer", "layer2", "--image", str(img), "-o",
                 str(maps), "--max", "16"]) == 0
    assert _png_size(maps) == viz.grid_size(16)[2:]
    assert main(["viz", "features", "lenet5", "--layer", "features.1", "--image", str(img),
                 "-o", str(maps)]) == 0
    assert _png_size(maps) == viz.grid_size(6)[2:]
    with pytest.raises(ValueError, match="not a convolution.*conv1"):
        main(["viz", "filters", str(ck), "--layer", "layer1", "-o", str(out)])
    with pytest.raises(ValueError, match="not a module"):
        main(["viz", "features", str(ck), "--layer", "nope", "--image", str(img), "-o",
              str(maps)])
    w = tmp_path / "plain.npz"
    io.save_weights(w, models.lenet5())
    with pytest.raises(ValueError, match="--model"):
        main(["viz", "filters", str(w), "--layer", "features.0", "-o", str(out)])
    assert main(["viz", "filters", str(w), "--model", "lenet5", "--layer", "features.3",
                 "-o", str(out)]) == 0
    assert _png_size(out) == viz.grid_size(16)[2:]


def test_feature_maps_are_the_layer_output():
    nn.init.manual_seed(0)
    m = models.lenet5().eval()
    x = np.random.default_rng(0).standard_normal((1, 1, 32, 32)).astype(np.float32)
    got = viz.feature_maps(m, "features.0", x)
    ref = m.features[0](x)
    np.testing.assert_array_equal(got, ref)
    assert "forward" not in m.features[0].__dict__
