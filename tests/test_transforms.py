"""Transforms: grad / value_and_grad, hvp (vs finite differences of grad, symmetry,
reverse-over-reverse, reverse-over-forward), jacobian (fwd == rev == auto, shapes, pytrees,
argnums), linearize, and third-order nesting on g(x) = ||J(x) v||^2."""
from __future__ import annotations

import numpy as np
import pytest

import jaclab as jl
from conftest import (
    SEEDS,
    assert_close,
    evaluate,
    fd_grad,
    fd_jvp,
    jl_tree_vdot,
    npf,
    rand_like,
    rand_tree_like,
    tree_vdot,
    vdot,
)

HESS_RTOL = 1e-12

# ---- scalar test functions (positional args; each with an argument maker) ---------------------


def mlp_params(rng, d_in=4, d_h=5, d_out=3):
    return {
        "W1": rng.standard_normal((d_in, d_h)) / 2,
        "b1": rng.standard_normal(d_h) / 2,
        "W2": rng.standard_normal((d_h, d_out)) / 2,
        "b2": rng.standard_normal(d_out) / 2,
    }


def mlp(p, x):
    return jl.tanh(x @ p["W1"] + p["b1"]) @ p["W2"] + p["b2"]


def f_mlp_mse(p, x, y):
    return jl.mse(mlp(p, x), y)


def f_softmax_ce(z):
    return jl.cross_entropy(z, np.array([0, 2, 1, 2]))


def f_ce_probs(z, t):
    return jl.cross_entropy(z, jl.softmax(t))


def f_attention(q, k, v):
    return jl.sum(jl.attention(q, k, v, causal=True) ** 2)


def f_attention_noncausal(q, k, v):
    return jl.mean(jl.gelu(jl.attention(q, k, v)))


def f_layer_norm(x, g, b):
    return jl.sum(jl.gelu_tanh(jl.layer_norm(x, g, b)) * jl.sigmoid(x))


def f_rms(x, g):
    return jl.sum(jl.softplus(jl.rms_norm(x, g)) ** 1.5)


def f_elementwise(x, y):
    return jl.sum(jl.exp(0.3 * x) * jl.log(y * y + 1.0) / (1.0 + y * y) - jl.erf(x * y) + jl.sqrt(x * x + 1.0))


def f_block(x, Wq, Wk, Wv, g, b):
    """A pre-norm residual attention block, summed to a scalar."""
    h = jl.layer_norm(x, g, b)
    q = jl.reshape(h @ Wq, (1, 2, 3, 2))
    k = jl.reshape(h @ Wk, (1, 2, 3, 2))
    v = jl.reshape(h @ Wv, (1, 2, 3, 2))
    a = jl.reshape(jl.attention(q, k, v, causal=True), (2, 3, 2))
    y = x + jl.reshape(jl.transpose(a, (1, 0, 2)), (3, 4))
    return jl.sum(jl.log_softmax(y, axis=-1) * jl.softmax(x, axis=0))


def _n(*s):
    return lambda rng: rng.standard_normal(s)


SCALAR_FNS = {
    "softmax_ce": (f_softmax_ce, [_n(4, 3)]),
    "ce_probs": (f_ce_probs, [_n(4, 3), _n(4, 3)]),
    "attention": (f_attention, [_n(1, 2, 3, 4)] * 3),
    "attention_noncausal": (f_attention_noncausal, [_n(2, 3, 2)] * 3),
    "layer_norm": (f_layer_norm, [_n(3, 5), _n(5), _n(5)]),
    "rms_norm": (f_rms, [_n(3, 5), _n(5)]),
    "elementwise": (f_elementwise, [_n(2, 3), _n(3)]),
    "block": (f_block, [_n(3, 4), _n(4, 4), _n(4, 4), _n(4, 4), _n(4), _n(4)]),
}


@pytest.fixture(params=list(SCALAR_FNS), ids=list(SCALAR_FNS))
def scalar_fn(request):
    return SCALAR_FNS[request.param]


def make_args(makers, rng):
    return [np.asarray(m(rng), np.float64) for m in makers]


# ---- grad ----------------------------------------------------------------------------------------


