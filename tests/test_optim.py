"""jaclab.optim: C++ update rules and loops against their formulas and the NumPy mirror.

- model specs (C++) == the Python blocks, bit for bit;
- every optimizer, forward / backward / windowed-backward order: the C++ loop == the NumPy
  mirror ``jl.optim.reference`` replaying ``result.batches`` (float64 rounding);
- formulas on quadratics with known answers: GD = (I - hA)^n, one RK step = R(-hA) with the
  stability polynomials, RK global error vs exp(-tA) with observed orders 1, 2, 2, 4, embedded
  error estimates, Polyak / corridor steps;
- backward-SGD = direct composition of single steps; window 1 = forward;
- reproducibility, callbacks, Ctrl-C, checkpoints (resume == uninterrupted), bad input.
"""
from __future__ import annotations

import math
import os
import signal
import threading

import numpy as np
import pytest

import jaclab as jl
from jaclab import nn
from jaclab.optim import reference as ref

OPTIMIZERS = [
    jl.optim.SGD(0.1),
    jl.optim.Momentum(0.1, 0.9),
    jl.optim.Momentum(0.05, 0.8, nesterov=True),
    jl.optim.Adam(1e-2),
    jl.optim.AdamW(1e-2, weight_decay=0.1),
    jl.optim.RK("euler", 0.1),
    jl.optim.RK("heun", 0.1),
    jl.optim.RK("midpoint", 0.1),
    jl.optim.RK("rk4", 0.1),
    jl.optim.RK("rk4", 0.02, preconditioner="adam"),
    jl.optim.RK("heun", 0.05, momentum=0.9),
    jl.optim.RK("rk23", 0.1, tol=1e-4),
    jl.optim.RK("rk45", 0.01, tol=1e-4, preconditioner="adam", momentum=0.5),
    jl.optim.Polyak(0.5, max_lr=1.0),
]
ORDERS = [("forward", None), ("backward", None), ("backward", 3)]


def flat(tree) -> np.ndarray:
    return jl.optim.flatten_params(tree)[0]


def assert_rel(got, want, rtol, what=""):
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    scale = max(1.0, float(np.max(np.abs(want))))
    err = float(np.max(np.abs(got - want)))
    assert err <= rtol * scale, f"{what}: max abs err {err:.3e} > {rtol:.1e} * {scale:.3e}"


@pytest.fixture(scope="module")
def regression():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((48, 4))
    Y = np.tanh(X @ rng.standard_normal((4, 3)))
    model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Residual(nn.MLP(8, 8, 8, "tanh"), 0.5), nn.Linear(8, 3))
    return model, model.init(1), X, Y


# ---- model specs ----------------------------------------------------------------------------------
SPEC_CASES = [
    (nn.Linear(4, 3), (5, 4)),
    (nn.MLP(4, 8, 3, "tanh"), (5, 4)),
    (nn.LayerNorm(4), (5, 4)),
    (nn.RMSNorm(4), (5, 4)),
    (nn.Attention(8, 2, True), (2, 5, 8)),
    (nn.TransformerBlock(8, 2, 16, norm="layer", scale=0.5), (2, 5, 8)),
    (nn.TransformerBlock(8, 2, 16, norm="rms"), (2, 5, 8)),
    (nn.TransformerBlock(8, 2, 16, norm=None, causal=False), (2, 5, 8)),
    (nn.Sequential(nn.Linear(4, 8), nn.GELU(), nn.Residual(nn.MLP(8, 8, 8), 0.3), nn.ReLU(), nn.Linear(8, 2)), (5, 4)),
    (nn.Sequential(nn.TransformerBlock(8, 2, 16), nn.LastToken(), nn.Linear(8, 1)), (2, 5, 8)),
]


@pytest.mark.parametrize("model,xshape", SPEC_CASES, ids=lambda c: type(c).__name__ if not isinstance(c, tuple) else "")
def test_spec_matches_python_block(model, xshape):
    rng = np.random.default_rng(3)
    params = jl.tree_map(lambda a: a + 0.1 * rng.standard_normal(a.shape), model.init(2))
    x = rng.standard_normal(xshape)
    leaves = jl.tree_flatten(params)[0]
    spec = model._spec()
    assert [tuple(s) for s in spec.param_shapes()] == [np.shape(a) for a in leaves]
    np.testing.assert_array_equal(np.asarray(spec.apply(leaves, x)), np.asarray(model.apply(params, x)))


