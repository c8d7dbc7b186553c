"""jl.set_num_threads and jaclab's pool: large elementwise ops and GEMMs (split across threads)
against NumPy, and the same bits at any thread count where that is promised."""
from __future__ import annotations

import os

import numpy as np
import pytest

import jaclab as jl


@pytest.fixture
def threads():
    saved = jl.num_threads()
    yield
    jl.set_num_threads(saved)


# Shapes big enough that every loop kind is split (> 2 x 256K elements for the cheap loops, twice
# that in float32): contiguous, scalar, row-broadcast, strided, and copies of transposed views.
def large_ops(rng, dtype):
    a = rng.standard_normal((1040, 1027)).astype(dtype)
    b = rng.standard_normal((1040, 1027)).astype(dtype)
    row = rng.standard_normal(1027).astype(dtype)
    col = (rng.uniform(1.0, 2.0, (1040, 1))).astype(dtype)
    A, B, R, C = (jl.array(x) for x in (a, b, row, col))
    return [
        (jl.tanh(A), np.tanh(a)), (jl.exp(A), np.exp(a)), (jl.square(A), a * a), (jl.relu(A), np.maximum(a, 0)),
        (A * B, a * b), (A + R, a + row), (R - A, row - a), (A / C, a / col), (A * 2.5, a * 2.5),
        (A + 1.0, a + 1.0), (A.T * B.T, a.T * b.T), (jl.transpose(A) + jl.transpose(B), a.T + b.T),
        (jl.reshape(jl.transpose(A), (-1,)), a.T.reshape(-1)),  # tiled transposing copy
        (jl.reshape(jl.transpose(jl.reshape(A, (40, 26, 1027)), (1, 0, 2)), (-1,)),  # row copies
         a.reshape(40, 26, 1027).transpose(1, 0, 2).reshape(-1)),
    ]


@pytest.mark.parametrize("n", [1, 2, 3])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_large_elementwise_ops_match_numpy(threads, n, dtype):
    jl.set_num_threads(n)
    assert jl.num_threads() == n and jl.info()["blas_threads"] == 1  # OpenBLAS: one thread, split by jaclab
    rng = np.random.default_rng(n)
    tol = 1e-14 if dtype == np.float64 else 2e-6
    for k, (got, want) in enumerate(large_ops(rng, dtype)):
        np.testing.assert_allclose(np.asarray(got), want, rtol=tol, atol=tol, err_msg=f"op {k}")


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_thread_count_does_not_change_the_bits(threads, dtype):
    results = {}
    for n in (1, 2, 4):
        jl.set_num_threads(n)
        results[n] = [np.asarray(t).copy() for t, _ in large_ops(np.random.default_rng(0), dtype)]
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


# ---- GEMMs split over the pool (kernel_util.h: gemm, gemm_batch_strided) ------------------------
# OpenBLAS runs on one thread; jaclab cuts each large product into row blocks (or column blocks
# when C is wider than tall), one single-threaded call each. (M, K, N) shapes: both cuts, ragged
# edges, a product below the split threshold, and batched slices (one slice per thread).
SPLIT_CASES = [(256, 256, 256), (300, 130, 90), (90, 130, 301), (33, 517, 1000), (1000, 64, 7), (20, 20, 20)]


def _split_operands(rng, M, K, N, dtype, trans_a, trans_b):
    a = rng.standard_normal((M, K)).astype(dtype)
    b = rng.standard_normal((K, N)).astype(dtype)
    # A transposed layout reaches the BLAS as op(A) = A^T of a row-major array: no copy.
    A = jl.array(np.ascontiguousarray(a.T)).T if trans_a else jl.array(a)
    B = jl.array(np.ascontiguousarray(b.T)).T if trans_b else jl.array(b)
    return a, b, A, B


