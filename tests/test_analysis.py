"""jaclab.analysis: per-sample Jacobians, layer Jacobians, causal structure.

Reference: the full ``jl.jacobian`` of the batch function (its per-sample diagonal blocks),
and products of layer Jacobians computed here with NumPy. Self-contained (no conftest).
"""
from __future__ import annotations

import numpy as np
import pytest

import jaclab as jl
from jaclab import analysis, nn

SEEDS = [0, 1, 2]
EXACT_RTOL = 1e-10
FD_EPS = 1e-6
FD_RTOL = 1e-7


def npf(t) -> np.ndarray:
    return np.array(np.asarray(t), dtype=np.float64)


def assert_close(got, want, rtol=EXACT_RTOL, what=""):
    got, want = npf(got), npf(want)
    assert got.shape == want.shape, f"{what}: shape {got.shape} != {want.shape}"
    scale = max(1.0, float(np.max(np.abs(want)))) if want.size else 1.0
    err = np.abs(got - want)
    tol = rtol * (scale + np.abs(want))
    if not np.all(err <= tol):
        i = np.unravel_index(int(np.argmax(err - tol)), err.shape)
        raise AssertionError(f"{what}: max err {float(np.max(err)):.3e}; at {i}: got {got[i]!r}, want {want[i]!r}")


def perturb(rng, params):
    return jl.tree_map(lambda p: npf(p) + 0.3 * rng.standard_normal(np.shape(p)), params)


def seq_init(model, seed):
    """Per-layer init (avoids depending on Sequential.init of nested blocks, tested in test_nn)."""
    return [layer.init(seed + i) for i, layer in enumerate(model.layers)]


def full_jacobian(model, params, x, mode="auto"):
    return jl.jacobian(lambda h: model.apply(params, h), mode=mode)(x)


def diag_blocks(J, B, out_nd, in_nd):
    """J: (B, *out, B, *in) -> (B, *out, *in) per-sample blocks."""
    return np.stack([J[(b,) + (slice(None),) * out_nd + (b,)] for b in range(B)])


def offdiag_max(J, B, out_nd):
    m = 0.0
    for b in range(B):
        for c in range(B):
            if b != c:
                m = max(m, float(np.max(np.abs(J[(b,) + (slice(None),) * out_nd + (c,)]))))
    return m


VECTOR_MODELS = {
    "linear": (lambda: nn.Linear(3, 4), 3),
    "mlp_gelu": (lambda: nn.MLP(3, 5, 2), 3),
    "mlp_tanh_wide_out": (lambda: nn.MLP(2, 4, 5, "tanh"), 2),
    "layernorm": (lambda: nn.LayerNorm(4), 4),
    "rmsnorm": (lambda: nn.RMSNorm(3), 3),
    "residual_mlp": (lambda: nn.Residual(nn.MLP(3, 4, activation="relu"), 0.5), 3),
    "seq_vec": (lambda: nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.LayerNorm(4), nn.MLP(4, 5, 2, "gelu_tanh"),
                                      nn.Sigmoid()), 3),
}

SEQ_MODELS = {
    "attn_causal": (lambda: nn.Attention(4, 2, causal=True), 4),
    "attn_full": (lambda: nn.Attention(4, 2, causal=False), 4),
    "tb_causal": (lambda: nn.TransformerBlock(4, 2, 6), 4),
    "tb_full_rms": (lambda: nn.TransformerBlock(4, 1, 5, causal=False, norm="rms", scale=0.5), 4),
    "tb_causal_none": (lambda: nn.TransformerBlock(4, 2, 5, norm=None), 4),
    "mlp_on_seq": (lambda: nn.MLP(4, 3, 2), 4),
    "seq_seq": (lambda: nn.Sequential(nn.TransformerBlock(4, 2, 5), nn.Linear(4, 3), nn.GELU(),
                                      nn.Residual(nn.Attention(3, 1), 0.5)), 4),
}


def make(models, name, seed, B, T=None):
    factory, d_in = models[name]
    model = factory()
    rng = np.random.default_rng(seed)
    init = seq_init(model, seed) if isinstance(model, nn.Sequential) else model.init(seed)
    params = perturb(rng, init)
    x = rng.standard_normal((B, d_in) if T is None else (B, T, d_in))
    return model, params, x


