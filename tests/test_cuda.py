"""The CUDA backend against the CPU float64 path (the reference).

With a GPU these tests run the real kernels. Without one they run on the host-emulated CUDA
device (``jaclab/host_backend.h``: "cuda:0" arrays in host memory, CPU kernels behind the same
dispatch, an error if a kernel is handed an array from another device), which checks the
device plumbing of every op, rule and transform in CI; the tests that need real GPU memory
(CuPy, TF32) skip there with their reason.

Every op spec of test_ops.py runs on the GPU in float64 and float32: value, JVP and VJP are
compared with the CPU float64 results on the same (rounded) inputs. Then the blocks (MLP,
attention, transformer block) with grad, JVP and HVP; the fused attention kernels against the
unfused composition on the CPU and against NumPy; GEMM layouts through cuBLAS; CuPy/DLPack
interop; device-mixing errors. Without a GPU the whole module is skipped with its reason; the
"no CUDA" behaviour itself is tested in test_errors.py.
"""
from __future__ import annotations

import numpy as np
import pytest

import jaclab as jl
from conftest import assert_close, rand_like
from test_nn import CASES, make_case
from test_analysis import STRUCTURED, _init as structured_init
from test_ops import SPEC_IDS, SPECS, np_attention

GPU = jl.cuda_available()
needs_gpu = pytest.mark.skipif(not GPU, reason="needs a real CUDA device (jl.cuda_available() is False)")


@pytest.fixture(autouse=True, scope="module")
def cuda_device():
    """The real GPU when there is one, else the host-emulated CUDA device."""
    if not GPU:
        jl._core._emulate_cuda_on_host(True)
    yield
    if not GPU:
        jl._core._emulate_cuda_on_host(False)

TOL = {np.float64: dict(rtol=1e-10, atol=1e-11), np.float32: dict(rtol=2e-5, atol=2e-5)}


def dev(x, dtype=None):
    x = np.asarray(x, dtype if dtype is not None else np.asarray(x).dtype)
    return jl.array(x, device="cuda")


def host(t) -> np.ndarray:
    assert t.device == "cuda:0", t.device
    return np.array(np.asarray(t.to("cpu")), np.float64)


def cpu_reference(f, args64, tangents64, u64):
    out, jv = jl.jvp(f, tuple(args64), tuple(tangents64))
    _, pullback = jl.vjp(f, *args64)
    return np.asarray(out), np.asarray(jv), [np.asarray(c) for c in pullback(u64)]


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("op", SPECS, ids=SPEC_IDS)
def test_op_on_cuda_matches_cpu_float64(op, dtype, rng):
    args = [np.asarray(a, dtype) for a in op.args(rng)]
    tangents = [rand_like(rng, a, dtype) for a in args]
    args64 = [a.astype(np.float64) for a in args]
    tangents64 = [t.astype(np.float64) for t in tangents]
    out_ref = np.asarray(op.f(*[jl.array(a) for a in args64]))
    u = rand_like(rng, out_ref, dtype)
    want_out, want_jv, want_ct = cpu_reference(op.f, args64, tangents64, u.astype(np.float64))

    out, jv = jl.jvp(op.f, tuple(dev(a) for a in args), tuple(dev(t) for t in tangents))
    assert out.dtype == dtype and jv.dtype == dtype
    _, pullback = jl.vjp(op.f, *[dev(a) for a in args])
    ct = pullback(dev(u))
    tol = TOL[dtype]
    assert_close(host(out), want_out, what=f"{op.name} value", **tol)
    assert_close(host(jv), want_jv, what=f"{op.name} JVP", **tol)
    for i, (c, w) in enumerate(zip(ct, want_ct)):
        assert_close(host(c), w, what=f"{op.name} VJP[{i}]", **tol)


# Specs whose arguments are below 4-D (a batch of directions adds an axis; 4-D is the limit).
BATCHABLE = [s for s in SPECS if max((a.ndim for a in s.args(np.random.default_rng(0))), default=0) < 4]