def test_grad_vs_finite_differences(scalar_fn, rng):
    f, makers = scalar_fn
    args = make_args(makers, rng)
    n = len(args)
    value, grads = jl.value_and_grad(f, argnums=tuple(range(n)))(*args)
    assert isinstance(grads, tuple) and len(grads) == n
    assert value.shape == ()
    assert_close(value, evaluate(f, args), rtol=1e-13, atol=1e-14)
    want = fd_grad(lambda *a: float(evaluate(f, a)), args)
    for g, w, a in zip(grads, want, args):
        assert g.shape == a.shape
        assert_close(g, w)
    # int argnums gives the bare gradient, matching the tuple entry.
    g0 = jl.grad(f)(*args)
    assert isinstance(g0, jl.Tensor)
    np.testing.assert_array_equal(npf(g0), npf(grads[0]))
    g_last = jl.grad(f, argnums=-1)(*args)
    np.testing.assert_array_equal(npf(g_last), npf(grads[-1]))


def test_grad_pytree_params(rng):
    p = mlp_params(rng)
    x, y = rng.standard_normal((6, 4)), rng.standard_normal((6, 3))
    g = jl.grad(f_mlp_mse)(p, x, y)
    assert isinstance(g, dict) and sorted(g) == sorted(p)
    keys = sorted(p)

    def flat_f(*leaves):
        return f_mlp_mse(dict(zip(keys, leaves)), x, y)

    want = fd_grad(lambda *a: float(evaluate(flat_f, a)), [p[k] for k in keys])
    for k, w in zip(keys, want):
        assert g[k].shape == p[k].shape
        assert_close(g[k], w)
    gp, gx = jl.grad(f_mlp_mse, argnums=(0, 1))(p, x, y)
    for k in keys:
        np.testing.assert_array_equal(npf(gp[k]), npf(g[k]))
    (wx,) = fd_grad(lambda a: float(evaluate(lambda t: f_mlp_mse(p, t, y), [a])), [x])
    assert_close(gx, wx)


# ---- hvp -----------------------------------------------------------------------------------------


def hvp_all(f, args, vs):
    out = jl.hvp(f, tuple(args), tuple(vs))
    assert isinstance(out, tuple) and len(out) == len(args)
    return out


def test_hvp_vs_finite_differences_of_grad(scalar_fn, rng):
    f, makers = scalar_fn
    args = make_args(makers, rng)
    vs = [rand_like(rng, a) for a in args]
    n = len(args)
    g = jl.grad(f, argnums=tuple(range(n)))

    def grad_k(k):
        return lambda *a: g(*a)[k]

    hv = hvp_all(f, args, vs)
    for k in range(n):
        assert hv[k].shape == args[k].shape
        assert_close(hv[k], fd_jvp(grad_k(k), args, vs), what=f"Hv[{k}] vs FD of grad")


def test_hvp_symmetric(scalar_fn, rng):
    f, makers = scalar_fn
    args = make_args(makers, rng)
    v = [rand_like(rng, a) for a in args]
    w = [rand_like(rng, a) for a in args]
    hv = hvp_all(f, args, v)
    hw = hvp_all(f, args, w)
    a = sum(vdot(x, y) for x, y in zip(w, map(npf, hv)))
    b = sum(vdot(x, y) for x, y in zip(v, map(npf, hw)))
    scale = sum(float(np.sum(np.abs(x) * np.abs(npf(y)))) for x, y in zip(w, hv))
    scale += sum(float(np.sum(np.abs(x) * np.abs(npf(y)))) for x, y in zip(v, hw))
    assert abs(a - b) <= HESS_RTOL * max(1.0, scale), (a, b)


def test_hvp_equals_reverse_over_reverse_and_reverse_over_forward(scalar_fn, rng):
    f, makers = scalar_fn
    args = make_args(makers, rng)
    vs = [rand_like(rng, a) for a in args]
    n = len(args)
    nums = tuple(range(n))
    hv = hvp_all(f, args, vs)

    def gv(*a):  # <grad f(a), v>
        return jl_tree_vdot(jl.grad(f, argnums=nums)(*a), vs)

    rr = jl.grad(gv, argnums=nums)(*args)

    def jv(*a):  # J_f(a) v, by forward mode
        return jl.jvp(f, a, tuple(vs))[1]

    rf = jl.grad(jv, argnums=nums)(*args)
    for k in range(n):
        assert_close(rr[k], hv[k], rtol=HESS_RTOL, atol=HESS_RTOL, what=f"reverse-over-reverse [{k}]")
        assert_close(rf[k], hv[k], rtol=HESS_RTOL, atol=HESS_RTOL, what=f"reverse-over-forward [{k}]")


