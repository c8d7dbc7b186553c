"""Batched forward mode (K tangent directions in one pass) and chunked Jacobians.

Reference: K separate plain JVPs, and reverse-mode Jacobians; every op spec of test_ops."""
import numpy as np
import pytest

import jaclab as jl
from jaclab import _core
from test_ops import LINKS, SPEC_IDS, SPECS, make_chain

UNBATCHABLE = ("batch of tangent directions", "at most 4 dimensions")


def batched_vs_separate(f, args, rng, K=3):
    primals = [jl.array(a) for a in args]
    tans = [rng.standard_normal((K,) + a.shape) for a in args]

    def flat(xs):
        out = f(*xs)
        return list(out) if isinstance(out, (list, tuple)) else [out]

    _, tb = _core.jvp_flat(flat, primals, [jl.array(t) for t in tans], K)
    for k in range(K):
        _, tk = _core.jvp_flat(flat, primals, [jl.array(t[k]) for t in tans])
        for got, want in zip(tb, tk):
            got, want = np.asarray(got)[k], np.asarray(want)
            scale = max(1.0, float(np.max(np.abs(want))))
            assert np.max(np.abs(got - want)) <= 1e-13 * scale


@pytest.mark.parametrize("op", SPECS, ids=SPEC_IDS)
def test_batched_jvp_matches_separate_jvps(op):
    rng = np.random.default_rng(7)
    args = op.args(rng)
    try:
        batched_vs_separate(op.f, args, rng)
    except ValueError as e:  # only where a batch of tangents would exceed 4-D (attention, 4-D values)
        assert any(m in str(e) for m in UNBATCHABLE), str(e)


@pytest.mark.parametrize("seed", range(6))
def test_batched_jvp_random_chains(seed):
    rng = np.random.default_rng(3000 + seed)
    f, _ = make_chain(rng, [n for n in LINKS if n != "attention"])

    args = [rng.standard_normal((3, 4)), rng.standard_normal((4, 4)), rng.standard_normal(4)]
    batched_vs_separate(f, args, rng, K=5)


@pytest.mark.parametrize("chunk", [None, 1, 2, 7, 1000])
def test_chunked_fwd_jacobian_equals_rev(chunk):
    rng = np.random.default_rng(1)
    W1, W2 = rng.standard_normal((5, 6)), rng.standard_normal((6, 5))
    x = rng.standard_normal((3, 5))

    def f(p, x):
        h = jl.tanh(x @ p["W1"] + p["b"])
        return {"y": jl.softmax(h @ p["W2"]), "n": jl.layer_norm(h, np.ones(6), np.zeros(6))}

    p = {"W1": W1, "W2": W2, "b": rng.standard_normal(6)}
    Jf = jl.jacobian(f, argnums=(0, 1), mode="fwd", chunk_size=chunk)(p, x)
    Jr = jl.jacobian(f, argnums=(0, 1), mode="rev")(p, x)
    fl, _ = jl.tree_flatten(Jf)
    rl, _ = jl.tree_flatten(Jr)
    for a, b in zip(fl, rl):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-13)


