"""jaclab.nn blocks and the fused primitives behind them.

- forward of every block against an independent NumPy implementation of the documented
  conventions (``jaclab/nn.py`` module docstring);
- fused primitives (linear, layer_norm, attention) against their reference compositions:
  forward, JVP, VJP and HVP;
- per block: JVP (params pytree and input) against central finite differences, the
  transposition identity <u, J v> == <J^T u, v>, HVP of a scalar loss against finite
  differences of ``jl.grad``, and forward-over-reverse == reverse-over-forward ==
  reverse-over-reverse;
- float32 vs float64, init determinism / dtypes / shapes, and bad-input error messages.

Self-contained (no conftest helpers); float64 unless stated.
"""
from __future__ import annotations

import copy
import math

import numpy as np
import pytest

import jaclab as jl
from jaclab import nn

SEEDS = [0, 1, 2]
FD_EPS = 1e-6
FD_RTOL = 1e-7
EXACT_RTOL = 1e-10


# ---- helpers ----------------------------------------------------------------------------------


def npf(t) -> np.ndarray:
    return np.array(np.asarray(t), dtype=np.float64)


def assert_close(got, want, rtol, what=""):
    """|got - want| <= rtol * (max(1, max|want|) + |want|)."""
    got, want = npf(got), npf(want)
    assert got.shape == want.shape, f"{what}: shape {got.shape} != {want.shape}"
    scale = max(1.0, float(np.max(np.abs(want)))) if want.size else 1.0
    err = np.abs(got - want)
    tol = rtol * (scale + np.abs(want))
    if not np.all(err <= tol):
        i = np.unravel_index(int(np.argmax(err - tol)), err.shape) if err.ndim else ()
        raise AssertionError(
            f"{what}: max err {float(np.max(err)):.3e} (scale {scale:.3e}); at {i}: got {got[i]!r}, want {want[i]!r}"
        )


def assert_tree_close(got, want, rtol, what=""):
    lg, tg = jl.tree_flatten(got)
    lw, tw = jl.tree_flatten(want)
    assert tg == tw, f"{what}: tree {tg} != {tw}"
    for k, (a, b) in enumerate(zip(lg, lw)):
        assert_close(a, b, rtol, what=f"{what} leaf {k}")


def tree_np(tree):
    return jl.tree_map(npf, tree)


def tree_axpy(a, x, y):
    """y + a * x over pytrees (NumPy)."""
    return jl.tree_map(lambda xi, yi: npf(yi) + a * npf(xi), x, y)


def tree_vdot(a, b) -> float:
    la, ta = jl.tree_flatten(a)
    lb, tb = jl.tree_flatten(b)
    assert ta == tb, (ta, tb)
    return float(sum(np.vdot(npf(x).ravel(), npf(y).ravel()) for x, y in zip(la, lb)))


def tree_abs_vdot(a, b) -> float:
    la, _ = jl.tree_flatten(a)
    lb, _ = jl.tree_flatten(b)
    return float(sum(np.sum(np.abs(npf(x)) * np.abs(npf(y))) for x, y in zip(la, lb)))


def jl_tree_vdot(a, b):
    """<a, b> with jaclab ops (differentiable in a); b constant NumPy."""
    la, _ = jl.tree_flatten(a)
    lb, _ = jl.tree_flatten(b)
    total = None
    for x, y in zip(la, lb):
        x = x if isinstance(x, jl.Tensor) else jl.array(x)
        term = jl.sum(x * np.asarray(y))
        total = term if total is None else total + term
    return total


def rand_tree_like(rng, tree, scale=1.0):
    leaves, td = jl.tree_flatten(tree)
    return jl.tree_unflatten(td, [scale * rng.standard_normal(np.shape(x)) for x in leaves])


def perturb_params(rng, params):
    """Init values plus noise, so gains != 1 and biases != 0."""
    return jl.tree_map(lambda p: npf(p) + 0.3 * rng.standard_normal(np.shape(p)), params)


# ---- independent NumPy reference ------------------------------------------------------------

erf_np = np.vectorize(math.erf, otypes=[np.float64])


def act_np(name, x):
    if name == "tanh":
        return np.tanh(x)
    if name == "relu":
        return np.maximum(x, 0.0)
    if name == "gelu":
        return 0.5 * x * (1.0 + erf_np(x / math.sqrt(2.0)))
    if name == "gelu_tanh":
        return 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))
    if name == "sigmoid":
        return 1.0 / (1.0 + np.exp(-x))
    raise AssertionError(name)


def layer_norm_np(x, g, b, eps):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * g + b


def rms_norm_np(x, g, eps):
    return x / np.sqrt((x**2).mean(-1, keepdims=True) + eps) * g


def sdpa_np(q, k, v, causal):
    """(B, H, T, dh) scaled dot-product attention."""
    T, dh = q.shape[-2], q.shape[-1]
    s = np.einsum("bhtd,bhsd->bhts", q, k) / math.sqrt(dh)
    if causal:
        s = np.where(np.tril(np.ones((T, T), bool)), s, -np.inf)
    s = s - s.max(-1, keepdims=True)
    p = np.exp(s)
    p /= p.sum(-1, keepdims=True)
    return np.einsum("bhts,bhsd->bhtd", p, v)


def mha_np(x, Wq, Wk, Wv, Wo, H, causal):
    B, T, d = x.shape
    dh = d // H

    def split(a):  # (B, T, d) -> (B, H, T, dh); head h = columns h*dh .. (h+1)*dh
        return np.stack([a[:, :, h * dh:(h + 1) * dh] for h in range(H)], axis=1)

    o = sdpa_np(split(x @ Wq), split(x @ Wk), split(x @ Wv), causal)
    merged = np.concatenate([o[:, h] for h in range(H)], axis=-1)
    return merged @ Wo