def test_hvp_forward_over_forward_diagonal(rng):
    """v^T H v by forward-over-forward equals <v, hvp>."""
    f, makers = SCALAR_FNS["layer_norm"]
    args = make_args(makers, rng)
    vs = [rand_like(rng, a) for a in args]

    def df(*a):
        return jl.jvp(f, a, tuple(vs))[1]

    vhv = jl.jvp(df, tuple(args), tuple(vs))[1]
    hv = hvp_all(f, args, vs)
    want = sum(vdot(v, npf(h)) for v, h in zip(vs, hv))
    assert abs(float(vhv) - want) <= HESS_RTOL * max(1.0, abs(want))


# jl.hvp reads only the gradient's tangents, so a weight's gradient may skip its value GEMM (a zero
# placeholder carries the tangent). These functions reach that shortcut and its fallbacks: a weight
# used twice (its placeholder is accumulated), in a product and elementwise, through jl.linear with
# batch dims, transposed, and under an outer jvp (two levels: the shortcut must step aside).
TANGENT_ONLY_FNS = {
    "shared_weight": (lambda x, W: jl.sum(jl.tanh(jl.tanh(x @ W) @ W)), [(5, 4), (4, 4)]),
    "product_and_elementwise": (lambda x, W: jl.sum(jl.tanh(x @ W) * jl.sum(W, axis=0)) + jl.sum(jl.square(W)),
                                [(3, 4), (4, 4)]),
    "linear_batched": (lambda x, W: jl.sum(jl.square(jl.tanh(jl.linear(x, W, jl.sum(W, axis=0) * 0.5)))), [(2, 3, 4), (4, 4)]),
    "transposed": (lambda x, W: jl.sum(jl.tanh(x @ W.T) ** 2), [(5, 3), (4, 3)]),
}


@pytest.mark.parametrize("name", sorted(TANGENT_ONLY_FNS))
def test_hvp_skipping_gradient_values_matches_jvp_of_grad(name, rng):
    f, shapes = TANGENT_ONLY_FNS[name]
    args = [rng.standard_normal(s) for s in shapes]
    vs = [rng.standard_normal(s) for s in shapes]
    hv = hvp_all(f, args, vs)
    # The plain path: jvp of jl.grad computes every value.
    ref = jl.jvp(jl.grad(f, argnums=(0, 1)), tuple(args), tuple(vs))[1]
    g = jl.grad(f, argnums=(0, 1))
    for k in range(2):
        assert_close(hv[k], ref[k], rtol=HESS_RTOL, atol=HESS_RTOL, what=f"hvp vs jvp(grad) [{k}]")
        assert_close(hv[k], fd_jvp(lambda *a, k=k: g(*a)[k], args, vs), what=f"hvp vs FD [{k}]")
    # Under an outer jvp (a second level) the hvp and its derivative stay exact.
    u = [rng.standard_normal(s) for s in shapes]
    outer = jl.jvp(lambda *a: hvp_all(f, a, vs)[1], tuple(args), tuple(u))[1]
    want = fd_jvp(lambda *a: hvp_all(f, a, vs)[1], args, u)
    assert_close(outer, want, what="jvp of the hvp vs FD")


def test_pullback_tangents_only_takes_no_batch(rng):
    _, pullback = jl._core.vjp_flat(lambda xs: [xs[0] * 2.0], [jl.array(rng.standard_normal(3))])
    with pytest.raises(ValueError, match="tangents_only"):
        pullback([jl.array(np.ones((2, 3)))], batch=2, tangents_only=True)


