"""Every primitive: forward values against NumPy references, JVP and VJP against float64 central
finite differences, the transposition identity <u, J v> == <J^T u, v>, and float32 vs float64.
Also random compositions of primitives (chains of 3-5 ops drawn with the rng)."""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Callable

import numpy as np
import pytest

import jaclab as jl
from conftest import (
    SEEDS,
    assert_close,
    check_jvp_vjp,
    check_transposition,
    erf_np,
    evaluate,
    fd_grad,
    fd_jvp,
    fd_vjp,
    npf,
    rand_like,
)

# ---- NumPy references ------------------------------------------------------------------------


def np_sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def np_gelu(x):
    return 0.5 * x * (1.0 + erf_np(x / math.sqrt(2.0)))


def np_gelu_tanh(x):
    return 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))


def np_softplus(x):
    return np.logaddexp(0.0, x)


def np_softmax(x, axis=-1):
    e = np.exp(x - np.max(x, axis=axis, keepdims=True))
    return e / np.sum(e, axis=axis, keepdims=True)


def np_log_softmax(x, axis=-1):
    m = np.max(x, axis=axis, keepdims=True)
    return x - m - np.log(np.sum(np.exp(x - m), axis=axis, keepdims=True))


def np_layer_norm(x, g, b, eps=1e-5):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * g + b


def np_rms_norm(x, g, eps=1e-6):
    return x / np.sqrt((x**2).mean(-1, keepdims=True) + eps) * g


def np_attention(q, k, v, causal=False):
    dh = q.shape[-1]
    s = q @ np.swapaxes(k, -1, -2) / math.sqrt(dh)
    if causal:
        tq, tk = s.shape[-2], s.shape[-1]
        mask = np.triu(np.ones((tq, tk), bool), k=1 + tk - tq)  # aligned bottom-right
        s = np.where(mask, -np.inf, s)
    return np_softmax(s, -1) @ v


def np_cross_entropy_labels(logits, labels):
    lp = np_log_softmax(logits, -1)
    return -np.mean(lp[np.arange(len(labels)), labels])


def np_cross_entropy_probs(logits, p):
    return -np.sum(p * np_log_softmax(logits, -1)) / logits.shape[0]


def np_mse(a, b):
    return np.mean((a - b) ** 2)


# ---- random inputs ---------------------------------------------------------------------------


def normal(*shape):
    return lambda rng: rng.standard_normal(shape)


def positive(*shape, lo=0.3):
    return lambda rng: lo + np.abs(rng.standard_normal(shape))


def away_from_zero(*shape, lo=0.2):
    """|x| >= lo with random sign (kinks of relu, poles of division)."""

    def make(rng):
        r = rng.standard_normal(shape)
        return np.where(r >= 0, 1.0, -1.0) * (lo + np.abs(r))

    return make


def softmax_probs(*shape):
    return lambda rng: np_softmax(rng.standard_normal(shape), -1)


@dataclass
class Spec:
    name: str
    f: Callable  # jaclab function of the positional arguments
    ref: Callable  # NumPy reference
    makers: tuple  # one maker per argument: rng -> ndarray
    fd: bool = True

    def args(self, rng):
        return [np.asarray(m(rng), np.float64) for m in self.makers]


SPECS: list[Spec] = []


def spec(*a, **k):
    SPECS.append(Spec(*a, **k))


# Binary elementwise ops, with broadcasting (shapes of the two operands).
BINARY_SHAPES = [
    ((3, 4), (3, 4)),
    ((2, 3, 4), (4,)),
    ((4,), (2, 3, 4)),
    ((3, 1), (1, 4)),
    ((2, 1, 3), (4, 1)),
    ((), (3,)),
    ((2, 3, 1, 5), (3, 4, 1)),
]
for sa, sb in BINARY_SHAPES:
    tag = f"{sa}x{sb}"
    spec(f"add{tag}", lambda a, b: a + b, np.add, (normal(*sa), normal(*sb)))
    spec(f"sub{tag}", lambda a, b: a - b, np.subtract, (normal(*sa), normal(*sb)))
    spec(f"mul{tag}", lambda a, b: a * b, np.multiply, (normal(*sa), normal(*sb)))
    spec(f"div{tag}", lambda a, b: a / b, np.divide, (normal(*sa), away_from_zero(*sb, lo=0.5)))