# ---- input_jacobian vs the full Jacobian --------------------------------------------------


@pytest.mark.parametrize("name", list(VECTOR_MODELS))
@pytest.mark.parametrize("seed", SEEDS)
def test_input_jacobian_vector(name, seed):
    B = 3
    model, params, x = make(VECTOR_MODELS, name, seed, B)
    y = npf(model.apply(params, x))
    d_out, d_in = y.shape[1], x.shape[1]
    J = analysis.input_jacobian(model, params, x)
    assert isinstance(J, np.ndarray) and J.shape == (B, d_out, d_in) and J.dtype == np.float64
    full = full_jacobian(model, params, x)
    assert full.shape == (B, d_out, B, d_in)
    assert_close(J, diag_blocks(full, B, 1, 1), what="input_jacobian vs diag of jl.jacobian")
    assert offdiag_max(full, B, 1) == 0.0  # samples do not interact
    for mode in ("fwd", "rev"):
        assert_close(analysis.per_sample_jacobian(lambda h: model.apply(params, h), x, mode=mode), J,
                     what=f"per_sample_jacobian mode={mode}")
    # a column against central finite differences
    e = np.zeros_like(x)
    e[:, 0] = 1.0
    fd = (npf(model.apply(params, x + FD_EPS * e)) - npf(model.apply(params, x - FD_EPS * e))) / (2 * FD_EPS)
    assert_close(J[:, :, 0], fd, FD_RTOL, what="input_jacobian column vs FD")


@pytest.mark.parametrize("name", list(SEQ_MODELS))
@pytest.mark.parametrize("seed", SEEDS)
def test_input_jacobian_sequence(name, seed):
    B, T = 2, 3
    model, params, x = make(SEQ_MODELS, name, seed, B, T)
    y = npf(model.apply(params, x))
    d_out, d = y.shape[2], x.shape[2]
    J = analysis.input_jacobian(model, params, x)
    assert J.shape == (B, T, d_out, T, d) and J.dtype == np.float64
    full = full_jacobian(model, params, x)
    assert full.shape == (B, T, d_out, B, T, d)
    assert_close(J, diag_blocks(full, B, 2, 2), what="input_jacobian vs diag of jl.jacobian")
    assert offdiag_max(full, B, 2) == 0.0
    for mode in ("fwd", "rev"):
        assert_close(analysis.per_sample_jacobian(lambda h: model.apply(params, h), x, mode=mode), J,
                     what=f"mode={mode}")

    # position= slices, positive and negative
    for p in list(range(T)) + [-1, -T]:
        Jp = analysis.input_jacobian(model, params, x, position=p)
        assert Jp.shape == (B, d_out, T, d)
        assert_close(Jp, J[:, p], what=f"position={p}")


# ---- causal structure ------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["attn_causal", "attn_full", "tb_causal", "tb_full_rms", "tb_causal_none",
                                  "seq_seq", "mlp_on_seq"])
@pytest.mark.parametrize("seed", SEEDS)
def test_causal_block_lower_triangular(name, seed):
    B, T = 2, 4
    model, params, x = make(SEQ_MODELS, name, seed, B, T)
    J = analysis.input_jacobian(model, params, x)
    layers = model.layers if isinstance(model, nn.Sequential) else [model]
    mixes = any(isinstance(m, (nn.Attention, nn.TransformerBlock)) or
                (isinstance(m, nn.Residual) and isinstance(m.block, nn.Attention)) for m in layers)
    causal = all(getattr(m, "causal", getattr(getattr(m, "block", None), "causal", True)) for m in layers)
    for t in range(T):
        for s in range(T):
            blk = J[:, t, :, s, :]
            if s > t and causal:
                assert np.all(blk == 0.0), f"J[:, {t}, :, {s}, :] not exactly 0 (max {np.max(np.abs(blk)):.3e})"
            elif s == t:
                assert np.max(np.abs(blk)) > 1e-6
            elif mixes:  # s < t always, s > t when not causal
                assert np.max(np.abs(blk)) > 1e-6, f"J[:, {t}, :, {s}, :] unexpectedly 0"
            else:  # position-wise model: no cross-time terms at all
                assert np.all(blk == 0.0)
    # the position= slice shows the same structure
    for p in range(T):
        Jp = analysis.input_jacobian(model, params, x, position=p)
        if causal:
            assert np.all(Jp[:, :, p + 1:, :] == 0.0)


