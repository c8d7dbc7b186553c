"""jaclab.analysis: the papers' quantities (shared/papers.md sections 3-12), each checked
against an independent reference: full ``jl.jacobian`` matrices, dense Hessians from
``jl.jacobian(jl.grad(.))`` + ``numpy.linalg``, central finite differences, explicit path
enumeration, ``numpy.roots``, stacked least squares. Float64, random inputs, several seeds.
Self-contained (no conftest).
"""
from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

import jaclab as jl
from jaclab import analysis, nn

SEEDS = [0, 1, 2]
EXACT = 1e-10


def npf(t) -> np.ndarray:
    return np.array(np.asarray(t), dtype=np.float64)


def assert_close(got, want, rtol=EXACT, what=""):
    got, want = npf(got), npf(want)
    assert got.shape == want.shape, f"{what}: shape {got.shape} != {want.shape}"
    scale = max(1.0, float(np.max(np.abs(want)))) if want.size else 1.0
    err = float(np.max(np.abs(got - want))) if want.size else 0.0
    assert err <= rtol * scale, f"{what}: max err {err:.3e} > {rtol:.1e} * {scale:.3e}"


def flat(tree) -> np.ndarray:
    return np.concatenate([npf(a).ravel() for a in jl.tree_flatten(tree)[0]])


def unflat_like(tree, v):
    leaves, td = jl.tree_flatten(tree)
    out, i = [], 0
    for a in leaves:
        n = int(np.size(a))
        out.append(np.array(v[i:i + n]).reshape(np.shape(a)))
        i += n
    return jl.tree_unflatten(td, out)


def perturb(rng, params, s=0.3):
    return jl.tree_map(lambda p: npf(p) + s * rng.standard_normal(np.shape(p)), params)


def per_sample_blocks(model, params, x):
    """(B, n_out, n_in) diagonal blocks of the full jl.jacobian of the batch function."""
    J = jl.jacobian(lambda h: model.apply(params, h))(x)
    B = x.shape[0]
    n_in = int(np.prod(x.shape[1:]))
    n_out = J.size // (B * B * n_in)
    J = J.reshape(B, n_out, B, n_in)
    return np.stack([J[b, :, b, :] for b in range(B)])


def dense_hessian(loss, params) -> np.ndarray:
    """Dense Hessian from jl.jacobian of jl.grad, assembled from the pytree blocks."""
    H_tree = jl.jacobian(jl.grad(loss))(params)
    sizes = [int(np.size(a)) for a in jl.tree_flatten(params)[0]]
    blocks = jl.tree_flatten(H_tree)[0]
    L = len(sizes)
    assert len(blocks) == L * L
    rows = [np.concatenate([npf(blocks[i * L + j]).reshape(sizes[i], sizes[j]) for j in range(L)], axis=1)
            for i in range(L)]
    return np.concatenate(rows, axis=0)


def fd_grad(f, params, eps=1e-6):
    """Central finite differences of scalar f(params) over every parameter entry."""
    v0 = flat(params)
    g = np.empty_like(v0)
    for i in range(v0.size):
        e = np.zeros_like(v0)
        e[i] = eps
        g[i] = (f(unflat_like(params, v0 + e)) - f(unflat_like(params, v0 - e))) / (2 * eps)
    return g


def small_mlp(seed, d_in=3, d_h=4, d_out=2, act="tanh"):
    model = nn.Sequential(nn.Linear(d_in, d_h), nn.Tanh() if act == "tanh" else nn.GELU(), nn.Linear(d_h, d_out))
    rng = np.random.default_rng(seed)
    return model, perturb(rng, model.init(seed)), rng


# ---- 1. geometric complexity ------------------------------------------------------------------


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("shape", [(3, 5, 2), (2, 4, 5)], ids=["wide_in", "wide_out"])
def test_gc_equals_mean_jacobian_norm(seed, shape):
    model, params, rng = small_mlp(seed, *shape)
    x = rng.standard_normal((4, shape[0]))
    want = float(np.mean(np.sum(per_sample_blocks(model, params, x) ** 2, axis=(1, 2))))
    for mode in ("auto", "fwd", "rev"):
        got = analysis.geometric_complexity(model, params, x, mode=mode)
        assert abs(got - want) <= 1e-12 * max(1, want), (mode, got, want)


@pytest.mark.parametrize("seed", SEEDS)
def test_gc_sequence_model(seed):
    rng = np.random.default_rng(seed)
    block = nn.TransformerBlock(4, 2, 6)
    params = perturb(rng, block.init(seed))
    x = rng.standard_normal((2, 3, 4))
    want = float(np.mean(np.sum(per_sample_blocks(block, params, x) ** 2, axis=(1, 2))))
    assert abs(analysis.geometric_complexity(block, params, x) - want) <= 1e-12 * max(1, want)