def test_spec_flat_order_and_errors():
    assert [tuple(s) for s in nn.MLP(2, 3, 4)._spec().param_shapes()] == [(2, 3), (3, 4), (3,), (4,)]  # W1 W2 b1 b2
    spec = nn.Linear(2, 3)._spec()
    with pytest.raises(ValueError, match="expected 2 parameter arrays"):
        spec.apply([np.zeros((2, 3))], np.zeros((1, 2)))
    with pytest.raises(ValueError, match="flat parameter 1 must have shape"):
        spec.apply([np.zeros((2, 3)), np.zeros(2)], np.zeros((1, 2)))


# ---- the C++ loop against the NumPy mirror --------------------------------------------------------
@pytest.mark.parametrize("order,window", ORDERS, ids=["forward", "backward", "backward-w3"])
@pytest.mark.parametrize("opt", OPTIMIZERS, ids=repr)
def test_loop_matches_reference(regression, opt, order, window):
    model, params, X, Y = regression
    r = jl.optim.train(model, params, "mse", (X, Y), opt, steps=6, batch_size=8, seed=1, order=order, window=window)
    assert r.batches.shape == (6, 8) and r.steps == 6
    p_ref, losses_ref = ref.train(model, params, "mse", (X, Y), opt, r.batches, order, window)
    # Same operations in the same order: equal bits, except where a norm is summed (adaptive RK's
    # error, Polyak's |g|^2: sequential in C++, pairwise in NumPy), i.e. rounding.
    assert_rel(flat(r.params), flat(p_ref), 1e-12, "params")
    assert_rel(r.losses, losses_ref, 1e-12, "losses")
    assert np.all(np.isfinite(r.losses))


@pytest.mark.parametrize("opt", [jl.optim.Adam(1e-2), jl.optim.RK("rk4", 0.3)], ids=repr)
def test_loop_matches_reference_classification_and_transformer(opt):
    X, y = jl.data.spirals(60, seed=0)
    model = nn.Sequential(nn.Linear(2, 16), nn.Tanh(), nn.Linear(16, 3))
    params = model.init(0)
    r = jl.optim.train(model, params, "cross_entropy", (X, y), opt, steps=5, batch_size=10, seed=2)
    p_ref, l_ref = ref.train(model, params, "cross_entropy", (X, y), opt, r.batches)
    assert_rel(flat(r.params), flat(p_ref), 1e-13, "mlp params")
    assert_rel(r.losses, l_ref, 1e-13, "mlp losses")

    Xs, Ys = jl.data.icl_regression(16, n_context=4, d=3, seed=0)
    model = nn.Sequential(nn.TransformerBlock(Xs.shape[-1], 2, 8, norm="rms"), nn.LastToken(), nn.Linear(Xs.shape[-1], 1))
    params = model.init(0)
    r = jl.optim.train(model, params, "mse", (Xs, Ys), opt, steps=3, batch_size=4, seed=0, order="backward")
    p_ref, l_ref = ref.train(model, params, "mse", (Xs, Ys), opt, r.batches, "backward")
    assert_rel(flat(r.params), flat(p_ref), 1e-12, "transformer params")
    assert_rel(r.losses, l_ref, 1e-12, "transformer losses")


@pytest.mark.parametrize("opt", OPTIMIZERS, ids=repr)
def test_step_matches_reference_and_shows_state(regression, opt):
    model, params, X, Y = regression
    theta, shapes, tree = jl.optim.flatten_params(params)
    f = ref.objective(model, "mse", shapes, tree, X[:8], Y[:8])

    def grad_fn(p):
        lv, g = f(flat(p))
        return lv, jl.optim.unflatten_params(g, shapes, tree)

    state, s_ref, th_ref = jl.optim.init(opt, params), ref.init(opt, theta), theta
    p = params
    for _ in range(3):
        loss, g = grad_fn(p)
        p, state = jl.optim.step(opt, state, p, g, grad_fn=grad_fn, loss=loss)
        th_ref, s_ref, _ = ref.step(opt, th_ref, s_ref, f)
    assert_rel(flat(p), th_ref, 1e-13, "params")
    assert state["t"] == s_ref["t"] == 3
    for k in ("m", "v"):
        if k in s_ref:
            assert_rel(flat(state[k]), s_ref[k], 1e-13, f"state[{k}]")
    if isinstance(opt, jl.optim.RK):
        assert len(state["stages"]) == len(ref.TABLEAUX[opt.method][1])
        for a, b in zip(state["stages"], s_ref["stages"]):
            assert_rel(flat(a), b, 1e-13, "stage")


