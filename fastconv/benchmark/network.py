"""Whole-network inference benchmark: fastconv compiled, fastconv eager and the peers
(PyTorch eager, ONNX Runtime, OpenVINO) side by side in one process.

Method (DESIGN.md, "How to time a comparison"):

* every contender runs the same network with the same weights on the same input: the
  fastconv model (random weights and random batch-norm statistics, so folding is
  exercised), its PyTorch twin (:mod:`fastconv.benchmark.twin`) and the ONNX file that
  ``torch.onnx.export`` writes from the twin;
* every contender's logits are validated against fastconv eager's before anything is
  timed (a contender that disagrees is reported as FAIL and not timed);
* interleaved rounds: in each round every contender gets one block; before its block a
  contender pauses ``pause`` seconds (thread pools of the previous contender spin after
  their last call and would steal its cores) and makes one untimed call (waking sleeping
  pool threads costs up to ~10 ms here), then ``reps`` timed calls; the figure is the
  median of all timed calls;
* threads: fastconv ``set_num_threads``, ``torch.set_num_threads``, ONNX Runtime
  ``intra_op_num_threads`` (inter-op 1, sequential execution), OpenVINO
  ``INFERENCE_NUM_THREADS`` with the latency hint;
* effective GFLOP/s = the network's direct-convolution + linear flops per call / time;
  % of peak is against the FMA-chain peak (:mod:`fastconv.benchmark.peak`).
"""
from __future__ import annotations

import os
import statistics
import tempfile
import time
import warnings
from dataclasses import dataclass, field

import numpy as np

__all__ = ["NETWORKS", "PEERS", "Contender", "build_network", "contenders", "run"]

PEERS = ("torch", "onnxruntime", "openvino")


def _networks():
    from .. import models

    return {
        "resnet18": (lambda: models.resnet18(), (3, 224, 224)),
        "resnet50": (lambda: models.resnet50(), (3, 224, 224)),
        "resnet18-cifar": (lambda: models.resnet18(num_classes=10, stem="cifar"), (3, 32, 32)),
        "resnet50-cifar": (lambda: models.resnet50(num_classes=10, stem="cifar"), (3, 32, 32)),
        "resnet20": (lambda: models.resnet20(), (3, 32, 32)),
        "vgg11": (lambda: models.vgg11(), (3, 224, 224)),
        "lenet5": (lambda: models.lenet5(), (1, 32, 32)),
    }


NETWORKS = tuple(_networks())


def build_network(name, seed=0):
    """(eval-mode fastconv model, per-sample input shape). Batch-norm statistics and
    affine parameters are randomised (fresh ones are the identity, which would hide a
    folding mistake)."""
    from .. import nn

    nets = _networks()
    if name not in nets:
        raise ValueError(f"unknown network {name!r}; choose from {', '.join(nets)}")
    factory, shape = nets[name]
    nn.init.manual_seed(seed)
    model = factory()
    rng = np.random.default_rng(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d) and m.track_running_stats:
            C = m.num_features
            m.running_mean[...] = 0.1 * rng.standard_normal(C)
            m.running_var[...] = rng.uniform(0.5, 1.5, C)
            if m.affine:
                m.weight.data[...] = rng.uniform(0.5, 1.5, C)
                m.bias.data[...] = 0.1 * rng.standard_normal(C)
    return model.eval(), shape


@dataclass
class Contender:
    """One implementation of the network: ``fn(x) -> logits`` (NumPy in, NumPy out)."""

    name: str
    fn: object = None
    note: str = ""
    times: list = field(default_factory=list)
    max_err: float | None = None
    status: str = "ok"


def _rel_err(a, ref) -> float:
    a, ref = np.asarray(a, np.float64), np.asarray(ref, np.float64)
    return float(np.max(np.abs(a - ref)) / max(1e-30, float(np.max(np.abs(ref)))))


def _onnx_file(twin, x, directory, torch):
    path = os.path.join(directory, "model.onnx")
    kw = {"input_names": ["x"], "output_names": ["y"],
          "dynamic_axes": {"x": {0: "N"}, "y": {0: "N"}}}
    # The TorchScript exporter: it needs no onnxscript and handles these plain CNNs; torch
    # warns that it is deprecated, which is not the benchmark's business.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            torch.onnx.export(twin, (torch.from_numpy(x),), path, dynamo=False, **kw)
        except TypeError:  # a torch without the dynamo switch
            torch.onnx.export(twin, (torch.from_numpy(x),), path, **kw)
    return path


