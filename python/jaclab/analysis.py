"""Analyses: exact per-sample Jacobians and the papers' quantities (NumPy or tensors in, NumPy out;
with the model and x on a GPU the passes run there).

The second half of this module (geometric complexity, Jacobian spectra, Hessian
eigenvalues / trace / sharpness, modified loss, Lie bracket, softmax radius, Jacobian norms and
centroids, residual expansion, ICL weight update, LQR gains) follows shared/papers.md; see
docs/analysis.md.

Per-sample Jacobians use that samples of a batch do not interact in jaclab's blocks (every
op acts per row, attention per sequence): for a batch function ``F: (B, *in) -> (B, *out)``
the per-sample Jacobian ``dF(x)_b / dx_b`` is obtained for all ``b`` at once by one reverse
sweep per output coordinate (cotangent ``e_i`` in every sample) or one forward pass per input
coordinate (tangent ``e_j`` in every sample), whichever count is smaller. Memory: the result
plus one pass of activations; no batch x batch Jacobian is ever formed.
"""
from __future__ import annotations

import math as _math

import numpy as np

from . import _core
from . import transforms as _transforms
from ._pytree import tree_flatten as _tree_flatten, tree_unflatten as _tree_unflatten
from .transforms import grad, hvp, jvp, vjp, value_and_grad as _value_and_grad

__all__ = ["per_sample_jacobian", "input_jacobian", "layer_jacobians", "layer_jacobian"]


def _host(t) -> np.ndarray:
    """A result as NumPy: a tensor on a GPU is copied to the host first."""
    if isinstance(t, _core.Tensor) and t.device != "cpu":
        t = t.to("cpu")
    return np.asarray(t)


def _device_of(tree) -> str:
    """The device of a pytree's tensors ("cpu" for NumPy leaves)."""
    for leaf in _tree_flatten(tree)[0]:
        if isinstance(leaf, _core.Tensor):
            return leaf.device
    return "cpu"


def _on(a, device: str):
    """Host data for a computation on ``device``: unchanged on the CPU, a tensor there otherwise."""
    return a if device == "cpu" else _core.array(np.ascontiguousarray(a)).to(device)


def _position_index(x, position: int, name: str) -> int:
    """``position`` of a sequence batch ``x`` (B, T, d) as an index in [0, T) (negative counts from the end)."""
    if x.ndim != 3:
        raise ValueError(f"{name}: position= needs a sequence input x (B, T, d), got shape {tuple(x.shape)}")
    T = x.shape[1]
    if not -T <= position < T:
        raise ValueError(f"{name}: position {position} out of range for T={T}")
    return position % T


def _batch_tensor(x):
    """x as a Tensor, where it lives (a GPU tensor stays on its device; NumPy input: the CPU)."""
    return x if isinstance(x, _core.Tensor) else _core.array(np.asarray(x))


_CHUNK_ELEMENTS = 1 << 20  # tangent elements per batched forward pass (8 MB in float64; larger was slower)


