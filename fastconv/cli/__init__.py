"""The ``fastconv`` command: ``info``, ``bench``, ``train``, ``summary``, ``viz``."""
from __future__ import annotations

import argparse
import platform
import sys


def cmd_info(args) -> int:
    import fastconv
    from fastconv import _native
    from fastconv.autotune import cpu_model

    print(f"fastconv {fastconv.__version__} (Python {platform.python_version()}, "
          f"{platform.machine()})")
    print(f"CPU: {cpu_model()}")
    print(f"CPU features: {_native.cpu_features() or '(none tested)'}")
    print(f"ISA paths compiled: {_native.compiled_isas()}; in use: {_native.active_isa()}")
    print(f"threads: {fastconv.get_num_threads()}")
    _print_peak(fastconv.get_num_threads())
    print("backends:")
    for name, st in fastconv.backends().items():
        state = "available" if st["available"] else f"unavailable ({st['reason']})"
        print(f"  {name:<11} {state}")
    for extra in _INFO_EXTRAS:
        extra(args)
    if getattr(args, "compile_times", False):
        _print_compile_times()
    return 0


def _print_peak(threads: int) -> None:
    """The FMA-chain peak (the denominator of every "% of peak"), cached per machine."""
    from fastconv.benchmark import peak as P

    try:
        res = P.peak_gflops("float32", threads)
    except RuntimeError as e:  # no native extension: nothing to measure with
        print(f"FMA peak: not measured ({e})")
        return
    extra = f"; 256^3 GEMM reaches {res['gemm_gflops']:.1f}" if res.get("gemm_gflops") else ""
    print(f"FMA peak: {res['gflops']:.1f} GFLOP/s float32 ({res['method']}"
          f"{', cached' if res.get('cached') else ''}){extra}")


def _print_compile_times() -> None:
    """First-call seconds of every numba kernel family (JIT compile, or a load from numba's
    on-disk cache when an earlier process compiled it)."""
    from fastconv import _dispatch

    mod = _dispatch.load_backend("numba")
    if mod is None:
        reason = _dispatch.backends()["numba"]["reason"]
        print(f"numba compile times: backend unavailable ({reason})")
        return
    from .numba_times import compile_times

    times = compile_times()
    print(f"numba first-call times (compile or disk-cache load), {sum(times.values()):.2f} s "
          "in all:")
    for key, sec in sorted(times.items(), key=lambda kv: -kv[1]):
        print(f"  {key:<48} {sec:8.3f} s")


# Other subsystems (the autotune cache) add lines to `info` here.
_INFO_EXTRAS: list = []


def _size(text):
    try:
        h, w = (int(t) for t in text.lower().replace("x", ",").split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--input-size must be H,W, got {text!r}") from None
    if h < 1 or w < 1:
        raise argparse.ArgumentTypeError(f"--input-size must be positive, got {text!r}")
    return h, w


def _positive(text):
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive int, got {text!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected a positive int, got {text!r}")
    return v


def cmd_viz(args) -> int:
    """``fastconv viz filters|features SOURCE --layer NAME -o PNG``."""
    from fastconv import viz

    if args.what == "filters":
        w = viz.layer_weight(args.source, args.layer, args.model)
        size = viz.plot_filters(w, args.output, title=f"{args.source}: {args.layer}",
                                max_filters=args.max, channel=args.channel, tile=args.tile)
    else:
        if args.image is None:
            raise ValueError("viz features needs --image IMG")
        model = viz.load_model(args.source, args.model)
        first = next(p for p in model.parameters() if p.data.ndim == 4)
        size = args.input_size
        if size is None and type(model).__name__ == "LeNet5":
            size = (32, 32)
        x = viz.load_image(args.image, first.data.shape[1], size)
        maps = viz.feature_maps(model, args.layer, x)
        if maps.ndim != 4:
            raise ValueError(f"--layer {args.layer!r} gives an output of shape "
                             f"{tuple(maps.shape)}, not feature maps (N, C, H, W)")
        size = viz.plot_features(maps[0], args.output, title=f"{args.layer}",
                                 max_maps=args.max, tile=args.tile)
    print(f"wrote {args.output} ({size[0]}x{size[1]} pixels)")
    return 0


def _register_viz(sub) -> None:
    p = sub.add_parser("viz", help="pictures: a layer's filters, or the feature maps of an "
                       "image (matplotlib)")
    p.add_argument("what", choices=("filters", "features"))
    p.add_argument("source", metavar="CHECKPOINT|MODEL",
                   help="a weight/checkpoint file (.safetensors, .npz, .pth, .pt) or a model "
                   "name (random weights)")
    p.add_argument("--layer", required=True, help="dotted module name, e.g. conv1, "
                   "features.0, layer1.0.conv2")
    p.add_argument("-o", "--output", required=True, metavar="PNG")
    p.add_argument("--image", default=None, help="input image for 'features' (PNG, JPEG, .npy)")
    p.add_argument("--model", default=None, help="architecture of a weight file without "
                   "fastconv metadata")
    p.add_argument("--input-size", type=_size, default=None, metavar="H,W",
                   help="resize the image to this size (default: as it is; 32,32 for lenet5)")
    p.add_argument("--max", type=_positive, default=64, help="at most this many tiles")
    p.add_argument("--channel", type=int, default=0,
                   help="input channel drawn for filters of non-RGB layers")
    p.add_argument("--tile", type=_positive, default=64, help="pixels per tile")
    p.set_defaults(func=cmd_viz)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="fastconv", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    info = sub.add_parser("info", help="version, CPU features, ISA path, threads, backends")
    info.add_argument("--compile-times", action="store_true",
                      help="also JIT-compile the numba kernels and report the time each took")
    info.set_defaults(func=cmd_info)
    for register in _SUBCOMMANDS:
        register(sub)
    _register_viz(sub)
    return p


def _register_optional():
    """Subcommands living in their own modules (bench, train, summary)."""
    out = []
    for modname in ("fastconv.cli.bench", "fastconv.cli.train", "fastconv.cli.summary"):
        try:
            mod = __import__(modname, fromlist=["register"])
        except ModuleNotFoundError as e:
            if e.name != modname:
                raise
            continue
        out.append(mod.register)
    return out


_SUBCOMMANDS = _register_optional()


def main(argv=None) -> int:
    """Runs one command; errors propagate as exceptions (for programmatic use)."""
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


def console_main(argv=None) -> int:
    """The ``fastconv`` executable: a bad option value, a missing file or device, or an
    allocation larger than memory is reported in one line (exit status 2), not as a
    traceback. FASTCONV_TRACEBACK=1 shows the traceback."""
    import os

    try:
        return main(argv)
    except MemoryError as e:  # e.g. bench --shape far beyond this machine's memory
        if os.environ.get("FASTCONV_TRACEBACK"):
            raise
        print(f"fastconv: error: out of memory: {e or 'allocation failed'}", file=sys.stderr)
        return 2
    except (ValueError, TypeError, RuntimeError, OSError) as e:
        if os.environ.get("FASTCONV_TRACEBACK"):
            raise
        print(f"fastconv: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(console_main())
