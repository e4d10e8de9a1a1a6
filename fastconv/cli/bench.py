"""``fastconv bench``: time every backend x algorithm (and PyTorch / NumPy / SciPy) on the
convolutions of real networks; ``--tune SUITE`` pre-fills the autotune cache.

This module is imported by :mod:`fastconv.cli` at start-up, so it imports only argparse at
module level; rich, matplotlib, torch and the benchmark package load inside the command.
"""
from __future__ import annotations

import argparse
import sys

_DESCRIPTION = """\
Times every fastconv backend x algorithm, and PyTorch / NumPy / SciPy when installed, on the
convolutions of real networks. Each implementation is validated against the NumPy
reference before it is timed (FAIL: wrong result, not timed); times are medians after
warm-up; GFLOP/s counts 2*N*K*P*Q*(C/groups)*R*S per pass; % peak is against the
FMA-chain peak of the ISA in use (fastconv.benchmark.peak, cached per machine; the GEMM
rate is printed beside it, only for reference); 'vs torch' = PyTorch ms / our ms in the same run.
--tune SUITE instead pre-fills the autotune cache (see fastconv.autotune)."""
SUITE_CHOICES = ("resnet18", "resnet50", "vgg16", "deepbench")
QUICK_BATCH, QUICK_REPS = 2, 3


def _csv_list(text):
    return [t.strip() for t in text.split(",") if t.strip()]


def _int_list(text):
    try:
        out = [int(t) for t in _csv_list(text)]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an int or comma-separated ints, got "
                                         f"{text!r}") from None
    if not out:
        raise argparse.ArgumentTypeError("expected at least one batch size")
    return out


def register(subparsers) -> None:
    """Adds the ``bench`` subcommand (and the autotune-cache lines of ``fastconv info``)."""
    p = subparsers.add_parser(
        "bench", help="benchmark convolutions per backend x algorithm against PyTorch/NumPy",
        description=_DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("suites", nargs="*", metavar="SUITE",
                   help=f"layer suites to run: {', '.join(SUITE_CHOICES)} (default: resnet18 "
                        "unless --shape is given)")
    p.add_argument("--shape", action="append", default=[], metavar="N,C,H,W,K,R,S[,st,pad]",
                   help="one layer: N,C,H,W,K,R,S[,stride[,pad[,dilation[,groups]]]] "
                        "(repeatable)")
    p.add_argument("--batch", type=_int_list, default=None,
                   help=f"batch size of the suites (default 16; {QUICK_BATCH} with --quick); "
                        "with --network a comma-separated list (default 1,8)")
    p.add_argument("--network", type=_csv_list, default=None, metavar="NAMES",
                   help="whole-network inference instead of layer suites: comma-separated "
                        "networks (resnet18, resnet50, resnet18-cifar, resnet50-cifar, resnet20, "
                        "vgg11, lenet5), fastconv compiled and eager against --peers "
                        "torch,onnxruntime,openvino")
    p.add_argument("--rounds", type=int, default=None,
                   help="--network: interleaved rounds (default 5; 2 with --quick)")
    p.add_argument("--pause", type=float, default=0.3,
                   help="--network: seconds of pause before each contender's block")
    p.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    p.add_argument("--threads", type=int, default=None,
                   help="threads for fastconv, PyTorch and BLAS (default: fastconv's count)")
    p.add_argument("--backend", type=_csv_list, action="extend", default=None,
                   help="only these fastconv backends (comma-separated; 'reference' only "
                        "when named)")
    p.add_argument("--algo", type=_csv_list, action="extend", default=None,
                   help="only these algorithms (comma-separated)")
    p.add_argument("--peers", type=_csv_list, default=None,
                   help="peers to compare with: torch,numpy,scipy (default: all installed; "
                        "'none' for none); with --network: torch,onnxruntime,openvino")
    p.add_argument("--backward", action="store_true",
                   help="also time the data and weight gradients")
    p.add_argument("--reps", type=int, default=None, help=f"timed repetitions (default 5; "
                                                          f"{QUICK_REPS} with --quick)")
    p.add_argument("--warmup", type=int, default=None,
                   help="untimed runs after the validating one (default 1; 0 with --quick)")
    p.add_argument("--quick", action="store_true",
                   help=f"batch {QUICK_BATCH}, {QUICK_REPS} reps: resnet18 in well under "
                        "two minutes on 2 cores")
    p.add_argument("--json", metavar="PATH", help="write the results as JSON")
    p.add_argument("--csv", metavar="PATH", help="write the results as CSV")
    p.add_argument("--plot", metavar="PNG", help="plot GFLOP/s per layer (matplotlib)")
    p.add_argument("--tune", metavar="SUITE", choices=SUITE_CHOICES,
                   help="pre-fill the autotune cache for SUITE's layers (all three passes) "
                        "instead of benchmarking")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--remeasure-peak", action="store_true",
                   help="measure the machine peak again instead of using the cached value")
    p.set_defaults(func=cmd_bench)
    _add_info_extra()