@pytest.mark.parametrize("n", [1, 2, 3, 4])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("trans", [(False, False), (True, False), (False, True), (True, True)])
def test_split_gemms_match_numpy(threads, n, dtype, trans):
    jl.set_num_threads(n)
    rng = np.random.default_rng([n, int(trans[0]), int(trans[1])])
    tol = dict(rtol=1e-13, atol=1e-13) if dtype == np.float64 else dict(rtol=2e-5, atol=2e-5)
    for M, K, N in SPLIT_CASES:
        a, b, A, B = _split_operands(rng, M, K, N, dtype, *trans)
        want = _np_mm(a, b)
        got = np.asarray(A @ B)
        scale = np.abs(want).max()
        np.testing.assert_allclose(got / scale, want / scale, **tol, err_msg=f"{(M, K, N)} at {n} threads")
        again = np.asarray(A @ B)  # the same blocks every call: the same bits
        assert np.array_equal(got, again), f"{(M, K, N)} changed between calls at {n} threads"


@pytest.mark.parametrize("n", [1, 2, 3])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_linear_writes_the_bias_block_by_block(threads, n, dtype):
    """jl.linear's forward: each thread writes the bias into its block of y (rows, or columns when
    y is wider than tall) and accumulates its GEMM onto it; every layout against NumPy."""
    jl.set_num_threads(n)
    rng = np.random.default_rng(n)
    tol = dict(rtol=1e-13, atol=1e-13) if dtype == np.float64 else dict(rtol=2e-5, atol=2e-5)
    for xs, (K, N) in [((200, 96), (96, 80)),     # split by rows
                       ((40, 128), (128, 600)),   # wider than tall: split by columns
                       ((3, 50, 64), (64, 72)),   # leading dims folded into the rows
                       ((96,), (96, 4000)),       # one row, split by columns
                       ((7, 5), (5, 3)),          # too small to split
                       ((64, 0), (0, 300))]:      # K = 0: the bias alone
        x = rng.standard_normal(xs).astype(dtype)
        W = rng.standard_normal((K, N)).astype(dtype)
        b = rng.standard_normal(N).astype(dtype)
        want = np.matmul(x.astype(np.float64), W.astype(np.float64)) + b
        got = np.asarray(jl.linear(jl.array(x), jl.array(W), jl.array(b)))
        assert got.shape == want.shape
        scale = max(np.abs(want).max(), 1.0)
        np.testing.assert_allclose(got / scale, want / scale, **tol, err_msg=f"x {xs}, W {(K, N)}")


@pytest.mark.parametrize("n", [2, 3])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_batched_slices_side_by_side_match_numpy(threads, n, dtype):
    """Small batched products go one slice per thread (gemm_batch_strided); large ones one after
    the other, each split."""
    jl.set_num_threads(n)
    rng = np.random.default_rng(n)
    tol = dict(rtol=1e-13, atol=1e-13) if dtype == np.float64 else dict(rtol=2e-5, atol=2e-5)
    for batch, M, K, N in [(7, 64, 32, 64), (3, 300, 200, 300), (2, 16, 8, 16)]:
        a = rng.standard_normal((batch, M, K)).astype(dtype)
        b = rng.standard_normal((batch, K, N)).astype(dtype)
        got = np.asarray(jl.array(a) @ jl.array(b))
        want = _np_mm(a, b)
        np.testing.assert_allclose(got / np.abs(want).max(), want / np.abs(want).max(), **tol)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_split_gemm_bits_do_not_depend_on_the_thread_count_for_tiled_shapes(threads, dtype):
    """Where every block is a whole number of OpenBLAS tiles (widths that are multiples of 64, as
    in the benchmark models) and big enough for OpenBLAS's main kernels, the split gives the
    unsplit product's bits in float64 (OpenBLAS's SkylakeX and Haswell kernels alike). (Below
    ~10^6 multiply-adds OpenBLAS switches to small-matrix kernels that round differently, so e.g.
    W1's 256x512x10 output layer, cut into two 128-row blocks, is not bit-identical to the
    one-thread product: equal to rounding, tested above.) Float32 is bit-identical on the
    SkylakeX kernels, but the Haswell sgemm kernel (AVX2-only CPUs) rounds a row by where it
    falls in its 24-row tiles, and a block cut at row 128 shifts those: there the products agree
    to a few float32 ulps of the largest entry, which is what is asserted for float32."""
    rng = np.random.default_rng(5)
    for M, K, N in [(256, 256, 256), (256, 784, 512), (512, 512, 256), (1024, 256, 768), (512, 512, 64)]:
        a = jl.array(rng.standard_normal((M, K)).astype(dtype))
        b = jl.array(rng.standard_normal((K, N)).astype(dtype))
        results = {}
        for n in (1, 2, 4):
            jl.set_num_threads(n)
            results[n] = np.asarray(a @ b).copy()
        for n in (2, 4):
            if dtype == np.float64:
                assert np.array_equal(results[1], results[n]), f"{(M, K, N)} differs with {n} threads"
            else:
                scale = np.abs(results[1]).max()
                np.testing.assert_allclose(results[n] / scale, results[1] / scale, rtol=0,
                                           atol=8 * np.finfo(np.float32).eps, err_msg=f"{(M, K, N)}, {n} threads")


