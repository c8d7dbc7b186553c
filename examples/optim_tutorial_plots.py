#!/usr/bin/env python
"""Figures of docs/optim_tutorial.md: what each jl.optim rule does on two 2-D loss surfaces.

- "quadratic": L = 1/2 theta^T A theta, A with eigenvalues 1 and 10, rotated by 30 degrees
  (condition number 10, minimum 0 at the origin);
- "valley": a Rosenbrock-like valley L = (1 - x)^2 + 10 (y - x^2)^2 (minimum 0 at (1, 1)).

Every trajectory is made one update at a time with ``jl.optim.step`` (the C++ rule), and each
update is checked against the NumPy mirror ``jl.optim.reference`` (same formula, same state).

    python examples/optim_tutorial_plots.py [--quick] [--out docs/figures]

Writes optim_<name>.png (sgd, momentum, adam, rk, rk_adaptive, rk_variants, polyak) and prints
the one-step numbers quoted in the tutorial, then a line ``RESULT {json}``.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time

import numpy as np

import jaclab as jl
from _common import save_png
from jaclab.optim import reference as ref

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_OUT = os.path.join(HERE, os.pardir, "docs", "figures")

# ---- the two surfaces -----------------------------------------------------------------------------
_c, _s = math.cos(math.pi / 6), math.sin(math.pi / 6)
_R = np.array([[_c, -_s], [_s, _c]])
A = _R @ np.diag([1.0, 10.0]) @ _R.T


def quadratic(th):
    return 0.5 * float(th @ A @ th), A @ th


def valley(th):
    x, y = th
    r = y - x * x
    return (1 - x) ** 2 + 10 * r * r, np.array([-2 * (1 - x) - 40 * x * r, 20 * r])


SURFACES = {
    "quadratic": dict(f=quadratic, start=np.array([-2.5, 1.0]), xlim=(-3, 3), ylim=(-2.2, 2.2), levels=np.geomspace(1e-2, 40, 14),
                      title=r"$\frac{1}{2}\theta^\top A\theta$, eig(A) = 1, 10", minimum=(0, 0)),
    "valley": dict(f=valley, start=np.array([-1.2, 1.6]), xlim=(-2, 2), ylim=(-0.8, 3.2), levels=np.geomspace(1e-2, 100, 14),
                   title=r"$(1-x)^2 + 10\,(y-x^2)^2$", minimum=(1, 1)),
}


def run(opt, surface, steps, start=None, check=True):
    """Iterates of ``opt`` on ``surface`` with jl.optim.step; returns (points (n+1, 2), states).

    Each C++ step is compared with the mirror's step from the same state (rounding only)."""
    f = SURFACES[surface]["f"]
    theta = np.array(SURFACES[surface]["start"] if start is None else start, float)
    state = jl.optim.init(opt, theta)
    pts, states = [theta.copy()], []
    for _ in range(steps):
        loss, g = f(theta)
        new, new_state = jl.optim.step(opt, state, theta, g, grad_fn=f, loss=loss)
        if check:
            r_theta, _, _ = ref.step(opt, theta, {**state}, f)
            if np.all(np.isfinite(new)):
                assert np.allclose(new, r_theta, rtol=1e-12, atol=1e-12 * (1 + np.abs(r_theta).max())), (opt, new, r_theta)
        theta, state = new, new_state
        pts.append(theta.copy())
        states.append(state)
        if not np.all(np.isfinite(theta)) or np.abs(theta).max() > 1e6:
            break
    return np.array(pts), states


def real_stability_limit(method):
    """The h*lambda at which the method's stability polynomial R(z) = 1 + z + ... (the propagated
    solution of the tableau, exact on theta' = -lambda theta) first reaches |R(-h lambda)| = 1."""
    a, b, _, _ = ref.TABLEAUX[method]
    zs = np.linspace(1e-3, 10, 100001)
    R = np.array([_stability(a, b, -z) for z in zs])
    return float(zs[np.argmax(np.abs(R) > 1)])