def test_step_needs_grad_fn_for_multistage_and_loss_for_polyak(regression):
    p = {"w": np.ones(3)}
    g = {"w": np.ones(3)}
    with pytest.raises(ValueError, match="grad_fn"):
        jl.optim.step(jl.optim.RK("rk4", 0.1), jl.optim.init(jl.optim.RK("rk4", 0.1), p), p, g)
    with pytest.raises(ValueError, match="loss"):
        jl.optim.step(jl.optim.Polyak(), jl.optim.init(jl.optim.Polyak(), p), p, g)
    p1, s1 = jl.optim.step(jl.optim.SGD(0.5), {"t": 0}, p, g)
    np.testing.assert_array_equal(p1["w"], 0.5 * np.ones(3))
    assert s1["t"] == 1 and p["w"][0] == 1.0  # inputs untouched


@pytest.mark.parametrize("act", ["tanh", "relu", "gelu", "sigmoid", "softplus", "identity"])
@pytest.mark.parametrize("loss", ["mse", "cross_entropy"])
def test_fast_gradient_path_matches_autograd(act, loss):
    rng = np.random.default_rng(1)
    X = rng.standard_normal((40, 5))
    Y = rng.integers(0, 3, 40) if loss == "cross_entropy" else rng.standard_normal((40, 3))
    model = nn.Sequential(nn.Linear(5, 8), nn.MLP(8, 6, 8, act), nn.Residual(nn.MLP(8, 8, 8, act), 0.7),
                          nn.Activation() if act == "identity" else {"tanh": nn.Tanh(), "relu": nn.ReLU(), "gelu": nn.GELU(),
                          "sigmoid": nn.Sigmoid(), "softplus": nn.Residual(nn.Linear(8, 8))}[act], nn.Linear(8, 3))
    params = model.init(0)
    kw = dict(steps=5, batch_size=4, seed=0)
    fast = jl.optim.train(model, params, loss, (X, Y), jl.optim.RK("heun", 0.1), **kw)
    slow = jl.optim.train(model, params, loss, (X, Y), jl.optim.RK("heun", 0.1), grad_path="autograd", **kw)
    assert_rel(flat(fast.params), flat(slow.params), 1e-13)
    assert_rel(fast.losses, slow.losses, 1e-13)


# ---- formulas on quadratics -----------------------------------------------------------------------
def quad(n=4, seed=0, lam=(0.3, 1.0)):
    rng = np.random.default_rng(seed)
    Q, _ = np.linalg.qr(rng.standard_normal((n, n)))
    ev = np.linspace(lam[0], lam[1], n)
    A = (Q * ev) @ Q.T
    return A, Q, ev, rng.standard_normal(n)


def quad_step(opt, A, theta, state=None):
    gf = lambda p: (0.5 * p["x"] @ A @ p["x"], {"x": A @ p["x"]})  # noqa: E731
    p = {"x": theta}
    state = state if state is not None else jl.optim.init(opt, p)
    lv, g = gf(p)
    p, state = jl.optim.step(opt, state, p, g, grad_fn=gf, loss=lv)
    return p["x"], state


def expm_flow(Q, ev, t, theta0):
    return Q @ (np.exp(-t * ev) * (Q.T @ theta0))


def test_gd_on_quadratic_is_matrix_power():
    A, _, _, th0 = quad()
    h, th = 0.3, th0
    for _ in range(10):
        th, _ = quad_step(jl.optim.SGD(h), A, th)
    assert_rel(th, np.linalg.matrix_power(np.eye(4) - h * A, 10) @ th0, 1e-13)


@pytest.mark.parametrize("method,R", [
    ("euler", lambda z: 1 + z),
    ("heun", lambda z: 1 + z + z**2 / 2),
    ("midpoint", lambda z: 1 + z + z**2 / 2),
    ("rk4", lambda z: 1 + z + z**2 / 2 + z**3 / 6 + z**4 / 24),
])
def test_rk_one_step_is_stability_polynomial(method, R):
    A, Q, ev, th0 = quad()
    h = 0.7
    th, state = quad_step(jl.optim.RK(method, h), A, th0)
    assert_rel(th, Q @ (R(-h * ev) * (Q.T @ th0)), 1e-13, method)
    assert len(state["stages"]) == {"euler": 1, "heun": 2, "midpoint": 2, "rk4": 4}[method]


