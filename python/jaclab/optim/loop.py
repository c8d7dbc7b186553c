"""Training loops in C++ (``jl.optim.train``), one-step updates (``jl.optim.step``), checkpoints."""
from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from .. import _core
from .._pytree import tree_flatten, tree_unflatten
from .optimizers import Optimizer

__all__ = ["TrainResult", "train", "init", "step", "batches", "save_checkpoint", "load_checkpoint",
           "flatten_params", "unflatten_params"]


# ---- flat parameter vectors ---------------------------------------------------------------------
def flatten_params(params) -> tuple[np.ndarray, list[tuple], Any]:
    """``(theta, shapes, treedef)``: the leaves of ``params`` (``jl.tree_flatten`` order: dict keys
    sorted) concatenated into one float vector. All leaves must share one float dtype."""
    leaves, tree = tree_flatten(params)
    if not leaves:
        raise ValueError("params has no arrays")
    arrs = [np.asarray(x) for x in leaves]
    dtypes = {a.dtype for a in arrs}
    if len(dtypes) != 1 or next(iter(dtypes)) not in (np.float32, np.float64):
        raise TypeError(f"params: all leaves must share one dtype, float32 or float64; got {sorted(map(str, dtypes))}")
    theta = np.concatenate([a.ravel() for a in arrs])
    return theta, [a.shape for a in arrs], tree


def unflatten_params(theta, shapes, tree):
    theta = np.asarray(theta)
    out, off = [], 0
    for s in shapes:
        n = int(np.prod(s, dtype=np.int64))
        out.append(np.array(theta[off:off + n]).reshape(s))
        off += n
    return tree_unflatten(tree, out)


# ---- optimizer state ------------------------------------------------------------------------------
def _state_to_py(st, shapes, tree) -> dict:
    """C++ OptimizerState -> dict: "t", scalars ("lr", "h", ...), buffers and "stages" as pytrees like params."""
    d: dict[str, Any] = {"t": st.t}
    d.update(st.scalars)
    for k, v in st.buffers.items():
        d[k] = unflatten_params(v, shapes, tree)
    if st.stages:
        d["stages"] = [unflatten_params(k, shapes, tree) for k in st.stages]
    return d


def _state_from_py(d: dict, dtype):
    if not isinstance(d, dict) or "t" not in d:
        raise ValueError("optimizer state must be a dict made by jl.optim.init / jl.optim.step")
    scalars, buffers = {}, {}
    for k, v in d.items():
        if k in ("t", "stages"):
            continue
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            scalars[k] = float(v)
        else:
            buffers[k] = np.ascontiguousarray(flatten_params(v)[0], dtype)
    stages = [np.ascontiguousarray(flatten_params(k)[0], dtype) for k in d.get("stages", [])]
    return _core.OptimizerState(int(d["t"]), scalars, buffers, stages)


def _check_optimizer(optimizer):
    if not isinstance(optimizer, Optimizer):
        raise TypeError(f"optimizer must be a jl.optim optimizer (SGD, Momentum, Adam, RK, Polyak), got {optimizer!r}")


def init(optimizer: Optimizer, params) -> dict:
    """Fresh optimizer state for ``params``: ``{"t": 0, ...buffers as zero pytrees like params}``."""
    _check_optimizer(optimizer)
    theta, shapes, tree = flatten_params(params)
    return _state_to_py(optimizer._cpp().init(theta), shapes, tree)


