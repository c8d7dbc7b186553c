"""Resident memory stays flat over 10^4 small transforms (no leaked graphs, tapes or buffers)."""
from __future__ import annotations

import gc

import numpy as np
import pytest

import jaclab as jl
from conftest import rss_bytes

WARMUP = 2000
ITERS = 10000
# Per-transform runs are shorter (a leak of >= ~2 KB per call still shows); the mixed run is 2000 + 10^4.
WARMUP_EACH = 500
ITERS_EACH = 3000
MAX_GROWTH = 5 * 1024 * 1024  # bytes


RNG = np.random.default_rng(0)
W1 = RNG.standard_normal((4, 8)) / 2
B1 = RNG.standard_normal(8) / 2
W2 = RNG.standard_normal((8, 3)) / 2
X = RNG.standard_normal((5, 4))
Y = RNG.standard_normal((5, 3))
V = RNG.standard_normal((5, 4))


def loss(x):
    return jl.mse(jl.tanh(x @ W1 + B1) @ W2, Y)


def mlp(x):
    return jl.gelu(x @ W1 + B1) @ W2


def _jvp():
    return jl.jvp(mlp, (X,), (V,))[1]


def _vjp():
    return jl.vjp(mlp, X)[1](Y)[0]


def _grad():
    return jl.grad(loss)(X)


def _hvp():  # forward over reverse
    return jl.hvp(loss, (X,), (V,))[0]


def _rev_over_fwd():
    return jl.grad(lambda x: jl.jvp(loss, (x,), (V,))[1])(X)


def _rev_over_rev_pytree():
    return jl.grad(lambda p: jl.sum(jl.grad(loss)(p["x"]) ** 2))({"x": X})["x"]


TRANSFORMS = {
    "jvp": _jvp,
    "vjp": _vjp,
    "grad": _grad,
    "hvp": _hvp,
    "rev_over_fwd": _rev_over_fwd,
    "rev_over_rev_pytree": _rev_over_rev_pytree,
}


def _growth(step, warmup=WARMUP, iters=ITERS) -> int:
    for i in range(warmup):
        step(i)
    gc.collect()
    before = rss_bytes()
    for i in range(iters):
        step(i)
    gc.collect()
    return rss_bytes() - before


@pytest.mark.parametrize("name", list(TRANSFORMS))
def test_rss_flat_per_transform(name):
    fn = TRANSFORMS[name]
    first = np.asarray(fn()).copy()
    growth = _growth(lambda i: fn(), WARMUP_EACH, ITERS_EACH)
    assert growth < MAX_GROWTH, f"{name}: RSS grew by {growth / 2**20:.2f} MiB over {ITERS_EACH} calls"
    np.testing.assert_array_equal(np.asarray(fn()), first)  # results did not drift


def test_rss_flat_mixed_transforms():
    fns = list(TRANSFORMS.values())
    growth = _growth(lambda i: fns[i % len(fns)]())
    assert growth < MAX_GROWTH, f"RSS grew by {growth / 2**20:.2f} MiB over {ITERS} mixed transforms"


def _pytree_transforms():
    params = {"W": W1, "b": B1, "out": [W2]}
    f = lambda p: jl.mse(jl.tanh(jl.array(X) @ p["W"] + p["b"]) @ p["out"][0], Y)  # noqa: E731
    return {
        "jvp_pytree": lambda: jl.jvp(f, (params,), (params,)),
        "grad_pytree": lambda: jl.grad(f)(params),
        "hvp_pytree": lambda: jl.hvp(f, (params,), (params,)),
        "jacobian_fwd": lambda: jl.jacobian(mlp, mode="fwd")(X),
        "jacobian_rev": lambda: jl.jacobian(mlp, mode="rev")(X),
    }


@pytest.mark.parametrize("name", [*TRANSFORMS, *_pytree_transforms()])
def test_transforms_leave_no_reference_cycles(name):
    # Inputs and results must be freed when the caller drops them, not at the next garbage
    # collection: the engine's block cache can only reuse a block once it is freed (a recursive
    # closure in tree_flatten once held every leaf of every transform until then).
    fn = {**TRANSFORMS, **_pytree_transforms()}[name]
    fn()
    gc.collect()
    enabled = gc.isenabled()
    gc.disable()
    try:
        fn()
        found = gc.collect()
    finally:
        if enabled:
            gc.enable()
    assert found == 0, f"{name}: one call left {found} objects in reference cycles"