def test_hvp_pytree(rng):
    p = mlp_params(rng)
    x, y = rng.standard_normal((6, 4)), rng.standard_normal((6, 3))
    vp = rand_tree_like(rng, p)
    (hp,) = jl.hvp(lambda q: f_mlp_mse(q, x, y), (p,), (vp,))
    assert isinstance(hp, dict) and sorted(hp) == sorted(p)
    keys = sorted(p)
    for k in keys:
        def gk(*leaves, k=k):
            return jl.grad(f_mlp_mse)(dict(zip(keys, leaves)), x, y)[k]

        assert_close(hp[k], fd_jvp(gk, [p[k2] for k2 in keys], [vp[k2] for k2 in keys]), what=k)
    wp = rand_tree_like(rng, p)
    (hw,) = jl.hvp(lambda q: f_mlp_mse(q, x, y), (p,), (wp,))
    a, b = tree_vdot(wp, hp), tree_vdot(vp, hw)
    assert abs(a - b) <= HESS_RTOL * max(1.0, abs(a))


# ---- jacobian ------------------------------------------------------------------------------------

JAC_FNS = {
    "tanh_matmul": (lambda x, W: jl.tanh(x @ W), [_n(3, 4), _n(4, 2)]),
    "softmax": (lambda x: jl.softmax(x, axis=0), [_n(3, 2)]),
    "layer_norm": (jl.layer_norm, [_n(2, 4), _n(4), _n(4)]),
    "attention": (lambda q, k, v: jl.attention(q, k, v, causal=True), [_n(1, 1, 3, 2)] * 3),
    "to_scalar": (lambda x: jl.sum(jl.gelu(x)), [_n(2, 3)]),
    "from_scalar": (lambda s: jl.broadcast_to(s, (2, 3)) * np.arange(6.0).reshape(2, 3), [_n()]),
    "wide": (lambda x: jl.reshape(jl.exp(x), (-1,)) * 2.0, [_n(7, 2)]),
}


@pytest.mark.parametrize("name", list(JAC_FNS))
@pytest.mark.parametrize("seed", SEEDS)
def test_jacobian_modes_agree(name, seed):
    rng = np.random.default_rng(seed)
    f, makers = JAC_FNS[name]
    args = make_args(makers, rng)
    out = evaluate(f, args)
    for k in range(len(args)):
        Jf = jl.jacobian(f, argnums=k, mode="fwd")(*args)
        Jr = jl.jacobian(f, argnums=k, mode="rev")(*args)
        Ja = jl.jacobian(f, argnums=k)(*args)
        for J in (Jf, Jr, Ja):
            assert isinstance(J, np.ndarray) and J.dtype == np.float64
            assert J.shape == out.shape + args[k].shape
        np.testing.assert_allclose(Jf, Jr, rtol=1e-13, atol=1e-14)
        np.testing.assert_allclose(Ja, Jr, rtol=1e-13, atol=1e-14)
        # Column j is the JVP along basis vector e_j: compare one random direction with FD.
        v = rand_like(rng, args[k])
        tangents = [np.zeros_like(a) for a in args]
        tangents[k] = v
        want = fd_jvp(f, args, tangents)
        got = np.tensordot(Jr, v, axes=v.ndim) if v.ndim else Jr * v
        assert_close(got, want)


def test_jacobian_argnums_tuple(rng):
    x, W = rng.standard_normal((3, 4)), rng.standard_normal((4, 2))

    def f(x, W):
        return jl.tanh(x @ W)

    for mode in ("fwd", "rev", "auto"):
        Jx, JW = jl.jacobian(f, argnums=(0, 1), mode=mode)(x, W)
        assert Jx.shape == (3, 2, 3, 4) and JW.shape == (3, 2, 4, 2)
        np.testing.assert_allclose(Jx, jl.jacobian(f, argnums=0, mode="rev")(x, W), rtol=1e-13, atol=1e-14)
        np.testing.assert_allclose(JW, jl.jacobian(f, argnums=1, mode="fwd")(x, W), rtol=1e-13, atol=1e-14)
    # analytic: d tanh(xW)_{ij} / d x_{kl} = (1 - y_ij^2) delta_ik W_lj
    y = np.tanh(x @ W)
    want = np.einsum("ij,ik,lj->ijkl", 1 - y**2, np.eye(3), W)
    np.testing.assert_allclose(Jx, want, rtol=1e-13, atol=1e-14)


