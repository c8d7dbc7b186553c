#!/usr/bin/env python
"""The Runge-Kutta stability polynomials, checked on a quadratic (docs/optim_tutorial.md, "Reproduction c").

On L(theta) = 1/2 theta^T A theta the gradient flow is theta' = -A theta, and one explicit RK
step with step h multiplies the component of theta along an eigenvector of A (eigenvalue
lambda) by the stability polynomial R(z) at z = -h lambda:

    euler            R(z) = 1 + z
    heun, midpoint   R(z) = 1 + z + z^2/2
    rk23 (BS3)       R(z) = 1 + z + z^2/2 + z^3/6                      (the 3rd-order solution)
    rk4              R(z) = 1 + z + z^2/2 + z^3/6 + z^4/24
    rk45 (DP5)       R(z) = 1 + z + ... + z^5/120 + z^6/600             (the 5th-order solution)

This script takes A = Q diag(lambda_1..lambda_d) Q^T (random rotation Q, h lambda from 0.02 to
4.5), runs ``n`` steps of each ``jl.optim.RK`` method with ``jl.optim.step`` (the C++ rule) and
measures the per-step contraction factor of each eigen-component,
|c_i(n) / c_i(0)|^(1/n) with c = Q^T theta, against |R(-h lambda_i)| computed from the Butcher
tableau. The adaptive pairs are run with the error control switched off (tol = 1e300, h reset
before every step), so that h is fixed. A second panel does the same for the momentum variant
(m <- beta m + (1 - beta) d, theta <- theta + h m / (1 - beta^t), d = sum_i b_i k_i), whose
asymptotic factor is the spectral radius of [[beta, (1-beta)(R-1)/h], [h beta, 1 + (1-beta)(R-1)]].

    python examples/rk_stability.py [--quick] [--out docs/figures]

Writes rk_stability.png; prints the largest deviation per method and the measured vs exact
real stability limits (the h lambda where the factor crosses 1), then ``RESULT {json}``.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

import jaclab as jl
from _common import save_png
from jaclab.optim import reference as ref

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_OUT = os.path.join(HERE, os.pardir, "docs", "figures")
METHODS = ("euler", "heun", "midpoint", "rk23", "rk4", "rk45")


def stability_polynomial(method, z):
    """R(z) from the Butcher tableau: one step of y' = lambda y from y = 1, z = h lambda."""
    a, b, _, _ = ref.TABLEAUX[method]
    k = []
    for row in a:  # h k_i = z (1 + sum_j a_ij h k_j)
        k.append(z * (1 + sum(c * kj for c, kj in zip(row, k))))
    return 1 + sum(bi * ki for bi, ki in zip(b, k))


def momentum_factor(method, x, h, beta):
    """Spectral radius of the linear map (theta, m) -> (theta', m') of the momentum variant
    (bias correction -> 1), on the eigen-direction with h lambda = x."""
    R = stability_polynomial(method, -x)
    M = np.array([[1 + (1 - beta) * (R - 1), h * beta], [(1 - beta) * (R - 1) / h, beta]])
    return float(np.max(np.abs(np.linalg.eigvals(M))))


def limit(fn, lo=1e-3, hi=100.0):
    """The smallest x in (lo, hi] with fn(x) > 1 (grid, then bisection)."""
    xs = np.linspace(lo, hi, 4001)
    vals = np.array([fn(x) for x in xs])
    if not np.any(vals > 1):
        return float("inf")
    i = int(np.argmax(vals > 1))
    a, b = xs[i - 1], xs[i]
    for _ in range(60):
        m = 0.5 * (a + b)
        a, b = (m, b) if fn(m) <= 1 else (a, m)
    return 0.5 * (a + b)


def measured_limit(x, factor):
    """Where the measured factor first crosses 1 (linear interpolation between eigenvalues)."""
    if not np.any(factor > 1):
        return float("inf")
    i = int(np.argmax(factor > 1))
    if i == 0:
        return float("nan")
    return float(x[i - 1] + (1 - factor[i - 1]) * (x[i] - x[i - 1]) / (factor[i] - factor[i - 1]))


