"""CUDA backend benchmark: ResNet-18 convolution layers (batch 32, float32) against
torch.nn.functional.conv2d (cuDNN), our SGEMM against cupy.matmul, and pooling / batch-norm
against torch, all measured side by side in one process with CUDA events.

    python bench/cuda_conv.py [--batch 32] [--reps 20] [--layers conv1,layer1 ...]

Every result is checked against torch (or cupy.matmul) before it is timed. Prints one table:
ms, GFLOP/s, and torch_ms / ours_ms (>= 1 means we are faster). Exits 0 with a message when
CuPy, a GPU or PyTorch with CUDA is missing.
"""
from __future__ import annotations

import argparse
import sys

import numpy as np

# (name, C, K, H=W, R, stride, padding) at batch N: the distinct ResNet-18 conv shapes.
RESNET18 = [
    ("conv1", 3, 64, 224, 7, 2, 3),
    ("layer1", 64, 64, 56, 3, 1, 1),
    ("layer2.down", 64, 128, 56, 3, 2, 1),
    ("layer2", 128, 128, 28, 3, 1, 1),
    ("layer2.ds1x1", 64, 128, 56, 1, 2, 0),
    ("layer3.down", 128, 256, 28, 3, 2, 1),
    ("layer3", 256, 256, 14, 3, 1, 1),
    ("layer3.ds1x1", 128, 256, 28, 1, 2, 0),
    ("layer4.down", 256, 512, 14, 3, 2, 1),
    ("layer4", 512, 512, 7, 3, 1, 1),
    ("layer4.ds1x1", 256, 512, 14, 1, 2, 0),
]


def _setup():
    """(cupy, torch) or a reason why the benchmark cannot run."""
    try:
        import cupy
    except Exception as e:
        return None, f"CuPy is not importable ({e})"
    from fastconv.backends import cuda

    ok, why = cuda.availability()
    if not ok:
        return None, why
    try:
        import torch
    except ImportError:
        return None, "PyTorch is not installed (the cuDNN baseline)"
    if not torch.cuda.is_available():
        return None, "PyTorch has no CUDA device (the cuDNN baseline)"
    return (cupy, torch), ""


def _time_cupy(cupy, fn, reps):
    for _ in range(3):
        fn()
    start, end = cupy.cuda.Event(), cupy.cuda.Event()
    times = []
    for _ in range(reps):
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(cupy.cuda.get_elapsed_time(start, end))
    return float(np.median(times))


def _time_torch(torch, fn, reps):
    for _ in range(3):
        fn()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    times = []
    for _ in range(reps):
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return float(np.median(times))