def test_gc_linear_is_frobenius_and_scales():
    rng = np.random.default_rng(0)
    lin = nn.Linear(3, 4)
    p = perturb(rng, lin.init(0))
    x = rng.standard_normal((5, 3))
    assert abs(analysis.geometric_complexity(lin, p, x) - np.sum(p["W"] ** 2)) < 1e-12
    # GC(alpha f) = alpha^2 GC(f), with a plain function f(params, x)
    f = lambda q, h: lin.apply(q, h) * 3.0
    assert abs(analysis.geometric_complexity(f, p, x) - 9 * np.sum(p["W"] ** 2)) < 1e-11


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("mode", ["rev", "fwd"])
def test_gc_grad_vs_finite_differences(seed, mode):
    model, params, rng = small_mlp(seed, 3, 4, 2)
    x = rng.standard_normal((3, 3))
    value, g = analysis.geometric_complexity_grad(model, params, x, mode=mode)
    assert abs(value - analysis.geometric_complexity(model, params, x)) < 1e-12 * max(1, value)
    assert jl.tree_flatten(g)[1] == jl.tree_flatten(params)[1]
    fd = fd_grad(lambda p: analysis.geometric_complexity(model, p, x), params)
    assert_close(flat(g), fd, 1e-7, what=f"GC grad ({mode}) vs FD")


# ---- 2. Jacobian spectra ----------------------------------------------------------------------


@pytest.mark.parametrize("seed", SEEDS)
def test_jacobian_spectrum_vs_svd(seed):
    model, params, rng = small_mlp(seed, 3, 5, 4)
    x = rng.standard_normal((3, 3))
    s = analysis.jacobian_spectrum(model, params, x)
    want = np.linalg.svd(per_sample_blocks(model, params, x), compute_uv=False)
    assert s.shape == (3, 3)
    assert_close(s, want, 1e-12, what="input-output spectrum")
    hs = [npf(h) for h in model.apply_layers(params, x)]
    for l in range(3):
        Jl = jl.jacobian(lambda h: model.layers[l].apply(params[l], h))(hs[l])
        B, n_out, _, n_in = Jl.shape
        want_l = np.linalg.svd(np.stack([Jl[b, :, b, :] for b in range(B)]), compute_uv=False)
        assert_close(analysis.jacobian_spectrum(model, params, x, layer=l), want_l, 1e-12, what=f"layer {l}")
    assert_close(analysis.jacobian_spectrum(model, params, x, layer=-1),
                 analysis.jacobian_spectrum(model, params, x, layer=2), 0)
    assert_close(analysis.jacobian_spectrum(model, params, x, layer=(0, 3)), s, 1e-12, what="layer (0, L)")


# ---- 3. Hessian eigenvalues, trace, sharpness -------------------------------------------------


def mlp_loss(seed, n=6):
    model, params, rng = small_mlp(seed, 3, 4, 2)
    x, y = rng.standard_normal((n, 3)), rng.standard_normal((n, 2))
    return (lambda p: jl.mse(model.apply(p, x), y)), params


@pytest.mark.parametrize("seed", SEEDS)
def test_hessian_eigs_match_eigvalsh(seed):
    loss, params = mlp_loss(seed)
    H = dense_hessian(loss, params)
    assert np.allclose(H, H.T, atol=1e-12)
    ev = np.linalg.eigvalsh(H)
    n = ev.size
    tol = 1e-8 * np.max(np.abs(ev))
    got = analysis.hessian_eigs(loss, params, k=5, iters=n, seed=seed)
    assert np.max(np.abs(got - ev[::-1][:5])) < tol, (got, ev[::-1][:5])
    got = analysis.hessian_eigs(loss, params, k=3, iters=n, which="SA")
    assert np.max(np.abs(got - ev[:3])) < tol
    lm = ev[np.argsort(-np.abs(ev))][:4]
    assert np.max(np.abs(analysis.hessian_eigs(loss, params, k=4, iters=n, which="LM") - lm)) < tol
    assert np.max(np.abs(analysis.hessian_eigs(loss, params, k=5, method="dense") - ev[::-1][:5])) < tol
    # all n eigenvalues at once, and Ritz vectors are eigenvectors
    vals, vecs = analysis.hessian_eigs(loss, params, k=n, iters=n, return_vectors=True)
    assert np.max(np.abs(np.sort(vals) - ev)) < tol
    for lam, v in zip(vals[:3], vecs[:3]):
        vf = flat(v)
        assert abs(np.linalg.norm(vf) - 1) < 1e-10
        assert np.linalg.norm(H @ vf - lam * vf) < 1e-7 * np.max(np.abs(ev))


def test_hessian_eigs_degenerate_spectrum():
    # Rank-deficient Hessian (linear model, 2 samples): the Krylov space of one vector is
    # invariant early; Lanczos must restart to recover the full (repeated-zero) spectrum.
    rng = np.random.default_rng(3)
    lin = nn.Linear(4, 3)
    p = perturb(rng, lin.init(3))
    x, y = rng.standard_normal((2, 4)), rng.standard_normal((2, 3))
    loss = lambda q: jl.mse(lin.apply(q, x), y)
    ev = np.linalg.eigvalsh(dense_hessian(loss, p))
    got = analysis.hessian_eigs(loss, p, k=ev.size, iters=ev.size)
    assert np.max(np.abs(np.sort(got) - ev)) < 1e-10 * np.max(np.abs(ev))


