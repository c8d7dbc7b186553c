"""Shared helpers for the jaclab test suite.

Finite differences are taken on the NumPy side of a function evaluated through jaclab
(float64, central differences, step ~1e-6). Functions under test take positional array
arguments and return one array; pytree cases are handled in the tests that need them.

Test modules import these helpers with ``from conftest import ...`` (pytest puts this
directory on ``sys.path`` in its default import mode).
"""
from __future__ import annotations

import math
import os

import numpy as np
import pytest

import jaclab as jl

SEEDS = [0, 1, 2]
FD_EPS = 1e-6
FD_RTOL = 1e-7
FD_ATOL = 1e-8  # times the scale of the reference
TRANSPOSE_RTOL = 1e-12


@pytest.fixture(params=SEEDS, ids=lambda s: f"seed{s}")
def rng(request):
    return np.random.default_rng(request.param)


# ---- small conversions ------------------------------------------------------------------------


def npf(t) -> np.ndarray:
    """A jaclab result (or array-like) as a float64 NumPy array (copy)."""
    return np.array(np.asarray(t), dtype=np.float64)


def as_tensors(args, dtype=None):
    return tuple(jl.array(np.array(a, dtype=dtype if dtype is not None else np.asarray(a).dtype)) for a in args)


def evaluate(f, args) -> np.ndarray:
    """f(*args) evaluated through jaclab (arguments passed as fresh jl tensors)."""
    return npf(f(*as_tensors(args)))


def vdot(a, b) -> float:
    return float(np.vdot(np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()))


def tree_vdot(a, b) -> float:
    la, ta = jl.tree_flatten(a)
    lb, tb = jl.tree_flatten(b)
    assert ta == tb, (ta, tb)
    return sum(vdot(npf(x), npf(y)) for x, y in zip(la, lb))


def jl_tree_vdot(a, b):
    """<a, b> over pytrees computed with jaclab ops (differentiable)."""
    la, _ = jl.tree_flatten(a)
    lb, _ = jl.tree_flatten(b)
    total = None
    for x, y in zip(la, lb):
        x = x if isinstance(x, jl.Tensor) else jl.array(x)
        term = jl.sum(x * y)
        total = term if total is None else total + term
    return total


def rand_like(rng, a, dtype=np.float64) -> np.ndarray:
    return rng.standard_normal(np.shape(a)).astype(dtype)


def rand_tree_like(rng, tree):
    leaves, td = jl.tree_flatten(tree)
    return jl.tree_unflatten(td, [rand_like(rng, x) for x in leaves])


# ---- comparisons ------------------------------------------------------------------------------


def assert_close(got, want, rtol=FD_RTOL, atol=FD_ATOL, what=""):
    """|got - want| <= atol * scale + rtol * |want|, scale = max(1, max |want|)."""
    got = npf(got)
    want = npf(want)
    assert got.shape == want.shape, f"{what}: shape {got.shape} != {want.shape}"
    scale = max(1.0, float(np.max(np.abs(want)))) if want.size else 1.0
    err = np.abs(got - want)
    tol = atol * scale + rtol * np.abs(want)
    if not np.all(err <= tol):
        i = np.unravel_index(int(np.argmax(err - tol)), err.shape) if err.ndim else ()
        raise AssertionError(
            f"{what}: max err {float(np.max(err)):.3e} (scale {scale:.3e}); at {i}: got {got[i]!r}, want {want[i]!r}"
        )


# ---- finite differences -----------------------------------------------------------------------


def fd_jvp(f, args, tangents, eps=FD_EPS) -> np.ndarray:
    """Central difference (f(x + eps t) - f(x - eps t)) / (2 eps), f evaluated via jaclab."""
    plus = [np.asarray(a, np.float64) + eps * np.asarray(t, np.float64) for a, t in zip(args, tangents)]
    minus = [np.asarray(a, np.float64) - eps * np.asarray(t, np.float64) for a, t in zip(args, tangents)]
    return (evaluate(f, plus) - evaluate(f, minus)) / (2 * eps)


