"""Thought vectors and thought matrices: a prompt transmuted into per-block weight patches of a
stack of transformer blocks (shared/papers.md section 4, "Transmuting prompts into weights").
NumPy in, NumPy out; forward passes only.

Notation for a pre-norm ``TransformerBlock`` (jaclab's row convention, ``MLP(a) = act(a W1 + b1)
W2 + b2``): on hidden states ``H`` (B, T, d) the block computes the skip stream
``z = H + s * Attn(N1(H))``, the MLP input ``a = N2(z)`` and the output ``y = z + s * MLP(a)``.
The prompt is ``[I, R]``: ``I`` the chunk to transmute (``prompt``), ``R = [C, x]`` the tokens
that follow it (``inputs``).

Per block l and token t of R, with ``z_t, a_t`` from the full prompt and ``zbar_t, abar_t`` with
the I positions masked out of attention (I is a prefix, so masking it = running the block on
the R positions alone; there are no positional encodings inside the blocks):

- skip shift (token thought vector) ``delta_t = z_t - zbar_t``;
- rank-1 weight update ``dW_t = abar_t^T (dA_t W1) / |abar_t|^2``, ``dA_t = a_t - abar_t``, so that
  ``abar_t (W1 + dW_t) = a_t W1`` (the minimum-Frobenius-norm such update; ``b1`` unchanged).

The patched prompt-free block ``y_t = zbar_t + delta_t + s * MLP_{W1 + dW_t}(abar_t)`` equals the
full-prompt block at every R position. Computed block by block on the patched model's own
states ("greedy"), so one forward pass of ``[I, R]`` plus one masked pass per block gives the
patches of ALL blocks, and the patched model reproduces every hidden state of R exactly.

Condensed (token-independent) patches per block, by (weighted, ridge) least squares:

- thought vector ``delta = argmin_v sum_t |v - delta_t|^2 = mean_t delta_t``;
- thought matrix ``Delta = argmin_D sum_t w_t |abar_t D - dA_t W1|^2 + lam |D|_F^2``
  ``= (sum_t w_t abar_t^T abar_t + lam I)^+ (sum_t w_t abar_t^T dA_t W1)``, ``w_t = 1/|abar_t|^2``
  (``weights="inverse_norm"``, default) or 1 (``"uniform"``); ``^+`` is the pseudo-inverse, i.e. the
  minimum-norm solution (with LayerNorm every ``abar_t`` is orthogonal to the ones vector, so at
  ``lam = 0`` the normal matrix is always singular). For one token and ``lam = 0`` it is exactly ``dW_t``.
"""
from __future__ import annotations

import numpy as np

from . import _core

__all__ = ["thought_matrices", "apply_thought", "block_parts"]


def _blocks(model):
    from .nn import TransformerBlock

    if isinstance(model, TransformerBlock):
        return [model], True
    layers = getattr(model, "layers", None)
    if layers is None or not layers or not all(isinstance(b, TransformerBlock) for b in layers):
        raise TypeError("thought_matrices: needs a TransformerBlock or a Sequential of TransformerBlocks, "
                        f"got {type(model).__name__}")
    return list(layers), False


def _plist(params, single):
    return [params] if single else list(params)


def block_parts(block, params, H):
    """``(z, a)`` of a ``TransformerBlock`` on hidden states ``H`` (B, T, d): the skip stream after
    attention ``z = H + s * Attn(N1(H))`` and the MLP input ``a = N2(z)``, both (B, T, d) NumPy."""
    H = np.asarray(H)
    norm = block._norm
    n1 = norm.apply(params["norm1"], H) if norm else H
    z = H + block.scale * np.asarray(block.attn.apply(params["attn"], n1))
    a = np.asarray(norm.apply(params["norm2"], z)) if norm else z
    return np.array(z), np.array(a)