def test_hessian_eigs_default_iters_top_converges():
    # A model larger than the default iteration count: the extreme eigenvalue still converges.
    model, params, rng = small_mlp(4, 5, 8, 3)
    x, y = rng.standard_normal((10, 5)), rng.standard_normal((10, 3))
    loss = lambda p: jl.mse(model.apply(p, x), y)
    ev = np.linalg.eigvalsh(dense_hessian(loss, params))
    assert ev.size > 31
    top = analysis.hessian_eigs(loss, params, k=1)[0]
    assert abs(top - ev[-1]) < 1e-8 * abs(ev[-1])
    lam, ratio = analysis.sharpness(loss, params, lr=0.3)
    assert abs(lam - ev[-1]) < 1e-8 * abs(ev[-1]) and abs(ratio - ev[-1] * 0.3 / 2) < 1e-8 * ratio


@pytest.mark.parametrize("seed", SEEDS)
def test_hessian_trace(seed):
    loss, params = mlp_loss(seed)
    H = dense_hessian(loss, params)
    tr, n = float(np.trace(H)), H.shape[0]
    # deterministic basis: exact
    est, se = analysis.hessian_trace(loss, params, n_probes=n + 5, probes="basis", return_std=True)
    assert abs(est - tr) < 1e-10 * max(1, abs(tr)) and se == 0.0
    # Rademacher Hutchinson: unbiased; per-probe variance 2(||H||_F^2 - sum diag^2)
    P = 600
    est = analysis.hessian_trace(loss, params, n_probes=P, seed=seed)
    sigma = math.sqrt(2 * (np.sum(H ** 2) - np.sum(np.diag(H) ** 2)) / P)
    assert abs(est - tr) < 5 * sigma, (est, tr, sigma)
    # random coordinate subset: unbiased with finite-population variance
    m = n // 2
    est = analysis.hessian_trace(loss, params, n_probes=m, probes="basis", seed=seed)
    d = np.diag(H)
    sigma_b = n * np.std(d, ddof=1) / math.sqrt(m) * math.sqrt(1 - m / n)
    assert abs(est - tr) < 5 * sigma_b + 1e-12


def test_hutchinson_mean_over_seeds():
    # Unbiasedness with a tighter check: mean over many independent small estimates.
    loss, params = mlp_loss(1)
    H = dense_hessian(loss, params)
    ests = [analysis.hessian_trace(loss, params, n_probes=10, seed=s, probes="gaussian") for s in range(60)]
    sigma = math.sqrt(2 * np.sum(H ** 2) / (10 * 60))
    assert abs(np.mean(ests) - np.trace(H)) < 5 * sigma


# ---- 4. modified loss and Lie bracket ---------------------------------------------------------


@pytest.mark.parametrize("seed", SEEDS)
def test_modified_loss(seed):
    loss, params = mlp_loss(seed)
    h = 0.3
    value, g = analysis.modified_loss(loss, params, h)
    g0 = flat(jl.grad(loss)(params))
    assert abs(value - (float(npf(loss(params))) + h / 4 * g0 @ g0)) < 1e-12
    # reference 1: central finite differences of the modified loss's value
    fd = fd_grad(lambda p: analysis.modified_loss(loss, p, h)[0], params)
    assert_close(flat(g), fd, 1e-7, what="modified-loss gradient vs FD")
    # reference 2: g + (h/2) H g from the dense Hessian
    H = dense_hessian(loss, params)
    assert_close(flat(g), g0 + h / 2 * H @ g0, 1e-11, what="modified-loss gradient vs g + h/2 Hg")


def two_task_losses(seed):
    model, params, rng = small_mlp(seed, 3, 4, 2)
    xa, ya = rng.standard_normal((5, 3)), rng.standard_normal((5, 2))
    xb, yb = rng.standard_normal((5, 3)), rng.standard_normal((5, 2))
    la = lambda p: jl.mse(model.apply(p, xa), ya)
    lb = lambda p: jl.mse(model.apply(p, xb), yb)
    return la, lb, params


def flow(loss, params, t, steps=20):
    """RK4 integration of theta' = -grad L for time t (NumPy side)."""
    g = lambda v: -flat(jl.grad(loss)(unflat_like(params, v)))
    v, dt = flat(params), t / steps
    for _ in range(steps):
        k1 = g(v)
        k2 = g(v + dt / 2 * k1)
        k3 = g(v + dt / 2 * k2)
        k4 = g(v + dt * k3)
        v = v + dt / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
    return v