def ref_apply(model, p, x):
    x = npf(x)
    p = tree_np(p)
    if isinstance(model, nn.Linear):
        return x @ p["W"] + p["b"]
    if isinstance(model, nn.MLP):
        return act_np(model.activation, x @ p["W1"] + p["b1"]) @ p["W2"] + p["b2"]
    if isinstance(model, nn.LayerNorm):
        return layer_norm_np(x, p["g"], p["b"], 1e-5)
    if isinstance(model, nn.RMSNorm):
        return rms_norm_np(x, p["g"], 1e-6)
    if isinstance(model, nn.Attention):
        return mha_np(x, p["Wq"], p["Wk"], p["Wv"], p["Wo"], model.n_heads, model.causal)
    if isinstance(model, nn.Residual):
        return x + model.scale * ref_apply(model.block, p, x)
    if isinstance(model, nn.TransformerBlock):
        if model.norm == "layer":
            n1 = lambda z: layer_norm_np(z, p["norm1"]["g"], p["norm1"]["b"], 1e-5)  # noqa: E731
            n2 = lambda z: layer_norm_np(z, p["norm2"]["g"], p["norm2"]["b"], 1e-5)  # noqa: E731
        elif model.norm == "rms":
            n1 = lambda z: rms_norm_np(z, p["norm1"]["g"], 1e-6)  # noqa: E731
            n2 = lambda z: rms_norm_np(z, p["norm2"]["g"], 1e-6)  # noqa: E731
        else:
            n1 = n2 = lambda z: z  # noqa: E731
        a, m, s = p["attn"], p["mlp"], model.scale
        h = x + s * mha_np(n1(x), a["Wq"], a["Wk"], a["Wv"], a["Wo"], model.n_heads, model.causal)
        return h + s * (act_np(model.activation, n2(h) @ m["W1"] + m["b1"]) @ m["W2"] + m["b2"])
    if isinstance(model, nn.Sequential):
        for layer, pl in zip(model.layers, p):
            x = ref_apply(layer, pl, x)
        return x
    for cls, name in ((nn.Tanh, "tanh"), (nn.ReLU, "relu"), (nn.GELUTanh, "gelu_tanh"), (nn.GELU, "gelu"),
                      (nn.Sigmoid, "sigmoid")):
        if type(model) is cls:
            return act_np(name, x)
    raise AssertionError(f"no reference for {model!r}")


# ---- the blocks under test (small sizes) -----------------------------------------------------

CASES = {
    "linear2d": (lambda: nn.Linear(3, 4), (5, 3)),
    "linear3d": (lambda: nn.Linear(3, 2), (2, 3, 3)),
    "mlp_tanh": (lambda: nn.MLP(3, 5, 2, "tanh"), (4, 3)),
    "mlp_relu": (lambda: nn.MLP(3, 5, 2, "relu"), (4, 3)),
    "mlp_gelu": (lambda: nn.MLP(3, 5, activation="gelu"), (4, 3)),
    "mlp_gelu_tanh": (lambda: nn.MLP(3, 5, 4, "gelu_tanh"), (2, 2, 3)),
    "layernorm": (lambda: nn.LayerNorm(5), (3, 5)),
    "layernorm3d": (lambda: nn.LayerNorm(4), (2, 3, 4)),
    "rmsnorm": (lambda: nn.RMSNorm(5), (3, 5)),
    "attn_causal_h2": (lambda: nn.Attention(4, 2, causal=True), (2, 3, 4)),
    "attn_full_h2": (lambda: nn.Attention(4, 2, causal=False), (2, 3, 4)),
    "attn_causal_h1": (lambda: nn.Attention(3, 1), (1, 4, 3)),
    "attn_full_h3": (lambda: nn.Attention(6, 3, causal=False), (1, 3, 6)),
    "residual_mlp": (lambda: nn.Residual(nn.MLP(3, 4, activation="tanh"), scale=0.5), (3, 3)),
    "residual_attn": (lambda: nn.Residual(nn.Attention(4, 2)), (1, 3, 4)),
    "tb_layer": (lambda: nn.TransformerBlock(4, 2, 6), (2, 3, 4)),
    "tb_rms_scale": (lambda: nn.TransformerBlock(4, 2, 5, norm="rms", scale=0.7), (1, 3, 4)),
    "tb_none_full": (lambda: nn.TransformerBlock(4, 1, 5, causal=False, norm=None), (2, 2, 4)),
    "tb_layer_full_tanh": (
        lambda: nn.TransformerBlock(4, 2, 3, causal=False, scale=0.5, activation="tanh"), (1, 3, 4)),
    "seq_vec": (lambda: nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 4), nn.GELUTanh(),
                                      nn.MLP(4, 3, 2, "relu"), nn.Sigmoid()), (3, 3)),
    "seq_vec_gelu": (lambda: nn.Sequential(nn.Linear(2, 3), nn.GELU(), nn.ReLU(), nn.LayerNorm(3)), (2, 2)),
    "seq_seq": (lambda: nn.Sequential(nn.TransformerBlock(4, 2, 5), nn.Linear(4, 4), nn.GELU(),
                                      nn.Residual(nn.Attention(4, 1, causal=False), 0.3), nn.RMSNorm(4)),
                (1, 3, 4)),
}


def make_case(name, seed):
    factory, xshape = CASES[name]
    model = factory()
    rng = np.random.default_rng(seed)
    if isinstance(model, nn.Sequential):
        # per-layer init: Sequential.init of nested blocks is tested on its own
        # (test_sequential_init_nested_blocks)
        init = [layer.init(seed + i) for i, layer in enumerate(model.layers)]
    else:
        init = model.init(seed)
    params = perturb_params(rng, init)
    x = rng.standard_normal(xshape)
    return model, params, x, rng


case_names = pytest.mark.parametrize("name", list(CASES))
seeds = pytest.mark.parametrize("seed", SEEDS)


# ---- 1. forward vs NumPy ---------------------------------------------------------------------


@case_names
@seeds
def test_forward_matches_numpy(name, seed):
    model, params, x, _ = make_case(name, seed)
    y = model.apply(params, x)
    assert isinstance(y, jl.Tensor) and y.dtype == np.float64
    assert_close(y, ref_apply(model, params, x), EXACT_RTOL, what=f"{name} forward")


@case_names
def test_forward_with_init_params(name):
    """Default init (gains 1, biases 0) also matches, and apply_layers ends in the output."""
    model = CASES[name][0]()
    params = model.init(3)
    x = np.random.default_rng(3).standard_normal(CASES[name][1])
    y = model.apply(params, x)
    assert_close(y, ref_apply(model, params, x), EXACT_RTOL, what=f"{name} forward (init params)")
    hs = model.apply_layers(params, x)
    assert_close(hs[0], x, 0.0, what="apply_layers[0]")
    assert_close(hs[-1], y, 0.0, what="apply_layers[-1]")
    if isinstance(model, nn.Sequential):
        assert len(hs) == len(model.layers) + 1
        h = npf(x)
        for k, (layer, p) in enumerate(zip(model.layers, params)):
            h = ref_apply(layer, p, h)
            assert_close(hs[k + 1], h, EXACT_RTOL, what=f"apply_layers[{k + 1}]")


def test_attention_heads_split_in_order():
    """Head h uses exactly columns h*dh..(h+1)*dh: zeroing Wq/Wk/Wv columns of head 1 and the
    matching rows of Wo makes the output equal to a 1-head attention on head 0 alone."""
    rng = np.random.default_rng(0)
    d, H, dh = 4, 2, 2
    x = rng.standard_normal((2, 3, d))
    p = {k: rng.standard_normal((d, d)) / 2 for k in ("Wq", "Wk", "Wv", "Wo")}
    y = npf(nn.Attention(d, H, causal=True).apply(p, x))
    # head 0 alone: q,k,v from columns 0..dh, out rows 0..dh of Wo
    q, k, v = (x @ p[n][:, :dh] for n in ("Wq", "Wk", "Wv"))
    o0 = sdpa_np(q[:, None], k[:, None], v[:, None], True)[:, 0]
    q, k, v = (x @ p[n][:, dh:] for n in ("Wq", "Wk", "Wv"))
    o1 = sdpa_np(q[:, None], k[:, None], v[:, None], True)[:, 0]
    want = o0 @ p["Wo"][:dh] + o1 @ p["Wo"][dh:]
    assert_close(y, want, EXACT_RTOL, what="per-head decomposition")


