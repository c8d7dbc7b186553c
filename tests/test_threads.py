"""jl.set_num_threads and the elementwise pool: large ops (split across threads) against NumPy,
and the same bits at any thread count."""
from __future__ import annotations

import os

import numpy as np
import pytest

import jaclab as jl


@pytest.fixture
def threads():
    saved_pool, saved_blas = jl.num_threads(), jl.info()["blas_threads"]
    yield
    jl._core.set_pool_num_threads(saved_pool)
    jl._core.set_blas_num_threads(saved_blas)


# Shapes big enough that every loop kind is split (> 2 x 256K elements for the cheap loops):
# contiguous, scalar, row-broadcast, strided, and copies of transposed views.
def large_ops(rng, dtype):
    a = rng.standard_normal((520, 1027)).astype(dtype)
    b = rng.standard_normal((520, 1027)).astype(dtype)
    row = rng.standard_normal(1027).astype(dtype)
    col = (rng.uniform(1.0, 2.0, (520, 1))).astype(dtype)
    A, B, R, C = (jl.array(x) for x in (a, b, row, col))
    return [
        (jl.tanh(A), np.tanh(a)), (jl.exp(A), np.exp(a)), (jl.square(A), a * a), (jl.relu(A), np.maximum(a, 0)),
        (A * B, a * b), (A + R, a + row), (R - A, row - a), (A / C, a / col), (A * 2.5, a * 2.5),
        (A + 1.0, a + 1.0), (A.T * B.T, a.T * b.T), (jl.transpose(A) + jl.transpose(B), a.T + b.T),
        (jl.reshape(jl.transpose(A), (-1,)), a.T.reshape(-1)),  # tiled transposing copy
        (jl.reshape(jl.transpose(jl.reshape(A, (20, 26, 1027)), (1, 0, 2)), (-1,)),  # row copies
         a.reshape(20, 26, 1027).transpose(1, 0, 2).reshape(-1)),
    ]


@pytest.mark.parametrize("n", [1, 2, 3])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_large_elementwise_ops_match_numpy(threads, n, dtype):
    jl.set_num_threads(n)
    assert jl.num_threads() == n and jl.info()["blas_threads"] == n
    rng = np.random.default_rng(n)
    tol = 1e-14 if dtype == np.float64 else 2e-6
    for k, (got, want) in enumerate(large_ops(rng, dtype)):
        np.testing.assert_allclose(np.asarray(got), want, rtol=tol, atol=tol, err_msg=f"op {k}")


def test_thread_count_does_not_change_the_bits(threads):
    results = {}
    for n in (1, 2, 4):
        jl.set_num_threads(n)
        results[n] = [np.asarray(t).copy() for t, _ in large_ops(np.random.default_rng(0), np.float64)]
    for n in (2, 4):
        for k, (x, y) in enumerate(zip(results[1], results[n])):
            assert np.array_equal(x, y), f"op {k} differs with {n} threads"


def test_set_num_threads_rejects_non_positive():
    with pytest.raises(ValueError, match="n >= 1"):
        jl.set_num_threads(0)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_pool_works_in_a_forked_child(threads):
    """A forked child has none of the parent's pool threads: it must start its own, not hang."""
    jl.set_num_threads(2)
    a = np.random.default_rng(1).standard_normal(1 << 19)
    np.testing.assert_allclose(np.asarray(jl.tanh(jl.array(a))), np.tanh(a), rtol=1e-14, atol=1e-15)  # pool up
    pid = os.fork()
    if pid == 0:  # child: exit code 0 only if the split loop ran and was right
        ok = False
        try:
            ok = np.allclose(np.asarray(jl.tanh(jl.array(a))), np.tanh(a), rtol=1e-14, atol=1e-15)
        finally:
            os._exit(0 if ok else 1)
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
