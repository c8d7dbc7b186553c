#!/usr/bin/env python
"""Forward vs backward SGD near a minimum at a constant learning rate, measured within one run
(docs/optim_tutorial.md, "Reproduction a"; papers.md section 1).

Least squares: a linear model ``jl.nn.Linear(d, 1)`` fitted with the mean squared error to
``jl.data.teacher_student`` targets (a tanh teacher plus noise, so no linear model fits them
exactly and minibatch gradients stay noisy at the minimum), started at the full-batch
minimiser theta*. For each seed, ``jl.optim.train`` runs SGD(h) with ``order="forward"`` and
``order="backward"`` on the same batches (same seed) and keeps every iterate
(``trajectory=True``). Measured per run:

- the step length s_n = ||theta_{n} - theta_{n-1}||: backward-SGD's decays geometrically to
  rounding (theta^b_n converges pathwise), forward-SGD's stays on a noise floor ~ h sigma_grad;
- the spread of the last iterates within the run (backward ~ 0, forward > 0);
- ACROSS seeds, at each n, the distance ||theta_n - theta*|| has the same distribution for both
  orders (papers.md fact (i)): a spread-across-seeds plot cannot tell them apart, hence the
  within-run measurement.

    python examples/backward_sgd.py [--quick] [--out docs/figures]

Writes backward_sgd.png; prints the numbers quoted in the tutorial and ``RESULT {json}``.
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


def flat(p):
    return jl.optim.flatten_params(p)[0]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="small problem, few seeds (for the tests)")
    ap.add_argument("--out", default=DEFAULT_OUT, help="folder for the PNG (default docs/figures)")
    args = ap.parse_args(argv)
    t_start = time.perf_counter()
    if args.quick:
        n, d, h, B, N, seeds = 256, 5, 0.1, 4, 200, 3
    else:
        n, d, h, B, N, seeds = 512, 20, 0.05, 4, 500, 20

    X, Y = jl.data.teacher_student(n, d, 32, 1, noise=0.1, seed=0)
    model = jl.nn.Linear(d, 1)
    Xa = np.hstack([X, np.ones((n, 1))])
    sol = np.linalg.lstsq(Xa, Y, rcond=None)[0]
    params = {"W": sol[:d].copy(), "b": sol[d].copy()}  # the full-batch minimiser theta*
    theta_star = flat(params)
    H = 2 * Xa.T @ Xa / n  # Hessian of the mean squared error (flat order: W then b)
    lam = np.linalg.eigvalsh(H)
    opt = jl.optim.SGD(h)

    def full_loss(th):
        return float(np.mean((Xa @ th[:, None] - Y) ** 2))

    steps = {"forward": [], "backward": []}
    dist = {"forward": [], "backward": []}
    spread, final_loss, evals, secs = {"forward": [], "backward": []}, {"forward": [], "backward": []}, {}, {}
    for seed in range(seeds):
        for order in ("forward", "backward"):
            t0 = time.perf_counter()
            r = jl.optim.train(model, params, "mse", (X, Y), opt, steps=N, batch_size=B, seed=seed, order=order,
                               trajectory=True)
            secs[order] = secs.get(order, 0.0) + time.perf_counter() - t0
            evals[order] = r.grad_evals
            th = np.array([flat(p) for p in r.trajectory])  # (N + 1, d + 1): iterates 0..N
            steps[order].append(np.linalg.norm(np.diff(th, axis=0), axis=1))
            dist[order].append(np.linalg.norm(th - theta_star, axis=1))
            tail = th[-min(100, N // 2):]
            spread[order].append(float(np.sqrt(np.sum(np.var(tail, axis=0)))))
            final_loss[order].append(full_loss(th[-1]))
    S = {k: np.array(v) for k, v in steps.items()}  # (seeds, N)
    D = {k: np.array(v) for k, v in dist.items()}   # (seeds, N + 1)
    assert np.array_equal(S["forward"][:, 0], S["backward"][:, 0])  # theta^b_1 == theta^f_1

    # geometric rate of the backward step length: log-linear fit over the part above 1e4 x rounding
    b0 = S["backward"][0]
    above = np.flatnonzero(b0 > 1e-12 * max(1.0, np.linalg.norm(theta_star)))
    fit_to = int(above[-1]) if above.size else N - 1
    rate = float(np.exp(np.polyfit(np.arange(fit_to + 1), np.log(b0[: fit_to + 1]), 1)[0]))
    s1 = S["forward"][:, 0]
    res = {
        "setup": dict(n=n, d=d, h=h, batch_size=B, N=N, seeds=seeds),
        "initial_step": float(np.median(s1)),
        "backward_end_over_initial": float(np.max(S["backward"][:, -1] / s1)),           # worst seed
        "backward_end_over_initial_median": float(np.median(S["backward"][:, -1] / s1)),
        "forward_min_over_initial": float(np.min(S["forward"][:, N // 2:] / s1[:, None])),  # lowest of the 2nd half
        "forward_end_over_initial_median": float(np.median(S["forward"][:, -1] / s1)),
        "backward_rate": rate,
        "predicted_rate_1_minus_h_lambda_min": float(1 - h * lam[0]),
        "hessian_eig_min_max": [float(lam[0]), float(lam[-1])],
        "within_run_spread": {k: float(np.median(v)) for k, v in spread.items()},
        "final_full_loss_mean": {k: float(np.mean(v)) for k, v in final_loss.items()},
        "loss_at_minimum": full_loss(theta_star),
        "across_seeds_dist_at_N": {k: [float(np.mean(D[k][:, -1])), float(np.std(D[k][:, -1]))] for k in D},
        "grad_evals_per_run": evals,
        "seconds_per_run": {k: v / seeds for k, v in secs.items()},
    }
    print(f"least squares d={d}, n={n}, batch {B}, h={h}, N={N} iterates, {seeds} seeds; "
          f"Hessian eigenvalues {lam[0]:.3f}..{lam[-1]:.3f}")
    print(f"step length s_1 (both orders) median {res['initial_step']:.3e}")
    print(f"backward: s_N / s_1 = {res['backward_end_over_initial_median']:.1e} (median), "
          f"{res['backward_end_over_initial']:.1e} (worst seed); geometric rate {rate:.4f} per iterate "
          f"(1 - h lambda_min = {1 - h * lam[0]:.4f})")
    print(f"forward:  s_N / s_1 = {res['forward_end_over_initial_median']:.2f} (median); "
          f"lowest s_n / s_1 over the second half {res['forward_min_over_initial']:.1e}")
    print(f"within-run spread of the last iterates (sqrt of trace of covariance): forward "
          f"{res['within_run_spread']['forward']:.2e}, backward {res['within_run_spread']['backward']:.2e}")
    print(f"full-data loss of the final iterate (mean over seeds): forward {res['final_full_loss_mean']['forward']:.5f}, "
          f"backward {res['final_full_loss_mean']['backward']:.5f}; at theta* {res['loss_at_minimum']:.5f}")
    print("across seeds, ||theta_N - theta*||: forward {:.4f} +- {:.4f}, backward {:.4f} +- {:.4f}".format(
        *res["across_seeds_dist_at_N"]["forward"], *res["across_seeds_dist_at_N"]["backward"]))
    print(f"cost per run: forward {evals['forward']} gradients ({res['seconds_per_run']['forward'] * 1e3:.1f} ms), "
          f"backward {evals['backward']} = N(N+1)/2 ({res['seconds_per_run']['backward'] * 1e3:.1f} ms)")

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
        it = np.arange(1, N + 1)
        for k, c in (("forward", "C1"), ("backward", "C0")):
            for i in range(seeds):
                ax.semilogy(it, S[k][i], color=c, lw=0.4, alpha=0.35)
            ax.semilogy(it, S[k][0], color=c, lw=1.3, label=f"{k} SGD (seed 0; thin: {seeds} seeds)")
        ax.semilogy(it, np.median(s1) * (1 - h * lam[0]) ** it, "k--", lw=0.8, label=r"$s_1 (1-h\lambda_{min})^n$")
        ax.set_ylim(1e-18, 10)
        ax.set_xlabel("iterate n")
        ax.set_ylabel(r"step length $\|\theta_n - \theta_{n-1}\|$")
        ax.set_title("within one run: backward converges pathwise")
        ax.legend(loc="lower left")
        ax = axes[1]
        for k, c, ls in (("forward", "C1", "-"), ("backward", "C0", "--")):
            m, sd = D[k].mean(0), D[k].std(0)
            ax.plot(np.arange(N + 1), m, color=c, ls=ls, label=f"{k}: mean ± std over {seeds} seeds")
            ax.fill_between(np.arange(N + 1), m - sd, m + sd, color=c, alpha=0.15)
        ax.set_xlabel("iterate n")
        ax.set_ylabel(r"$\|\theta_n - \theta^*\|$")
        ax.set_title("across seeds: the same distribution at every n")
        ax.legend(loc="lower right")
        fig.tight_layout()
        os.makedirs(args.out, exist_ok=True)
        fn = os.path.normpath(os.path.join(args.out, "backward_sgd.png"))
        save_png(fig, fn)
        res["files"] = [fn]
        print(f"wrote {fn} ({os.path.getsize(fn) / 1024:.0f} KB)")
    res["seconds"] = time.perf_counter() - t_start
    print(f"total {res['seconds']:.1f} s")
    print("RESULT " + json.dumps(res))
    return res


if __name__ == "__main__":
    main()