@pytest.mark.parametrize("op", BATCHABLE, ids=[s.name for s in BATCHABLE])
def test_batched_jvp_and_pullback_on_cuda(op):
    """K directions in one pass (batched tangents / cotangents, as the Jacobian analyses use)."""
    from jaclab import _core

    rng = np.random.default_rng(7)
    args, K = op.args(rng), 3

    def flat(xs):
        out = op.f(*xs)
        return list(out) if isinstance(out, (list, tuple)) else [out]

    tans = [rng.standard_normal((K,) + a.shape) for a in args]
    try:
        outs, want = _core.jvp_flat(flat, [jl.array(a) for a in args], [jl.array(t) for t in tans], K)
    except ValueError as e:  # attention, 4-D values: the same refusal on the device
        assert any(m in str(e) for m in ("batch of tangent directions", "at most 4 dimensions")), str(e)
        with pytest.raises(ValueError):
            _core.jvp_flat(flat, [dev(a) for a in args], [dev(t) for t in tans], K)
        return
    _, got = _core.jvp_flat(flat, [dev(a) for a in args], [dev(t) for t in tans], K)
    for a, b in zip(got, want):
        assert_close(host(a), np.asarray(b), **TOL[np.float64])
    cts = [rng.standard_normal((K,) + tuple(o.shape)) for o in outs]
    _, pb = _core.vjp_flat(flat, [jl.array(a) for a in args])
    _, pb_dev = _core.vjp_flat(flat, [dev(a) for a in args])
    try:
        want = pb([jl.array(c) for c in cts], K)
    except ValueError as e:
        assert any(m in str(e) for m in ("batch of", "at most 4 dimensions")), str(e)
        with pytest.raises(ValueError):
            pb_dev([dev(c) for c in cts], K)
        return
    for a, b in zip(pb_dev([dev(c) for c in cts], K), want):
        assert_close(host(a), np.asarray(b), **TOL[np.float64])


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("shape,axes", [((256, 1024), None), ((7, 65537), None), ((2, 3, 128, 128), None),
                                        ((4096, 33), (0,)), ((8, 64, 96), (0, 1)), ((8, 64, 96), (1,)),
                                        ((300, 300), (0,))])
def test_large_sums(shape, axes, dtype, rng):
    """Losses and bias gradients: a full sum (rows first, then their sums) and sums over leading
    axes (one GEMM with a row of ones), against NumPy in float64."""
    x = rng.standard_normal(shape).astype(dtype)
    for keepdims in (False, True):
        got = host(dev(x).sum(axes, keepdims=keepdims))
        want = x.astype(np.float64).sum(axis=axes, keepdims=keepdims)
        assert got.shape == np.shape(want)
        assert_close(got, want, **(dict(rtol=1e-12, atol=1e-13) if dtype == np.float64 else dict(rtol=1e-5, atol=1e-5)))


# ---- GEMM through cuBLAS: transposed views, broadcast batches, 1-D operands, accumulate --------
MATMUL_CASES = [
    ((3, 4), (4, 5), None), ((4, 3), (4, 5), "aT"), ((3, 4), (5, 4), "bT"), ((2, 3, 4), (4, 5), None),
    ((2, 3, 4), (2, 4, 5), None), ((2, 1, 3, 4), (5, 4, 6), None), ((4,), (4, 5), None), ((3, 4), (4,), None),
    ((2, 3, 4, 5), (2, 3, 5, 2), None), ((1, 3, 4), (2, 4, 5), None), ((0, 4), (4, 3), None), ((3, 0), (0, 2), None),
]


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("sa,sb,tr", MATMUL_CASES, ids=[f"{a}@{b}{t or ''}" for a, b, t in MATMUL_CASES])
def test_matmul_layouts(sa, sb, tr, dtype, rng):
    a = rng.standard_normal(sa).astype(dtype)  # "aT"/"bT": stored as given, used transposed (a view)
    b = rng.standard_normal(sb).astype(dtype)
    ta, tb = dev(a), dev(b)
    if tr == "aT":
        a, ta = a.T, ta.T
    if tr == "bT":
        b, tb = b.T, tb.T
    want = a.astype(np.float64) @ b.astype(np.float64)
    assert_close(host(ta @ tb), want, **TOL[dtype])
    bias = rng.standard_normal(want.shape[-1:]).astype(dtype) if want.ndim else None
    if bias is not None and tr is None and len(sb) == 2:  # linear: the GEMM accumulates into the bias
        got = jl.linear(ta, tb, dev(bias))
        assert_close(host(got), want + bias, **TOL[dtype])


