"""Extreme arguments (strides up to 2^40, padding and dilation in the thousands, windows
of 10^9 taps), each op in a child process with a memory cap and a time limit: every case
must either agree with the oracle or raise ValueError/TypeError/MemoryError -- never
crash, hang or allocate without bound. A crashing batch is re-run case by case so the
failure names its case."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from conftest import FASTCONV_PATH, requires_torch

_CHILD = textwrap.dedent(r"""
    import json, os, resource, sys
    import numpy as np
    if not os.environ.get("FASTCONV_ASAN"):  # ASan's shadow memory cannot live under a cap
        resource.setrlimit(resource.RLIMIT_AS, (6 << 30, 6 << 30))
    import fastconv as fc
    from fastconv import _dispatch
    from fastconv._args import conv_spec
    import torch, torch.nn.functional as F
    torch.set_num_threads(1)
    OK = (ValueError, TypeError, MemoryError)
    out = []
    for case in json.loads(sys.argv[1]):
        kind, a = case["kind"], case["args"]
        r = np.random.default_rng(case["seed"])
        x = r.standard_normal(a["x"]).astype(np.float32)
        try:
            if kind == "conv":
                w = r.standard_normal(a["w"]).astype(np.float32)
                kw = dict(stride=a["stride"], padding=a["padding"], dilation=a["dilation"])
                try:
                    ref = F.conv2d(torch.from_numpy(x), torch.from_numpy(w), **kw).numpy()
                except RuntimeError:
                    ref = None
                spec = None if ref is None else conv_spec(x.shape, w.shape, **kw)
                for backend in ("native", "numba"):
                    mod = _dispatch.load_backend(backend)
                    for algo in _dispatch.implemented_algos(mod, "conv2d_forward"):
                        if spec is not None and _dispatch.backend_obstacle(
                                mod, algo, "conv2d_forward", spec) is not None:
                            continue
                        try:
                            y = fc.conv2d(x, w, **kw, algo=algo, backend=backend)
                        except OK:
                            if ref is None:
                                continue
                            raise
                        assert ref is not None, "accepted what torch refuses"
                        np.testing.assert_allclose(y, ref, rtol=1e-4, atol=1e-4)
                        gy = np.ones_like(y)
                        gx, gw, _ = fc.conv2d_backward(gy, x, w, **kw, algo=algo,
                                                       backend=backend)
                        tx = torch.from_numpy(x).requires_grad_()
                        tw = torch.from_numpy(w).requires_grad_()
                        F.conv2d(tx, tw, **kw).backward(torch.from_numpy(gy))
                        np.testing.assert_allclose(gx, tx.grad.numpy(), rtol=1e-4, atol=1e-4)
                        np.testing.assert_allclose(gw, tw.grad.numpy(), rtol=1e-4, atol=1e-3)
            else:
                kw = dict(kernel_size=a["k"], stride=a["stride"], padding=a["padding"],
                          ceil_mode=a["ceil"])
                try:
                    ref = F.max_pool2d(torch.from_numpy(x), **kw).numpy()
                except RuntimeError:
                    ref = None
                try:
                    y = fc.max_pool2d(x, **kw)
                    assert ref is not None, "accepted what torch refuses"
                    np.testing.assert_array_equal(y, ref)
                except OK:
                    if ref is not None:
                        raise
            out.append("ok")
        except AssertionError as e:
            out.append(f"wrong: {str(e)[:300]}")
        except OK as e:
            out.append(f"refused valid input: {type(e).__name__}: {str(e)[:200]}")
    print(json.dumps(out))
""")

_BIG = [1, 2, 7, 1000, 2**31 - 1, 2**32, 2**40]


def _cases(n=60, seed=0):
    r = np.random.default_rng(seed)
    cases = []
    for i in range(n):
        x = [int(r.integers(1, 3)), int(r.integers(1, 4)), int(r.integers(1, 7)),
             int(r.integers(1, 7))]
        if i % 3 == 2:
            k = int(r.choice([1, 3, 1_000, 1_200_000_001]))
            pad = int(r.integers(0, k // 2 + 1)) if k < 10 else k // 2
            cases.append(dict(kind="pool", seed=i, args=dict(
                x=x, k=[int(r.integers(1, 3)), k], stride=int(r.choice(_BIG)),
                padding=[0, pad], ceil=bool(r.integers(0, 2)))))
        else:
            R = int(r.integers(1, 4))
            stride = int(r.choice(_BIG))
            pad = int(r.choice([0, 1, 5, 1000, 3000]))
            dil = int(r.choice([1, 2, 1000, 3000]))
            side = (max(x[2:]) + 2 * pad - dil * (R - 1) - 1) // stride + 1
            if side > 64:  # a huge but valid output only measures speed: keep it small
                pad = dil * (R - 1) // 2
            cases.append(dict(kind="conv", seed=i, args=dict(
                x=x, w=[int(r.integers(1, 4)), x[1], R, R], stride=stride, padding=pad,
                dilation=dil)))
    return cases


def _run(cases, timeout):
    env = {**os.environ, "FASTCONV_NUM_THREADS": "2"}
    return subprocess.run([sys.executable, "-c", _CHILD, json.dumps(cases)], env=env,
                          cwd=FASTCONV_PATH,
                          capture_output=True, text=True, timeout=timeout)


@requires_torch
@pytest.mark.parametrize("seed", [0, 1])
def test_extreme_arguments_never_crash_hang_or_lie(seed):
    cases = _cases(seed=seed)
    proc = _run(cases, timeout=300)
    if proc.returncode != 0:  # find the case that took the process down
        for c in cases:
            try:
                one = _run([c], timeout=60)
            except subprocess.TimeoutExpired:
                pytest.fail(f"hangs: {c}")
            assert one.returncode == 0, f"crashes ({one.returncode}): {c}\n{one.stderr[-800:]}"
        pytest.fail(f"the batch crashed but no single case does:\n{proc.stderr[-800:]}")
    results = json.loads(proc.stdout.strip().splitlines()[-1])
    bad = [(c, r) for c, r in zip(cases, results) if r != "ok"]
    assert not bad, bad[:5]
