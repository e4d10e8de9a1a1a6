"""``fastconv summary MODEL --input N,C,H,W``: the layer table of :func:`fastconv.summary`."""
from __future__ import annotations

__all__ = ["register"]


def _shape(text: str):
    import argparse

    try:
        dims = tuple(int(t) for t in text.replace("x", ",").split(",") if t.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"--input must be comma-separated ints like "
                                         f"1,3,224,224, got {text!r}") from None
    if len(dims) not in (3, 4) or min(dims) < 1:
        raise argparse.ArgumentTypeError(f"--input must be N,C,H,W or C,H,W with positive "
                                         f"sizes, got {text!r}")
    return dims


def cmd_summary(args) -> int:
    from ..models import get_model
    from ..nn.summary import summary

    if args.num_classes is not None and args.num_classes < 1:
        raise ValueError(f"--num-classes must be a positive int, got {args.num_classes}")
    kw = {"num_classes": args.num_classes} if args.num_classes is not None else {}
    if args.stem:
        kw["stem"] = args.stem
    shape = args.input
    if shape is None:
        shape = (1, 1, 32, 32) if args.model == "lenet5" else (1, 3, 224, 224)
        if args.model == "resnet20" or args.stem == "cifar":
            shape = (1, 3, 32, 32)
    c = shape[-3]
    if args.model != "resnet20" or c != 3:
        kw.setdefault("in_channels", c)
    model = get_model(args.model, **kw)
    print(summary(model, shape))
    return 0


def register(subparsers) -> None:
    """Adds the ``summary`` subcommand."""
    from ..models import MODELS

    p = subparsers.add_parser("summary", help="layer table: output shapes, parameters, "
                              "receptive field, FLOPs")
    p.add_argument("model", choices=sorted(MODELS))
    p.add_argument("--input", type=_shape, default=None, metavar="N,C,H,W",
                   help="input shape (default 1,3,224,224; 1,1,32,32 for lenet5)")
    p.add_argument("--num-classes", type=int, default=None)
    p.add_argument("--stem", choices=("imagenet", "cifar"), default=None,
                   help="ResNet stem")
    p.set_defaults(func=cmd_summary)
