"""Jacobian alignment and centroids (GrokAlign, papers.md section 11).

XOR of the first two coordinates in p dimensions (the rest is small noise), few training points,
a relu MLP trained by SGD with weight decay, with and without the GrokAlign regulariser
lam * mean_x |J_x f(x)|_F (estimated with one random projection, differentiable:
jl.analysis.jacobian_norm_regularizer). Tracked: held-out accuracy and the centroid alignment
cos(mu(x), x), mu(x) = J_x f(x)^T 1 (one VJP, jl.analysis.centroid_alignment).
Figure: jacobian_alignment.png.

    python examples/analysis_jacobian_alignment.py [--out docs/figures] [--quick]
"""
import numpy as np

import jaclab as jl
from _common import parse, pyplot, save

args = parse(__doc__.splitlines()[0])
A = jl.analysis
p_dim, n_train, eps = 40, 100, 0.05
rng = np.random.default_rng(0)


def xor(n):
    x = np.concatenate([rng.choice([-1.0, 1.0], (n, 2)), eps * rng.standard_normal((n, p_dim - 2))], axis=1)
    return x, (x[:, :1] * x[:, 1:2])


X, Y = xor(n_train)
Xt, Yt = xor(1000)
model = jl.nn.Sequential(jl.nn.Linear(p_dim, 128), jl.nn.ReLU(), jl.nn.Linear(128, 1))
lr, wd = 0.05, 0.01
steps, every = (20, 5) if args.quick else (1500, 50)
runs = {}
for name, lam in (("weight decay", 0.0), ("weight decay + GrokAlign", 0.1)):
    params = model.init(seed=1)
    hist = {"step": [], "acc": [], "align": [], "jnorm": []}
    for n in range(steps + 1):
        if n % every == 0:
            hist["step"].append(n)
            hist["acc"].append(float(np.mean(np.sign(np.asarray(model.apply(params, Xt))) == Yt)))
            hist["align"].append(float(np.mean(np.abs(A.centroid_alignment(model, params, Xt[:200])))))
            hist["jnorm"].append(float(np.mean(A.jacobian_norm(model, params, Xt[:200]))))
        if n == steps:
            break
        R = A.jacobian_norm_regularizer(model, X, n_projections=1, seed=n)
        obj = lambda q: jl.mse(model.apply(q, X), Y) + lam * R(q) if lam else jl.mse(model.apply(q, X), Y)  # noqa
        g = jl.grad(obj)(params)
        params = jl.tree_map(lambda a, b: (1 - lr * wd) * np.asarray(a) - lr * np.asarray(b), params, g)
    runs[name] = hist
    print(f"{name:>26}: held-out accuracy {hist['acc'][-1]:.3f}, centroid alignment {hist['align'][-1]:.3f}, "
          f"|J|_F {hist['jnorm'][-1]:.3g}")

plt = pyplot()
if plt:
    fig, axs = plt.subplots(1, 3, figsize=(13, 3.8))
    for name, h in runs.items():
        axs[0].plot(h["step"], h["acc"], "o-", ms=3, label=name)
        axs[1].plot(h["step"], h["align"], "o-", ms=3, label=name)
        axs[2].plot(h["step"], h["jnorm"], "o-", ms=3, label=name)
    for ax, t in zip(axs, ("held-out accuracy", "centroid alignment mean |cos(mu(x), x)|", "mean |J_x f|_F")):
        ax.set_title(t, fontsize=10)
        ax.set_xlabel("step")
        ax.legend(fontsize=8)
    save(fig, args.out, "jacobian_alignment.png")
