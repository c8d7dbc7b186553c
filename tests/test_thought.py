"""jaclab.thought: thought vectors / matrices of a prompt for a stack of transformer blocks
(shared/papers.md section 4). The identity: the token-dependent patches of every block,
applied to the prompt-free model, reproduce the full prompt's hidden states exactly (float64)."""
from __future__ import annotations

import numpy as np
import pytest

from jaclab import analysis, nn, thought

EXACT = 1e-12


def stack(L=3, d=8, norm="layer", causal=True, scale=1.0):
    return nn.Sequential(*[nn.TransformerBlock(d, 2, 16, causal=causal, norm=norm, scale=scale) for _ in range(L)])


@pytest.mark.parametrize("norm", ["layer", "rms", None])
@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_token_patches_reproduce_full_prompt(norm, causal, seed):
    rng = np.random.default_rng(seed)
    model = stack(norm=norm, causal=causal, scale=0.7)
    params = model.init(seed)
    I, R = rng.standard_normal((2, 4, 8)), rng.standard_normal((2, 5, 8))
    out = thought.thought_matrices(model, params, I, R, mode="token")
    full = np.asarray(model.apply(params, np.concatenate([I, R], axis=1)))[:, 4:]
    scale = np.abs(full).max()
    assert np.abs(out["outputs_full"] - full).max() <= EXACT * scale
    assert out["residual"].max() <= EXACT * scale
    assert np.abs(out["outputs_none"] - np.asarray(model.apply(params, R))).max() <= EXACT * scale
    # the prompt matters: without the patch the outputs differ
    assert np.abs(out["outputs_none"] - full).max() > 1e-3
    L, B, n, d, h = out["dW"].shape
    assert (L, B, n, d, h) == (3, 2, 5, 8, 16)
    s = np.linalg.svd(out["dW"].reshape(-1, d, h), compute_uv=False)
    assert np.all(s[:, 1] <= EXACT * s[:, 0])  # every token update is rank 1


def test_block_parts_match_block_apply():
    rng = np.random.default_rng(0)
    for norm in ("layer", "rms", None):
        block = nn.TransformerBlock(8, 2, 16, norm=norm, scale=0.5)
        p = block.init(1)
        H = rng.standard_normal((3, 4, 8))
        z, a = thought.block_parts(block, p, H)
        y = z + 0.5 * thought._mlp_out(block, p["mlp"], a, np.asarray(p["mlp"]["W1"]))
        assert np.abs(y - np.asarray(block.apply(p, H))).max() <= EXACT * np.abs(y).max()


def test_first_block_patch_equals_icl_weight_update():
    """One block, one token after the prompt: the patch is icl_weight_update with context I."""
    rng = np.random.default_rng(3)
    block = nn.TransformerBlock(8, 2, 16)
    p = block.init(0)
    I, x = rng.standard_normal((3, 6, 8)), rng.standard_normal((3, 8))
    out = thought.thought_matrices(block, p, I, x[:, None])
    upd = analysis.icl_weight_update(block, p, I, x)
    assert np.abs(out["dW"][0, :, 0] - upd["dW"]).max() <= EXACT * np.abs(upd["dW"]).max()
    assert np.abs(out["deltas"][0, :, 0] - upd["skip"]).max() <= EXACT * np.abs(upd["skip"]).max()
    assert np.abs(out["outputs_full"][:, 0] - upd["y_context"]).max() <= EXACT * np.abs(upd["y_context"]).max()


@pytest.mark.parametrize("pool", ["sample", "batch"])
def test_single_token_thought_matrix_is_the_token_update(pool):
    rng = np.random.default_rng(4)
    model = stack(L=2)
    params = model.init(2)
    B = 2 if pool == "sample" else 1
    I, R = rng.standard_normal((B, 3, 8)), rng.standard_normal((B, 1, 8))
    out = thought.thought_matrices(model, params, I, R, mode="condensed", pool=pool)
    mats = out["matrices"] if pool == "sample" else out["matrices"][:, None]
    vecs = out["vectors"] if pool == "sample" else out["vectors"][:, None]
    assert np.abs(mats - out["dW"][:, :, 0]).max() <= 1e-10 * np.abs(out["dW"]).max()
    assert np.abs(vecs - out["deltas"][:, :, 0]).max() <= EXACT * np.abs(out["deltas"]).max()
    # with one token the condensed patch is exact too
    assert out["residual"].max() <= 1e-10 * np.abs(out["outputs_full"]).max()


