"""Benchmark: fastconv.ndimage / fastconv.signal against scipy.ndimage and OpenCV.

The OpenCV calls a NumPy user switches to for speed, each beside the fastconv and SciPy
calls that give the same answer with the same border:

    filter2D      cv2.filter2D(BORDER_REFLECT)    fastconv.ndimage.correlate(mode="reflect")
                                                  and fastconv.signal.correlate2d("same", "symm")
    GaussianBlur  cv2.GaussianBlur(BORDER_REFLECT_101), ksize = 2 * int(4 * sigma + 0.5) + 1
                                                  fastconv.ndimage.gaussian_filter(mode="mirror")
    blur          cv2.blur(BORDER_REFLECT)        fastconv.ndimage.uniform_filter(mode="reflect")
    Sobel         cv2.Sobel(dx=1, BORDER_REFLECT) fastconv.ndimage.sobel(axis=1, mode="reflect")

Every case is validated against scipy.ndimage before it is timed. Timing follows
DESIGN.md: all contenders in one process, interleaved rounds, before each contender's
block a 0.3 s pause and one untimed call, then the median of the timed calls. OpenCV is
optional (opencv-python-headless); without it its columns are empty. Run under the
benchmark lock:

    flock /tmp/fastconv-bench.lock env PYTHONPATH=. python3 bench/ndimage.py --sizes 512 --threads 2
"""
from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

try:
    import _common  # noqa: F401  (run as python bench/ndimage.py)

    _common.use_source_tree()
except ImportError:
    pass


def _block(fn, budget_s=0.15, max_calls=20):
    time.sleep(0.3)  # let the previous contender's spinning threads go idle
    fn()  # untimed: wakes this contender's thread pool
    times = []
    t_end = time.perf_counter() + budget_s
    while len(times) < max_calls:
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
        if time.perf_counter() > t_end:
            break
    return times


def _cases(size, rng, cv2):
    import scipy.ndimage as ndi

    import fastconv.ndimage as fnd
    import fastconv.signal as fs

    x = rng.standard_normal((size, size)).astype(np.float32)
    cases = []
    for k in (3, 5, 11, 31):
        w = rng.standard_normal((k, k)).astype(np.float32)
        c = {"name": f"filter2D k={k}", "ref": lambda w=w: ndi.correlate(x, w, mode="reflect"),
             "fastconv.ndimage": lambda w=w: fnd.correlate(x, w, mode="reflect"),
             "fastconv.signal": lambda w=w: fs.correlate2d(x, w, "same", "symm")}
        if cv2 is not None:
            c["cv2"] = lambda w=w: cv2.filter2D(x, -1, w, borderType=cv2.BORDER_REFLECT)
        cases.append(c)
    for sigma in (1.0, 2.0, 5.0):
        ks = 2 * int(4.0 * sigma + 0.5) + 1
        c = {"name": f"GaussianBlur s={sigma:g} k={ks}",
             "ref": lambda s=sigma: ndi.gaussian_filter(x, s, mode="mirror"),
             "fastconv.ndimage": lambda s=sigma: fnd.gaussian_filter(x, s, mode="mirror")}
        if cv2 is not None:
            c["cv2"] = lambda s=sigma, ks=ks: cv2.GaussianBlur(
                x, (ks, ks), s, sigmaY=s, borderType=cv2.BORDER_REFLECT_101)
        cases.append(c)
    for k in (3, 5, 15):
        c = {"name": f"blur k={k}", "ref": lambda k=k: ndi.uniform_filter(x, k, mode="reflect"),
             "fastconv.ndimage": lambda k=k: fnd.uniform_filter(x, k, mode="reflect")}
        if cv2 is not None:
            c["cv2"] = lambda k=k: cv2.blur(x, (k, k), borderType=cv2.BORDER_REFLECT)
        cases.append(c)
    c = {"name": "Sobel dx 3x3", "ref": lambda: ndi.sobel(x, 1, mode="reflect"),
         "fastconv.ndimage": lambda: fnd.sobel(x, 1, mode="reflect")}
    if cv2 is not None:
        c["cv2"] = lambda: cv2.Sobel(x, cv2.CV_32F, 1, 0, ksize=3, borderType=cv2.BORDER_REFLECT)
    cases.append(c)
    return cases


def run(sizes=(512, 2048), threads=2, rounds=3, only=None):
    import fastconv as fc

    try:
        import cv2
    except ImportError:
        cv2 = None
    fc.set_num_threads(threads)
    if cv2 is not None:
        cv2.setNumThreads(threads)
    rng = np.random.default_rng(0)
    rows = []
    for size in sizes:
        for case in _cases(size, rng, cv2):
            if only and not any(o in case["name"] for o in only):
                continue
            expected = case["ref"]().astype(np.float64)
            scale = max(1.0, float(np.abs(expected).max()))
            names = [n for n in ("fastconv.ndimage", "fastconv.signal", "cv2") if n in case]
            for n in names:  # validate before timing
                err = float(np.abs(case[n]().astype(np.float64) - expected).max()) / scale
                assert err < 2e-5, (size, case["name"], n, err)
            times = {n: [] for n in names + ["scipy.ndimage"]}
            for r in range(rounds):
                for n in names:
                    times[n] += _block(case[n])
                if r == 0 or statistics.median(times["scipy.ndimage"]) < 0.5:
                    times["scipy.ndimage"] += _block(case["ref"], budget_s=0.3, max_calls=3)
            med = {n: statistics.median(t) * 1e3 for n, t in times.items()}
            rows.append(dict(size=size, case=case["name"], ms=med))
    return rows


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default="512,2048")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--only", default="", help="comma-separated substrings of case names")
    args = p.parse_args(argv)
    rows = run(tuple(int(s) for s in args.sizes.split(",")), args.threads, args.rounds,
               [o for o in args.only.split(",") if o])
    from fastconv import _native

    print(f"float32, {args.threads} threads (fastconv and OpenCV; SciPy is single-threaded), "
          f"ISA {_native.active_isa()}; median ms; ratio = other's time / fastconv's")
    print(f"{'size':>5} {'case':<24} {'fc.ndimage':>10} {'fc.signal':>10} {'cv2':>9} "
          f"{'scipy.ndi':>10} {'x cv2':>7} {'x scipy':>8}")
    for r in rows:
        ms = r["ms"]
        fcm = ms["fastconv.ndimage"]
        sig = f"{ms['fastconv.signal']:10.3f}" if "fastconv.signal" in ms else f"{'':>10}"
        cv = f"{ms['cv2']:9.3f}" if "cv2" in ms else f"{'':>9}"
        xcv = f"{ms['cv2'] / fcm:7.2f}" if "cv2" in ms else f"{'':>7}"
        print(f"{r['size']:>5} {r['case']:<24} {fcm:10.3f} {sig} {cv} "
              f"{ms['scipy.ndimage']:10.2f} {xcv} {ms['scipy.ndimage'] / fcm:8.1f}")
        if "fastconv.signal" in ms and "cv2" in ms:
            print(f"{'':>5} {'  (signal.correlate2d)':<24} {'':>10} {'':>10} {'':>9} {'':>10} "
                  f"{ms['cv2'] / ms['fastconv.signal']:7.2f} "
                  f"{ms['scipy.ndimage'] / ms['fastconv.signal']:8.1f}")


if __name__ == "__main__":
    main()