# ---- 2. fused primitives vs composites -------------------------------------------------------


def _ln_args(rng, shape):
    d = shape[-1]
    return [rng.standard_normal(shape), 1.0 + 0.3 * rng.standard_normal(d), 0.3 * rng.standard_normal(d)]


def _attn_args(rng, shape):
    return [rng.standard_normal(shape) for _ in range(3)]


def _linear_args(rng, shape, n=3):
    k = shape[-1]
    return [rng.standard_normal(shape), rng.standard_normal((k, n)), rng.standard_normal(n)]


FUSED = {
    "layer_norm_2d": (lambda x, g, b: jl.layer_norm(x, g, b), lambda x, g, b: jl._core.layer_norm_composite(x, g, b),
                      lambda rng: _ln_args(rng, (3, 5))),
    "layer_norm_3d_eps": (lambda x, g, b: jl.layer_norm(x, g, b, 1e-3),
                          lambda x, g, b: jl._core.layer_norm_composite(x, g, b, 1e-3),
                          lambda rng: _ln_args(rng, (2, 3, 4))),
    "attention": (lambda q, k, v: jl.attention(q, k, v, False),
                  lambda q, k, v: jl._core.attention_composite(q, k, v, False),
                  lambda rng: _attn_args(rng, (2, 2, 3, 2))),
    "attention_causal": (lambda q, k, v: jl.attention(q, k, v, True),
                         lambda q, k, v: jl._core.attention_composite(q, k, v, True),
                         lambda rng: _attn_args(rng, (1, 2, 4, 3))),
    "attention_causal_default_kw": (lambda q, k, v: jl.attention(q, k, v, causal=True),
                                    lambda q, k, v: jl._core.attention_composite(q, k, v, causal=True),
                                    lambda rng: _attn_args(rng, (2, 1, 3, 2))),
    # Long enough that the CPU kernels split the slices into groups (~1M score elements each):
    # groups of 2 slices and a remainder of 1, then one slice per group.
    "attention_slice_groups": (lambda q, k, v: jl.attention(q, k, v, False),
                               lambda q, k, v: jl._core.attention_composite(q, k, v, False),
                               lambda rng: _attn_args(rng, (1, 3, 600, 4))),
    "attention_causal_one_slice_per_group": (lambda q, k, v: jl.attention(q, k, v, True),
                                             lambda q, k, v: jl._core.attention_composite(q, k, v, True),
                                             lambda rng: _attn_args(rng, (2, 1, 1100, 2))),
    "linear_2d": (jl.linear, lambda x, W, b: x @ W + b, lambda rng: _linear_args(rng, (4, 3))),
    "linear_3d": (jl.linear, lambda x, W, b: x @ W + b, lambda rng: _linear_args(rng, (2, 3, 4))),
    "residual_2d": (lambda x, f: jl._core.residual(x, f, 0.3), lambda x, f: x + f * 0.3,
                    lambda rng: [rng.standard_normal((4, 3)), rng.standard_normal((4, 3))]),
    "residual_3d": (lambda x, f: jl._core.residual(x, f, -1.7), lambda x, f: x + f * -1.7,
                    lambda rng: [rng.standard_normal((2, 3, 4)), rng.standard_normal((2, 3, 4))]),
}


def _scalar_of(f, out_shape, rng):
    """A smooth non-quadratic scalar of f's output, fixed weights."""
    c1 = rng.standard_normal(out_shape)
    c2 = rng.standard_normal(out_shape)
    return lambda *a: jl.sum(jl.tanh(f(*a)) * c1) + jl.sum(f(*a) ** 2 * c2)


@pytest.mark.parametrize("name", list(FUSED))
@seeds
def test_fused_matches_composite(name, seed):
    fused, comp, make = FUSED[name]
    rng = np.random.default_rng(seed)
    args = make(rng)
    yf, yc = fused(*args), comp(*args)
    assert_close(yf, yc, EXACT_RTOL, what="forward")
    if name.startswith("attention"):
        assert_close(yf, sdpa_np(*args, causal="causal" in name), EXACT_RTOL, what="forward vs numpy")
    elif name.startswith("layer_norm"):
        eps = 1e-3 if "eps" in name else 1e-5
        assert_close(yf, layer_norm_np(*args, eps), EXACT_RTOL, what="forward vs numpy")

    tans = [rng.standard_normal(a.shape) for a in args]
    of, tf = jl.jvp(fused, tuple(args), tuple(tans))
    oc, tc = jl.jvp(comp, tuple(args), tuple(tans))
    assert_close(of, yc, EXACT_RTOL, what="jvp primal")
    assert_close(tf, tc, EXACT_RTOL, what="JVP")

    u = rng.standard_normal(yc.shape)
    _, pf = jl.vjp(fused, *args)
    _, pc = jl.vjp(comp, *args)
    cf, cc = pf(u), pc(u)
    for k in range(len(args)):
        assert_close(cf[k], cc[k], EXACT_RTOL, what=f"VJP arg {k}")
    # transposition on the fused one
    lhs = float(np.vdot(u, npf(tf)))
    rhs = sum(float(np.vdot(npf(c), t)) for c, t in zip(cf, tans))
    scale = float(np.sum(np.abs(u * npf(tf)))) + sum(float(np.sum(np.abs(npf(c) * t))) for c, t in zip(cf, tans))
    assert abs(lhs - rhs) <= 1e-12 * max(1.0, scale), (lhs, rhs)

    Lf = _scalar_of(fused, yc.shape, np.random.default_rng(seed + 100))
    Lc = _scalar_of(comp, yc.shape, np.random.default_rng(seed + 100))
    hf = jl.hvp(Lf, tuple(args), tuple(tans))
    hc = jl.hvp(Lc, tuple(args), tuple(tans))
    for k in range(len(args)):
        assert_close(hf[k], hc[k], EXACT_RTOL, what=f"HVP arg {k}")
    # and the HVP against finite differences of the gradient
    g = jl.grad(Lf, argnums=tuple(range(len(args))))
    gp = g(*[a + FD_EPS * t for a, t in zip(args, tans)])
    gm = g(*[a - FD_EPS * t for a, t in zip(args, tans)])
    for k in range(len(args)):
        assert_close(hf[k], (npf(gp[k]) - npf(gm[k])) / (2 * FD_EPS), FD_RTOL, what=f"HVP arg {k} vs FD")


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_residual_node_gives_the_composition_s_numbers(dtype):
    # One pass x + s f: the same numbers as scale then add, also when split over threads
    # (600K elements), in both dtypes; s = 1 is a plain add; other shapes broadcast through the
    # composition; a dtype mismatch names the op.
    rng = np.random.default_rng(3)
    for shape in [(5, 7), (3, 200_000)]:
        x, f = (rng.standard_normal(shape).astype(dtype) for _ in range(2))
        for s in (0.0625, -1.3, 1.0):
            got = npf(jl._core.residual(x, f, s))
            want = npf(jl.array(x) + jl.array(f) * s) if s != 1.0 else x + f
            assert np.array_equal(got, want), (shape, s)
    x, row = rng.standard_normal((4, 3)), rng.standard_normal(3)
    assert_close(jl._core.residual(x, row, 0.5), x + 0.5 * row, EXACT_RTOL)
    out, t = jl.jvp(lambda a, b: jl._core.residual(a, b, 0.5), (x, row), (np.ones_like(x), np.ones_like(row)))
    assert_close(t, np.full((4, 3), 1.5), EXACT_RTOL)
    with pytest.raises(TypeError, match=r"residual: dtype mismatch"):
        jl._core.residual(x, x.astype(np.float32), 0.5)