def _mlp_out(block, mp, a, W):
    """``act(a W + b1) W2 + b2`` with ``W`` (d, h), (B, d, h) per sequence or (B, T, d, h) per token."""
    if W.ndim == 2:
        pre = a @ W
    elif W.ndim == 3:
        pre = np.einsum("btd,bdh->bth", a, W)
    else:
        pre = np.einsum("btd,btdh->bth", a, W)
    pre = np.ascontiguousarray(pre + np.asarray(mp["b1"]), dtype=a.dtype)
    act = np.asarray(_core.nn_activate(pre, block.activation))
    return act @ np.asarray(mp["W2"]) + np.asarray(mp["b2"])


def _as_batch(v, name, d):
    v = np.asarray(v)
    if v.ndim == 2:
        v = v[None]
    if v.ndim != 3 or v.shape[2] != d:
        raise ValueError(f"thought_matrices: {name} must be (B, n, {d}) or (n, {d}), got shape {np.shape(v)}")
    return v


def _fit_matrix(abar, r, w, lam):
    """min_D sum_t w_t |abar_t D - r_t|^2 + lam |D|^2 over rows t; minimum-norm solution."""
    sw = np.sqrt(w)[:, None]
    A, T = abar * sw, r * sw
    if lam > 0:
        d = abar.shape[1]
        A = np.concatenate([A, np.sqrt(lam) * np.eye(d)], axis=0)
        T = np.concatenate([T, np.zeros((d, r.shape[1]))], axis=0)
    return np.linalg.lstsq(A, T, rcond=None)[0]


def thought_matrices(model, params, prompt, inputs, mode: str = "token", lam: float = 0.0,
                     weights: str = "inverse_norm", pool: str = "sample") -> dict:
    """Per-block thought vectors and thought matrices of ``prompt`` for a stack of transformer blocks.

    ``model``: a ``TransformerBlock`` or a ``Sequential`` of them (L blocks, width d, MLP width h);
    ``prompt`` ``I`` (B, n_I, d) and ``inputs`` ``R`` (B, n, d) (or without the batch axis). The
    full prompt is ``[I, R]``; see the module docstring for the formulas.

    ``mode`` chooses the patch that is propagated to the next block (greedy): ``"token"`` (the
    exact token-dependent patches; the patched model reproduces the full prompt's hidden states of
    R to rounding) or ``"condensed"`` (one thought vector and one thought matrix per block, so
    later blocks absorb the errors of earlier ones). ``pool``: fit the condensed patch per sequence
    (``"sample"``) or once over all sequences of the batch (``"batch"``, for a prompt shared by
    all of them). ``lam`` >= 0: ridge; ``weights``: ``"inverse_norm"`` or ``"uniform"``.

    Returns a dict of NumPy arrays:
    ``"deltas"`` (L, B, n, d) token skip shifts, ``"dW"`` (L, B, n, d, h) token rank-1 updates,
    ``"vectors"`` (L, B, d) (``pool="batch"``: (L, d)) thought vectors, ``"matrices"``
    (L, B, d, h) (or (L, d, h)) thought matrices, ``"outputs_full"`` (B, n, d) the last block's
    output on ``[I, R]`` at the R positions, ``"outputs_none"`` the model on ``R`` alone,
    ``"outputs_patched"`` the prompt-free model with the ``mode`` patches, and ``"residual"`` (B,)
    ``max |outputs_patched - outputs_full|``.

    Cost: one forward pass of ``[I, R]``, one of ``R``, and per block one pass of attention and
    norms over R plus, for condensed patches, a (n x d) least-squares solve per sequence.
    """
    blocks, single = _blocks(model)
    plist = _plist(params, single)
    if mode not in ("token", "condensed"):
        raise ValueError(f"thought_matrices: mode must be 'token' or 'condensed', got {mode!r}")
    if weights not in ("inverse_norm", "uniform"):
        raise ValueError(f"thought_matrices: weights must be 'inverse_norm' or 'uniform', got {weights!r}")
    if pool not in ("sample", "batch"):
        raise ValueError(f"thought_matrices: pool must be 'sample' or 'batch', got {pool!r}")
    if lam < 0:
        raise ValueError(f"thought_matrices: lam must be >= 0, got {lam}")
    d = blocks[0].d_model
    I = _as_batch(prompt, "prompt", d)
    R = _as_batch(inputs, "inputs", d)
    if I.shape[0] != R.shape[0]:
        raise ValueError(f"thought_matrices: prompt has {I.shape[0]} sequences, inputs {R.shape[0]}")
    B, nI, n = R.shape[0], I.shape[1], R.shape[1]
    dtype = np.result_type(np.asarray(plist[0]["mlp"]["W1"]).dtype, np.float32)
    I, R = I.astype(dtype), R.astype(dtype)

    H_full = np.concatenate([I, R], axis=1)
    H_none = R
    Hbar = R
    deltas, dWs, vecs, mats = [], [], [], []
    for block, p in zip(blocks, plist):
        W1 = np.asarray(p["mlp"]["W1"])
        z_f, a_f = block_parts(block, p, H_full)
        z_f, a_f = z_f[:, nI:], a_f[:, nI:]
        zbar, abar = block_parts(block, p, Hbar)
        delta = z_f - zbar
        r = (a_f - abar) @ W1  # (B, n, h)
        nrm2 = np.sum(abar * abar, axis=2)  # (B, n)
        dW = np.einsum("btd,bth->btdh", abar, r) / nrm2[:, :, None, None]
        w = 1.0 / nrm2 if weights == "inverse_norm" else np.ones_like(nrm2)
        if pool == "sample":
            vec = delta.mean(axis=1)
            mat = np.stack([_fit_matrix(abar[b], r[b], w[b], lam) for b in range(B)])
        else:
            vec = delta.reshape(-1, d).mean(axis=0)
            mat = _fit_matrix(abar.reshape(-1, d), r.reshape(B * n, -1), w.reshape(-1), lam)
        deltas.append(delta)
        dWs.append(dW)
        vecs.append(vec)
        mats.append(mat)
        mp = p["mlp"]
        if mode == "token":
            Hbar = zbar + delta + block.scale * _mlp_out(block, mp, abar, W1 + dW)
        else:
            Hbar = zbar + (vec[:, None] if pool == "sample" else vec) + block.scale * _mlp_out(block, mp, abar, W1 + mat)
        H_full = np.asarray(block.apply(p, H_full))
        H_none = np.asarray(block.apply(p, H_none))
    out_full = np.array(H_full[:, nI:])
    return {
        "deltas": np.stack(deltas), "dW": np.stack(dWs), "vectors": np.stack(vecs), "matrices": np.stack(mats),
        "outputs_full": out_full, "outputs_none": np.array(H_none), "outputs_patched": Hbar,
        "residual": np.max(np.abs(Hbar - out_full).reshape(B, -1), axis=1),
    }


