"""In-context learning as an implicit rank-1 weight update (papers.md section 3).

For a TransformerBlock, the output at a query x with context C equals the context-free output
with the MLP's first weight W1 replaced by W1 + dW (rank 1) plus a skip-path shift
(jl.analysis.icl_weight_update); consuming the context token by token gives a sequence of
updates W_i (jl.analysis.icl_dynamics), online GD on a linear loss. The example is in-context
linear regression data (jl.data.icl_regression) through an embedding, at random weights.
Figure: icl_weight_update.png (the identity's residual in float64 / float32, and |W_i - W_(i-1)|).

    python examples/analysis_icl_weight_update.py [--out docs/figures] [--quick]
"""
import numpy as np

import jaclab as jl
from _common import parse, pyplot, save

args = parse(__doc__.splitlines()[0])
A = jl.analysis
n_ctx, d = (8, 16) if args.quick else (40, 16)
X, _ = jl.data.icl_regression(16, n_context=n_ctx, d=4, seed=0)  # (16, n_ctx + 1, 5)
E = np.random.default_rng(0).standard_normal((5, d)) / np.sqrt(5)  # a fixed linear embedding
H = X @ E
block = jl.nn.TransformerBlock(d, 2, 64)
res = {}
for dt in (np.float64, np.float32):
    bp = block.init(seed=0, dtype=dt)
    upd = A.icl_weight_update(block, bp, H[:, :-1].astype(dt), H[:, -1].astype(dt))
    res[np.dtype(dt).name] = upd["residual"] / np.abs(upd["y_context"]).max(axis=1)
    s = np.linalg.svd(upd["dW"].astype(np.float64), compute_uv=False)
    print(f"{np.dtype(dt).name}: max relative residual {res[np.dtype(dt).name].max():.2e}; "
          f"rank-1: max sigma_2/sigma_1 = {(s[:, 1] / s[:, 0]).max():.1e}")
dyn = A.icl_dynamics(block, block.init(seed=0), H[:, :-1], H[:, -1])
steps = dyn["step_norms"]  # (n_ctx, B)
print("mean |W_i - W_(i-1)|_F for i = 1, 2, 4, 8, ...:",
      ", ".join(f"{steps[i - 1].mean():.3g}" for i in (1, 2, 4, 8, 16, 32) if i <= n_ctx))

plt = pyplot()
if plt:
    fig, axs = plt.subplots(1, 2, figsize=(11, 4))
    for k, (name, r) in enumerate(res.items()):
        axs[0].semilogy(np.arange(len(r)), r, "o", label=name)
    axs[0].set_xlabel("query")
    axs[0].set_ylabel("|block(C, x) - (block_{W1+dW}(x) + shift)| (relative)")
    axs[0].set_title("the identity holds to rounding")
    axs[0].legend()
    i = np.arange(1, n_ctx + 1)
    axs[1].loglog(i, steps, color="C0", alpha=0.2, lw=0.8)
    axs[1].loglog(i, steps.mean(axis=1), "o-", color="C3", ms=3, label="mean over queries")
    axs[1].loglog(i, steps.mean(axis=1)[0] / i, "k:", label="1 / i")
    axs[1].set_xlabel("context tokens consumed i")
    axs[1].set_ylabel("|W_i - W_(i-1)|_F")
    axs[1].set_title("implicit learning dynamics")
    axs[1].legend()
    save(fig, args.out, "icl_weight_update.png")
