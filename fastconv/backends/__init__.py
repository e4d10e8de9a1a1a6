"""Backend implementations.

Every backend module implements (a subset of) the same op table on already-validated
arguments: 4-D C-contiguous arrays of one float dtype plus a spec from
:mod:`fastconv._args`. Ops return new arrays; none of them validate. The names are::

    conv2d_forward(x, w, b, spec, algo)          conv2d_backward_data(gy, w, spec, algo)
    conv2d_backward_weight(gy, x, spec, algo)
    max_pool2d(x, spec, want_indices) -> (y, idx|None)   max_pool2d_backward(gy, idx, x_shape)
    avg_pool2d(x, spec)                          avg_pool2d_backward(gy, spec)
    adaptive_avg_pool2d(x, out_hw)               adaptive_avg_pool2d_backward(gy, x_shape)
    batch_norm_train(x, w, b, eps) -> (y, mean, biased_var)
    batch_norm_eval(x, mean, var, w, b, eps)
    batch_norm_backward(gy, x, w, mean, invstd, training) -> (gx, gw, gb)
    relu(x)  relu_backward(gy, y)  linear(x, w, b)  linear_backward(gy, x, w)
    cross_entropy(logits, target) -> float       cross_entropy_backward(logits, target)

A module lists the convolution algorithms it implements per conv op in ``ALGOS`` and,
optionally, the dtypes it serves in ``DTYPES``. The dispatcher (fastconv._dispatch)
is the only place that chooses a backend or an algorithm.
"""

import sys as _sys
import types as _types


class _CallableModule(_types.ModuleType):
    """Importing ``fastconv.backends.<x>`` rebinds the attribute ``fastconv.backends`` to this
    package, shadowing the public function ``fastconv.backends()``; calling the package
    therefore does what the function does."""

    def __call__(self):
        from .._dispatch import backends

        return backends()


_sys.modules[__name__].__class__ = _CallableModule