@pytest.mark.parametrize("weights", ["inverse_norm", "uniform"])
@pytest.mark.parametrize("lam", [0.0, 0.3])
def test_condensed_patch_is_the_least_squares_solution(weights, lam):
    rng = np.random.default_rng(5)
    model = stack(L=2)
    params = model.init(1)
    I, R = rng.standard_normal((2, 4, 8)), rng.standard_normal((2, 12, 8))
    out = thought.thought_matrices(model, params, I, R, mode="condensed", lam=lam, weights=weights)
    # vectors are the mean of the token shifts (of the greedy, condensed-patched states)
    assert np.abs(out["vectors"] - out["deltas"].mean(axis=2)).max() <= EXACT
    # block 0 sees the unpatched inputs: recompute its normal equations independently
    b0, p0 = model.layers[0], params[0]
    W1 = np.asarray(p0["mlp"]["W1"])
    _, a_f = thought.block_parts(b0, p0, np.concatenate([I, R], axis=1))
    _, abar = thought.block_parts(b0, p0, R)
    for b in range(2):
        a, r = abar[b], (a_f[b, 4:] - abar[b]) @ W1
        w = 1 / np.sum(a * a, axis=1) if weights == "inverse_norm" else np.ones(len(a))
        G = (a * w[:, None]).T @ a + lam * np.eye(8)
        # LayerNorm makes every a_t orthogonal to the ones vector, so G is singular at lam = 0:
        # the solution is the minimum-norm one (pseudo-inverse)
        D = np.linalg.pinv(G, rcond=1e-12) @ ((a * w[:, None]).T @ r)
        assert np.abs(out["matrices"][0, b] - D).max() <= 1e-9 * np.abs(D).max()
    # the condensed patches are reusable: apply_thought reproduces the patched outputs
    y = thought.apply_thought(model, params, R, out["vectors"], out["matrices"])
    assert np.abs(y - out["outputs_patched"]).max() <= EXACT * np.abs(y).max()


def test_condensed_patch_closes_part_of_the_gap():
    rng = np.random.default_rng(6)
    model = stack(L=2)
    params = model.init(0)
    I, R = rng.standard_normal((4, 4, 8)), rng.standard_normal((4, 6, 8))
    out = thought.thought_matrices(model, params, I, R, mode="condensed")
    gap_none = np.abs(out["outputs_none"] - out["outputs_full"]).mean()
    gap_cond = np.abs(out["outputs_patched"] - out["outputs_full"]).mean()
    assert gap_cond < gap_none


def test_errors():
    model = stack(L=1)
    p = model.init(0)
    I, R = np.zeros((1, 2, 8)), np.ones((1, 3, 8))
    with pytest.raises(TypeError):
        thought.thought_matrices(nn.MLP(8, 8), {}, I, R)
    with pytest.raises(ValueError, match="mode"):
        thought.thought_matrices(model, p, I, R, mode="nope")
    with pytest.raises(ValueError, match="inputs"):
        thought.thought_matrices(model, p, I, np.ones((1, 3, 7)))
    with pytest.raises(ValueError, match="lam"):
        thought.thought_matrices(model, p, I, R, lam=-1.0)


def test_analysis_entry_point():
    import jaclab as jl

    rng = np.random.default_rng(7)
    model = stack(L=2)
    params = model.init(0)
    I, R = rng.standard_normal((2, 3, 8)), rng.standard_normal((2, 4, 8))
    a = jl.analysis.thought_matrices(model, params, I, R, mode="condensed", lam=0.1)
    b = thought.thought_matrices(model, params, I, R, mode="condensed", lam=0.1)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