def test_hessian_by_fwd_over_rev_chunks():
    rng = np.random.default_rng(2)
    A = rng.standard_normal((6, 6))
    x = rng.standard_normal(6)
    f = lambda x: jl.sum(jl.tanh(A @ x) ** 2)  # noqa: E731
    H = jl.jacobian(jl.grad(f), mode="fwd", chunk_size=4)(x)
    Hr = jl.jacobian(jl.grad(f), mode="rev")(x)
    np.testing.assert_allclose(H, Hr, rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(H, H.T, rtol=1e-12, atol=1e-13)


def test_attention_falls_back_to_one_direction_per_pass():
    rng = np.random.default_rng(3)
    q = rng.standard_normal((1, 2, 3, 4))
    f = lambda q: jl.attention(q, q, q, causal=True)  # noqa: E731
    Jf = jl.jacobian(f, mode="fwd", chunk_size=5)(q)
    Jr = jl.jacobian(f, mode="rev")(q)
    np.testing.assert_allclose(Jf, Jr, rtol=1e-12, atol=1e-13)


def test_batched_tangent_shape_errors():
    x = jl.array(np.ones((2, 3)))
    with pytest.raises(ValueError, match=r"\(4, 2, 3\)"):
        _core.jvp_flat(lambda xs: [jl.tanh(xs[0])], [x], [jl.array(np.ones((2, 3)))], 4)
    with pytest.raises(ValueError, match="chunk_size"):
        jl.jacobian(jl.tanh, chunk_size=0)(np.ones(3))


# ---- batched reverse mode: K cotangents in one sweep ---------------------------------------


def batched_pullback_vs_separate(f, args, rng, K=3):
    def flat(xs):
        out = f(*xs)
        return list(out) if isinstance(out, (list, tuple)) else [out]

    out, pullback = _core.vjp_flat(flat, [jl.array(a) for a in args])
    cts = [rng.standard_normal((K,) + tuple(o.shape)) for o in out]
    gb = pullback([jl.array(c) for c in cts], K)
    for k in range(K):
        gk = pullback([jl.array(c[k]) for c in cts])
        for got, want in zip(gb, gk):
            got, want = np.asarray(got)[k], np.asarray(want)
            scale = max(1.0, float(np.max(np.abs(want))))
            assert np.max(np.abs(got - want)) <= 1e-13 * scale


@pytest.mark.parametrize("op", SPECS, ids=SPEC_IDS)
def test_batched_pullback_matches_separate_pullbacks(op):
    rng = np.random.default_rng(11)
    args = op.args(rng)
    try:
        batched_pullback_vs_separate(op.f, args, rng)
    except ValueError as e:  # only where a batch of cotangents would exceed 4-D
        assert any(m in str(e) for m in UNBATCHABLE + ("batch of cotangent directions",)), str(e)


@pytest.mark.parametrize("seed", range(6))
def test_batched_pullback_random_chains(seed):
    rng = np.random.default_rng(4000 + seed)
    f, _ = make_chain(rng, [n for n in LINKS if n != "attention"])

    args = [rng.standard_normal((3, 4)), rng.standard_normal((4, 4)), rng.standard_normal(4)]
    batched_pullback_vs_separate(f, args, rng, K=5)


@pytest.mark.parametrize("chunk", [None, 1, 3, 1000])
def test_chunked_rev_jacobian_equals_fwd(chunk):
    rng = np.random.default_rng(5)
    p = {"W": rng.standard_normal((4, 7)), "b": rng.standard_normal(7)}
    x = rng.standard_normal((3, 4))

    def f(p, x):
        h = jl.tanh(jl.linear(x, p["W"], p["b"]))
        return [jl.log_softmax(h), jl.sum(h * h, axis=0)]

    Jr = jl.jacobian(f, argnums=(0, 1), mode="rev", chunk_size=chunk)(p, x)
    Jf = jl.jacobian(f, argnums=(0, 1), mode="fwd", chunk_size=1)(p, x)
    for a, b in zip(jl.tree_flatten(Jr)[0], jl.tree_flatten(Jf)[0]):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("chunk", [None, 1, 4])
def test_per_sample_jacobian_rev_chunks(chunk):
    rng = np.random.default_rng(6)
    model = jl.nn.Sequential(jl.nn.Linear(6, 8), jl.nn.Tanh(), jl.nn.Linear(8, 3))
    params = model.init(0)
    x = rng.standard_normal((5, 6))
    fn = lambda h: model.apply(params, h)  # noqa: E731
    J = jl.analysis.per_sample_jacobian(fn, x, mode="rev", chunk_size=chunk)
    Jfull = jl.jacobian(fn, mode="fwd", chunk_size=1)(x)
    np.testing.assert_allclose(J, np.stack([Jfull[b, :, b, :] for b in range(5)]), rtol=1e-12, atol=1e-13)


def test_attention_rev_falls_back_to_one_direction_per_sweep():
    rng = np.random.default_rng(8)
    q = rng.standard_normal((1, 2, 3, 4))
    f = lambda q: jl.attention(q, q, q, causal=False)  # noqa: E731
    Jr = jl.jacobian(f, mode="rev", chunk_size=5)(q)
    Jf = jl.jacobian(f, mode="fwd", chunk_size=1)(q)
    np.testing.assert_allclose(Jr, Jf, rtol=1e-12, atol=1e-13)


def test_batched_pullback_errors():
    out, pullback = _core.vjp_flat(lambda xs: [jl.tanh(xs[0])], [jl.array(np.ones((2, 3)))])
    with pytest.raises(ValueError, match=r"leading axis"):
        pullback([jl.array(np.ones((2, 3)))], 4)


# ---- shared tangent directions: (K, 1, ...) tangents broadcast over rows -------------------


# Ops whose first argument has rows to share a tangent across (>= 2 dims).
SHARED_SPECS = [s for s in SPECS if s.args(np.random.default_rng(0)) and s.args(np.random.default_rng(0))[0].ndim >= 2]


@pytest.mark.parametrize("op", SHARED_SPECS, ids=[s.name for s in SHARED_SPECS])
def test_shared_tangent_equals_broadcast_tangent(op):
    """A tangent with size-1 dims (one direction shared by all rows) gives exactly what the same
    tangent broadcast to full shape gives, for every op (reductions, reshapes and norms included)."""
    rng = np.random.default_rng(13)
    args = op.args(rng)
    K = 2
    shared = [rng.standard_normal((K, 1) + a.shape[1:]) if i == 0 else rng.standard_normal((K,) + a.shape)
              for i, a in enumerate(args)]
    full = [np.broadcast_to(t, (K,) + a.shape).copy() for t, a in zip(shared, args)]

    def flat(xs):
        out = op.f(*xs)
        return list(out) if isinstance(out, (list, tuple)) else [out]

    primals = [jl.array(a) for a in args]
    try:
        _, ts = _core.jvp_flat(flat, primals, [jl.array(t) for t in shared], K)
    except ValueError as e:
        assert any(m in str(e) for m in UNBATCHABLE), str(e)
        return
    _, tf = _core.jvp_flat(flat, primals, [jl.array(t) for t in full], K)
    for a, b in zip(ts, tf):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-13, atol=1e-13)


def test_per_sample_jacobian_fwd_with_norms_and_reductions():
    rng = np.random.default_rng(14)
    model = jl.nn.Sequential(jl.nn.Linear(5, 6), jl.nn.LayerNorm(6), jl.nn.GELU(), jl.nn.Residual(jl.nn.MLP(6, 8, 6)))
    params = model.init(1)
    x = rng.standard_normal((4, 5))
    fn = lambda h: jl.softmax(model.apply(params, h)) * jl.sum(h, axis=-1, keepdims=True)  # noqa: E731
    J = jl.analysis.per_sample_jacobian(fn, x, mode="fwd", chunk_size=2)
    Jfull = jl.jacobian(fn, mode="rev", chunk_size=1)(x)
    np.testing.assert_allclose(J, np.stack([Jfull[b, :, b, :] for b in range(4)]), rtol=1e-12, atol=1e-13)
