"""Native kernels for this op family.

Until their C++ kernels land these delegate to the reference implementation.
"""
from ..reference import *  # noqa: F401,F403