# ---- two GEMMs side by side (kernels::matmul_pair / matmul_pair_sum) ------------------------
# The first-order product rules run their two GEMMs side by side (one per thread) when the pool has
# exactly two threads and the GEMMs are big (>= 2^20 multiply-adds each) and of similar size.
# These shapes take that path at 2 threads and the plain one at 1 and 3; every result is checked
# against NumPy, and the fall-backs (unequal sizes, 1-D x, broadcast batch) are covered too.
PAIR_CASES = [  # (x shape, W shape): x @ W and linear(x, W, b)
    ((96, 128), (128, 112)),        # plain 2-D
    ((3, 40, 128), (128, 96)),      # leading dims folded into the GEMM's rows
    ((8, 128), (128, 128)),         # second GEMM 16x bigger than the first: falls back
]


def _np_mm(a, b):
    return np.matmul(a.astype(np.float64), b.astype(np.float64))


@pytest.mark.parametrize("n", [1, 2, 3])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("case", range(len(PAIR_CASES)))
def test_product_rules_side_by_side_match_numpy(threads, n, dtype, case):
    jl.set_num_threads(n)
    xs, ws = PAIR_CASES[case]
    rng = np.random.default_rng([n, case])
    x, dx = (rng.standard_normal(xs).astype(dtype) for _ in range(2))
    w, dw = (rng.standard_normal(ws).astype(dtype) for _ in range(2))
    b, db = (rng.standard_normal(ws[1]).astype(dtype) for _ in range(2))
    g = rng.standard_normal(xs[:-1] + ws[1:]).astype(dtype)
    K, N = ws
    # Relative to each result's largest entry: a sum of GEMMs rounds like its terms, so an entry
    # that cancels to near zero carries the absolute error of the big ones (float32: ~1e-5 of the
    # largest entry here, with the blocks' rounding at their edges depending on the BLAS kernel).
    tol = dict(rtol=1e-12, atol=1e-12) if dtype == np.float64 else dict(rtol=2e-5, atol=2e-5)

    def close(got, want):
        scale = np.abs(want).max()
        np.testing.assert_allclose(np.asarray(got) / scale, want / scale, **tol)

    # JVP: dx W + x dW (matmul), + db (linear)
    _, t = jl.jvp(lambda x, w: x @ w, (x, w), (dx, dw))
    close(np.asarray(t), _np_mm(dx, w) + _np_mm(x, dw))
    _, t = jl.jvp(jl.linear, (x, w, b), (dx, dw, db))
    close(np.asarray(t), _np_mm(dx, w) + _np_mm(x, dw) + db)
    # VJP: g W^T and x^T g (rows folded)
    want_x, want_w = _np_mm(g, w.T), _np_mm(x.reshape(-1, K).T, g.reshape(-1, N))
    for f in (lambda x, w: x @ w, lambda x, w: jl.linear(x, w, jl.array(b))):
        _, pull = jl.vjp(f, x, w)
        gx, gw = pull(g)
        close(np.asarray(gx), want_x)
        close(np.asarray(gw), want_w)
    # HVP of 0.5 ||x W||^2 in W along dW: x^T x dW (the tangent-only weight-gradient products)
    (hv,) = jl.hvp(lambda w: 0.5 * jl.sum(jl.square(jl.array(x) @ w)), (w,), (dw,))
    xf = x.reshape(-1, K).astype(np.float64)
    close(np.asarray(hv), xf.T @ (xf @ dw.astype(np.float64)))
    # HVP through two layers (both factors of the weight gradient carry tangents): against the
    # one-thread path, which multiplies in turn, and the symmetry <u, H v> = <v, H u>
    w2 = (0.1 * rng.standard_normal((N, N))).astype(dtype)
    dw2, u2 = (rng.standard_normal((N, N)).astype(dtype) for _ in range(2))
    u = rng.standard_normal(ws).astype(dtype)
    loss = lambda w, w2: 0.5 * jl.sum(jl.square(jl.tanh(jl.array(x) @ w) @ w2))  # noqa: E731
    hvp_of = lambda t: [np.asarray(h).astype(np.float64) for h in jl.hvp(loss, (w, w2), t)]  # noqa: E731
    h_v = hvp_of((dw, dw2))
    h_u = hvp_of((u, u2))
    jl.set_num_threads(1)
    h_v1 = hvp_of((dw, dw2))
    for got, want in zip(h_v, h_v1):
        close(got, want)
    dot = lambda a, b: sum(float(np.vdot(p, q)) for p, q in zip(a, b))  # noqa: E731
    uv, vu = dot((u, u2), h_v), dot((dw, dw2), h_u)
    assert abs(uv - vu) <= tol["rtol"] * 10 * max(abs(uv), 1.0)


