"""The ``numba_cuda`` backend (numba.cuda kernels). Not yet implemented."""


def availability():
    return False, "the numba.cuda kernels are not built yet"
