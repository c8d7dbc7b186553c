"""Optimizer objects: hyper-parameters only. The update rules run in C++ (``cpp/src/optim/``);
``jaclab.optim.reference`` writes each rule in a few lines of NumPy.

All rules act on theta, the model's parameters flattened into one vector (``jl.tree_flatten``
order), with g the minibatch gradient at theta and t the number of updates done so far + 1:

=================  ==========================================================================
``SGD(lr)``        theta <- theta - lr g
``Momentum``       buf <- beta buf + g; theta <- theta - lr buf (heavy ball) or
                   theta <- theta - lr (g + beta buf) (``nesterov=True``); PyTorch convention
``Adam``           m <- b1 m + (1-b1) g; v <- b2 v + (1-b2) g^2; m_hat = m/(1-b1^t),
                   v_hat = v/(1-b2^t); theta <- theta - lr (m_hat/(sqrt(v_hat)+eps) + wd theta)
                   (``weight_decay`` > 0 is AdamW's decoupled decay)
``RK``             an explicit Runge-Kutta step of the gradient flow theta' = -P^{-1} g(theta),
                   every stage on the same minibatch; methods euler, heun, midpoint, rk4 and the
                   adaptive embedded pairs rk23 (Bogacki-Shampine 3(2)) and rk45 (Dormand-Prince
                   5(4)); ``preconditioner="adam"`` (P = sqrt(v_hat)+eps from the first stage's
                   gradient, frozen over the stages), ``momentum`` (an EMA of the RK increments)
``Polyak``         h = clip(scale (L - f_star) / (||g||^2 + eps), 0, max_lr); theta <- theta - h g
                   (f_star = 0: the corridor learning rate)
=================  ==========================================================================

Bad hyper-parameters raise ``ValueError`` when the object is made.
"""
from __future__ import annotations

import math

from .. import _core

__all__ = ["Optimizer", "SGD", "Momentum", "Adam", "AdamW", "RK", "Polyak"]


class Optimizer:
    """Base class: holds hyper-parameters; ``_cpp()`` is the C++ update rule."""

    _fields: tuple[str, ...] = ()

    def _make(self):
        raise NotImplementedError

    def _cpp(self):
        return self._c

    def _validate(self):
        self._c = self._make()  # the C++ constructor checks the hyper-parameters

    def describe(self) -> str:
        return self._c.describe()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(" + ", ".join(f"{k}={getattr(self, k)!r}" for k in self._fields) + ")"

    def __eq__(self, other):
        return type(self) is type(other) and all(getattr(self, k) == getattr(other, k) for k in self._fields)

    def __hash__(self):
        return hash((type(self).__name__,) + tuple(getattr(self, k) for k in self._fields))


class SGD(Optimizer):
    """theta <- theta - lr g"""

    _fields = ("lr",)

    def __init__(self, lr: float):
        self.lr = float(lr)
        self._validate()

    def _make(self):
        return _core.optim_sgd(self.lr)


class Momentum(Optimizer):
    """buf <- beta buf + g; theta <- theta - lr buf (heavy ball) or - lr (g + beta buf) (Nesterov)."""

    _fields = ("lr", "beta", "nesterov")

    def __init__(self, lr: float, beta: float = 0.9, nesterov: bool = False):
        self.lr, self.beta, self.nesterov = float(lr), float(beta), bool(nesterov)
        self._validate()

    def _make(self):
        return _core.optim_momentum(self.lr, self.beta, self.nesterov)


class Adam(Optimizer):
    """Adam with bias correction; ``weight_decay`` > 0 gives AdamW (decoupled decay)."""

    _fields = ("lr", "b1", "b2", "eps", "weight_decay")

    def __init__(self, lr: float = 1e-3, b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8,
                 weight_decay: float = 0.0):
        self.lr, self.b1, self.b2, self.eps, self.weight_decay = float(lr), float(b1), float(b2), float(eps), float(weight_decay)
        self._validate()

    def _make(self):
        return _core.optim_adam(self.lr, self.b1, self.b2, self.eps, self.weight_decay)


def AdamW(lr: float = 1e-3, b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8, weight_decay: float = 1e-2) -> Adam:
    """Adam with decoupled weight decay (default 1e-2)."""
    return Adam(lr, b1, b2, eps, weight_decay)


class RK(Optimizer):
    """Runge-Kutta step of the gradient flow theta' = -P^{-1} grad L_B(theta) (batch fixed per step).

    ``method``: "euler" (= SGD), "heun", "midpoint", "rk4", "rk23" (Bogacki-Shampine 3(2),
    adaptive), "rk45" (Dormand-Prince 5(4), adaptive). ``lr`` is the step size h (the first h of
    the adaptive pairs, which then accept a step when h ||sum_i (b_i - b*_i) k_i||_2 <= ``tol``
    and rescale h by clip(safety (tol/err)^(1/(q+1)), min_factor, max_factor)).
    ``preconditioner="adam"``: X = -g / (sqrt(v_hat) + eps), v updated once per step from the
    first stage. ``momentum=beta``: m <- beta m + (1-beta) sum_i b_i k_i; theta <- theta + h m/(1-beta^t).
    """

    _fields = ("method", "lr", "preconditioner", "momentum", "b2", "eps", "tol", "safety", "min_factor",
               "max_factor", "max_rejections")
    methods = ("euler", "heun", "midpoint", "rk4", "rk23", "rk45")

    def __init__(self, method: str = "rk4", lr: float = 0.1, preconditioner: str | None = None, momentum: float = 0.0,
                 b2: float = 0.999, eps: float = 1e-8, tol: float = 1e-3, safety: float = 0.9, min_factor: float = 0.2,
                 max_factor: float = 5.0, max_rejections: int = 50):
        if preconditioner not in (None, "adam"):
            raise ValueError(f"RK: preconditioner must be None or 'adam', got {preconditioner!r}")
        self.method, self.lr, self.preconditioner, self.momentum = str(method), float(lr), preconditioner, float(momentum)
        self.b2, self.eps, self.tol = float(b2), float(eps), float(tol)
        self.safety, self.min_factor, self.max_factor = float(safety), float(min_factor), float(max_factor)
        self.max_rejections = int(max_rejections)
        self._validate()

    @property
    def adaptive(self) -> bool:
        return self.method in ("rk23", "rk45")

    def _make(self):
        return _core.optim_rk(self.method, self.lr, self.preconditioner or "", self.momentum, self.b2, self.eps,
                              self.tol, self.safety, self.min_factor, self.max_factor, self.max_rejections)


class Polyak(Optimizer):
    """Polyak / corridor step: h = clip(scale (L - f_star) / (||g||^2 + eps), 0, max_lr); theta <- theta - h g."""

    _fields = ("scale", "f_star", "max_lr", "eps")

    def __init__(self, scale: float = 1.0, f_star: float = 0.0, max_lr: float = math.inf, eps: float = 1e-12):
        self.scale, self.f_star = float(scale), float(f_star)
        self.max_lr = math.inf if max_lr is None else float(max_lr)
        self.eps = float(eps)
        self._validate()

    def _make(self):
        return _core.optim_polyak(self.scale, self.f_star, self.max_lr, self.eps)
