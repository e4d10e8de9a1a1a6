"""``fastconv train``: train a model from :mod:`fastconv.models` on a small dataset.

``fastconv train --model lenet5 --data digits`` trains LeNet-5 on scikit-learn's digits
(no download) with Adam and reports per-epoch loss and accuracy on the training set and
the held-out test set. The loop itself is :func:`fastconv.train.fit`, usable from Python.
"""
from __future__ import annotations

import argparse
import contextlib

from ..train import _log, fit

__all__ = ["register", "build_model", "DEFAULTS"]

# Defaults per model: (epochs, batch size, Adam learning rate). With the cosine schedule
# and 2-pixel random shifts (the defaults of the command), lenet5 on digits reaches about
# 97-98% test accuracy in 1-2 minutes on 2 cores.
DEFAULTS = {"lenet5": (12, 32, 2e-3)}
_FALLBACK = (10, 64, 1e-3)


def _device_check(device: str):
    if device == "cpu":
        return
    if device != "cuda":
        raise ValueError(f"--device must be cpu or cuda, got {device!r}")
    try:
        import cupy
    except ImportError:
        raise RuntimeError("--device cuda needs CuPy with a CUDA GPU (pip install "
                           "fastconv[gpu]); CuPy is not installed") from None
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as e:  # CUDA driver/runtime missing: CuPy raises its own error types
        raise RuntimeError(f"--device cuda: CuPy found no usable CUDA device ({e})") from None
    if count < 1:
        raise RuntimeError("--device cuda: CuPy found no CUDA device")


def build_model(name: str, data, stem=None):
    """The named model sized for ``data`` (input channels and classes)."""
    from .. import models

    c, h, w = data.input_shape
    kw = dict(num_classes=data.num_classes)
    if name == "lenet5":
        if (h, w) != (32, 32):
            raise ValueError(f"lenet5 needs 32x32 inputs, the data has {h}x{w}")
        kw["in_channels"] = c
    elif name.startswith("resnet"):
        kw["in_channels"] = c
        if name != "resnet20":
            kw["stem"] = stem or ("cifar" if max(h, w) <= 64 else "imagenet")
    elif name.startswith("vgg"):
        kw["in_channels"] = c
    return models.get_model(name, **kw)


def _check_counts(args) -> None:
    """Counts that must be positive (or, for --shift, non-negative) before anything runs."""
    for flag, minimum in (("epochs", 1), ("batch_size", 1), ("limit", 1), ("shift", 0),
                          ("threads", 0)):
        v = getattr(args, flag, None)
        if v is not None and v < minimum:
            kind = "a positive int" if minimum == 1 else "an int >= 0"
            raise ValueError(f"--{flag.replace('_', '-')} must be {kind}, got {v}")


def cmd_train(args) -> int:
    """Runs ``fastconv train`` (``--distributed``: one rank of an mpiexec job)."""
    _check_counts(args)
    if getattr(args, "distributed", False):
        return _cmd_train_distributed(args)
    return _cmd_train(args)