def test_jacobian_pytree_params(rng):
    p = mlp_params(rng, d_in=3, d_h=4, d_out=2)
    x = rng.standard_normal((5, 3))
    f = lambda p, x: {"y": mlp(p, x), "n": jl.sum(x * x)}  # noqa: E731
    res = {m: jl.jacobian(f, mode=m)(p, x) for m in ("fwd", "rev", "auto")}
    for m, J in res.items():
        assert sorted(J) == ["n", "y"]
        for out_key, out_shape in [("y", (5, 2)), ("n", ())]:
            assert sorted(J[out_key]) == sorted(p), m
            for k in p:
                assert J[out_key][k].shape == out_shape + p[k].shape
    for ok in ("y", "n"):
        for k in p:
            np.testing.assert_allclose(res["fwd"][ok][k], res["rev"][ok][k], rtol=1e-13, atol=1e-14)
            np.testing.assert_allclose(res["auto"][ok][k], res["rev"][ok][k], rtol=1e-13, atol=1e-14)
    # "n" does not depend on p.
    for k in p:
        assert not np.any(res["rev"]["n"][k])
    # J["y"]["W1"] contracted with a direction equals the JVP.
    vW1 = rand_like(rng, p["W1"])
    tp = {k: (vW1 if k == "W1" else np.zeros_like(v)) for k, v in p.items()}
    _, t = jl.jvp(f, (p, x), (tp, np.zeros_like(x)))
    np.testing.assert_allclose(np.tensordot(res["rev"]["y"]["W1"], vW1, axes=2), npf(t["y"]), rtol=1e-12, atol=1e-13)
    # argnums tuple with a pytree: a tuple over arguments, each a dict / array.
    Jp, Jx = jl.jacobian(lambda p, x: mlp(p, x), argnums=(0, 1), mode="rev")(p, x)
    assert isinstance(Jp, dict) and Jx.shape == (5, 2, 5, 3)
    np.testing.assert_allclose(Jp["b2"], res["fwd"]["y"]["b2"], rtol=1e-13, atol=1e-14)


def test_jacobian_bad_mode():
    with pytest.raises(ValueError, match="mode"):
        jl.jacobian(jl.tanh, mode="sideways")


# ---- linearize / vjp structure -------------------------------------------------------------------


def test_linearize(rng):
    x, W = rng.standard_normal((3, 4)), rng.standard_normal((4, 4))
    f = lambda x, W: jl.gelu(x @ W)  # noqa: E731
    out, f_jvp = jl.linearize(f, x, W)
    assert_close(out, evaluate(f, [x, W]), rtol=1e-13, atol=1e-14)
    for _ in range(3):
        tx, tW = rand_like(rng, x), rand_like(rng, W)
        assert_close(f_jvp(tx, tW), jl.jvp(f, (x, W), (tx, tW))[1], rtol=0, atol=0)
        assert_close(f_jvp(tx, tW), fd_jvp(f, [x, W], [tx, tW]))


def test_vjp_pytree_structure(rng):
    p = mlp_params(rng)
    x = rng.standard_normal((2, 4))
    out, fn = jl.vjp(mlp, p, x)
    cp, cx = fn(rand_like(rng, out))
    assert sorted(cp) == sorted(p) and cx.shape == x.shape
    for k in p:
        assert cp[k].shape == p[k].shape


# ---- third order: g(x) = ||J(x) v||^2 and h(x) = ||J(x)^T u||^2 ------------------------------------


def mlp_fn(rng):
    W1 = rng.standard_normal((4, 6)) / 2
    b1 = rng.standard_normal(6) / 2
    W2 = rng.standard_normal((6, 3)) / 2

    def f(x):  # R^4 -> R^3 (x of shape (4,))
        h = jl.gelu(x @ W1 + b1)
        return jl.tanh(h @ W2) + jl.softmax(h @ W2) * jl.sum(x * x)

    return f