def test_residual_jacobian_with_shared_directions():
    # jl.jacobian's forward mode carries directions shared across rows; the residual node must
    # take them (its rule falls back to the composition for unequal shapes).
    rng = np.random.default_rng(4)
    f = rng.standard_normal((3, 4))
    fn = lambda x: jl._core.residual(x, jl.tanh(x) * jl.array(f), 0.25)  # noqa: E731
    x = rng.standard_normal((3, 4))
    J = np.asarray(jl.jacobian(fn, mode="fwd")(x))
    Jr = np.asarray(jl.jacobian(fn, mode="rev")(x))
    want = np.zeros((3, 4, 3, 4))
    d = 1 + 0.25 * f * (1 - np.tanh(x) ** 2)
    for i in range(3):
        for j in range(4):
            want[i, j, i, j] = d[i, j]
    assert_close(J, want, EXACT_RTOL)
    assert_close(Jr, want, EXACT_RTOL)


def test_fused_attention_causal_differs_from_full():
    rng = np.random.default_rng(0)
    q, k, v = _attn_args(rng, (1, 1, 3, 2))
    a, b = npf(jl.attention(q, k, v, True)), npf(jl.attention(q, k, v, False))
    # first query attends to key 0 only when causal
    assert_close(a[0, 0, 0], v[0, 0, 0], EXACT_RTOL)
    assert np.max(np.abs(a - b)) > 1e-3


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("layout", ["heads_inside_rows", "broadcast_k_over_heads", "transposed_rows"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_fused_attention_reads_strided_views_in_place(causal, layout, dtype):
    """The CPU kernels read (B, H, T, dh) views without copying them (multi-head attention's head
    split of (B, T, H, dh) memory; a key shared by all heads, stride 0) and write results in the
    inputs' layout. Value, JVP and VJP equal the same attention on contiguous copies, bit for bit,
    and the composition to rounding."""
    rng = np.random.default_rng([3, int(causal), len(layout)])
    B, H, T, dh = 2, 3, 5, 4
    if layout == "heads_inside_rows":  # what multi-head attention's split makes
        views = [jl.transpose(jl.array(rng.standard_normal((B, T, H, dh)).astype(dtype)), (0, 2, 1, 3))
                 for _ in range(3)]
    elif layout == "broadcast_k_over_heads":
        q, v = (jl.array(rng.standard_normal((B, H, T, dh)).astype(dtype)) for _ in range(2))
        k = jl.broadcast_to(jl.array(rng.standard_normal((B, 1, T, dh)).astype(dtype)), (B, H, T, dh))
        views = [q, k, v]
    else:  # rows not contiguous in the last dim: the kernel takes a copy
        views = [jl.transpose(jl.array(rng.standard_normal((B, H, dh, T)).astype(dtype)), (0, 1, 3, 2))
                 for _ in range(3)]
    copies = [jl.array(np.ascontiguousarray(np.asarray(t))) for t in views]
    tangents = [jl.array(rng.standard_normal((B, H, T, dh)).astype(dtype)) for _ in range(3)]
    g = rng.standard_normal((B, H, T, dh)).astype(dtype)

    def run(args):
        out, tan = jl.jvp(lambda q, k, v: jl.attention(q, k, v, causal), tuple(args), tuple(tangents))
        _, pull = jl.vjp(lambda q, k, v: jl.attention(q, k, v, causal), *args)
        return [npf(out), npf(tan)] + [npf(c) for c in pull(jl.array(g))]

    got, want = run(views), run(copies)
    for a, b in zip(got, want):
        assert np.array_equal(a, b)
    ref = npf(jl._core.attention_composite(*copies, causal))
    tol = 1e-12 if dtype == np.float64 else 2e-5
    np.testing.assert_allclose(got[0], ref, rtol=tol, atol=tol)


# ---- 3. derivatives of every block -----------------------------------------------------------


def _eval_np(model, params, x):
    return npf(model.apply(params, x))


@case_names
@seeds
def test_block_jvp_vs_fd_and_transposition(name, seed):
    model, params, x, rng = make_case(name, seed)
    f = lambda p, h: model.apply(p, h)  # noqa: E731
    tp, tx = rand_tree_like(rng, params), rng.standard_normal(x.shape)
    zp = jl.tree_map(np.zeros_like, tp)
    y = _eval_np(model, params, x)
    u = rng.standard_normal(y.shape)
    _, pull = jl.vjp(f, params, x)
    ctp, ctx = pull(u)
    assert jl.tree_flatten(ctp)[1] == jl.tree_flatten(params)[1]
    assert ctx.shape == x.shape

    for which, (vp, vx) in {"params": (tp, np.zeros_like(x)), "x": (zp, tx), "both": (tp, tx)}.items():
        out, jv = jl.jvp(f, (params, x), (vp, vx))
        assert_close(out, y, 0.0, what=f"{which}: jvp primal")
        plus = _eval_np(model, tree_axpy(FD_EPS, vp, params), x + FD_EPS * vx)
        minus = _eval_np(model, tree_axpy(-FD_EPS, vp, params), x - FD_EPS * vx)
        assert_close(jv, (plus - minus) / (2 * FD_EPS), FD_RTOL, what=f"{name} JVP w.r.t. {which} vs FD")
        # <u, J v> == <J^T u, v>
        lhs = float(np.vdot(u, npf(jv)))
        rhs = tree_vdot(ctp, vp) + float(np.vdot(npf(ctx), vx))
        scale = float(np.sum(np.abs(u * npf(jv)))) + tree_abs_vdot(ctp, vp) + float(np.sum(np.abs(npf(ctx) * vx)))
        assert abs(lhs - rhs) <= 1e-12 * max(1.0, scale), f"{which}: <u,Jv>={lhs!r} <J^T u,v>={rhs!r}"

    # x-only function (params closed over) gives the same tangent / cotangent
    _, jvx = jl.jvp(lambda h: model.apply(params, h), (x,), (tx,))
    _, jv_both = jl.jvp(f, (params, x), (zp, tx))
    assert_close(jvx, jv_both, EXACT_RTOL, what="closed-over params JVP")
    (ctx2,) = jl.vjp(lambda h: model.apply(params, h), x)[1](u)
    assert_close(ctx2, ctx, EXACT_RTOL, what="closed-over params VJP")


def _loss(model):
    return lambda p, h: jl.mean(model.apply(p, h) ** 2)


@case_names
@seeds
def test_block_hvp(name, seed):
    model, params, x, rng = make_case(name, seed)
    L = _loss(model)
    tp, tx = rand_tree_like(rng, params), rng.standard_normal(x.shape)
    g = jl.grad(L, argnums=(0, 1))

    # gradient itself vs FD along a random direction: <grad, t> == d/de L(x + e t)
    gp, gx = g(params, x)
    lp = float(npf(L(tree_axpy(FD_EPS, tp, params), x + FD_EPS * tx)))
    lm = float(npf(L(tree_axpy(-FD_EPS, tp, params), x - FD_EPS * tx)))
    dd = tree_vdot(gp, tp) + float(np.vdot(npf(gx), tx))
    assert abs(dd - (lp - lm) / (2 * FD_EPS)) <= FD_RTOL * max(1.0, abs(dd)), (dd, (lp - lm) / (2 * FD_EPS))

    # forward-over-reverse (jl.hvp)
    hp, hx = jl.hvp(L, (params, x), (tp, tx))
    assert jl.tree_flatten(hp)[1] == jl.tree_flatten(params)[1] and hx.shape == x.shape

    # vs finite differences of jl.grad
    gpp, gpx = g(tree_axpy(FD_EPS, tp, params), x + FD_EPS * tx)
    gmp, gmx = g(tree_axpy(-FD_EPS, tp, params), x - FD_EPS * tx)
    fd_p = jl.tree_map(lambda a, b: (npf(a) - npf(b)) / (2 * FD_EPS), gpp, gmp)
    assert_tree_close(hp, fd_p, FD_RTOL, what=f"{name} HVP (params) vs FD of grad")
    assert_close(hx, (npf(gpx) - npf(gmx)) / (2 * FD_EPS), FD_RTOL, what=f"{name} HVP (x) vs FD of grad")

    # reverse-over-forward: grad of <grad L, t> computed by jvp
    rof = jl.grad(lambda p, h: jl.jvp(L, (p, h), (tp, tx))[1], argnums=(0, 1))(params, x)
    assert_tree_close(rof[0], hp, EXACT_RTOL, what=f"{name} reverse-over-forward (params)")
    assert_close(rof[1], hx, EXACT_RTOL, what=f"{name} reverse-over-forward (x)")

    # reverse-over-reverse: grad of <grad L, t> computed by grad
    ror = jl.grad(lambda p, h: jl_tree_vdot(g(p, h), (tp, tx)), argnums=(0, 1))(params, x)
    assert_tree_close(ror[0], hp, EXACT_RTOL, what=f"{name} reverse-over-reverse (params)")
    assert_close(ror[1], hx, EXACT_RTOL, what=f"{name} reverse-over-reverse (x)")

    # x-only: d/dx <v, grad_x L> == H_xx v  (hvp with params fixed)
    (hxx,) = jl.hvp(lambda h: L(params, h), (x,), (tx,))
    d = jl.grad(lambda h: jl.sum(jl.grad(lambda hh: L(params, hh))(h) * tx))(x)
    assert_close(d, hxx, EXACT_RTOL, what=f"{name} d/dx <v, grad_x L> vs hvp")
    _, hxx_fo = jl.hvp(L, (params, x), (jl.tree_map(np.zeros_like, tp), tx))
    assert_close(hxx_fo, hxx, EXACT_RTOL, what=f"{name} H_xx v two ways")


@pytest.mark.parametrize("name", ["mlp_gelu", "attn_causal_h2", "tb_layer", "seq_vec"])
def test_block_jacobian_modes_agree(name):
    model, params, x, _ = make_case(name, 0)
    f = lambda h: model.apply(params, h)  # noqa: E731
    Jf = jl.jacobian(f, mode="fwd")(x)
    Jr = jl.jacobian(f, mode="rev")(x)
    y = _eval_np(model, params, x)
    assert Jf.shape == y.shape + x.shape
    assert_close(Jf, Jr, EXACT_RTOL, what="jacobian fwd vs rev")
    # a column by FD
    e = np.zeros_like(x)
    e.flat[1] = 1.0
    fd = (_eval_np(model, params, x + FD_EPS * e) - _eval_np(model, params, x - FD_EPS * e)) / (2 * FD_EPS)
    assert_close(Jr.reshape(y.size, x.size)[:, 1].reshape(y.shape), fd, FD_RTOL, what="jacobian column vs FD")


# ---- 5. float32 vs float64 -------------------------------------------------------------------


@pytest.mark.parametrize("norm", ["layer", "rms", None])
@seeds
def test_transformer_block_float32_vs_float64(norm, seed):
    model = nn.TransformerBlock(8, 2, 12, norm=norm)
    p64 = model.init(seed, np.float64)
    p32 = model.init(seed, np.float32)
    for a, b in zip(jl.tree_flatten(p32)[0], jl.tree_flatten(p64)[0]):
        assert a.dtype == np.float32 and b.dtype == np.float64
        np.testing.assert_array_equal(a, b.astype(np.float32))
    x64 = np.random.default_rng(seed).standard_normal((2, 4, 8))
    x32 = x64.astype(np.float32)
    y32, y64 = model.apply(p32, x32), model.apply(p64, x64)
    assert y32.dtype == np.float32 and y64.dtype == np.float64
    assert_close(y32, y64, 1e-5, what="forward f32 vs f64")

    def L(p, h):
        return jl.mean(model.apply(p, h) ** 2)

    g32 = jl.grad(L, argnums=(0, 1))(p32, x32)
    g64 = jl.grad(L, argnums=(0, 1))(p64, x64)
    for a in jl.tree_flatten(g32)[0]:
        assert a.dtype == np.float32
    # compare relative to the size of each gradient leaf
    for k, (a, b) in enumerate(zip(jl.tree_flatten(g32)[0], jl.tree_flatten(g64)[0])):
        b = npf(b)
        s = max(float(np.max(np.abs(b))), 1e-3)
        err = float(np.max(np.abs(npf(a) - b)))
        assert err <= 2e-5 * s, f"grad leaf {k}: err {err:.3e} vs scale {s:.3e}"


# ---- 6. init ---------------------------------------------------------------------------------

INIT_MODELS = {
    "linear": lambda: nn.Linear(3, 4),
    "mlp": lambda: nn.MLP(3, 5, 2),
    "mlp_default_out": lambda: nn.MLP(3, 5),
    "layernorm": lambda: nn.LayerNorm(4),
    "rmsnorm": lambda: nn.RMSNorm(4),
    "attention": lambda: nn.Attention(6, 2),
    "residual": lambda: nn.Residual(nn.MLP(3, 4)),
    "tb_layer": lambda: nn.TransformerBlock(4, 2, 6),
    "tb_rms": lambda: nn.TransformerBlock(4, 2, 6, norm="rms"),
    "tb_none": lambda: nn.TransformerBlock(4, 2, 6, norm=None),
    "sequential": lambda: nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.MLP(4, 5, 2)),
}

EXPECTED_SHAPES = {
    "linear": {"W": (3, 4), "b": (4,)},
    "mlp": {"W1": (3, 5), "b1": (5,), "W2": (5, 2), "b2": (2,)},
    "mlp_default_out": {"W1": (3, 5), "b1": (5,), "W2": (5, 3), "b2": (3,)},
    "layernorm": {"g": (4,), "b": (4,)},
    "rmsnorm": {"g": (4,)},
    "attention": {k: (6, 6) for k in ("Wq", "Wk", "Wv", "Wo")},
    "residual": {"W1": (3, 4), "b1": (4,), "W2": (4, 3), "b2": (3,)},
    "tb_layer": {"norm1": {"g": (4,), "b": (4,)}, "attn": {k: (4, 4) for k in ("Wq", "Wk", "Wv", "Wo")},
                 "norm2": {"g": (4,), "b": (4,)}, "mlp": {"W1": (4, 6), "b1": (6,), "W2": (6, 4), "b2": (4,)}},
    "tb_rms": {"norm1": {"g": (4,)}, "attn": {k: (4, 4) for k in ("Wq", "Wk", "Wv", "Wo")},
               "norm2": {"g": (4,)}, "mlp": {"W1": (4, 6), "b1": (6,), "W2": (6, 4), "b2": (4,)}},
    "tb_none": {"norm1": {}, "attn": {k: (4, 4) for k in ("Wq", "Wk", "Wv", "Wo")},
                "norm2": {}, "mlp": {"W1": (4, 6), "b1": (6,), "W2": (6, 4), "b2": (4,)}},
    "sequential": [{"W": (3, 4), "b": (4,)}, {}, {"W1": (4, 5), "b1": (5,), "W2": (5, 2), "b2": (2,)}],
}


def _shapes(tree):
    if isinstance(tree, dict):
        return {k: _shapes(v) for k, v in tree.items()}
    if isinstance(tree, (list, tuple)):
        return [_shapes(v) for v in tree]
    return tuple(np.shape(tree))


@pytest.mark.parametrize("name", list(INIT_MODELS))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_init_shapes_dtype_determinism(name, dtype):
    model = INIT_MODELS[name]()
    p0 = model.init(0, dtype)
    assert _shapes(p0) == EXPECTED_SHAPES[name]
    leaves0, tree0 = jl.tree_flatten(p0)
    for leaf in leaves0:
        assert isinstance(leaf, np.ndarray) and leaf.dtype == dtype
    # same seed -> identical; different seed -> weight matrices differ
    leaves0b, tree0b = jl.tree_flatten(model.init(0, dtype))
    assert tree0b == tree0
    for a, b in zip(leaves0, leaves0b):
        np.testing.assert_array_equal(a, b)
    leaves1, _ = jl.tree_flatten(model.init(1, dtype))
    mats = [(a, b) for a, b in zip(leaves0, leaves1) if a.ndim == 2]
    for a, b in mats:
        assert not np.array_equal(a, b)
    # vectors: biases 0, gains 1 (names b*, g)
    flat_named = []

    def walk(t, name=""):
        if isinstance(t, dict):
            for k, v in t.items():
                walk(v, k)
        elif isinstance(t, list):
            for v in t:
                walk(v)
        else:
            flat_named.append((name, t))

    walk(p0)
    for key, v in flat_named:
        if key.startswith("b"):
            assert np.all(v == 0), key
        if key == "g":
            assert np.all(v == 1), key
    # the forward runs in that dtype
    x = np.random.default_rng(0).standard_normal((2, 3, _in_dim(model))).astype(dtype)
    if not isinstance(model, (nn.Attention, nn.TransformerBlock)):
        x = x[0]
    assert model.apply(p0, x).dtype == dtype


def _in_dim(model):
    if isinstance(model, nn.Sequential):
        return _in_dim(model.layers[0])
    if isinstance(model, nn.Residual):
        return _in_dim(model.block)
    for attr in ("d_in", "d", "d_model"):
        if hasattr(model, attr):
            return getattr(model, attr)
    raise AssertionError(model)


def test_init_documented_draws():
    """N(0, 1/fan_in) drawn in the listed order from default_rng(seed); children get spawned seeds."""
    seed = 7
    r = np.random.default_rng(seed)
    p = nn.Linear(3, 4).init(seed)
    np.testing.assert_allclose(p["W"], r.standard_normal((3, 4)) / np.sqrt(3), rtol=1e-15)

    r = np.random.default_rng(seed)
    p = nn.MLP(3, 5, 2).init(seed)
    np.testing.assert_allclose(p["W1"], r.standard_normal((3, 5)) / np.sqrt(3), rtol=1e-15)
    np.testing.assert_allclose(p["W2"], r.standard_normal((5, 2)) / np.sqrt(5), rtol=1e-15)

    r = np.random.default_rng(seed)
    p = nn.Attention(4, 2).init(seed)
    for k in ("Wq", "Wk", "Wv", "Wo"):
        np.testing.assert_allclose(p[k], r.standard_normal((4, 4)) / 2.0, rtol=1e-15)

    s1, s2 = np.random.SeedSequence(seed).spawn(2)
    p = nn.TransformerBlock(4, 2, 6).init(seed)
    a, m = nn.Attention(4, 2).init(s1), nn.MLP(4, 6, 4).init(s2)
    for k in a:
        np.testing.assert_array_equal(p["attn"][k], a[k])
    for k in m:
        np.testing.assert_array_equal(p["mlp"][k], m[k])

    layers = [nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)]
    p = nn.Sequential(*layers).init(seed)
    ss = np.random.SeedSequence(seed).spawn(3)
    for layer, pl, s in zip(layers, p, ss):
        want = layer.init(s)
        assert pl.keys() == want.keys()
        for k in want:
            np.testing.assert_array_equal(pl[k], want[k])


