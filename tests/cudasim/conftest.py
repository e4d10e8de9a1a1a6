"""Settings for running the numba.cuda kernels under numba's CUDA simulator.

tools/run_tests.sh sets NUMBA_ENABLE_CUDASIM=1 before numba is imported and runs this
directory in its own process. Without the simulator every test here is skipped (with
the reason): on a real GPU the CuPy-based GPU tests cover the device path instead.

The simulator runs every GPU thread as a Python thread, so the tile and block sizes are
shrunk here (the kernels read them from module constants, which the simulator looks up
at run time). Smaller tiles also make the small test shapes cross several tiles with
ragged edges; test_shapes_cross_tile_edges checks that, for every tiled axis of every
kernel, some test shape spans more than one tile and ends in a partial tile. One test
runs the production sizes on a tiny shape.
"""
from __future__ import annotations

import numba
import pytest

SIMULATED = bool(numba.config.ENABLE_CUDASIM)
SKIP_REASON = ("needs the CUDA simulator: run with NUMBA_ENABLE_CUDASIM=1 set before numba is "
               "imported (tools/run_tests.sh does this)")

SIM_SIZES = {
    "conv_direct": {"TX": 4, "TY": 4, "KC": 3, "RED": 8},
    "conv_implicit_gemm": {"T": 4},
    "conv_winograd": {"T": 4},
    "norm": {"RED": 16},
    "_common": {"THREADS_1D": 32},
}


def pytest_collection_modifyitems(config, items):
    if SIMULATED:
        return
    skip = pytest.mark.skip(reason=SKIP_REASON)
    for item in items:
        if "cudasim" in str(item.fspath):
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def sim_sizes(monkeypatch):
    """Small tiles/blocks for every test (restored afterwards)."""
    if not SIMULATED:
        pytest.skip(SKIP_REASON)
    import importlib

    for mod, values in SIM_SIZES.items():
        m = importlib.import_module(f"fastconv.backends.numba_cuda.{mod}")
        for name, value in values.items():
            assert hasattr(m, name), (mod, name)
            monkeypatch.setattr(m, name, value)
    yield
