"""fastconv.distributed: collectives, DistributedDataParallel and ``train --distributed``,
run as real 2-rank MPI jobs (mpiexec from the MPICH wheel) in subprocesses with timeouts.

Everything that needs MPI is skipped, with the reason, only when mpi4py is not installed;
CI installs it (the ``test`` extra), so there these tests run.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import types
from pathlib import Path

import numpy as np
import pytest

from fastconv import distributed as dist

from conftest import FASTCONV_PATH

ROOT = Path(__file__).resolve().parents[1]
WORKER = Path(__file__).resolve().parent / "mpi_workers" / "ddp_worker.py"

try:
    import mpi4py  # noqa: F401

    HAVE_MPI4PY = True
except ImportError:
    HAVE_MPI4PY = False


def _mpiexec():
    """mpiexec beside this Python (the MPICH wheel installs it into the venv's bin)."""
    here = Path(sys.executable).parent / "mpiexec"
    return str(here) if here.exists() else shutil.which("mpiexec")


needs_mpi = pytest.mark.skipif(not HAVE_MPI4PY or _mpiexec() is None,
                               reason="mpi4py/mpiexec not installed (pip install fastconv[mpi])")


def _env():
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([FASTCONV_PATH, env.get("PYTHONPATH", "")])
    env["FASTCONV_NUM_THREADS"] = "1"
    env.pop("FASTCONV_TRACEBACK", None)
    return env


def mpirun(n, args, timeout=120, check=True):
    """Runs ``mpiexec -n n python args...``; returns the CompletedProcess."""
    cmd = [_mpiexec(), "-n", str(n), sys.executable, *map(str, args)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=_env(),
                          cwd=FASTCONV_PATH)
    if check and proc.returncode != 0:
        raise AssertionError(f"{cmd} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
    return proc


def scenario(n, name, tmp_path):
    out = tmp_path / f"{name}-{n}"
    out.mkdir()
    mpirun(n, [WORKER, name, out])
    return [dict(np.load(out / f"rank{r}.npz")) for r in range(n)]


# ----------------------------------------------------------------------------- real MPI


@needs_mpi
def test_collectives_and_argument_errors(tmp_path):
    r0, r1 = scenario(2, "collectives", tmp_path)
    for r in (r0, r1):
        np.testing.assert_array_equal(r["sum"], [3.0, 3.0, 3.0])
        np.testing.assert_array_equal(r["mean"], [1.5, 1.5, 1.5])
        np.testing.assert_array_equal(r["bcast"], np.arange(4) * 2)  # rank 1's values
        errors = list(r["errors"])
        assert "no error" not in errors, errors
        assert errors[0].startswith("ValueError") and "op" in errors[0]
        assert errors[1].startswith("TypeError") and "a must be" in errors[1]
        assert errors[2].startswith("ValueError") and "root" in errors[2]
        assert errors[3].startswith("TypeError") and "root" in errors[3]
        assert "contiguous" in errors[4]
        assert "mean" in errors[5]


@needs_mpi
@pytest.mark.parametrize("name", ["step", "step_nooverlap", "step_small_buckets"])
def test_two_half_batches_equal_one_full_batch(tmp_path, name):
    """2 ranks on half-batches == 1 rank on the whole batch, though each rank started from
    its own initialisation (the constructor broadcasts rank 0's)."""
    (single,) = scenario(1, name, tmp_path)
    r0, r1 = scenario(2, name, tmp_path)
    keys = [k for k in single if k.startswith(("grad", "param"))]
    assert len(keys) == 8
    for k in keys:
        np.testing.assert_array_equal(r0[k], r1[k], err_msg=k)
        np.testing.assert_allclose(r0[k], single[k], rtol=1e-12, atol=1e-14, err_msg=k)
    if name == "step_small_buckets":
        assert int(r0["n_buckets"]) == 4  # one parameter per bucket: several Iallreduces
    else:
        assert int(r0["n_buckets"]) == 1
    # With overlap every bucket is started from a layer's hook, inside the backward pass.
    expected = 0 if name == "step_nooverlap" else int(r0["n_buckets"])
    assert int(r0["overlapped"]) == expected == int(r1["overlapped"])


@needs_mpi
def test_ranks_end_training_bitwise_equal_with_frozen_param_and_batchnorm(tmp_path):
    r0, r1 = scenario(2, "train", tmp_path)
    for k in r0:
        if "running" in k:
            # BatchNorm statistics stay per rank (each saw its own data), as in torch's DDP.
            assert not np.array_equal(r0[k], r1[k]), k
        else:
            assert np.array_equal(r0[k], r1[k]), k
    # The frozen weight is rank 0's broadcast initialisation on both ranks.
    assert np.array_equal(r0["0.weight"], r1["0.weight"])


@needs_mpi
def test_model_mismatch_raises_on_every_rank(tmp_path):
    r0, r1 = scenario(2, "mismatch", tmp_path)
    for r in (r0, r1):
        msg = str(r["error"])
        assert "different models" in msg and "0.weight" in msg and "(5, 3)" in msg, msg
        msg = str(r["error_config"])
        assert "bucket_cap_mb" in msg and "rank 1: 2 MB" in msg, msg


@needs_mpi
def test_a_rank_that_raises_ends_the_job_within_seconds(tmp_path):
    t0 = time.perf_counter()
    proc = mpirun(2, [WORKER, "raise", tmp_path], timeout=60, check=False)
    elapsed = time.perf_counter() - t0
    assert proc.returncode != 0
    assert "deliberate failure on rank 1" in proc.stderr
    assert elapsed < 20, elapsed
    assert not (tmp_path / "rank0.npz").exists()


@needs_mpi
def test_train_cli_distributed_reaches_single_process_accuracy(tmp_path):
    """The issue's command in full: mpiexec -n 2 fastconv train --model lenet5 --data digits
    --distributed (about 25 s on 2 cores)."""
    ckpt = tmp_path / "ddp.npz"
    proc = mpirun(2, ["-m", "fastconv", "train", "--model", "lenet5", "--data", "digits",
                      "--distributed", "--no-progress", "--save", ckpt], timeout=600)
    out = proc.stdout
    # Only rank 0 prints: one header, one line per epoch, one final line.
    assert out.count("final test accuracy") == 1, out
    assert out.count("epoch 12/12") == 1, out
    assert "distributed: 2 ranks, batch 32 per rank" in out
    acc = float(out.rsplit("final test accuracy:", 1)[1].split("%")[0])
    assert acc >= 97.0, out
    assert ckpt.exists()


@needs_mpi
def test_train_cli_error_on_ranks_is_one_line_and_nonzero(tmp_path):
    """A bad --data-dir fails on every rank; the job ends with status != 0 and the message."""
    proc = mpirun(2, ["-m", "fastconv", "train", "--data", "cifar10", "--data-dir",
                      tmp_path / "missing", "--distributed", "--epochs", "1"],
                  timeout=120, check=False)
    assert proc.returncode != 0
    assert "fastconv: error: rank" in proc.stderr
    assert "Traceback" not in proc.stderr


@needs_mpi
def test_train_cli_distributed_outside_mpiexec_is_refused():
    env = _env()
    for v in dist._LAUNCHER_VARS:
        env.pop(v, None)
    proc = subprocess.run([sys.executable, "-m", "fastconv", "train", "--distributed",
                           "--epochs", "1"], capture_output=True, text=True, timeout=120,
                          env=env, cwd=FASTCONV_PATH)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("fastconv: error:"), proc.stderr
    assert "mpiexec -n 2" in lines[0] and "fastconv[mpi]" in lines[0]


# ----------------------------------------------------------------------------- no MPI needed


def test_without_mpi4py_the_error_says_what_to_install():
    code = ("import sys; sys.modules['mpi4py'] = None\n"
            "from fastconv.cli import console_main\n"
            "sys.exit(console_main(['train', '--distributed', '--epochs', '1']))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, env=_env(), cwd=FASTCONV_PATH)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("fastconv: error:"), proc.stderr
    assert 'pip install "fastconv[mpi]"' in lines[0]


def test_sampler_shards_are_disjoint_padded_and_reshuffled():
    n, world = 10, 3
    samplers = [dist.DistributedSampler(n, world, r, seed=5) for r in range(world)]
    for epoch in (0, 1):
        for s in samplers:
            s.set_epoch(epoch)
        shards = [s.indices() for s in samplers]
        assert all(len(sh) == 4 == len(s) for sh, s in zip(shards, samplers))
        joined = np.concatenate(shards)
        assert set(joined.tolist()) == set(range(n))  # every index, 2 repeated as padding
        assert len(joined) == 12
        if epoch == 0:
            first = joined.copy()
    assert not np.array_equal(first, joined)  # set_epoch reshuffles
    s = dist.DistributedSampler(n, world, 0, seed=5)
    s.set_epoch(1)
    assert np.array_equal(s.indices(), samplers[0].indices())  # same seed+epoch, same order
    dl = [dist.DistributedSampler(n, world, r, drop_last=True, shuffle=False).indices()
          for r in range(world)]
    assert [len(d) for d in dl] == [3, 3, 3]
    assert sorted(np.concatenate(dl).tolist()) == list(range(9))


@pytest.mark.parametrize("kw, err", [
    (dict(n=0, num_replicas=2, rank=0), ValueError),
    (dict(n=4, num_replicas=2, rank=2), ValueError),
    (dict(n=4, num_replicas=0, rank=0), ValueError),
    (dict(n=4.0, num_replicas=2, rank=0), TypeError),
    (dict(n=4, num_replicas=2, rank=True), TypeError),
    (dict(n=1, num_replicas=2, rank=0, drop_last=True), ValueError),
])
def test_sampler_rejects_bad_arguments(kw, err):
    name = "drop_last" if kw.get("drop_last") else None
    with pytest.raises(err) as info:
        dist.DistributedSampler(**kw)
    assert name is None or "drop_last" in str(info.value)


# --- NCCL path, against a mocked communicator (no GPU on this machine) ----------------


class _FakeCupyArray:
    """Enough of a cupy.ndarray for the NCCL calls: module name, data.ptr, size, dtype."""

    __module__ = "cupy._core.core"

    def __init__(self, a):
        self.a = a
        self.data = types.SimpleNamespace(ptr=a.ctypes.data)
        self.dtype, self.size, self.flags = a.dtype, a.size, a.flags

    def __itruediv__(self, v):
        self.a /= v
        return self


class _FakeNccl(types.SimpleNamespace):
    def __init__(self):
        super().__init__(NCCL_FLOAT32=7, NCCL_FLOAT64=8, NCCL_INT32=2, NCCL_INT64=4,
                         NCCL_FLOAT16=6, NCCL_UINT8=1, NCCL_INT8=0, NCCL_UINT32=3,
                         NCCL_UINT64=5, NCCL_SUM=0, available=True, calls=[])
        nccl = self

        class Comm:
            def __init__(self, ndev, uid, rank):
                nccl.calls.append(("init", ndev, uid, rank))

            def allReduce(self, send, recv, count, dtype, op, stream):
                nccl.calls.append(("allReduce", send, recv, count, dtype, op, stream))

            def bcast(self, buf, count, dtype, root, stream):
                nccl.calls.append(("bcast", buf, count, dtype, root, stream))

        self.NcclCommunicator = Comm
        self.get_unique_id = lambda: b"uid"


class _FakeComm:
    """A 2-rank communicator as rank 0 sees it (the collectives are recorded, not run)."""

    def Get_rank(self):
        return 0

    def Get_size(self):
        return 2

    def bcast(self, obj, root=0):
        return obj


def test_cupy_arrays_go_through_nccl_with_the_right_arguments(monkeypatch):
    fake = _FakeNccl()
    monkeypatch.setattr(dist, "_nccl_module", lambda: fake)
    monkeypatch.setattr(dist, "_stream_ptr", lambda: 1234)
    monkeypatch.setattr(dist._state, "comm", _FakeComm())
    monkeypatch.setattr(dist._state, "nccl", None)
    host = np.ones(6, np.float32)
    a = _FakeCupyArray(host)
    dist.all_reduce(a, op="mean")
    dist.broadcast(_FakeCupyArray(np.zeros(3, np.int64)), root=1)
    assert fake.calls[0] == ("init", 2, b"uid", 0)
    assert fake.calls[1] == ("allReduce", host.ctypes.data, host.ctypes.data, 6, 7, 0, 1234)
    assert fake.calls[2][0] == "bcast" and fake.calls[2][2:] == (3, 4, 1, 1234)
    np.testing.assert_array_equal(host, 0.5)  # the mean divides the (mocked) sum
    with pytest.raises(TypeError, match="NCCL cannot reduce"):
        dist.all_reduce(_FakeCupyArray(np.ones(2, np.complex64)))


def test_nccl_import_path_exists_in_cupy_when_installed():
    cupy = pytest.importorskip("cupy", reason="CuPy not installed (no GPU here)")
    from cupy.cuda import nccl  # noqa: F401  the module the NCCL path imports

    assert hasattr(nccl, "NcclCommunicator") and hasattr(cupy.cuda, "get_current_stream")


def test_ddp_rejects_bad_arguments():
    from fastconv import nn

    with pytest.raises(TypeError, match="module"):
        dist.DistributedDataParallel(object())
    with pytest.raises(ValueError, match="bucket_cap_mb"):
        dist.DistributedDataParallel(nn.Linear(2, 2), bucket_cap_mb=0)
