"""Implicit gradient regularisation: GD follows the modified loss L + (h/4)|grad L|^2 (papers.md section 12).

One GD step theta - h grad L(theta) is compared with the exact gradient flows of L and of the
modified loss L~ = L + (h/4)|grad L|^2 (jl.analysis.modified_loss gives L~ and its exact
gradient, reverse-over-reverse) run for time h (fine RK4). The error against the flow of L is
O(h^2); against the flow of L~ it is O(h^3). Figure: modified_loss.png (log-log, with fitted slopes).

    python examples/analysis_modified_loss.py [--out docs/figures] [--quick]
"""
import numpy as np

import jaclab as jl
from _common import parse, pyplot, save

args = parse(__doc__.splitlines()[0])
A = jl.analysis
X, Y = jl.data.teacher_student(64, 4, 8, 1, seed=0)
model = jl.nn.Sequential(jl.nn.Linear(4, 8), jl.nn.Tanh(), jl.nn.Linear(8, 1))
theta0, shapes, tree = jl.optim.flatten_params(model.init(seed=2))
unflat = lambda v: jl.optim.unflatten_params(v, shapes, tree)  # noqa: E731
loss = lambda p: jl.mse(model.apply(p, X), Y)  # noqa: E731


def grad_L(v):
    return jl.optim.flatten_params(jl.grad(loss)(unflat(v)))[0]


def flow(field, v, t, substeps):
    dt = t / substeps
    for _ in range(substeps):
        k1 = field(v)
        k2 = field(v + dt / 2 * k1)
        k3 = field(v + dt / 2 * k2)
        k4 = field(v + dt * k3)
        v = v + dt / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
    return v


hs = np.geomspace(0.005, 0.08, 4 if args.quick else 7)
err_L, err_mod = [], []
for h in hs:
    gd = theta0 - h * grad_L(theta0)
    mod_field = lambda v, h=h: -jl.optim.flatten_params(A.modified_loss(loss, unflat(v), h)[1])[0]  # noqa: E731
    n_sub = 4 if args.quick else 16
    err_L.append(np.linalg.norm(gd - flow(lambda v: -grad_L(v), theta0, h, n_sub)))
    err_mod.append(np.linalg.norm(gd - flow(mod_field, theta0, h, n_sub)))
slope_L = np.polyfit(np.log(hs), np.log(err_L), 1)[0]
slope_mod = np.polyfit(np.log(hs), np.log(err_mod), 1)[0]
print(f"|GD step - flow of L|  ~ h^{slope_L:.2f}  (expect 2)")
print(f"|GD step - flow of L~| ~ h^{slope_mod:.2f}  (expect 3)")
value, _ = A.modified_loss(loss, unflat(theta0), 0.1)
print(f"L = {loss(unflat(theta0)).item():.5f}, L~(h=0.1) = {value:.5f}")

plt = pyplot()
if plt:
    fig, ax = plt.subplots(figsize=(6, 4.2))
    ax.loglog(hs, err_L, "o-", label=f"flow of L (slope {slope_L:.2f})")
    ax.loglog(hs, err_mod, "s-", label=f"flow of L + (h/4)|grad L|^2 (slope {slope_mod:.2f})")
    ax.set_xlabel("learning rate h")
    ax.set_ylabel("|GD step - flow at time h|")
    ax.set_title("implicit gradient regularisation")
    ax.legend()
    save(fig, args.out, "modified_loss.png")
