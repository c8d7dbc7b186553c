"""Batched matmul on the CPU: groups of small GEMMs go to the BLAS as one batched call. Every
layout the grouping must handle, against NumPy: merged batch dims, broadcast (stride-0) batch
dims that cannot be merged, transposed views, and the accumulating form (addmm)."""
from __future__ import annotations

import numpy as np
import pytest

import jaclab as jl

CASES = [  # (a shape, b shape, transpose a?, transpose b?)
    ((8, 4, 16, 8), (8, 4, 8, 16), False, False),   # (B, H) merged: one batched call
    ((8, 4, 16, 8), (8, 4, 16, 8), False, True),    # q k^T
    ((6, 5, 4, 7), (5, 7, 3), False, False),        # b broadcast over the outer batch dim
    ((6, 1, 5, 7), (3, 7, 2), False, False),        # a broadcast over the inner batch dim
    ((2, 3, 9, 4), (4, 9), True, True),             # both transposed, shared b
    ((3, 64, 64), (3, 64, 64), False, False),       # few, larger GEMMs
    ((2, 1, 130, 70), (2, 3, 70, 90), False, False),
]


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("case", range(len(CASES)))
def test_batched_matmul_matches_numpy(case, dtype):
    sa, sb, ta, tb = CASES[case]
    rng = np.random.default_rng(case)
    a = rng.standard_normal(sa).astype(dtype)
    b = rng.standard_normal(sb).astype(dtype)
    A, B = jl.array(a), jl.array(b)
    if ta:
        a, A = np.swapaxes(a, -1, -2), jl.swapaxes(A, -1, -2)
    if tb:
        b, B = np.swapaxes(b, -1, -2), jl.swapaxes(B, -1, -2)
    want = np.matmul(a.astype(np.float64), b.astype(np.float64))
    tol = 1e-12 if dtype == np.float64 else 1e-4
    np.testing.assert_allclose(np.asarray(A @ B), want, rtol=tol, atol=tol)
    # The accumulating form through its derivative: the tangent of a @ b is da b + a db (addmm).
    da, db = rng.standard_normal(a.shape).astype(dtype), rng.standard_normal(b.shape).astype(dtype)
    _, t = jl.jvp(lambda x, y: x @ y, (jl.array(a), jl.array(b)), (jl.array(da), jl.array(db)))
    np.testing.assert_allclose(np.asarray(t), np.matmul(da, b) + np.matmul(a, db), rtol=tol, atol=tol)