# ---- layer Jacobians ------------------------------------------------------------------------


def _flat(J, B):
    half = (J.ndim - 1) // 2
    return J.reshape(B, int(np.prod(J.shape[1:1 + half])), int(np.prod(J.shape[1 + half:])))


LAYERED = {
    "vec": (lambda: nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 5), nn.LayerNorm(5),
                                  nn.MLP(5, 3, 2, "gelu")), (3, 3)),
    "vec_single": (lambda: nn.Sequential(nn.MLP(3, 4, 2)), (2, 3)),
    "seq": (lambda: nn.Sequential(nn.TransformerBlock(4, 2, 5), nn.Linear(4, 3), nn.GELUTanh(),
                                  nn.Residual(nn.Attention(3, 1, causal=False), 0.5), nn.RMSNorm(3)), (2, 3, 4)),
}


@pytest.mark.parametrize("name", list(LAYERED))
@pytest.mark.parametrize("seed", SEEDS)
def test_layer_jacobians(name, seed):
    factory, xshape = LAYERED[name]
    model = factory()
    rng = np.random.default_rng(seed)
    params = perturb(rng, seq_init(model, seed))
    x = rng.standard_normal(xshape)
    B = xshape[0]
    hs = [npf(h) for h in model.apply_layers(params, x)]
    L = len(model.layers)
    assert len(hs) == L + 1

    Js = analysis.layer_jacobians(model, params, x)
    assert len(Js) == L
    for k, J in enumerate(Js):
        assert J.shape == (B,) + hs[k + 1].shape[1:] + hs[k].shape[1:], (k, J.shape)
        # each equals the input Jacobian of that layer alone at h_k
        assert_close(J, analysis.input_jacobian(model.layers[k], params[k], hs[k]), what=f"layer {k}")

    # chained product == input Jacobian
    full = analysis.input_jacobian(model, params, x)
    acc = np.broadcast_to(np.eye(_flat(Js[0], B).shape[2]), (B,) + (_flat(Js[0], B).shape[2],) * 2)
    for J in Js:
        acc = np.matmul(_flat(J, B), acc)
    assert_close(acc.reshape(full.shape), full, what="chained layer Jacobians vs input_jacobian")

    # every pair (l, m), with and without precomputed Jacobians
    for l in range(L + 1):
        for m in range(l, L + 1):
            Jlm = analysis.layer_jacobian(model, params, x, l, m, jacobians=Js)
            assert Jlm.shape == (B,) + hs[m].shape[1:] + hs[l].shape[1:], (l, m, Jlm.shape)
            n_l = int(np.prod(hs[l].shape[1:]))
            want = np.broadcast_to(np.eye(n_l), (B, n_l, n_l))
            for J in Js[l:m]:
                want = np.matmul(_flat(J, B), want)
            assert_close(Jlm, want.reshape(Jlm.shape), what=f"layer_jacobian({l}, {m})")
            if m > l:
                sub = nn.Sequential(*model.layers[l:m])
                assert_close(Jlm, analysis.input_jacobian(sub, params[l:m], hs[l]),
                             what=f"layer_jacobian({l}, {m}) vs sub-model")
            if (l, m) in ((0, L), (1, L - 1), (L, L)) and l <= m:
                assert_close(analysis.layer_jacobian(model, params, x, l, m), Jlm, what="recomputed")
    assert_close(analysis.layer_jacobian(model, params, x, 0, L, jacobians=Js), full, what="(0, L) == input")


def test_layer_jacobian_bad_args():
    model = nn.Sequential(nn.Linear(2, 3), nn.Tanh())
    params = seq_init(model, 0)
    x = np.ones((2, 2))
    for l, m in ((1, 0), (-1, 1), (0, 3)):
        with pytest.raises(ValueError, match="layer_jacobian"):
            analysis.layer_jacobian(model, params, x, l, m)
    with pytest.raises(TypeError, match="Sequential"):
        analysis.layer_jacobians(nn.Linear(2, 3), nn.Linear(2, 3).init(0), x)