@pytest.mark.parametrize("seed", SEEDS)
def test_lie_bracket_is_flow_commutator(seed):
    la, lb, params = two_task_losses(seed)
    br = flat(analysis.lie_bracket(la, lb, params))

    def commutator(t):  # (phi^B_t o phi^A_t - phi^A_t o phi^B_t)(theta) / t^2 = [g_A, g_B] + O(t)
        ab = flow(lb, unflat_like(params, flow(la, params, t)), t)
        ba = flow(la, unflat_like(params, flow(lb, params, t)), t)
        return (ab - ba) / t ** 2

    def richardson(t):
        return 2 * commutator(t / 2) - commutator(t)

    e1 = np.linalg.norm(richardson(0.02) - br) / np.linalg.norm(br)
    e2 = np.linalg.norm(richardson(0.01) - br) / np.linalg.norm(br)
    assert e2 < 1e-3, (e1, e2)
    assert e2 < e1 / 2.5, (e1, e2)  # O(t^2) convergence
    # the same with GD maps T(theta) = theta - h g(theta)
    def gd(loss, v, h):
        return v - h * flat(jl.grad(loss)(unflat_like(params, v)))

    def gd_comm(h):
        v = flat(params)
        return (gd(lb, gd(la, v, h), h) - gd(la, gd(lb, v, h), h)) / h ** 2

    e_gd = np.linalg.norm(2 * gd_comm(5e-4) - gd_comm(1e-3) - br) / np.linalg.norm(br)
    assert e_gd < 1e-4, e_gd


def test_lie_bracket_algebra_and_quadratics():
    rng = np.random.default_rng(0)
    d = 5
    A = rng.standard_normal((d, d)); A = A + A.T
    Bm = rng.standard_normal((d, d)); Bm = Bm + Bm.T
    th = rng.standard_normal((1, d))
    la = lambda p: 0.5 * jl.sum(jl.matmul(p, A) * p)
    lb = lambda p: 0.5 * jl.sum(jl.matmul(p, Bm) * p)
    br = npf(analysis.lie_bracket(la, lb, th))
    assert_close(br.ravel(), (Bm @ A - A @ Bm) @ th.ravel(), 1e-12, what="quadratic bracket (BA - AB) theta")
    la2, lb2, params = two_task_losses(1)
    ab = flat(analysis.lie_bracket(la2, lb2, params))
    ba = flat(analysis.lie_bracket(lb2, la2, params))
    assert_close(ab, -ba, 1e-13, what="antisymmetry")
    assert np.max(np.abs(flat(analysis.lie_bracket(la2, la2, params)))) < 1e-14


# ---- 5. softmax radius ------------------------------------------------------------------------


def nearest_zero_binary(z, a):
    """Nearest complex zero of F(t) = e^{z1 + a1 t} + e^{z2 + a2 t} via numpy.roots:
    with u = e^{(a1 - a2) t}, F = e^{z2 + a2 t} (e^{z1} u + e^{z2})."""
    (u0,) = np.roots([np.exp(z[0]), np.exp(z[1])]).astype(complex)
    s = a[0] - a[1]
    return min(abs((np.log(u0) + 2j * np.pi * m) / s) for m in range(-3, 4))


@pytest.mark.parametrize("seed", SEEDS)
def test_softmax_radius_binary_and_jvp(seed):
    model, params, rng = small_mlp(seed, 3, 5, 2)
    x = rng.standard_normal((6, 3))
    step = jl.tree_map(lambda p: 0.1 * rng.standard_normal(np.shape(p)), params)
    out = analysis.softmax_radius(model, params, x, step, labels=rng.integers(0, 2, 6))
    tau = np.linalg.norm(flat(step))
    v = unflat_like(params, flat(step) / tau)
    # a = J_z v against central finite differences of the logits
    eps = 1e-6
    zp = npf(model.apply(jl.tree_map(lambda p, q: p + eps * q, params, v), x))
    zm = npf(model.apply(jl.tree_map(lambda p, q: p - eps * q, params, v), x))
    assert_close(out["a"], (zp - zm) / (2 * eps), 1e-8, what="logit JVP vs FD")
    assert_close(out["logits"], npf(model.apply(params, x)), 1e-14)
    for b in range(6):
        ref = nearest_zero_binary(out["logits"][b], out["a"][b])
        assert abs(out["rho_binary"][b] - ref) < 1e-12 * ref
        assert out["rho_binary"][b] >= out["rho"][b]
    assert_close(out["rho_top2"], out["rho_binary"], 1e-14)
    spread = np.abs(out["a"][:, 0] - out["a"][:, 1])
    assert_close(out["rho"], np.pi / spread, 1e-14)
    assert out["rho_batch"] == pytest.approx(np.min(out["rho"]), rel=1e-14)
    assert out["step"] == pytest.approx(tau, rel=1e-14) and out["r"] == pytest.approx(tau / out["rho_batch"], rel=1e-14)
    # sign and scale invariance of the radius
    neg = analysis.softmax_radius(model, params, x, jl.tree_map(lambda p: -3 * p, step))
    assert neg["rho_batch"] == pytest.approx(out["rho_batch"], rel=1e-12)
    assert neg["r"] == pytest.approx(3 * out["r"], rel=1e-12)