def apply_thought(model, params, inputs, vectors, matrices) -> np.ndarray:
    """The prompt-free model on ``inputs`` (B, n, d) with condensed patches: in block l,
    ``y = z + delta_l + s * MLP_{W1 + Delta_l}(a)``. ``vectors`` (L, B, d) or (L, d) and
    ``matrices`` (L, B, d, h) or (L, d, h), as returned by ``thought_matrices`` (the patches can be
    reused on other inputs, e.g. a new query). Returns (B, n, d)."""
    blocks, single = _blocks(model)
    plist = _plist(params, single)
    d = blocks[0].d_model
    H = _as_batch(inputs, "inputs", d)
    H = H.astype(np.result_type(np.asarray(plist[0]["mlp"]["W1"]).dtype, np.float32))
    vectors, matrices = np.asarray(vectors), np.asarray(matrices)
    if len(vectors) != len(blocks) or len(matrices) != len(blocks):
        raise ValueError(f"apply_thought: need one vector and one matrix per block ({len(blocks)})")
    for block, p, v, M in zip(blocks, plist, vectors, matrices):
        z, a = block_parts(block, p, H)
        vv = v[:, None] if v.ndim == 2 else v
        H = z + vv + block.scale * _mlp_out(block, p["mlp"], a, np.asarray(p["mlp"]["W1"]) + M)
    return H