@pytest.mark.parametrize("seed", SEEDS)
def test_norm_of_jvp_reverse_over_forward_vs_reverse_over_reverse(seed):
    rng = np.random.default_rng(seed)
    f = mlp_fn(rng)
    x, v, u0 = rng.standard_normal(4), rng.standard_normal(4), rng.standard_normal(3)

    def g_fwd(x):  # ||J v||^2 with J v by forward mode
        return jl.sum(jl.jvp(f, (x,), (v,))[1] ** 2)

    def g_rev(x):  # ||J v||^2 with J v = d/du <J^T u, v> (reverse over reverse)
        _, pull = jl.vjp(f, x)
        jv = jl.grad(lambda u: jl.sum(pull(u)[0] * v))(u0)
        return jl.sum(jv**2)

    assert_close(g_rev(x), g_fwd(x), rtol=1e-13, atol=1e-14)
    d_rf = jl.grad(g_fwd)(x)  # reverse over forward
    d_rr = jl.grad(g_rev)(x)  # reverse over reverse over reverse
    d_fd = fd_grad(lambda a: float(evaluate(g_fwd, [a])), [x])[0]
    assert_close(d_rf, d_rr, rtol=1e-12, atol=1e-12, what="rev-over-fwd vs rev-over-rev")
    assert_close(d_rf, d_fd, what="rev-over-fwd vs FD")
    assert_close(d_rr, d_fd, what="rev-over-rev vs FD")
    # forward over (reverse over forward): a Hessian-vector product of g, vs FD of its gradient.
    w = rng.standard_normal(4)
    hw = jl.hvp(g_fwd, (x,), (w,))[0]
    assert_close(hw, fd_jvp(jl.grad(g_fwd), [x], [w]), rtol=1e-6, atol=1e-7, what="hvp of ||Jv||^2")


@pytest.mark.parametrize("seed", SEEDS)
def test_norm_of_vjp_reverse_over_reverse(seed):
    rng = np.random.default_rng(seed)
    f = mlp_fn(rng)
    x, u = rng.standard_normal(4), rng.standard_normal(3)

    def h(x):  # ||J^T u||^2
        _, pull = jl.vjp(f, x)
        return jl.sum(pull(u)[0] ** 2)

    J = jl.jacobian(f, mode="rev")(x)
    assert_close(h(x), np.sum((J.T @ u) ** 2), rtol=1e-13, atol=1e-14)
    d_rr = jl.grad(h)(x)
    d_fd = fd_grad(lambda a: float(evaluate(h, [a])), [x])[0]
    assert_close(d_rr, d_fd, what="grad ||J^T u||^2 vs FD")

    # same gradient through forward mode: h(x) = ||J^T u||^2, d h/dx_j = 2 <J^T u, d(J^T u)/dx_j>
    def jtu(x):
        _, pull = jl.vjp(f, x)
        return pull(u)[0]

    r = npf(jtu(jl.array(x)))
    d_fwd = np.array([2 * vdot(r, npf(jl.jvp(jtu, (x,), (e,))[1])) for e in np.eye(4)])
    assert_close(d_fwd, d_rr, rtol=1e-12, atol=1e-12, what="forward-over-reverse vs reverse-over-reverse")


def test_reverse_trace_depth_restored(rng):
    """Nested transforms leave no reverse trace open behind them (also after an error)."""
    base = jl._core.reverse_trace_depth()
    x = rng.standard_normal(3)
    jl.grad(lambda x: jl.sum(jl.grad(lambda y: jl.sum(jl.tanh(y) ** 3))(x) ** 2))(x)
    assert jl._core.reverse_trace_depth() == base
    with pytest.raises(ValueError):
        jl.vjp(lambda x: x @ np.ones((4, 4)), x)
    assert jl._core.reverse_trace_depth() == base


# ---- float32 second order, and small structural cases ---------------------------------------------


def test_hvp_float32_matches_float64(scalar_fn, rng):
    f, makers = scalar_fn
    args64 = [np.asarray(a, np.float32).astype(np.float64) for a in make_args(makers, rng)]
    vs64 = [rand_like(rng, a).astype(np.float32).astype(np.float64) for a in args64]
    h64 = jl.hvp(f, tuple(args64), tuple(vs64))
    h32 = jl.hvp(f, tuple(a.astype(np.float32) for a in args64), tuple(v.astype(np.float32) for v in vs64))
    for a, b in zip(h32, h64):
        assert a.dtype == np.float32
        assert_close(a, b, rtol=1e-4, atol=1e-4, what="float32 hvp")