# ---- blocks -----------------------------------------------------------------------------------
def _block_cases():
    def mlp(x, W1, b1, W2, b2):
        return jl.sum(jl.tanh(jl.linear(x, W1, b1)) @ W2 + b2) ** 2 / 10

    def attn(q, k, v):
        return jl.sum(jl.attention(q, k, v, causal=True) ** 2)

    def block(x, g, b, Wq, Wo):
        h = jl.layer_norm(x, g, b)
        q = (h @ Wq).reshape(2, 5, 2, 4).transpose(0, 2, 1, 3)
        o = jl.attention(q, q, q).transpose(0, 2, 1, 3).reshape(2, 5, 8) @ Wo
        return jl.sum(jl.gelu(x + o) ** 2) + jl.sum(jl.softmax(x, -1) * x)

    return [
        ("mlp", mlp, [(6, 5), (5, 7), (7,), (7, 3), (3,)]),
        ("attention", attn, [(2, 2, 6, 16), (2, 2, 9, 16), (2, 2, 9, 16)]),
        ("transformer", block, [(2, 5, 8), (8,), (8,), (8, 8), (8, 8)]),
    ]


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("name,f,shapes", _block_cases(), ids=[c[0] for c in _block_cases()])
def test_block_grad_jvp_hvp(name, f, shapes, dtype, rng):
    args = [rng.standard_normal(s).astype(dtype) for s in shapes]
    tans = [rand_like(rng, a, dtype) for a in args]
    a64 = [a.astype(np.float64) for a in args]
    t64 = [t.astype(np.float64) for t in tans]
    argnums = tuple(range(len(args)))
    g_ref = jl.grad(f, argnums=argnums)(*a64)
    _, jv_ref = jl.jvp(f, tuple(a64), tuple(t64))
    h_ref = jl.hvp(f, tuple(a64), tuple(t64))
    g = jl.grad(f, argnums=argnums)(*[dev(a) for a in args])
    _, jv = jl.jvp(f, tuple(dev(a) for a in args), tuple(dev(t) for t in tans))
    h = jl.hvp(f, tuple(dev(a) for a in args), tuple(dev(t) for t in tans))
    tol = TOL[dtype] if dtype == np.float64 else dict(rtol=1e-4, atol=1e-4)
    for x, y in zip(g, g_ref):
        assert_close(host(x), np.asarray(y), what=f"{name} grad", **tol)
    assert_close(host(jv), np.asarray(jv_ref), what=f"{name} jvp", **tol)
    for x, y in zip(jl.tree_flatten(h)[0], jl.tree_flatten(h_ref)[0]):
        assert_close(host(x), np.asarray(y), what=f"{name} hvp", **tol)


# ---- every jl.nn block of test_nn.py: value, grad (params and x), JVP (params) ------------------
@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("name", list(CASES))
def test_nn_block_on_cuda_matches_cpu(name, dtype):
    model, params, x, rng = make_case(name, seed=1)
    params = jl.tree_map(lambda a: np.asarray(a, dtype), params)
    x = np.asarray(x, dtype)
    tangent = jl.tree_map(lambda a: rng.standard_normal(np.shape(a)).astype(dtype), params)
    p64 = jl.tree_map(lambda a: np.asarray(a, np.float64), params)
    t64 = jl.tree_map(lambda a: np.asarray(a, np.float64), tangent)
    on = lambda tree: jl.tree_map(lambda a: jl.array(a, device="cuda"), tree)  # noqa: E731

    def loss(p, x):
        return jl.sum(jl.square(model.apply(p, x)))

    tol = TOL[dtype] if dtype == np.float64 else dict(rtol=1e-4, atol=1e-4)
    assert_close(host(model.apply(on(params), dev(x))), np.asarray(model.apply(p64, x.astype(np.float64))),
                 what=f"{name} value", **tol)
    g = jl.grad(loss, argnums=(0, 1))(on(params), dev(x))
    g_ref = jl.grad(loss, argnums=(0, 1))(p64, x.astype(np.float64))
    for a, b in zip(jl.tree_flatten(g)[0], jl.tree_flatten(g_ref)[0]):
        assert_close(host(a), np.asarray(b), what=f"{name} grad", **tol)
    _, jv = jl.jvp(lambda p: model.apply(p, dev(x)), (on(params),), (on(tangent),))
    _, jv_ref = jl.jvp(lambda p: model.apply(p, x.astype(np.float64)), (p64,), (t64,))
    assert_close(host(jv), np.asarray(jv_ref), what=f"{name} JVP", **tol)


