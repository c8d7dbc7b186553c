"""``jaclab tour``: the main job. On built-in data, with no network, it

(a) checks JVP / VJP / HVP exactness against finite differences on MLP, attention and residual
    blocks (and per-sample / layer Jacobians against ``jl.jacobian``);
(b) verifies the in-context-learning weight-update identity (``jl.analysis.icl_weight_update``)
    and the multi-block token patches of ``jl.analysis.thought_matrices``;
(c) trains a small model with SGD, backward-SGD and RK4 on shared batches and compares them;
(d) tracks geometric complexity, Jacobian spectra and sharpness during training;
(e) shows residual path growth vs depth with and without branch scaling;

and writes a report folder: ``report.md`` (tables) plus PNG plots when matplotlib is installed
(``pip install "jaclab[plots]"``), and ``tour.json`` (the numbers behind the plots).
``run(out, quick=False)`` returns the exit code: 1 when an exactness check fails.
"""
from __future__ import annotations

import json
import math
import os
import sys
import time

import numpy as np

PLOTS_HINT = 'pip install "jaclab[plots]"'


def _rel(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-300))


def _flat(tree) -> np.ndarray:
    import jaclab as jl

    return np.concatenate([np.asarray(t, np.float64).ravel() for t in jl.tree_flatten(tree)[0]])


def _fmt(v, spec=".3g") -> str:
    return "-" if v is None else format(v, spec)


def _table(head, rows) -> list[str]:
    out = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return out


def _pyplot():
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    return plt


# ---- (a) exactness ------------------------------------------------------------------------------
def exactness_rows(name, model, x, rng):
    """JVP, VJP, HVP of loss(params) = mean(model(params, x)^2) vs central differences."""
    import jaclab as jl

    params = model.init(0, np.float64)
    loss = lambda p: jl.mean(jl.square(model.apply(p, x)))  # noqa: E731
    v = jl.tree_map(lambda a: rng.standard_normal(np.shape(a)), params)
    eps = 1e-6
    shift = lambda s: jl.tree_map(lambda a, b: a + s * b, params, v)  # noqa: E731
    fd = (loss(shift(eps)).item() - loss(shift(-eps)).item()) / (2 * eps)
    _, jv = jl.jvp(loss, (params,), (v,))
    g = jl.grad(loss)(params)
    (hv,) = jl.hvp(loss, (params,), (v,))
    gp, gm = jl.grad(loss)(shift(eps)), jl.grad(loss)(shift(-eps))
    hv_fd = (_flat(gp) - _flat(gm)) / (2 * eps)
    return [
        (name, "JVP vs central difference", _rel(jv.item(), fd)),
        (name, "VJP: <grad, v> vs JVP", _rel(float(_flat(g) @ _flat(v)), jv.item())),
        (name, "HVP vs difference of gradients", _rel(_flat(hv), hv_fd)),
    ]


def section_exactness(rng):
    import jaclab as jl
    from jaclab import analysis, nn

    rows = []
    rows += exactness_rows("MLP 8-32-4 gelu", nn.MLP(8, 32, 4, "gelu"), rng.standard_normal((16, 8)), rng)
    rows += exactness_rows("Attention d=8 h=2 causal", nn.Attention(8, 2, True), rng.standard_normal((2, 5, 8)), rng)
    res = nn.Sequential(*[nn.Residual(nn.MLP(8, 16, 8, "tanh"), scale=0.25) for _ in range(4)])
    rows += exactness_rows("Residual MLP x4, s=1/4", res, rng.standard_normal((16, 8)), rng)
    tb = nn.TransformerBlock(8, 2, 16, causal=True, norm="layer")
    rows += exactness_rows("TransformerBlock d=8", tb, rng.standard_normal((2, 5, 8)), rng)

    x = rng.standard_normal((6, 8))
    p = res.init(0)
    J = analysis.input_jacobian(res, p, x)
    Jfull = np.asarray(jl.jacobian(lambda h: res.apply(p, h))(x))
    rows.append(("Residual MLP x4", "per-sample input Jacobian vs jl.jacobian",
                 _rel(J, np.stack([Jfull[b, :, b, :] for b in range(6)]))))
    Js = analysis.layer_jacobians(res, p, x)
    rows.append(("Residual MLP x4", "chained layer Jacobians vs input Jacobian",
                 _rel(analysis.layer_jacobian(res, p, x, 0, len(Js), Js), J)))
    ok = all(e < 1e-6 for _, _, e in rows)
    md = ["Derivatives in float64 against central finite differences (step 1e-6; expect ~1e-8 to 1e-10, the",
          "finite-difference error) and exact paths against each other (expect ~1e-15). Threshold 1e-6.", ""]
    md += _table(["block", "check", "relative error", ""],
                 [(b, c, f"{e:.2e}", "ok" if e < 1e-6 else "**FAILED**") for b, c, e in rows])
    return {"ok": ok, "md": md, "data": {"rows": [[b, c, e] for b, c, e in rows]}}