def test_analyses_leave_no_reference_cycles():
    m = jl.nn.Sequential(jl.nn.Linear(4, 8), jl.nn.Tanh(), jl.nn.Linear(8, 3))
    r = jl.nn.Sequential(*[jl.nn.Residual(jl.nn.MLP(4, 8, 4, "tanh"), scale=0.5) for _ in range(3)])
    p, pr = m.init(0), r.init(1)
    loss_p = lambda q: jl.mean(jl.square(m.apply(q, jl.array(X))))  # noqa: E731
    A = jl.analysis
    calls = {
        "input_jacobian": lambda: A.input_jacobian(m, p, X),
        "layer_jacobians": lambda: A.layer_jacobians(r, pr, X),
        "geometric_complexity": lambda: A.geometric_complexity(m, p, X),
        "hessian_eigs": lambda: A.hessian_eigs(loss_p, p, k=2),
        "hessian_trace": lambda: A.hessian_trace(loss_p, p, 4),
        "apply": lambda: m.apply(p, X),
        "linearize": lambda: jl.linearize(mlp, X)[1](V),
        "modified_loss": lambda: A.modified_loss(loss_p, p, 0.1),
        "lie_bracket": lambda: A.lie_bracket(loss_p, lambda q: jl.mean(jl.tanh(m.apply(q, jl.array(X)))), p),
        "residual_expansion": lambda: A.residual_expansion(r, pr, X, 2),
        "train": lambda: jl.optim.train(m, p, "mse", (X, Y), jl.optim.SGD(0.1), steps=2, batch_size=5),
    }
    enabled = gc.isenabled()
    try:
        for name, fn in calls.items():
            fn()
            gc.collect()
            gc.disable()
            fn()
            found = gc.collect()
            gc.enable()
            assert found == 0, f"{name}: one call left {found} objects in reference cycles"
    finally:
        if not enabled:
            gc.disable()


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("shape", [(3, 5), (1000, 700), (5, 1_000_003)])  # the last: a populated mapping
def test_workspace_arrays_are_writable_engine_blocks(shape, dtype):
    a = jl._core._workspace(list(shape), dtype)
    assert a.shape == shape and a.dtype == dtype and a.flags.writeable and a.flags.c_contiguous
    a[...] = np.arange(a.size, dtype=dtype).reshape(shape)
    b = a[1:]  # a view keeps the block alive after the array itself is gone
    del a
    gc.collect()
    expect = np.arange(shape[1], 2 * shape[1], dtype=dtype)
    np.testing.assert_array_equal(b[0], expect)


def test_cached_memory_is_reported_and_released():
    jl.release_cached_memory()
    assert jl.cached_memory() == 0
    keep = jl.array(np.arange(3_000_000, dtype=np.float64)) * 1.0  # an engine block in use: survives the release
    expect = np.asarray(keep).copy()
    a = jl.analysis._workspace((4, 1_000_000))
    a[...] = 1.0
    nbytes = a.nbytes
    del a
    assert jl.cached_memory() >= nbytes  # the freed block is kept for reuse ...
    b = jl.analysis._workspace((4, 1_000_000))  # ... and taken again for the same size
    assert jl.cached_memory() < nbytes
    del b
    released = jl.release_cached_memory()
    assert released >= nbytes and jl.cached_memory() == 0
    np.testing.assert_array_equal(np.asarray(keep), expect)
    # allocation still works (to rounding: jaclab's vector tanh need not round like NumPy's)
    np.testing.assert_allclose(np.asarray(jl.tanh(keep)), np.tanh(expect), rtol=1e-15, atol=0)


MiB = 1 << 20


def test_cache_reuses_a_larger_mapped_block_and_keeps_the_latest():
    """Mapped blocks (from 16 MiB) serve requests down to half their size; a freed mapped block
    that does not fit under their 512 MiB bound is kept by returning older idle mapped blocks
    (largest first); heap blocks have a 512 MiB budget of their own, and one freed into a full
    heap budget goes back itself. So a 35-row Lanczos basis reuses a 60-row one, alternating
    sizes map nothing new, and the HVPs' small blocks leave the basis alone."""
    jl.release_cached_memory()
    try:
        big = jl.analysis._workspace((40 * MiB // 8,))
        big[...] = 2.0
        del big
        assert 40 * MiB <= jl.cached_memory() < 41 * MiB
        small = jl.analysis._workspace((25 * MiB // 8,))  # 25 MiB: takes the idle 40 MiB block
        assert jl.cached_memory() < MiB
        small[...] = 3.0
        assert small.sum() == 3.0 * small.size
        del small
        assert 40 * MiB <= jl.cached_memory() < 41 * MiB  # the block goes back at its real size
        tiny = jl.analysis._workspace((17 * MiB // 8,))  # under half of 40 MiB: a new mapping
        assert 40 * MiB <= jl.cached_memory() < 41 * MiB
        del tiny

        jl.release_cached_memory()
        a = jl.analysis._workspace((300 * MiB // 8,))
        b = jl.analysis._workspace((260 * MiB // 8,))
        a[...] = 1.0
        b[...] = 1.0
        del a  # 300 MiB idle
        assert 300 * MiB <= jl.cached_memory() < 301 * MiB
        del b  # 560 MiB would pass the bound: the older 300 MiB block is returned instead
        assert 260 * MiB <= jl.cached_memory() < 261 * MiB

        # heap blocks (64 KiB to 16 MiB) have their own 512 MiB budget: 600 MiB of them freed
        # after the mapped block leave it cached
        small = [jl.analysis._workspace((MiB // 8,)) for _ in range(600)]
        for a in small:
            a[...] = 1.0
        del small
        cached = jl.cached_memory()
        assert 260 * MiB + 500 * MiB <= cached <= 260 * MiB + 513 * MiB, cached / MiB
        # the heap blocks idle first stay: a block of a size not among them is not cached
        odd = jl.analysis._workspace((3 * MiB // 8,))
        odd[...] = 1.0
        del odd
        assert jl.cached_memory() == cached
        again = jl.analysis._workspace((260 * MiB // 8,))  # the mapped block, still there
        assert jl.cached_memory() <= cached - 260 * MiB
        del again
    finally:
        jl.release_cached_memory()