def step(optimizer: Optimizer, state: dict, params, grads=None, grad_fn: Callable | None = None, loss=None):
    """One update with the C++ rule: ``(new_params, new_state)``; the inputs are not modified.

    ``grads``: the minibatch gradient at ``params`` (pytree like params). ``grad_fn(params) ->
    (loss, grads)`` is needed when the rule evaluates more gradients (RK stages: each stage calls
    it on the same minibatch) and may replace ``grads``; ``loss`` (the minibatch loss at
    ``params``) is needed by ``Polyak``. ``new_state`` shows the buffers (``"m"``, ``"v"``), the
    step size used (``"lr"``) and, for RK, the stage vectors ``"stages"`` = [k_1, ..., k_s].
    """
    _check_optimizer(optimizer)
    theta, shapes, tree = flatten_params(params)
    if grads is None and grad_fn is None:
        raise ValueError("step: pass grads, grad_fn, or both")
    first = [True]

    def objective(at):
        if first[0] and grads is not None:
            first[0] = False
            g = flatten_params(grads)[0]
            if g.shape != theta.shape:
                raise ValueError(f"step: grads has {g.size} elements but params has {theta.size}")
            if loss is None and isinstance(optimizer, _needs_loss()):
                raise ValueError("step: Polyak needs the minibatch loss: pass loss=...")
            return (float(np.nan) if loss is None else float(loss)), g
        first[0] = False
        if grad_fn is None:
            raise ValueError(f"step: {optimizer!r} evaluates the gradient at more than one point per step; "
                             "pass grad_fn(params) -> (loss, grads)")
        lv, g = grad_fn(unflatten_params(at, shapes, tree))
        return float(np.asarray(lv)), flatten_params(g)[0]

    st = _state_from_py(state, theta.dtype)
    new_theta, new_st, _ = optimizer._cpp().step(st, theta, objective)
    return unflatten_params(new_theta, shapes, tree), _state_to_py(new_st, shapes, tree)


def _needs_loss():
    from .optimizers import Polyak

    return Polyak


def batches(n: int, batch_size: int, steps: int, seed: int) -> np.ndarray:
    """The first ``steps`` minibatches the loop draws for ``n`` rows: a ``(steps, batch_size)``
    int64 array. Per epoch, a Fisher-Yates permutation of 0..n-1 driven by one
    ``std::mt19937_64(seed)`` (j drawn by rejection sampling, platform independent), cut into
    consecutive batches; the last ``n % batch_size`` indices of each epoch are dropped."""
    return np.array(_core.sample_batches(int(n), int(batch_size), int(steps), int(seed)))


# ---- the loop -------------------------------------------------------------------------------------
@dataclass
class TrainResult:
    params: Any                 # final parameters (same pytree as the input)
    losses: np.ndarray          # losses[n-1] = L_{B_n}(theta_{n-1}), one per iterate
    batches: np.ndarray         # (steps, batch_size) int64: the batches used, in order
    state: dict                 # final optimizer state (see jl.optim.step)
    trajectory: list | None = None  # params at iterates 0, r, 2r, ... (trajectory=True)
    grad_evals: int = 0         # gradient evaluations in this call
    stopped: bool = False       # stopped early (callback returned False, or Ctrl-C)
    interrupted: bool = False   # stopped by Ctrl-C
    loop_state: dict = field(default_factory=dict, repr=False)  # what a checkpoint holds

    @property
    def steps(self) -> int:
        return len(self.losses)


def _data(X, Y, loss: str, dtype):
    X = np.asarray(X)
    Y = np.asarray(Y)
    if X.ndim < 1 or Y.ndim < 1:
        raise ValueError(f"data: X and Y need a leading sample axis, got shapes {X.shape} and {Y.shape}")
    if X.shape[0] != Y.shape[0]:
        raise ValueError(f"data: X has {X.shape[0]} samples (shape {X.shape}) but Y has {Y.shape[0]} (shape {Y.shape})")
    if X.shape[0] == 0:
        raise ValueError("data: the data set is empty")
    X = np.ascontiguousarray(X, dtype)
    if loss == "cross_entropy" and Y.dtype.kind in "iub":
        Y = np.ascontiguousarray(Y, np.int64)
    else:
        Y = np.ascontiguousarray(Y, dtype)
    return X, Y


