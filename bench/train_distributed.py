"""Data-parallel scaling: ResNet-20 training steps on 1 rank vs 2 ranks (MPI).

Each rank trains ResNet-20 on CIFAR-sized input (3x32x32, batch 32 per rank, one kernel
thread per rank, SGD with momentum) through fastconv.distributed.DistributedDataParallel.

    flock /tmp/fastconv-bench.lock python bench/train_distributed.py [--rounds 3] [--steps 6]

The parent alternates ``mpiexec -n 1`` and ``mpiexec -n 2`` jobs for ``--rounds`` rounds
(each job: a pause, one untimed step, then ``--steps`` timed steps per variant) and reports
medians:

* images/s of 2 ranks (64 images per step) over images/s of 1 rank (32 per step);
* the share of a 2-rank step spent in the gradient all-reduce, two ways: a blocking
  ``Allreduce`` of the same volume timed on its own (the wire cost), and the time a step
  actually spends packing, reducing and waiting inside DDP (the exposed cost, which also
  absorbs waiting for the slower rank);
* whether overlapping the reduction with the backward pass pays: variants with one 25 MB
  bucket (the default; ResNet-20's 1.1 MB of gradients fit in it, so nothing overlaps),
  with 0.125 MB buckets (about 9 of them, each started as soon as its layers' gradients are
  final) and with overlap off, interleaved step by step inside the same 2-rank job;
* from the measured volume per step, the ring all-reduce cost model's projection for 8
  and 64 ranks on 10 and 100 Gbit/s networks.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

from _common import ROOT, use_source_tree  # noqa: E402

use_source_tree()

VARIANTS = (("bucket 25 MB, overlap", dict(bucket_cap_mb=25.0, overlap=True)),
            ("bucket 0.125 MB, overlap", dict(bucket_cap_mb=0.125, overlap=True)),
            ("bucket 25 MB, no overlap", dict(bucket_cap_mb=25.0, overlap=False)))


def _worker(args):
    from mpi4py import MPI

    import fastconv
    from fastconv import distributed as dist
    from fastconv import models, nn, optim

    rank, world = dist.init()
    fastconv.set_num_threads(1)
    nn.init.manual_seed(0)
    model = models.get_model("resnet20", num_classes=10, in_channels=3)
    ddps = [(name, dist.DistributedDataParallel(model, **kw)) for name, kw in VARIANTS]
    opt = optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    crit = nn.CrossEntropyLoss()
    g = np.random.default_rng(rank)
    x = g.standard_normal((args.batch, 3, 32, 32)).astype(np.float32)
    y = g.integers(0, 10, args.batch)

    def step(ddp):
        opt.zero_grad()
        crit(ddp(x), y)
        ddp.backward(crit.backward())
        opt.step()

    times = {name: [] for name, _ in ddps}
    cpu = {name: [] for name, _ in ddps}
    comm = {name: [] for name, _ in ddps}
    for _ in range(args.steps):
        for name, ddp in ddps:  # interleaved: one step of each variant per round
            dist.barrier()
            c0 = ddp.comm_seconds
            t0, p0 = time.perf_counter(), time.process_time()
            step(ddp)
            times[name].append(time.perf_counter() - t0)
            cpu[name].append(time.process_time() - p0)
            comm[name].append(ddp.comm_seconds - c0)
    # The wire cost alone: a blocking Allreduce of the whole gradient volume.
    grads = np.concatenate([p.grad.ravel() for p in model.parameters() if p.grad is not None])
    ar = []
    for _ in range(20):
        buf = grads.copy()
        dist.barrier()
        t0 = time.perf_counter()
        if world > 1:
            MPI.COMM_WORLD.Allreduce(MPI.IN_PLACE, buf, op=MPI.SUM)
        ar.append(time.perf_counter() - t0)
    # Each rank's median; the job's step time is the slower rank's.
    mine = {name: (statistics.median(times[name]), statistics.median(comm[name]),
                   statistics.median(cpu[name])) for name in times}
    everyone = MPI.COMM_WORLD.gather(mine, root=0)
    if rank == 0:
        out = {"world": world, "batch": args.batch, "grad_bytes": int(grads.nbytes),
               "allreduce_s": statistics.median(ar), "variants": {}}
        for name in times:
            out["variants"][name] = {"step_s": max(e[name][0] for e in everyone),
                                     "comm_s": max(e[name][1] for e in everyone),
                                     "cpu_s": max(e[name][2] for e in everyone)}
        with open(args.worker, "w") as f:
            json.dump(out, f)


def _run_job(n, args, path):
    mpiexec = os.path.join(os.path.dirname(sys.executable), "mpiexec")
    if not os.path.exists(mpiexec):
        mpiexec = shutil.which("mpiexec")
    env = dict(os.environ, FASTCONV_NUM_THREADS="1", OMP_NUM_THREADS="1",
               OPENBLAS_NUM_THREADS="1")
    env["PYTHONPATH"] = os.pathsep.join([ROOT, env.get("PYTHONPATH", "")])
    cmd = [mpiexec, "-n", str(n), sys.executable, os.path.abspath(__file__), "--worker", path,
           "--steps", str(args.steps), "--batch", str(args.batch)]
    time.sleep(0.3)
    subprocess.run(cmd, check=True, env=env, timeout=600)
    with open(path) as f:
        return json.load(f)


def _ring_seconds(nbytes, ranks, gbit, latency_s=20e-6):
    """Ring all-reduce: 2(N-1) steps, each moving nbytes/N per rank, plus per-step latency."""
    bw = gbit * 1e9 / 8
    return 2 * (ranks - 1) / ranks * nbytes / bw + 2 * (ranks - 1) * latency_s


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=6, help="timed steps per variant per job")
    ap.add_argument("--batch", type=int, default=32, help="images per rank per step")
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        return _worker(args)
    tmp = tempfile.mkdtemp()
    res = {1: [], 2: []}
    for r in range(args.rounds):
        for n in (1, 2):
            res[n].append(_run_job(n, args, os.path.join(tmp, f"{n}-{r}.json")))
    base = VARIANTS[0][0]
    step1 = statistics.median(j["variants"][base]["step_s"] for j in res[1])
    print(f"load average before: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    print(f"ResNet-20, 3x32x32, batch {args.batch} per rank, 1 thread per rank; "
          f"{args.rounds} rounds x {args.steps} steps; medians")
    cpu1 = statistics.median(j["variants"][base]["cpu_s"] for j in res[1])
    print(f"1 rank : {step1 * 1e3:8.1f} ms/step  {args.batch / step1:7.1f} images/s  "
          f"(CPU {cpu1 * 1e3:.0f} ms/step)")
    for name, _ in VARIANTS:
        step2 = statistics.median(j["variants"][name]["step_s"] for j in res[2])
        comm2 = statistics.median(j["variants"][name]["comm_s"] for j in res[2])
        cpu2 = statistics.median(j["variants"][name]["cpu_s"] for j in res[2])
        print(f"2 ranks, {name:<26}: {step2 * 1e3:8.1f} ms/step  "
              f"{2 * args.batch / step2:7.1f} images/s  speed-up {2 * step1 / step2:.2f}x  "
              f"exposed all-reduce {100 * comm2 / step2:.1f}% of the step; CPU per rank "
              f"{cpu2 * 1e3:.0f} ms/step ({cpu2 / cpu1:.2f}x one rank's)")
    nbytes = res[2][0]["grad_bytes"]
    ar = statistics.median(j["allreduce_s"] for j in res[2])
    step2 = statistics.median(j["variants"][base]["step_s"] for j in res[2])
    print(f"gradient volume per step: {nbytes / 2**20:.2f} MiB; blocking Allreduce of it on "
          f"2 ranks (shared memory): {ar * 1e3:.2f} ms = {100 * ar / step2:.2f}% of a step")
    # The model takes compute = the step's CPU time (what a rank costs on an idle core; the
    # wall time here is inflated by whatever else runs on the machine), and a rank 16x
    # faster (a 16-core node per rank), where the network starts to show.
    cpu = statistics.median(j["variants"][base]["cpu_s"] for j in res[2])
    print("ring all-reduce model (2(N-1)/N * bytes / bandwidth + 2(N-1) * 20 us latency), "
          "no overlap:")
    for label, compute in (("1 core per rank", cpu), ("16 cores per rank", cpu / 16)):
        print(f"  compute {compute * 1e3:.0f} ms/step ({label}):")
        for ranks in (8, 64):
            for gbit in (10, 100):
                t = _ring_seconds(nbytes, ranks, gbit)
                print(f"    {ranks:>2} ranks, {gbit:>3} Gbit/s: all-reduce {t * 1e3:6.2f} ms, "
                      f"efficiency {compute / (compute + t):.3f}, speed-up "
                      f"{ranks * compute / (compute + t):.1f}x")

if __name__ == "__main__":
    main()