def test_rk4_stability_beyond_euler():
    # lambda_max = 1, h = 2.5: Euler's factor |1 - 2.5| = 1.5 diverges, RK4's |R(-2.5)| = 0.648 converges.
    A, _, _, th0 = quad(lam=(0.5, 1.0))
    e, r = th0, th0
    for _ in range(30):
        e, _ = quad_step(jl.optim.RK("euler", 2.5), A, e)
        r, _ = quad_step(jl.optim.RK("rk4", 2.5), A, r)
    assert np.linalg.norm(e) > 1e3 * np.linalg.norm(th0)
    assert np.linalg.norm(r) < 1e-3 * np.linalg.norm(th0)


@pytest.mark.parametrize("method,order", [("euler", 1), ("heun", 2), ("midpoint", 2), ("rk4", 4)])
def test_rk_observed_order_of_convergence(method, order):
    """Global error at T = 1 against exp(-TA) theta_0 shrinks as h^p: fitted log-log slope ~ p."""
    A, Q, ev, th0 = quad(lam=(0.5, 2.0))
    exact = expm_flow(Q, ev, 1.0, th0)
    hs, errs = [], []
    for N in (8, 16, 32, 64):
        th = th0
        for _ in range(N):
            th, _ = quad_step(jl.optim.RK(method, 1.0 / N), A, th)
        hs.append(1.0 / N)
        errs.append(np.linalg.norm(th - exact))
    slope = np.polyfit(np.log(hs), np.log(errs), 1)[0]
    assert abs(slope - order) < 0.15, (method, slope, errs)
    if method == "rk4":
        assert errs[-1] < 1e-9


@pytest.mark.parametrize("method", ["rk23", "rk45"])
def test_embedded_pair_error_estimate_and_control(method):
    A, Q, ev, th0 = quad(lam=(0.5, 2.0))
    a, b, b_low, q = ref.TABLEAUX[method]
    h = 0.4
    opt = jl.optim.RK(method, h, tol=1e9)  # accept anything: one step, check the estimate
    th, st = quad_step(opt, A, th0)
    # On theta' = -A theta every stage is k_i = -A y_i: compute the stages in closed form.
    k = []
    for i in range(len(b)):
        y = th0 + h * sum((c * kj for c, kj in zip(a[i], k)), np.zeros(4))
        k.append(-A @ y)
    want_err = h * np.linalg.norm(sum((bi - bl) * ki for bi, bl, ki in zip(b, b_low, k)))
    assert_rel(st["err"], want_err, 1e-13, "err")
    assert_rel(th, th0 + h * sum(bi * ki for bi, ki in zip(b, k)), 1e-13, "step")
    # With error control the flow is followed to about tol over t = sum of accepted h.
    opt = jl.optim.RK(method, 0.5, tol=1e-8)
    th, st, t = th0, jl.optim.init(opt, {"x": th0}), 0.0
    for _ in range(40):
        th, st = quad_step(opt, A, th, st)
        t += st["lr"]
        assert st["err"] <= 1e-8
    assert_rel(th, expm_flow(Q, ev, t, th0), 1e-6, "adaptive flow")


def test_gd_on_least_squares_through_the_loop():
    """Full-batch GD via jl.optim.train on mse(X w + b, y): an affine map with a closed form."""
    rng = np.random.default_rng(5)
    X, y = rng.standard_normal((20, 3)), rng.standard_normal((20, 1))
    model = nn.Linear(3, 1)
    params = {"W": rng.standard_normal((3, 1)), "b": np.zeros(1)}
    h, n = 0.1, 25
    r = jl.optim.train(model, params, "mse", (X, y), jl.optim.SGD(h), steps=n, batch_size=20, seed=0)
    Z = np.hstack([X, np.ones((20, 1))])   # theta = (W, b): L = |Z theta - y|^2 / 20
    H = 2 * Z.T @ Z / 20
    star = np.linalg.lstsq(Z, y[:, 0], rcond=None)[0]
    th0 = np.concatenate([params["W"][:, 0], params["b"]])
    want = star + np.linalg.matrix_power(np.eye(4) - h * H, n) @ (th0 - star)
    assert_rel(np.concatenate([r.params["W"][:, 0], r.params["b"]]), want, 1e-12)