def test_unused_argument_gets_zeros(rng):
    x, y = rng.standard_normal((2, 3)), rng.standard_normal(4)
    gx, gy = jl.grad(lambda a, b: jl.sum(jl.tanh(a)), argnums=(0, 1))(x, y)
    assert gy.shape == (4,) and not np.any(npf(gy))
    assert_close(gx, 1 - np.tanh(x) ** 2, rtol=1e-14, atol=1e-15)
    hx, hy = jl.hvp(lambda a, b: jl.sum(a**3), (x, y), (x, y))
    assert_close(hx, 6 * x * x, rtol=1e-14, atol=1e-14)
    assert hy.shape == (4,) and not np.any(npf(hy))
    (c,) = jl.vjp(lambda a: jl.array(np.ones(2)), x)[1](np.ones(2))
    assert c.shape == x.shape and not np.any(npf(c))


def test_identity_and_reused_inputs(rng):
    x, v = rng.standard_normal((2, 3)), rng.standard_normal((2, 3))
    out, t = jl.jvp(lambda a: a, (x,), (v,))
    np.testing.assert_array_equal(npf(out), x)
    np.testing.assert_array_equal(npf(t), v)
    (c,) = jl.vjp(lambda a: a, x)[1](v)
    np.testing.assert_array_equal(npf(c), v)
    # the same tensor used several times accumulates
    g = jl.grad(lambda a: jl.sum(a * a + a + jl.tanh(a) * a))(x)
    assert_close(g, 2 * x + 1 + np.tanh(x) + x * (1 - np.tanh(x) ** 2), rtol=1e-14, atol=1e-14)
    (h,) = jl.hvp(lambda a: jl.sum(a * a * a), (x,), (v,))
    assert_close(h, 6 * x * v, rtol=1e-14, atol=1e-14)


def test_empty_arrays():
    z = np.zeros((0, 3))
    assert jl.tanh(z).shape == (0, 3)
    np.testing.assert_array_equal(npf(jl.sum(z, axis=0)), np.zeros(3))
    np.testing.assert_array_equal(npf(jl.matmul(np.zeros((2, 0)), np.zeros((0, 3)))), np.zeros((2, 3)))
    g = jl.grad(lambda a: jl.sum(jl.tanh(a)))(z)
    assert g.shape == (0, 3)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_hvp_through_tanh_fused_rule(dtype):
    # f(x) = sum(tanh(x)^2) / 2: grad = y (1 - y^2), Hessian = diag((1 - 3 y^2)(1 - y^2)). Its HVP
    # meets tanh's derivative t (1 - y^2) with tangents on both t and y, which jl.hvp computes in
    # one pass; jl.jacobian's forward mode (several directions at once) takes the composite rule,
    # and must give the same bits, column by column.
    rng = np.random.default_rng(11)
    f = lambda x: 0.5 * jl.sum(jl.square(jl.tanh(x)))  # noqa: E731
    tol = 1e-13 if dtype == np.float64 else 2e-6
    for n in (7, 300_001):  # the long one is split over threads
        x = rng.standard_normal(n).astype(dtype)
        v = rng.standard_normal(n).astype(dtype)
        (hv,) = jl.hvp(f, (x,), (v,))
        y = np.tanh(x.astype(np.float64))
        want = (1 - 3 * y**2) * (1 - y**2) * v
        np.testing.assert_allclose(np.asarray(hv, np.float64), want, rtol=tol, atol=tol)
    x = rng.uniform(-2, 2, 7).astype(dtype)
    for i in range(7):
        e = np.zeros(7, dtype)
        e[i] = rng.standard_normal()
        (col,) = jl.hvp(f, (x,), (e,))
        col_b = np.asarray(jl.jacobian(lambda s: jl.grad(f)(x + s * e), mode="fwd")(np.zeros((), dtype)))
        assert col_b.shape == (7,) and np.array_equal(np.asarray(col), col_b), i