def contenders(model, x, peers, threads, workdir, skipped):
    """The contenders for ``model`` on inputs like ``x``; a peer that cannot run is
    recorded in ``skipped`` (name -> reason)."""
    import fastconv
    from ..nn.module import no_grad

    cm = fastconv.compile(model)
    cm.prepare(x.shape)

    def eager(a):
        with no_grad():
            return model(a)

    out = [Contender("fastconv compiled", cm), Contender("fastconv eager", eager)]
    peers = list(peers)
    if not peers:
        return out, cm
    try:
        import torch
    except ImportError:
        for p in peers:
            skipped[p] = ("PyTorch is not installed: it builds the twin and exports the ONNX "
                          "file (pip install torch)")
        return out, cm
    from .twin import torch_twin

    torch.set_num_threads(threads)
    twin = torch_twin(model).eval()
    if "torch" in peers:
        def run_torch(a):
            with torch.no_grad():
                return twin(torch.from_numpy(a)).numpy()
        out.append(Contender("torch", run_torch, f"torch {torch.__version__} eager, no_grad"))
    onnx_path = None
    if "onnxruntime" in peers or "openvino" in peers:
        try:
            onnx_path = _onnx_file(twin, x, workdir, torch)
        except Exception as e:  # exporter missing (onnx/onnxscript) or failing
            for p in ("onnxruntime", "openvino"):
                if p in peers:
                    skipped[p] = f"torch.onnx.export failed: {type(e).__name__}: {e}"
    if onnx_path and "onnxruntime" in peers:
        try:
            import onnxruntime as ort

            so = ort.SessionOptions()
            so.intra_op_num_threads = threads
            so.inter_op_num_threads = 1
            so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
            so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            sess = ort.InferenceSession(onnx_path, so, providers=["CPUExecutionProvider"])
            out.append(Contender("onnxruntime", lambda a: sess.run(None, {"x": a})[0],
                                 f"onnxruntime {ort.__version__} CPU, {threads} intra-op "
                                 "threads, sequential"))
        except ImportError:
            skipped["onnxruntime"] = "not installed (pip install 'fastconv[peers]')"
    if onnx_path and "openvino" in peers:
        try:
            import openvino as ov

            core = ov.Core()
            compiled = core.compile_model(onnx_path, "CPU", {
                "INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "LATENCY",
                "INFERENCE_PRECISION_HINT": "f32"})
            req = compiled.create_infer_request()

            def run_ov(a):
                return req.infer({0: a})[compiled.output(0)].copy()
            out.append(Contender("openvino", run_ov, f"openvino {ov.__version__} CPU, "
                                 f"{threads} threads, latency hint, f32"))
        except ImportError:
            skipped["openvino"] = "not installed (pip install 'fastconv[peers]')"
    return out, cm


def _time_rounds(cands, x, rounds, reps, pause):
    for _ in range(rounds):
        for c in cands:
            if c.status != "ok":
                continue
            time.sleep(pause)
            c.fn(x)  # untimed: wakes this contender's thread pool
            for _ in range(reps):
                t0 = time.perf_counter()
                c.fn(x)
                c.times.append(time.perf_counter() - t0)