# ---- fused attention: forward, JVP, VJP against the composition and NumPy ----------------------
ATTN_SHAPES = [  # (B, H, T, S, dh)
    (1, 3, 37, 53, 16), (2, 2, 128, 128, 64), (1, 1, 70, 200, 32), (2, 1, 80, 33, 64), (1, 2, 65, 65, 128),
    (1, 2, 9, 12, 8),  # dh = 8: no fused kernel, the composite path on the GPU
]


@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("shape", ATTN_SHAPES, ids=[str(s) for s in ATTN_SHAPES])
def test_fused_attention(shape, dtype, causal, rng):
    B, H, T, S, dh = shape
    q, k, v = (rng.standard_normal(s).astype(dtype) for s in [(B, H, T, dh), (B, H, S, dh), (B, H, S, dh)])
    dq, dk, dv = (rand_like(rng, x, dtype) for x in (q, k, v))
    g = rng.standard_normal((B, H, T, dh)).astype(dtype)
    c64 = [x.astype(np.float64) for x in (q, k, v)]
    t64 = [x.astype(np.float64) for x in (dq, dk, dv)]

    def f(q, k, v):
        return jl.attention(q, k, v, causal=causal)

    tol = TOL[dtype] if dtype == np.float64 else dict(rtol=1e-4, atol=1e-4)
    if not (causal and T > S):  # NumPy reference (rows with no visible key are NaN there)
        assert_close(host(f(*[dev(x) for x in (q, k, v)])), np_attention(*c64, causal=causal), **tol)
    out_ref, jv_ref = jl.jvp(f, tuple(c64), tuple(t64))  # CPU: the unfused composition
    out, jv = jl.jvp(f, tuple(dev(x) for x in (q, k, v)), tuple(dev(x) for x in (dq, dk, dv)))
    out, jv, out_ref, jv_ref = host(out), host(jv), np.asarray(out_ref), np.asarray(jv_ref)
    if causal and T > S:  # queries t < T - S see no key: the output is exactly 0 there, and so is its tangent
        assert np.all(out[:, :, : T - S] == 0) and np.all(jv[:, :, : T - S] == 0)
    assert_close(out, out_ref, what="attention value", **tol)
    assert_close(jv, jv_ref, what="attention JVP", **tol)
    _, pb_ref = jl.vjp(f, *c64)
    _, pb = jl.vjp(f, *[dev(x) for x in (q, k, v)])
    for name, x, y in zip("qkv", pb(dev(g)), pb_ref(g.astype(np.float64))):
        assert_close(host(x), np.asarray(y), what=f"attention VJP d{name}", **tol)
    # Only some tangents (the others symbolic zeros) and only some cotangents.
    _, jv_v = jl.jvp(lambda v: f(dev(q), dev(k), v), (dev(v),), (dev(dv),))
    _, jv_v_ref = jl.jvp(lambda v: f(*c64[:2], v), (c64[2],), (t64[2],))
    assert_close(host(jv_v), np.asarray(jv_v_ref), what="attention JVP (v only)", **tol)
    gq = jl.grad(lambda q: jl.sum(f(q, dev(k), dev(v)) * dev(g)))(dev(q))
    gq_ref = jl.grad(lambda q: jl.sum(f(q, *c64[1:]) * g.astype(np.float64)))(c64[0])
    assert_close(host(gq), np.asarray(gq_ref), what="attention grad q only", **tol)