@pytest.mark.parametrize("seed", SEEDS)
def test_softmax_radius_multiclass_bound(seed):
    # Linear logits, step on the bias only with integer entries n_k: a_k = n_k / ||n|| (the same
    # for every sample), so F(t) = sum_k e^{z_k} u^{n_k}, u = e^{t/||n||}, is a polynomial in u.
    rng = np.random.default_rng(seed)
    K = 4
    lin = nn.Linear(3, K)
    p = perturb(rng, lin.init(seed), 1.0)
    x = rng.standard_normal((5, 3))
    nvec = rng.integers(-3, 4, K)
    nvec[0], nvec[1] = -3, 3  # nonzero spread
    step = {"W": np.zeros((3, K)), "b": nvec.astype(float)}
    out = analysis.softmax_radius(lin, p, x, step)
    s = 1 / np.linalg.norm(nvec)
    assert_close(out["a"], np.broadcast_to(nvec * s, (5, K)), 1e-14)
    for b in range(5):
        coef = np.zeros(nvec.max() - nvec.min() + 1)
        for k in range(K):
            coef[nvec[k] - nvec.min()] += np.exp(out["logits"][b, k])
        roots = np.roots(coef[::-1]).astype(complex)
        nearest = min(abs((np.log(u) + 2j * np.pi * m) / s) for u in roots for m in range(-3, 4))
        assert nearest >= out["rho"][b] * (1 - 1e-9), (nearest, out["rho"][b])


@pytest.mark.parametrize("seed", SEEDS)
def test_clip_to_radius(seed):
    rng = np.random.default_rng(seed)
    p = {"a": rng.standard_normal((3, 2)), "b": [rng.standard_normal(4)]}
    norm = np.linalg.norm(flat(p))
    for rho in (0.1 * norm, norm, 3 * norm):
        c = analysis.clip_to_radius(p, rho)
        assert jl.tree_flatten(c)[1] == jl.tree_flatten(p)[1]
        assert np.linalg.norm(flat(c)) == pytest.approx(min(norm, rho), rel=1e-14)
        assert_close(flat(c) / np.linalg.norm(flat(c)), flat(p) / norm, 1e-14)
    arr = rng.standard_normal(5)
    assert np.linalg.norm(analysis.clip_to_radius(arr, 0.5)) == pytest.approx(0.5, rel=1e-14)


# ---- 6. Jacobian norm, centroid, alignment ----------------------------------------------------


@pytest.mark.parametrize("seed", SEEDS)
def test_jacobian_norm_exact_and_basis(seed):
    model, params, rng = small_mlp(seed, 4, 5, 3)
    x = rng.standard_normal((4, 4))
    want = np.linalg.norm(per_sample_blocks(model, params, x), axis=(1, 2))
    assert_close(analysis.jacobian_norm(model, params, x), want, 1e-12, what="exact")
    assert_close(analysis.jacobian_norm(model, params, x, n_projections=3, probes="basis"), want, 1e-12,
                 what="basis probes, P = k")
    reg = analysis.jacobian_norm_regularizer(model, x, n_projections=3, probes="basis")
    assert float(npf(reg(params))) == pytest.approx(np.mean(want), rel=1e-12)


@pytest.mark.parametrize("seed", SEEDS)
def test_jacobian_norm_projection_unbiased(seed):
    model, params, rng = small_mlp(seed, 4, 5, 3)
    x = rng.standard_normal((3, 4))
    J = per_sample_blocks(model, params, x)
    P, k = 1500, 3
    est = analysis.jacobian_norm(model, params, x, n_projections=P, seed=seed) ** 2
    for b in range(3):
        M = J[b] @ J[b].T
        trM = np.trace(M)
        var = 2 * k * (np.trace(M @ M) - trM ** 2 / k) / (k + 2)  # of k ||J^T v||^2, v uniform on the sphere
        assert abs(est[b] - trM) < 5 * math.sqrt(var / P) + 1e-12, (est[b], trM)


@pytest.mark.parametrize("seed", SEEDS)
def test_jacobian_norm_regularizer_grad(seed):
    model, params, rng = small_mlp(seed, 3, 4, 2)
    x = rng.standard_normal((3, 3))
    reg = analysis.jacobian_norm_regularizer(model, x, n_projections=2, seed=seed)
    assert float(npf(reg(params))) == pytest.approx(
        np.mean(analysis.jacobian_norm(model, params, x, n_projections=2, seed=seed)), rel=1e-13)
    g = flat(jl.grad(reg)(params))
    fd = fd_grad(lambda p: float(npf(reg(p))), params)
    assert_close(g, fd, 1e-7, what="regulariser gradient vs FD")
    g_exact = flat(jl.grad(analysis.jacobian_norm_regularizer(model, x, n_projections=None))(params))
    fd_exact = fd_grad(lambda p: float(np.mean(analysis.jacobian_norm(model, p, x))), params)
    assert_close(g_exact, fd_exact, 1e-7, what="exact-norm regulariser gradient vs FD")


