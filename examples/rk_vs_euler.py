#!/usr/bin/env python
"""RK4 vs Euler (= gradient descent) at equal gradient evaluations, and at learning rates where
Euler diverges (docs/optim_tutorial.md, "Reproduction b"; papers.md section 2).

A tanh MLP (10-32-1) fitted with the mean squared error to ``jl.data.teacher_student`` targets,
full batch (so that each method is a deterministic ODE solver of the gradient flow and
divergence is not noise). One RK4 step costs 4 gradient evaluations, one Euler step 1: every
run gets the same budget of E gradient evaluations (E steps of Euler, E/4 of RK4).

1. Loss against gradient evaluations for both methods at a learning rate where both are stable
   and at one where Euler diverges and RK4 does not.
2. A learning-rate sweep: the final loss after E evaluations; the largest stable learning rate
   of each method (bisection; "stable" = the final loss is finite and below the initial one)
   next to the linear-stability limits 2/lambda and 2.785/lambda at the initial sharpness lambda
   (top Hessian eigenvalue, power iteration with ``jl.hvp``). Their ratio is 1.39 on a quadratic.

    python examples/rk_vs_euler.py [--quick] [--out docs/figures]

Writes rk_vs_euler.png; prints the numbers quoted in the tutorial and ``RESULT {json}``.
"""
from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np

import jaclab as jl
from _common import save_png

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_OUT = os.path.join(HERE, os.pardir, "docs", "figures")
STAGES = {"euler": 1, "rk4": 4}