def train(model, params, loss: str, data, optimizer: Optimizer, steps: int, batch_size: int, seed: int = 0,
          order: str = "forward", record_every: int = 1, callback: Callable | None = None, *,
          window: int | None = None, trajectory: bool = False, checkpoint: str | None = None,
          checkpoint_every: int = 0, resume: str | None = None, grad_path: str = "auto") -> TrainResult:
    """Train ``model`` from ``params`` on ``data = (X, Y)``; the loop runs in C++ with the GIL released.

    ``loss``: "mse" or "cross_entropy" (int labels or probabilities; logits ``(..., C)`` are
    flattened to rows). Batches come from the seeded sampler (see :func:`batches`), so a run
    reproduces bit for bit; ``result.batches`` lists them, for replay.

    ``order="forward"``: theta_n = T_n(theta_{n-1}), T_k = one optimizer step on batch k.
    ``order="backward"`` (backward-SGD): theta_n = T_1 o T_2 o ... o T_n (theta_0), i.e. the maps
    of batches n, n-1, ..., 1 applied in that order to the starting point, each composition from
    a fresh optimizer state: n(n+1)/2 optimizer steps for n iterates (quadratic cost).
    ``window=m`` (backward only) is the cheaper windowed variant: the anchor moves to theta_{jm}
    every m iterates and theta_n = T_{jm+1} o ... o T_n (theta_{jm}), at most m steps per iterate
    (m = 1 is forward order).

    ``callback(step, loss, elapsed)`` is called every ``record_every`` iterates (and at the
    end); returning ``False`` stops the loop, which returns what it computed; so does Ctrl-C.
    ``trajectory=True`` keeps the params at iterates 0, r, 2r, ... (r = record_every).
    ``checkpoint=path`` with ``checkpoint_every=k`` saves the loop state to ``path`` (.npz) every
    k iterates; ``resume=path`` continues such a run up to ``steps`` and gives exactly the
    result of an uninterrupted run.

    ``grad_path``: "auto" computes gradients with the model's first-order fast path when all its
    blocks have one (Linear, MLP, activations, Residual, Sequential: plain arrays, no autograd
    graph), else with the autograd engine; "autograd" always uses the engine. Both agree to
    float64 rounding.
    """
    _check_optimizer(optimizer)
    if not hasattr(model, "_spec"):
        raise TypeError(f"model must be a jl.nn block, got {model!r}")
    if loss not in ("mse", "cross_entropy"):
        raise ValueError(f"loss must be 'mse' or 'cross_entropy', got {loss!r}")
    if grad_path not in ("auto", "autograd"):
        raise ValueError(f"grad_path must be 'auto' or 'autograd', got {grad_path!r}")
    if order not in ("forward", "backward"):
        raise ValueError(f"order must be 'forward' or 'backward', got {order!r}")
    if window is not None and order != "backward":
        raise ValueError("window is an option of order='backward'")
    if window is not None and int(window) < 1:
        raise ValueError(f"window must be >= 1 (or None for full backward-SGD), got {window}")
    for name, v in (("steps", steps), ("batch_size", batch_size), ("record_every", record_every)):
        if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v <= 0:
            raise ValueError(f"{name} must be a positive int, got {v!r}")
    if int(seed) < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    if not isinstance(data, (tuple, list)) or len(data) != 2:
        raise ValueError("data must be a pair (X, Y) of arrays")
    theta, shapes, tree = flatten_params(params)
    X, Y = _data(data[0], data[1], loss, theta.dtype)
    if batch_size > X.shape[0]:
        raise ValueError(f"batch_size {batch_size} is larger than the data set ({X.shape[0]} samples)")
    spec = model._spec()
    spec_shapes = [tuple(s) for s in spec.param_shapes()]
    if [tuple(s) for s in shapes] != spec_shapes:
        raise ValueError(f"params do not fit {spec.describe()}: flat shapes {shapes}, expected {spec_shapes}")

    meta = dict(optimizer=optimizer.describe(), seed=int(seed), batch_size=int(batch_size), order=order,
                window=int(window or 0), loss=loss, model=spec.describe())
    start, past = None, []
    if resume is not None:
        ck = load_checkpoint(resume)
        for k, v in meta.items():
            if ck["meta"].get(k) != v:
                raise ValueError(f"resume: the checkpoint was made with {k}={ck['meta'].get(k)!r}, this run has {v!r}")
        if ck["loop_state"]["theta"].shape != theta.shape:
            raise ValueError("resume: the checkpoint's parameters do not match params")
        start, past = ck["loop_state"], list(ck["losses"])

    save = None
    if checkpoint is not None:
        if checkpoint_every <= 0:
            raise ValueError("checkpoint needs checkpoint_every > 0")
        save = lambda ls, losses: _save(checkpoint, ls, losses, meta)  # noqa: E731

    cb = None
    if callback is not None:
        cb = lambda s, lv, el: callback(int(s), float(lv), float(el))  # noqa: E731
    r = _core.optim_train(spec, loss, shapes, X, Y, optimizer._cpp(), theta, start, past, int(steps), int(batch_size),
                          int(seed), order, int(window or 0), int(record_every), bool(trajectory),
                          int(checkpoint_every), cb, save, grad_path == "autograd")
    ls = r["loop_state"]
    if r["interrupted"]:
        warnings.warn(f"jl.optim.train: interrupted (Ctrl-C) after {ls['step']} iterates; returning what was computed",
                      RuntimeWarning, stacklevel=2)
    return TrainResult(
        params=unflatten_params(ls["theta"], shapes, tree),
        losses=np.array(r["losses"]),
        batches=np.array(r["batches"]),
        state=_state_to_py(ls["state"], shapes, tree),
        trajectory=[unflatten_params(t, shapes, tree) for t in r["trajectory"]] if trajectory else None,
        grad_evals=int(r["grad_evals"]),
        stopped=bool(r["stopped"]),
        interrupted=bool(r["interrupted"]),
        loop_state={**ls, "meta": meta, "losses": list(r["losses"])},
    )