def test_input_jacobian_bad_args():
    m = nn.Attention(4, 2)
    p = m.init(0)
    x = np.random.default_rng(0).standard_normal((1, 3, 4))
    for pos in (3, -4):
        with pytest.raises(ValueError, match="position"):
            analysis.input_jacobian(m, p, x, position=pos)
    lin = nn.Linear(3, 2)
    with pytest.raises(ValueError, match="position"):
        analysis.input_jacobian(lin, lin.init(0), np.ones((2, 3)), position=0)
    with pytest.raises(ValueError, match="mode"):
        analysis.per_sample_jacobian(lambda h: h, np.ones((2, 2)), mode="both")
    with pytest.raises(ValueError, match="batch"):
        analysis.per_sample_jacobian(lambda h: h, np.float64(1.0))


def test_input_jacobian_float32():
    model = nn.TransformerBlock(4, 2, 6)
    p32, p64 = model.init(0, np.float32), model.init(0, np.float64)
    x = np.random.default_rng(0).standard_normal((2, 3, 4))
    J32 = analysis.input_jacobian(model, p32, x.astype(np.float32))
    J64 = analysis.input_jacobian(model, p64, x)
    assert J32.dtype == np.float32 and J64.dtype == np.float64
    assert np.max(np.abs(J32 - J64)) <= 1e-5 * max(1.0, float(np.max(np.abs(J64))))


def test_per_sample_jacobian_results_are_writable_and_private():
    """Forward mode hands the engine's result memory to NumPy (no copy) only when nothing else
    holds it: the result is writable, and writing to it changes nothing else."""
    rng = np.random.default_rng(0)
    model = jl.nn.Sequential(jl.nn.Linear(5, 5), jl.nn.Tanh(), jl.nn.Linear(5, 5))
    params = model.init(seed=1)
    x = rng.standard_normal((4, 5))
    J1 = jl.analysis.input_jacobian(model, params, x)  # n_in == n_out: forward mode, one pass
    J2 = jl.analysis.input_jacobian(model, params, x)
    assert J1.flags.writeable and np.array_equal(J1, J2)
    J1[:] = 0.0
    assert np.array_equal(jl.analysis.input_jacobian(model, params, x), J2)
    several = jl.analysis.per_sample_jacobian(lambda h: model.apply(params, h), x, mode="fwd", chunk_size=2)
    assert several.flags.writeable and np.allclose(several, J2, rtol=0, atol=1e-15)


def test_release_to_numpy_only_takes_unshared_tensors():
    t = jl.array(np.arange(6.0)) * 2.0  # a fresh result: nothing else holds it
    a = jl._core._release_to_numpy(t)
    assert a is not None and a.flags.writeable and list(a) == [0, 2, 4, 6, 8, 10]
    u = jl.array(np.arange(6.0)) * 2.0
    view = jl.reshape(u, (2, 3))  # shares u's memory
    assert jl._core._release_to_numpy(u) is None
    assert np.array_equal(np.asarray(view), [[0, 2, 4], [6, 8, 10]])
    frozen = np.asarray(jl.array(np.arange(3.0)) * 1.0)  # read-only memory of another tensor
    assert jl._core._release_to_numpy(jl.array(frozen)) is None  # a wrap: never handed out writable


# ---- structured per-sample Jacobians (blocks that declare their factors) -------------------