@pytest.mark.parametrize("seed", SEEDS)
def test_centroid_and_alignment(seed):
    model, params, rng = small_mlp(seed, 4, 5, 3)
    x = rng.standard_normal((5, 4))
    mu = analysis.centroid(model, params, x)
    want = per_sample_blocks(model, params, x).sum(axis=1)
    assert_close(mu, want, 1e-12, what="centroid = row sum of J")
    cos = np.sum(want * x, 1) / (np.linalg.norm(want, axis=1) * np.linalg.norm(x, axis=1))
    assert_close(analysis.centroid_alignment(model, params, x), cos, 1e-12)
    # sequence model: centroid has the input's shape
    block = nn.TransformerBlock(4, 2, 6)
    bp = perturb(rng, block.init(seed))
    xs = rng.standard_normal((2, 3, 4))
    assert_close(analysis.centroid(block, bp, xs), per_sample_blocks(block, bp, xs).sum(axis=1).reshape(xs.shape),
                 1e-12, what="sequence centroid")


@pytest.mark.parametrize("seed", SEEDS)
def test_centroid_euler_identity_bias_free_relu(seed):
    rng = np.random.default_rng(seed)
    W1, W2 = rng.standard_normal((4, 6)), rng.standard_normal((6, 1))
    f = lambda p, h: jl.matmul(jl.relu(jl.matmul(h, p["W1"])), p["W2"])
    p = {"W1": W1, "W2": W2}
    x = rng.standard_normal((5, 4))
    mu = analysis.centroid(f, p, x)
    fx = npf(f(p, x))[:, 0]
    assert_close(np.sum(mu * x, 1), fx, 1e-12, what="<mu(x), x> = f(x)")
    lin = {"W": rng.standard_normal((4, 3)), "b": np.zeros(3)}
    assert_close(analysis.centroid(nn.Linear(4, 3), lin, x), np.broadcast_to(lin["W"].sum(1), (5, 4)), 1e-13)


# ---- 7. residual expansion --------------------------------------------------------------------


def linear_tower(seed, n, d=3, lam=0.7):
    rng = np.random.default_rng(seed)
    model = nn.Sequential(*[nn.Residual(nn.Linear(d, d), lam) for _ in range(n)])
    params = [{"W": rng.standard_normal((d, d)), "b": np.zeros(d)} for _ in range(n)]
    return model, params, rng.standard_normal((2, d))


@pytest.mark.parametrize("seed", SEEDS)
def test_residual_expansion_linear_sums_to_output(seed):
    n, lam = 5, 0.7
    model, params, x = linear_tower(seed, n, lam=lam)
    out = analysis.residual_expansion(model, params, x)
    y = npf(model.apply(params, x))
    assert out["terms"].shape == (n + 1,) + x.shape
    assert_close(out["terms"].sum(0), y, 1e-12, what="sum of orders = output")
    assert np.max(np.abs(out["remainder"])) < 1e-12 * np.max(np.abs(y))
    assert list(out["n_paths"]) == [math.comb(n, m) for m in range(n + 1)]
    # independent reference: explicit enumeration of the 2^n paths (row convention h @ W)
    ref = np.zeros((n + 1,) + x.shape)
    for S in itertools.chain.from_iterable(itertools.combinations(range(n), m) for m in range(n + 1)):
        h = x.copy()
        for k in S:
            h = lam * h @ params[k]["W"]
        ref[len(S)] += h
    assert_close(out["terms"], ref, 1e-12, what="per-order terms vs path enumeration")
    assert_close(out["norms"], np.linalg.norm(ref, axis=2), 1e-12)
    moeb = analysis.residual_expansion(model, params, x, method="moebius")
    assert_close(moeb["terms"], ref, 1e-11, what="Moebius = paths for linear blocks")
    # truncation: the remainder is the sum of the omitted orders
    tr = analysis.residual_expansion(model, params, x, max_order=2)
    assert_close(tr["remainder"], ref[3:].sum(0), 1e-12)
    assert_close(analysis.residual_expansion(model, params, x, max_order=2, method="moebius")["terms"], ref[:3], 1e-11)


