"""PyTorch twins of fastconv models: the same structure built from ``torch.nn``, loaded with
the same state (torchvision is not needed).

Used by the whole-network benchmark (the PyTorch contender, and the module
``torch.onnx.export`` turns into the ONNX file the ONNX Runtime and OpenVINO contenders run)
and by the tests that check compiled and eager fastconv against PyTorch.

The twin mirrors the fastconv module tree: child names are kept, so the state_dict keys are
the same and ``load_state_dict`` checks that every tensor found its place (``strict=True``).
Supported: ``Sequential`` / ``Chain`` (forward = the chain), ``BasicBlock`` / ``Bottleneck``,
torchvision-layout ``InvertedResidual``, and the leaf layers ``Conv2d``, ``BatchNorm2d``,
``ReLU``, ``ReLU6``, ``MaxPool2d``, ``AvgPool2d``, ``AdaptiveAvgPool2d``, ``Linear``,
``Flatten``, ``Dropout``, ``Identity``. Anything else raises ``TypeError`` naming it.
"""
from __future__ import annotations

import numpy as np

from .. import nn

__all__ = ["torch_twin"]


def _leaf(m, tnn):
    if isinstance(m, nn.Conv2d):
        return tnn.Conv2d(m.in_channels, m.out_channels, m.kernel_size, m.stride, m.padding,
                          m.dilation, m.groups, bias=m.bias is not None)
    if isinstance(m, nn.BatchNorm2d):
        return tnn.BatchNorm2d(m.num_features, m.eps, m.momentum, m.affine,
                               m.track_running_stats)
    if isinstance(m, nn.ReLU):
        return tnn.ReLU()
    relu6 = getattr(nn, "ReLU6", None)
    if relu6 is not None and isinstance(m, relu6):
        return tnn.ReLU6()
    if isinstance(m, nn.MaxPool2d):
        return tnn.MaxPool2d(m.kernel_size, m.stride, m.padding, m.dilation,
                             ceil_mode=m.ceil_mode)
    if isinstance(m, nn.AvgPool2d):
        return tnn.AvgPool2d(m.kernel_size, m.stride, m.padding, m.ceil_mode,
                             m.count_include_pad, m.divisor_override)
    if isinstance(m, nn.AdaptiveAvgPool2d):
        return tnn.AdaptiveAvgPool2d(m.output_size)
    if isinstance(m, nn.Linear):
        return tnn.Linear(m.in_features, m.out_features, bias=m.bias is not None)
    if isinstance(m, nn.Flatten):
        return tnn.Flatten(m.start_dim, m.end_dim)
    if isinstance(m, nn.Dropout):
        return tnn.Dropout(m.p)
    if isinstance(m, nn.Identity):
        return tnn.Identity()
    return None


def _build(m, torch):
    tnn = torch.nn
    from ..nn.blocks import _Residual

    leaf = _leaf(m, tnn)
    if leaf is not None:
        return leaf
    children = {name: _build(c, torch) for name, c in m._modules.items() if c is not None}
    name_of = {id(c): name for name, c in m._modules.items() if c is not None}
    if isinstance(m, nn.Chain) and type(m).forward is nn.Chain.forward:
        order = [name_of[id(c)] for c in m._chain()]
        return _TChain(tnn, children, order)
    if isinstance(m, _Residual) and type(m).forward is _Residual.forward:
        main = [name_of[id(c)] for c in m._main()]
        return _TResidual(tnn, children, main)
    if type(m).__name__ == "InvertedResidual" and hasattr(m, "use_res_connect"):
        return _TInvertedResidual(tnn, children, bool(m.use_res_connect))
    raise TypeError(f"torch_twin: no PyTorch twin for layer {type(m).__name__}")


class _Lazy:
    """Builds the torch.nn.Module subclasses on first use (torch is optional)."""

    classes: dict = {}


def _TChain(tnn, children, order):
    cls = _Lazy.classes.get("chain")
    if cls is None:
        class TChain(tnn.Module):
            def __init__(self, children, order):
                super().__init__()
                for k, v in children.items():
                    self.add_module(k, v)
                self._order = order

            def forward(self, x):
                for k in self._order:
                    x = getattr(self, k)(x)
                return x

        cls = _Lazy.classes["chain"] = TChain
    return cls(children, order)


def _TResidual(tnn, children, main):
    cls = _Lazy.classes.get("residual")
    if cls is None:
        class TResidual(tnn.Module):
            def __init__(self, children, main):
                super().__init__()
                for k, v in children.items():
                    self.add_module(k, v)
                self._main = main
                self._has_downsample = "downsample" in children

            def forward(self, x):
                out = x
                for k in self._main:
                    out = getattr(self, k)(out)
                idt = self.downsample(x) if self._has_downsample else x
                return self.relu_out(out + idt)

        cls = _Lazy.classes["residual"] = TResidual
    return cls(children, main)


def _TInvertedResidual(tnn, children, use_res):
    cls = _Lazy.classes.get("invres")
    if cls is None:
        class TInvertedResidual(tnn.Module):
            def __init__(self, children, use_res):
                super().__init__()
                for k, v in children.items():
                    self.add_module(k, v)
                self.use_res_connect = use_res

            def forward(self, x):
                return x + self.conv(x) if self.use_res_connect else self.conv(x)

        cls = _Lazy.classes["invres"] = TInvertedResidual
    return cls(children, use_res)


def torch_twin(model):
    """The ``torch.nn.Module`` with ``model``'s structure, state, dtype and mode.

    Raises ImportError without PyTorch and TypeError for a layer with no twin.
    """
    import torch

    t = _build(model, torch)
    params = list(model.parameters())
    dtype = params[0].data.dtype if params else np.float32
    t = t.double() if dtype == np.float64 else t.float()
    state = {k: torch.from_numpy(np.array(v)) for k, v in model.state_dict().items()}
    t.load_state_dict(state, strict=True)
    return t.train(model.training)