# ---- (b) ICL weight update ----------------------------------------------------------------------
def section_icl(rng, quick):
    from jaclab import analysis, nn, thought

    d, n_ctx, B = 8, (6 if quick else 16), 4
    block = nn.TransformerBlock(d, 2, 32, causal=True, norm="layer")
    bp = block.init(seed=1)
    C, q = rng.standard_normal((B, n_ctx, d)), rng.standard_normal((B, d))
    upd = analysis.icl_weight_update(block, bp, C, q)
    dyn = analysis.icl_dynamics(block, bp, C, q)
    sv = np.linalg.svd(upd["dW"], compute_uv=False)
    scale = float(np.max(np.abs(upd["y_context"])))
    resid = float(np.max(upd["residual"])) / scale
    rank_ratio = float(np.max(sv[:, 1] / sv[:, 0]))
    W1 = np.asarray(bp["mlp"]["W1"])
    lin = _rel(np.einsum("bi,bij->bj", upd["a_x"], upd["dW"]), upd["dA"] @ W1)
    tele = _rel(dyn["dW"][-1], upd["dW"])
    bp32 = block.init(seed=1, dtype=np.float32)
    upd32 = analysis.icl_weight_update(block, bp32, C.astype(np.float32), q.astype(np.float32))
    resid32 = float(np.max(upd32["residual"])) / scale

    # multi-block: token-dependent thought patches of a 2-block stack reproduce the prompt's effect
    stack = nn.Sequential(nn.TransformerBlock(d, 2, 32), nn.TransformerBlock(d, 2, 32))
    sp = stack.init(seed=2)
    I = rng.standard_normal((B, 4, d))
    rest = rng.standard_normal((B, 5, d))
    th = thought.thought_matrices(stack, sp, I, rest, mode="token")
    th_resid = float(np.max(th["residual"])) / float(np.max(np.abs(th["outputs_full"])))
    cond = thought.thought_matrices(stack, sp, I, rest, mode="condensed")
    gap_none = float(np.mean(np.abs(th["outputs_none"] - th["outputs_full"])))
    gap_cond = float(np.mean(np.abs(cond["outputs_patched"] - cond["outputs_full"])))

    checks = [
        ("block(C, x) = block_{W1+dW}(x) + skip shift, float64", resid, 1e-10),
        ("dW is rank 1: max sigma_2 / sigma_1", rank_ratio, 1e-10),
        ("a_x (W1 + dW) = a(C, x) W1", lin, 1e-10),
        ("token-by-token updates telescope to dW(C)", tele, 1e-10),
        ("2-block stack: token thought patches reproduce [I, C, x] (thought_matrices)", th_resid, 1e-10),
    ]
    ok = all(v < tol for _, v, tol in checks)
    md = [f"A `TransformerBlock` (d={d}, 2 heads, MLP 32, LayerNorm, random float64 weights), {B} queries `x`",
          f"with contexts `C` of {n_ctx} tokens. The context equals a rank-1 update `dW = a_x^T (dA W1) / |a_x|^2`",
          "of the MLP's first weight plus the skip-path shift (papers.md section 3).", ""]
    md += _table(["identity", "relative error", "tolerance", ""],
                 [(c, f"{v:.2e}", f"{tol:.0e}", "ok" if v < tol else "**FAILED**") for c, v, tol in checks])
    md += ["", f"The same identity in float32: relative error {resid32:.1e} (rounding only).",
           f"Condensed thought vectors/matrices of the 2-block stack (one `delta`, one `Delta` per block and",
           f"sequence, least squares): mean |output - output with prompt| = {gap_cond:.3g}, vs {gap_none:.3g} with",
           "no prompt and no patch.", "",
           "Implicit learning dynamics (`icl_dynamics`): `|W_{i+1} - W_i|_F` as context tokens are consumed",
           "(mean over the queries): " + ", ".join(f"{v:.3g}" for v in dyn["step_norms"].mean(axis=1)) + "."]
    data = {"step_norms": dyn["step_norms"].mean(axis=1).tolist(), "checks": [[c, v] for c, v, _ in checks]}

    def plot(plt, out):
        fig, ax = plt.subplots(figsize=(6, 3.6))
        for b in range(B):
            ax.semilogy(np.arange(1, n_ctx + 1), dyn["step_norms"][:, b], marker="o", ms=3, lw=1, label=f"query {b}")
        ax.set_xlabel("context token i")
        ax.set_ylabel(r"$\|W_{i} - W_{i-1}\|_F$")
        ax.set_title("ICL as implicit weight updates: step norms per token")
        ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(os.path.join(out, "b_icl_dynamics.png"), dpi=110)
        plt.close(fig)
        return ["b_icl_dynamics.png"]

    return {"ok": ok, "md": md, "data": data, "plot": plot}


