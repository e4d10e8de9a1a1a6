"""The ``numba`` backend (Numba-compiled CPU kernels). Not yet implemented."""


def availability():
    return False, "the numba CPU kernels are not built yet"