@pytest.mark.parametrize("n", [1, 2])
def test_jvp_inside_grad_stays_differentiable_at_gemm_sizes(threads, n):
    # A jvp level opened inside a reverse trace (reverse-over-forward) records its tangents; one
    # opened outside (jl.hvp's forward-over-reverse) does not, and may use the side-by-side GEMMs.
    # d/dW sum((J_W(W) V)^2) at sizes where those GEMMs would apply, against central differences.
    jl.set_num_threads(n)
    rng = np.random.default_rng(11)
    x = rng.standard_normal((96, 128))
    w, v, d = (rng.standard_normal((128, 112)) / 12 for _ in range(3))
    X = jl.array(x)

    def g(w):
        _, t = jl.jvp(lambda w: jl.tanh(X @ w) @ jl.transpose(w), (w,), (jl.array(v),))
        return jl.sum(jl.square(t))

    gw = jl.grad(g)(w)
    eps = 1e-5
    fd = (float(np.asarray(g(w + eps * d))) - float(np.asarray(g(w - eps * d)))) / (2 * eps)
    exact = float(np.sum(np.asarray(gw) * d))
    assert abs(exact - fd) <= 1e-7 * max(1.0, abs(fd)), (exact, fd)


def test_derivatives_have_the_same_bits_at_any_thread_count(threads):
    # At two threads the product rules run their GEMMs side by side, elsewhere one after the
    # other: the same arithmetic in the same order, so JVP, VJP and HVP bits must not change.
    rng = np.random.default_rng(5)
    # K = 512 spans several of OpenBLAS's K blocks, where the summation order shows in the bits
    p = {"W1": jl.array(rng.standard_normal((512, 128)) / 22), "W2": jl.array(rng.standard_normal((128, 512)) / 11)}
    v = {k: jl.array(rng.standard_normal(a.shape)) for k, a in p.items()}
    X = jl.array(rng.standard_normal((64, 512)))
    f = lambda p: jl.tanh(jl.tanh(jl.tanh(X @ p["W1"]) @ p["W2"]) @ p["W1"])  # noqa: E731
    loss = lambda p: jl.sum(jl.square(f(p)))  # noqa: E731
    runs = {}
    for n in (1, 2, 3):
        jl.set_num_threads(n)
        outs = [jl.jvp(f, (p,), (v,))[1], *jl.tree_flatten(jl.grad(loss)(p))[0],
                *jl.tree_flatten(jl.hvp(loss, (p,), (v,))[0])[0]]
        runs[n] = [np.asarray(o).copy() for o in outs]
    for n in (2, 3):
        for k, (a, b) in enumerate(zip(runs[1], runs[n])):
            assert np.array_equal(a, b), f"result {k} differs at {n} threads"