def test_polyak_steps():
    A, _, _, th0 = quad()
    opt = jl.optim.Polyak(eps=0.0)
    th, st = quad_step(opt, A, th0)
    g, L = A @ th0, 0.5 * th0 @ A @ th0
    assert_rel(st["lr"], L / (g @ g), 1e-14, "h = L/|g|^2")
    assert_rel(th, th0 - L / (g @ g) * g, 1e-14, "step")
    # Linear loss E = a.theta + c > 0: one corridor step lands on E = 0.
    a, c = np.array([1.0, -2.0, 0.5]), 3.0
    gf = lambda p: (float(a @ p["x"] + c), {"x": a})  # noqa: E731
    p = {"x": np.array([0.5, 0.1, 0.2])}
    lv, g = gf(p)
    p1, _ = jl.optim.step(opt, jl.optim.init(opt, p), p, g, grad_fn=gf, loss=lv)
    assert abs(gf(p1)[0]) < 1e-14
    # Corridor E = x1 + x2^2 from x2 = 0 (H g = 0): GD stays on the line, E drops by exactly h per step.
    gf = lambda p: (float(p["x"][0] + p["x"][1] ** 2), {"x": np.array([1.0, 2 * p["x"][1]])})  # noqa: E731
    p, h = {"x": np.array([2.0, 0.0])}, 0.25
    for n in range(1, 5):
        lv, g = gf(p)
        p, _ = jl.optim.step(jl.optim.SGD(h), {"t": 0}, p, g)
        assert gf(p)[0] == 2.0 - n * h and p["x"][1] == 0.0
    # max_lr caps the step; a loss below f_star gives no step.
    _, st = quad_step(jl.optim.Polyak(max_lr=1e-3), A, th0)
    assert st["lr"] == 1e-3
    th, st = quad_step(jl.optim.Polyak(f_star=1e6), A, th0)
    assert st["lr"] == 0.0 and np.array_equal(th, th0)


# ---- backward-SGD -----------------------------------------------------------------------------------
def test_backward_sgd_is_reverse_composition(regression):
    model, params, X, Y = regression
    opt = jl.optim.SGD(0.2)
    r = jl.optim.train(model, params, "mse", (X, Y), opt, steps=4, batch_size=8, seed=3, order="backward")
    rf = jl.optim.train(model, params, "mse", (X, Y), opt, steps=4, batch_size=8, seed=3)
    np.testing.assert_array_equal(r.batches, rf.batches)  # one realisation of the batches for both orders
    theta, shapes, tree = jl.optim.flatten_params(params)

    def T(k, th):  # the map of batch k (1-based): one SGD step on it
        idx = r.batches[k - 1]
        _, g = ref.objective(model, "mse", shapes, tree, X[idx], Y[idx])(th)
        p, _ = jl.optim.step(opt, {"t": 0}, jl.optim.unflatten_params(th, shapes, tree),
                             jl.optim.unflatten_params(g, shapes, tree))
        return flat(p)

    want = T(1, T(2, T(3, T(4, theta))))  # theta^b_4 = T_1 o T_2 o T_3 o T_4 (theta_0)
    assert_rel(flat(r.params), want, 1e-14)  # the loop's fast gradient path vs jl.grad: rounding
    ra = jl.optim.train(model, params, "mse", (X, Y), opt, steps=4, batch_size=8, seed=3, order="backward",
                        grad_path="autograd")
    np.testing.assert_array_equal(flat(ra.params), want)  # same engine: same bits
    assert r.grad_evals == 4 * 5 // 2
    # n = 1: both orders agree bit for bit; window = 1 is forward order.
    r1 = jl.optim.train(model, params, "mse", (X, Y), opt, steps=1, batch_size=8, seed=3, order="backward")
    f1 = jl.optim.train(model, params, "mse", (X, Y), opt, steps=1, batch_size=8, seed=3)
    np.testing.assert_array_equal(flat(r1.params), flat(f1.params))
    rw = jl.optim.train(model, params, "mse", (X, Y), opt, steps=4, batch_size=8, seed=3, order="backward", window=1)
    np.testing.assert_array_equal(flat(rw.params), flat(rf.params))
    np.testing.assert_array_equal(rw.losses, rf.losses)


