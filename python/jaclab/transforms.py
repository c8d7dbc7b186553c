"""Function transforms over pytrees, JAX style.

Every transform takes a function of arrays (NumPy arrays or ``jl.Tensor``; pytrees of them)
and evaluates it through the C++ engine. Transforms compose: a transform used inside the
function given to another transform is differentiated by it, to any combination of forward
and reverse mode (forward-over-reverse, reverse-over-forward, reverse-over-reverse).

Shapes: ``jacobian`` returns ``out.shape + in.shape`` for each (output leaf, input leaf) pair.
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np

from . import _core
from ._core import Tensor
from ._pytree import TreeDef, tree_flatten, tree_unflatten

__all__ = ["jvp", "vjp", "grad", "value_and_grad", "hvp", "jacobian", "linearize"]


def _as_tensor(x: Any, what: str) -> Tensor:
    if isinstance(x, Tensor):
        return x
    try:
        return _core.array(x)
    except TypeError as e:
        raise TypeError(f"{what}: {e}") from None


def _flatten_args(args: Sequence, what: str) -> tuple[list[Tensor], TreeDef]:
    leaves, tree = tree_flatten(tuple(args))
    return [_as_tensor(x, f"{what} leaf {i}") for i, x in enumerate(leaves)], tree


class _FlatFn:
    """Wraps f(*args) (pytrees in and out) as a function of a flat list of tensors."""

    def __init__(self, f: Callable, in_tree: TreeDef, rebuild: Callable[[list], tuple] | None = None):
        self.f, self.in_tree, self.rebuild = f, in_tree, rebuild
        self.out_tree: TreeDef | None = None

    def __call__(self, leaves: list[Tensor]) -> list[Tensor]:
        args = tree_unflatten(self.in_tree, leaves)
        if self.rebuild is not None:
            args = self.rebuild(args)
        out = self.f(*args)
        out_leaves, self.out_tree = tree_flatten(out)
        if not out_leaves:
            raise ValueError("the function returned no arrays")
        return [_as_tensor(o, "function output") for o in out_leaves]


def _check_same_tree(tree_a: TreeDef, tree_b: TreeDef, name_a: str, name_b: str) -> None:
    if tree_a != tree_b:
        raise ValueError(
            f"{name_b} must have the same structure as {name_a}: {name_a} has {tree_a.num_leaves} leaves "
            f"{tree_a}, {name_b} has {tree_b.num_leaves} leaves {tree_b}"
        )


def jvp(f: Callable, primals: Sequence, tangents: Sequence):
    """Forward mode: ``(f(*primals), J_f(primals) @ tangents)``.

    ``primals`` and ``tangents`` are tuples (one entry per positional argument of ``f``) of
    pytrees with the same structure, shapes and dtypes. Tangents must be finite: a NaN or Inf
    tangent raises ValueError. (When the tangents hold more numbers than the outputs, they are
    scanned only if an output tangent is non-finite, so one that no output depends on passes:
    it cannot change the result.)

    >>> out, t = jl.jvp(jl.tanh, (x,), (v,))      # t = (1 - tanh(x)^2) * v
    """
    if not isinstance(primals, (tuple, list)) or not isinstance(tangents, (tuple, list)):
        raise TypeError("jvp(f, primals, tangents): primals and tangents must be tuples of arguments")
    leaves, tree = _flatten_args(primals, "primal")
    tleaves, ttree = _flatten_args(tangents, "tangent")
    _check_same_tree(tree, ttree, "primals", "tangents")
    flat = _FlatFn(f, tree)
    out, tout = _core.jvp_flat(flat, leaves, tleaves)
    return tree_unflatten(flat.out_tree, out), tree_unflatten(flat.out_tree, tout)


def vjp(f: Callable, *primals):
    """Reverse mode: ``(f(*primals), vjp_fn)`` with ``vjp_fn(cotangent) -> tuple`` of
    ``J_f^T cotangent``, one entry per primal (same pytrees). ``cotangent`` has the structure,
    shapes and dtypes of ``f``'s output. ``vjp_fn`` may be called many times (the graph is kept).
    """
    leaves, tree = _flatten_args(primals, "primal")
    flat = _FlatFn(f, tree)
    out, pullback = _core.vjp_flat(flat, leaves)
    out_tree = flat.out_tree

    def vjp_fn(cotangent, _tangents_only=False):
        cleaves, ctree = tree_flatten(cotangent)
        _check_same_tree(out_tree, ctree, "the output", "the cotangent")
        cts = [_as_tensor(c, "cotangent") for c in cleaves]
        return tree_unflatten(tree, pullback(cts, tangents_only=_tangents_only))

    return tree_unflatten(out_tree, out), vjp_fn


def _argnums_tuple(argnums, nargs: int) -> tuple[int, ...]:
    nums = (argnums,) if isinstance(argnums, int) else tuple(argnums)
    for a in nums:
        if not -nargs <= a < nargs:
            raise ValueError(f"argnums {argnums} is out of range for a function called with {nargs} arguments")
    return tuple(a % nargs for a in nums)


def _substitute(args: tuple, nums: tuple[int, ...], dyn: Sequence) -> tuple:
    full = list(args)
    for i, a in zip(nums, dyn):
        full[i] = a
    return tuple(full)


def value_and_grad(f: Callable, argnums: int | Sequence[int] = 0, _tangents_only: bool = False):
    """``value_and_grad(f)(*args) -> (f(*args), df/dargs[argnums])`` for scalar-valued ``f``.

    With an int ``argnums`` the gradient has the pytree of that argument; with a tuple, it is
    a tuple of such pytrees. (``_tangents_only``: for ``hvp``, which reads only the gradient's
    forward-mode tangents; its values may then be zero placeholders.)
    """

    def wrapped(*args):
        nums = _argnums_tuple(argnums, len(args))
        dyn = tuple(args[i] for i in nums)
        value, pullback = vjp(lambda *d: f(*_substitute(args, nums, d)), *dyn)
        if not isinstance(value, Tensor):
            raise TypeError(f"grad: the function must return one scalar array, got {type(value).__name__}")
        if value.shape != ():
            raise ValueError(f"grad: the function must return a scalar (shape ()), got shape {value.shape}")
        grads = pullback(_core.ones((), value.dtype, device=value.device), _tangents_only)
        return value, (grads[0] if isinstance(argnums, int) else grads)

    return wrapped


def grad(f: Callable, argnums: int | Sequence[int] = 0):
    """``grad(f)(*args)``: gradient of scalar-valued ``f`` w.r.t. ``args[argnums]``."""
    vg = value_and_grad(f, argnums)
    return lambda *args: vg(*args)[1]


def hvp(f: Callable, primals: Sequence, tangents: Sequence):
    """Hessian-vector product of scalar ``f`` at ``primals`` along ``tangents``
    (forward-over-reverse: ``jvp(grad(f), primals, tangents)``). Returns a tuple with the
    pytree of ``primals``.
    """
    n = len(primals)
    vg = value_and_grad(f, argnums=tuple(range(n)), _tangents_only=True)  # jvp reads only the tangents
    return jvp(lambda *args: vg(*args)[1], tuple(primals), tuple(tangents))[1]


def linearize(f: Callable, *primals):
    """``(f(*primals), f_jvp)`` where ``f_jvp(*tangents) = J_f(primals) @ tangents``.

    Each ``f_jvp`` call runs one forward-mode pass (the primal is recomputed alongside).
    """
    out = vjp(f, *primals)[0]

    def f_jvp(*tangents):
        return jvp(f, primals, tangents)[1]

    return out, f_jvp


_DEFAULT_CHUNK_ELEMENTS = 1 << 20  # ~1M tangent elements per batched pass (8 MB in float64: stays in cache-friendly sizes)


def batched_array(a: np.ndarray):
    """A batch of K directions as a tensor; beyond 4-D (the tensor limit) it cannot be batched."""
    if a.ndim > 4:
        raise _core.UnbatchableError(f"a batch of directions of shape {a.shape} exceeds 4 dimensions")
    return _core.array(a)


def in_chunks(total: int, chunk: int, compute):
    """Yield ``(start, K, compute(start, K, batched))`` over ``range(total)`` in chunks of ``chunk``.
    ``compute`` first runs batched (K directions in one pass); when that raises because the
    function cannot carry a batch of directions, this and all later chunks run unbatched."""
    start, batched = 0, True
    while start < total:
        K = min(chunk, total - start)
        try:
            result = compute(start, K, batched)
        except _core.UnbatchableError:
            if not batched:
                raise
            batched = False  # e.g. attention: one direction per pass from here on
            continue
        yield start, K, result
        start += K


def jvp_columns(flat, leaves: list, start: int, K: int, n_in: list[int], batched: bool = True) -> list[np.ndarray]:
    """Output tangents for the K input basis directions start .. start+K-1 (over the flattened,
    concatenated input leaves): list of (K, *out.shape) arrays. ``batched``: ONE forward pass
    carrying the K directions; otherwise K plain passes."""
    tans = [np.zeros((K,) + tuple(x.shape), np.dtype(x.dtype)) for x in leaves]
    offsets = np.concatenate([[0], np.cumsum(n_in)])
    for k in range(K):
        j = start + k
        leaf = int(np.searchsorted(offsets, j, side="right") - 1)
        tans[leaf].reshape(K, -1)[k, j - offsets[leaf]] = 1.0
    if batched:
        _, tout = _core.jvp_flat(flat, leaves, [batched_array(t) for t in tans], K)
        return [np.asarray(t) for t in tout]
    per_k = [_core.jvp_flat(flat, leaves, [_core.array(t[k]) for t in tans])[1] for k in range(K)]
    return [np.stack([np.asarray(p[i]) for p in per_k]) for i in range(len(per_k[0]))]


def jacobian(f: Callable, argnums: int | Sequence[int] = 0, mode: str = "auto", chunk_size: int | None = None):
    """Full Jacobian ``d f(*args) / d args[argnums]``.

    For one output array and one input array the result is a NumPy array of shape
    ``out.shape + in.shape``; for pytrees it is nested as output-tree of input-trees (a tuple
    over ``argnums`` when that is a tuple).

    ``mode="fwd"``: forward mode, ``chunk_size`` input directions per batched pass (each pass
    carries that many tangents at once, so GEMMs get ``chunk_size`` times more rows);
    ``mode="rev"``: batched reverse sweeps over a single recorded graph, ``chunk_size`` output
    elements per sweep;
    ``"auto"``: forward mode when there are no more inputs than outputs, else reverse.
    Memory: the result plus one pass whose activations are ``chunk_size`` times larger. The
    default chunk keeps a pass's tangents near 1M elements; ``chunk_size=1`` is the leanest.
    Functions with ops that cannot carry a batch of directions (attention, whose batched
    tangents/cotangents would exceed 4-D; any 4-D value) fall back to one direction per pass.
    """
    if mode not in ("auto", "fwd", "rev"):
        raise ValueError(f"jacobian: mode must be 'auto', 'fwd' or 'rev', got {mode!r}")
    if chunk_size is not None and (not isinstance(chunk_size, int) or chunk_size < 1):
        raise ValueError(f"jacobian: chunk_size must be a positive int, got {chunk_size!r}")

    def jac(*args):
        nums = _argnums_tuple(argnums, len(args))
        dyn_leaves, dyn_tree = _flatten_args(tuple(args[i] for i in nums), "input")
        flat = _FlatFn(f, dyn_tree, rebuild=lambda dyn: _substitute(args, nums, dyn))
        out, pullback = _core.vjp_flat(flat, dyn_leaves)
        out_tree = flat.out_tree
        n_in = [int(np.prod(x.shape)) for x in dyn_leaves]
        n_out = [int(np.prod(y.shape)) for y in out]
        total_in, total_out = sum(n_in), sum(n_out)
        use_fwd = mode == "fwd" or (mode == "auto" and total_in <= total_out)
        dtype = np.result_type(*[np.dtype(y.dtype) for y in out])
        J = np.zeros((total_out, total_in), dtype=dtype)
        if use_fwd:
            chunk = chunk_size or max(1, min(total_in, _DEFAULT_CHUNK_ELEMENTS // max(total_in, total_out, 1)))
            for start, K, cols in in_chunks(total_in, chunk,
                                            lambda st, K, bt: jvp_columns(flat, dyn_leaves, st, K, n_in, bt)):
                J[:, start:start + K] = np.concatenate([c.reshape(K, -1) for c in cols], axis=1).T
        else:
            chunk = chunk_size or max(1, min(total_out, _DEFAULT_CHUNK_ELEMENTS // max(total_in, total_out, 1)))
            out_off = np.concatenate([[0], np.cumsum(n_out)])

            def rows(start, K, batched):
                cts = [np.zeros((K,) + tuple(o.shape), np.dtype(o.dtype)) for o in out]
                for k in range(K):
                    i = start + k
                    leaf = int(np.searchsorted(out_off, i, side="right") - 1)
                    cts[leaf].reshape(K, -1)[k, i - out_off[leaf]] = 1.0
                if batched:
                    g = pullback([batched_array(c) for c in cts], K)
                    return np.concatenate([np.asarray(t).reshape(K, -1) for t in g], axis=1)
                return np.stack([np.concatenate([np.asarray(t).reshape(-1)
                                                 for t in pullback([_core.array(c[k]) for c in cts])])
                                 for k in range(K)])

            for start, K, r in in_chunks(total_out, chunk, rows):
                J[start:start + K, :] = r
        # Split into blocks: output leaf x input leaf, shaped out.shape + in.shape.
        out_off = np.concatenate([[0], np.cumsum(n_out)])
        in_off = np.concatenate([[0], np.cumsum(n_in)])
        blocks = []
        for a, y in enumerate(out):
            row_blocks = [
                J[out_off[a]:out_off[a + 1], in_off[b]:in_off[b + 1]].reshape(tuple(y.shape) + tuple(x.shape))
                for b, x in enumerate(dyn_leaves)
            ]
            inner = tree_unflatten(dyn_tree, row_blocks)
            blocks.append(inner[0] if isinstance(argnums, int) else inner)
        return tree_unflatten(out_tree, blocks)

    return jac