# Operators with Python scalars on either side.
spec("add_scalar", lambda x: x + 1.5, lambda x: x + 1.5, (normal(3, 4),))
spec("radd_scalar", lambda x: 2 + x, lambda x: 2 + x, (normal(3, 4),))
spec("rsub_scalar", lambda x: 2.5 - x, lambda x: 2.5 - x, (normal(3, 4),))
spec("mul_scalar", lambda x: x * -0.75, lambda x: x * -0.75, (normal(2, 3),))
spec("rmul_scalar", lambda x: 3 * x, lambda x: 3 * x, (normal(2, 3),))
spec("div_scalar", lambda x: x / 4.0, lambda x: x / 4.0, (normal(2, 3),))
spec("rdiv_scalar", lambda x: 2.0 / x, lambda x: 2.0 / x, (away_from_zero(2, 3, lo=0.5),))
spec("neg", lambda x: -x, np.negative, (normal(3, 4),))
spec("neg_3d", lambda x: -x, np.negative, (normal(2, 3, 4),))

# pow with a scalar exponent.
for p in (2, 3, 2.0, 0.5, -1.0, -1.5, 2.5, 1.0, 0.0):
    maker = normal(3, 4) if float(p).is_integer() else positive(3, 4)
    spec(f"pow{p!r}", lambda x, p=p: x**p, lambda x, p=p: np.power(x, p), (maker,))

# matmul: 2-D, batched, batch broadcasting, 1-D operands.
MATMUL_SHAPES = [
    ((3, 4), (4, 5)),
    ((1, 4), (4, 1)),
    ((2, 3, 4), (2, 4, 5)),
    ((2, 2, 3, 4), (2, 2, 4, 5)),
    ((2, 1, 3, 4), (3, 4, 2)),
    ((3, 4), (2, 4, 5)),
    ((2, 3, 4), (4, 5)),
    ((2, 1, 3, 4), (1, 2, 4, 2)),
    ((4,), (4,)),
    ((4,), (4, 5)),
    ((3, 4), (4,)),
    ((4,), (2, 4, 5)),
    ((2, 3, 4), (4,)),
]
for sa, sb in MATMUL_SHAPES:
    spec(f"matmul{sa}@{sb}", lambda a, b: a @ b, np.matmul, (normal(*sa), normal(*sb)))
    spec(f"jl.matmul{sa}@{sb}", jl.matmul, np.matmul, (normal(*sa), normal(*sb)))

# Unary elementwise.
UNARY = [
    ("exp", jl.exp, np.exp, normal),
    ("log", jl.log, np.log, positive),
    ("tanh", jl.tanh, np.tanh, normal),
    ("sigmoid", jl.sigmoid, np_sigmoid, normal),
    ("relu", jl.relu, lambda x: np.maximum(x, 0.0), away_from_zero),
    ("gelu", jl.gelu, np_gelu, normal),
    ("gelu_tanh", jl.gelu_tanh, np_gelu_tanh, normal),
    ("softplus", jl.softplus, np_softplus, normal),
    ("erf", jl.erf, erf_np, normal),
    ("sqrt", jl.sqrt, np.sqrt, positive),
    ("square", jl.square, np.square, normal),
]
for name, f, ref, maker in UNARY:
    for shape in [(5,), (3, 4), (2, 3, 4), (2, 1, 2, 3)]:
        spec(f"{name}{shape}", f, ref, (maker(*shape),))
spec("softplus_large", jl.softplus, np_softplus, (lambda rng: 30.0 * rng.standard_normal((3, 4)),))
spec("sigmoid_large", jl.sigmoid, np_sigmoid, (lambda rng: 20.0 * rng.standard_normal((3, 4)),))
spec("tanh_large", jl.tanh, np.tanh, (lambda rng: 10.0 * rng.standard_normal((3, 4)),))

