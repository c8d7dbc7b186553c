"""The update rules and the training loop in plain NumPy, written to be read.

This is the teaching mirror of the C++ code in ``cpp/src/optim/``: the same formulas, in the
same order of floating-point operations, so the two agree to float64 rounding (checked in
tests/test_optim.py). Nothing here is fast.

Conventions: ``theta`` is the vector of all parameters (``jl.optim.flatten_params``); ``f`` is
the minibatch objective, ``f(theta) -> (loss, g)`` with ``g`` the gradient (it is made with
``jl.value_and_grad`` by :func:`objective`); ``state`` is a dict (``"t"``: updates done, plus
buffers). Every ``*_step`` returns ``(theta, state, loss)``.
"""
from __future__ import annotations

import math

import numpy as np

__all__ = ["objective", "init", "step", "sgd_step", "momentum_step", "adam_step", "rk_step", "polyak_step",
           "TABLEAUX", "train"]


# ---- the objective: loss and gradient of one minibatch -------------------------------------------
def loss_fn(kind: str, pred, target):
    import jaclab as jl

    if kind == "mse":
        return jl.mse(pred, target)
    C = pred.shape[-1]  # cross-entropy: rows of logits
    target = np.asarray(target)
    labels = target.reshape(-1) if target.dtype.kind in "iu" else target.reshape(-1, C)
    return jl.cross_entropy(jl.reshape(pred, (-1, C)), labels)


def objective(model, kind: str, shapes, tree, xb, yb):
    """``f(theta) -> (loss, gradient)`` of ``kind(model.apply(params, xb), yb)``, via ``jl.value_and_grad``."""
    import jaclab as jl

    from .loop import flatten_params, unflatten_params

    def f(theta):
        params = unflatten_params(theta, shapes, tree)
        value, grads = jl.value_and_grad(lambda p: loss_fn(kind, model.apply(p, xb), yb))(params)
        return float(value.item()), flatten_params(grads)[0]

    return f


# ---- the rules ------------------------------------------------------------------------------------
def sgd_step(opt, theta, state, f):
    loss, g = f(theta)
    theta = theta - opt.lr * g                      # theta <- theta - h g
    return theta, {**state, "t": state["t"] + 1, "lr": opt.lr}, loss


def momentum_step(opt, theta, state, f):
    loss, g = f(theta)
    buf = opt.beta * state["m"] + g                 # buf <- beta buf + g
    if opt.nesterov:
        theta = theta - opt.lr * (g + opt.beta * buf)   # look ahead along the new buffer
    else:
        theta = theta - opt.lr * buf                # heavy ball
    return theta, {**state, "t": state["t"] + 1, "m": buf, "lr": opt.lr}, loss


def adam_step(opt, theta, state, f):
    loss, g = f(theta)
    t = state["t"] + 1
    m = opt.b1 * state["m"] + (1 - opt.b1) * g      # first moment
    v = opt.b2 * state["v"] + (1 - opt.b2) * (g * g)  # second moment
    m_hat = m / (1 - opt.b1 ** t)                   # bias corrections
    v_hat = v / (1 - opt.b2 ** t)
    theta = theta - opt.lr * (m_hat / (np.sqrt(v_hat) + opt.eps) + opt.weight_decay * theta)
    return theta, {**state, "t": t, "m": m, "v": v, "lr": opt.lr}, loss


# Butcher tableaux: rows a[i] (coefficients of k_0..k_{i-1}), weights b, embedded weights b* and
# the embedded order q (adaptive pairs only).
TABLEAUX = {
    "euler": ([[]], [1.0], None, 0),
    "heun": ([[], [1.0]], [0.5, 0.5], None, 0),
    "midpoint": ([[], [0.5]], [0.0, 1.0], None, 0),
    "rk4": ([[], [0.5], [0.0, 0.5], [0.0, 0.0, 1.0]], [1 / 6, 1 / 3, 1 / 3, 1 / 6], None, 0),
    "rk23": ([[], [1 / 2], [0.0, 3 / 4], [2 / 9, 1 / 3, 4 / 9]],            # Bogacki-Shampine 3(2)
             [2 / 9, 1 / 3, 4 / 9, 0.0], [7 / 24, 1 / 4, 1 / 3, 1 / 8], 2),
    "rk45": ([[], [1 / 5], [3 / 40, 9 / 40], [44 / 45, -56 / 15, 32 / 9],    # Dormand-Prince 5(4)
              [19372 / 6561, -25360 / 2187, 64448 / 6561, -212 / 729],
              [9017 / 3168, -355 / 33, 46732 / 5247, 49 / 176, -5103 / 18656],
              [35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84]],
             [35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84, 0.0],
             [5179 / 57600, 0.0, 7571 / 16695, 393 / 640, -92097 / 339200, 187 / 2100, 1 / 40], 4),
}


def combine(base, h, coeffs, k):
    """base + h * (c_0 k_0 + c_1 k_1 + ...), zero coefficients skipped (as in C++)."""
    acc = 0.0
    for c, kj in zip(coeffs, k):
        if c != 0:
            acc = acc + c * kj
    return base + h * acc


