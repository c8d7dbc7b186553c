"""Closed-loop activation steering with LQR over exact layer Jacobians (papers.md section 10).

A stack of transformer blocks; a perturbation of the last token's input is the error to
remove. The exact Jacobians of each layer at the last position (averaged over a batch,
jl.analysis.position_layer_jacobians) define linear dynamics e_(l+1) = A_l e_l + u_l;
jl.analysis.lqr_gains gives the Riccati gains K_l, and the control u_l = -K_l e_l is added to
the last token's hidden state after layer l, using the measured error of the real (nonlinear)
network. Figure: lqr_steering.png (error norm per layer, open vs closed loop).

    python examples/analysis_lqr_steering.py [--out docs/figures] [--quick]
"""
import numpy as np

import jaclab as jl
from _common import parse, pyplot, save

args = parse(__doc__.splitlines()[0])
A = jl.analysis
L, d = (3, 8) if args.quick else (8, 16)
stack = jl.nn.Sequential(*[jl.nn.TransformerBlock(d, 2, 2 * d, norm=None, scale=0.5) for _ in range(L)])
sp = stack.init(seed=0)
rng = np.random.default_rng(0)
x = rng.standard_normal((64, 6, d))
Ajac = A.position_layer_jacobians(stack, sp, x, position=-1)  # (L, d, d)
ref = [np.asarray(h) for h in stack.apply_layers(sp, x)]
x_pert = x.copy()
x_pert[:, -1] += 0.5 * rng.standard_normal((64, d))


def run(K):
    h, errs, ctrl = x_pert, [np.linalg.norm(x_pert[:, -1] - x[:, -1], axis=1).mean()], []
    for l, (layer, p) in enumerate(zip(stack.layers, sp)):
        e = h[:, -1] - ref[l][:, -1]
        h = np.array(np.asarray(layer.apply(p, h)))
        if K is not None:
            u = -e @ K[l].T
            h[:, -1] += u
            ctrl.append(np.linalg.norm(u, axis=1).mean())
        errs.append(np.linalg.norm(h[:, -1] - ref[l + 1][:, -1], axis=1).mean())
    return np.array(errs), np.array(ctrl)


open_err, _ = run(None)
results = {"open loop": open_err}
for r in (0.1, 1.0):
    K, S = A.lqr_gains(Ajac, Q=1.0, R=r, S_T=10.0)
    err, ctrl = run(K)
    results[f"LQR, R = {r}"] = err
    print(f"R={r}: final error {err[-1]:.3g} (open loop {open_err[-1]:.3g}), mean control norm {ctrl.mean():.3g}")

plt = pyplot()
if plt:
    fig, ax = plt.subplots(figsize=(6, 4.2))
    for name, e in results.items():
        ax.semilogy(range(L + 1), e, "o-", label=name)
    ax.set_xlabel("layer")
    ax.set_ylabel("mean |h_l(perturbed) - h_l(reference)| at the last token")
    ax.set_title(f"steering a {L}-block transformer back to its reference")
    ax.legend()
    save(fig, args.out, "lqr_steering.png")