def run(networks, batches, peers=PEERS, *, threads=2, rounds=5, reps=3, pause=0.3,
        rtol=1e-4, seed=0, peak=None, on_step=None):
    """Runs the benchmark; returns ``(rows, skipped)``.

    One row per (network, batch, contender): ``ms`` (median), ``images_per_s``,
    ``gflops`` (effective), ``pct_peak`` (of ``peak`` GFLOP/s, when given), ``max_err``
    (relative to fastconv eager's logits), ``status`` ("ok" or "FAIL: ...") and
    ``vs`` {other contender: other ms / this ms} (> 1: this one is faster).
    ``rtol`` is the validation tolerance: max |y - y_eager| / max |y_eager|.
    """
    import fastconv

    unknown = [p for p in peers if p not in PEERS]
    if unknown:
        raise ValueError(f"unknown peer(s) {', '.join(unknown)}; choose from "
                         f"{', '.join(PEERS)}")
    rows, skipped = [], {}
    old_threads = fastconv.get_num_threads()
    fastconv.set_num_threads(threads)
    try:
        with tempfile.TemporaryDirectory(prefix="fastconv-net-") as work:
            for name in networks:
                model, sample = build_network(name, seed)
                for batch in batches:
                    if on_step:
                        on_step(f"{name} batch {batch}")
                    x = np.random.default_rng(seed + batch).standard_normal(
                        (batch, *sample)).astype(np.float32)
                    cands, cm = contenders(model, x, peers, threads, work, skipped)
                    flops = cm.flops(x.shape)
                    ref = cands[1].fn(x)
                    for c in cands:
                        try:
                            c.max_err = _rel_err(c.fn(x), ref)
                        except Exception as e:  # a contender that cannot run is reported
                            c.status = f"FAIL: {type(e).__name__}: {e}"
                            continue
                        if not c.max_err <= rtol:
                            c.status = f"FAIL: logits differ from fastconv eager by " \
                                       f"{c.max_err:.2e} (relative)"
                    _time_rounds(cands, x, rounds, reps, pause)
                    ms = {c.name: 1e3 * statistics.median(c.times) for c in cands if c.times}
                    for c in cands:
                        m = ms.get(c.name)
                        gf = flops / (m * 1e-3) / 1e9 if m else None
                        rows.append({
                            "network": name, "batch": batch, "contender": c.name,
                            "note": c.note, "status": c.status, "ms": m,
                            "images_per_s": batch / (m * 1e-3) if m else None,
                            "gflops": gf, "pct_peak": 100 * gf / peak if (gf and peak) else None,
                            "max_err": c.max_err, "flops": flops, "timed_calls": len(c.times),
                            "vs": {o: ms[o] / m for o in ms if o != c.name} if m else {},
                        })
    finally:
        fastconv.set_num_threads(old_threads)
    return rows, skipped


def print_table(rows, meta, console=None, legend=True):
    """One table per network x batch: every contender's ms, images/s, effective GFLOP/s,
    % of peak, error, and the ratio of fastconv compiled and eager to it."""
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    groups = {}
    for r in rows:
        groups.setdefault((r["network"], r["batch"]), []).append(r)
    for (net, batch), rs in groups.items():
        t = Table(title=f"{net}, batch {batch} ({meta.get('threads')} threads, float32)",
                  title_justify="left")
        for col in ("contender", "ms", "images/s", "GFLOP/s", "% peak", "max err",
                    "compiled x", "eager x", ""):
            t.add_column(col, justify="left" if col in ("contender", "") else "right")
        for r in rs:
            # vs holds other ms / this ms; the columns show this ms / fastconv's ms
            # (> 1: fastconv compiled / eager is faster than this row's contender).
            vs = r["vs"]
            comp = 1 / vs["fastconv compiled"] if vs.get("fastconv compiled") else None
            eag = 1 / vs["fastconv eager"] if vs.get("fastconv eager") else None
            t.add_row(r["contender"], _f(r["ms"], ".2f"), _f(r["images_per_s"], ".1f"),
                      _f(r["gflops"], ".1f"), _f(r["pct_peak"], ".0f"),
                      _f(r["max_err"], ".1e"), _f(comp, ".2f", "x"), _f(eag, ".2f", "x"),
                      "" if r["status"] == "ok" else r["status"],
                      style=None if r["status"] == "ok" else "red")
        console.print(t)
    if legend:
        print_legend(meta, console)


def print_legend(meta, console):
    """What the columns of :func:`print_table` mean and how they were measured."""
    console.print(f"'compiled x' / 'eager x' = this row's ms / fastconv compiled (eager) ms "
                  f"in the same run: > 1 means fastconv is faster. Median of "
                  f"{meta.get('rounds')} interleaved rounds x {meta.get('reps')} calls, "
                  f"{meta.get('pause')} s pause + 1 untimed call before each block. Peak: "
                  f"{_f(meta.get('peak_gflops'), '.1f')} GFLOP/s ({meta.get('peak_method')}).")


def _f(v, fmt, suffix=""):
    return "-" if v is None else f"{v:{fmt}}{suffix}"