def test_attention_second_order_uses_the_composition(rng):
    """HVP through attention on the GPU (the fused kernels are first order; rules recompose)."""
    q, k, v = (rng.standard_normal((1, 2, 7, 16)) for _ in range(3))
    t = tuple(rand_like(rng, x) for x in (q, k, v))

    def loss(q, k, v):
        return jl.sum(jl.attention(q, k, v, causal=True) ** 3)

    want = jl.hvp(loss, (q, k, v), t)
    got = jl.hvp(loss, tuple(dev(x) for x in (q, k, v)), tuple(dev(x) for x in t))
    for x, y in zip(jl.tree_flatten(got)[0], jl.tree_flatten(want)[0]):
        assert_close(host(x), np.asarray(y), rtol=1e-10, atol=1e-11)


# ---- Jacobian analyses with the model on the device -------------------------------------------
def test_per_sample_and_layer_jacobians_on_the_device(rng):
    """input_jacobian / layer_jacobians / per_sample_jacobian (both modes) with params and x on
    the device: the passes run there, the results come back as NumPy equal to the CPU ones."""
    model = jl.nn.Sequential(jl.nn.Linear(5, 7), jl.nn.Tanh(), jl.nn.Residual(jl.nn.MLP(7, 6, 7, "gelu")),
                             jl.nn.Linear(7, 3))
    params = model.init(seed=3)
    x = rng.standard_normal((4, 5))
    p_dev = jl.tree_map(lambda a: jl.array(a, device="cuda"), params)
    tol = dict(rtol=1e-10, atol=1e-11)
    want = jl.analysis.input_jacobian(model, params, x)
    got = jl.analysis.input_jacobian(model, p_dev, dev(x))
    assert isinstance(got, np.ndarray) and got.shape == (4, 3, 5)
    assert_close(got, want, **tol)
    for mode in ("fwd", "rev"):
        got = jl.analysis.per_sample_jacobian(lambda h: model.apply(p_dev, h), dev(x), mode=mode, chunk_size=2)
        assert_close(got, want, what=mode, **tol)
    for a, b in zip(jl.analysis.layer_jacobians(model, p_dev, dev(x)), jl.analysis.layer_jacobians(model, params, x)):
        assert_close(a, b, **tol)
    seq = jl.nn.TransformerBlock(8, 2, 16, causal=True)
    sp = seq.init(seed=4)
    xs = rng.standard_normal((2, 5, 8))
    sp_dev = jl.tree_map(lambda a: jl.array(a, device="cuda"), sp)
    assert_close(jl.analysis.input_jacobian(seq, sp_dev, dev(xs), position=-1),
                 jl.analysis.input_jacobian(seq, sp, xs, position=-1), **tol)
    with pytest.raises(ValueError, match="cuda:0"):  # host data with device params: a clear error
        jl.analysis.input_jacobian(model, p_dev, x)
    for mode in ("fwd", "rev"):  # geometric complexity and its gradient (second order) on the device
        assert_close(jl.analysis.geometric_complexity(model, p_dev, dev(x), mode=mode),
                     jl.analysis.geometric_complexity(model, params, x, mode=mode), **tol)
        gc, g = jl.analysis.geometric_complexity_grad(model, p_dev, dev(x), mode=mode)
        gc_ref, g_ref = jl.analysis.geometric_complexity_grad(model, params, x, mode=mode)
        assert_close(gc, gc_ref, **tol)
        for a, b in zip(jl.tree_flatten(g)[0], jl.tree_flatten(g_ref)[0]):
            assert isinstance(a, np.ndarray)
            assert_close(a, b, **tol)