# Reductions.
for axis in [None, 0, 1, -1, (0, 2), (1,), (-1, 0), (0, 1, 2)]:
    for keepdims in (False, True):
        spec(f"sum{axis}_k{int(keepdims)}", lambda x, a=axis, k=keepdims: jl.sum(x, axis=a, keepdims=k),
             lambda x, a=axis, k=keepdims: np.sum(x, axis=a, keepdims=k), (normal(2, 3, 4),))
        spec(f"mean{axis}_k{int(keepdims)}", lambda x, a=axis, k=keepdims: jl.mean(x, axis=a, keepdims=k),
             lambda x, a=axis, k=keepdims: np.mean(x, axis=a, keepdims=k), (normal(2, 3, 4),))
spec("method_sum", lambda x: x.sum(axis=1), lambda x: x.sum(axis=1), (normal(3, 4),))
spec("method_mean", lambda x: x.mean(keepdims=True), lambda x: x.mean(keepdims=True), (normal(3, 4),))
spec("sum_4d", lambda x: jl.sum(x, axis=(1, 3)), lambda x: np.sum(x, axis=(1, 3)), (normal(2, 3, 2, 3),))
spec("sum_0d", lambda x: jl.sum(x), np.sum, (normal(),))

# Shapes.
for src, dst in [((2, 3, 4), (6, 4)), ((2, 3, 4), (4, -1)), ((2, 3, 4), (24,)), ((2, 3, 4), (2, 12, 1)),
                 ((6,), (1, 2, 3, 1)), ((), (1, 1)), ((3, 4), (-1,))]:
    spec(f"reshape{src}->{dst}", lambda x, d=dst: jl.reshape(x, d), lambda x, d=dst: np.reshape(x, d),
         (normal(*src),))
spec("method_reshape_args", lambda x: x.reshape(4, 6), lambda x: x.reshape(4, 6), (normal(2, 3, 4),))
spec("method_reshape_tuple", lambda x: x.reshape((3, 8)), lambda x: x.reshape((3, 8)), (normal(2, 3, 4),))
for shape in [(3, 4), (2, 3, 4), (2, 3, 4, 5), (5,)]:
    spec(f"T{shape}", lambda x: x.T, lambda x: x.T, (normal(*shape),))
    spec(f"transpose{shape}", jl.transpose, np.transpose, (normal(*shape),))
for shape, perm in [((2, 3, 4), (1, 0, 2)), ((2, 3, 4), (2, 0, 1)), ((2, 3, 4, 5), (0, 2, 1, 3)),
                    ((2, 3, 4, 5), (3, 1, 0, 2)), ((3, 4), (0, 1))]:
    spec(f"permute{shape}{perm}", lambda x, p=perm: jl.transpose(x, p), lambda x, p=perm: np.transpose(x, p),
         (normal(*shape),))
spec("method_transpose", lambda x: x.transpose(2, 0, 1), lambda x: x.transpose(2, 0, 1), (normal(2, 3, 4),))
spec("swapaxes", lambda x: jl.swapaxes(x, -1, -2), lambda x: np.swapaxes(x, -1, -2), (normal(2, 3, 4),))
for src, dst in [((3,), (2, 3)), ((3, 1), (2, 3, 4)), ((), (2, 2)), ((1, 4), (3, 4)), ((2, 1, 3), (2, 2, 4, 3))]:
    spec(f"broadcast_to{src}->{dst}", lambda x, d=dst: jl.broadcast_to(x, d),
         lambda x, d=dst: np.broadcast_to(x, d), (normal(*src),))

# Softmax family.
for shape in [(3, 5), (2, 3, 4)]:
    for axis in (-1, 0, 1):
        spec(f"softmax{shape}_ax{axis}", lambda x, a=axis: jl.softmax(x, axis=a), lambda x, a=axis: np_softmax(x, a),
             (normal(*shape),))
        spec(f"log_softmax{shape}_ax{axis}", lambda x, a=axis: jl.log_softmax(x, axis=a),
             lambda x, a=axis: np_log_softmax(x, a), (normal(*shape),))
spec("softmax_default_axis", jl.softmax, np_softmax, (normal(3, 5),))
spec("log_softmax_shifted", jl.log_softmax, np_log_softmax, (lambda rng: 50.0 + 3.0 * rng.standard_normal((3, 5)),))

