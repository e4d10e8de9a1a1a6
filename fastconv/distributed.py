"""Data-parallel training over MPI (mpi4py), with NCCL for CuPy arrays.

Start one process per rank with ``mpiexec`` (``pip install "fastconv[mpi]"`` brings mpi4py
and the MPICH wheel, whose ``mpiexec`` it uses)::

    from fastconv import distributed as dist
    rank, world = dist.init()
    model = dist.DistributedDataParallel(model)     # rank 0's weights on every rank
    sampler = dist.DistributedSampler(len(x), world, rank, seed=0)
    for epoch in range(epochs):
        sampler.set_epoch(epoch)
        for idx in batches_of(sampler):  # each rank its own shard
            opt.zero_grad()
            loss = crit(model(x[idx]), y[idx])
            model.backward(crit.backward())             # gradients averaged over ranks
            opt.step()

Outside ``mpiexec`` :func:`init` works too and gives world size 1 (an MPI "singleton"), so
a script runs unchanged on one process; ``fastconv train --distributed`` refuses that case
(see :func:`launched_by_mpiexec`), since a user who asks for it means several ranks.

Failure handling: :func:`init` installs a ``sys.excepthook`` that prints the traceback and
calls ``MPI.COMM_WORLD.Abort(1)`` when world size > 1, so an exception on one rank ends every
rank instead of leaving the others blocked in a collective; :func:`abort_on_error` does the
same around a block and is what the command line uses.

How gradients are averaged (:class:`DistributedDataParallel`): trainable parameters are
grouped, in reverse registration order (roughly the order backward finishes them), into
flat contiguous buckets of up to ``bucket_cap_mb`` (default 25 MB, as torch's DDP). During
``backward`` every layer that owns parameters is wrapped for that one pass; when a layer's
backward returns its parameters' gradients are final, and once every parameter of a bucket
is final the bucket is packed and a non-blocking ``Iallreduce`` is started (buckets are
started strictly in order, which MPI requires of non-blocking collectives). Later layers'
wrappers call ``Testall`` on the outstanding requests, which is what lets MPICH progress
them without an asynchronous progress thread. After the wrapped backward, the remaining
buckets are started, all are waited for, divided by the world size and copied back into
``Parameter.grad``. ``bench/train_distributed.py`` measures whether the overlap pays.
"""
from __future__ import annotations

import contextlib
import os
import sys
import traceback

import numpy as np

from ._args import is_cupy_array as _is_cupy
from ._args import is_int as _is_int
from .nn.module import Module

__all__ = ["init", "rank", "world_size", "local_rank", "all_reduce", "broadcast",
           "barrier", "DistributedDataParallel", "DistributedSampler", "abort_on_error",
           "launched_by_mpiexec", "INSTALL_HINT"]

INSTALL_HINT = 'pip install "fastconv[mpi]" (mpi4py and the MPICH wheel with mpiexec)'

# Environment variables that MPI launchers set in every rank: MPICH/Hydra and Intel MPI (PMI_*),
# PMIx-based launchers such as Open MPI 5 and Slurm's srun --mpi=pmix, Open MPI's own.
_LAUNCHER_VARS = ("PMI_RANK", "PMI_SIZE", "PMIX_RANK", "OMPI_COMM_WORLD_SIZE",
                  "MPI_LOCALNRANKS")

_OPS = ("sum", "mean")


class _State:
    comm = None          # mpi4py communicator (COMM_WORLD unless init(comm=...))
    nccl = None          # cupy.cuda.nccl.NcclCommunicator, made at the first CuPy collective
    hook_installed = False


_state = _State()


def _mpi():
    """The ``mpi4py.MPI`` module, or a one-line RuntimeError that says what to install."""
    try:
        from mpi4py import MPI
    except ImportError as e:
        raise RuntimeError(f"fastconv.distributed needs mpi4py and an MPI library "
                           f"({e}); install them with {INSTALL_HINT}") from None
    return MPI


def launched_by_mpiexec() -> bool:
    """True when this process was started by an MPI launcher (mpiexec, mpirun, srun)."""
    return any(v in os.environ for v in _LAUNCHER_VARS)