@pytest.mark.parametrize("name", sorted(STRUCTURED))
def test_structured_jacobians_on_the_device(name, rng):
    """Blocks that declare their Jacobian's factors: the products run on the device (one pass,
    engine ops only) and equal the CPU's; the same for geometric complexity's sum of squares."""
    factory, d_in = STRUCTURED[name]
    model = factory()
    params = structured_init(model, 1)
    p_dev = jl.tree_map(lambda a: jl.array(a, device="cuda"), params)
    x = rng.standard_normal((5, d_in))
    got = jl.analysis._structured_jacobian(model, p_dev, dev(x))
    assert isinstance(got, np.ndarray), "the structured path was not taken on the device"
    assert_close(got, jl.analysis._structured_jacobian(model, params, jl.array(x)), rtol=1e-12, atol=1e-13)
    assert_close(got, jl.analysis.per_sample_jacobian(lambda h: model.apply(params, h), x), rtol=1e-10, atol=1e-11)
    sq = jl.analysis._structured_sq_sum(model, p_dev, dev(x))
    assert abs(sq - jl.analysis._structured_sq_sum(model, params, jl.array(x))) <= 1e-12 * sq
    p32 = jl.tree_map(lambda a: jl.array(np.asarray(a, np.float32), device="cuda"), params)
    got32 = jl.analysis._structured_jacobian(model, p32, dev(x, np.float32))
    assert got32.dtype == np.float32
    assert_close(got32, got, **TOL[np.float32])


def test_hessian_analyses_on_the_device(rng):
    """hessian_eigs / hessian_trace / sharpness / modified_loss / lie_bracket with params on the
    device: the HVPs run there, vectors and results are NumPy, equal to the CPU ones."""
    model = jl.nn.MLP(4, 6, 3, "tanh")
    params = model.init(seed=5)
    x, y = rng.standard_normal((8, 4)), rng.integers(0, 3, 8)
    p_dev = jl.tree_map(lambda a: jl.array(a, device="cuda"), params)
    xd, yd = dev(x), jl.array(y, device="cuda")

    def loss_on(xs, ys):
        return lambda p: jl.cross_entropy(model.apply(p, xs), ys)

    cpu, gpu = loss_on(jl.array(x), jl.array(y)), loss_on(xd, yd)
    tol = dict(rtol=1e-9, atol=1e-10)
    ev, _ = jl.analysis.hessian_eigs(gpu, p_dev, k=2, method="dense")
    assert_close(ev, jl.analysis.hessian_eigs(cpu, params, k=2, method="dense")[0], **tol)
    assert_close(jl.analysis.hessian_trace(gpu, p_dev, n_probes=5, seed=1),
                 jl.analysis.hessian_trace(cpu, params, n_probes=5, seed=1), **tol)
    assert_close(jl.analysis.modified_loss(gpu, p_dev, 0.1)[0], jl.analysis.modified_loss(cpu, params, 0.1)[0], **tol)
    half = loss_on(dev(x[:4]), jl.array(y[:4], device="cuda"))
    half_cpu = loss_on(jl.array(x[:4]), jl.array(y[:4]))
    got = jl.analysis.lie_bracket(gpu, half, p_dev)
    want = jl.analysis.lie_bracket(cpu, half_cpu, params)
    for a, b in zip(jl.tree_flatten(got)[0], jl.tree_flatten(want)[0]):
        assert_close(a, b, **tol)


def _spectra_cases():
    A = jl.analysis
    model = jl.nn.Sequential(jl.nn.Linear(4, 6), jl.nn.Tanh(), jl.nn.Linear(6, 3))
    d = jl.tree_map(lambda a: np.ones(a.shape), model.init(seed=1))
    return model, {
        "jacobian_spectrum": lambda P, X: A.jacobian_spectrum(model, P, X),
        "jacobian_spectrum_layer": lambda P, X: A.jacobian_spectrum(model, P, X, layer=0),
        "jacobian_spectrum_pair": lambda P, X: A.jacobian_spectrum(model, P, X, layer=(0, 2)),
        "jacobian_norm": lambda P, X: A.jacobian_norm(model, P, X),
        "jacobian_norm_projections": lambda P, X: A.jacobian_norm(model, P, X, n_projections=3),
        "jacobian_norm_regularizer_grad": lambda P, X: jl.grad(A.jacobian_norm_regularizer(model, X, 2))(P),
        "centroid": lambda P, X: A.centroid(model, P, X),
        "centroid_alignment": lambda P, X: A.centroid_alignment(model, P, X),
        "softmax_radius": lambda P, X: A.softmax_radius(model, P, X, d, labels=np.array([0, 1, 2, 0, 1]))["rho"],
    }


