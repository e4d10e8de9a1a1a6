"""Optimisers (SGD, Adam) and learning-rate schedules (StepLR, CosineAnnealingLR), with the
update rules of ``torch.optim`` so results match PyTorch step for step.

Updates are in place on ``Parameter.data`` (NumPy or CuPy), with no temporaries beyond one
scratch array per step. A parameter whose ``grad`` is None or whose ``requires_grad`` is
False is skipped. ``state_dict()`` holds only arrays, numbers and strings (no pickle
needed), so :mod:`fastconv.io` can store it in safetensors or ``.npz`` files.
"""
from __future__ import annotations

import math

import numpy as np

from ._args import is_cupy_array
from .nn.module import Parameter, array_lib

__all__ = ["Optimizer", "SGD", "Adam", "StepLR", "CosineAnnealingLR"]


def _number(v, name, who, minimum=0.0):
    if isinstance(v, bool) or not isinstance(v, (int, float, np.floating, np.integer)):
        raise TypeError(f"{who}: {name} must be a number, got {v!r}")
    v = float(v)
    if not math.isfinite(v) or v < minimum:
        raise ValueError(f"{who}: {name} must be a finite number >= {minimum}, got {v}")
    return v


def _array_like(v, like):
    """A copy of ``v`` with the dtype and array library of ``like``."""
    if is_cupy_array(v):
        v = v.get()
    arr = np.array(v, dtype=like.dtype)
    xp = array_lib(like)
    return arr if xp is np else xp.asarray(arr)


class Optimizer:
    """Base class: parameter groups (``param_groups``, each a dict with ``params`` and the
    hyper-parameters) and per-parameter ``state``."""

    _hyper: tuple = ()

    def __init__(self, params, defaults: dict):
        who = type(self).__name__
        if isinstance(params, Parameter):
            raise TypeError(f"{who}: params must be an iterable of Parameters (or of dicts), "
                            "got a single Parameter")
        params = list(params)
        if not params:
            raise ValueError(f"{who}: got an empty parameter list")
        groups = params if isinstance(params[0], dict) else [{"params": params}]
        self.defaults = dict(defaults)
        self.param_groups = []
        seen = set()
        for gi, g in enumerate(groups):
            if not isinstance(g, dict) or "params" not in g:
                raise TypeError(f"{who}: parameter group {gi} must be a dict with 'params'")
            unknown = set(g) - {"params", *defaults}
            if unknown:
                raise ValueError(f"{who}: parameter group {gi} has unknown keys "
                                 f"{sorted(unknown)}")
            ps = list(g["params"])
            for p in ps:
                if not isinstance(p, Parameter):
                    raise TypeError(f"{who}: expected Parameters, got {type(p).__name__}")
                if id(p) in seen:
                    raise ValueError(f"{who}: a parameter appears in more than one group")
                seen.add(id(p))
            group = {**self.defaults, **{k: v for k, v in g.items() if k != "params"}}
            self._check(group)
            group["params"] = ps
            group.setdefault("initial_lr", group["lr"])
            self.param_groups.append(group)
        self.state: dict[int, dict] = {}

    def _check(self, group):
        pass

    # Names of the per-parameter state entries, and which of them are arrays.
    _state_names: tuple = ()
    _array_state: tuple = ()
    _complete_state = False  # True: a parameter's state has all of _state_names or none

    def _check_state(self, name, v, i):
        """A checked state entry (arrays were shape-checked already): array entries must be
        arrays, scalar ones are checked by the subclass."""
        who = type(self).__name__
        if name in self._array_state and not hasattr(v, "shape"):
            raise ValueError(f"{who}.load_state_dict: state {name!r} of parameter {i} must be "
                             f"an array, got {type(v).__name__}")
        if name in self._array_state and tuple(v.shape) == ():
            raise ValueError(f"{who}.load_state_dict: state {name!r} of parameter {i} must be "
                             "an array of the parameter's shape, got a scalar")
        return v

    def _params(self):
        for g in self.param_groups:
            for p in g["params"]:
                yield g, p

    def zero_grad(self) -> None:
        """Sets every parameter's ``grad`` to None."""
        for _, p in self._params():
            p.grad = None

    def step(self) -> None:
        """One update of every parameter that has a gradient."""
        for i, (group, p) in enumerate(self._params()):
            if p.grad is None or not p.requires_grad:
                continue
            self._update(group, p, self.state.setdefault(i, {}))

    def _update(self, group, p, state):  # pragma: no cover - abstract
        raise NotImplementedError

    # ---------------------------------------------------------------- checkpoints

    def state_dict(self) -> dict:
        """``{"state": {index: {name: array or number}}, "param_groups": [hyper-parameters
        with "params" as parameter indices]}``; indices count parameters across groups in
        order, as in PyTorch."""
        groups, start = [], 0
        for g in self.param_groups:
            d = {k: v for k, v in g.items() if k != "params"}
            d["params"] = list(range(start, start + len(g["params"])))
            start += len(g["params"])
            groups.append(d)
        return {"state": {i: dict(s) for i, s in self.state.items()}, "param_groups": groups}

    def load_state_dict(self, state_dict: dict) -> None:
        """Restores what :meth:`state_dict` returned. Everything is checked (group sizes,
        buffer shapes) before anything changes; a mismatch raises ``ValueError``."""
        self._commit(self._stage(state_dict))

    def _stage(self, state_dict):
        """The checking half of :meth:`load_state_dict`; changes nothing."""
        who = type(self).__name__
        try:
            groups, state = state_dict["param_groups"], state_dict["state"]
        except (KeyError, TypeError):
            raise ValueError(f"{who}.load_state_dict: expected a dict with 'state' and "
                             "'param_groups'") from None
        if len(groups) != len(self.param_groups):
            raise ValueError(f"{who}.load_state_dict: {len(groups)} parameter groups in the "
                             f"state, the optimizer has {len(self.param_groups)}")
        params = [p for _, p in self._params()]
        hypers = []
        for g_new, g_old in zip(groups, self.param_groups):
            if len(g_new["params"]) != len(g_old["params"]):
                raise ValueError(f"{who}.load_state_dict: a parameter group has "
                                 f"{len(g_new['params'])} parameters in the state, "
                                 f"{len(g_old['params'])} in the optimizer")
            hyper = {**g_old, **{k: v for k, v in g_new.items() if k != "params"}}
            self._check(hyper)
            del hyper["params"]
            hypers.append(hyper)
        new_state = {}
        for key, s in state.items():
            i = int(key)
            if not 0 <= i < len(params):
                raise ValueError(f"{who}.load_state_dict: state for parameter {i}, the "
                                 f"optimizer has {len(params)}")
            p, entry = params[i], {}
            if not isinstance(s, dict):
                raise ValueError(f"{who}.load_state_dict: state of parameter {i} must be a "
                                 f"dict, got {type(s).__name__}")
            unknown = set(s) - set(self._state_names)
            if unknown:
                raise ValueError(f"{who}.load_state_dict: unknown state {sorted(unknown)} for "
                                 f"parameter {i}")
            for name, v in s.items():
                if hasattr(v, "shape") and tuple(v.shape) != ():
                    if tuple(v.shape) != p.shape:
                        raise ValueError(f"{who}.load_state_dict: state {name!r} of parameter "
                                         f"{i} has shape {tuple(v.shape)}, the parameter "
                                         f"{p.shape}")
                    v = _array_like(v, p.data)
                elif hasattr(v, "shape"):
                    v = v.item()
                entry[name] = self._check_state(name, v, i)
            if entry and self._complete_state and set(entry) != set(self._state_names):
                raise ValueError(f"{who}.load_state_dict: state of parameter {i} has "
                                 f"{sorted(entry)}, expected all of "
                                 f"{list(self._state_names)}")
            new_state[i] = entry
        return hypers, new_state

    def _commit(self, staged) -> None:
        hypers, new_state = staged
        for hyper, group in zip(hypers, self.param_groups):
            group.update(hyper)
        self.state = new_state