def init(comm=None):
    """Initialises MPI (once) and returns ``(rank, world_size)``.

    ``comm`` is an mpi4py communicator to use instead of ``COMM_WORLD``. When the world has
    more than one rank, an uncaught exception on any rank aborts the whole job (see the
    module docstring).
    """
    MPI = _mpi()
    if comm is not None and not isinstance(comm, MPI.Comm):
        raise TypeError(f"init: comm must be an mpi4py communicator, got {type(comm).__name__}")
    if not MPI.Is_initialized():  # pragma: no cover - mpi4py initialises on import by default
        MPI.Init()
    if comm is not None or _state.comm is None:
        _state.comm = comm if comm is not None else MPI.COMM_WORLD
        _state.nccl = None
    if _state.comm.Get_size() > 1 and not _state.hook_installed:
        _install_excepthook()
    return _state.comm.Get_rank(), _state.comm.Get_size()


def _comm():
    if _state.comm is None:
        init()
    return _state.comm


def rank() -> int:
    """This process's rank (0 ... world_size-1); initialises MPI if needed."""
    return _comm().Get_rank()


def world_size() -> int:
    """The number of ranks; initialises MPI if needed."""
    return _comm().Get_size()


def local_rank() -> int:
    """This process's index among the ranks on the same machine (to pick a GPU)."""
    MPI = _mpi()
    local = _comm().Split_type(MPI.COMM_TYPE_SHARED)
    try:
        return local.Get_rank()
    finally:
        local.Free()


def local_size() -> int:
    """The number of ranks on this machine (to share its cores)."""
    MPI = _mpi()
    local = _comm().Split_type(MPI.COMM_TYPE_SHARED)
    try:
        return local.Get_size()
    finally:
        local.Free()


def barrier() -> None:
    """Blocks until every rank reaches it."""
    _comm().Barrier()


def _abort(code: int = 1) -> None:
    sys.stdout.flush()
    sys.stderr.flush()
    _comm().Abort(code)


def _install_excepthook() -> None:
    previous = sys.excepthook

    def hook(etype, value, tb):
        try:
            sys.stderr.write(f"[rank {_comm().Get_rank()}] ")
            previous(etype, value, tb)
        finally:
            _abort(1)

    sys.excepthook = hook
    _state.hook_installed = True


@contextlib.contextmanager
def abort_on_error(prefix: str = "", code: int = 1, show_traceback: bool = False):
    """Ends every rank when the block raises on any one of them.

    With world size > 1 an exception (KeyboardInterrupt included) prints one line,
    ``<prefix>rank R: <message>`` (plus the traceback with ``show_traceback``), and calls
    ``MPI.COMM_WORLD.Abort(code)``, which makes mpiexec kill the other ranks, wherever they
    are waiting, and exit non-zero. With one rank the exception propagates unchanged.
    """
    try:
        yield
    except BaseException as e:
        if isinstance(e, SystemExit) and not e.code:
            raise
        if _state.comm is None or _state.comm.Get_size() == 1:
            raise
        if show_traceback:
            traceback.print_exc()
        msg = str(e) or type(e).__name__
        print(f"{prefix}rank {_state.comm.Get_rank()}: {msg}", file=sys.stderr, flush=True)
        _abort(code)


# ----------------------------------------------------------------------------- arrays


def _check_array(a, fn: str):
    if not (isinstance(a, np.ndarray) or _is_cupy(a)):
        raise TypeError(f"{fn}: a must be a numpy or cupy array, got {type(a).__name__}")
    if a.dtype.kind not in "fiuc":
        raise TypeError(f"{fn}: a must have a numeric dtype, got {a.dtype}")
    if not a.flags.c_contiguous:
        raise ValueError(f"{fn}: a must be C-contiguous (it is reduced in place)")
    if isinstance(a, np.ndarray) and not a.flags.writeable:
        raise ValueError(f"{fn}: a must be writeable (it is reduced in place)")