@pytest.mark.parametrize("name", list(_spectra_cases()[1]))
def test_spectra_norms_radius_on_the_device(name, rng):
    model, cases = _spectra_cases()
    params = model.init(seed=1)
    x = rng.standard_normal((5, 4))
    got = cases[name](jl.tree_map(lambda a: jl.array(a, device="cuda"), params), dev(x))
    want = cases[name](params, x)
    for a, b in zip(jl.tree_flatten(got)[0], jl.tree_flatten(want)[0]):
        a = host(a) if isinstance(a, jl.Tensor) else a  # the regulariser's grad stays a device tensor
        assert_close(a, np.asarray(b), rtol=1e-10, atol=1e-11, what=name)


def test_residual_expansion_and_icl_on_the_device(rng):
    tower = jl.nn.Sequential(*[jl.nn.Residual(jl.nn.MLP(4, 5, 4, "tanh"), scale=0.5) for _ in range(3)])
    tp = tower.init(seed=3)
    x = rng.standard_normal((3, 4))
    tp_dev = jl.tree_map(lambda a: jl.array(a, device="cuda"), tp)
    for method in ("paths", "moebius"):
        got = jl.analysis.residual_expansion(tower, tp_dev, dev(x), method=method)
        want = jl.analysis.residual_expansion(tower, tp, x, method=method)
        for key in ("terms", "norms", "output", "remainder"):
            assert_close(got[key], want[key], rtol=1e-10, atol=1e-11, what=f"{method} {key}")
    block = jl.nn.TransformerBlock(4, 2, 6)
    bp = block.init(seed=4)
    bp_dev = jl.tree_map(lambda a: jl.array(a, device="cuda"), bp)
    C, xq = rng.standard_normal((2, 3, 4)), rng.standard_normal((2, 4))
    got, want = jl.analysis.icl_weight_update(block, bp_dev, C, xq), jl.analysis.icl_weight_update(block, bp, C, xq)
    for key in ("dW", "skip", "y_context", "residual"):
        assert_close(got[key], want[key], rtol=1e-9, atol=1e-12, what=f"icl {key}")
    got, want = jl.analysis.icl_dynamics(block, bp_dev, C, xq), jl.analysis.icl_dynamics(block, bp, C, xq)
    assert_close(got["dW"], want["dW"], rtol=1e-10, atol=1e-12)


def test_position_layer_jacobians_on_the_device(rng):
    model = jl.nn.Sequential(jl.nn.TransformerBlock(4, 2, 6), jl.nn.Linear(4, 4), jl.nn.Tanh())
    params = model.init(seed=2)
    x = rng.standard_normal((2, 5, 4))
    p_dev = jl.tree_map(lambda a: jl.array(a, device="cuda"), params)
    for average in (True, False):
        got = jl.analysis.position_layer_jacobians(model, p_dev, dev(x), position=-2, average=average)
        want = jl.analysis.position_layer_jacobians(model, params, x, position=-2, average=average)
        assert_close(got, want, rtol=1e-10, atol=1e-11)


# ---- interop and devices ----------------------------------------------------------------------
def test_to_and_back_is_exact_and_differentiable(rng):
    x = rng.standard_normal((3, 4))
    t = jl.array(x).to("cuda")
    assert t.device == "cuda:0"
    np.testing.assert_array_equal(np.asarray(t.to("cpu")), x)
    g = jl.grad(lambda x: jl.sum(jl.tanh(x.to("cuda")) ** 2))(jl.array(x))
    assert g.device == "cpu"
    assert_close(np.asarray(g), 2 * np.tanh(x) * (1 - np.tanh(x) ** 2), rtol=1e-12, atol=1e-13)
    assert jl.zeros((2, 3), device="cuda").device == "cuda:0"
    assert float(jl.sum(jl.ones((2, 3), device="cuda"))) == 6.0


