"""Jacobian spectra of deep tanh networks at initialisation (dynamical isometry).

Singular values of the per-sample input-output Jacobian of a deep tanh MLP (width 32), exact
(jl.analysis.jacobian_spectrum), for Gaussian and orthogonal weights with gain g. Small g: the
spectrum collapses towards 0 (vanishing gradients); large g: it spreads over decades; orthogonal
weights with g ~ 1 keep it concentrated near 1 (dynamical isometry), Gaussian ones do not.
The spectrum of one layer's Jacobian (layer=...) is printed too. Figure: jacobian_spectrum.png.

    python examples/analysis_jacobian_spectrum.py [--out docs/figures] [--quick]
"""
import numpy as np

import jaclab as jl
from _common import parse, pyplot, save

args = parse(__doc__.splitlines()[0])
A = jl.analysis
d, depth = 32, (4 if args.quick else 16)
layers = []
for _ in range(depth):
    layers += [jl.nn.Linear(d, d), jl.nn.Tanh()]
model = jl.nn.Sequential(*layers)
rng = np.random.default_rng(0)
x = 0.3 * rng.standard_normal((16 if args.quick else 64, d))


def weights(kind, g):
    p = model.init(seed=1)
    for q in p:
        if q:
            q["W"] = g * (np.linalg.qr(rng.standard_normal((d, d)))[0] if kind == "orthogonal" else q["W"])
    return p


spectra = {}
for kind in ("gaussian", "orthogonal"):
    for g in (0.5, 1.0, 2.0):
        p = weights(kind, g)
        s = A.jacobian_spectrum(model, p, x)  # (B, d), descending
        spectra[(kind, g)] = s
        s_last = A.jacobian_spectrum(model, p, x, layer=-1)  # the last tanh: diagonal, sigma = tanh'
        print(f"{kind:>10} g={g}: sigma(J_x) median {np.median(s):.3g}, max {s.max():.3g}, min {s.min():.3g}; "
              f"last tanh layer sigma in [{s_last.min():.3f}, {s_last.max():.3f}]")

plt = pyplot()
if plt:
    fig, axs = plt.subplots(1, 2, figsize=(11, 4))
    for i, ((kind, g), s) in enumerate(spectra.items()):
        ls = "-" if kind == "orthogonal" else "--"
        v = np.sort(s.ravel())
        axs[0].plot(v, np.linspace(0, 1, v.size), ls, color=f"C{i % 3}", label=f"{kind}, g = {g}")
        axs[1].plot(np.arange(1, d + 1), s.mean(axis=0), ls, color=f"C{i % 3}", label=f"{kind}, g = {g}")
    axs[0].set_xscale("log")
    axs[0].set_xlabel("singular value of J_x (all inputs)")
    axs[0].set_ylabel("cumulative fraction")
    axs[0].set_title(f"{depth}-layer tanh MLP at init: input-output Jacobian")
    axs[1].set_yscale("log")
    axs[1].set_xlabel("index k")
    axs[1].set_ylabel("mean sigma_k")
    axs[1].set_title("mean singular values, descending")
    for ax in axs:
        ax.legend(fontsize=7)
    save(fig, args.out, "jacobian_spectrum.png")