def test_backward_sgd_converges_pathwise_on_a_contraction():
    """Least squares near its minimum: backward iterates settle (step length -> rounding), forward ones keep moving."""
    rng = np.random.default_rng(0)
    X = rng.standard_normal((64, 5))
    y = X @ rng.standard_normal((5, 1)) + 0.3 * rng.standard_normal((64, 1))
    model = nn.Linear(5, 1)
    Z = np.hstack([X, np.ones((64, 1))])
    star = np.linalg.lstsq(Z, y[:, 0], rcond=None)[0]
    params = {"W": star[:5, None].copy(), "b": star[5:].copy()}
    kw = dict(steps=150, batch_size=16, seed=1, trajectory=True)
    rb = jl.optim.train(model, params, "mse", (X, y), jl.optim.SGD(0.2), order="backward", **kw)
    rf = jl.optim.train(model, params, "mse", (X, y), jl.optim.SGD(0.2), **kw)
    step_len = lambda r: np.array([np.linalg.norm(flat(a) - flat(b)) for a, b in zip(r.trajectory[1:], r.trajectory[:-1])])  # noqa: E731
    sb, sf = step_len(rb), step_len(rf)
    assert len(sb) == 150 and rb.grad_evals == 150 * 151 // 2
    assert sb[-1] < 1e-10 * sb[0]                 # backward: geometric decay towards rounding
    assert np.median(sf[-20:]) > 0.1 * sb[0]      # forward: stays on its noise floor


# ---- reproducibility, callbacks, interrupts ------------------------------------------------------
def test_sampler_reproducible_and_epochs_are_permutations(regression):
    model, params, X, Y = regression
    a = jl.optim.train(model, params, "mse", (X, Y), jl.optim.Adam(1e-2), steps=13, batch_size=5, seed=7)
    b = jl.optim.train(model, params, "mse", (X, Y), jl.optim.Adam(1e-2), steps=13, batch_size=5, seed=7)
    c = jl.optim.train(model, params, "mse", (X, Y), jl.optim.Adam(1e-2), steps=13, batch_size=5, seed=8)
    np.testing.assert_array_equal(flat(a.params), flat(b.params))
    np.testing.assert_array_equal(a.losses, b.losses)
    assert not np.array_equal(a.batches, c.batches)
    np.testing.assert_array_equal(a.batches, jl.optim.batches(48, 5, 13, 7))
    per_epoch = 48 // 5  # 9 batches per epoch, 3 indices dropped
    epoch = a.batches[:per_epoch].ravel()
    assert len(set(epoch)) == 45 and epoch.min() >= 0 and epoch.max() < 48
    # A known value pins the sampler down across platforms and versions.
    assert jl.optim.batches(10, 3, 2, 0).shape == (2, 3)


def test_callback_record_every_and_stop(regression):
    model, params, X, Y = regression
    calls = []
    r = jl.optim.train(model, params, "mse", (X, Y), jl.optim.SGD(0.1), steps=10, batch_size=4, seed=0,
                       record_every=3, callback=lambda s, lv, el: calls.append((s, lv, el)))
    assert [c[0] for c in calls] == [3, 6, 9, 10]
    assert [c[1] for c in calls] == [r.losses[2], r.losses[5], r.losses[8], r.losses[9]]
    assert all(c[2] >= 0 for c in calls)
    r = jl.optim.train(model, params, "mse", (X, Y), jl.optim.SGD(0.1), steps=10, batch_size=4, seed=0,
                       callback=lambda s, lv, el: s < 4)
    assert r.steps == 4 and r.stopped and r.batches.shape == (4, 4)
    full = jl.optim.train(model, params, "mse", (X, Y), jl.optim.SGD(0.1), steps=4, batch_size=4, seed=0)
    np.testing.assert_array_equal(flat(r.params), flat(full.params))

    def boom(s, lv, el):
        raise RuntimeError("from the callback")

    with pytest.raises(RuntimeError, match="from the callback"):
        jl.optim.train(model, params, "mse", (X, Y), jl.optim.SGD(0.1), steps=3, batch_size=4, callback=boom)


@pytest.mark.skipif(threading.current_thread() is not threading.main_thread(), reason="signals need the main thread")
def test_ctrl_c_stops_cleanly(regression):
    model, params, X, Y = regression
    timer = threading.Timer(0.3, lambda: os.kill(os.getpid(), signal.SIGINT))
    timer.start()
    try:
        with pytest.warns(RuntimeWarning, match="interrupted"):
            r = jl.optim.train(model, params, "mse", (X, Y), jl.optim.SGD(0.01), steps=100_000, batch_size=4,
                               order="backward")
    finally:
        timer.cancel()
    assert r.interrupted and r.stopped and 0 < r.steps < 100_000
    assert r.batches.shape == (r.steps, 4) and np.all(np.isfinite(flat(r.params)))