def test_mixing_devices_is_a_clear_error(rng):
    a = jl.array(rng.standard_normal((3, 4)))
    b = a.to("cuda")
    q = a.reshape(1, 1, 3, 4)
    for f in (lambda: a + b, lambda: b @ a.T, lambda: jl.attention(b.reshape(1, 1, 3, 4), q, q)):
        with pytest.raises(ValueError, match="cpu.*cuda:0|cuda:0.*cpu"):
            f()
    with pytest.raises(ValueError, match="tangent 0 lives on cuda:0 but its primal on cpu"):
        jl.jvp(jl.tanh, (a,), (b,))
    # Host data (NumPy, CPU tensors) given as tangents or cotangents follows its primal / output.
    _, jv = jl.jvp(jl.tanh, (b,), (np.asarray(a),))
    _, pb = jl.vjp(jl.tanh, b)
    assert jv.device == "cuda:0" and pb(np.asarray(a))[0].device == "cuda:0"
    with pytest.raises(ValueError, match="np.asarray"):
        np.asarray(b)
    # Python scalars and 0-d CPU tensors join an op on any device.
    assert_close(host(b * 2.0 + jl.array(1.0)), 2 * np.asarray(a) + 1, rtol=1e-15, atol=0)


@needs_gpu
def test_cupy_zero_copy_both_ways(rng):
    cp = pytest.importorskip("cupy", reason="CuPy not installed")
    x = cp.asarray(rng.standard_normal((4, 5)))
    t = jl.array(x)
    assert t.device == "cuda:0"
    y = cp.from_dlpack(t)
    assert y.data.ptr == x.data.ptr  # the same device memory, no copy either way
    t2 = jl.from_dlpack(x)
    np.testing.assert_array_equal(np.asarray(t2.to("cpu")), cp.asnumpy(x))
    z = cp.from_dlpack(jl.tanh(t) * 3)
    cp.testing.assert_allclose(z, cp.tanh(x) * 3, rtol=1e-14)
    lab = jl.array(cp.asarray([0, 2, 1]))
    assert lab.device == "cuda:0" and lab.dtype == np.int64


@needs_gpu
def test_tf32_is_opt_in(rng):
    assert jl.cuda_allow_tf32() is False
    a = dev(rng.standard_normal((256, 256)), np.float32)
    exact = host(a @ a)
    big = rng.standard_normal((4096, 64)).astype(np.float32)
    try:
        assert jl.cuda_allow_tf32(True) is True
        approx = host(a @ a)
        col_sums = host(dev(big).sum(0))  # sums stay FP32 under TF32 (not routed through the GEMM)
    finally:
        jl.cuda_allow_tf32(False)
    assert_close(col_sums, big.astype(np.float64).sum(0), rtol=1e-5, atol=1e-5)
    ref = np.asarray(a.to("cpu"), np.float64) @ np.asarray(a.to("cpu"), np.float64)
    assert np.max(np.abs(exact - ref)) < 1e-3 < np.max(np.abs(approx - ref))


def test_gpu_example_runs_quick():
    """examples/gpu_attention_jvp.py: exact tangent (vs central differences) and timing, on the GPU
    when there is one, else on the CPU."""
    import pathlib
    import subprocess
    import sys

    script = pathlib.Path(__file__).parent.parent / "examples" / "gpu_attention_jvp.py"
    r = subprocess.run([sys.executable, str(script), "--quick"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "JVP vs central differences" in r.stdout and "value + tangent" in r.stdout, r.stdout


def test_gpu_guide_runs_on_the_device():
    """docs/gpu.md's examples with the device forced to "cuda" (test_docs runs them as written)."""
    import pathlib
    import re

    text = (pathlib.Path(__file__).parent.parent / "docs" / "gpu.md").read_text()
    code = "\n".join(re.findall(r"```python\n(.*?)```", text, flags=re.S))
    line = 'device = "cuda" if jl.cuda_available() else "cpu"'
    assert line in code
    namespace = {"__name__": "__gpu_guide__"}
    exec(compile(code.replace(line, 'device = "cuda"'), "docs/gpu.md", "exec"), namespace)
    assert namespace["grads"][0]["W"].device == "cuda:0" and namespace["J"].shape == (32, 4, 8)