def rk_step(opt, theta, state, f):
    """One explicit RK step of theta' = X(theta) = -P^{-1} grad L_B(theta), the batch fixed."""
    a, b, b_low, q = TABLEAUX[opt.method]
    t = state["t"] + 1
    new = {**state, "t": t}
    loss, g = f(theta)
    P = None
    if opt.preconditioner == "adam":                 # frozen for this step, from the first stage
        new["v"] = opt.b2 * state["v"] + (1 - opt.b2) * (g * g)
        P = np.sqrt(new["v"] / (1 - opt.b2 ** t)) + opt.eps

    def X(g):
        return -g if P is None else -g / P

    k = [X(g)]
    h = state["h"] if b_low is not None else opt.lr
    while True:
        k = k[:1]                                    # k_1 does not depend on h: keep it on retries
        for i in range(1, len(b)):
            _, g = f(combine(theta, h, a[i], k))     # k_i = X(theta + h sum_j a_ij k_j)
            k.append(X(g))
        if b_low is None:
            break
        e = combine(0.0, 1.0, [bi - bl for bi, bl in zip(b, b_low)], k)
        err = h * math.sqrt(float(np.sum(e * e)))    # local error estimate of the lower-order pair
        factor = 1.0 if err == 0 else min(max(opt.safety * (opt.tol / err) ** (1 / (q + 1)),
                                                         opt.min_factor), opt.max_factor)
        new["err"] = err
        if err <= opt.tol:
            new["h"] = h * factor                    # accepted: the next step's h
            break
        new["rejected"] = new.get("rejected", 0.0) + 1
        h = h * factor                               # rejected: retry with a smaller h
    if opt.momentum > 0:
        d = combine(0.0, 1.0, b, k)                  # the RK increment sum_i b_i k_i
        new["m"] = opt.momentum * state["m"] + (1 - opt.momentum) * d
        theta = theta + h * (new["m"] / (1 - opt.momentum ** t))
    else:
        theta = combine(theta, h, b, k)              # theta + h sum_i b_i k_i
    new["lr"] = h
    new["stages"] = k
    return theta, new, loss


def polyak_step(opt, theta, state, f):
    loss, g = f(theta)
    h = min(max(opt.scale * (loss - opt.f_star) / (float(np.dot(g, g)) + opt.eps), 0.0), opt.max_lr)
    theta = theta - h * g                            # h = (L - L*) / ||g||^2: Polyak / corridor step
    return theta, {**state, "t": state["t"] + 1, "lr": h}, loss


# ---- dispatch -------------------------------------------------------------------------------------
def init(opt, theta) -> dict:
    from .optimizers import RK, Adam, Momentum

    z = np.zeros_like(theta)
    if isinstance(opt, Momentum):
        return {"t": 0, "m": z}
    if isinstance(opt, Adam):
        return {"t": 0, "m": z, "v": z.copy()}
    if isinstance(opt, RK):
        s = {"t": 0}
        if opt.preconditioner == "adam":
            s["v"] = z.copy()
        if opt.momentum > 0:
            s["m"] = z.copy()
        if opt.adaptive:
            s["h"] = opt.lr
        return s
    return {"t": 0}


def step(opt, theta, state, f):
    from .optimizers import RK, SGD, Adam, Momentum, Polyak

    rule = {SGD: sgd_step, Momentum: momentum_step, Adam: adam_step, RK: rk_step, Polyak: polyak_step}[type(opt)]
    return rule(opt, theta, state, f)


# ---- the loop -------------------------------------------------------------------------------------
def train(model, params, loss: str, data, opt, batches, order: str = "forward", window: int | None = None):
    """Replay ``batches`` (e.g. ``result.batches`` of ``jl.optim.train``) in plain Python.

    Returns ``(params, losses)``. Forward: theta_n = T_n(theta_{n-1}). Backward (backward-SGD):
    theta_n = T_{a+1}(T_{a+2}(... T_n(anchor))), a = 0 and anchor = theta_0, or with a window m,
    a = m * floor((n-1)/m) and anchor = theta_a. losses[n-1] = L_{B_n}(theta_{n-1}).
    """
    from .loop import flatten_params, unflatten_params

    theta0, shapes, tree = flatten_params(params)
    X, Y = np.asarray(data[0], theta0.dtype), np.asarray(data[1])
    if not (loss == "cross_entropy" and Y.dtype.kind in "iu"):
        Y = Y.astype(theta0.dtype)
    f_of = [objective(model, loss, shapes, tree, X[idx], Y[idx]) for idx in batches]  # f_of[k-1] = batch k
    theta, state = theta0.copy(), init(opt, theta0)
    anchor, anchor_state = theta.copy(), dict(state)
    losses = []
    for n in range(1, len(batches) + 1):
        if order == "forward":
            theta, state, lv = step(opt, theta, state, f_of[n - 1])
            losses.append(lv)
            continue
        losses.append(f_of[n - 1](theta)[0])
        a = 0 if not window else window * ((n - 1) // window)
        y, s = anchor.copy(), dict(anchor_state)
        for k in range(n, a, -1):                    # batch n's map first, batch a+1's last
            y, s, _ = step(opt, y, s, f_of[k - 1])
        theta, state = y, s
        if window and n % window == 0:
            anchor, anchor_state = theta.copy(), dict(state)
    return unflatten_params(theta, shapes, tree), np.array(losses)