def fd_grad(phi, args, eps=FD_EPS) -> list[np.ndarray]:
    """Gradient of a scalar NumPy-valued phi(*args) by central differences, one per argument."""
    args = [np.array(a, np.float64) for a in args]
    grads = []
    for k, a in enumerate(args):
        g = np.zeros_like(a)
        flat = g.reshape(-1)
        for j in range(a.size):
            p = [x.copy() for x in args]
            m = [x.copy() for x in args]
            p[k].reshape(-1)[j] += eps
            m[k].reshape(-1)[j] -= eps
            flat[j] = (phi(*p) - phi(*m)) / (2 * eps)
        grads.append(g)
    return grads


def fd_vjp(f, args, cotangent, eps=FD_EPS) -> list[np.ndarray]:
    """J^T u by central differences of x -> <u, f(x)>, coordinate by coordinate."""
    u = np.asarray(cotangent, np.float64)
    return fd_grad(lambda *a: vdot(u, evaluate(f, a)), args, eps)


# ---- the checks shared by the op tests --------------------------------------------------------


def jl_jvp(f, args, tangents):
    out, t = jl.jvp(f, tuple(args), tuple(tangents))
    return out, t


def jl_vjp(f, args, cotangent):
    out, fn = jl.vjp(f, *args)
    cts = fn(cotangent)
    assert isinstance(cts, tuple) and len(cts) == len(args)
    return out, cts


def check_jvp_vjp(f, args, rng, rtol=FD_RTOL, atol=FD_ATOL, fd=True, eps=FD_EPS):
    """JVP and VJP of f at args against central finite differences, plus the transposition
    identity <u, J v> == <J^T u, v>. Returns (out, jvp tangent, vjp cotangents)."""
    args = [np.asarray(a, np.float64) for a in args]
    value = evaluate(f, args)
    tangents = [rand_like(rng, a) for a in args]
    u = rand_like(rng, value)

    out, jv = jl_jvp(f, args, tangents)
    assert isinstance(jv, jl.Tensor) and isinstance(out, jl.Tensor)
    assert jv.shape == out.shape == value.shape and jv.dtype == np.float64
    assert_close(out, value, rtol=1e-13, atol=1e-14, what="jvp primal output")

    out2, cts = jl_vjp(f, args, u)
    assert_close(out2, value, rtol=1e-13, atol=1e-14, what="vjp primal output")
    for c, a in zip(cts, args):
        assert c.shape == a.shape and c.dtype == np.float64, (c.shape, a.shape, c.dtype)

    if fd:
        assert_close(jv, fd_jvp(f, args, tangents, eps), rtol, atol, what="JVP vs finite differences")
        for k, (c, g) in enumerate(zip(cts, fd_vjp(f, args, u, eps))):
            assert_close(c, g, rtol, atol, what=f"VJP (argument {k}) vs finite differences")

    check_transposition(u, jv, cts, tangents)
    return out, jv, cts


def check_transposition(u, jv, cts, tangents, rtol=TRANSPOSE_RTOL):
    """<u, J v> == <J^T u, v> up to rtol times the rounding scale of the inner products."""
    lhs = vdot(u, npf(jv))
    rhs = sum(vdot(npf(c), t) for c, t in zip(cts, tangents))
    scale = _dot_scale(u, npf(jv), cts, tangents)
    assert abs(lhs - rhs) <= rtol * scale, f"<u, Jv> = {lhs!r} vs <J^T u, v> = {rhs!r} (scale {scale:.3e})"


def _dot_scale(u, jv, cts, tangents) -> float:
    """Rounding scale of the two inner products: sum |u||Jv| (+ the other side), so that a
    cancelling inner product is not held to an absolute error of 1e-12."""
    s = float(np.sum(np.abs(u) * np.abs(jv)))
    s += sum(float(np.sum(np.abs(npf(c)) * np.abs(t))) for c, t in zip(cts, tangents))
    return max(1.0, s)


def rss_bytes() -> int:
    with open("/proc/self/statm") as fh:
        pages = int(fh.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE")


erf_np = np.vectorize(math.erf, otypes=[np.float64])