@pytest.mark.parametrize("inner", ["transformer_block", "residual_transformer_block", "sequential"])
def test_sequential_init_nested_blocks(inner):
    """Sequential hands each child a SeedSequence; every block's init must accept one."""
    child = {
        "transformer_block": lambda: nn.TransformerBlock(4, 2, 6),
        "residual_transformer_block": lambda: nn.Residual(nn.TransformerBlock(4, 2, 6)),
        "sequential": lambda: nn.Sequential(nn.Linear(4, 4), nn.Sequential(nn.Linear(4, 4))),
    }[inner]()
    model = nn.Sequential(nn.Linear(4, 4), child)
    p = model.init(0)
    for a, b in zip(jl.tree_flatten(p)[0], jl.tree_flatten(model.init(0))[0]):
        np.testing.assert_array_equal(a, b)
    # The nested child's random weights must depend on the seed (norm gains are constant 1).
    child_leaves = lambda params: jl.tree_flatten(params[1])[0]  # noqa: E731
    assert any(not np.array_equal(a, b) for a, b in zip(child_leaves(p), child_leaves(model.init(1))))
    x = np.random.default_rng(0).standard_normal((1, 3, 4))
    assert_close(model.apply(p, x), ref_apply(model, p, x), EXACT_RTOL)


def test_init_residual_documented_seed():
    """Docstring: 'Residual passes its seed to its block'."""
    seed = 7
    block = nn.MLP(3, 4)
    p = nn.Residual(block).init(seed)
    want = block.init(seed)
    for k in want:
        np.testing.assert_array_equal(p[k], want[k], err_msg=f"Residual.init child seed ({k})")