def _add_info_extra():
    from . import _INFO_EXTRAS

    if info_autotune not in _INFO_EXTRAS:
        _INFO_EXTRAS.append(info_autotune)


def info_autotune(args=None) -> None:
    """The ``fastconv info`` lines about the autotune cache."""
    from .. import autotune

    st = autotune.cache_info()
    state = "on" if st["enabled"] else "off (fastconv.autotune(True) or FASTCONV_AUTOTUNE=1)"
    where = st["path"] + ("" if st["exists"] else " (not created yet)")
    print(f"autotune: {state}")
    print(f"autotune cache: {where}: {st['entries']} entries, {st['local_entries']} for this "
          "machine and version")


def _layers(args):
    from ..benchmark import suites as S

    batch = _one_batch(args)
    out = []
    names = list(args.suites)
    for n in names:
        if n not in SUITE_CHOICES:
            raise ValueError(f"unknown suite {n!r}; choose from {', '.join(SUITE_CHOICES)}")
    if not names and not args.shape:
        names = ["resnet18"]
    for n in names:
        out.append((n, S.suite(n, batch)))
    if args.shape:
        from dataclasses import replace

        layers = []
        for i, text in enumerate(args.shape, start=1):
            layers.append(replace(S.parse_shape(text), name=f"shape{i}"))
        out.append(("shape", layers))
    return out, batch


def _one_batch(args):
    if args.batch is None:
        return QUICK_BATCH if args.quick else 16
    if len(args.batch) != 1:
        raise ValueError(f"--batch takes one size for layer suites (a list only with "
                         f"--network), got {','.join(map(str, args.batch))}")
    return args.batch[0]


def _check_positive(name, v, minimum=1):
    if v is not None and v < minimum:
        raise ValueError(f"--{name} must be >= {minimum}, got {v}")


def cmd_bench(args) -> int:
    """Entry point of ``fastconv bench``."""
    try:
        _check_positive("threads", args.threads)
        for b in args.batch or ():
            _check_positive("batch", b)
        _check_positive("rounds", args.rounds)
        if args.network:
            return _cmd_network(args)
        _check_positive("reps", args.reps)
        _check_positive("warmup", args.warmup, 0)
        if args.tune:
            return _cmd_tune(args)
        return _cmd_bench(args)
    except ValueError as e:
        print(f"fastconv bench: error: {e}", file=sys.stderr)
        return 2


def _impls(args):
    from .._dispatch import BACKENDS, CONV_ALGOS
    from ..benchmark import impls as I

    for b in args.backend or ():
        if b not in BACKENDS:
            raise ValueError(f"--backend: unknown backend {b!r}; choose from "
                             f"{', '.join(BACKENDS)}")
    for a in args.algo or ():
        if a not in CONV_ALGOS:
            raise ValueError(f"--algo: unknown algorithm {a!r}; choose from "
                             f"{', '.join(CONV_ALGOS)}")
    ours, skipped = I.fastconv_impls(args.backend, args.algo)
    peers_wanted = args.peers
    if peers_wanted == ["none"]:
        peers_wanted = []
    for p in peers_wanted or ():
        if p not in ("torch", "numpy", "scipy"):
            raise ValueError(f"--peers: unknown peer {p!r}; choose from torch, numpy, scipy")
    peers, pskipped = I.peer_impls(peers_wanted)
    skipped.update(pskipped)
    return ours + peers, skipped


def _meta(args, threads, batch, peak, skipped):
    import datetime
    import platform

    import numpy as np

    import fastconv

    from ..autotune import cpu_model

    meta = {"fastconv": fastconv.__version__, "python": platform.python_version(),
            "numpy": np.__version__, "cpu": cpu_model(), "threads": threads,
            "dtype": args.dtype, "batch": batch, "quick": bool(args.quick),
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "peak_gflops": peak["gflops"], "peak_method": peak["method"],
            "gemm_gflops": peak.get("gemm_gflops"),
            "skipped": skipped, "argv": sys.argv[1:]}
    try:
        import torch

        meta["torch"] = torch.__version__
    except ImportError:
        pass
    return meta