@pytest.mark.parametrize("seed", SEEDS)
def test_residual_expansion_nonlinear(seed):
    rng = np.random.default_rng(seed)
    n, d = 4, 3

    def tower(lam):
        return nn.Sequential(*[nn.Residual(nn.MLP(d, 5, activation="tanh"), lam) for _ in range(n)])

    params = perturb(rng, tower(1.0).init(seed), 0.5)
    x = rng.standard_normal((2, d))
    model = tower(0.8)
    y = npf(model.apply(params, x))
    moeb = analysis.residual_expansion(model, params, x, method="moebius")
    assert_close(moeb["terms"].sum(0), y, 1e-12, what="Moebius orders sum to the output")
    paths = analysis.residual_expansion(model, params, x)
    fs = [npf(model.layers[k].block.apply(params[k], x)) for k in range(n)]
    assert_close(paths["terms"][1], 0.8 * sum(fs), 1e-13, what="order 1 = lam sum f_k(x)")
    assert np.max(np.abs(paths["remainder"])) > 1e-6  # higher path terms are not the series terms
    # Moebius orders vs the power series: order1 = lam sum f_k + O(lam^2),
    # order2 = lam^2 sum_{i<j} Df_j(x)[f_i(x)] + O(lam^3)
    second = sum(npf(jl.jvp(lambda h, j=j: model.layers[j].block.apply(params[j], h), (x,), (fs[i],))[1])
                 for i in range(n) for j in range(i + 1, n))
    errs = []
    for lam in (1e-2, 5e-3):
        t = analysis.residual_expansion(tower(lam), params, x, max_order=2, method="moebius")["terms"]
        errs.append((np.max(np.abs(t[1] - lam * sum(fs))) / lam ** 2, np.max(np.abs(t[2] - lam ** 2 * second)) / lam ** 3))
    for k in range(2):  # the scaled errors are O(1) and converge
        assert abs(errs[0][k] - errs[1][k]) < 0.05 * max(errs[0][k], 1e-3), errs


def test_residual_expansion_errors():
    with pytest.raises(TypeError):
        analysis.residual_expansion(nn.Sequential(nn.Linear(2, 2)), [nn.Linear(2, 2).init(0)], np.ones((1, 2)))
    model, params, x = linear_tower(0, 2)
    with pytest.raises(ValueError):
        analysis.residual_expansion(model, params, x, max_order=3)
    with pytest.raises(ValueError):
        analysis.residual_expansion(model, params, x, method="bogus")


# ---- 8. ICL weight update, LQR ----------------------------------------------------------------


ICL_BLOCKS = {
    "layer_causal": lambda: nn.TransformerBlock(6, 2, 10),
    "rms_full_scaled": lambda: nn.TransformerBlock(6, 3, 8, causal=False, norm="rms", scale=0.5),
    "nonorm_tanh": lambda: nn.TransformerBlock(6, 1, 7, norm=None, activation="tanh"),
}


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("name", list(ICL_BLOCKS))
def test_icl_weight_update_identity(seed, name):
    rng = np.random.default_rng(seed)
    block = ICL_BLOCKS[name]()
    params = perturb(rng, block.init(seed))
    B, n, d = 3, 5, 6
    C, x = rng.standard_normal((B, n, d)), rng.standard_normal((B, d))
    out = analysis.icl_weight_update(block, params, C, x)
    assert out["dW"].shape == (B, d, block.d_hidden)
    assert np.max(out["residual"]) < 1e-12, out["residual"]
    y_c = npf(block.apply(params, np.concatenate([C, x[:, None]], 1)))[:, -1]
    assert_close(out["y_context"], y_c, 0)
    W1 = params["mlp"]["W1"]
    for b in range(B):
        s = np.linalg.svd(out["dW"][b], compute_uv=False)
        assert s[1] < 1e-12 * s[0]
        assert_close(out["a_x"][b] @ out["dW"][b], out["dA"][b] @ W1, 1e-12)
    # the identity is not trivial: without the update, the context-free block differs
    y_x = npf(block.apply(params, x[:, None]))[:, 0]
    assert np.min(np.max(np.abs(y_c - y_x - out["skip"]), axis=1)) > 1e-6
    # single-sample inputs
    one = analysis.icl_weight_update(block, params, C[0], x[0])
    assert_close(one["dW"][0], out["dW"][0], 1e-14)
    # token-by-token dynamics telescope to the full update
    dyn = analysis.icl_dynamics(block, params, C, x)
    assert dyn["dW"].shape == (n + 1, B, d, block.d_hidden)
    assert np.all(dyn["dW"][0] == 0)
    assert_close(dyn["dW"][-1], out["dW"], 1e-13)
    assert_close(dyn["skip"][-1], out["skip"], 1e-13)
    steps = np.diff(dyn["dW"], axis=0)
    assert_close(steps.sum(0), out["dW"], 1e-12)
    assert_close(dyn["step_norms"], np.linalg.norm(steps.reshape(n, B, -1), axis=2), 1e-14)