def _close(a, b, tol):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b))) <= tol * max(1.0, float(np.max(np.abs(b))))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--layers", default="", help="comma-separated layer names (default: all)")
    args = ap.parse_args(argv)
    libs, why = _setup()
    if libs is None:
        print(f"bench/cuda_conv.py: skipped: {why}", file=sys.stderr)
        return 0
    cupy, torch = libs
    import torch.nn.functional as F

    import fastconv
    from fastconv.backends.cuda import _runtime as rt

    torch.backends.cudnn.benchmark = True
    # Full float32 on both sides: cuDNN would otherwise use TF32 tensor cores on Ampere+,
    # a different (less precise) computation from ours.
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    rows = []
    want = set(filter(None, args.layers.split(",")))
    rng = np.random.default_rng(0)
    N = args.batch
    for name, C, K, HW, R, st, pad in RESNET18:
        if want and name not in want:
            continue
        x = rng.standard_normal((N, C, HW, HW), dtype=np.float32)
        w = (rng.standard_normal((K, C, R, R), dtype=np.float32) / np.sqrt(C * R * R))
        xd, wd = cupy.asarray(x), cupy.asarray(w)
        xt, wt = torch.from_numpy(x).cuda(), torch.from_numpy(w).cuda()
        ref = F.conv2d(xt, wt, stride=st, padding=pad)
        t_ms = _time_torch(torch, lambda: F.conv2d(xt, wt, stride=st, padding=pad), args.reps)
        flops = 2 * N * K * ref.shape[2] * ref.shape[3] * C * R * R
        algos = ["direct", "implicit_gemm", "im2col"]
        if R == 3 and st == 1:
            algos += ["winograd_f23", "winograd_f43"]
        for algo in algos:
            y = fastconv.conv2d(xd, wd, stride=st, padding=pad, algo=algo)
            tol = 1e-3 if algo.startswith("winograd") else 1e-4
            if not _close(cupy.asnumpy(y), ref.cpu().numpy(), tol):
                rows.append((name, algo, float("nan"), 0.0, t_ms, 0.0, "WRONG RESULT"))
                continue
            ms = _time_cupy(cupy, lambda: fastconv.conv2d(xd, wd, stride=st, padding=pad,
                                                          algo=algo), args.reps)
            rows.append((name, algo, ms, flops / ms / 1e6, t_ms, t_ms / ms, ""))
    # Our SGEMM (as im2col uses it) against cupy.matmul (cuBLAS).
    for M, Nn, Kd in ((64, 100352, 576), (256, 6272, 2304), (512, 1568, 4608)):
        a = cupy.asarray(rng.standard_normal((M, Kd), dtype=np.float32))
        b = cupy.asarray(rng.standard_normal((Kd, Nn), dtype=np.float32))
        c = cupy.empty((M, Nn), cupy.float32)
        run = lambda: rt.gemm(a, b, c, M=M, N=Nn, Kd=Kd, lda=Kd, ldb=Nn, ldc=Nn)  # noqa: E731
        run()
        ok = _close(cupy.asnumpy(c), cupy.asnumpy(cupy.matmul(a, b)), 1e-4 * np.sqrt(Kd))
        ms = _time_cupy(cupy, run, args.reps)
        ref_ms = _time_cupy(cupy, lambda: cupy.matmul(a, b), args.reps)
        rows.append((f"gemm {M}x{Nn}x{Kd}", "sgemm vs cupy.matmul", ms,
                     2 * M * Nn * Kd / ms / 1e6, ref_ms, ref_ms / ms, "" if ok else "WRONG"))
    # Pooling and batch norm on ResNet-18's stem output.
    x = rng.standard_normal((N, 64, 112, 112), dtype=np.float32)
    xd, xt = cupy.asarray(x), torch.from_numpy(x).cuda()
    rm, rv = cupy.zeros(64, cupy.float32), cupy.ones(64, cupy.float32)
    rmt, rvt = torch.zeros(64, device="cuda"), torch.ones(64, device="cuda")
    cases = [
        ("max_pool 3x3 s2 p1", lambda: fastconv.max_pool2d(xd, 3, 2, 1),
         lambda: F.max_pool2d(xt, 3, 2, 1)),
        ("avg_pool 2x2", lambda: fastconv.avg_pool2d(xd, 2), lambda: F.avg_pool2d(xt, 2)),
        ("adaptive_avg 1x1", lambda: fastconv.adaptive_avg_pool2d(xd, 1),
         lambda: F.adaptive_avg_pool2d(xt, 1)),
        ("batch_norm train", lambda: fastconv.batch_norm(xd, rm, rv, training=True),
         lambda: F.batch_norm(xt, rmt, rvt, training=True)),
        ("batch_norm eval", lambda: fastconv.batch_norm(xd, rm, rv, training=False),
         lambda: F.batch_norm(xt, rmt, rvt, training=False)),
    ]
    for name, ours, theirs in cases:
        ok = _close(cupy.asnumpy(ours()), theirs().cpu().numpy(), 1e-4)
        ms, t_ms = _time_cupy(cupy, ours, args.reps), _time_torch(torch, theirs, args.reps)
        rows.append((name, "", ms, float("nan"), t_ms, t_ms / ms, "" if ok else "WRONG"))

    dev = cupy.cuda.runtime.getDeviceProperties(cupy.cuda.runtime.getDevice())["name"]
    print(f"device: {dev.decode() if isinstance(dev, bytes) else dev}; batch {N}; "
          f"median of {args.reps}; ratio = baseline_ms / ours_ms")
    print(f"{'layer':<22}{'algo':<22}{'ms':>9}{'GFLOP/s':>10}{'base ms':>9}{'ratio':>7}")
    for name, algo, ms, gf, t_ms, ratio, note in rows:
        print(f"{name:<22}{algo:<22}{ms:>9.3f}{gf:>10.0f}{t_ms:>9.3f}{ratio:>7.2f} {note}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
