"""Residual expansion: path-order contributions and output growth vs depth (papers.md section 5).

Left: random relu residual towers x_k = x_(k-1) + lam f_k(x_(k-1)) (He init, no normalisation):
mean |F(x)|/|x| vs depth n for lam = 1, 1/sqrt(n), 1/n: exponential growth without scaling.
Right: the exact decomposition of a linear tower's output into the contributions of the paths
through m blocks (jl.analysis.residual_expansion; C(n, m) paths of order m), which sums back to
the output. Figure: residual_expansion.png.

    python examples/analysis_residual_expansion.py [--out docs/figures] [--quick]
"""
import math

import numpy as np

import jaclab as jl
from _common import parse, pyplot, save

args = parse(__doc__.splitlines()[0])
A = jl.analysis
d = 32
depths = [1, 2, 4, 8] if args.quick else [1, 2, 4, 8, 16, 32, 64, 128]
rng = np.random.default_rng(0)
x = rng.standard_normal((64, d))
scalings = {"lam = 1": lambda n: 1.0, "lam = 1/sqrt(n)": lambda n: 1 / math.sqrt(n), "lam = 1/n": lambda n: 1 / n}
growth = {k: [] for k in scalings}
for n in depths:
    base = jl.nn.Sequential(*[jl.nn.Residual(jl.nn.MLP(d, d, d, "relu")) for _ in range(n)]).init(seed=n)
    he = [dict(p, W1=p["W1"] * math.sqrt(2), W2=p["W2"] * math.sqrt(2)) for p in base]
    for k, lam in scalings.items():
        tower = jl.nn.Sequential(*[jl.nn.Residual(jl.nn.MLP(d, d, d, "relu"), lam(n)) for _ in range(n)])
        y = np.asarray(tower.apply(he, x))
        growth[k].append(float(np.mean(np.linalg.norm(y, axis=1) / np.linalg.norm(x, axis=1))))
for k, v in growth.items():
    print(f"{k:>16}: " + ", ".join(f"n={n}: {g:.3g}" for n, g in zip(depths, v)))

n, dl = (8, 16) if args.quick else (16, 16)
xl = rng.standard_normal((32, dl))
orders = {}
for k, lam in scalings.items():
    tower = jl.nn.Sequential(*[jl.nn.Residual(jl.nn.Linear(dl, dl), lam(n)) for _ in range(n)])
    tp = [dict(p, b=np.zeros(dl)) for p in tower.init(seed=1)]
    ex = A.residual_expansion(tower, tp, xl)
    orders[k] = (ex["norms"] / np.linalg.norm(xl, axis=1)).mean(axis=1)
    print(f"{k:>16}: linear tower n={n}, orders sum back to the output: max |remainder| = "
          f"{np.abs(ex['remainder']).max():.1e}")

plt = pyplot()
if plt:
    fig, axs = plt.subplots(1, 2, figsize=(11, 4))
    for k, v in growth.items():
        axs[0].loglog(depths, v, "o-", label=k)
    axs[0].set_xlabel("depth n")
    axs[0].set_ylabel("mean |F(x)| / |x|")
    axs[0].set_title("relu residual towers (He init)")
    for k, v in orders.items():
        axs[1].semilogy(range(n + 1), v, "o-", label=k)
    axs[1].semilogy(range(n + 1), [math.comb(n, m) for m in range(n + 1)], "k:", label="C(n, m) paths")
    axs[1].set_xlabel("path order m")
    axs[1].set_ylabel("mean |e_m| / |x|")
    axs[1].set_title(f"linear tower, n = {n}: contributions by order")
    for ax in axs:
        ax.legend(fontsize=8)
    save(fig, args.out, "residual_expansion.png")