# Normalisation layers (x, g, b all differentiated).
for shape in [(4, 6), (2, 3, 6), (6,)]:
    d = shape[-1]
    spec(f"layer_norm{shape}", jl.layer_norm, np_layer_norm, (normal(*shape), normal(d), normal(d)))
    spec(f"rms_norm{shape}", jl.rms_norm, np_rms_norm, (normal(*shape), normal(d)))
spec("layer_norm_eps", lambda x, g, b: jl.layer_norm(x, g, b, eps=0.1),
     lambda x, g, b: np_layer_norm(x, g, b, 0.1), (normal(3, 5), normal(5), normal(5)))
spec("rms_norm_eps", lambda x, g: jl.rms_norm(x, g, eps=0.1), lambda x, g: np_rms_norm(x, g, 0.1),
     (normal(3, 5), normal(5)))

# Attention: (B, H, T, dh).
for causal in (False, True):
    for qs in [(2, 2, 3, 4), (1, 3, 4, 2), (3, 5, 4)]:
        spec(f"attention{qs}_causal{int(causal)}", lambda q, k, v, c=causal: jl.attention(q, k, v, causal=c),
             lambda q, k, v, c=causal: np_attention(q, k, v, c), (normal(*qs), normal(*qs), normal(*qs)))
spec("attention_cross_len", jl.attention, np_attention, (normal(2, 2, 3, 4), normal(2, 2, 5, 4), normal(2, 2, 5, 3)))
spec("attention_cross_len_causal", lambda q, k, v: jl.attention(q, k, v, causal=True),
     lambda q, k, v: np_attention(q, k, v, True), (normal(2, 3, 4), normal(2, 5, 4), normal(2, 5, 3)))

# Losses.
for B, C in [(5, 4), (3, 7), (1, 2)]:
    labels = np.random.default_rng(B * 100 + C).integers(0, C, size=B)
    spec(f"cross_entropy_labels{B}x{C}", lambda z, y=labels: jl.cross_entropy(z, y),
         lambda z, y=labels: np_cross_entropy_labels(z, y), (normal(B, C),))
    spec(f"cross_entropy_probs{B}x{C}", jl.cross_entropy, np_cross_entropy_probs, (normal(B, C), softmax_probs(B, C)))
spec("cross_entropy_int32_labels", lambda z: jl.cross_entropy(z, np.array([0, 2, 1], np.int32)),
     lambda z: np_cross_entropy_labels(z, np.array([0, 2, 1])), (normal(3, 3),))
for shape in [(5,), (3, 4), (2, 3, 4)]:
    spec(f"mse{shape}", jl.mse, np_mse, (normal(*shape), normal(*shape)))

SPEC_IDS = [s.name for s in SPECS]
assert len(set(SPEC_IDS)) == len(SPEC_IDS), "duplicate spec names"


@pytest.fixture(params=SPECS, ids=SPEC_IDS)
def op(request):
    return request.param


# ---- tests -------------------------------------------------------------------------------------


def test_forward_matches_numpy(op, rng):
    args = op.args(rng)
    got = op.f(*[jl.array(a) for a in args])
    assert isinstance(got, jl.Tensor)
    want = np.asarray(op.ref(*args), np.float64)
    assert got.shape == want.shape, (got.shape, want.shape)
    assert got.dtype == np.float64
    assert_close(got, want, rtol=1e-12, atol=1e-13, what=op.name)


def test_jvp_vjp_finite_differences(op, rng):
    check_jvp_vjp(op.f, op.args(rng), rng)


def test_float32_matches_float64(op, rng):
    args64 = [np.asarray(a, np.float32).astype(np.float64) for a in op.args(rng)]
    args32 = [a.astype(np.float32) for a in args64]
    t64 = [rand_like(rng, a) for a in args64]
    t32 = [t.astype(np.float32) for t in t64]
    t64 = [t.astype(np.float64) for t in t32]

    out64, jv64 = jl.jvp(op.f, tuple(args64), tuple(t64))
    out32, jv32 = jl.jvp(op.f, tuple(args32), tuple(t32))
    assert out32.dtype == np.float32 and jv32.dtype == np.float32
    u32 = rand_like(rng, out64, np.float32)
    _, fn64 = jl.vjp(op.f, *args64)
    _, fn32 = jl.vjp(op.f, *args32)
    ct64 = fn64(u32.astype(np.float64))
    ct32 = fn32(u32)
    tol = dict(rtol=1e-5, atol=1e-5)
    assert_close(out32, out64, what="float32 value", **tol)
    assert_close(jv32, jv64, what="float32 JVP", **tol)
    for a, b in zip(ct32, ct64):
        assert a.dtype == np.float32
        assert_close(a, b, what="float32 VJP", **tol)