def _stability(a, b, z):
    k = []
    for row in a:  # k_i = z (1 + sum_j a_ij k_j) for the ODE y' = lambda y, y = 1, z = h lambda (k_i scaled by h)
        k.append(z * (1 + sum(c * kj for c, kj in zip(row, k))))
    return 1 + sum(bi * ki for bi, ki in zip(b, k))


def flow(surface, T, start=None, n=2000):
    """The gradient flow theta' = -grad L up to time T (RK4 with a tiny step, as reference)."""
    pts, _ = run(jl.optim.RK("rk4", T / n), surface, n, start, check=False)
    return pts


# ---- drawing --------------------------------------------------------------------------------------
def setup_matplotlib():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({"font.size": 9, "axes.titlesize": 9, "legend.fontsize": 7.5, "lines.linewidth": 1.2})
    return plt


def contour(ax, surface):
    S = SURFACES[surface]
    xs, ys = np.linspace(*S["xlim"], 150), np.linspace(*S["ylim"], 150)
    XX, YY = np.meshgrid(xs, ys)
    ZZ = np.vectorize(lambda x, y: S["f"](np.array([x, y]))[0])(XX, YY)
    ax.contour(XX, YY, ZZ, levels=S["levels"], colors="0.75", linewidths=0.6)
    ax.plot(*S["minimum"], marker="*", color="k", ms=8, zorder=5)
    ax.set_xlim(*S["xlim"])
    ax.set_ylim(*S["ylim"])
    ax.set_aspect("equal")
    ax.set_title(S["title"])
    ax.set_xticks([])
    ax.set_yticks([])


def path(ax, pts, label, color, marker=".", ms=3, **kw):
    """Draw a trajectory; a diverging one is cut just after it leaves the panel."""
    (x0, x1), (y0, y1) = ax.get_xlim(), ax.get_ylim()
    out = (pts[:, 0] < x0) | (pts[:, 0] > x1) | (pts[:, 1] < y0) | (pts[:, 1] > y1) | ~np.isfinite(pts).all(axis=1)
    bad = np.flatnonzero(out[1:])
    if bad.size:
        pts = pts[: bad[0] + 2]
    ax.plot(pts[:, 0], pts[:, 1], marker=marker, ms=ms, color=color, label=label, **kw)


def save(fig, out, name, written):
    fn = os.path.normpath(os.path.join(out, f"optim_{name}.png"))
    save_png(fig, fn)
    written.append(fn)


COLORS = ["C0", "C1", "C2", "C3", "C4", "C5", "C6"]


def trajectories_figure(plt, runs, steps, out, name, written, note=None):
    """One panel per surface; ``runs[surface]`` = list of (label, optimizer)."""
    fig, axes = plt.subplots(1, 2, figsize=(9.5, 4.0))
    for ax, surface in zip(axes, ("quadratic", "valley")):
        contour(ax, surface)
        for i, (label, opt) in enumerate(runs[surface]):
            pts, _ = run(opt, surface, steps[surface])
            path(ax, pts, label, COLORS[i % len(COLORS)])
        ax.legend(loc="lower right" if surface == "quadratic" else "lower left")
    if note:
        fig.suptitle(note, fontsize=9)
    fig.tight_layout()
    save(fig, out, name, written)