STRUCTURED = {  # name: (model factory, d_in); each declares its Jacobian as factors
    "linear": (lambda: nn.Linear(6, 4), 6),
    "activation": (lambda: nn.GELUTanh(), 5),
    "mlp_narrow_out": (lambda: nn.MLP(9, 7, 3, "gelu"), 9),
    "mlp_wide_out": (lambda: nn.MLP(3, 7, 8, "relu"), 3),  # input side first, then transposed
    "residual_tanh": (lambda: nn.Residual(nn.MLP(6, 10, 6, "tanh"), 1 / 16), 6),
    "residual_sigmoid_mlp": (lambda: nn.Residual(nn.MLP(5, 3, 5, "sigmoid"), 0.7), 5),
    "residual_linear": (lambda: nn.Residual(nn.Linear(4, 4), 2.5), 4),
    "seq_mlp": (lambda: nn.Sequential(nn.Linear(7, 6), nn.Tanh(), nn.Linear(6, 6), nn.Sigmoid(),
                                      nn.Linear(6, 3)), 7),
    "seq_activation_first": (lambda: nn.Sequential(nn.Tanh(), nn.ReLU(), nn.Linear(4, 5), nn.GELU()), 4),
    "seq_one_residual": (lambda: nn.Sequential(nn.Residual(nn.MLP(4, 6, 4, "gelu"), 0.5)), 4),
    "residual_stack": (lambda: nn.Sequential(*[nn.Residual(nn.MLP(5, 7, 5, "tanh"), 0.25) for _ in range(3)]), 5),
    "residual_in_chain": (lambda: nn.Sequential(nn.Residual(nn.MLP(3, 4, activation="tanh"), 0.5), nn.Tanh()), 3),
    "residual_of_residual": (lambda: nn.Residual(nn.Residual(nn.Linear(3, 3), 0.5), 0.5), 3),
    "residual_of_mlp_chain": (lambda: nn.Residual(nn.Sequential(nn.Tanh(), nn.Linear(4, 4), nn.GELU()), 1.5), 4),
    # narrow readout after residual blocks: the residuals go through the readout's rows
    "residual_stack_readout": (lambda: nn.Sequential(nn.Residual(nn.MLP(6, 8, 6, "gelu"), 0.5), nn.Residual(
        nn.MLP(6, 8, 6, "tanh"), 0.5), nn.Linear(6, 2)), 6),
    # wide output: the input side first, residuals through the running product or formed
    "residual_stack_wide_out": (lambda: nn.Sequential(nn.Linear(2, 5), nn.Residual(nn.MLP(5, 3, 5, "tanh"), 0.5),
                                                      nn.Tanh(), nn.Residual(nn.Linear(5, 5), 2.0)), 2),
}

UNSTRUCTURED = {  # the analyses take basis sweeps for these
    "layernorm_in_chain": (lambda: nn.Sequential(nn.Linear(3, 4), nn.LayerNorm(4)), 3),
    "residual_of_layernorm": (lambda: nn.Sequential(nn.Linear(3, 3), nn.Residual(nn.LayerNorm(3), 0.5)), 3),
    "rmsnorm": (lambda: nn.RMSNorm(3), 3),
}


def _init(model, seed, dtype=np.float64):
    params = perturb(np.random.default_rng(seed + 100), model.init(seed))
    return jl.tree_map(lambda p: np.asarray(p, dtype), params)


@pytest.mark.parametrize("name", list(STRUCTURED))
@pytest.mark.parametrize("seed", SEEDS)
def test_structured_jacobian_equals_basis_sweeps_and_fd(name, seed):
    factory, d_in = STRUCTURED[name]
    model = factory()
    rng = np.random.default_rng(seed)
    B = int(rng.integers(1, 6))
    params, x = _init(model, seed), rng.standard_normal((B, d_in))
    S = analysis._structured_jacobian(model, params, jl.array(x))
    assert S is not None, "the structured path was not taken"
    y = npf(model.apply(params, x))
    assert S.shape == (B, y.shape[1], d_in) and S.dtype == np.float64 and S.flags.writeable
    for mode in ("fwd", "rev"):  # the engine's basis sweeps: an independent path
        assert_close(S, analysis.per_sample_jacobian(lambda h: model.apply(params, h), x, mode=mode),
                     what=f"structured vs basis sweeps ({mode})")
    assert_close(analysis.input_jacobian(model, params, x), S, 0.0, what="input_jacobian takes it")
    for j in range(d_in):  # every column against central differences
        e = np.zeros_like(x)
        e[:, j] = 1.0
        fd = (npf(model.apply(params, x + FD_EPS * e)) - npf(model.apply(params, x - FD_EPS * e))) / (2 * FD_EPS)
        assert_close(S[:, :, j], fd, FD_RTOL, what=f"column {j} vs FD")


@pytest.mark.parametrize("name", list(STRUCTURED))
def test_structured_jacobian_float32(name):
    factory, d_in = STRUCTURED[name]
    model = factory()
    x = np.random.default_rng(3).standard_normal((4, d_in))
    p64 = _init(model, 3)
    S32 = analysis._structured_jacobian(model, _init(model, 3, np.float32), jl.array(x.astype(np.float32)))
    S64 = analysis._structured_jacobian(model, p64, jl.array(x))
    assert S32.dtype == np.float32
    assert np.max(np.abs(S32 - S64)) <= 2e-6 * max(1.0, float(np.max(np.abs(S64))))


