"""Analyses: exact per-sample Jacobians (NumPy in, NumPy out).

Per-sample Jacobians use that samples of a batch do not interact in jaclab's blocks (every
op acts per row, attention per sequence): for a batch function ``F: (B, *in) -> (B, *out)``
the per-sample Jacobian ``dF(x)_b / dx_b`` is obtained for all ``b`` at once by one reverse
sweep per output coordinate (cotangent ``e_i`` in every sample) or one forward pass per input
coordinate (tangent ``e_j`` in every sample), whichever count is smaller. Memory: the result
plus one pass of activations; no batch x batch Jacobian is ever formed.
"""
from __future__ import annotations

import numpy as np

from . import _core
from .transforms import jvp, vjp

__all__ = ["per_sample_jacobian", "input_jacobian", "layer_jacobians", "layer_jacobian"]


def per_sample_jacobian(fn, x, mode: str = "auto") -> np.ndarray:
    """Per-sample Jacobian of a batch function ``fn: (B, *in) -> (B, *out)``.

    Returns ``(B, *out, *in)`` as a NumPy array. ``mode``: "rev" (one sweep per output
    coordinate), "fwd" (one pass per input coordinate) or "auto" (fewer passes).
    Assumes sample b's output depends only on sample b's input (true for jaclab's blocks).
    """
    x = np.asarray(x)
    if x.ndim < 1:
        raise ValueError(f"per_sample_jacobian: x must have a batch axis, got shape {x.shape}")
    if mode not in ("auto", "fwd", "rev"):
        raise ValueError(f"per_sample_jacobian: mode must be 'auto', 'fwd' or 'rev', got {mode!r}")
    B, in_shape = x.shape[0], x.shape[1:]
    n_in = int(np.prod(in_shape))
    out, pullback = vjp(fn, x)
    out_shape = tuple(out.shape[1:])
    if out.shape[0] != B:
        raise ValueError(f"per_sample_jacobian: output batch {out.shape[0]} != input batch {B}")
    n_out = int(np.prod(out_shape))
    dtype = np.dtype(out.dtype)
    J = np.empty((B, n_out, n_in), dtype)
    if mode == "rev" or (mode == "auto" and n_out <= n_in):
        ct = np.zeros((B, n_out), dtype)
        for i in range(n_out):
            ct[:, i] = 1.0
            (g,) = pullback(ct.reshape(out.shape))
            J[:, i, :] = np.asarray(g).reshape(B, n_in)
            ct[:, i] = 0.0
    else:
        t = np.zeros((B, n_in), x.dtype)
        for j in range(n_in):
            t[:, j] = 1.0
            _, tout = jvp(fn, (x,), (t.reshape(x.shape),))
            J[:, :, j] = np.asarray(tout).reshape(B, n_out)
            t[:, j] = 0.0
    return J.reshape((B,) + out_shape + tuple(in_shape))


def input_jacobian(model, params, x, position: int | None = None) -> np.ndarray:
    """Per-sample input Jacobian of ``model.apply(params, .)`` at ``x``.

    Vector models, x ``(B, d_in)``: returns ``(B, d_out, d_in)``.
    Sequence models, x ``(B, T, d)``: returns ``(B, T, d_out, T, d)``, or with ``position=p``
    the slice for output position p, ``(B, d_out, T, d)`` (p may be negative).
    """
    x = np.asarray(x)
    if position is None:
        return per_sample_jacobian(lambda h: model.apply(params, h), x)
    if x.ndim != 3:
        raise ValueError(f"input_jacobian: position= needs a sequence input (B, T, d), got shape {x.shape}")
    T = x.shape[1]
    if not -T <= position < T:
        raise ValueError(f"input_jacobian: position {position} out of range for T={T}")
    p = position % T

    # Select the position with a fixed one-hot matmul (differentiable, keeps the batch axis first).
    sel = np.zeros((1, T), x.dtype)
    sel[0, p] = 1.0

    def fn(h):
        y = model.apply(params, h)  # (B, T, d_out)
        return _core.reshape(_core.matmul(sel, y), (y.shape[0], y.shape[2]))

    return per_sample_jacobian(fn, x)


def layer_jacobians(model, params, x) -> list[np.ndarray]:
    """Per-sample Jacobians ``d h_{l+1} / d h_l`` between consecutive layer boundaries of a
    ``Sequential`` (``h_0 = x``, ``h_L`` = output). Each is ``(B, *out_l, *in_l)``.
    Their chained product (over flattened per-sample dims) is the input Jacobian.
    """
    layers = getattr(model, "layers", None)
    if layers is None:
        raise TypeError(f"layer_jacobians: needs a Sequential model, got {type(model).__name__}")
    hs = model.apply_layers(params, x)
    return [
        per_sample_jacobian(lambda h, layer=layer, p=p: layer.apply(p, h), np.asarray(h))
        for layer, p, h in zip(layers, params, hs[:-1])
    ]


def layer_jacobian(model, params, x, l: int, m: int, jacobians: list | None = None) -> np.ndarray:
    """Per-sample ``d h_m / d h_l`` (0 <= l <= m <= L) as ``(B, *shape_m, *shape_l)``: the
    product ``J_{m-1} ... J_l`` of consecutive layer Jacobians (pass ``jacobians`` from
    ``layer_jacobians`` to reuse them across pairs).
    """
    Js = jacobians if jacobians is not None else layer_jacobians(model, params, x)
    L = len(Js)
    if not 0 <= l <= m <= L:
        raise ValueError(f"layer_jacobian: need 0 <= l <= m <= {L}, got l={l}, m={m}")
    x = np.asarray(x)
    B = x.shape[0]
    hs_shapes = [J.shape[1 + (J.ndim - 1) // 2:] for J in Js] + [Js[-1].shape[1:1 + (Js[-1].ndim - 1) // 2]]
    if l == m:
        n = int(np.prod(hs_shapes[l]))
        return np.broadcast_to(np.eye(n, dtype=Js[0].dtype), (B, n, n)).reshape((B,) + hs_shapes[l] * 2).copy()
    acc = None
    for J in Js[l:m]:
        half = (J.ndim - 1) // 2
        Jm = J.reshape(B, int(np.prod(J.shape[1:1 + half])), int(np.prod(J.shape[1 + half:])))
        acc = Jm if acc is None else np.matmul(Jm, acc)
    out_shape = Js[m - 1].shape[1:1 + (Js[m - 1].ndim - 1) // 2]
    return acc.reshape((B,) + tuple(out_shape) + tuple(hs_shapes[l]))