def test_vjp_reused_and_linear(op, rng):
    """The pullback can be called many times and is linear in the cotangent."""
    args = op.args(rng)
    out, fn = jl.vjp(op.f, *args)
    u1, u2 = rand_like(rng, out), rand_like(rng, out)
    c1, c2, c12 = fn(u1), fn(u2), fn(2.0 * u1 - 3.0 * u2)
    again = fn(u1)
    for a, b, ab, a2 in zip(c1, c2, c12, again):
        assert_close(ab, 2.0 * npf(a) - 3.0 * npf(b), rtol=1e-12, atol=1e-12)
        np.testing.assert_array_equal(npf(a2), npf(a))


# ---- random compositions -------------------------------------------------------------------------

# Chain links: state (3, 4) -> state (3, 4); `W` (4, 4) and `c` (4,) are differentiated arguments.
LINKS = {
    "tanh": lambda s, W, c: jl.tanh(s),
    "sigmoid": lambda s, W, c: jl.sigmoid(s),
    "gelu": lambda s, W, c: jl.gelu(s),
    "gelu_tanh": lambda s, W, c: jl.gelu_tanh(s),
    "softplus": lambda s, W, c: jl.softplus(s),
    "exp_half": lambda s, W, c: jl.exp(0.5 * jl.tanh(s)),
    "log_pos": lambda s, W, c: jl.log(jl.softplus(s) + 0.5),
    "relu": lambda s, W, c: jl.relu(s),
    "add_c": lambda s, W, c: s + c,
    "sub_c": lambda s, W, c: c - s,
    "mul_c": lambda s, W, c: s * c,
    "div": lambda s, W, c: s / (c * c + 1.0),
    "neg": lambda s, W, c: -s,
    "square_scaled": lambda s, W, c: 0.5 * s**2,
    "pow3": lambda s, W, c: s**3 * 0.2,
    "matmul_W": lambda s, W, c: s @ W * 0.5,
    "matmul_WT": lambda s, W, c: (W @ s.T).T * 0.5,
    "softmax": lambda s, W, c: jl.softmax(s, axis=-1),
    "softmax0": lambda s, W, c: jl.softmax(s, axis=0),
    "log_softmax": lambda s, W, c: jl.log_softmax(s),
    "layer_norm": lambda s, W, c: jl.layer_norm(s, c, jl.mean(W, axis=0)),
    "rms_norm": lambda s, W, c: jl.rms_norm(s, c),
    "mean_bcast": lambda s, W, c: s - jl.mean(s, axis=0, keepdims=True),
    "sum_bcast": lambda s, W, c: jl.broadcast_to(jl.sum(s, axis=-1, keepdims=True), (3, 4)) * 0.3 + s,
    "reshape_T": lambda s, W, c: jl.reshape(jl.transpose(jl.reshape(s, (2, 6))), (3, 4)),
    "attention": lambda s, W, c: jl.reshape(
        jl.attention(jl.reshape(s, (1, 1, 3, 4)), jl.reshape(s @ W, (1, 1, 3, 4)), jl.reshape(s, (1, 1, 3, 4)), True),
        (3, 4)),
    "residual": lambda s, W, c: s + jl.tanh(s @ W) * c,
}
FD_SAFE = [k for k in LINKS if k != "relu"]


def make_chain(rng, names):
    k = int(rng.integers(3, 6))
    chain = [str(n) for n in rng.choice(names, size=k)]

    def f(x, W, c):
        s = x
        for name in chain:
            s = LINKS[name](s, W, c)
        return s

    return f, chain