def run(opt, A, theta0, steps, reset_h):
    grad_fn = lambda th: (0.5 * float(th @ A @ th), A @ th)  # noqa: E731
    theta, state = theta0.copy(), jl.optim.init(opt, theta0)
    thetas, ms = [theta], [state.get("m", 0 * theta)]
    for _ in range(steps):
        if reset_h:
            state["h"] = opt.lr  # adaptive pair at a fixed step: no step-size change
        loss, g = grad_fn(theta)
        theta, state = jl.optim.step(opt, state, theta, g, grad_fn=grad_fn, loss=loss)
        thetas.append(theta)
        ms.append(state.get("m", 0 * theta))
        if not np.abs(theta).max() < 1e100:  # diverged: stop before overflow
            break
    return np.array(thetas), np.array(ms)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer eigenvalues and steps (for the tests)")
    ap.add_argument("--out", default=DEFAULT_OUT, help="folder for the PNG (default docs/figures)")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    d = 40 if args.quick else 181
    steps, mom_steps = (5, 100) if args.quick else (10, 200)
    h, beta = 1.0, 0.9
    x = np.linspace(0.02, 4.52, d)  # h * lambda_i
    rng = np.random.default_rng(0)
    Q, _ = np.linalg.qr(rng.standard_normal((d, d)))
    A = (Q * (x / h)) @ Q.T
    theta0 = Q @ np.ones(d)  # every eigen-component starts at 1

    res = {"d": d, "steps": steps, "methods": {}, "momentum": {}}
    measured = {}
    for m in METHODS:
        opt = jl.optim.RK(m, h, tol=1e300) if m in ("rk23", "rk45") else jl.optim.RK(m, h)
        th, _ = run(opt, A, theta0, 1, reset_h=opt.adaptive)
        c1 = Q.T @ th[1]  # one step from all components at 1: c_i(1) = R(-h lambda_i), sign included
        # n steps from each eigenvector alone (so that diverging components do not swamp the others
        # with their rounding): factor = |q_i . theta_n|^(1/n)
        fac = np.array([abs(Q[:, i] @ run(opt, A, Q[:, i], steps, reset_h=opt.adaptive)[0][-1]) ** (1 / steps)
                        for i in range(d)])
        R = np.array([stability_polynomial(m, -xi) for xi in x])
        measured[m] = fac
        ok = np.abs(R) ** steps > 1e-12  # elsewhere R^n is near rounding (1e-16), so its n-th root is not measurable
        res["methods"][m] = {
            "max_rel_dev": float(np.max(np.abs(fac - np.abs(R))[ok] / np.abs(R)[ok])),
            "max_abs_dev_one_step": float(np.max(np.abs(c1 - R))),
            "limit_exact": limit(lambda xi: abs(stability_polynomial(m, -xi))),
            "limit_measured": measured_limit(x, fac),
        }
    # Momentum variant: asymptotic factor over the second half of the run, from |(c_theta, h c_m)|. Here
    # A = diag(lambda) and the gradient is lambda * theta elementwise, so the eigen-components are
    # exactly independent (a diverging one cannot pollute the others through rounding or inf * 0).
    xm = np.geomspace(0.02, 60, 30 if args.quick else 60)
    mom_measured = {}
    for m in ("euler", "rk4"):
        opt = jl.optim.RK(m, h, momentum=beta)
        grad_fn = lambda th: (0.5 * float(np.sum(xm / h * th * th)), xm / h * th)  # noqa: E731
        theta, state = np.ones(len(xm)), jl.optim.init(opt, np.ones(len(xm)))
        th, ms = [theta], [state["m"]]
        with np.errstate(over="ignore", invalid="ignore"):
            for _ in range(mom_steps):
                loss, g = grad_fn(theta)
                theta, state = jl.optim.step(opt, state, theta, g, grad_fn=grad_fn, loss=loss)
                th.append(theta)
                ms.append(state["m"])
            size = np.hypot(np.array(th), h * np.array(ms))  # (steps + 1, len(xm))
        fac = []
        for i in range(len(xm)):
            end = int(np.argmax(~(size[:, i] < 1e100))) - 1 if not np.all(size[:, i] < 1e100) else mom_steps
            half = end // 2
            fac.append((size[end, i] / size[half, i]) ** (1 / (end - half)))
        fac = np.array(fac)
        rho = np.array([momentum_factor(m, xi, h, beta) for xi in xm])
        mom_measured[m] = fac
        res["momentum"][m] = {
            "max_rel_dev": float(np.max(np.abs(fac - rho) / rho)),
            "max_rel_dev_stable": float(np.max((np.abs(fac - rho) / rho)[rho < 1])),
            "limit_exact": limit(lambda xi: momentum_factor(m, xi, h, beta)),
            "limit_measured": measured_limit(xm, fac),
        }

    for m, r in res["methods"].items():
        print(f"{m:9s} max |measured - |R|| / |R| = {r['max_rel_dev']:.1e}   one step |c(1) - R| <= {r['max_abs_dev_one_step']:.1e}"
              f"   stability limit h*lambda: exact {r['limit_exact']:.4f}, measured {r['limit_measured']:.4f}")
    for m, r in res["momentum"].items():
        print(f"{m:5s}+momentum {beta}: max rel dev from spectral radius {r['max_rel_dev']:.1e} "
              f"({r['max_rel_dev_stable']:.1e} where it is < 1)"
              f"   limit exact {r['limit_exact']:.4f}, measured {r['limit_measured']:.4f}")

    try:
        import matplotlib
    except ImportError:
        print("matplotlib is not installed: no figure (pip install 'jaclab[plots]')")
    else:
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        plt.rcParams.update({"font.size": 9, "legend.fontsize": 7.5})
        fig, axes = plt.subplots(1, 2, figsize=(10, 4.0))
        zz = np.linspace(0, 4.6, 400)
        zm = np.geomspace(0.02, 60, 400)
        colors = dict(euler="C0", heun="C1", midpoint="C1", rk23="C2", rk4="C3", rk45="C4")
        ax = axes[0]
        for m in METHODS:
            if m != "midpoint":
                ax.semilogy(zz, np.abs([stability_polynomial(m, -z) for z in zz]), color=colors[m], lw=1,
                            label=f"|R(-hλ)| {m}" + (" = midpoint" if m == "heun" else ""))
            ax.semilogy(x, measured[m], ls="none", marker="x" if m == "midpoint" else "o", ms=3, mfc="none", color=colors[m],
                        label=f"measured {m}")
        ax.axhline(1, color="k", lw=0.6)
        ax.set_ylim(1e-3, 1e2)
        ax.set_xlabel("h λ (eigenvalue of A times step)")
        ax.set_ylabel(f"per-step factor  |c(n)/c(0)|^(1/n), n = {steps}")
        ax.set_title("RK stability polynomials on ½θᵀAθ")
        ax.legend(ncol=2, loc="lower left")
        ax = axes[1]
        for m in ("euler", "rk4"):
            ax.semilogx(zm, [momentum_factor(m, z, h, beta) for z in zm], color=colors[m], lw=1, label=f"spectral radius, {m}")
            ax.plot(xm, mom_measured[m], ls="none", marker="o", ms=3, mfc="none", color=colors[m], label=f"measured {m}")
            ax.plot(zm, np.abs([stability_polynomial(m, -z) for z in zm]), color=colors[m], lw=0.6, ls=":",
                    label=f"|R| {m} (no momentum)")
        ax.axhline(1, color="k", lw=0.6)
        ax.set_ylim(0, 1.6)
        ax.set_xlabel("h λ")
        ax.set_ylabel("asymptotic per-step factor")
        ax.set_title(f"momentum variant, β = {beta}")
        ax.legend(loc="upper left")
        fig.tight_layout()
        os.makedirs(args.out, exist_ok=True)
        fn = os.path.normpath(os.path.join(args.out, "rk_stability.png"))
        save_png(fig, fn)
        res["files"] = [fn]
        print(f"wrote {fn} ({os.path.getsize(fn) / 1024:.0f} KB)")
    res["seconds"] = time.perf_counter() - t0
    print("RESULT " + json.dumps(res))
    return res


if __name__ == "__main__":
    main()