# ---- checkpoints ----------------------------------------------------------------------------------
@pytest.mark.parametrize("opt,order,window", [
    (jl.optim.Adam(1e-2), "forward", None),
    (jl.optim.RK("rk23", 0.1, tol=1e-4, momentum=0.5), "forward", None),
    (jl.optim.Momentum(0.1, 0.9), "backward", None),
    (jl.optim.Adam(1e-2), "backward", 4),
])
def test_checkpoint_resume_is_exact(tmp_path, regression, opt, order, window):
    model, params, X, Y = regression
    kw = dict(steps=12, batch_size=6, seed=4, order=order, window=window)
    full = jl.optim.train(model, params, "mse", (X, Y), opt, **kw)
    path = str(tmp_path / "run.npz")
    part = jl.optim.train(model, params, "mse", (X, Y), opt, checkpoint=path, checkpoint_every=5,
                          callback=lambda s, lv, el: s < 7, **kw)  # "killed" after 7: checkpoint holds step 5
    assert part.steps == 7 and jl.optim.load_checkpoint(path)["step"] == 5
    res = jl.optim.train(model, params, "mse", (X, Y), opt, resume=path, **kw)
    np.testing.assert_array_equal(flat(res.params), flat(full.params))
    np.testing.assert_array_equal(res.losses, full.losses)
    np.testing.assert_array_equal(res.batches, full.batches)
    for k, v in full.state.items():
        if k != "stages":
            np.testing.assert_array_equal(flat(res.state[k]) if isinstance(v, (dict, list)) else res.state[k],
                                          flat(v) if isinstance(v, (dict, list)) else v)
    # save_checkpoint on a finished run, then resume to more steps == one longer run
    jl.optim.save_checkpoint(path, part)
    longer = jl.optim.train(model, params, "mse", (X, Y), opt, resume=path, **kw)
    np.testing.assert_array_equal(flat(longer.params), flat(full.params))
    with pytest.raises(ValueError, match="seed"):
        jl.optim.train(model, params, "mse", (X, Y), opt, resume=path, **{**kw, "seed": 5})


# ---- float32 ---------------------------------------------------------------------------------------
def test_float32_params_train_and_stay_float32(regression):
    model, params, X, Y = regression
    p32 = jl.tree_map(lambda a: a.astype(np.float32), params)
    r = jl.optim.train(model, p32, "mse", (X, Y), jl.optim.RK("rk4", 0.1, preconditioner="adam"), steps=5, batch_size=8)
    assert all(a.dtype == np.float32 for a in jl.tree_flatten(r.params)[0])
    r64 = jl.optim.train(model, params, "mse", (X, Y), jl.optim.RK("rk4", 0.1, preconditioner="adam"), steps=5, batch_size=8)
    assert_rel(flat(r.params), flat(r64.params), 1e-4)