@pytest.mark.parametrize("seed", range(12))
def test_random_chain_transposition(seed):
    rng = np.random.default_rng(1000 + seed)
    f, chain = make_chain(rng, list(LINKS))
    args = [rng.standard_normal((3, 4)), rng.standard_normal((4, 4)), rng.standard_normal(4)]
    tangents = [rand_like(rng, a) for a in args]
    out, jv = jl.jvp(f, tuple(args), tuple(tangents))
    u = rand_like(rng, out)
    _, fn = jl.vjp(f, *args)
    cts = fn(u)
    try:
        check_transposition(u, jv, cts, tangents)
    except AssertionError as e:
        raise AssertionError(f"chain {chain}: {e}") from None


@pytest.mark.parametrize("seed", range(8))
def test_random_chain_finite_differences(seed):
    rng = np.random.default_rng(2000 + seed)
    f, chain = make_chain(rng, FD_SAFE)
    args = [rng.standard_normal((3, 4)), rng.standard_normal((4, 4)), rng.standard_normal(4)]
    try:
        check_jvp_vjp(f, args, rng, rtol=1e-6, atol=1e-7)
    except AssertionError as e:
        raise AssertionError(f"chain {chain}: {e}") from None


@pytest.mark.parametrize("seed", SEEDS)
def test_multi_output_pytree(seed):
    """jvp/vjp through a function returning a dict of outputs, finite-difference checked."""
    rng = np.random.default_rng(seed)
    x, W = rng.standard_normal((3, 4)), rng.standard_normal((4, 2))

    def f(x, W):
        h = x @ W
        return {"h": jl.tanh(h), "s": jl.sum(h * h), "p": [jl.softmax(h)]}

    tx, tW = rand_like(rng, x), rand_like(rng, W)
    out, tan = jl.jvp(f, (x, W), (tx, tW))
    assert set(out) == {"h", "s", "p"} and isinstance(out["p"], list)
    for key, g in [("h", lambda x, W: f(x, W)["h"]), ("s", lambda x, W: f(x, W)["s"]),
                   ("p", lambda x, W: f(x, W)["p"][0])]:
        t = tan[key][0] if key == "p" else tan[key]
        assert_close(t, fd_jvp(g, [x, W], [tx, tW]), what=key)
    u = {"h": rng.standard_normal((3, 2)), "s": np.array(rng.standard_normal()), "p": [rng.standard_normal((3, 2))]}
    _, fn = jl.vjp(f, x, W)
    cx, cW = fn(u)

    def phi(x, W):
        o = f(jl.array(x), jl.array(W))
        return sum(float(np.vdot(npf(o[k] if k != "p" else o[k][0]), u[k] if k != "p" else u[k][0])) for k in o)

    gx, gW = fd_grad(phi, [x, W])
    assert_close(cx, gx)
    assert_close(cW, gW)
    lhs = float(np.vdot(npf(tan["h"]), u["h"])) + float(npf(tan["s"]) * u["s"]) + float(
        np.vdot(npf(tan["p"][0]), u["p"][0]))
    rhs = float(np.vdot(npf(cx), tx) + np.vdot(npf(cW), tW))
    assert abs(lhs - rhs) <= 1e-12 * max(1.0, abs(lhs))


def test_constant_output_has_zero_tangent():
    x = np.ones((2, 3))
    c = jl.array(np.arange(6.0).reshape(2, 3))
    out, t = jl.jvp(lambda x: c, (x,), (np.ones((2, 3)),))
    np.testing.assert_array_equal(npf(t), np.zeros((2, 3)))
    np.testing.assert_array_equal(npf(out), npf(c))


def test_fd_helpers_sanity():
    """The finite-difference helpers themselves, on a function with a known derivative."""
    x = np.linspace(-1, 1, 5)
    v = np.ones(5)
    assert_close(fd_jvp(jl.tanh, [x], [v]), 1 - np.tanh(x) ** 2)
    (g,) = fd_vjp(jl.tanh, [x], v)
    assert_close(g, 1 - np.tanh(x) ** 2)
    assert_close(evaluate(jl.tanh, [x]), np.tanh(x), rtol=1e-15, atol=0)