# ---- checkpoints ----------------------------------------------------------------------------------
def _state_arrays(prefix: str, st, out: dict):
    out[f"{prefix}.t"] = np.array(st.t, np.int64)
    for k, v in st.scalars.items():
        out[f"{prefix}.scalar.{k}"] = np.array(v, np.float64)
    for k, v in st.buffers.items():
        out[f"{prefix}.buffer.{k}"] = np.array(v)
    for i, v in enumerate(st.stages):
        out[f"{prefix}.stage.{i:03d}"] = np.array(v)


def _state_load(prefix: str, z) -> Any:
    scalars, buffers, stages = {}, {}, []
    for name in sorted(z.files):
        if not name.startswith(prefix + "."):
            continue
        kind, _, key = name[len(prefix) + 1:].partition(".")
        if kind == "scalar":
            scalars[key] = float(z[name])
        elif kind == "buffer":
            buffers[key] = z[name]
        elif kind == "stage":
            stages.append(z[name])
    return _core.OptimizerState(int(z[f"{prefix}.t"]), scalars, buffers, stages)


def _save(path: str, ls: dict, losses, meta: dict) -> None:
    arrays = {"theta": np.array(ls["theta"]), "anchor": np.array(ls["anchor"]), "step": np.array(ls["step"], np.int64),
              "losses": np.asarray(losses, np.float64)}
    _state_arrays("state", ls["state"], arrays)
    _state_arrays("anchor_state", ls["anchor_state"], arrays)
    for k, v in meta.items():
        arrays[f"meta.{k}"] = np.array(v)
    tmp = f"{path}.tmp"
    with open(tmp, "wb") as f:
        np.savez(f, **arrays)
    os.replace(tmp, path)  # atomic: a killed run leaves the previous checkpoint intact


def save_checkpoint(path: str, result: TrainResult) -> None:
    """Save a finished (or stopped) run's loop state, so ``train(..., resume=path)`` can continue it."""
    ls = result.loop_state
    _save(path, ls, ls["losses"], ls["meta"])


def load_checkpoint(path: str) -> dict:
    """``{"loop_state", "losses", "meta", "step"}`` from a checkpoint written by ``train``."""
    with np.load(path) as z:
        meta = {k[5:]: z[k].item() for k in z.files if k.startswith("meta.")}
        ls = {"theta": z["theta"], "anchor": z["anchor"], "step": int(z["step"]),
              "state": _state_load("state", z), "anchor_state": _state_load("anchor_state", z)}
        return {"loop_state": ls, "losses": z["losses"].copy(), "meta": meta, "step": ls["step"]}
