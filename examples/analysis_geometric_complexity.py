"""Geometric complexity during training (papers.md section 6).

GC = mean_x |J_x logits(x)|_F^2, exact (jl.analysis.geometric_complexity). Two runs of SGD on
the spirals data from the same initialisation and the same batches: plain, and with GC as a
regulariser (loss + lam * GC on the batch; its exact gradient is reverse-over-forward,
jl.analysis.geometric_complexity_grad). Figure: geometric_complexity.png.

    python examples/analysis_geometric_complexity.py [--out docs/figures] [--quick]
"""
import numpy as np

import jaclab as jl
from _common import parse, pyplot, save

args = parse(__doc__.splitlines()[0])
A = jl.analysis
X, Y = jl.data.spirals(600, 3, seed=0)
Xt, Yt = jl.data.spirals(600, 3, seed=1)  # held-out points of the same distribution
model = jl.nn.Sequential(jl.nn.Linear(2, 32), jl.nn.Tanh(), jl.nn.Linear(32, 32), jl.nn.Tanh(), jl.nn.Linear(32, 3))
p0 = model.init(0)
steps, every = (30, 10) if args.quick else (1500, 50)
lr, lam = 0.3, 2e-3
batches = jl.optim.batches(600, 32, steps, seed=0)
xs = X[::5]

curves = {}
for name, reg in (("SGD", 0.0), (f"SGD + {lam:g} GC", lam)):
    p, hist = p0, {"step": [], "gc": [], "loss": [], "test_acc": []}
    for n in range(steps + 1):
        if n % every == 0:
            out = np.asarray(model.apply(p, Xt))
            hist["step"].append(n)
            hist["gc"].append(A.geometric_complexity(model, p, xs))
            hist["loss"].append(float(jl.cross_entropy(model.apply(p, X), Y).item()))
            hist["test_acc"].append(float(np.mean(out.argmax(1) == Yt)))
        if n == steps:
            break
        xb, yb = X[batches[n]], Y[batches[n]]
        g = jl.grad(lambda q: jl.cross_entropy(model.apply(q, xb), yb))(p)
        if reg:
            _, ggc = A.geometric_complexity_grad(model, p, xb)
            g = jl.tree_map(lambda a, b: np.asarray(a) + reg * np.asarray(b), g, ggc)
        p = jl.tree_map(lambda a, b: np.asarray(a) - lr * np.asarray(b), p, g)
    curves[name] = hist
    print(f"{name:>16}: GC {hist['gc'][0]:.3g} -> {hist['gc'][-1]:.3g}, loss {hist['loss'][-1]:.4f}, "
          f"test accuracy {hist['test_acc'][-1]:.3f}")

plt = pyplot()
if plt:
    fig, axs = plt.subplots(1, 3, figsize=(13, 3.8))
    for name, h in curves.items():
        axs[0].plot(h["step"], h["gc"], "o-", ms=3, label=name)
        axs[1].plot(h["step"], h["loss"], "o-", ms=3, label=name)
        axs[2].plot(h["step"], h["test_acc"], "o-", ms=3, label=name)
    for ax, t in zip(axs, ("geometric complexity", "training loss", "held-out accuracy")):
        ax.set_title(t)
        ax.set_xlabel("step")
        ax.legend()
    axs[1].set_yscale("log")
    save(fig, args.out, "geometric_complexity.png")
