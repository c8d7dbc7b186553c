"""The convergence radius of the softmax cross-entropy along a step (papers.md section 9, "ghosts of softmax").

Full-batch GD on the spirals MLP at a large learning rate. At every step ONE parameter-space JVP
(jl.analysis.softmax_radius) gives the batch radius rho = pi / max_x (max_k a_k - min_k a_k),
a = J_z v, and the normalised step r = |step| / rho: for r > 1 the step leaves the region where
the loss's Taylor series along it converges. Clipping every update to the radius
(jl.analysis.clip_to_radius) keeps r <= 1. Figure: softmax_radius.png.

    python examples/analysis_softmax_radius.py [--out docs/figures] [--quick]
"""
import numpy as np

import jaclab as jl
from _common import parse, pyplot, save

args = parse(__doc__.splitlines()[0])
A = jl.analysis
X, Y = jl.data.spirals(300, 3, seed=0)
model = jl.nn.Sequential(jl.nn.Linear(2, 32), jl.nn.Tanh(), jl.nn.Linear(32, 32), jl.nn.Tanh(), jl.nn.Linear(32, 3))
loss = lambda p: jl.cross_entropy(model.apply(p, X), Y)  # noqa: E731
steps = 15 if args.quick else 300
runs = {}
for name, lr, clip in (("GD lr=1", 1.0, False), ("GD lr=8", 8.0, False), ("GD lr=8, clipped to rho", 8.0, True)):
    p = model.init(0)
    hist = {"loss": [], "r": [], "rho": []}
    for _ in range(steps):
        lv, g = jl.value_and_grad(loss)(p)
        step = jl.tree_map(lambda a: -lr * np.asarray(a), g)
        rad = A.softmax_radius(model, p, X, step, labels=Y)
        if clip:
            step = A.clip_to_radius(step, rad["rho_batch"])
        hist["loss"].append(float(np.asarray(lv)))
        hist["r"].append(min(rad["r"], 1.0) if clip else rad["r"])  # r of the step actually taken
        hist["rho"].append(rad["rho_batch"])
        p = jl.tree_map(lambda a, s: np.asarray(a) + s, p, step)
    runs[name] = hist
    print(f"{name:>24}: final loss {hist['loss'][-1]:.4f}, steps taken with r > 1: {np.sum(np.array(hist['r']) > 1 + 1e-12)}"
          f"/{steps}, max loss increase {np.max(np.diff(hist['loss'])):.3g}")

plt = pyplot()
if plt:
    fig, axs = plt.subplots(1, 2, figsize=(11, 4))
    for name, h in runs.items():
        axs[0].semilogy(h["loss"], label=name, lw=1)
        axs[1].semilogy(h["r"], label=name, lw=1)
    axs[1].axhline(1.0, color="k", ls="--", lw=1)
    axs[0].set_title("training loss")
    axs[1].set_title("normalised step r = |step| / rho (dashed: r = 1)")
    for ax in axs:
        ax.set_xlabel("step")
        ax.legend(fontsize=8)
    save(fig, args.out, "softmax_radius.png")