@pytest.mark.parametrize("name", list(UNSTRUCTURED))
def test_unstructured_blocks_take_basis_sweeps(name):
    factory, d_in = UNSTRUCTURED[name]
    model = factory()
    params = _init(model, 0)
    x = np.random.default_rng(0).standard_normal((3, d_in))
    assert analysis._structured_jacobian(model, params, jl.array(x)) is None
    full = full_jacobian(model, params, x)
    assert_close(analysis.input_jacobian(model, params, x), diag_blocks(full, 3, 1, 1), what=name)


def test_structured_jacobian_not_for_sequences_or_mixed_dtypes():
    mlp = nn.MLP(3, 4, 3, "tanh")
    p = _init(mlp, 0)
    x = np.random.default_rng(0).standard_normal((2, 5, 3))
    assert analysis._structured_jacobian(mlp, p, jl.array(x)) is None  # (B, T, d): basis sweeps
    assert analysis.input_jacobian(mlp, p, x).shape == (2, 5, 3, 5, 3)
    lin = nn.Linear(3, 2)
    p32 = _init(lin, 0, np.float32)
    assert analysis._structured_jacobian(lin, p32, jl.array(x[:, 0])) is None
    with pytest.raises(TypeError, match="dtype"):
        analysis.input_jacobian(lin, p32, x[:, 0])


WIDE_HIDDEN = {  # hidden layers much wider than the result per sample
    "mlp": (lambda: nn.MLP(3, 20, 2, "tanh"), 3),
    "residual": (lambda: nn.Residual(nn.MLP(3, 20, 3, "gelu"), 0.5), 3),
    "seq_wide_out": (lambda: nn.Sequential(nn.Linear(2, 16), nn.Tanh(), nn.Linear(16, 5)), 2),
    "residual_stack": (lambda: nn.Sequential(nn.Residual(nn.MLP(3, 20, 3, "tanh"), 0.5), nn.Linear(3, 2),
                                             nn.Residual(nn.MLP(2, 9, 2, "relu"), 0.5)), 3),
}


@pytest.mark.parametrize("name", list(WIDE_HIDDEN))
def test_structured_jacobian_in_sample_chunks(name, monkeypatch):
    """Where an intermediate would outgrow both the result and the chunk budget, samples are
    taken in chunks (here with the budget at one element): the same numbers."""
    factory, d_in = WIDE_HIDDEN[name]
    model = factory()
    params, x = _init(model, 1), np.random.default_rng(1).standard_normal((7, d_in))
    whole = analysis._structured_jacobian(model, params, jl.array(x))
    chunks = set()
    rows = analysis._rows
    monkeypatch.setattr(analysis, "_rows", lambda mats, lo, hi: chunks.add((lo, hi)) or rows(mats, lo, hi))
    monkeypatch.setattr(analysis, "_CHUNK_ELEMENTS", 1)
    chunked = analysis._structured_jacobian(model, params, jl.array(x))
    chunks = sorted(chunks)
    assert len(chunks) > 1 and chunks[0][0] == 0 and chunks[-1][1] == 7, chunks
    assert all(a[1] == b[0] for a, b in zip(chunks, chunks[1:])), chunks
    assert_close(chunked, whole, 0.0, what="chunked")
    full = full_jacobian(model, params, x)
    assert_close(chunked, diag_blocks(full, 7, 1, 1), what="chunked vs jl.jacobian")


def test_layer_jacobians_structured_residual_stack():
    """W3's shape in small: every block's Jacobian is I + s W2^T diag(tanh') W1^T, checked
    against the formula written out in NumPy."""
    rng = np.random.default_rng(5)
    d, h, s, B = 6, 9, 1 / 16, 4
    model = nn.Sequential(*[nn.Residual(nn.MLP(d, h, d, "tanh"), scale=s) for _ in range(3)])
    params = [_init(layer, i) for i, layer in enumerate(model.layers)]
    x = rng.standard_normal((B, d))
    hs = [npf(v) for v in model.apply_layers(params, x)]
    Js = analysis.layer_jacobians(model, params, x)
    for k, (J, p) in enumerate(zip(Js, params)):
        z = hs[k] @ p["W1"] + p["b1"]
        want = np.eye(d) + s * np.einsum("ij,bj,jk->bki", p["W1"], 1 - np.tanh(z) ** 2, p["W2"])
        assert_close(J, want, what=f"block {k}")