def sharpness(model, params, X, Y, iters=60):
    """Top Hessian eigenvalue of the full-batch loss at params (power iteration, jl.hvp)."""
    theta, shapes, tree = jl.optim.flatten_params(params)
    f = lambda p: jl.mse(model.apply(p, X), Y)  # noqa: E731
    v = np.random.default_rng(0).standard_normal(theta.size)
    lam = 0.0
    for _ in range(iters):
        v /= np.linalg.norm(v)
        Hv = jl.optim.flatten_params(jl.hvp(f, (params,), (jl.optim.unflatten_params(v, shapes, tree),))[0])[0]
        lam, v = float(v @ Hv), Hv
    return lam


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="small budget and sweep (for the tests)")
    ap.add_argument("--out", default=DEFAULT_OUT, help="folder for the PNG (default docs/figures)")
    args = ap.parse_args(argv)
    t_start = time.perf_counter()
    n, E, n_sweep, n_bisect = (128, 400, 6, 6) if args.quick else (256, 2000, 16, 12)
    X, Y = jl.data.teacher_student(n, 10, 32, 1, noise=0.05, seed=0)
    model = jl.nn.MLP(10, 32, 1, "tanh")
    params = model.init(1)
    lam = sharpness(model, params, X, Y)

    def train(method, h):
        with np.errstate(all="ignore"):
            r = jl.optim.train(model, params, "mse", (X, Y), jl.optim.RK(method, h), steps=E // STAGES[method],
                               batch_size=n, seed=0)
        # full batch: losses[k] = L(theta_k); append the loss of the final iterate
        last = float(np.asarray(jl.mse(model.apply(r.params, X), Y))) if np.all(np.isfinite(jl.optim.flatten_params(r.params)[0])) else np.inf
        losses = np.append(r.losses, last)
        assert r.grad_evals == E
        return losses

    def stable(method, h):
        L = train(method, h)
        return bool(np.isfinite(L[-1]) and L[-1] < L[0])

    def largest_stable(method, lo, hi):
        assert stable(method, lo) and not stable(method, hi), (method, lo, hi)
        for _ in range(n_bisect):  # geometric bisection
            mid = np.sqrt(lo * hi)
            lo, hi = (mid, hi) if stable(method, mid) else (lo, mid)
        return lo, hi

    hs = np.geomspace(0.1, 2.0, n_sweep)
    sweep = {m: [float(train(m, h)[-1]) for h in hs] for m in STAGES}
    limits = {m: largest_stable(m, 0.1, 3.0) for m in STAGES}
    h_ok = 0.4
    h_bad = float(np.sqrt(limits["euler"][1] * limits["rk4"][0]))  # between the two limits
    curves = {(m, h): train(m, h) for m in STAGES for h in (h_ok, h_bad)}
    best = {m: (float(np.nanmin(np.where(np.isfinite(sweep[m]), sweep[m], np.nan))),
                float(hs[int(np.nanargmin(np.where(np.isfinite(sweep[m]), sweep[m], np.nan)))])) for m in STAGES}

    res = {
        "setup": dict(n=n, budget_grad_evals=E, model="MLP(10, 32, 1, tanh)", batch="full"),
        "initial_loss": float(curves[("euler", h_ok)][0]),
        "sharpness": lam,
        "linear_limits": {"euler": 2 / lam, "rk4": 2.785293563405282 / lam},
        "largest_stable_lr": {m: float(v[0]) for m, v in limits.items()},
        "first_unstable_lr": {m: float(v[1]) for m, v in limits.items()},
        "stable_lr_ratio": float(limits["rk4"][0] / limits["euler"][0]),
        "h_ok": h_ok,
        "h_bad": h_bad,
        "final_loss": {f"{m}@{h:.3g}": float(curves[(m, h)][-1]) for m in STAGES for h in (h_ok, h_bad)},
        "best_over_sweep": {m: {"loss": v[0], "lr": v[1]} for m, v in best.items()},
        "sweep": {"lr": hs.tolist(), **{m: [x if np.isfinite(x) else None for x in v] for m, v in sweep.items()}},
    }
    print(f"MLP 10-32-1 tanh, teacher-student n={n}, full batch, budget {E} gradient evaluations per run")
    print(f"initial loss {res['initial_loss']:.4f}, sharpness lambda = {lam:.3f}: 2/lambda = {2 / lam:.3f}, "
          f"2.785/lambda = {2.785 / lam:.3f}")
    for m in STAGES:
        print(f"{m:5s}: largest stable lr in [{limits[m][0]:.3f}, {limits[m][1]:.3f}); "
              f"best final loss over the sweep {best[m][0]:.2e} at lr {best[m][1]:.3g}")
    print(f"ratio of the largest stable lrs rk4 / euler = {res['stable_lr_ratio']:.2f} (quadratic theory 1.39)")
    for k, v in res["final_loss"].items():
        print(f"final loss {k}: {v:.3e}")

    try:
        import matplotlib
    except ImportError:
        print("matplotlib is not installed: no figure (pip install 'jaclab[plots]')")
    else:
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        plt.rcParams.update({"font.size": 9, "legend.fontsize": 8})
        fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
        ax = axes[0]
        for (m, h), L in curves.items():
            ev = np.arange(len(L)) * STAGES[m]
            ok = np.isfinite(L) & (L < 1e3)
            ax.semilogy(ev[ok], L[ok], color="C0" if m == "euler" else "C3", ls="-" if h == h_ok else "--",
                        label=f"{m} lr={h:.3g}" + ("" if np.isfinite(L[-1]) and L[-1] < L[0] else " (diverges)"))
        ax.set_xlabel("gradient evaluations")
        ax.set_ylabel("full-batch loss")
        ax.set_title("equal gradient evaluations (RK4: 4 per step)")
        ax.legend()
        ax = axes[1]
        for m, c in (("euler", "C0"), ("rk4", "C3")):
            v = np.array(sweep[m])
            fin = np.isfinite(v) & (v < res["initial_loss"])
            ax.loglog(hs[fin], v[fin], "o-", color=c, ms=3, label=f"{m}: loss after {E} evaluations")
            ax.loglog(hs[~fin], np.full((~fin).sum(), 2.0), "x", color=c, label=f"{m}: diverged")
            ax.axvline(limits[m][0], color=c, lw=0.8, ls="--")
        ax.axvline(2 / lam, color="0.5", lw=0.6, ls=":")
        ax.axvline(2.785 / lam, color="0.5", lw=0.6, ls=":")
        ax.text(2 / lam, 0.02, "2/λ₀ ", fontsize=7, color="0.4", ha="right", transform=ax.get_xaxis_transform())
        ax.text(2.785 / lam, 0.02, " 2.785/λ₀", fontsize=7, color="0.4", transform=ax.get_xaxis_transform())
        ax.set_xlabel("learning rate h")
        ax.set_ylabel("final full-batch loss")
        ax.set_title("sweep (dashed: measured largest stable h)")
        ax.legend(loc="upper left", fontsize=7)
        fig.tight_layout()
        os.makedirs(args.out, exist_ok=True)
        fn = os.path.normpath(os.path.join(args.out, "rk_vs_euler.png"))
        save_png(fig, fn)
        res["files"] = [fn]
        print(f"wrote {fn} ({os.path.getsize(fn) / 1024:.0f} KB)")
    res["seconds"] = time.perf_counter() - t_start
    print(f"total {res['seconds']:.1f} s")
    print("RESULT " + json.dumps(res))
    return res


if __name__ == "__main__":
    main()
