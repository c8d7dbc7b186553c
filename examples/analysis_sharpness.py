"""Hessian eigenvalues and sharpness vs the 2/lr stability threshold (edge of stability).

Full-batch GD on 200 spirals points with three learning rates; every few steps the top Hessian
eigenvalue of the training loss (Lanczos on exact HVPs, jl.analysis.sharpness) is compared with
2/lr, the largest curvature GD with step lr can follow. A Hutchinson trace estimate
(jl.analysis.hessian_trace) is printed at the end. Figure: sharpness.png.

    python examples/analysis_sharpness.py [--out docs/figures] [--quick]
"""
import numpy as np

import jaclab as jl
from _common import parse, pyplot, save

args = parse(__doc__.splitlines()[0])
A = jl.analysis
X, Y = jl.data.spirals(200, 3, seed=0)
model = jl.nn.Sequential(jl.nn.Linear(2, 32), jl.nn.Tanh(), jl.nn.Linear(32, 32), jl.nn.Tanh(), jl.nn.Linear(32, 3))
p0 = model.init(0)
loss_at = lambda p: jl.cross_entropy(model.apply(p, X), Y)  # noqa: E731
steps, every = (20, 5) if args.quick else (1200, 30)
runs = {}
for lr in (0.25, 1.0, 4.0):
    r = jl.optim.train(model, p0, "cross_entropy", (X, Y), jl.optim.SGD(lr), steps=steps, batch_size=200, seed=0,
                       record_every=every, trajectory=True)
    lam = [A.sharpness(loss_at, p, lr, iters=(8 if args.quick else 20))[0] for p in r.trajectory]
    runs[lr] = (np.arange(len(lam)) * every, np.array(lam), r.losses)
    print(f"lr={lr}: 2/lr={2 / lr:.3g}, sharpness {lam[0]:.3g} -> max {max(lam):.3g} -> final {lam[-1]:.3g}, "
          f"final loss {r.losses[-1]:.4f}")
    if lr == 1.0:
        top3 = A.hessian_eigs(loss_at, r.params, k=3)
        tr, se = A.hessian_trace(loss_at, r.params, n_probes=(10 if args.quick else 100), return_std=True)
        print(f"   at the end: top-3 Hessian eigenvalues {np.round(top3, 4)}, trace {tr:.4g} +- {se:.2g}")

plt = pyplot()
if plt:
    fig, axs = plt.subplots(1, 2, figsize=(11, 4))
    for i, (lr, (st, lam, losses)) in enumerate(runs.items()):
        axs[0].plot(st, lam, "o-", ms=3, color=f"C{i}", label=f"lr = {lr}")
        axs[0].axhline(2 / lr, ls="--", color=f"C{i}", lw=1)
        axs[1].plot(np.arange(1, len(losses) + 1), losses, color=f"C{i}", label=f"lr = {lr}")
    axs[0].set_yscale("log")
    axs[0].set_xlabel("step")
    axs[0].set_ylabel("lambda_max (dashed: 2 / lr)")
    axs[0].set_title("sharpness during full-batch GD")
    axs[1].set_yscale("log")
    axs[1].set_xlabel("step")
    axs[1].set_ylabel("training loss")
    for ax in axs:
        ax.legend()
    save(fig, args.out, "sharpness.png")