@pytest.mark.parametrize("seed", range(4))
def test_structured_residual_stack_keeps_float32_accuracy(seed):
    """Through 16 residual blocks only the correction s P X carries GEMM rounding (as in the
    sweeps): float32 within 1e-6 of float64 (relative to the largest entry). Forming I + s X and
    multiplying it in gave 2-3e-6 here; the sweeps give 3.5-4.5e-7."""
    model = nn.Sequential(*[nn.Residual(nn.MLP(64, 64, 64, "tanh"), 1 / 16) for _ in range(16)])
    p64 = model.init(seed)
    p32 = jl.tree_map(lambda a: np.asarray(a, np.float32), p64)
    x = np.random.default_rng(seed).standard_normal((8, 64))
    J64 = analysis.input_jacobian(model, p64, x)
    J32 = analysis._structured_jacobian(model, p32, jl.array(x.astype(np.float32)))
    assert J32 is not None and J32.dtype == np.float32
    assert np.abs(J32 - J64).max() <= 1e-6 * np.abs(J64).max()


@pytest.mark.parametrize("name", ["linear", "mlp_narrow_out", "residual_tanh", "seq_mlp", "residual_stack"])
def test_structured_jacobian_bad_input_gives_the_blocks_error(name):
    factory, d_in = STRUCTURED[name]
    model = factory()
    params, x = _init(model, 0), np.ones((2, d_in + 1))
    with pytest.raises(ValueError) as from_apply:
        model.apply(params, x)
    with pytest.raises(ValueError) as from_jacobian:
        analysis.input_jacobian(model, params, x)
    assert str(from_jacobian.value) == str(from_apply.value)


GC_STRUCTURED = dict(STRUCTURED, **{  # plus input layers wider than their outputs: the Gram path
    "mlp_gram": (lambda: nn.Sequential(nn.Linear(9, 4), nn.Tanh(), nn.Linear(4, 4), nn.GELU(), nn.Linear(4, 2)), 9),
    "mlp_block_gram": (lambda: nn.MLP(12, 5, 3, "tanh"), 12),
})


@pytest.mark.parametrize("name", list(GC_STRUCTURED))
@pytest.mark.parametrize("seed", SEEDS)
def test_structured_geometric_complexity_equals_the_sweeps(name, seed):
    factory, d_in = GC_STRUCTURED[name]
    model = factory()
    rng = np.random.default_rng(seed)
    params, x = _init(model, seed), rng.standard_normal((int(rng.integers(1, 7)), d_in))
    total = analysis._structured_sq_sum(model, params, jl.array(x))
    assert total is not None, "the structured path was not taken"
    J = analysis.per_sample_jacobian(lambda h: model.apply(params, h), x)
    want = float(np.sum(J.reshape(x.shape[0], -1) ** 2))
    assert abs(total - want) <= 1e-12 * want
    got = analysis.geometric_complexity(model, params, x)
    assert abs(got - want / x.shape[0]) <= 1e-12 * want
    for mode in ("fwd", "rev"):  # the sweeps themselves
        assert abs(analysis.geometric_complexity(model, params, x, mode=mode) - got) <= 1e-12 * want