def all_reduce(a, op: str = "sum"):
    """Replaces ``a`` on every rank, in place, by the sum (``op="sum"``) or the mean
    (``op="mean"``, floating arrays only) of ``a`` over the ranks; returns ``a``.

    NumPy arrays go through MPI, CuPy arrays through NCCL. Every rank must call it with an
    array of the same shape and dtype.
    """
    if not isinstance(op, str) or op not in _OPS:
        raise ValueError(f"all_reduce: op must be 'sum' or 'mean', got {op!r}")
    _check_array(a, "all_reduce")
    if op == "mean" and a.dtype.kind not in "fc":
        raise TypeError(f"all_reduce: op='mean' needs a floating array, got {a.dtype}")
    comm = _comm()
    size = comm.Get_size()
    if a.size and size > 1:
        if _is_cupy(a):
            _nccl_all_reduce(a)
        else:
            comm.Allreduce(_mpi().IN_PLACE, a, op=_mpi().SUM)
    if op == "mean" and size > 1:
        a /= size
    return a


def broadcast(a, root: int = 0):
    """Overwrites ``a`` on every rank, in place, with rank ``root``'s ``a``; returns ``a``."""
    if not _is_int(root):
        raise TypeError(f"broadcast: root must be an int, got {root!r}")
    _check_array(a, "broadcast")
    comm = _comm()
    size = comm.Get_size()
    if not 0 <= int(root) < size:
        raise ValueError(f"broadcast: root must be in [0, {size}), got {root}")
    if a.size and size > 1:
        if _is_cupy(a):
            _nccl_broadcast(a, int(root))
        else:
            comm.Bcast(a, root=int(root))
    return a


# ----------------------------------------------------------------------------- NCCL (CuPy)
# Written against cupy.cuda.nccl's NcclCommunicator (allReduce/bcast on raw pointers and the
# current stream). No GPU was available while writing it: tests/test_distributed.py checks
# the calls against a mocked communicator, not against real NCCL.


def _nccl_module():
    try:
        from cupy.cuda import nccl
    except ImportError as e:
        raise RuntimeError(f"all_reduce on CuPy arrays needs CuPy built with NCCL ({e}); "
                           "pip install fastconv[gpu] and NCCL (cupy's 'nccl' library)") from None
    if not getattr(nccl, "available", True):
        raise RuntimeError("all_reduce on CuPy arrays needs NCCL, which this CuPy lacks")
    return nccl


def _stream_ptr() -> int:
    import cupy

    return cupy.cuda.get_current_stream().ptr


def _nccl_comm():
    """One NCCL communicator over the MPI world, made collectively on first use: rank 0
    makes the unique id and MPI broadcasts it."""
    if _state.nccl is None:
        nccl = _nccl_module()
        comm = _comm()
        uid = nccl.get_unique_id() if comm.Get_rank() == 0 else None
        uid = comm.bcast(uid, root=0)
        _state.nccl = nccl.NcclCommunicator(comm.Get_size(), uid, comm.Get_rank())
    return _state.nccl


def _nccl_dtype(dtype):
    nccl = _nccl_module()
    table = {"float32": "NCCL_FLOAT32", "float64": "NCCL_FLOAT64", "float16": "NCCL_FLOAT16",
             "int32": "NCCL_INT32", "int64": "NCCL_INT64", "uint8": "NCCL_UINT8",
             "int8": "NCCL_INT8", "uint32": "NCCL_UINT32", "uint64": "NCCL_UINT64"}
    name = table.get(np.dtype(dtype).name)
    if name is None:
        raise TypeError(f"NCCL cannot reduce dtype {np.dtype(dtype)}")
    return getattr(nccl, name)


def _nccl_all_reduce(a) -> None:
    nccl = _nccl_module()
    ptr = a.data.ptr
    _nccl_comm().allReduce(ptr, ptr, a.size, _nccl_dtype(a.dtype), nccl.NCCL_SUM, _stream_ptr())


def _nccl_broadcast(a, root: int) -> None:
    _nccl_comm().bcast(a.data.ptr, a.size, _nccl_dtype(a.dtype), root, _stream_ptr())


# ----------------------------------------------------------------------------- sampler


