"""The training loop behind ``fastconv train``, usable from Python: :func:`fit` trains a
model from :mod:`fastconv.nn` on a :class:`fastconv.data.Dataset`, :func:`evaluate` scores it.
"""
from __future__ import annotations

import contextlib
import sys
import time

import numpy as np

__all__ = ["fit", "evaluate"]


def _log(msg, stream=None):
    print(msg, file=stream or sys.stdout, flush=True)


def _to(a, device):
    if device == "cuda":
        import cupy

        return cupy.asarray(a)
    return a


def _host_argmax(logits):
    out = logits.argmax(axis=1)
    return out.get() if hasattr(out, "get") else out


def evaluate(model, x, y, batch_size=256, device="cpu"):
    """(mean loss, accuracy) of ``model`` in evaluation mode over ``x``, ``y``."""
    from . import nn

    crit = nn.CrossEntropyLoss()
    was_training = model.training
    model.eval()
    total_loss, correct = 0.0, 0
    from .data import batches

    with nn.no_grad():
        for xb, yb in batches(x, y, batch_size):
            logits = model(_to(xb, device))
            total_loss += crit(logits, _to(yb, device)) * len(yb)
            correct += int((_host_argmax(logits) == yb).sum())
    model.train(was_training)
    n = max(len(y), 1)
    return total_loss / n, correct / n


def fit(model, data, *, epochs, batch_size, optimizer, scheduler=None, device="cpu",
        seed=0, progress=True, log=_log, shift=0, distributed=False):
    """Trains ``model`` on ``data`` (a :class:`fastconv.data.Dataset`); returns per-epoch
    history dicts (train_loss, train_acc, test_loss, test_acc, seconds). ``shift > 0``
    augments each training image with a random translation of up to that many pixels.
    Frozen parameters get no gradient, and batch norms whose parameters are all frozen
    stay in evaluation mode (see :mod:`fastconv.finetune`).

    ``distributed=True`` (under mpiexec, ``model`` a
    :class:`fastconv.distributed.DistributedDataParallel`): each rank trains on its own
    shard from a :class:`~fastconv.distributed.DistributedSampler` (``batch_size`` per rank),
    train loss/accuracy are summed over the ranks, and only rank 0 evaluates (other ranks
    get ``test_loss``/``test_acc`` None)."""

    with _single_threaded_blas():
        return _fit(model, data, epochs, batch_size, optimizer, scheduler, device, seed,
                    progress, log, shift, distributed)


def _fit(model, data, epochs, batch_size, optimizer, scheduler, device, seed, progress, log,
         shift, distributed=False):
    from . import nn
    from .data import batches, random_shift

    from .finetune import freeze_bn_stats

    crit = nn.CrossEntropyLoss()
    rng = np.random.default_rng(seed)
    history = []
    n_batches = -(-len(data.y_train) // batch_size)
    partly_frozen = any(not p.requires_grad for p in model.parameters())
    # A chain's backward can skip the input gradient nobody reads (and a frozen backbone).
    backward = ((lambda g: model.backward(g, need_input_grad=False))
                if isinstance(model, nn.Chain) else model.backward)
    shard = None
    if distributed:
        from . import distributed as dist

        shard = dist.DistributedSampler(len(data.y_train), seed=seed)
        rng = np.random.default_rng([seed, shard.rank])  # each rank its own augmentation
        n_batches = -(-len(shard) // batch_size)
    for epoch in range(1, epochs + 1):
        model.train()
        if partly_frozen:
            freeze_bn_stats(model)
        t0 = time.perf_counter()
        seen = correct = 0
        loss_sum = 0.0
        if shard is None:
            it = batches(data.x_train, data.y_train, batch_size, shuffle=True, rng=rng)
        else:
            shard.set_epoch(epoch)
            it = _shard_batches(data.x_train, data.y_train, shard.indices(), batch_size)
        bar = None
        if progress:
            try:
                from tqdm import tqdm

                bar = tqdm(it, total=n_batches, desc=f"epoch {epoch}/{epochs}", leave=False,
                           unit="batch", file=sys.stderr)
                it = bar
            except ImportError:  # tqdm is optional: train without a bar
                bar = None
        for xb, yb in it:
            if shift:
                xb = random_shift(xb, shift, rng)
            xd, yd = _to(xb, device), _to(yb, device)
            optimizer.zero_grad()
            logits = model(xd)
            loss = crit(logits, yd)
            backward(crit.backward())
            optimizer.step()
            loss_sum += loss * len(yb)
            seen += len(yb)
            correct += int((_host_argmax(logits) == yb).sum())
            if bar is not None:
                bar.set_postfix(loss=f"{loss_sum / seen:.4f}", acc=f"{correct / seen:.3f}")
        if bar is not None:
            bar.close()
        if scheduler is not None:
            scheduler.step()
        if shard is not None:
            loss_sum, seen, correct = _sum_over_ranks(loss_sum, seen, correct)
        if shard is None or shard.rank == 0:
            test_loss, test_acc = evaluate(model, data.x_test, data.y_test, device=device)
        else:
            test_loss = test_acc = None
        rec = dict(epoch=epoch, train_loss=loss_sum / max(seen, 1),
                   train_acc=correct / max(seen, 1), test_loss=test_loss, test_acc=test_acc,
                   seconds=time.perf_counter() - t0)
        history.append(rec)
        if log is not None and test_acc is not None:
            log(f"epoch {epoch}/{epochs}: train loss {rec['train_loss']:.4f} acc "
                f"{100 * rec['train_acc']:.2f}% | test loss {test_loss:.4f} acc "
                f"{100 * test_acc:.2f}% | {rec['seconds']:.1f} s")
    return history


def _shard_batches(x, y, idx, batch_size):
    for i in range(0, len(idx), batch_size):
        b = idx[i:i + batch_size]
        yield x[b], y[b]


def _sum_over_ranks(*values):
    """Each rank's training loss sum and counts, summed over the ranks."""
    from . import distributed as dist

    a = np.array(values, dtype=np.float64)
    dist.all_reduce(a)
    return float(a[0]), int(a[1]), int(a[2])


def _single_threaded_blas():
    """The kernels run their own OpenMP threads; a BLAS thread pool (NumPy matmul where an
    op still runs through NumPy) spinning beside them oversubscribes the cores: on a busy
    2-core machine a small matmul was measured 70x slower. One BLAS thread avoids that."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # optional: without it BLAS keeps its own setting
        return contextlib.nullcontext()
    return threadpool_limits(1, user_api="blas")