def _cmd_bench(args) -> int:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
    from rich.progress import TimeElapsedColumn

    import fastconv

    from ..benchmark import peak as P
    from ..benchmark import report, runner

    suites, batch = _layers(args)
    impls, skipped = _impls(args)
    if not any(i.kind == "fastconv" for i in impls) and (args.backend or args.algo):
        raise ValueError("no fastconv backend/algorithm matches --backend/--algo "
                         f"(unavailable: {skipped or 'none'})")
    passes = ("fwd", "bwd_data", "bwd_weight") if args.backward else ("fwd",)
    reps = args.reps if args.reps is not None else (QUICK_REPS if args.quick else 5)
    warmup = args.warmup if args.warmup is not None else (0 if args.quick else 1)
    threads = args.threads or fastconv.get_num_threads()
    out = Console()
    if not out.is_terminal:
        out = Console(width=150)  # a file or pipe: do not wrap the tables at 80 columns
    err = Console(stderr=True)
    with runner.threads(threads):
        peak = P.peak_gflops(args.dtype, threads, refresh=args.remeasure_peak)
        steps = sum(len(layers) for _, layers in suites) * sum(
            1 for p in passes for i in impls if p in i.passes)
        progress = Progress(TextColumn("{task.description}"), BarColumn(),
                            MofNCompleteColumn(), TimeElapsedColumn(), console=err,
                            transient=True, disable=args.no_progress)
        with progress:
            task = progress.add_task("bench", total=steps)
            started = [False]

            def on_step(desc):
                if started[0]:
                    progress.advance(task)
                started[0] = True
                progress.update(task, description=desc)

            rows = runner.run(suites, impls, passes, dtype=args.dtype, warmup=warmup,
                              reps=reps, peak=peak["gflops"], on_step=on_step)
            progress.advance(task)
    meta = _meta(args, threads, batch, peak, skipped)
    meta.update(reps=reps, warmup=warmup)
    report.print_tables(rows, meta, out)
    from rich.markup import escape  # reasons quote extras such as fastconv[gpu]

    for name, why in skipped.items():
        out.print(f"[dim]not benchmarked: {escape(name)}: {escape(why)}[/dim]")
    if args.json:
        report.write_json(args.json, rows, meta)
    if args.csv:
        report.write_csv(args.csv, rows)
    if args.plot:
        report.plot(args.plot, rows, meta)
    failed = [r for r in rows if r["status"] in ("FAIL", "error") and r["kind"] == "fastconv"]
    return 1 if failed else 0