class DistributedSampler:
    """Each rank's share of ``range(n)``, as torch's ``DistributedSampler``.

    Every epoch the indices are shuffled with a generator seeded by ``seed + epoch`` (call
    :meth:`set_epoch` before each epoch; every rank then draws the same permutation), padded
    by repeating its start to a multiple of ``num_replicas`` (or, with ``drop_last``, cut to
    one), and rank ``r`` takes positions ``r, r + num_replicas, ...``. The shards are
    disjoint apart from the padding and all have ``len(sampler)`` indices.
    """

    def __init__(self, n: int, num_replicas: int | None = None, rank: int | None = None,
                 shuffle: bool = True, seed: int = 0, drop_last: bool = False):
        for name, v in (("n", n), ("seed", seed)):
            if not _is_int(v):
                raise TypeError(f"DistributedSampler: {name} must be an int, got {v!r}")
        if num_replicas is None:
            num_replicas = world_size()
        if rank is None:
            rank = globals()["rank"]()
        for name, v in (("num_replicas", num_replicas), ("rank", rank)):
            if not _is_int(v):
                raise TypeError(f"DistributedSampler: {name} must be an int, got {v!r}")
        if int(n) < 1:
            raise ValueError(f"DistributedSampler: n must be positive, got {n}")
        if int(num_replicas) < 1:
            raise ValueError(f"DistributedSampler: num_replicas must be positive, "
                             f"got {num_replicas}")
        if not 0 <= int(rank) < int(num_replicas):
            raise ValueError(f"DistributedSampler: rank must be in [0, {num_replicas}), "
                             f"got {rank}")
        if drop_last and int(n) < int(num_replicas):
            raise ValueError(f"DistributedSampler: drop_last with n={n} < num_replicas="
                             f"{num_replicas} leaves every rank empty")
        self.n, self.num_replicas, self.rank = int(n), int(num_replicas), int(rank)
        self.shuffle, self.seed, self.drop_last = bool(shuffle), int(seed), bool(drop_last)
        self.epoch = 0
        if self.drop_last:
            self.num_samples = self.n // self.num_replicas
        else:
            self.num_samples = -(-self.n // self.num_replicas)
        self.total_size = self.num_samples * self.num_replicas

    def set_epoch(self, epoch: int) -> None:
        """Sets the epoch that seeds the next shuffle (same on every rank)."""
        self.epoch = int(epoch)

    def indices(self) -> np.ndarray:
        """This rank's indices for the current epoch, as an int64 array."""
        if self.shuffle:
            order = np.random.default_rng(self.seed + self.epoch).permutation(self.n)
        else:
            order = np.arange(self.n)
        if self.total_size > self.n:
            reps = -(-self.total_size // self.n)
            order = np.tile(order, reps)[:self.total_size]
        else:
            order = order[:self.total_size]
        return order[self.rank:self.total_size:self.num_replicas].astype(np.int64)

    def __iter__(self):
        return iter(self.indices().tolist())

    def __len__(self) -> int:
        return self.num_samples


# ----------------------------------------------------------------------------- DDP


def _signature(module):
    """What must agree on every rank: (kind, name, shape, dtype, requires_grad, device)."""
    sig = []
    for name, p in module.named_parameters():
        sig.append(("parameter", name, tuple(p.shape), str(p.dtype), bool(p.requires_grad),
                    "cuda" if _is_cupy(p.data) else "cpu"))
    for name, b in module.named_buffers():
        sig.append(("buffer", name, tuple(b.shape), str(b.dtype), False,
                    "cuda" if _is_cupy(b) else "cpu"))
    return sig


def _describe_mismatch(sigs):
    """A message naming the first difference between rank 0's model and another rank's."""
    ref = sigs[0]
    for r, sig in enumerate(sigs[1:], start=1):
        if sig == ref:
            continue
        if len(sig) != len(ref):
            return (f"rank {r}'s model has {len(sig)} parameters and buffers, rank 0's has "
                    f"{len(ref)}")
        for mine, theirs in zip(sig, ref):
            if mine != theirs:
                fields = ("kind", "name", "shape", "dtype", "requires_grad", "device")
                diff = [f"{f} {a!r} (rank 0: {b!r})" for f, a, b in zip(fields, mine, theirs)
                        if a != b]
                return f"rank {r}'s {mine[0]} {mine[1]!r} differs: " + ", ".join(diff)
    return None


class _Bucket:
    __slots__ = ("params", "offsets", "buffer", "ready", "request", "launched", "xp")

    def __init__(self, params, xp):
        self.params = params
        self.offsets = np.cumsum([0] + [p.size for p in params]).tolist()
        self.xp = xp
        self.buffer = xp.empty(self.offsets[-1], dtype=params[0].dtype)
        self.ready = 0
        self.request = None
        self.launched = False


class DistributedDataParallel(Module):
    """Wraps ``module`` for data-parallel training: ``forward`` goes straight through,
    ``backward(grad)`` runs the module's backward and averages every parameter gradient
    over the ranks (see the module docstring for the bucketing and overlap).

    At construction rank 0's parameters and buffers are broadcast to every rank, after a
    check that every rank holds the same model (names, shapes, dtypes, ``requires_grad``,
    device): a mismatch raises ``ValueError`` on every rank, not a hang. Parameters with
    ``requires_grad=False`` are left out of the reduction; a trainable parameter that got no
    gradient on a rank counts as zero there. Buffers (BatchNorm's running statistics) stay
    per rank after the initial broadcast, as in torch's DDP. Every rank must call
    ``backward`` the same number of times, and freeze or unfreeze the same parameters.

    ``bucket_cap_mb`` caps a bucket's size; ``overlap=False`` starts every reduction after
    the whole backward pass instead of as buckets become ready.
    """

    def __init__(self, module, bucket_cap_mb: float = 25.0, overlap: bool = True):
        super().__init__()
        if not isinstance(module, Module):
            raise TypeError(f"DistributedDataParallel: module must be a fastconv.nn.Module, "
                            f"got {type(module).__name__}")
        if isinstance(bucket_cap_mb, bool) or not isinstance(bucket_cap_mb, (int, float)) \
                or not bucket_cap_mb > 0:
            raise ValueError(f"DistributedDataParallel: bucket_cap_mb must be a positive "
                             f"number, got {bucket_cap_mb!r}")
        self.module = module
        object.__setattr__(self, "bucket_cap_bytes", int(bucket_cap_mb * 2**20))
        object.__setattr__(self, "overlap", bool(overlap))
        object.__setattr__(self, "_plan_key", None)
        object.__setattr__(self, "_buckets", [])
        object.__setattr__(self, "comm_seconds", 0.0)
        # Buckets whose reduction the last backward started while layers were still running.
        object.__setattr__(self, "overlapped_buckets", 0)
        comm = _comm()
        config = (self.bucket_cap_bytes, self.overlap)
        gathered = comm.allgather((config, _signature(module)))
        problem = _describe_mismatch([sig for _, sig in gathered])
        if problem is None and any(c != config for c, _ in gathered):
            problem = ("bucket_cap_mb/overlap differ: "
                       + ", ".join(f"rank {r}: {c[0] / 2**20:g} MB, overlap={c[1]}"
                                   for r, (c, _) in enumerate(gathered)))
        if problem:
            raise ValueError(f"DistributedDataParallel: the ranks hold different models: "
                             f"{problem}")
        for _, p in module.named_parameters():
            broadcast(p.data, 0)
        for _, b in module.named_buffers():
            broadcast(b, 0)

    def forward(self, *args, **kwargs):
        return self.module(*args, **kwargs)

    # -- bucket plan

    def _plan(self):
        """Buckets of the trainable parameters, rebuilt when the trainable set changes."""
        params = [p for p in self.module.parameters() if p.requires_grad]
        key = tuple(id(p) for p in params) + tuple(str(p.dtype) for p in params)
        if key == self._plan_key:
            return self._buckets
        buckets, cur, cur_bytes = [], [], 0

        def close():
            if cur:
                buckets.append(_Bucket(list(cur), np if isinstance(cur[0].data, np.ndarray)
                                       else __import__("cupy")))

        for p in reversed(params):
            nbytes = p.size * p.dtype.itemsize
            if cur and (cur_bytes + nbytes > self.bucket_cap_bytes or p.dtype != cur[0].dtype
                        or type(p.data) is not type(cur[0].data)):
                close()
                cur, cur_bytes = [], 0
            cur.append(p)
            cur_bytes += nbytes
        close()
        object.__setattr__(self, "_buckets", buckets)
        object.__setattr__(self, "_plan_key", key)
        return buckets

    # -- reduction

    def _launch(self, b: _Bucket) -> None:
        import time

        t0 = time.perf_counter()
        buf = b.buffer
        for p, lo, hi in zip(b.params, b.offsets[:-1], b.offsets[1:]):
            if p.grad is None:
                buf[lo:hi] = 0
            else:
                buf[lo:hi] = p.grad.reshape(-1)
        if b.xp is np:
            MPI = _mpi()
            b.request = _comm().Iallreduce(MPI.IN_PLACE, buf, op=MPI.SUM)
        else:
            _nccl_all_reduce(buf)  # queued on the current stream after the gradients
        b.launched = True
        object.__setattr__(self, "comm_seconds", self.comm_seconds + time.perf_counter() - t0)

    def _launch_ready(self) -> None:
        for b in self._buckets:
            if b.launched:
                continue
            if b.ready < len(b.params):
                break
            self._launch(b)

    def _progress(self) -> None:
        reqs = [b.request for b in self._buckets if b.request is not None]
        if reqs:
            _mpi().Request.Testall(reqs)

    def _finish(self, world: int) -> None:
        import time

        t0 = time.perf_counter()
        for b in self._buckets:
            if not b.launched:
                self._launch(b)
        reqs = [b.request for b in self._buckets if b.request is not None]
        if reqs:
            _mpi().Request.Waitall(reqs)
        for b in self._buckets:
            buf = b.buffer
            buf /= world
            for p, lo, hi in zip(b.params, b.offsets[:-1], b.offsets[1:]):
                g = buf[lo:hi].reshape(p.shape)
                if p.grad is None:
                    p.grad = g.copy()
                else:
                    p.grad[...] = g
            b.request = None
            b.launched = False
            b.ready = 0
        object.__setattr__(self, "comm_seconds", self.comm_seconds + time.perf_counter() - t0)

    def _hooks(self, buckets):
        """Per-layer wrappers that count finished parameters (installed for one pass)."""
        where = {}
        for b in buckets:
            for p in b.params:
                where[id(p)] = b
        owners = {}
        for mod in self.module.modules():
            for p in mod._parameters.values():
                if id(p) in where:
                    owners.setdefault(id(mod), [mod, []])[1].append(p)
        # A parameter shared by several layers is final only after the last of them.
        uses = {}
        for _, plist in owners.values():
            for p in plist:
                uses[id(p)] = uses.get(id(p), 0) + 1
        remaining = dict(uses)
        ddp = self

        def wrap(mod, plist):
            inner = mod.backward  # an instance-level backward someone installed, if any

            def backward(grad_out):
                ddp._progress()
                out = inner(grad_out)
                for p in plist:
                    remaining[id(p)] -= 1
                    if remaining[id(p)] == 0:
                        where[id(p)].ready += 1
                ddp._launch_ready()
                return out

            return backward

        return [(mod, wrap(mod, plist)) for mod, plist in owners.values()]

    def backward(self, grad_out):
        """The wrapped module's backward, then every gradient averaged over the ranks."""
        world = _comm().Get_size()
        if world == 1:
            return self.module.backward(grad_out)
        buckets = self._plan()
        if not (self.overlap and buckets and buckets[0].xp is np):
            out = self.module.backward(grad_out)
            object.__setattr__(self, "overlapped_buckets", 0)
            self._finish(world)
            return out
        hooks = self._hooks(buckets)
        previous = [mod.__dict__.get("backward") for mod, _ in hooks]
        for mod, fn in hooks:
            object.__setattr__(mod, "backward", fn)
        try:
            out = self.module.backward(grad_out)
        finally:
            for (mod, _), prev in zip(hooks, previous):
                if prev is None:
                    mod.__dict__.pop("backward", None)
                else:
                    object.__setattr__(mod, "backward", prev)
        object.__setattr__(self, "overlapped_buckets", sum(b.launched for b in buckets))
        self._finish(world)
        return out

    def extra_repr(self) -> str:
        return f"bucket_cap_mb={self.bucket_cap_bytes / 2**20:g}, overlap={self.overlap}"