def test_init_variance():
    W = nn.Linear(400, 300).init(0)["W"]
    assert abs(float(np.std(W)) * np.sqrt(400) - 1.0) < 0.02
    assert abs(float(np.mean(W))) * np.sqrt(400) < 0.02


def test_init_bad_dtype():
    with pytest.raises(TypeError, match="float32 or float64"):
        nn.Linear(2, 2).init(0, np.int32)
    with pytest.raises(TypeError, match="float32 or float64"):
        nn.TransformerBlock(4, 2, 4).init(0, np.float16)


# ---- 7. bad input ----------------------------------------------------------------------------


def _raises(fn, exc, *needles):
    with pytest.raises(exc) as ei:
        fn()
    msg = str(ei.value)
    for n in needles:
        if isinstance(n, tuple):  # any of
            assert any(a in msg for a in n), f"none of {n!r} in message {msg!r}"
        else:
            assert n in msg, f"{n!r} not in message {msg!r}"
    return msg


def _with(params, path, value):
    p = copy.deepcopy(params)
    d = p
    for k in path[:-1]:
        d = d[k]
    if value is _DEL:
        del d[path[-1]]
    else:
        d[path[-1]] = value
    return p


_DEL = object()


def test_bad_linear():
    m = nn.Linear(3, 4)
    p, x = m.init(0), np.ones((2, 3))
    _raises(lambda: m.apply(_with(p, ["W"], np.ones((3, 5))), x), ValueError, "Linear", "(3, 5)", "(3, 4)")
    _raises(lambda: m.apply(_with(p, ["b"], np.ones(3)), x), ValueError, "Linear", "(3,)", "(4,)")
    _raises(lambda: m.apply(_with(p, ["b"], _DEL), x), ValueError, "Linear", "missing", "'b'")
    _raises(lambda: m.apply(p, np.ones((2, 5))), ValueError, "Linear", "(2, 5)")
    _raises(lambda: m.apply([p["W"], p["b"]], x), TypeError, "Linear")
    _raises(lambda: m.apply(dict(p, c=np.ones(1)), x), ValueError, "Linear", "unexpected", "'c'")