# ---- bad input ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("make,match", [
    (lambda: jl.optim.SGD(-0.1), "lr must be a positive"),
    (lambda: jl.optim.SGD(0.0), "lr must be a positive"),
    (lambda: jl.optim.Momentum(0.1, beta=1.0), "beta must be in"),
    (lambda: jl.optim.Adam(lr=float("nan")), "lr must be a positive"),
    (lambda: jl.optim.Adam(b2=1.5), "b2 must be in"),
    (lambda: jl.optim.RK("rk5", 0.1), "unknown method"),
    (lambda: jl.optim.RK("rk4", -1.0), "lr must be a positive"),
    (lambda: jl.optim.RK("rk4", 0.1, preconditioner="rms"), "preconditioner"),
    (lambda: jl.optim.RK("rk23", 0.1, tol=0), "tol must be positive"),
    (lambda: jl.optim.Polyak(scale=-1), "scale must be"),
])
def test_bad_hyperparameters(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_bad_train_input(regression):
    model, params, X, Y = regression
    opt = jl.optim.SGD(0.1)
    t = lambda **kw: jl.optim.train(**{**dict(model=model, params=params, loss="mse", data=(X, Y), optimizer=opt,  # noqa: E731
                                              steps=3, batch_size=4), **kw})
    with pytest.raises(ValueError, match="steps must be a positive int"):
        t(steps=0)
    with pytest.raises(ValueError, match="batch_size 100 is larger than the data set"):
        t(batch_size=100)
    with pytest.raises(ValueError, match="X has 48 samples .* but Y has 47"):
        t(data=(X, Y[:47]))
    with pytest.raises(ValueError, match="batch_size must be a positive int"):
        t(batch_size=0)
    with pytest.raises(ValueError, match="loss must be"):
        t(loss="hinge")
    with pytest.raises(ValueError, match="order must be"):
        t(order="sideways")
    with pytest.raises(ValueError, match="window"):
        t(window=2)
    with pytest.raises(ValueError, match="params do not fit"):
        t(params=nn.Sequential(nn.Linear(4, 9), nn.Tanh(), nn.Residual(nn.MLP(9, 8, 9), 0.5), nn.Linear(9, 3)).init(0))
    with pytest.raises(ValueError, match="input has last dim|must have last dim|expected x"):
        t(data=(X[:, :3], Y))  # the model's first layer wants 4 features
    with pytest.raises(TypeError, match="optimizer must be"):
        t(optimizer="sgd")
    with pytest.raises(ValueError):
        jl.optim.batches(10, 11, 1, 0)


# ---- data and CLI ----------------------------------------------------------------------------------
def test_data_sets_are_seeded_and_shaped():
    for fn, kw in [(jl.data.teacher_student, dict(n=50, d_in=3)), (jl.data.spirals, dict(n=60)),
                   (jl.data.two_moons, dict(n=40)), (jl.data.icl_regression, dict(n=20, n_context=5, d=3))]:
        X1, Y1 = fn(seed=1, **kw)
        X2, Y2 = fn(seed=1, **kw)
        X3, _ = fn(seed=2, **kw)
        np.testing.assert_array_equal(X1, X2)
        np.testing.assert_array_equal(Y1, Y2)
        assert not np.array_equal(X1, X3) and X1.dtype == np.float64 and len(X1) == len(Y1)
    X, y = jl.data.spirals(60, classes=3)
    assert X.shape == (60, 2) and y.dtype == np.int64 and set(y) == {0, 1, 2}
    X, Y = jl.data.icl_regression(20, n_context=5, d=3)
    assert X.shape == (20, 6, 4) and Y.shape == (20, 1) and np.all(X[:, -1, -1] == 0)
    # each sequence is linear: its context pins w down, and w predicts the query's target
    w = np.linalg.lstsq(X[0, :-1, :3], X[0, :-1, 3], rcond=None)[0]
    assert abs(X[0, -1, :3] @ w - Y[0, 0]) < 1e-12
    with pytest.raises(ValueError, match="n must be a positive int"):
        jl.data.spirals(0)


def test_digits_needs_sklearn_or_loads():
    try:
        import sklearn  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match="pip install scikit-learn"):
            jl.data.digits()
    else:
        X, y = jl.data.digits()
        assert X.shape == (1797, 64) and y.max() == 9 and X.max() <= 1.0


def test_cli_train_compare(tmp_path, capsys):
    from jaclab import cli

    rc = cli.main(["train", "--steps", "30", "--compare", "sgd,rk4,backward-sgd", "--batch-size", "8",
                   "--out", str(tmp_path)])
    assert rc == 0
    out = capsys.readouterr().out
    assert "| sgd | SGD(lr=0.1) | forward | 30 | 30 |" in out
    assert "| rk4 | RK(rk4, lr=0.1) | forward | 30 | 120 |" in out
    assert "| backward-sgd | SGD(lr=0.1) | backward | 30 | 465 |" in out
    with np.load(tmp_path / "losses.npz") as z:
        assert sorted(z.files) == ["backward-sgd", "rk4", "sgd"] and len(z["sgd"]) == 30
    assert cli.main(["train", "--model", "transformer", "--data", "spirals", "--steps", "2"]) == 2


@pytest.mark.parametrize("method", ["rk23", "rk45"])
def test_adaptive_rk_at_exact_stationary_point_keeps_h(method):
    """err == 0 (data fitted exactly) must not grow h without bound (it used to reach inf/NaN)."""
    X = np.random.default_rng(0).standard_normal((16, 2))
    W = np.array([[1.0], [2.0]])
    params = {"W": W, "b": np.zeros(1)}
    r = jl.optim.train(jl.nn.Linear(2, 1), params, "mse", (X, X @ W), jl.optim.RK(method, 0.1), steps=600,
                       batch_size=4)
    np.testing.assert_array_equal(r.params["W"], W)
    assert np.all(np.isfinite(r.losses)) and max(r.losses) == 0.0