def _cmd_network(args) -> int:
    """``fastconv bench --network ...``: whole networks, fastconv compiled and eager
    against PyTorch / ONNX Runtime / OpenVINO (fastconv.benchmark.network)."""
    import json

    from rich.console import Console

    import fastconv

    from ..benchmark import network as NW
    from ..benchmark import peak as P

    for n in args.network:
        if n not in NW.NETWORKS:
            raise ValueError(f"--network: unknown network {n!r}; choose from "
                             f"{', '.join(NW.NETWORKS)}")
    if args.dtype != "float32":
        raise ValueError("--network runs float32 only (what the peers run)")
    peers = args.peers
    if peers is None:
        peers = list(NW.PEERS)
    elif peers == ["none"]:
        peers = []
    for p in peers:
        if p not in NW.PEERS:
            raise ValueError(f"--peers: unknown peer {p!r} for --network; choose from "
                             f"{', '.join(NW.PEERS)}")
    batches = args.batch or ([1] if args.quick else [1, 8])
    threads = args.threads or fastconv.get_num_threads()
    rounds = args.rounds or (2 if args.quick else 5)
    reps = args.reps or (1 if args.quick else 3)
    if args.pause < 0:
        raise ValueError(f"--pause must be >= 0, got {args.pause}")
    peak = P.peak_gflops("float32", threads, refresh=args.remeasure_peak)
    err = Console(stderr=True)
    meta = {"fastconv": fastconv.__version__, "threads": threads, "rounds": rounds,
            "reps": reps, "pause": args.pause, "batches": batches, "networks": args.network,
            "peers": peers, "peak_gflops": peak["gflops"], "peak_method": peak["method"],
            "argv": sys.argv[1:]}
    out = Console()
    if not out.is_terminal:
        out = Console(width=150)
    rows, skipped = [], {}
    # One (network, batch) at a time, each table printed as soon as it is measured.
    for net in args.network:
        for batch in batches:
            if not args.no_progress:
                err.print(f"[dim]{net} batch {batch}[/dim]")
            r, sk = NW.run([net], [batch], peers, threads=threads, rounds=rounds, reps=reps,
                           pause=args.pause, peak=peak["gflops"])
            rows += r
            skipped.update(sk)
            NW.print_table(r, meta, out, legend=False)
            sys.stdout.flush()
    meta["skipped"] = skipped
    NW.print_legend(meta, out)
    from rich.markup import escape  # reasons quote extras such as fastconv[gpu]

    for name, why in skipped.items():
        out.print(f"not benchmarked: {escape(name)}: {escape(why)}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"meta": meta, "results": rows}, f, indent=1, default=str)
    failed = [r for r in rows if r["status"] != "ok" and r["contender"].startswith("fastconv")]
    return 1 if failed else 0


def _cmd_tune(args) -> int:
    """Runs every layer of the suite through ``algo="auto"`` with autotuning on, so the
    cache holds a timed choice for each (layer, pass, backend)."""
    import numpy as np
    from rich.console import Console
    from rich.table import Table

    import fastconv

    from .. import _dispatch, autotune
    from ..benchmark import impls as I
    from ..benchmark import runner
    from ..benchmark import suites as S

    batch = _one_batch(args)
    layers = S.suite(args.tune, batch)
    ours, _ = I.fastconv_impls(args.backend, None)
    names = _unique(i.backend for i in ours if i.backend not in _dispatch.GPU_BACKENDS)
    threads = args.threads or fastconv.get_num_threads()
    table = Table(title=f"autotune {args.tune} (batch {batch}, {args.dtype}, {threads} "
                        f"threads) -> {autotune.cache_path()}", title_justify="left")
    for col in ("layer", "backend", "pass", "choice", "how"):
        table.add_column(col)
    was = autotune.enabled()
    autotune.autotune(True)
    try:
        with runner.threads(threads):
            for layer in layers:
                data = runner.make_data(layer, args.dtype)
                spec = layer.spec()
                for b in names:
                    mod = _dispatch.load_backend(b)
                    for pass_, op in I.PASS_OPS.items():
                        cands = _dispatch.serving_algos(b, mod, op, spec)
                        if not cands:
                            continue
                        if len(cands) == 1:  # nothing to tune: the dispatcher never asks
                            table.add_row(layer.name, b, pass_, cands[0], "only candidate")
                            continue
                        _run_auto(layer, data, pass_, b)
                        key = autotune.make_key(b, op, spec, np.dtype(args.dtype))
                        hit = autotune.lookup(key)
                        if hit:
                            how = ", ".join(f"{a} {t:.2f} ms" for a, t in
                                            sorted(hit.get("ms", {}).items(),
                                                   key=lambda kv: kv[1]))
                            table.add_row(layer.name, b, pass_, hit["algo"], how)
                        else:  # every candidate raised: the heuristic decides
                            table.add_row(layer.name, b, pass_, "-", "not tunable (heuristic)")
    finally:
        autotune.autotune(was)
    console = Console()
    if not console.is_terminal:
        console = Console(width=150)
    console.print(table)
    st = autotune.cache_info()
    print(f"cache: {st['path']}: {st['entries']} entries ({st['local_entries']} for this "
          "machine and version)")
    return 0


def _run_auto(layer, data, pass_, backend):
    import fastconv

    x, w, b, gy = data["x"], data["w"], data["b"], data["gy"]
    kw = dict(layer.kwargs, algo="auto", backend=backend)
    if pass_ == "fwd":
        fastconv.conv2d(x, w, b, **kw)
    elif pass_ == "bwd_data":
        fastconv.conv2d_backward(gy, x, w, need_weight_grad=False, need_bias_grad=False, **kw)
    else:
        fastconv.conv2d_backward(gy, x, w, need_input_grad=False, need_bias_grad=False, **kw)


def _unique(items):
    """Unique items in first-seen order."""
    return list(dict.fromkeys(items))