def test_bad_mlp():
    m = nn.MLP(3, 5, 2)
    p, x = m.init(0), np.ones((2, 3))
    _raises(lambda: m.apply(_with(p, ["W1"], np.ones((4, 5))), x), ValueError, "MLP", "(4, 5)")
    _raises(lambda: m.apply(_with(p, ["b2"], np.ones(3)), x), ValueError, "MLP", "(3,)", "(2,)")
    _raises(lambda: m.apply(_with(p, ["b1"], np.ones(4)), x), ValueError, "MLP", "(4,)", "(5,)")
    _raises(lambda: m.apply(_with(p, ["W2"], np.ones((4, 2))), x), ValueError, "MLP", "(4, 2)")
    _raises(lambda: m.apply(_with(p, ["b1"], _DEL), x), ValueError, "MLP", "missing", "b1")
    _raises(lambda: m.apply(p, np.ones((2, 4))), ValueError, "MLP", "(2, 4)")
    _raises(lambda: nn.MLP(3, 4, activation="swishy"), ValueError, "swishy")


def test_bad_norms():
    x = np.ones((2, 3))
    _raises(lambda: nn.LayerNorm(3).apply({"g": np.ones(4), "b": np.zeros(3)}, x), ValueError,
            ("LayerNorm", "layer_norm"), "(4,)", "(3,)")
    _raises(lambda: nn.LayerNorm(3).apply({"g": np.ones(3)}, x), ValueError, "LayerNorm", "missing")
    _raises(lambda: nn.RMSNorm(3).apply({"g": np.ones(2)}, x), ValueError, ("RMSNorm", "rms_norm"), "(2,)")
    _raises(lambda: nn.RMSNorm(3).apply({"g": np.ones(3), "b": np.ones(3)}, x), ValueError, "RMSNorm",
            "unexpected")


def test_bad_attention():
    m = nn.Attention(4, 2)
    p, x = m.init(0), np.ones((2, 3, 4))
    _raises(lambda: nn.Attention(5, 2), ValueError, "Attention", "n_heads=2", "5")
    _raises(lambda: nn.Attention(4, 0), ValueError, "Attention")
    _raises(lambda: m.apply(p, np.ones((3, 4))), ValueError, "Attention", "(3, 4)")
    _raises(lambda: m.apply(p, np.ones((1, 2, 3, 4))), ValueError, "Attention", "(1, 2, 3, 4)")
    _raises(lambda: m.apply(p, np.ones(4)), ValueError, "Attention")
    _raises(lambda: m.apply(_with(p, ["Wk"], np.ones((4, 3))), x), ValueError, "Attention", "Wk", "(4, 3)")
    _raises(lambda: m.apply(_with(p, ["Wo"], np.ones((3, 4))), x), ValueError, "Attention", "Wo", "(3, 4)")
    _raises(lambda: m.apply(_with(p, ["Wv"], _DEL), x), ValueError, "Attention", "missing", "Wv")
    # input last dim that does not match the module's d_model=4 (6 is divisible by n_heads)
    _raises(lambda: m.apply(p, np.ones((2, 3, 6))), ValueError, "Attention", ("(2, 3, 6)", "(4, 4)"))


def test_bad_attention_input_dim_not_divisible_names_shapes():
    """x (2, 3, 5) into Attention(4, 2): the message should name the input shape or the
    parameter shape (4, 4), not only claim n_heads does not divide 5."""
    m = nn.Attention(4, 2)
    _raises(lambda: m.apply(m.init(0), np.ones((2, 3, 5))), ValueError, "Attention", ("(2, 3, 5)", "(4, 4)"))