def test_structured_geometric_complexity_uses_the_gram_matrix_and_chunks(monkeypatch):
    # a 30-wide layer outgrows the (2, 9) per-sample result: chunks; the 9 -> 4 input layer: Gram
    model = nn.Sequential(nn.Linear(9, 4), nn.Tanh(), nn.Linear(4, 30), nn.GELU(), nn.Linear(30, 2))
    params, x = _init(model, 4), np.random.default_rng(4).standard_normal((9, 9))
    whole = analysis._structured_sq_sum(model, params, jl.array(x))
    shapes = []
    matmul = analysis._core.matmul
    monkeypatch.setattr(analysis._core, "matmul", lambda a, b: shapes.append((tuple(a.shape), tuple(b.shape)))
                        or matmul(a, b))
    monkeypatch.setattr(analysis, "_CHUNK_ELEMENTS", 1)
    chunked = analysis._structured_sq_sum(model, params, jl.array(x))
    assert ((4, 9), (9, 4)) in shapes  # G = W1^T W1, formed once
    assert all(b[-1] != 9 for _, b in shapes[1:])  # no per-sample product reaches the 9 inputs
    assert sum(1 for a, b in shapes if b == (4, 4) and a[0] < 9) > 1  # several chunks
    assert abs(chunked - whole) <= 1e-12 * whole
    J = analysis.per_sample_jacobian(lambda h: model.apply(params, h), x)
    assert abs(whole - float(np.sum(J ** 2))) <= 1e-12 * whole


def test_structured_jacobian_one_chunk_when_intermediates_fit(monkeypatch):
    """The chunk size counts feature widths only: many samples of a narrow block go in one pass
    (its memory then becomes the result) even with no extra budget."""
    model = nn.Residual(nn.MLP(4, 4, 4, "tanh"), 0.5)
    params, x = _init(model, 0), np.random.default_rng(0).standard_normal((50, 4))
    chunks = set()
    rows = analysis._rows
    monkeypatch.setattr(analysis, "_rows", lambda mats, lo, hi: chunks.add((lo, hi)) or rows(mats, lo, hi))
    monkeypatch.setattr(analysis, "_CHUNK_ELEMENTS", 1)
    J = analysis._structured_jacobian(model, params, jl.array(x))
    assert chunks == set()  # one pass over all samples: the factors are not sliced
    assert_close(J, analysis.per_sample_jacobian(lambda h: model.apply(params, h), x), what="one chunk")


@pytest.mark.parametrize("n", [1, 2, 35, 200])
def test_tridiagonal_eigh_matches_numpy(n):
    """The Lanczos matrix's eigenpairs (LAPACK dstev in jaclab's own OpenBLAS) against
    numpy.linalg.eigh of the dense matrix: values, orthonormal vectors, reconstruction."""
    from jaclab import _core

    rng = np.random.default_rng(n)
    d, e = rng.standard_normal(n), rng.standard_normal(n - 1)
    T = np.diag(d) + np.diag(e, 1) + np.diag(e, -1)
    w, Z = _core._tridiagonal_eigh(d, e)
    scale = max(np.abs(T).max(), 1.0)
    np.testing.assert_allclose(w, np.linalg.eigvalsh(T), rtol=0, atol=1e-13 * n * scale)
    assert np.all(np.diff(w) >= 0)
    np.testing.assert_allclose(Z.T @ Z, np.eye(n), rtol=0, atol=1e-13 * n)
    np.testing.assert_allclose(Z @ np.diag(w) @ Z.T, T, rtol=0, atol=1e-13 * n * scale)
    with pytest.raises(ValueError, match="offdiag must have n - 1"):
        _core._tridiagonal_eigh(d, np.zeros(n))
    with pytest.raises(ValueError, match="float64"):
        _core._tridiagonal_eigh(d.astype(np.float32), e)


@pytest.mark.parametrize("shape", [(16, 40, 40), (5, 10, 30), (4, 30, 10), (3, 1, 7), (0, 4, 4), (2, 0, 3)])
def test_singular_values_match_numpy(shape):
    """jacobian_spectrum's batched singular values (LAPACK dgesdd in jaclab's OpenBLAS, samples
    side by side on the pool) against numpy.linalg.svd; the input is left untouched."""
    from jaclab import _core

    a = np.random.default_rng(len(shape) + shape[0]).standard_normal(shape)
    keep = a.copy()
    s = _core._singular_values(a)
    want = np.linalg.svd(a, compute_uv=False)
    assert s.shape == want.shape
    np.testing.assert_allclose(s, want, rtol=0, atol=1e-13 * max(1.0, float(np.abs(want).max(initial=0.0))))
    np.testing.assert_array_equal(a, keep)
    with pytest.raises(ValueError, match="float64"):
        _core._singular_values(a.astype(np.float32))
    with pytest.raises(ValueError, match="count, m, n"):
        _core._singular_values(np.zeros((3, 3)))