class SGD(Optimizer):
    """Stochastic gradient descent with optional momentum, dampening, weight decay (L2,
    added to the gradient) and Nesterov momentum, as ``torch.optim.SGD``.

    ``params`` is an iterable of Parameters or, as in torch, a list of parameter groups
    (dicts with ``"params"`` and any of the hyper-parameters, e.g. ``"lr"``); the
    constructor's arguments are the defaults of every group.
    """

    _state_names = ("momentum_buffer",)
    _array_state = ("momentum_buffer",)

    def __init__(self, params, lr, momentum=0.0, dampening=0.0, weight_decay=0.0,
                 nesterov=False):
        super().__init__(params, dict(lr=lr, momentum=momentum, dampening=dampening,
                                      weight_decay=weight_decay, nesterov=bool(nesterov)))

    def _check(self, g):
        for k in ("lr", "momentum", "dampening", "weight_decay"):
            g[k] = _number(g[k], k, "SGD")
        if g["nesterov"] and (g["momentum"] <= 0 or g["dampening"] != 0):
            raise ValueError("SGD: nesterov momentum requires momentum > 0 and dampening 0")

    def _update(self, g, p, state):
        d = p.grad
        if g["weight_decay"]:
            d = d + g["weight_decay"] * p.data
        mom = g["momentum"]
        if mom:
            buf = state.get("momentum_buffer")
            if buf is None:
                buf = state["momentum_buffer"] = d.astype(p.data.dtype, copy=True)
            else:
                buf *= mom
                buf += (1 - g["dampening"]) * d
            d = d + mom * buf if g["nesterov"] else buf
        p.data -= p.data.dtype.type(g["lr"]) * d