def test_bad_transformer_block():
    m = nn.TransformerBlock(4, 2, 6)
    p, x = m.init(0), np.ones((2, 3, 4))
    _raises(lambda: nn.TransformerBlock(5, 2, 6), ValueError, ("TransformerBlock", "Attention"), "n_heads=2", "5")
    _raises(lambda: nn.TransformerBlock(4, 2, 6, norm="batch"), ValueError, "TransformerBlock", "batch")
    _raises(lambda: m.apply(p, np.ones((3, 4))), ValueError, ("TransformerBlock", "Attention"), "(3, 4)")
    _raises(lambda: m.apply(_with(p, ["norm2"], _DEL), x), ValueError, "TransformerBlock", "missing", "norm2")
    _raises(lambda: m.apply(_with(p, ["norm1", "b"], _DEL), x), ValueError, "TransformerBlock.norm1", "missing")
    _raises(lambda: m.apply(_with(p, ["attn", "Wq"], _DEL), x), ValueError, "TransformerBlock.attn", "Wq")
    _raises(lambda: m.apply(_with(p, ["mlp", "b2"], _DEL), x), ValueError, "TransformerBlock.mlp", "b2")
    _raises(lambda: m.apply(_with(p, ["norm1", "g"], np.ones(3)), x), ValueError, "TransformerBlock", "(3,)")
    _raises(lambda: m.apply(_with(p, ["norm2", "b"], np.ones(5)), x), ValueError, "TransformerBlock", "(5,)")
    _raises(lambda: m.apply(_with(p, ["attn", "Wo"], np.ones((4, 3))), x), ValueError,
            ("TransformerBlock", "Attention"), "(4, 3)")
    _raises(lambda: m.apply(_with(p, ["mlp", "W2"], np.ones((6, 5))), x), ValueError,
            ("TransformerBlock", "MLP"), ("(6, 5)", "(5,)"))
    _raises(lambda: m.apply(_with(p, ["mlp", "b1"], np.ones(7)), x), ValueError,
            ("TransformerBlock", "MLP"), "(7,)")
    # norm=None takes empty norm entries; a stray gain is rejected
    mn = nn.TransformerBlock(4, 2, 6, norm=None)
    pn = mn.init(0)
    _raises(lambda: mn.apply(_with(pn, ["norm1", "g"], np.ones(4)), x), ValueError, "TransformerBlock.norm1",
            "unexpected")
    # rms takes no bias
    mr = nn.TransformerBlock(4, 2, 6, norm="rms")
    _raises(lambda: mr.apply(p, x), ValueError, "TransformerBlock.norm1", "unexpected")


def test_bad_sequential_and_activation():
    s = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2))
    p, x = s.init(0), np.ones((2, 3))
    _raises(lambda: s.apply(p[:2], x), ValueError, "Sequential", "3", "2")
    _raises(lambda: s.apply(p + [{}], x), ValueError, "Sequential", "3", "4")
    _raises(lambda: s.apply(p[0], x), ValueError, "Sequential")
    _raises(lambda: s.apply([p[0], {"a": np.ones(1)}, p[2]], x), ValueError, "Tanh")
    _raises(lambda: s.apply([p[0], {}, p[0]], x), ValueError, "Linear(4, 2)")
    _raises(lambda: nn.Sequential(), ValueError, "Sequential")


def test_sequential_one_call_path_keeps_checks_and_follows_changes():
    # After a first call has checked the params' structure, Sequential.apply runs the stack as one
    # C++ call. It must give the same bits, the same layer-naming errors, and follow changes to
    # the model (its C++ spec is rebuilt on every call).
    rng = np.random.default_rng(3)
    s = nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Residual(nn.MLP(8, 16, activation="tanh"), 0.5),
                      nn.Linear(8, 3))
    p, x = s.init(1), rng.standard_normal((5, 6))
    first = np.asarray(s.apply(p, x)).copy()
    want = np.asarray(s.apply_layers(p, x)[-1])
    assert np.array_equal(np.asarray(s.apply(p, x)), first) and np.array_equal(first, want)
    # derivatives through the one-call path match the per-layer path
    v = jl.tree_map(lambda a: rng.standard_normal(np.shape(a)), p)
    _, t_fast = jl.jvp(lambda q: s.apply(q, x), (p,), (v,))
    _, t_slow = jl.jvp(lambda q: s.apply_layers(q, x)[-1], (p,), (v,))
    np.testing.assert_allclose(np.asarray(t_fast), np.asarray(t_slow), rtol=1e-13, atol=1e-13)
    # same structure, wrong shape: the per-layer error, naming the layer
    bad = [p[0], {}, p[2], {"W": np.ones((8, 4)), "b": np.ones(4)}]
    _raises(lambda: s.apply(bad, x), ValueError, "Linear(8, 3)")
    _raises(lambda: s.apply(p, np.ones((5, 7))), ValueError, "Linear(6, 8)")
    # a changed model is followed
    s.layers[2].scale = 0.25
    np.testing.assert_allclose(np.asarray(s.apply(p, x)), np.asarray(s.apply_layers(p, x)[-1]), rtol=0, atol=0)
    assert not np.array_equal(np.asarray(s.apply(p, x)), first)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("x_shape", [(64, 0), (3, 5, 0)])
def test_linear_and_matmul_with_zero_inner_dim(dtype, x_shape):
    """K = 0 (no input features): y = b exactly (the output was once left unwritten), and the
    VJPs fold x's rows without -1 (which cannot infer rows of a zero-size tensor)."""
    rng = np.random.default_rng(3)
    N = 300
    x, W = np.zeros(x_shape, dtype), np.zeros((0, N), dtype)
    b = rng.standard_normal(N).astype(dtype)
    g = rng.standard_normal(x_shape[:-1] + (N,)).astype(dtype)
    out, pull = jl.vjp(jl.linear, x, W, b)
    np.testing.assert_array_equal(np.asarray(out), np.broadcast_to(b, g.shape))
    gx, gW, gb = pull(g)
    assert np.asarray(gx).shape == x_shape and np.asarray(gW).shape == (0, N)
    np.testing.assert_allclose(np.asarray(gb), g.reshape(-1, N).sum(0), rtol=1e-5 if dtype == np.float32 else 1e-12)
    out, pull = jl.vjp(lambda x, W: x @ W, x, W)
    np.testing.assert_array_equal(np.asarray(out), np.zeros(g.shape, dtype))
    assert [np.asarray(t).shape for t in pull(g)] == [x_shape, (0, N)]
    (hv,) = jl.hvp(lambda W: jl.sum(jl.square(jl.linear(jl.array(x), W, jl.array(b)))), (W,), (W,))
    assert np.asarray(hv).shape == (0, N)