def _basis_sweeps(fn, xt, mode: str, chunk_size: int | None = None):
    """Per-sample Jacobians of ``fn: (B, *in) -> (B, *out)`` at the tensor ``xt``, a chunk of
    basis directions per pass. Returns ``(use_rev, out_shape, dtype, sweeps)``; ``sweeps``
    yields ``(start, K, t)`` with ``t`` a ``(K, B, n)`` tensor: rows ``start .. start+K-1`` of
    every sample's Jacobian (reverse: cotangent e_i in every sample, n = n_in), or its columns
    (forward: one tangent e_j shared by all samples, so a weight's first product is done once;
    n = n_out). "auto" takes forward mode when ``n_in <= n_out``. Passes carry ~1M elements
    unless ``chunk_size`` says how many directions; where ``fn`` cannot carry a batch of
    directions (attention), one direction per pass."""
    B, in_shape = xt.shape[0], tuple(xt.shape[1:])
    n_in = int(np.prod(in_shape))
    (out,), pullback = _core.vjp_flat(lambda xs: [fn(xs[0])], [xt])  # one recorded forward pass
    if out.shape[0] != B:
        raise ValueError(f"per_sample_jacobian: output batch {out.shape[0]} != input batch {B}")
    full_out = tuple(out.shape)
    n_out = int(np.prod(full_out[1:]))
    dtype = np.dtype(out.dtype)
    use_rev = mode == "rev" or (mode == "auto" and n_out < n_in)
    n_dir = n_out if use_rev else n_in
    per_dir = max(B * max(n_in, n_out), 1)  # tangent elements one direction adds to a pass
    if chunk_size:
        chunk = chunk_size
    elif n_dir * per_dir <= 2 * _CHUNK_ELEMENTS:
        # One pass for all directions, up to twice the usual pass: its memory then becomes the
        # result, which saves mapping the result and copying every pass into it (W1's
        # 256 x 10 x 784 input Jacobian: 11-12% faster than in three passes).
        chunk = n_dir
    else:
        chunk = max(1, min(n_dir, _CHUNK_ELEMENTS // per_dir))

    def rows(start, K, batched):
        C = np.zeros((K, B, n_out), dtype)
        C[np.arange(K), :, start + np.arange(K)] = 1.0
        if batched:
            (g,) = pullback([_transforms.batched_array(C.reshape((K,) + full_out))], K)
        else:
            g = _core.array(np.stack([_host(pullback([_core.array(C[k].reshape(full_out))])[0]) for k in range(K)]))
        return _core.reshape(g, (K, B, n_in))

    def cols(start, K, batched):
        T = np.zeros((K, 1, n_in), np.dtype(xt.dtype))
        T[np.arange(K), 0, start + np.arange(K)] = 1.0
        if batched:
            flat = lambda xs: [fn(xs[0])]  # noqa: E731
            (tout,) = _core.jvp_flat(flat, [xt], [_transforms.batched_array(T.reshape((K, 1) + in_shape))], K)[1]
        else:
            tout = _core.array(np.stack([
                _host(jvp(fn, (xt,), (np.broadcast_to(T[k], (B, n_in)).reshape((B,) + in_shape),))[1])
                for k in range(K)]))
        return _core.reshape(tout, (K, B, n_out))

    return use_rev, full_out[1:], dtype, _transforms.in_chunks(n_dir, chunk, rows if use_rev else cols)


def per_sample_jacobian(fn, x, mode: str = "auto", chunk_size: int | None = None) -> np.ndarray:
    """Per-sample Jacobian of a batch function ``fn: (B, *in) -> (B, *out)``.

    Returns ``(B, *out, *in)`` as a NumPy array. ``mode``:
    - "fwd": batched forward mode, ``chunk_size`` input coordinates per pass (each pass
      carries that many tangent directions at once, for all samples);
    - "rev": batched reverse mode, ``chunk_size`` output coordinates per sweep (cotangent e_i
      in every sample);
    - "auto": "fwd" when ``n_in <= n_out``, else "rev".
    Assumes sample b's output depends only on sample b's input (true for jaclab's blocks).
    Memory: the result plus one pass with ``chunk_size`` times the activations (default:
    ~1M tangent elements per pass, or one pass of up to ~2M when that covers all directions:
    its memory then becomes the result). ``x`` may be a tensor on a GPU: ``fn`` then runs there
    (its parameters must live there too) and the result is copied to the host.
    """
    xt = _batch_tensor(x)
    x = np.empty(tuple(xt.shape), np.dtype(xt.dtype))  # shape and dtype only; the values live in xt
    if x.ndim < 1:
        raise ValueError(f"per_sample_jacobian: x must have a batch axis, got shape {x.shape}")
    if mode not in ("auto", "fwd", "rev"):
        raise ValueError(f"per_sample_jacobian: mode must be 'auto', 'fwd' or 'rev', got {mode!r}")
    if chunk_size is not None and (not isinstance(chunk_size, int) or chunk_size < 1):
        raise ValueError(f"per_sample_jacobian: chunk_size must be a positive int, got {chunk_size!r}")
    B, in_shape = x.shape[0], x.shape[1:]
    n_in = int(np.prod(in_shape))
    use_rev, out_shape, dtype, sweeps = _basis_sweeps(fn, xt, mode, chunk_size)
    n_out = int(np.prod(out_shape))
    n_dir = n_out if use_rev else n_in
    J = None
    for start, K, t in sweeps:
        # rev: t (K, B, n_in) -> (B, K, n_in), rows stay contiguous; fwd: t (K, B, n_out) ->
        # (B, n_out, K), the engine's tiled transposing copy (NumPy's is ~5x slower).
        if use_rev:
            c = _core.reshape(_core.transpose(t, (1, 0, 2)), (B, K * n_in)).to("cpu")
        else:
            c = _core.reshape(_core.transpose(_core.reshape(t, (K, B * n_out)), None), (B, n_out, K)).to("cpu")
        del t
        if start == 0 and K == n_dir:  # one pass did all directions: its memory becomes J
            J = _core._release_to_numpy(c)  # None if something else holds c
            if J is not None:
                J = J.reshape(B, n_out, n_in)
                break
        if J is None:
            J = _workspace((B, n_out, n_in), dtype)
        if use_rev:
            J[:, start:start + K, :] = np.asarray(c).reshape(B, K, n_in)
        else:
            J[:, :, start:start + K] = np.asarray(c)
    return J.reshape((B,) + out_shape + tuple(in_shape))


def _owned(P) -> np.ndarray:
    """A product as a writable NumPy array on the host, taking the tensor's memory where nothing
    else holds it."""
    if isinstance(P, np.ndarray):
        return P
    if P.device != "cpu":
        P = P.to("cpu")
    J = _core._release_to_numpy(P)
    return np.array(P) if J is None else J


def _residual_product(s: float, inner: list, B: int, P=None):
    """``P (I + s X)`` per sample, ``X`` the product of ``inner``; ``P`` None means the identity.
    With ``P``: ``P + s (P X)``, the chain taken through ``P``'s rows (forward/reverse mode's
    order). Forming ``I + s X`` and multiplying it in would save elementwise passes (W3's input
    Jacobian: 8% in float64), but then ``P``'s identity part goes through the GEMM's rounding
    too: 10x the error of the sweeps, which only round the correction ``s P X``. Without ``P``:
    ``I + s X`` formed, the scale folded into its first factor, the identity added on the
    diagonal."""
    if P is not None:
        return _core.residual(P, _factor_product(inner, B, P), s)
    k, a = inner[0]
    if k != "R":  # the scale folded into the first factor
        scale = np.asarray(s, np.dtype(a.dtype))
        inner = [(k, _core.multiply(a, scale) if _on_device(a) or k == "W" else a * scale)] + inner[1:]
    R = _factor_product(inner, B)
    if _on_device(R):  # on a GPU: (s) X + I in engine ops
        dtype = np.dtype(R.dtype)
        if k == "R":
            R = _core.multiply(R, np.asarray(s, dtype))
        return _core.add(R, _core.array(np.eye(R.shape[-1], dtype=dtype), device=R.device))
    R = _owned(R)
    if R.ndim == 2:
        R = np.ascontiguousarray(np.broadcast_to(R, (B,) + R.shape))
    if k == "R":  # a residual of a residual: the scale cannot fold into a factor
        R *= s
    n = R.shape[1]
    R.reshape(B, n * n)[:, ::n + 1] += 1.0
    return R


def _factor_product(mats: list, B: int, P=None):
    """``P M_1 M_2 ... M_k`` per sample, left to right (``P`` None: the identity). ``("W", A)``
    is one ``(n, m)`` matrix shared by all samples; ``("d", d)``, ``d`` NumPy ``(B, n)``, is
    ``diag(d_b)``; ``("R", (s, inner))`` is ``I + s * (product of inner)``. Returns ``(B, n_1,
    m_k)``, a tensor or a NumPy array (the engine takes either without a copy). A diagonal
    scales the columns of the product so far (the rows of the next matrix when it comes first),
    and each shared matrix is one GEMM with the samples folded into its rows."""
    pending = None  # a leading diagonal not yet applied
    for kind, a in mats:
        if kind == "R":
            if pending is not None:  # diag(pending) (I + s X): rows of the formed residual scaled
                P, pending = _core.multiply(_reshape(pending, (B, -1, 1)), _residual_product(*a, B)), None
            else:
                P = _residual_product(*a, B, P)
        elif kind == "d":
            if P is None:
                pending = a if pending is None else _core.multiply(pending, a) if _on_device(a) else pending * a
            else:
                P = _core.multiply(P, _reshape(a, (B, 1, -1)))
        elif P is None:
            P = a if pending is None else _core.multiply(_reshape(pending, (B, -1, 1)), a)
            pending = None
        else:
            P = _core.matmul(P, a)
    if P is None:  # diagonals only
        return _diagonals(pending)
    if P.ndim == 2:  # shared matrices only: the same Jacobian for every sample
        if _on_device(P):
            return _core.add(_core.zeros((B,) + tuple(P.shape), np.dtype(P.dtype), P.device), P)
        return np.ascontiguousarray(np.broadcast_to(np.asarray(P), (B,) + tuple(P.shape)))
    return P


def _on_device(a) -> bool:
    return isinstance(a, _core.Tensor) and a.device != "cpu"


def _reshape(a, shape):
    """NumPy arrays stay NumPy (a view); tensors (on a GPU) are reshaped by the engine."""
    return a.reshape(shape) if isinstance(a, np.ndarray) else _core.reshape(a, shape)


def _diagonals(d):
    """``diag(d_b)`` per sample, ``(B, n, n)``; NumPy, or on d's GPU."""
    B, n = d.shape
    if _on_device(d):
        eye = _core.array(np.eye(n, dtype=np.dtype(d.dtype)), device=d.device)
        return _core.multiply(eye, _core.reshape(d, (B, 1, n)))
    D = np.zeros((B, n, n), d.dtype)
    D.reshape(B, n * n)[:, ::n + 1] = d
    return D


def _oriented(factors: list, out_first: bool) -> list:
    """A block's factors (input side first) as the matrices to multiply left to right: output
    side first with the weights transposed (``J = F_L^T ... F_1^T``), or as declared (``J^T``).
    Slopes on the host become NumPy (sliced per chunk); on a GPU they stay tensors there."""
    mats = []
    for f in (reversed(factors) if out_first else factors):
        if f[0] == "W":
            mats.append(("W", _core.transpose(f[1], None) if out_first else f[1]))
        elif f[0] == "d":
            mats.append(("d", f[1] if _on_device(f[1]) else np.asarray(f[1])))
        else:
            mats.append(("R", (f[1], _oriented(f[2], out_first))))
    return mats


def _leaves(factors: list):
    """``(kind, array)`` for every array of a factor list, residual insides included."""
    for f in factors:
        if f[0] == "res":
            yield from _leaves(f[2])
        else:
            yield f[0], f[1]


def _rows(mats: list, lo: int, hi: int) -> list:
    """The factors for samples lo..hi-1 (per-sample diagonals sliced; shared weights as they are)."""
    return [(k, a[lo:hi]) if k == "d" else ("R", (a[0], _rows(a[1], lo, hi))) if k == "R" else (k, a)
            for k, a in mats]


def _out_width(factors: list, n_in: int) -> int | None:
    """The width a factor chain maps ``n_in`` to; None where a residual's block changes the width
    (a broadcasting residual)."""
    n = n_in
    for f in factors:
        if f[0] == "W":
            if f[1].shape[0] != n:
                return None
            n = f[1].shape[1]
        elif f[0] == "d":
            if f[1].shape[1] != n:
                return None
        elif _out_width(f[2], n) != n:
            return None
    return n


def _structured_plan(block, params, x):
    """What the structured paths need: ``(mats, out_first, n_out, chunk)`` for a block that
    declares its factors (``Module._jacobian_factors``) at a batch of vectors ``x``, else
    None. ``mats`` are the factors oriented for ``_factor_product`` (output side first when
    ``n_out <= n_in``); ``chunk`` is the samples per pass (see ``_structured_jacobian``)."""
    factors_of = getattr(block, "_jacobian_factors", None)
    if factors_of is None or x.ndim != 2:
        return None
    factors = factors_of(params, x)
    if not factors:
        return None
    leaves = list(_leaves(factors))
    if any(np.dtype(a.dtype) != np.dtype(x.dtype) for _, a in leaves):
        return None  # mixed dtypes: the basis sweeps' forward pass raises the block's own error
    B, n_in = x.shape
    n_out = _out_width(factors, n_in)
    if n_out is None:
        return None  # a broadcasting residual: left to the basis sweeps
    out_first = n_out <= n_in
    mats = _oriented(factors, out_first)
    n_1 = n_out if out_first else n_in
    # the widest feature dim (a diagonal's shape is (B, n): its B is not a width)
    widest = max([n_in, n_out] + [max(a.shape) if k == "W" else a.shape[1] for k, a in leaves])
    # Intermediates up to the result's size (or ~1M elements) in one chunk: the peak is then
    # about twice the result. A residual applied to a running product holds three arrays of
    # that size at once, so there chunks take a quarter of the result.
    # On a GPU one pass: tensors there are not sliced by sample.
    budget = n_out * n_in * B // (4 if any(k == "R" for k, _ in mats[1:]) else 1)
    chunk = max(1, min(B, max(budget, _CHUNK_ELEMENTS) // (n_1 * widest))) if x.device == "cpu" else B
    return mats, out_first, n_out, chunk


def _chunk_products(mats: list, B: int, chunk: int):
    """``(b0, b1, product of mats for samples b0..b1-1)`` chunk by chunk."""
    for b0 in range(0, B, chunk):
        b1 = min(B, b0 + chunk)
        yield b0, b1, _factor_product(mats if chunk == B else _rows(mats, b0, b1), b1 - b0)


def _structured_jacobian(block, params, x) -> np.ndarray | None:
    """Per-sample Jacobian ``(B, n_out, n_in)`` of ``block.apply(params, .)`` at a batch of
    vectors ``x`` (B, n_in; on the CPU or, with the params, on a GPU), from the factors the block declares (``Module._jacobian_factors``:
    shared weights, per-sample activation slopes, residual sums), or None where it declares none.

    The product is taken from the smaller end, as reverse or forward mode would: output side
    first when ``n_out <= n_in`` (it then lands in ``(B, n_out, n_in)`` directly), else input
    side first and transposed at the end. The first shared matrix is used once for all samples
    (a basis sweep does that product per sample in reverse mode); a residual block adds
    ``s P X`` to the running product ``P`` (or is formed as ``I + s X`` where it comes first; see
    ``_residual_product``). Samples are taken in chunks where an intermediate ``(B, n_1, m)``
    would exceed both the result and ~1M elements (on a GPU: one pass). Cost: one GEMM per
    weight matrix at ``B * n_1`` rows (``B * width`` for a residual that comes first)."""
    plan = _structured_plan(block, params, x)
    if plan is None:
        return None
    mats, out_first, n_out, chunk = plan
    B, n_in = x.shape
    J = None
    for b0, b1, P in _chunk_products(mats, B, chunk):
        if not out_first:  # (b, n_in, n_out) -> (b, n_out, n_in): the engine's tiled transposing copy
            P = (np.ascontiguousarray(P.transpose(0, 2, 1)) if isinstance(P, np.ndarray)
                 else _core.reshape(_core.transpose(P, (0, 2, 1)), (b1 - b0, n_out, n_in)))
        if chunk == B:  # the product's memory becomes the result
            return _owned(P)
        if J is None:
            J = _workspace((B, n_out, n_in), np.dtype(x.dtype))
        J[b0:b1] = np.asarray(P)
    return J


def _structured_sq_sum(block, params, x) -> float | None:
    """``sum_b ||J_b||_F^2`` from the block's factors (as ``_structured_jacobian``), or None.
    Where the product ends in a shared matrix ``A`` with more columns than rows (an MLP's input
    layer, read from the output side), ``||P_b A||_F^2 = sum((P_b G) * P_b)`` with the Gram
    matrix ``G = A A^T`` formed once: the per-sample products stop at ``A``'s rows (W1: 512
    instead of 784 columns; 0.41 GFLOP once for 0.71 saved). The norm needs no transpose."""
    plan = _structured_plan(block, params, x)
    if plan is None:
        return None
    mats, _, _, chunk = plan
    B = x.shape[0]
    k, A = mats[-1]
    gram = None
    if len(mats) > 1 and k == "W" and A.shape[1] > A.shape[0]:
        gram, mats = _core.matmul(A, _core.transpose(A, None)), mats[:-1]
    total = 0.0
    for _, _, P in _chunk_products(mats, B, chunk):
        PG = P if gram is None else _core.matmul(P, gram)
        total += float(_host(_core.sum(_core.multiply(PG, P))))
    return total


def _block_jacobian(block, params, h) -> np.ndarray:
    """Per-sample Jacobian of ``block.apply(params, .)`` at ``h``: structured where the block
    declares its factors, else basis sweeps."""
    h = _batch_tensor(h)
    J = _structured_jacobian(block, params, h)
    return J if J is not None else per_sample_jacobian(lambda v: block.apply(params, v), h)


def input_jacobian(model, params, x, position: int | None = None) -> np.ndarray:
    """Per-sample input Jacobian of ``model.apply(params, .)`` at ``x``.

    Vector models, x ``(B, d_in)``: returns ``(B, d_out, d_in)``.
    Sequence models, x ``(B, T, d)``: returns ``(B, T, d_out, T, d)``, or with ``position=p``
    the slice for output position p, ``(B, d_out, T, d)`` (p may be negative).
    On a GPU: pass ``params`` and ``x`` as tensors there; the result comes back as NumPy.
    """
    x = _batch_tensor(x)
    if position is None:
        return _block_jacobian(model, params, x)
    p, T = _position_index(x, position, "input_jacobian"), x.shape[1]

    # Select the position with a fixed one-hot matmul (differentiable, keeps the batch axis first).
    sel = np.zeros((1, T), np.dtype(x.dtype))
    sel[0, p] = 1.0
    sel = _on(sel, x.device)

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
    return [_block_jacobian(layer, p, h) for layer, p, h in zip(layers, params, hs[:-1])]


def layer_jacobian(model, params, x, l: int, m: int, jacobians: list | None = None) -> np.ndarray:
    """Per-sample ``d h_m / d h_l`` (0 <= l <= m <= L) as ``(B, *shape_m, *shape_l)``: the
    product ``J_{m-1} ... J_l`` of consecutive layer Jacobians (pass ``jacobians`` from
    ``layer_jacobians`` to reuse them across pairs).
    """
    Js = jacobians if jacobians is not None else layer_jacobians(model, params, x)
    L = len(Js)
    if not 0 <= l <= m <= L:
        raise ValueError(f"layer_jacobian: need 0 <= l <= m <= {L}, got l={l}, m={m}")
    B = _batch_tensor(x).shape[0]
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


# =============================================================================================
# The papers' quantities (shared/papers.md sections 3-12). NumPy in, NumPy out; float64
# results when the parameters are float64. "pass" below = one forward pass, one JVP (forward
# mode pass) or one reverse sweep over the batch; costs are stated in those units.
# =============================================================================================

__all__ += [
    "geometric_complexity", "geometric_complexity_grad", "jacobian_spectrum",
    "hessian_eigs", "hessian_trace", "sharpness", "modified_loss", "lie_bracket",
    "softmax_radius", "clip_to_radius", "jacobian_norm", "jacobian_norm_regularizer",
    "centroid", "centroid_alignment", "residual_expansion", "icl_weight_update",
    "icl_dynamics", "lqr_gains", "position_layer_jacobians",
]


# ---- small helpers ----------------------------------------------------------------------------


def _apply_fn(model):
    """``model.apply`` for a block, or ``model`` itself for a plain ``f(params, x)``."""
    fn = getattr(model, "apply", None)
    if fn is not None:
        return fn
    if callable(model):
        return model
    raise TypeError(f"expected a jl.nn block or a function f(params, x), got {type(model).__name__}")


def _np_tree(tree):
    leaves, td = _tree_flatten(tree)
    return _tree_unflatten(td, [np.array(_host(a)) for a in leaves])


class _Flat:
    """A params pytree as one float64 vector, and back (each leaf keeps its dtype). Tensors on
    a GPU stay there (the vectors live on the host; HVP tangents follow the params)."""

    def __init__(self, params):
        leaves, self.tree = _tree_flatten(params)
        if not leaves:
            raise ValueError("params has no arrays")
        on_gpu = [isinstance(a, _core.Tensor) and a.device != "cpu" for a in leaves]
        arrs = [a if g else np.asarray(a) for a, g in zip(leaves, on_gpu)]
        self.shapes = [a.shape for a in arrs]
        self.dtypes = [np.dtype(a.dtype) for a in arrs]
        self.sizes = [int(np.prod(a.shape)) for a in arrs]
        self.offsets = np.concatenate([[0], np.cumsum(self.sizes)]).astype(int)
        self.n = int(self.offsets[-1])
        self.params = _tree_unflatten(self.tree, arrs)

    def flatten(self, tree, out=None) -> np.ndarray:
        """One float64 (n,) vector; into ``out`` when given."""
        leaves, td = _tree_flatten(tree)
        if td != self.tree:
            raise ValueError(f"pytree structure {td} does not match the params {self.tree}")
        if out is None:
            return np.concatenate([_host(a).astype(np.float64, copy=False).reshape(-1) for a in leaves])
        for i, a in enumerate(leaves):  # converted straight into place: no float64 temporaries
            np.copyto(out[self.offsets[i]:self.offsets[i + 1]], _host(a).reshape(-1))
        return out

    def unflatten(self, v, bufs: dict | None = None) -> object:
        """The params pytree of vector v: views of v where dtype and layout allow, else copies;
        with ``bufs`` (a dict kept by the caller) the copies go into buffers reused across calls."""
        v = np.asarray(v)
        parts = []
        for i, (shape, dt) in enumerate(zip(self.shapes, self.dtypes)):
            seg = v[self.offsets[i]:self.offsets[i + 1]].reshape(shape)
            if bufs is not None and (seg.dtype != dt or not seg.flags.c_contiguous):
                if i not in bufs:
                    bufs[i] = np.empty(shape, dt)
                np.copyto(bufs[i], seg, casting="unsafe")
                seg = bufs[i]
            parts.append(np.ascontiguousarray(seg, dtype=dt))
        return _tree_unflatten(self.tree, parts)


def _jl_tree_sqnorm(tree):
    """sum of squares over a pytree of tensors, as a differentiable jaclab scalar."""
    total = None
    for leaf in _tree_flatten(tree)[0]:
        s = _core.sum(leaf * leaf)
        total = s if total is None else total + s
    return total


def _per_sample_sq(g, B):
    """(B, ...) tensor -> (B,) per-sample sums of squares (differentiable)."""
    return _core.sum(_core.reshape(g * g, (B, int(np.prod(g.shape[1:])))), 1)


def _jac_sq_terms(apply, params, x, mode="auto"):
    """Per-sample ||J_x f(x_b)||_F^2 as a differentiable (B,) tensor: one VJP with cotangent
    e_i in every sample per output coordinate (reverse; the outer derivative is then
    reverse-over-reverse) or one JVP with tangent e_j per input coordinate (forward; outer
    derivative reverse-over-forward), whichever count is smaller. x may be a GPU tensor."""
    x = _batch_tensor(x)
    B = x.shape[0]
    out, pullback = vjp(lambda h: apply(params, h), x)
    n_out = int(np.prod(out.shape[1:]))
    n_in = int(np.prod(x.shape[1:]))
    dtype = np.dtype(out.dtype)
    total = None
    if mode == "rev" or (mode == "auto" and n_out <= n_in):
        ct = np.zeros((B, n_out), dtype)
        for i in range(n_out):
            ct[:, i] = 1.0
            (g,) = pullback(_core.array(ct.reshape(out.shape).copy()))
            ct[:, i] = 0.0
            s = _per_sample_sq(g, B)
            total = s if total is None else total + s
    else:
        t = np.zeros((B, n_in), np.dtype(x.dtype))
        for j in range(n_in):
            t[:, j] = 1.0
            _, tout = jvp(lambda h: apply(params, h), (x,), (t.reshape(tuple(x.shape)).copy(),))
            t[:, j] = 0.0
            s = _per_sample_sq(tout, B)
            total = s if total is None else total + s
    return total


# ---- 1. geometric complexity (papers.md section 6) --------------------------------------------


def geometric_complexity(model, params, x, mode: str = "auto") -> float:
    """Geometric complexity ``GC = (1/B) sum_b ||J_x f(x_b)||_F^2`` (exact).

    ``model``: a ``jl.nn`` block (or any ``f(params, x)``), ``x``: ``(B, *in)``; the model maps
    ``(B, *in) -> (B, *out)`` with samples independent. The Jacobian of sample b is the
    ``(prod(out), prod(in))`` matrix; no division by dimensions (papers.md section 6: a
    discrete Dirichlet energy). For generalisation use the logits as ``f``.

    Cost: the work of ``min(prod(out), prod(in))`` passes over the batch (``mode="rev"``: a
    reverse sweep per output coordinate; ``"fwd"``: a JVP per input coordinate), carried as
    batched sweeps of many directions each (~1M elements per sweep), with the squares summed
    in the engine; the Jacobians are never formed. With ``mode="auto"``, blocks that declare
    their Jacobian's factors (``Linear``, activations, ``MLP``, ``Residual`` and ``Sequential``
    stacks of them; vectors) take products of weights and activation slopes instead,
    with the input layer's Gram matrix in place of the layer (see ``_structured_sq_sum``).
    Returns a float.
    """
    if mode not in ("auto", "fwd", "rev"):
        raise ValueError(f"geometric_complexity: mode must be 'auto', 'fwd' or 'rev', got {mode!r}")
    x = _batch_tensor(x)
    if x.ndim < 1 or x.shape[0] == 0:
        raise ValueError(f"geometric_complexity: x must have a non-empty batch axis, got shape {x.shape}")
    total = _structured_sq_sum(model, params, x) if mode == "auto" else None
    if total is None:
        total = _jac_sq_sum(_apply_fn(model), params, x, mode)
    return total / x.shape[0]


def _jac_sq_sum(apply, params, x, mode="auto") -> float:
    """``sum_b ||J_x f(x_b)||_F^2`` as a float (not differentiable; see ``_jac_sq_terms``): the
    passes of ``per_sample_jacobian``, with the squares summed by the engine (in double)
    instead of forming the Jacobians."""
    _, _, _, sweeps = _basis_sweeps(lambda h: apply(params, h), x, mode)
    return sum(float(_host(_core.sum(t * t))) for _, _, t in sweeps)


def geometric_complexity_grad(model, params, x, mode: str = "auto"):
    """``(GC, dGC/dparams)``: geometric complexity and its exact gradient w.r.t. ``params``.

    The gradient has the pytree of ``params`` (NumPy arrays) and is usable as a regulariser
    (``loss + lam * GC``). It is the reverse-mode derivative of the traced computation of
    ``geometric_complexity``: reverse-over-reverse when ``prod(out) <= prod(in)`` (``mode="rev"``),
    reverse-over-forward otherwise (``mode="fwd"``).

    Cost: ``min(prod(out), prod(in))`` inner passes plus one outer reverse sweep over all of
    them (about 3x the cost of ``geometric_complexity``); memory holds the graph of all inner
    passes.
    """
    if mode not in ("auto", "fwd", "rev"):
        raise ValueError(f"geometric_complexity_grad: mode must be 'auto', 'fwd' or 'rev', got {mode!r}")
    x = _batch_tensor(x)
    apply = _apply_fn(model)
    value, g = _value_and_grad(lambda p: _core.mean(_jac_sq_terms(apply, p, x, mode)))(params)
    return float(_host(value)), _np_tree(g)


# ---- 2. Jacobian spectra ----------------------------------------------------------------------


def jacobian_spectrum(model, params, x, layer=None) -> np.ndarray:
    """Singular values of per-sample Jacobians, ``(B, k)`` in descending order.

    - ``layer=None``: the input-output Jacobian ``J_x f(x_b)`` of ``model`` (any block),
      ``k = min(prod(out), prod(in))``.
    - ``layer=l`` (int, ``Sequential`` only): the layer-to-layer Jacobian
      ``d h_{l+1} / d h_l`` of layer ``l`` (negative ``l`` counts from the end);
    - ``layer=(l, m)``: ``d h_m / d h_l`` (product of layer Jacobians, ``0 <= l <= m <= L``).

    Cost: ``min(out, in)`` passes for the Jacobian (of the chosen layer only for an int), one
    LAPACK ``dgesdd`` (singular values only, float64) of each ``(out, in)`` block, the samples
    side by side on jaclab's threads.
    """
    x = _batch_tensor(x)
    B = x.shape[0]
    if layer is None:
        J = (_block_jacobian(model, params, x) if hasattr(model, "_jacobian_factors")
             else per_sample_jacobian(lambda h: _apply_fn(model)(params, h), x))
        half = (J.ndim - 1) // 2
        n_out = int(np.prod(J.shape[1:1 + half]))
    else:
        layers = getattr(model, "layers", None)
        if layers is None:
            raise TypeError(f"jacobian_spectrum: layer= needs a Sequential model, got {type(model).__name__}")
        if isinstance(layer, tuple):
            l, m = layer
            J = layer_jacobian(model, params, x, l, m)
            hs_ndim = model.apply_layers(params, x)[m].ndim - 1
            n_out = int(np.prod(J.shape[1:1 + hs_ndim]))
        else:
            L = len(layers)
            if not -L <= layer < L:
                raise ValueError(f"jacobian_spectrum: layer {layer} out of range for {L} layers")
            layer %= L
            hs = model.apply_layers(params, x)
            J = _block_jacobian(layers[layer], params[layer], hs[layer])
            n_out = int(np.prod(hs[layer + 1].shape[1:]))
    Jm = np.ascontiguousarray(np.asarray(J, np.float64).reshape(B, n_out, -1))
    # LAPACK dgesdd in jaclab's own OpenBLAS, the samples side by side on the pool (2x NumPy's
    # loop on 2 cores for 16 x 256 x 256; and NumPy's LAPACK would leave NumPy's OpenBLAS
    # threads spinning ~0.1 s on the pool's cores, see hessian_eigs).
    return _core._singular_values(Jm)


# ---- 3. Hessian spectrum, trace, sharpness ----------------------------------------------------


def _hvp_flat(loss, flat: _Flat):
    # Tangent leaves that need a conversion (float32 params) go into buffers kept across calls:
    # a fresh 4 MB conversion per HVP was a page fault per 4 KB. Safe to reuse: each result is
    # copied out (flatten) before the next call.
    bufs = {}

    def mv(v, out=None):
        (hv,) = hvp(loss, (flat.params,), (flat.unflatten(v, bufs),))
        return flat.flatten(hv, out)

    mv.writes_out = True  # _lanczos may pass out=
    return mv


def _is_vec64(a) -> bool:
    return a.dtype == np.float64 and a.ndim == 1 and a.flags.c_contiguous


def _vdot(a, b) -> float:
    # Float64 vectors go through the engine's BLAS (threaded). Never NumPy's BLAS: a NumPy BLAS
    # call between two HVPs wakes NumPy's own OpenBLAS thread pool, whose spinning threads then
    # halve the speed of the engine's GEMMs on a 2-core machine.
    if _is_vec64(a) and _is_vec64(b):
        return _core._vec_dot(a, b)
    return float(np.einsum("i,i->", a, b))


def _vnorm(a) -> float:
    return _math.sqrt(_vdot(a, a))




def _workspace(shape, dtype=np.float64) -> np.ndarray:
    """An uninitialised, writable NumPy array on an engine memory block, for large results and
    work arrays. Touching fresh memory page by page costs ~13 ms per 7.5 MB on a VM (one fault
    per 4 KB page): for a Lanczos basis of n ~ 1e6 that is a third of an HVP per step. The engine
    maps blocks from 16 MiB with their pages in place (MAP_POPULATE on Linux, ~2 ms per 7.5 MB),
    and its block cache keeps a freed block for the next request of the same size, so a repeated
    analysis (a sharpness measurement per epoch) maps nothing new. Small arrays come from NumPy."""
    dtype = np.dtype(dtype)
    if int(np.prod(shape)) * dtype.itemsize < (1 << 20):
        return np.empty(shape, dtype)
    return _core._workspace(list(shape), dtype)


def _lanczos(matvec, n: int, iters: int, rng) -> tuple[np.ndarray, list]:
    """Lanczos with partial reorthogonalisation (Simon 1984). Returns the tridiagonal matrix T
    (iters x iters) and the basis Q (iters, n). ``matvec(v)`` returns A v; one with an attribute
    ``writes_out`` is called as ``matvec(v, out=...)`` to write it straight into the basis.

    The loss of orthogonality w_{j+1,k} ~ q_{j+1} . q_k is tracked by Simon's recurrence; only when
    it exceeds sqrt(eps) is the new vector (and the next one) reorthogonalised against the whole
    basis, twice. Full reorthogonalisation at every step costs O(n j) memory traffic per HVP,
    which for large models (n ~ 1e6) exceeded the HVPs themselves. On breakdown (an invariant
    Krylov subspace) it restarts with a random vector orthogonal to the basis, so that with
    ``iters == n`` the eigenvalues of T are exactly those of the operator."""
    eps = np.finfo(np.float64).eps
    tol = np.sqrt(eps)
    # The basis: each A q_j is written straight into row j + 1 and orthogonalised there.
    # Work vectors come from engine blocks, kept between calls (see _workspace), and are filled
    # in place: a fresh 7.5 MB array per call costs ~13 ms of page faults on a VM.
    Q = _workspace((iters, n))
    last = _workspace((n,))  # A q_j of the last step has no row
    alpha = np.zeros(iters)
    beta = np.zeros(max(iters - 1, 0))
    omega = np.zeros(iters + 1)  # omega[k] ~ q_j . q_k for the current j
    omega_prev = np.zeros(iters + 1)  # the same for j - 1
    omega[0] = 1.0
    force = False  # Simon: after a reorthogonalisation, also reorthogonalise the next vector
    scale = 0.0

    def reorthogonalise(v, j):  # classical Gram-Schmidt against q_0..q_j, twice
        for _ in range(2):
            coef = [_vdot(Q[k], v) for k in range(j + 1)]
            for k in range(j + 1):
                axpy_(v, coef[k], Q[k])
        return v

    # Vector updates in place (a fresh n-vector per operation costs page faults that, for
    # n ~ 1e6, add up to a sizeable fraction of an HVP), by the engine's threaded BLAS: one pass
    # each, ~6x faster than NumPy's two single-threaded ones.
    def axpy_(y, alpha, x):  # y -= alpha * x
        _core._vec_axpy(-float(alpha), x, y)

    def scal_(x, alpha):  # x *= alpha
        _core._vec_scal(float(alpha), x)

    rng.standard_normal(out=Q[0])
    scal_(Q[0], 1.0 / _vnorm(Q[0]))
    for j in range(iters):
        q = Q[j]
        w = Q[j + 1] if j + 1 < iters else last
        if getattr(matvec, "writes_out", False):
            matvec(q, out=w)
        else:
            w[:] = matvec(q)
        if j > 0:
            axpy_(w, beta[j - 1], Q[j - 1])
        a = _vdot(q, w)
        axpy_(w, a, q)
        alpha[j] = a
        if j == iters - 1:
            break
        b = _vnorm(w)
        # ||A q_j||, the operator's scale for the tolerances below, from the recurrence
        # A q_j = beta_{j-1} q_{j-1} + alpha_j q_j + w (orthogonal terms) instead of one more pass.
        scale = max(scale, _math.sqrt((beta[j - 1] ** 2 if j > 0 else 0.0) + a * a + b * b))
        new = np.zeros(iters + 1)
        breakdown = b <= 1e-10 * max(scale, 1e-300)
        if not breakdown and j > 0:
            k = np.arange(j)
            est = beta[k] * omega[k + 1] + (alpha[k] - a) * omega[k] - beta[j - 1] * omega_prev[k]
            est[1:] += beta[k[1:] - 1] * omega[k[1:] - 1]
            est = est / b
            new[:j] = est + np.sign(est + (est == 0)) * eps * np.sqrt(n) * (beta[k] + b) / b
        new[j] = eps * np.sqrt(n) * scale / max(b, 1e-300)
        if breakdown or force or np.max(np.abs(new[:j + 1])) > tol:
            force = not force and not breakdown
            reorthogonalise(w, j)
            b = _vnorm(w)
            new[:j + 1] = eps
            breakdown = b <= 1e-10 * max(scale, 1e-300)
        if breakdown:
            rng.standard_normal(out=w)
            reorthogonalise(w, j)
            scal_(w, 1.0 / _vnorm(w))
            beta[j] = 0.0
        else:
            scal_(w, 1.0 / b)
            beta[j] = b
        new[j + 1] = 1.0
        omega_prev, omega = omega, new
    T = np.diag(alpha) + np.diag(beta, 1) + np.diag(beta, -1)
    return T, Q


def _select(evals, which: str, k: int):
    if which == "LA":
        order = np.argsort(-evals, kind="stable")
    elif which == "SA":
        order = np.argsort(evals, kind="stable")
    elif which == "LM":
        order = np.argsort(-np.abs(evals), kind="stable")
    else:
        raise ValueError(f"which must be 'LA', 'SA' or 'LM', got {which!r}")
    return order[:k]


def hessian_eigs(loss, params, k: int = 1, method: str = "lanczos", iters: int | None = None, seed: int = 0,
                 which: str = "LA", return_vectors: bool = False):
    """``k`` Hessian eigenvalues of scalar ``loss(params)`` from exact Hessian-vector products.

    ``params``: a pytree of arrays, flattened (in ``jl.tree_flatten`` order) to ``n`` numbers.
    ``which``: ``"LA"`` largest algebraic (default; descending), ``"SA"`` smallest (ascending),
    ``"LM"`` largest magnitude (descending ``|lambda|``).

    ``method="lanczos"``: Lanczos with partial reorthogonalisation (Simon 1984: the loss of
    orthogonality is tracked, and the basis reorthogonalised only when it exceeds sqrt(eps)),
    started from a Gaussian vector (``seed``), ``iters`` steps (default
    ``min(n, max(3k, k + 30))``); one HVP (forward-over-reverse, ``jl.hvp``) per step plus a few
    ``O(n)`` vector operations (the engine's threaded BLAS), ``O(n * iters)`` when it
    reorthogonalises. The basis is ``iters x n`` float64. With
    ``iters = n`` the eigenvalues are exact to rounding; otherwise the extreme Ritz values
    converge first. ``method="dense"``: ``n`` HVPs build the full Hessian (symmetrised),
    then ``np.linalg.eigvalsh``.

    Returns a ``(k,)`` NumPy array, or ``(evals, vecs)`` with ``vecs`` a list of ``k``
    eigenvector pytrees when ``return_vectors``.
    """
    flat = _Flat(params)
    n = flat.n
    if not 1 <= k <= n:
        raise ValueError(f"hessian_eigs: need 1 <= k <= n = {n}, got k={k}")
    mv = _hvp_flat(loss, flat)
    if method == "lanczos":
        it = min(n, max(3 * k, k + 30)) if iters is None else int(iters)
        if not k <= it <= n:
            raise ValueError(f"hessian_eigs: need k <= iters <= n = {n}, got iters={it}")
        T, Q = _lanczos(mv, n, it, np.random.default_rng(seed))
        # T's eigenpairs by LAPACK in jaclab's own single-threaded OpenBLAS: np.linalg.eigh would
        # wake NumPy's OpenBLAS threads, which then spin ~0.1 s on the cores jaclab's pool uses.
        evals, S = _core._tridiagonal_eigh(np.ascontiguousarray(np.diag(T)), np.ascontiguousarray(np.diag(T, 1)))
        idx = _select(evals, which, k)
        vals, vecs = evals[idx], None
        if return_vectors:  # Ritz vectors, sum_j S[j, i] q_j (no NumPy BLAS: see _vdot)
            vecs = np.einsum("jn,jk->kn", Q, S[:, idx])
    elif method == "dense":
        H = np.empty((n, n))
        e = np.zeros(n)
        for i in range(n):
            e[i] = 1.0
            H[:, i] = mv(e)
            e[i] = 0.0
        evals, V = np.linalg.eigh(0.5 * (H + H.T))
        idx = _select(evals, which, k)
        vals, vecs = evals[idx], V[:, idx].T
    else:
        raise ValueError(f"hessian_eigs: method must be 'lanczos' or 'dense', got {method!r}")
    if return_vectors:
        return vals, [flat.unflatten(v) for v in vecs]
    return vals


def hessian_trace(loss, params, n_probes: int = 100, seed: int = 0, probes: str = "rademacher",
                  return_std: bool = False):
    """Hutchinson estimate of ``tr H`` for scalar ``loss(params)``: the mean of ``v^T H v``.

    ``probes``: ``"rademacher"`` (entries +-1; unbiased, variance per probe
    ``2(||H||_F^2 - sum_i H_ii^2)``), ``"gaussian"`` (unbiased, variance ``2||H||_F^2``), or
    ``"basis"`` (coordinate vectors: a uniformly random subset of ``min(n_probes, n)``
    coordinates without replacement, scaled by ``n / n_probes``; unbiased, and EXACT, with the
    deterministic full basis, when ``n_probes >= n``).

    Cost: ``n_probes`` (at most ``n`` for ``"basis"``) HVPs. Returns a float, or
    ``(estimate, standard_error)`` when ``return_std`` (standard error of the mean over probes;
    0 for the exact basis case).
    """
    flat = _Flat(params)
    n = flat.n
    if n_probes < 1:
        raise ValueError(f"hessian_trace: n_probes must be >= 1, got {n_probes}")
    mv = _hvp_flat(loss, flat)
    rng = np.random.default_rng(seed)
    if probes == "basis":
        m = min(n_probes, n)
        idx = np.arange(n) if m == n else rng.choice(n, size=m, replace=False)
        e = np.zeros(n)
        diag = np.empty(m)
        for t, i in enumerate(idx):
            e[i] = 1.0
            diag[t] = mv(e)[i]
            e[i] = 0.0
        est = float(n * np.mean(diag))
        if m == n:
            se = 0.0
        elif m > 1:  # without replacement: finite-population correction
            se = float(n * np.std(diag, ddof=1) / np.sqrt(m) * np.sqrt(1 - m / n))
        else:
            se = float("nan")
    elif probes in ("rademacher", "gaussian"):
        samples = np.empty(n_probes)
        for t in range(n_probes):
            v = rng.choice([-1.0, 1.0], size=n) if probes == "rademacher" else rng.standard_normal(n)
            samples[t] = _vdot(v, mv(v))  # not BLAS: see _vdot
        est = float(np.mean(samples))
        se = float(np.std(samples, ddof=1) / np.sqrt(n_probes)) if n_probes > 1 else float("nan")
    else:
        raise ValueError(f"hessian_trace: probes must be 'rademacher', 'gaussian' or 'basis', got {probes!r}")
    return (est, se) if return_std else est


def sharpness(loss, params, lr: float, iters: int | None = None, seed: int = 0):
    """``(lambda_max, lambda_max / (2 / lr))``: the top Hessian eigenvalue of ``loss`` at
    ``params`` (Lanczos, as ``hessian_eigs(k=1)``) and its ratio to the GD stability threshold
    ``2 / lr`` (ratio > 1: GD with step ``lr`` is unstable along the top eigenvector of the local
    quadratic model). Cost: ``iters`` HVPs (default ``min(n, 31)``)."""
    if lr <= 0:
        raise ValueError(f"sharpness: lr must be > 0, got {lr}")
    lam = float(hessian_eigs(loss, params, k=1, iters=iters, seed=seed)[0])
    return lam, lam * lr / 2.0


# ---- 4. modified loss (IGR, section 12) and Lie bracket (section 8) ---------------------------


def modified_loss(loss, params, lr: float):
    """Implicit-gradient-regularisation loss ``L~ = L + (h/4) ||grad L||^2`` (``h = lr``) and
    its exact gradient ``grad L + (h/2) H grad L`` (reverse-over-reverse: the gradient of a
    function that calls ``jl.grad``). GD with step ``h`` follows the flow of ``-grad L~`` to
    ``O(h^3)`` per step (papers.md section 12).

    ``loss(params)`` returns a scalar. Returns ``(value, grad)``, ``grad`` with the pytree of
    ``params``. Cost: one gradient pass inside one outer reverse sweep (about 3-4 passes).
    """
    h = float(lr)
    inner = grad(loss)

    def mod(p):
        return loss(p) + _jl_tree_sqnorm(inner(p)) * (h / 4.0)

    value, g = _value_and_grad(mod)(params)
    return float(_host(value)), _np_tree(g)


def lie_bracket(loss_a, loss_b, params):
    """Lie bracket of the two gradient fields, ``[g_A, g_B] = H_B g_A - H_A g_B``
    (papers.md section 8: ``[X, Y] = (DY) X - (DX) Y``; the sign is that of the order "task A
    first, then task B"). It is the leading term of the commutator of the two gradient flows:
    ``phi^B_t(phi^A_t(theta)) - phi^A_t(phi^B_t(theta)) = t^2 [g_A, g_B] + O(t^3)`` (also for GD
    steps ``T(theta) = theta - t g(theta)``). Antisymmetric; ``[g, g] = 0``.

    Returns a pytree like ``params``. Cost: one gradient and two HVPs (3 passes + 2 sweeps).
    """
    gA = grad(loss_a)(params)
    gB, HB_gA = jvp(grad(loss_b), (params,), (_np_tree(gA),))
    _, HA_gB = jvp(grad(loss_a), (params,), (_np_tree(gB),))
    la, td = _tree_flatten(HB_gA)
    lb, _ = _tree_flatten(HA_gB)
    return _tree_unflatten(td, [_host(u) - _host(v) for u, v in zip(la, lb)])


# ---- 5. softmax convergence radius (papers.md section 9) --------------------------------------


def softmax_radius(model, params, x, direction, labels=None) -> dict:
    """Convergence radius of the cross-entropy along a parameter step (Ghosts of Softmax).

    ``model`` maps ``x`` ``(B, ...)`` to logits ``z`` ``(B, K)``; ``direction`` is the step
    ``p`` (a pytree like ``params``, e.g. the optimizer's actual update), with
    ``tau = ||p||`` and unit direction ``v = p / ||p||``. ONE parameter-space JVP over the batch
    gives ``z`` and ``a = J_z v`` ``(B, K)`` (cost: one forward-mode pass). Returns a dict:

    - ``"logits"`` ``z`` ``(B, K)`` and ``"a"`` ``(B, K)``;
    - ``"spread"`` ``Delta_a(x) = max_k a_k - min_k a_k`` ``(B,)``;
    - ``"rho"``: per-sample lower bound ``pi / Delta_a(x)`` on the radius ``(B,)`` (every
      complex zero of ``F(t) = sum_k e^{z_k + a_k t}`` has ``|Im t| >= pi / Delta_a``);
    - ``"rho_batch"``: ``pi / max_x Delta_a(x)`` (float);
    - ``"step"``: ``tau``, and ``"r"``: the normalised step ``tau / rho_batch``
      (``r < 1`` suffices for the linearised loss's Taylor series to converge at the step);
    - ``"rho_binary"`` (``K == 2`` only): the exact radius ``sqrt(delta^2 + pi^2) / |a_1 - a_2|``,
      ``delta = z_1 - z_2``;
    - ``"rho_top2"`` (when ``labels`` ``(B,)`` ints are given): ``sqrt(delta^2 + pi^2) /
      |a_y - a_c|`` with ``c`` the highest-logit class other than ``y``, ``delta = z_y - z_c``.

    Zero spreads give ``inf`` radii. ``direction`` must be nonzero.
    """
    apply = _apply_fn(model)
    flat = _Flat(params)
    pvec = flat.flatten(direction)
    tau = float(np.linalg.norm(pvec))
    if not tau > 0:
        raise ValueError("softmax_radius: direction must be a nonzero step")
    x = _batch_tensor(x)
    z, a = jvp(lambda p: apply(p, x), (flat.params,), (flat.unflatten(pvec / tau),))
    z, a = np.array(_host(z), np.float64), np.array(_host(a), np.float64)
    if z.ndim != 2:
        raise ValueError(f"softmax_radius: the model must return logits (B, K), got shape {z.shape}")
    B, K = z.shape
    spread = a.max(axis=1) - a.min(axis=1)
    with np.errstate(divide="ignore"):
        rho = np.pi / spread
        rho_batch = float(np.pi / spread.max())
    out = {"logits": z, "a": a, "spread": spread, "rho": rho, "rho_batch": rho_batch, "step": tau,
           "r": tau / rho_batch}
    with np.errstate(divide="ignore"):
        if K == 2:
            out["rho_binary"] = np.sqrt((z[:, 0] - z[:, 1]) ** 2 + np.pi ** 2) / np.abs(a[:, 0] - a[:, 1])
        if labels is not None:
            y = np.asarray(labels).astype(int).reshape(B)
            zc = z.copy()
            zc[np.arange(B), y] = -np.inf
            c = zc.argmax(axis=1)
            r = np.arange(B)
            out["rho_top2"] = np.sqrt((z[r, y] - z[r, c]) ** 2 + np.pi ** 2) / np.abs(a[r, y] - a[r, c])
    return out


def clip_to_radius(update, rho: float):
    """``min(1, rho / ||p||) * p`` for an update ``p`` (array or pytree; the norm is over the
    whole pytree), so that ``||p~|| = min(||p||, rho)`` (papers.md section 9, the controller of
    Prop. 5.2 with ``rho = softmax_radius(...)["rho_batch"]``). Returns NumPy arrays with the
    structure of ``update``."""
    leaves, td = _tree_flatten(update)
    arrs = [np.asarray(a) for a in leaves]
    norm = float(np.sqrt(sum(float(np.sum(np.square(a, dtype=np.float64))) for a in arrs)))
    s = 1.0 if norm <= rho or norm == 0.0 else float(rho) / norm
    return _tree_unflatten(td, [(a * s).astype(a.dtype) for a in arrs])


# ---- 6. Jacobian norms and centroids (GrokAlign, papers.md section 11) ------------------------


def _jacnorm_tensor(apply, params, x, n_projections, seed, probes):
    """(B,) differentiable tensor of per-sample Frobenius-norm estimates."""
    x = _batch_tensor(x)
    B = x.shape[0]
    if n_projections is None:
        return _core.sqrt(_jac_sq_terms(apply, params, x))
    out, pullback = vjp(lambda h: apply(params, h), x)
    k = int(np.prod(out.shape[1:]))
    dtype = np.dtype(out.dtype)
    P = int(n_projections)
    if P < 1:
        raise ValueError(f"jacobian_norm: n_projections must be >= 1, got {P}")
    rng = np.random.default_rng(seed)
    total = None
    for p in range(P):
        if probes == "sphere":
            v = rng.standard_normal((B, k))
            v /= np.linalg.norm(v, axis=1, keepdims=True)
        elif probes == "basis":
            v = np.zeros((B, k))
            v[:, p % k] = 1.0
        else:
            raise ValueError(f"jacobian_norm: probes must be 'sphere' or 'basis', got {probes!r}")
        (g,) = pullback(_core.array(v.astype(dtype).reshape(out.shape)))
        s = _per_sample_sq(g, B)
        total = s if total is None else total + s
    est = total * (k / P)
    # sqrt(max(est, 1e-8)) as in GrokAlign, written with relu so it stays differentiable.
    return _core.sqrt(_core.relu(est - 1e-8) + 1e-8)


def jacobian_norm(model, params, x, n_projections: int | None = None, seed: int = 0,
                  probes: str = "sphere") -> np.ndarray:
    """Per-sample Frobenius norm ``||J_x f(x_b)||_F``, ``(B,)``.

    ``n_projections=None``: exact (``min(out, in)`` passes). ``n_projections=P``: the GrokAlign
    estimate ``sqrt(max((k/P) sum_p ||J^T v_p||^2, 1e-8))`` with ``k = prod(out)`` and ``P``
    random unit cotangents ``v_p`` per sample (``probes="sphere"``, ``seed``; unbiased for
    ``||J||_F^2``), or coordinate vectors ``e_{p mod k}`` (``probes="basis"``: exact when
    ``P = k``). Cost: one forward and ``P`` reverse sweeps. For a differentiable version
    (training regulariser) use ``jacobian_norm_regularizer``; the two agree.
    """
    return np.array(_host(_jacnorm_tensor(_apply_fn(model), params, x, n_projections, seed, probes)))


def jacobian_norm_regularizer(model, x, n_projections: int | None = 1, seed: int = 0, probes: str = "sphere"):
    """A function ``R(params)`` -> jaclab scalar ``mean_b jacobian_norm(...)_b`` (GrokAlign's
    regulariser, papers.md section 11: the Frobenius NORM, not squared), differentiable under
    ``jl.grad`` (reverse-over-reverse), for ``loss + lam * R(params)``. The probes are fixed
    by ``seed`` at every call (resample by changing ``seed``). ``n_projections=None``: exact."""
    apply = _apply_fn(model)
    x = _batch_tensor(x)
    return lambda params: _core.mean(_jacnorm_tensor(apply, params, x, n_projections, seed, probes))


def centroid(model, params, x) -> np.ndarray:
    """Centroid ``mu(x_b) = J_x f(x_b)^T 1`` (sum of the rows of the per-sample input
    Jacobian, i.e. the input gradient of ``sum_i f_i``), shape of ``x``. Cost: one forward and
    ONE reverse sweep (cotangent of ones in every sample)."""
    x = _batch_tensor(x)
    out, pullback = vjp(lambda h: _apply_fn(model)(params, h), x)
    (g,) = pullback(_core.ones(tuple(out.shape), np.dtype(out.dtype), device=out.device))
    return np.array(_host(g))


def centroid_alignment(model, params, x) -> np.ndarray:
    """``cos(mu(x_b), x_b)`` per sample, ``(B,)``, with ``mu`` from ``centroid`` (flattened per
    sample). 1 for Jacobian-aligned samples. Cost: one forward and one reverse sweep."""
    mu = centroid(model, params, x)
    x = _host(_batch_tensor(x))
    B = x.shape[0]
    mu = mu.reshape(B, -1).astype(np.float64)
    xf = x.reshape(B, -1).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.sum(mu * xf, axis=1) / (np.linalg.norm(mu, axis=1) * np.linalg.norm(xf, axis=1))


# ---- 7. residual expansion (papers.md section 5) ----------------------------------------------


def residual_expansion(model, params, x, max_order: int | None = None, method: str = "paths") -> dict:
    """Decomposition of a residual tower's output by path order.

    ``model``: a ``Sequential`` of ``Residual(f_k, scale=lam_k)`` layers, so
    ``x_k = x_{k-1} + lam_k f_k(x_{k-1})``, ``n`` layers. Order ``m`` collects the paths through
    exactly ``m`` blocks (``C(n, m)`` of them). ``max_order`` defaults to ``n``.

    ``method="paths"`` (default): the path recursion ``e_0 = x``,
    ``e_m <- e_m + lam_k f_k(e_{m-1})`` over the layers (one block application per layer on
    the ``max_order`` stacked orders). For LINEAR blocks (``f_k(x) = A_k x``, e.g. ``Linear``
    with zero bias, or an identity-activation ``MLP`` with zero biases)
    ``e_m = sum_{i_m > ... > i_1} lam_{i_m}...lam_{i_1} A_{i_m} ... A_{i_1} x`` exactly, and with
    ``max_order = n`` the orders sum to the output. For nonlinear (or affine) blocks only
    ``e_0 = x`` and ``e_1 = sum_k lam_k f_k(x)`` are the expansion's terms; the output is the
    power series ``x + lam sum_k f_k(x) + lam^2 sum_{i<j} Df_j(x)[f_i(x)] + O(lam^3)``
    (papers.md section 5), so the path terms of order >= 2 do NOT sum back to it.

    ``method="moebius"``: the exact path decomposition for ANY blocks (inclusion-exclusion over
    sub-towers ``F_T``, T a subset of the layers kept in order):
    ``order_m = sum_{|T| <= m} (-1)^{m-|T|} C(n-|T|, m-|T|) F_T(x)``. The orders sum to the output
    exactly when ``max_order = n``; the order-m term is ``O(lam^m)`` for smooth blocks and equals
    the ``"paths"`` term for linear ones. Cost: one block application per subset with
    ``|T| <= max_order`` (``2^n`` for all orders); limited to ``n <= 16``.

    Returns a dict: ``"terms"`` ``(max_order+1, *x.shape)``, ``"norms"`` ``(max_order+1, B)``
    per-sample norms of each order, ``"n_paths"`` ``C(n, m)``, ``"output"`` (the network output)
    and ``"remainder"`` = output - sum of the terms.
    """
    layers = getattr(model, "layers", None)
    from .nn import Residual  # local: nn imports nothing from here

    if layers is None or not all(isinstance(layer, Residual) for layer in layers):
        raise TypeError("residual_expansion: needs a Sequential of Residual layers")
    n = len(layers)
    M = n if max_order is None else int(max_order)
    if not 0 <= M <= n:
        raise ValueError(f"residual_expansion: need 0 <= max_order <= {n}, got {max_order}")
    xt = _batch_tensor(x)  # the blocks run where x lives; the terms are NumPy
    device, x = xt.device, _host(xt)
    B = x.shape[0]
    lams = [float(layer.scale) for layer in layers]

    def f(k, h):
        return np.array(_host(layers[k].block.apply(params[k], _on(h, device))))

    if method == "paths":
        dt = np.result_type(x.dtype, np.float32)
        terms = [x.astype(dt)] + [np.zeros(x.shape, dt) for _ in range(M)]
        for k in range(n):
            if M == 0:
                break
            stacked = np.concatenate(terms[:M], axis=0)  # orders 0..M-1, one block call
            fk = f(k, stacked).reshape((M,) + x.shape)
            for m in range(1, M + 1):
                terms[m] = terms[m] + lams[k] * fk[m - 1]
    elif method == "moebius":
        if n > 16:
            raise ValueError(f"residual_expansion: method='moebius' is limited to 16 layers, got {n}")
        Fs = {}  # size -> summed F_T over subsets of that size

        def rec(start, size, h):
            Fs[size] = Fs.get(size, 0.0) + h
            if size == M:
                return
            for k in range(start, n):
                rec(k + 1, size + 1, h + lams[k] * f(k, h))

        rec(0, 0, x)
        terms = []
        for m in range(M + 1):
            acc = np.zeros_like(Fs[0])
            for t in range(m + 1):
                acc = acc + (-1) ** (m - t) * _math.comb(n - t, m - t) * Fs[t]
            terms.append(acc)
    else:
        raise ValueError(f"residual_expansion: method must be 'paths' or 'moebius', got {method!r}")
    terms = np.stack(terms)
    output = np.array(_host(model.apply(params, xt)))
    norms = np.linalg.norm(terms.reshape(M + 1, B, -1), axis=2)
    return {"terms": terms, "norms": norms, "n_paths": np.array([_math.comb(n, m) for m in range(M + 1)]),
            "output": output, "remainder": output - terms.sum(axis=0)}


# ---- 8. in-context learning as a rank-1 weight update (papers.md section 3) -------------------


def _tb_parts(block, params, seq):
    """For a TransformerBlock on ``seq`` (B, T, d): the last position's skip stream
    ``h = x + s*Attn(N1(x))`` and the MLP input ``a = N2(h)``, both (B, d) NumPy."""
    from .nn import LayerNorm, RMSNorm

    norm = {"layer": LayerNorm(block.d_model), "rms": RMSNorm(block.d_model), None: None}[block.norm]
    device = _device_of(params)
    seq_d = _on(seq, device)
    n1 = norm.apply(params["norm1"], seq_d) if norm else seq_d
    h = np.asarray(seq) + block.scale * _host(block.attn.apply(params["attn"], n1))
    a = _host(norm.apply(params["norm2"], _on(h, device))) if norm else h
    return np.array(h[:, -1]), np.array(a[:, -1])


def _icl_inputs(block, context, x):
    from .nn import TransformerBlock

    if not isinstance(block, TransformerBlock):
        raise TypeError(f"icl: needs a TransformerBlock, got {type(block).__name__}")
    C, x = _host(context), _host(x)
    if x.ndim == 1:
        x, C = x[None], (C[None] if C.ndim == 2 else C)
    if x.ndim != 2 or C.ndim != 3 or C.shape[0] != x.shape[0] or C.shape[2] != block.d_model or x.shape[1] != block.d_model:
        raise ValueError(f"icl: need context (B, n, d) and x (B, d) with d = {block.d_model}, "
                         f"got {C.shape} and {x.shape}")
    return C, x


def _rank1(W1, a_x, dA):
    # row convention (MLP input u @ W1): a_x @ (W1 + dW) = (a_x + dA) @ W1
    return np.einsum("bi,bj->bij", a_x, dA @ W1) / np.sum(a_x * a_x, axis=1)[:, None, None]


def icl_weight_update(block, params, context, x) -> dict:
    """The context of a ``TransformerBlock`` as a rank-1 update of its MLP's first weight.

    ``context`` ``(B, n, d)`` (or ``(n, d)``), ``x`` ``(B, d)`` (or ``(d,)``): the output with
    context is the block applied to ``[C; x]`` (``(B, n+1, d)``), read at the last position;
    without context, the block applied to ``[x]`` (``T = 1``). With ``h`` the skip stream after
    attention and ``a = N2(h)`` the MLP input (pre-norm: ``y = h + s * MLP(a)``), jaclab's row
    convention ``MLP(a) = act(a @ W1 + b1) @ W2 + b2`` gives (papers.md section 3, transposed)

        dW = a_x^T (dA @ W1) / ||a_x||^2,   dA = a(C, x) - a(x)     (rank 1, ``(d, d_hidden)``)

    so that ``a_x @ (W1 + dW) = a(C, x) @ W1``: the MLP of the context-free token with
    ``W1 + dW`` reproduces the MLP with context exactly (``b1`` unchanged; ``dW`` is the
    minimum-Frobenius-norm such update). Because of the skip connection around the MLP, the
    block's output also shifts by ``skip = h(C, x) - h(x)`` (the "thought vector"):
    ``block_W(C, x) = block_{W1 + dW}(x) + skip``.

    Returns a dict: ``"dW"`` ``(B, d, d_hidden)``, ``"skip"`` ``(B, d)``, ``"a_x"``, ``"dA"``
    ``(B, d)``, ``"y_context"`` ``(B, d)`` (block output with context) and ``"residual"``
    ``(B,)``: ``max |block_W(C, x) - (block_{W1+dW}(x) + skip)|``, both sides evaluated with
    ``block.apply``. Cost: forward passes only (two block evaluations per sample, two
    attention/norm evaluations for the parts).
    """
    C, x = _icl_inputs(block, context, x)
    B = x.shape[0]
    seq = np.concatenate([C, x[:, None]], axis=1)
    h_c, a_c = _tb_parts(block, params, seq)
    h_x, a_x = _tb_parts(block, params, x[:, None])
    W1 = _host(params["mlp"]["W1"])
    device = _device_of(params)
    dA = a_c - a_x
    dW = _rank1(W1, a_x, dA)
    skip = h_c - h_x
    y_c = np.array(_host(block.apply(params, _on(seq, device)))[:, -1])
    resid = np.empty(B)
    for b in range(B):
        pb = dict(params)
        pb["mlp"] = dict(params["mlp"], W1=_on((W1 + dW[b]).astype(W1.dtype), device))
        y_b = _host(block.apply(pb, _on(x[b:b + 1, None], device)))[0, 0] + skip[b]
        resid[b] = float(np.max(np.abs(y_c[b] - y_b)))
    return {"dW": dW, "skip": skip, "a_x": a_x, "dA": dA, "y_context": y_c, "residual": resid}


def icl_dynamics(block, params, context, x) -> dict:
    """Token-by-token implicit updates: ``W_i = W1 + dW(c_1..c_i)`` for ``i = 0..n``
    (``dW`` as in ``icl_weight_update``, with the context truncated to its first ``i`` tokens;
    ``dW_0 = 0``). Consecutive steps are online GD on a linear loss with learning rate
    ``1 / ||a_x||^2`` (papers.md section 3). Returns ``"dW"`` ``(n+1, B, d, d_hidden)``,
    ``"skip"`` ``(n+1, B, d)`` and ``"step_norms"`` ``(n, B)``: ``||W_{i+1} - W_i||_F``.
    Cost: ``n + 1`` forward passes of attention."""
    C, x = _icl_inputs(block, context, x)
    n = C.shape[1]
    W1 = _host(params["mlp"]["W1"])
    h_x, a_x = _tb_parts(block, params, x[:, None])
    dWs, skips = [], []
    for i in range(n + 1):
        h_i, a_i = (h_x, a_x) if i == 0 else _tb_parts(block, params, np.concatenate([C[:, :i], x[:, None]], axis=1))
        dWs.append(_rank1(W1, a_x, a_i - a_x))
        skips.append(h_i - h_x)
    dWs = np.stack(dWs)
    steps = np.linalg.norm(np.diff(dWs, axis=0).reshape(n, x.shape[0], -1), axis=2)
    return {"dW": dWs, "skip": np.stack(skips), "step_norms": steps}


# ---- 9. LQR steering over layer Jacobians (papers.md section 10) ------------------------------


def position_layer_jacobians(model, params, x, position: int = -1, average: bool = True) -> np.ndarray:
    """Exact Jacobians ``A_l = d [f_l(X)]_p / d x_p`` of each layer of a ``Sequential`` at one
    token position ``p`` of sequence inputs ``x`` ``(B, T, d)`` (other positions held fixed at
    their values on the forward pass), ``(L, d_out, d_in)`` averaged over the batch
    (``average=True``, as for LQR steering) or ``(L, B, d_out, d_in)``. Cost: per layer
    ``min(d_out, d_in)`` passes."""
    layers = getattr(model, "layers", None)
    if layers is None:
        raise TypeError(f"position_layer_jacobians: needs a Sequential model, got {type(model).__name__}")
    x = _batch_tensor(x)  # the passes run where x lives (a GPU tensor stays there)
    p, T = _position_index(x, position, "position_layer_jacobians"), x.shape[1]
    hs = [np.array(_host(h)) for h in model.apply_layers(params, x)]
    on = lambda a: _on(a, x.device)  # noqa: E731
    out = []
    for layer, prm, h in zip(layers, params, hs[:-1]):
        put = np.zeros((T, 1), h.dtype)
        put[p, 0] = 1.0
        rest = h.copy()
        rest[:, p] = 0.0
        put, take, rest = on(put), on(put.T), on(rest)

        def fn(v, layer=layer, prm=prm, rest=rest, put=put, take=take):
            B, d = v.shape
            seq = _core.matmul(put, _core.reshape(v, (B, 1, d))) + rest  # (B, T, d), v at position p
            y = layer.apply(prm, seq)
            return _core.reshape(_core.matmul(take, y), (B, y.shape[2]))

        out.append(per_sample_jacobian(fn, on(h[:, p])))
    J = np.stack(out)
    return J.mean(axis=1) if average else J


def _per_step(M, T, name):
    M = np.asarray(M, np.float64)
    if M.ndim == 0:
        return None, M
    if M.ndim == 2:
        return np.broadcast_to(M, (T,) + M.shape), None
    if M.ndim == 3 and M.shape[0] == T:
        return M, None
    raise ValueError(f"lqr_gains: {name} must be a scalar, (m, m) or (T, m, m), got shape {M.shape}")


def lqr_gains(A, Q, R, S_T, B=None):
    """Finite-horizon time-varying LQR gains by the Riccati recursion (papers.md section 10).

    Dynamics ``x_{t+1} = A_t x_t + B_t u_t`` (``t = 0..T-1``), cost
    ``sum_t (x_t^T Q_t x_t + u_t^T R_t u_t) + x_T^T S_T x_T``. ``A`` ``(T, d, d)``; ``B``
    ``(T, d, m)`` or ``(d, m)`` (default identity: controls added to the layer outputs);
    ``Q``, ``R``, ``S_T``: scalars (times identity), matrices, or per-step ``(T, ., .)``.
    Recursion, from ``S_T``: ``P = B^T S B + R``, ``F = B^T S A``, ``K_t = P^{-1} F``,
    ``S_t = Q_t + A^T S A - F^T P^{-1} F``.

    Returns ``(K, S)``: ``K`` ``(T, m, d)`` with the optimal control ``u_t = -K_t x_t``, and
    ``S`` ``(T+1, d, d)`` with the optimal cost-to-go ``x_t^T S_t x_t`` (``S[T] = S_T``). For
    activation steering, ``A`` are the (averaged) exact layer Jacobians, e.g. from
    ``position_layer_jacobians``. Cost: ``O(T d^3)``.
    """
    A = np.asarray(A, np.float64)
    if A.ndim != 3 or A.shape[1] != A.shape[2]:
        raise ValueError(f"lqr_gains: A must be (T, d, d), got shape {A.shape}")
    T, d, _ = A.shape
    if B is None:
        Bs = np.broadcast_to(np.eye(d), (T, d, d))
    else:
        Bs = np.asarray(B, np.float64)
        Bs = np.broadcast_to(Bs, (T,) + Bs.shape) if Bs.ndim == 2 else Bs
        if Bs.shape[:2] != (T, d):
            raise ValueError(f"lqr_gains: B must be (d, m) or (T, d, m), got shape {np.shape(B)}")
    m = Bs.shape[2]
    Qs, q = _per_step(Q, T, "Q")
    Rs, r = _per_step(R, T, "R")
    S = np.asarray(S_T, np.float64)
    S = S * np.eye(d) if S.ndim == 0 else S
    K = np.empty((T, m, d))
    Ss = np.empty((T + 1, d, d))
    Ss[T] = S
    for t in range(T - 1, -1, -1):
        At, Bt = A[t], Bs[t]
        Qt = q * np.eye(d) if Qs is None else Qs[t]
        Rt = r * np.eye(m) if Rs is None else Rs[t]
        P = Bt.T @ S @ Bt + Rt
        F = Bt.T @ S @ At
        K[t] = np.linalg.solve(P, F)
        S = Qt + At.T @ S @ At - F.T @ K[t]
        S = 0.5 * (S + S.T)
        Ss[t] = S
    return K, Ss


# ---- 10. thought vectors / thought matrices (papers.md section 4) -----------------------------

__all__ += ["thought_matrices"]


def thought_matrices(model, params, prompt, inputs, mode: str = "token", lam: float = 0.0,
                     weights: str = "inverse_norm", pool: str = "sample") -> dict:
    """Per-block thought vectors and thought matrices of ``prompt`` for a ``TransformerBlock`` or a
    ``Sequential`` of them: the prompt ``I`` (B, n_I, d) transmuted into skip shifts and rank-1 /
    least-squares updates of each block's MLP weight ``W1`` so that the prompt-free model on
    ``inputs`` (B, n, d) reproduces the full prompt ``[I, inputs]``. Exact token-dependent patches
    (``mode="token"``; residual ~1e-16 in float64) or condensed ones (``"condensed"``: one vector and
    one matrix per block). See ``jaclab.thought.thought_matrices`` (the implementation) for the
    formulas, options and returned arrays, and ``jaclab.thought.apply_thought`` to reuse condensed
    patches on new inputs. Cost: forward passes only."""
    from .thought import thought_matrices as _thought_matrices

    return _thought_matrices(model, params, prompt, inputs, mode=mode, lam=lam, weights=weights, pool=pool)