class Adam(Optimizer):
    """Adam (Kingma & Ba) with bias correction and optional L2 weight decay added to the
    gradient, as ``torch.optim.Adam``. ``params`` may be a list of parameter groups, as
    for :class:`SGD`."""

    _state_names = ("step", "exp_avg", "exp_avg_sq")
    _array_state = ("exp_avg", "exp_avg_sq")
    _complete_state = True

    def _check_state(self, name, v, i):
        v = super()._check_state(name, v, i)
        if name == "step":
            # torch stores step as a float tensor; whole non-negative counts only.
            if isinstance(v, float) and v.is_integer():
                v = int(v)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 0:
                raise ValueError(f"Adam.load_state_dict: state 'step' of parameter {i} must "
                                 f"be a non-negative int, got {v!r}")
            v = int(v)
        return v

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0):
        super().__init__(params, dict(lr=lr, betas=tuple(betas), eps=eps,
                                      weight_decay=weight_decay))

    def _check(self, g):
        g["lr"] = _number(g["lr"], "lr", "Adam")
        g["eps"] = _number(g["eps"], "eps", "Adam")
        g["weight_decay"] = _number(g["weight_decay"], "weight_decay", "Adam")
        b = g["betas"]
        if len(b) != 2 or not all(0.0 <= float(x) < 1.0 for x in b):
            raise ValueError(f"Adam: betas must be two numbers in [0, 1), got {b!r}")
        g["betas"] = (float(b[0]), float(b[1]))

    def _update(self, g, p, state):
        xp = array_lib(p.data)
        grad = p.grad
        if g["weight_decay"]:
            grad = grad + g["weight_decay"] * p.data
        if "step" not in state:
            state["step"] = 0
            state["exp_avg"] = xp.zeros_like(p.data)
            state["exp_avg_sq"] = xp.zeros_like(p.data)
        state["step"] += 1
        t = state["step"]
        b1, b2 = g["betas"]
        m, v = state["exp_avg"], state["exp_avg_sq"]
        m *= b1
        m += (1 - b1) * grad
        v *= b2
        v += (1 - b2) * (grad * grad)
        bc1 = 1 - b1 ** t
        bc2_sqrt = math.sqrt(1 - b2 ** t)
        denom = xp.sqrt(v)
        denom /= bc2_sqrt
        denom += g["eps"]
        # Same association as PyTorch: p -= (lr / bc1) * (m / denom).
        ratio = xp.divide(m, denom, out=denom)
        ratio *= g["lr"] / bc1
        p.data -= ratio


class _Schedule:
    """Base of the epoch-wise learning-rate schedules: ``step()`` once per epoch after
    training; the rate is a closed form of the epoch count."""

    def __init__(self, optimizer: Optimizer):
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"{type(self).__name__}: optimizer must be a fastconv.optim "
                            f"Optimizer, got {type(optimizer).__name__}")
        self.optimizer = optimizer
        self.base_lrs = [g["initial_lr"] for g in optimizer.param_groups]
        self.last_epoch = 0
        self._apply()

    def _lr(self, base, epoch):  # pragma: no cover - abstract
        raise NotImplementedError

    def _apply(self):
        for g, base in zip(self.optimizer.param_groups, self.base_lrs):
            g["lr"] = self._lr(base, self.last_epoch)

    def step(self) -> None:
        self.last_epoch += 1
        self._apply()

    def get_last_lr(self) -> list[float]:
        return [g["lr"] for g in self.optimizer.param_groups]

    def state_dict(self) -> dict:
        return {"last_epoch": self.last_epoch, "base_lrs": list(self.base_lrs)}

    def load_state_dict(self, state: dict) -> None:
        self.last_epoch = int(state["last_epoch"])
        self.base_lrs = [float(b) for b in state["base_lrs"]]
        self._apply()


class StepLR(_Schedule):
    """lr = base_lr * gamma ** (epoch // step_size)."""

    def __init__(self, optimizer, step_size: int, gamma: float = 0.1):
        if isinstance(step_size, bool) or not isinstance(step_size, int) or step_size < 1:
            raise ValueError(f"StepLR: step_size must be a positive int, got {step_size!r}")
        self.step_size, self.gamma = step_size, _number(gamma, "gamma", "StepLR")
        super().__init__(optimizer)

    def _lr(self, base, epoch):
        return base * self.gamma ** (epoch // self.step_size)


class CosineAnnealingLR(_Schedule):
    """lr = eta_min + (base_lr - eta_min) * (1 + cos(pi * epoch / T_max)) / 2."""

    def __init__(self, optimizer, T_max: int, eta_min: float = 0.0):
        if isinstance(T_max, bool) or not isinstance(T_max, int) or T_max < 1:
            raise ValueError(f"CosineAnnealingLR: T_max must be a positive int, got {T_max!r}")
        self.T_max, self.eta_min = T_max, _number(eta_min, "eta_min", "CosineAnnealingLR")
        super().__init__(optimizer)

    def _lr(self, base, epoch):
        return self.eta_min + (base - self.eta_min) * (1 + math.cos(math.pi * epoch /
                                                                    self.T_max)) / 2