def test_fully_masked_rows_have_no_mass(rng):
    """softmax of an all -inf row is 0 (not NaN); attention queries that see no key (causal,
    T > S) give 0 and a zero tangent, and the other rows are ordinary attention."""
    x = np.array([[-np.inf, -np.inf, -np.inf], [0.5, -1.0, 2.0]])
    p = np.asarray(jl.softmax(x, -1))
    assert np.all(p[0] == 0)
    assert_close(p[1], np_softmax(x[1]), rtol=1e-14, atol=1e-15)
    q, k, v = rng.standard_normal((1, 2, 5, 4)), rng.standard_normal((1, 2, 3, 4)), rng.standard_normal((1, 2, 3, 4))
    tangents = tuple(rng.standard_normal(a.shape) for a in (q, k, v))
    f = lambda q, k, v: jl.attention(q, k, v, causal=True)  # noqa: E731
    out, jv = (np.asarray(t) for t in jl.jvp(f, (q, k, v), tangents))
    assert np.all(out[:, :, :2] == 0) and np.all(jv[:, :, :2] == 0)
    assert_close(out[:, :, 2:], np_attention(q[:, :, 2:], k, v, causal=True), rtol=1e-12, atol=1e-13)
    eps, dq = 1e-6, tangents[0][:, :, 2:]
    want = (np_attention(q[:, :, 2:] + eps * dq, k, v, causal=True)
            - np_attention(q[:, :, 2:] - eps * dq, k, v, causal=True)) / (2 * eps)
    _, jv_q = jl.jvp(lambda q: f(q, k, v), (q,), (tangents[0],))
    assert_close(np.asarray(jv_q)[:, :, 2:], want, rtol=1e-7, atol=1e-8)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_tanh_accuracy_and_special_values(dtype):
    """jl.tanh over a million points (vector loops and the pool both run) within 5 ulp of an
    extended-precision reference (measured: <= 3.7 ulp; float64 on AVX2 is computed from
    libmvec's expm1, see cpp/src/vec/vecmath_impl.cpp), odd to the bit, and exact at the special values."""
    rng = np.random.default_rng(11)
    x = np.concatenate([np.linspace(-20, 20, 600_001), 3 * rng.standard_normal(300_000),
                        1e-4 * rng.standard_normal(100_000)]).astype(dtype)
    y = np.asarray(jl.tanh(jl.array(x)))
    ref = np.tanh(x.astype(np.longdouble))
    ulp = np.spacing(np.abs(ref).astype(dtype)).astype(np.longdouble)
    err = np.abs(y.astype(np.longdouble) - ref) / ulp
    assert float(err.max()) <= 5.0, f"max error {float(err.max()):.2f} ulp at x = {x[np.argmax(err)]!r}"
    np.testing.assert_array_equal(np.asarray(jl.tanh(jl.array(-x))), -y)
    special = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, 1e-30, -1e-30, 1e-8, 400.0, -400.0], dtype)
    got = np.asarray(jl.tanh(jl.array(special)))
    want = np.array([0.0, -0.0, 1.0, -1.0, np.nan, 1e-30, -1e-30, 1e-8, 1.0, -1.0], dtype)
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(np.signbit(got[:2]), [False, True])


def test_means_over_no_elements_are_nan_as_in_numpy():
    """mean over an empty axis, and the batch means of mse and cross_entropy over an empty batch,
    are 0 / 0 = NaN as NumPy's mean (they were 0); their gradients stay empty or zero."""
    x = np.zeros((0, 4))
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        np.testing.assert_array_equal(np.asarray(jl.mean(jl.array(x), axis=0)), np.mean(x, axis=0))
        assert np.isnan(np.mean(x)) and np.isnan(float(jl.mean(jl.array(x))))
    assert np.isnan(float(jl.mse(jl.array(x), jl.array(x))))
    assert np.isnan(float(jl.cross_entropy(jl.array(x), jl.array(np.zeros(0, np.int64)))))
    value, g = jl.value_and_grad(lambda x: jl.mean(x))(x)
    assert np.isnan(float(value)) and np.asarray(g).shape == (0, 4)
    np.testing.assert_array_equal(np.asarray(jl.mean(jl.array(np.ones((3, 0))), axis=0)), np.zeros(0))