# ---- one step of each rule (the numbers quoted in the tutorial) -----------------------------------
def one_steps():
    th = SURFACES["quadratic"]["start"]
    loss, g = quadratic(th)
    rows = {"theta0": th.tolist(), "loss0": loss, "grad0": g.tolist()}
    cases = {
        "SGD(0.1)": jl.optim.SGD(0.1),
        "Momentum(0.1, 0.9)": jl.optim.Momentum(0.1, 0.9),
        "Momentum(0.1, 0.9, nesterov=True)": jl.optim.Momentum(0.1, 0.9, nesterov=True),
        "Adam(0.1)": jl.optim.Adam(0.1),
        "AdamW(0.1, weight_decay=0.5)": jl.optim.AdamW(0.1, weight_decay=0.5),
        'RK("rk4", 0.1)': jl.optim.RK("rk4", 0.1),
        'RK("rk23", 0.1, tol=1e-3)': jl.optim.RK("rk23", 0.1, tol=1e-3),
        "Polyak()": jl.optim.Polyak(),
    }
    for name, opt in cases.items():
        new, st = jl.optim.step(opt, jl.optim.init(opt, th), th, g, grad_fn=quadratic, loss=loss)
        rows[name] = {"theta1": new.tolist(), "lr": st.get("lr"), "h_next": st.get("h"), "err": st.get("err")}
    return rows


