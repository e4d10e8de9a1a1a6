"""The ``cuda`` backend (CUDA C++ through CuPy). Not yet implemented."""


def availability():
    return False, "the CUDA kernels are not built yet"
