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