def _cmd_train_distributed(args) -> int:
    """Every rank runs :func:`_cmd_train`; only rank 0 prints, evaluates and saves, and an
    error on any rank ends the job (see :func:`fastconv.distributed.abort_on_error`)."""
    import os

    from .. import distributed as dist

    dist.init()  # a missing mpi4py is a one-line RuntimeError here
    if not dist.launched_by_mpiexec():
        raise RuntimeError("--distributed must be started by an MPI launcher, e.g. "
                           "mpiexec -n 2 fastconv train ... --distributed (mpiexec comes "
                           f"with {dist.INSTALL_HINT})")
    with dist.abort_on_error(prefix="fastconv: error: ", code=2,
                             show_traceback=bool(os.environ.get("FASTCONV_TRACEBACK"))):
        if args.threads is None:
            # The ranks on one machine share its cores instead of each taking all of them.
            args.threads = max(1, (os.cpu_count() or 1) // dist.local_size())
        if args.device == "cuda":
            _device_check(args.device)
            import cupy

            cupy.cuda.Device(dist.local_rank() % cupy.cuda.runtime.getDeviceCount()).use()
        if dist.rank() == 0:
            return _cmd_train(args)
        args.no_progress = True
        with open(os.devnull, "w") as sink, contextlib.redirect_stdout(sink):
            return _cmd_train(args)


def _distributed_model(model, args):
    """``model`` wrapped for data-parallel training under --distributed, else ``model``."""
    if not getattr(args, "distributed", False):
        return model
    from .. import distributed as dist

    return dist.DistributedDataParallel(model)


def _is_root(args) -> bool:
    if not getattr(args, "distributed", False):
        return True
    from .. import distributed as dist

    return dist.rank() == 0


def _cmd_train(args) -> int:
    from .. import data as D
    from .. import io, nn, optim, set_num_threads

    _device_check(args.device)
    if args.threads is not None:
        set_num_threads(args.threads)
    input_shape = (1, 32, 32) if args.model == "lenet5" else (3, 32, 32)
    ds = D.load_dataset(args.data, args.data_dir, input_shape=input_shape, seed=args.seed,
                        limit=args.limit)
    nn.init.manual_seed(args.seed)
    model = build_model(args.model, ds, args.stem)
    params = _transfer_setup(model, args)
    if args.device == "cuda":
        model.to("cuda")
    epochs, batch, lr = DEFAULTS.get(args.model, _FALLBACK)
    epochs = args.epochs if args.epochs is not None else epochs
    batch = args.batch_size if args.batch_size is not None else batch
    lr = args.lr if args.lr is not None else (lr if args.optimizer == "adam" else 0.05)
    if args.lr is None and getattr(args, "distributed", False):
        from .. import distributed as dist

        # N ranks take N times the batch per step, so 1/N the steps: the default rate
        # scales linearly (Goyal et al., 2017). lenet5/digits on 2 ranks: 97.8% scaled,
        # 96.7% unscaled (bench/README.md).
        lr *= dist.world_size()
    params = params(lr)
    if args.optimizer == "adam":
        opt = optim.Adam(params, lr=lr, weight_decay=args.weight_decay)
    else:
        opt = optim.SGD(params, lr=lr, momentum=args.momentum,
                        weight_decay=args.weight_decay, nesterov=args.nesterov)
    sched = None
    if args.schedule == "cosine":
        sched = optim.CosineAnnealingLR(opt, T_max=max(epochs, 1))
    elif args.schedule == "step":
        sched = optim.StepLR(opt, step_size=max(epochs // 3, 1), gamma=0.1)
    n_params = sum(p.size for p in model.parameters())
    _log(f"{args.model} ({n_params:,} parameters) on {ds.name}: {len(ds.y_train)} training, "
         f"{len(ds.y_test)} test images of {'x'.join(map(str, ds.input_shape))}; "
         f"{args.optimizer} lr={lr:g}, batch {batch}, {epochs} epochs, device {args.device}")
    if getattr(args, "distributed", False):
        from .. import distributed as dist

        _log(f"distributed: {dist.world_size()} ranks, batch {batch} per rank "
             f"({batch * dist.world_size()} per step), {args.threads} threads per rank")
    history = fit(_distributed_model(model, args), ds, epochs=epochs, batch_size=batch,
                  optimizer=opt, scheduler=sched,
                  device=args.device, seed=args.seed, progress=not args.no_progress,
                  shift=args.shift if args.shift is not None else
                  (2 if args.data == "digits" else 0),
                  distributed=bool(getattr(args, "distributed", False)))
    if history and history[-1]["test_acc"] is not None:
        _log(f"final test accuracy: {100 * history[-1]['test_acc']:.2f}%")
    if args.plot and _is_root(args):
        from ..viz import plot_history

        plot_history(history, args.plot, title=f"{args.model} on {ds.name}")
        _log(f"wrote {args.plot}")
    if args.save and _is_root(args):
        io.save_checkpoint(args.save, model, opt, sched, model_name=args.model, data=ds.name,
                           epochs=epochs, test_acc=history[-1]["test_acc"] if history else None)
        _log(f"saved checkpoint to {args.save}")
    return 0


def _transfer_setup(model, args):
    """``--weights`` / ``--freeze-backbone`` / ``--unfreeze`` / ``--lr-backbone``: loads the
    weights into ``model``, freezes what is asked, and returns ``lr -> optimizer params``
    (parameter groups when the backbone and the head learn at different rates)."""
    from .. import finetune
    from ..models import load_into

    frozen = args.freeze_backbone or bool(args.unfreeze)
    if (args.unfreeze or args.freeze_backbone) and not args.weights:
        raise ValueError("--freeze-backbone/--unfreeze need --weights PATH (a pretrained "
                         "backbone)")
    if args.weights:
        # A frozen backbone gets a new head sized for this data; otherwise every weight
        # (the head too) must fit, unless --new-head says to start the head afresh.
        load_into(model, args.weights, skip_head=frozen or args.new_head)
        _log(f"loaded weights from {args.weights}"
             + (" (new head)" if frozen or args.new_head else ""))
    if frozen:
        trainable = finetune.freeze_backbone(model, [u for u in (args.unfreeze or "").split(",")
                                                     if u])
        n = sum(p.size for p in model.parameters() if p.requires_grad)
        _log(f"training {len(trainable)} parameter arrays ({n:,} values): head "
             f"{finetune.head_name(model)}" + (f" + {args.unfreeze}" if args.unfreeze else ""))
    if args.lr_backbone is not None:
        return lambda lr: finetune.param_groups(model, lr, args.lr_backbone)
    return lambda lr: [p for p in model.parameters() if p.requires_grad]


def register(subparsers) -> None:
    """Adds the ``train`` subcommand."""
    from ..models import MODELS

    p = subparsers.add_parser("train", help="train a model (LeNet-5, VGG, ResNet) on digits, "
                              "CIFAR-10 or synthetic data",
                              formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--model", default="lenet5", choices=sorted(MODELS))
    p.add_argument("--data", default="digits", choices=("digits", "cifar10", "synthetic"))
    p.add_argument("--data-dir", default=None, help="CIFAR-10 batches directory")
    p.add_argument("--epochs", type=int, default=None, help="default: per model (lenet5: 12)")
    p.add_argument("--batch-size", type=int, default=None, help="default: per model (lenet5: 32)")
    p.add_argument("--lr", type=float, default=None,
                   help="default: per model for adam (lenet5: 2e-3), 0.05 for sgd; times the "
                   "number of ranks with --distributed")
    p.add_argument("--optimizer", default="adam", choices=("adam", "sgd"))
    p.add_argument("--momentum", type=float, default=0.9, help="SGD momentum")
    p.add_argument("--nesterov", action="store_true", help="Nesterov momentum (SGD)")
    p.add_argument("--weight-decay", type=float, default=0.0)
    p.add_argument("--schedule", default="cosine", choices=("none", "step", "cosine"))
    p.add_argument("--shift", type=int, default=None,
                   help="augment: random translations of up to this many pixels (default: 2 "
                   "for digits, whose zero frame makes them exact; 0 otherwise)")
    p.add_argument("--stem", default=None, choices=("imagenet", "cifar"),
                   help="ResNet stem (default: cifar for inputs up to 64x64)")
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: all)")
    p.add_argument("--limit", type=int, default=None, help="use only this many training images")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--save", default=None, metavar="PATH",
                   help="write a checkpoint (.safetensors or .npz) at the end")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    t = p.add_argument_group("transfer learning")
    t.add_argument("--weights", default=None, metavar="PATH",
                   help="start from these weights (.pth/.pt from torch.save, .safetensors, "
                   ".npz)")
    t.add_argument("--freeze-backbone", action="store_true",
                   help="train only a new head (needs --weights)")
    t.add_argument("--unfreeze", default=None, metavar="NAMES",
                   help="comma-separated modules to train besides the head, e.g. layer4")
    t.add_argument("--lr-backbone", type=float, default=None, metavar="LR",
                   help="learning rate of the trainable backbone parameters (head: --lr)")
    t.add_argument("--new-head", action="store_true",
                   help="with --weights: start the head afresh (its size may differ)")
    p.add_argument("--plot", default=None, metavar="PNG",
                   help="write loss and accuracy per epoch to this PNG (matplotlib)")
    p.add_argument("--distributed", action="store_true",
                   help="data-parallel over MPI ranks: run as mpiexec -n N fastconv train ... "
                   "--distributed; --batch-size is per rank, rank 0 prints and saves")
    p.set_defaults(func=cmd_train)