def stacked_lqr(A, Bs, Q, R, S_T, x0):
    """Stacked least squares: x = G x0 + Hm u; minimise x^T Qbig x + u^T Rbig u."""
    T, d, _ = A.shape
    m = Bs.shape[2]
    G = np.zeros(((T + 1) * d, d))
    Hm = np.zeros(((T + 1) * d, T * m))
    G[:d] = np.eye(d)
    for t in range(T):
        G[(t + 1) * d:(t + 2) * d] = A[t] @ G[t * d:(t + 1) * d]
        Hm[(t + 1) * d:(t + 2) * d] = A[t] @ Hm[t * d:(t + 1) * d]
        Hm[(t + 1) * d:(t + 2) * d, t * m:(t + 1) * m] += Bs[t]
    Qbig = np.zeros(((T + 1) * d,) * 2)
    for t in range(T):
        Qbig[t * d:(t + 1) * d, t * d:(t + 1) * d] = Q[t]
    Qbig[T * d:, T * d:] = S_T
    Rbig = np.zeros((T * m, T * m))
    for t in range(T):
        Rbig[t * m:(t + 1) * m, t * m:(t + 1) * m] = R[t]
    u = np.linalg.solve(Hm.T @ Qbig @ Hm + Rbig, -Hm.T @ Qbig @ G @ x0)
    xs = G @ x0 + Hm @ u
    cost = xs @ Qbig @ xs + u @ Rbig @ u
    return u.reshape(T, m), xs.reshape(T + 1, d), cost


def spd(rng, d):
    M = rng.standard_normal((d, d))
    return M @ M.T + 0.5 * np.eye(d)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("with_B", [False, True])
def test_lqr_gains_vs_least_squares(seed, with_B):
    rng = np.random.default_rng(seed)
    T, d = 5, 4
    m = 2 if with_B else d
    A = rng.standard_normal((T, d, d)) * 0.7
    Bs = rng.standard_normal((T, d, m)) if with_B else np.broadcast_to(np.eye(d), (T, d, d))
    Q = np.stack([spd(rng, d) for _ in range(T)])
    R = np.stack([spd(rng, m) for _ in range(T)])
    S_T = spd(rng, d)
    K, S = analysis.lqr_gains(A, Q, R, S_T, B=Bs if with_B else None)
    assert K.shape == (T, m, d) and S.shape == (T + 1, d, d)
    for _ in range(2):
        x0 = rng.standard_normal(d)
        u, xs, cost = stacked_lqr(A, Bs, Q, R, S_T, x0)
        for t in range(T):
            assert_close(-K[t] @ xs[t], u[t], 1e-10, what=f"u_{t} = -K_{t} x_{t}")
        assert abs(x0 @ S[0] @ x0 - cost) < 1e-10 * cost
    if not with_B:  # the B = I specialisation equals the general routine with B = I
        K2, S2 = analysis.lqr_gains(A, Q, R, S_T, B=np.eye(d))
        assert_close(K2, K, 1e-13) and assert_close(S2, S, 1e-13)
    # scalar weights mean multiples of the identity
    Ks, _ = analysis.lqr_gains(A, 10.0, 10.0, 1.0)
    Ki, _ = analysis.lqr_gains(A, 10 * np.eye(d), 10 * np.eye(d), np.eye(d))
    assert_close(Ks, Ki, 1e-14)


@pytest.mark.parametrize("seed", SEEDS)
def test_position_layer_jacobians(seed):
    rng = np.random.default_rng(seed)
    model = nn.Sequential(nn.TransformerBlock(4, 2, 6), nn.Residual(nn.MLP(4, 5, activation="tanh"), 0.5),
                          nn.TransformerBlock(4, 1, 5, norm="rms"))
    params = perturb(rng, [layer.init(seed + i) for i, layer in enumerate(model.layers)])
    x = rng.standard_normal((2, 3, 4))
    hs = [npf(h) for h in model.apply_layers(params, x)]
    for pos in (-1, 1):
        J = analysis.position_layer_jacobians(model, params, x, position=pos, average=False)
        assert J.shape == (3, 2, 4, 4)
        for l in range(3):
            full = jl.jacobian(lambda h: model.layers[l].apply(params[l], h))(hs[l])  # (B,T,d,B,T,d)
            want = np.stack([full[b, pos, :, b, pos, :] for b in range(2)])
            assert_close(J[l], want, 1e-12, what=f"layer {l} position {pos}")
        assert_close(analysis.position_layer_jacobians(model, params, x, position=pos), J.mean(1), 1e-15)


@pytest.mark.parametrize("n,iters", [(400, 120), (300, 300), (60, 60)])
def test_lanczos_partial_reorthogonalisation_keeps_basis_orthogonal(n, iters):
    """Partial reorthogonalisation: the basis stays orthogonal to ~sqrt(eps) or better and the
    extreme Ritz values match eigvalsh, on a dense operator with clustered eigenvalues."""
    rng = np.random.default_rng(n)
    M = rng.standard_normal((n, n))
    H = (M + M.T) / 2 + np.diag(np.linspace(0, 30, n))
    T, Q = jl.analysis._lanczos(lambda v: H @ v, n, iters, np.random.default_rng(1))
    assert np.max(np.abs(Q @ Q.T - np.eye(iters))) < 1e-7
    ritz, ref = np.linalg.eigvalsh(T), np.linalg.eigvalsh(H)
    np.testing.assert_allclose(ritz[-5:], ref[-5:], rtol=0, atol=1e-9)
    np.testing.assert_allclose(ritz[0], ref[0], rtol=0, atol=1e-9)