# ---- (c) optimizers on shared batches -----------------------------------------------------------
def _mlp():
    from jaclab import nn

    return nn.Sequential(nn.Linear(2, 32), nn.Tanh(), nn.Linear(32, 32), nn.Tanh(), nn.Linear(32, 3))


def _full(model, params, X, Y):
    import jaclab as jl

    out = np.asarray(model.apply(params, X))
    return float(jl.cross_entropy(out, Y).item()), float(np.mean(np.argmax(out, -1) == Y))


def _smooth(v, k):
    v = np.asarray(v, np.float64)
    k = max(1, min(k, len(v)))
    c = np.cumsum(np.concatenate([[0.0], v]))
    return (c[k:] - c[:-k]) / k


def section_optimizers(quick):
    import jaclab as jl
    from jaclab import nn

    X, Y = jl.data.spirals(600, 3, seed=0)
    model = _mlp()
    p0 = model.init(0)
    lr, bs, N = 0.2, 16, (60 if quick else 400)
    runs = [("SGD", jl.optim.SGD(lr), "forward"), ("backward-SGD", jl.optim.SGD(lr), "backward"),
            ("RK4", jl.optim.RK("rk4", lr), "forward")]
    rows, curves, batches = [], {}, []
    for name, opt, order in runs:
        t0 = time.perf_counter()
        r = jl.optim.train(model, p0, "cross_entropy", (X, Y), opt, steps=N, batch_size=bs, seed=0, order=order)
        secs = time.perf_counter() - t0
        fl, acc = _full(model, r.params, X, Y)
        batches.append(r.batches)
        curves[name] = r.losses
        tail = float(np.mean(r.losses[-max(1, N // 10):]))
        rows.append((name, opt.describe(), r.grad_evals, f"{secs:.2f}", f"{tail:.4f}", f"{fl:.4f}", f"{acc:.3f}"))
    same = all(np.array_equal(batches[0], b) for b in batches[1:])

    # backward-SGD's pathwise convergence: least squares, started at the minimiser (papers.md section 1)
    Xl, Yl = jl.data.teacher_student(512, 10, 32, 1, noise=0.1, seed=0)
    lin = nn.Linear(10, 1)
    w = np.linalg.lstsq(np.hstack([Xl, np.ones((512, 1))]), Yl, rcond=None)[0]
    pl = {"W": w[:10].copy(), "b": w[10].copy()}
    Nl = 100 if quick else 400
    steps_len, rows2 = {}, []
    for name, opt, order in [("SGD", jl.optim.SGD(0.05), "forward"), ("backward-SGD", jl.optim.SGD(0.05), "backward"),
                             ("RK4", jl.optim.RK("rk4", 0.05), "forward")]:
        r = jl.optim.train(lin, pl, "mse", (Xl, Yl), opt, steps=Nl, batch_size=4, seed=0, order=order,
                           trajectory=True)
        th = np.stack([_flat(t) for t in r.trajectory])
        st = np.linalg.norm(np.diff(th, axis=0), axis=1)
        steps_len[name] = st
        spread = float(np.mean(np.std(th[-min(100, Nl // 2):], axis=0)))
        rows2.append((name, r.grad_evals, f"{st[min(9, Nl - 1)]:.2e}", f"{st[-1]:.2e}", f"{spread:.2e}"))

    md = [f"Spirals (600 points, 3 classes), MLP 2-32-32-3 tanh, float64, lr {lr}, batch {bs}, {N} iterates from",
          f"the same initialisation; all three see the same batches ({'checked' if same else '**NOT the same**'}).",
          "backward-SGD's iterate n applies the batch maps n, n-1, ..., 1 to the starting point",
          "(n(n+1)/2 gradient evaluations); RK4 takes 4 gradients per step on the same batch.", ""]
    md += _table(["optimizer", "rule", "grad evals", "seconds", "batch loss (last 10%)", "full-data loss", "accuracy"],
                 rows)
    md += ["", f"Pathwise convergence (papers.md section 1): linear least squares (teacher-student data, 512",
           f"samples), started at the least-squares minimiser, lr 0.05, batch 4, {Nl} iterates. Forward SGD",
           "keeps moving on a noise floor; backward-SGD's step length decays geometrically (the iterates",
           "converge almost surely, to a random point).", ""]
    md += _table(["optimizer", "grad evals", "step length at 10", "final step length",
                  "within-run std of the last iterates"], rows2)
    data = {"losses": {k: v.tolist() for k, v in curves.items()}, "step_lengths": {k: v.tolist() for k, v in
                                                                                    steps_len.items()}}

    def plot(plt, out):
        fig, axs = plt.subplots(1, 2, figsize=(11, 4))
        k = max(1, N // 20)
        for name, v in curves.items():
            axs[0].plot(np.arange(k, len(v) + 1), _smooth(v, k), label=name, lw=1.2)
        axs[0].set_yscale("log")
        axs[0].set_xlabel("iterate n")
        axs[0].set_ylabel(f"minibatch loss (moving mean of {k})")
        axs[0].set_title("Spirals MLP: same batches")
        axs[0].legend()
        for name, v in steps_len.items():
            axs[1].semilogy(np.arange(1, len(v) + 1), np.maximum(v, 1e-18), label=name, lw=1)
        axs[1].set_xlabel("iterate n")
        axs[1].set_ylabel(r"$\|\theta_{n} - \theta_{n-1}\|$")
        axs[1].set_title("Least squares from the minimiser")
        axs[1].legend()
        fig.tight_layout()
        fig.savefig(os.path.join(out, "c_optimizers.png"), dpi=110)
        plt.close(fig)
        return ["c_optimizers.png"]

    return {"ok": True, "md": md, "data": data, "plot": plot}


# ---- (d) geometry during training ---------------------------------------------------------------
def section_geometry(quick):
    import jaclab as jl
    from jaclab import analysis

    X, Y = jl.data.spirals(600, 3, seed=0)
    model = _mlp()
    p0 = model.init(0)
    lr, bs, N, n_ck = 0.5, 32, (120 if quick else 3000), (4 if quick else 15)
    every = max(1, N // n_ck)
    r = jl.optim.train(model, p0, "cross_entropy", (X, Y), jl.optim.SGD(lr), steps=N, batch_size=bs, seed=0,
                       record_every=every, trajectory=True)
    xs = X[:: max(1, 600 // (48 if quick else 128))]
    rows, hist = [], {k: [] for k in ("step", "loss", "acc", "gc", "s_io", "s_hid", "lam")}
    for i, p in enumerate(r.trajectory):
        step = i * every
        fl, acc = _full(model, p, X, Y)
        gc = analysis.geometric_complexity(model, p, xs)
        s_io = analysis.jacobian_spectrum(model, p, xs).mean(axis=0)  # (2,)
        s_hid = analysis.jacobian_spectrum(model, p, xs, layer=(1, 4)).mean(axis=0)[:3]
        loss = lambda q: jl.cross_entropy(model.apply(q, X), Y)  # noqa: E731
        lam, ratio = analysis.sharpness(loss, p, lr, iters=(10 if quick else 20))
        for k, v in zip(hist, (step, fl, acc, gc, s_io.tolist(), s_hid.tolist(), lam)):
            hist[k].append(v)
        rows.append((step, f"{fl:.4f}", f"{acc:.3f}", f"{gc:.3g}", " / ".join(f"{v:.3g}" for v in s_io),
                     " / ".join(f"{v:.3g}" for v in s_hid), f"{lam:.3g}", f"{ratio:.2f}"))
    md = [f"SGD (lr {lr}, batch {bs}, {N} steps) on the spirals MLP; every {every} steps, on the parameters of that",
          f"iterate: full-data loss and accuracy; geometric complexity `GC = mean |J_x logits|_F^2` over {len(xs)}",
          "inputs (exact, `geometric_complexity`); mean top singular values of the per-sample input-output",
          "Jacobian (2 of them: the input is 2-D) and of the hidden-to-hidden Jacobian `d h_4 / d h_1` (32x32,",
          "`jacobian_spectrum(layer=(1, 4))`); the top Hessian eigenvalue of the full-data loss (Lanczos on exact",
          f"HVPs, `sharpness`) and its ratio to GD's stability threshold 2/lr = {2 / lr:g}.", ""]
    md += _table(["step", "loss", "accuracy", "GC", "sigma(J_x)", "top-3 sigma(d h_4/d h_1)", "lambda_max",
                  "lambda_max / (2/lr)"], rows)
    gc_rise = hist["gc"][-1] / hist["gc"][0]
    md += ["", f"GC changed by a factor {gc_rise:.3g} from initialisation to the end; sharpness went from "
               f"{hist['lam'][0]:.3g} to {hist['lam'][-1]:.3g} (threshold {2 / lr:g})."]

    def plot(plt, out):
        fig, axs = plt.subplots(2, 2, figsize=(10, 7))
        st = hist["step"]
        axs[0, 0].plot(st, hist["loss"], "o-", ms=3, label="full-data loss")
        axs[0, 0].plot(st, hist["acc"], "s-", ms=3, label="accuracy")
        axs[0, 0].set_title("training")
        axs[0, 0].legend()
        axs[0, 1].plot(st, hist["gc"], "o-", ms=3, color="C2")
        axs[0, 1].set_title(r"geometric complexity $\mathrm{mean}\,\|J_x f\|_F^2$")
        sio, shid = np.array(hist["s_io"]), np.array(hist["s_hid"])
        for j in range(sio.shape[1]):
            axs[1, 0].plot(st, sio[:, j], "o-", ms=3, label=rf"$\sigma_{j + 1}(J_x)$")
        for j in range(shid.shape[1]):
            axs[1, 0].plot(st, shid[:, j], "--", lw=1, label=rf"$\sigma_{j + 1}(\partial h_4/\partial h_1)$")
        axs[1, 0].set_yscale("log")
        axs[1, 0].set_title("Jacobian spectra (mean over inputs)")
        axs[1, 0].legend(fontsize=7)
        axs[1, 1].plot(st, hist["lam"], "o-", ms=3, color="C3", label=r"$\lambda_{max}(H)$")
        axs[1, 1].axhline(2 / lr, ls="--", color="k", label="2 / lr")
        axs[1, 1].set_title("sharpness")
        axs[1, 1].legend()
        for ax in axs.ravel():
            ax.set_xlabel("step")
        fig.tight_layout()
        fig.savefig(os.path.join(out, "d_geometry.png"), dpi=110)
        plt.close(fig)
        return ["d_geometry.png"]

    return {"ok": True, "md": md, "data": hist, "plot": plot}


# ---- (e) residual path growth -------------------------------------------------------------------
def section_residual(rng, quick):
    from jaclab import analysis, nn

    d = 32
    depths = [1, 2, 4, 8] if quick else [1, 2, 4, 8, 16, 32, 64]
    x = rng.standard_normal((64, d))
    xn = np.linalg.norm(x, axis=1)
    scalings = [("lam = 1", lambda n: 1.0), ("lam = 1/sqrt(n)", lambda n: 1 / math.sqrt(n)),
                ("lam = 1/n", lambda n: 1.0 / n)]
    gains = {s: [] for s, _ in scalings}
    for n in depths:
        base = nn.Sequential(*[nn.Residual(nn.MLP(d, d, d, "relu")) for _ in range(n)]).init(seed=n)
        he = [dict(p, W1=p["W1"] * math.sqrt(2.0), W2=p["W2"] * math.sqrt(2.0)) for p in base]  # He init
        for s, lam in scalings:
            tower = nn.Sequential(*[nn.Residual(nn.MLP(d, d, d, "relu"), lam(n)) for _ in range(n)])
            gains[s].append(float(np.mean(np.linalg.norm(np.asarray(tower.apply(he, x)), axis=1) / xn)))

    # per-order contributions of a linear tower: exact path decomposition
    nl, dl = (6 if quick else 12), 16
    xl = rng.standard_normal((32, dl))
    orders, remainders = {}, []
    for s, lam in scalings:
        tower = nn.Sequential(*[nn.Residual(nn.Linear(dl, dl), lam(nl)) for _ in range(nl)])
        tp = [dict(p, b=np.zeros(dl)) for p in tower.init(seed=3)]
        ex = analysis.residual_expansion(tower, tp, xl)
        orders[s] = (ex["norms"] / np.linalg.norm(xl, axis=1)).mean(axis=1)
        remainders.append(_rel(ex["terms"].sum(axis=0), ex["output"]))
        n_paths = ex["n_paths"]
    # the Moebius decomposition sums back for nonlinear blocks too
    nm = 4 if quick else 6
    mt = nn.Sequential(*[nn.Residual(nn.MLP(8, 16, 8, "tanh"), 0.5) for _ in range(nm)])
    exm = analysis.residual_expansion(mt, mt.init(seed=4), rng.standard_normal((8, 8)), method="moebius")
    moeb = _rel(exm["terms"].sum(axis=0), exm["output"])
    checks = [(f"linear tower n={nl}: path orders sum to the output (worst of 3 scalings)", max(remainders)),
              (f"tanh MLP tower n={nm}: Moebius path decomposition sums to the output", moeb)]
    ok = all(v < 1e-10 for _, v in checks)

    md = [f"Random residual towers `x_k = x_(k-1) + lam f_k(x_(k-1))`, `f_k(x) = W2 relu(W1 x)` (d = hidden = {d},",
          "He init, no normalisation), 64 Gaussian inputs: mean `|F(x)| / |x|` vs depth n. With lam = 1 the",
          "2^n paths add up and the output grows exponentially; lam = 1/sqrt(n) and 1/n keep it bounded",
          "(papers.md section 5).", ""]
    md += _table(["depth n"] + [s for s, _ in scalings],
                 [[n] + [f"{gains[s][i]:.3g}" for s, _ in scalings] for i, n in enumerate(depths)])
    md += ["", f"Per-order contributions of a LINEAR tower (n = {nl}, d = {dl}, `residual_expansion`): mean",
           "`|e_m| / |x|` of the paths through m blocks; there are C(n, m) of them.", ""]
    md += _table(["order m", "paths C(n,m)"] + [s for s, _ in scalings],
                 [[m, int(n_paths[m])] + [f"{orders[s][m]:.3g}" for s, _ in scalings] for m in range(nl + 1)])
    md += [""] + _table(["identity", "relative error", ""],
                        [(c, f"{v:.2e}", "ok" if v < 1e-10 else "**FAILED**") for c, v in checks])
    data = {"depths": depths, "gains": gains, "orders": {k: v.tolist() for k, v in orders.items()},
            "n_paths": n_paths.tolist()}

    def plot(plt, out):
        fig, axs = plt.subplots(1, 2, figsize=(11, 4))
        for s, _ in scalings:
            axs[0].semilogy(depths, gains[s], "o-", label=s)
        axs[0].set_xscale("log", base=2)
        axs[0].set_xlabel("depth n")
        axs[0].set_ylabel(r"mean $\|F(x)\| / \|x\|$")
        axs[0].set_title("relu residual towers (He init)")
        axs[0].legend()
        for s, _ in scalings:
            axs[1].semilogy(range(nl + 1), np.maximum(orders[s], 1e-300), "o-", label=s)
        axs[1].semilogy(range(nl + 1), n_paths, "k:", label="C(n, m)")
        axs[1].set_xlabel("path order m")
        axs[1].set_ylabel(r"mean $\|e_m\| / \|x\|$")
        axs[1].set_title(f"linear tower, n = {nl}: contributions by order")
        axs[1].legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(os.path.join(out, "e_residual.png"), dpi=110)
        plt.close(fig)
        return ["e_residual.png"]

    return {"ok": ok, "md": md, "data": data, "plot": plot}


# ---- driver -------------------------------------------------------------------------------------
SECTIONS = [
    ("a", "(a) Exactness: JVP / VJP / HVP against finite differences"),
    ("b", "(b) In-context learning as a rank-1 weight update"),
    ("c", "(c) Optimizers on shared batches: SGD, backward-SGD, RK4"),
    ("d", "(d) Geometry during training: geometric complexity, Jacobian spectra, sharpness"),
    ("e", "(e) Residual path growth vs depth, with and without scaling"),
]


def run(out: str = "jaclab-report", quick: bool = False, stream=None) -> int:
    """Run the tour, write ``out/report.md`` (+ PNGs, ``tour.json``); return 0, or 1 if a check failed."""
    import jaclab as jl

    stream = stream or sys.stdout
    t_start = time.perf_counter()
    out_dir = os.path.abspath(out)
    os.makedirs(out_dir, exist_ok=True)
    rng = np.random.default_rng(0)
    runners = {
        "a": lambda: section_exactness(rng),
        "b": lambda: section_icl(rng, quick),
        "c": lambda: section_optimizers(quick),
        "d": lambda: section_geometry(quick),
        "e": lambda: section_residual(rng, quick),
    }
    results = {}
    for key, title in SECTIONS:
        t0 = time.perf_counter()
        stream.write(f"{title} ... ")
        stream.flush()
        res = runners[key]()
        res["seconds"] = time.perf_counter() - t0
        results[key] = res
        stream.write(f"{'ok' if res['ok'] else 'FAILED'} ({res['seconds']:.2f} s)\n")
        stream.flush()

    plt = _pyplot()
    figures = {}
    if plt is not None:
        for key, res in results.items():
            if "plot" in res:
                figures[key] = res["plot"](plt, out_dir)

    ok = all(r["ok"] for r in results.values())
    total = time.perf_counter() - t_start
    info = jl.info()
    lines = ["# jaclab tour", "",
             f"jaclab {jl.__version__}; BLAS: {info['blas']}; {'quick mode; ' if quick else ''}"
             f"took {total:.1f} s. Exactness checks: **{'all passed' if ok else 'SOME FAILED'}**.", ""]
    lines += [f"- [{title}](#{_anchor(title)}): {'ok' if results[k]['ok'] else 'FAILED'}"
              for k, title in SECTIONS]
    if plt is None:
        lines += ["", f"Plots: matplotlib is not installed, so this report has tables only. To get the PNG plots: "
                      f'`{PLOTS_HINT}` and run `jaclab tour` again.']
    for key, title in SECTIONS:
        lines += ["", f"## {title}", ""] + results[key]["md"]
        for fig in figures.get(key, []):
            lines += ["", f"![{title}]({fig})"]
        lines += ["", f"_({results[key]['seconds']:.2f} s)_"]
    path = os.path.join(out_dir, "report.md")
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    with open(os.path.join(out_dir, "tour.json"), "w") as f:
        json.dump({k: _jsonable(r["data"]) for k, r in results.items()}, f)
    pngs = sorted(p for v in figures.values() for p in v)
    stream.write(f"\n{'All exactness checks passed' if ok else 'SOME EXACTNESS CHECKS FAILED'}; "
                 f"took {total:.1f} s.\n")
    if pngs:
        stream.write(f"plots: {', '.join(pngs)}\n")
    else:
        stream.write(f"no plots: matplotlib is not installed ({PLOTS_HINT})\n")
    stream.write(f"report written to {path}\n")
    return 0 if ok else 1


def _anchor(title: str) -> str:
    keep = "".join(c for c in title.lower() if c.isalnum() or c in " -_")
    return keep.replace(" ", "-")


def _jsonable(v):
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if isinstance(v, np.ndarray):
        return v.tolist()
    if isinstance(v, (np.floating, np.integer)):
        return v.item()
    return v
