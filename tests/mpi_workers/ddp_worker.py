"""Run under mpiexec by tests/test_distributed.py: one scenario per invocation.

``python ddp_worker.py SCENARIO OUTDIR``; each rank writes what the test compares to
OUTDIR/rank<r>.npz (the test then checks it in the parent process).
"""
import os
import sys

import numpy as np

import fastconv as fc
from fastconv import distributed as dist
from fastconv import nn, optim


def small_model(seed=0):
    """Conv, ReLU, pool, linear: no batch statistics, so per-rank steps compose exactly."""
    nn.init.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Flatten(1), nn.Linear(4 * 4 * 4, 5))


def data(n=16, seed=1):
    g = np.random.default_rng(seed)
    x = g.standard_normal((n, 2, 8, 8)).astype(np.float64)
    y = g.integers(0, 5, n)
    return x, y


def one_step(model, x, y, lr=0.1):
    """One SGD step; returns the parameters after it."""
    crit = nn.CrossEntropyLoss()
    opt = optim.SGD(model.parameters(), lr=lr)
    opt.zero_grad()
    crit(model(x), y)
    model.backward(crit.backward())
    grads = [p.grad.copy() for p in model.parameters()]
    opt.step()
    return grads


def main():
    scenario, out = sys.argv[1], sys.argv[2]
    rank, world = dist.init()
    fc.set_num_threads(1)
    save = {}
    if scenario in ("step", "step_nooverlap", "step_small_buckets"):
        # Every rank starts from a different init: the constructor's broadcast must fix it.
        model = small_model(seed=rank).to(np.float64)
        kw = {"step": {}, "step_nooverlap": {"overlap": False},
              "step_small_buckets": {"bucket_cap_mb": 1e-4}}[scenario]
        ddp = dist.DistributedDataParallel(model, **kw)
        save["n_buckets"] = np.array(len(ddp._plan()))
        x, y = data()
        half = len(y) // world
        sl = slice(rank * half, (rank + 1) * half)
        grads = one_step(ddp, x[sl], y[sl])
        save["overlapped"] = np.array(ddp.overlapped_buckets)
        for i, g in enumerate(grads):
            save[f"grad{i}"] = g
        for i, p in enumerate(model.parameters()):
            save[f"param{i}"] = p.data
    elif scenario == "train":
        # A few Adam steps of a model with BatchNorm on each rank's own data.
        nn.init.manual_seed(rank)
        model = nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                              nn.MaxPool2d(2), nn.Flatten(1), nn.Linear(64, 5))
        model[0].weight.requires_grad = False  # frozen: not reduced, stays rank 0's
        ddp = dist.DistributedDataParallel(model, bucket_cap_mb=1e-3)
        opt = optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-2)
        crit = nn.CrossEntropyLoss()
        x, y = data(64, seed=10 + rank)
        for s in range(6):
            xb, yb = x[s * 8:(s + 1) * 8], y[s * 8:(s + 1) * 8]
            opt.zero_grad()
            crit(ddp(xb.astype(np.float32)), yb)
            ddp.backward(crit.backward())
            opt.step()
        for k, v in model.state_dict().items():
            save[k] = np.asarray(v)
    elif scenario == "mismatch":
        width = 4 if rank == 0 else 5
        model = nn.Sequential(nn.Linear(3, width))
        try:
            dist.DistributedDataParallel(model)
        except ValueError as e:
            save["error"] = np.array(str(e))
        try:  # same model, different bucket sizes: the reductions would not line up
            dist.DistributedDataParallel(nn.Sequential(nn.Linear(3, 4)),
                                         bucket_cap_mb=1.0 + rank)
        except ValueError as e:
            save["error_config"] = np.array(str(e))
    elif scenario == "raise":
        # Rank 1 fails; rank 0 waits in a collective that can never complete.
        if rank == 1:
            raise RuntimeError("deliberate failure on rank 1")
        a = np.ones(4)
        dist.all_reduce(a)
        save["unreachable"] = a
    elif scenario == "collectives":
        a = np.full(3, float(rank + 1))
        dist.all_reduce(a)
        save["sum"] = a.copy()
        b = np.full(3, float(rank + 1))
        dist.all_reduce(b, op="mean")
        save["mean"] = b
        c = np.arange(4, dtype=np.int32) * (rank + 1)
        dist.broadcast(c, root=world - 1)
        save["bcast"] = c
        errors = []
        for call in (lambda: dist.all_reduce(a, op="max"), lambda: dist.all_reduce([1.0]),
                     lambda: dist.broadcast(a, root=world), lambda: dist.broadcast(a, root="0"),
                     lambda: dist.all_reduce(np.ones((3, 3))[:, 0]),
                     lambda: dist.all_reduce(np.arange(3), op="mean")):
            try:
                call()
                errors.append("no error")
            except (ValueError, TypeError) as e:
                errors.append(f"{type(e).__name__}: {e}")
        save["errors"] = np.array(errors)
    else:
        raise ValueError(f"unknown scenario {scenario!r}")
    np.savez(os.path.join(out, f"rank{rank}.npz"), **save)


if __name__ == "__main__":
    main()