# ---- the figures ----------------------------------------------------------------------------------
def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer steps (for the tests)")
    ap.add_argument("--out", default=DEFAULT_OUT, help="folder for the PNGs (default docs/figures)")
    args = ap.parse_args(argv)
    plt = setup_matplotlib()
    os.makedirs(args.out, exist_ok=True)
    t0 = time.perf_counter()
    q = 4 if args.quick else 1  # --quick: a quarter of the steps
    written: list[str] = []
    numbers = {"one_step": one_steps()}

    # SGD: a small step, and a step near the stability limit 2/lambda_max (zig-zag across the valley).
    trajectories_figure(plt, {
        "quadratic": [("SGD lr=0.05", jl.optim.SGD(0.05)), ("SGD lr=0.18 (2/λmax = 0.2)", jl.optim.SGD(0.18))],
        "valley": [("SGD lr=0.005", jl.optim.SGD(0.005)), ("SGD lr=0.018", jl.optim.SGD(0.018))],
    }, {"quadratic": 60 // q, "valley": 400 // q}, args.out, "sgd", written)

    # Momentum: heavy ball vs Nesterov vs plain SGD at the same lr.
    trajectories_figure(plt, {
        "quadratic": [("SGD lr=0.02", jl.optim.SGD(0.02)), ("heavy ball lr=0.02 β=0.9", jl.optim.Momentum(0.02, 0.9)),
                      ("Nesterov lr=0.02 β=0.9", jl.optim.Momentum(0.02, 0.9, nesterov=True))],
        "valley": [("SGD lr=0.002", jl.optim.SGD(0.002)), ("heavy ball lr=0.002 β=0.9", jl.optim.Momentum(0.002, 0.9)),
                   ("Nesterov lr=0.002 β=0.9", jl.optim.Momentum(0.002, 0.9, nesterov=True))],
    }, {"quadratic": 80 // q, "valley": 400 // q}, args.out, "momentum", written)

    # Adam: per-coordinate step ~ lr at first (sign-like), AdamW pulls towards 0.
    trajectories_figure(plt, {
        "quadratic": [("SGD lr=0.05", jl.optim.SGD(0.05)), ("Adam lr=0.1", jl.optim.Adam(0.1)),
                      ("AdamW lr=0.1 wd=0.5", jl.optim.AdamW(0.1, weight_decay=0.5))],
        "valley": [("SGD lr=0.005", jl.optim.SGD(0.005)), ("Adam lr=0.05", jl.optim.Adam(0.05)),
                   ("AdamW lr=0.05 wd=0.2", jl.optim.AdamW(0.05, weight_decay=0.2))],
    }, {"quadratic": 80 // q, "valley": 400 // q}, args.out, "adam", written)

    # RK: one RK4 step's stages; then euler / heun / midpoint / rk4 at one large h.
    fig, axes = plt.subplots(1, 3, figsize=(13, 4.0))
    ax = axes[0]
    contour(ax, "quadratic")
    h = 0.06
    th0 = SURFACES["quadratic"]["start"]
    _, (st,) = run(jl.optim.RK("rk4", h), "quadratic", 1)
    k = [np.asarray(x) for x in st["stages"]]
    a_rows = ref.TABLEAUX["rk4"][0]
    for i, (row, ki) in enumerate(zip(a_rows, k)):
        y = th0 + h * sum((c * kj for c, kj in zip(row, k)), np.zeros(2))  # where stage i is evaluated
        ax.plot(*y, "o", color=COLORS[i], ms=5)
        ax.annotate("", xy=y + h * ki, xytext=y, arrowprops=dict(arrowstyle="->", color=COLORS[i]), annotation_clip=True)
        ax.text(*(y + np.array([0.03, 0.06 if i % 2 else -0.12])), f"$k_{i + 1}$", color=COLORS[i], clip_on=True)
    th1 = th0 + h * sum(b * kj for b, kj in zip(ref.TABLEAUX["rk4"][1], k))
    ax.plot(*th1, "s", color="k", ms=5, label=r"$\theta_1=\theta_0+h\sum b_i k_i$")
    fl = flow("quadratic", h)
    ax.plot(fl[:, 0], fl[:, 1], "k--", lw=0.8, label="gradient flow to t = h")
    box = np.array([th0 + h * k[0], th0, th1] + [th0 + h * kk for kk in k])
    lo, hi = box.min(0) - 0.15, box.max(0) + 0.15
    ax.set_xlim(lo[0], hi[0])
    ax.set_ylim(lo[1], hi[1])
    ax.legend(loc="lower right")
    ax.set_title(f"one RK4 step, h = {h}: stages $k_i$ at $\\theta_0 + h\\sum_j a_{{ij}}k_j$")
    for ax, surface, hh, steps in ((axes[1], "quadratic", 0.24, 25), (axes[2], "valley", 0.026, 150 // q)):
        contour(ax, surface)
        for i, m in enumerate(("euler", "heun", "midpoint", "rk4")):
            pts, _ = run(jl.optim.RK(m, hh), surface, steps)
            path(ax, pts, f"{m} h={hh}", COLORS[i], ls=":" if m == "midpoint" else "-")
        fl = flow(surface, hh * steps)
        ax.plot(fl[:, 0], fl[:, 1], "k--", lw=0.8, label="gradient flow")
        ax.legend(loc="lower right" if surface == "quadratic" else "lower left")
    axes[1].set_title(axes[1].get_title() + "\nh·λmax = 2.4: only RK4 is stable")
    fig.tight_layout()
    save(fig, args.out, "rk", written)
    numbers["rk4_stages"] = [x.tolist() for x in k]

    # Adaptive pairs: the accepted points and the step size h they choose.
    fig, axes = plt.subplots(1, 3, figsize=(13, 4.0))
    adaptive = {}
    for ax, surface, steps in ((axes[0], "quadratic", 40 // q), (axes[1], "valley", 120 // q)):
        contour(ax, surface)
        for i, (m, tol) in enumerate((("rk23", 1e-2), ("rk45", 1e-2), ("rk23", 1e-4))):
            opt = jl.optim.RK(m, 0.01, tol=tol)
            pts, states = run(opt, surface, steps)
            path(ax, pts, f"{m} tol={tol:g}", COLORS[i], ms=4)
            hs = [s["lr"] for s in states]
            adaptive[f"{surface}/{m}/{tol:g}"] = dict(h_first=hs[0], h_last=hs[-1], rejected=states[-1].get("rejected", 0.0))
            axes[2].semilogy(hs, color=COLORS[i], ls="-" if surface == "quadratic" else "--",
                             label=f"{surface}: {m} tol={tol:g}")
        fl = flow(surface, 3.0 if surface == "quadratic" else 20.0)
        ax.plot(fl[:, 0], fl[:, 1], "k--", lw=0.8, label="gradient flow")
        ax.legend(loc="lower right" if surface == "quadratic" else "lower left")
    for m, c in (("rk23", COLORS[0]), ("rk45", COLORS[1])):  # real stability limits on the quadratic (lambda_max = 10)
        lim = real_stability_limit(m) / 10
        axes[2].axhline(lim, color=c, lw=0.6, ls=":")
        axes[2].text(60 // q, lim * 1.06, f"{m}: |R(-hλmax)| = 1 at h = {lim:.3f}", fontsize=7, color=c)
    axes[2].set_xlabel("step")
    axes[2].set_ylabel("accepted h")
    axes[2].legend(fontsize=7)
    axes[2].set_title("step sizes chosen by the error control (start h = 0.01)")
    fig.tight_layout()
    save(fig, args.out, "rk_adaptive", written)
    numbers["adaptive"] = adaptive

    # Variants: Adam preconditioner, momentum on the RK increments.
    trajectories_figure(plt, {
        "quadratic": [("rk4 h=0.1", jl.optim.RK("rk4", 0.1)),
                      ("rk4 h=0.1 precond=adam", jl.optim.RK("rk4", 0.1, preconditioner="adam")),
                      ("heun h=0.02 momentum=0.9", jl.optim.RK("heun", 0.02, momentum=0.9)),
                      ("rk4 h=0.05 adam+momentum 0.9", jl.optim.RK("rk4", 0.05, preconditioner="adam", momentum=0.9))],
        "valley": [("rk4 h=0.01", jl.optim.RK("rk4", 0.01)),
                   ("rk4 h=0.05 precond=adam", jl.optim.RK("rk4", 0.05, preconditioner="adam")),
                   ("heun h=0.002 momentum=0.9", jl.optim.RK("heun", 0.002, momentum=0.9)),
                   ("rk4 h=0.02 adam+momentum 0.9", jl.optim.RK("rk4", 0.02, preconditioner="adam", momentum=0.9))],
    }, {"quadratic": 60 // q, "valley": 300 // q}, args.out, "rk_variants", written)

    # Polyak / corridor step: trajectories and the step sizes it picks.
    fig, axes = plt.subplots(1, 3, figsize=(13, 4.0))
    polyak = {}
    for ax, surface, steps in ((axes[0], "quadratic", 30 // q), (axes[1], "valley", 300 // q)):
        contour(ax, surface)
        for i, (label, opt) in enumerate((("Polyak (f*=0)", jl.optim.Polyak()), ("Polyak scale=0.5", jl.optim.Polyak(0.5)),
                                          ("Polyak max_lr=0.01", jl.optim.Polyak(max_lr=0.01)))):
            pts, states = run(opt, surface, steps)
            path(ax, pts, label, COLORS[i])
            hs = [s["lr"] for s in states]
            losses = [SURFACES[surface]["f"](p)[0] for p in pts]
            polyak[f"{surface}/{label}"] = dict(final_loss=losses[-1], lr_min=min(hs), lr_max=max(hs))
            if i < 2:
                axes[2].semilogy(hs[:60], color=COLORS[i + 2 * (surface == "valley")], lw=0.8, marker=".", ms=2,
                                 label=f"{surface}: {label}")
        ax.legend(loc="lower right" if surface == "quadratic" else "lower left")
    for lam in (1.0, 10.0):
        axes[2].axhline(1 / lam, color="0.6", lw=0.6)
    axes[2].text(0, 1.1, "1/λ of the quadratic (1, 10)", fontsize=7, color="0.4")
    axes[2].set_xlabel("step")
    axes[2].set_ylabel("h = scale (L - f*) / |g|²")
    axes[2].legend(fontsize=7)
    axes[2].set_title("Polyak step sizes (first 60 steps)")
    fig.tight_layout()
    save(fig, args.out, "polyak", written)
    numbers["polyak"] = polyak

    numbers["files"] = written
    numbers["seconds"] = time.perf_counter() - t0
    print(json.dumps(numbers["one_step"], indent=1))
    for fn in written:
        print(f"wrote {fn} ({os.path.getsize(fn) / 1024:.0f} KB)")
    print("RESULT " + json.dumps(numbers))
    return numbers


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
