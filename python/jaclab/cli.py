"""The ``jaclab`` command.

    jaclab info            version, BLAS, threads, CUDA
    jaclab tour [--out D]  exactness tour: JVP / VJP / HVP of MLP, attention and residual
                           blocks against float64 central finite differences, per-sample
                           Jacobians against jl.jacobian; writes D/report.md (default
                           ./jaclab-report) and prints where it is.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np


def _info(_args) -> int:
    import jaclab as jl

    print(json.dumps(jl.info(), indent=2))
    return 0


def _rel(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-300))


def _tree_vdot(a, b) -> float:
    import jaclab as jl

    la, lb = jl.tree_flatten(a)[0], jl.tree_flatten(b)[0]
    return float(sum(np.vdot(np.asarray(x), np.asarray(y)) for x, y in zip(la, lb)))


def _exactness_rows(name, model, x, rng):
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
    hv_fd = jl.tree_map(lambda a, b: (np.asarray(a) - np.asarray(b)) / (2 * eps), gp, gm)
    hv_l = np.concatenate([np.asarray(t).ravel() for t in jl.tree_flatten(hv)[0]])
    hv_fd_l = np.concatenate([np.asarray(t).ravel() for t in jl.tree_flatten(hv_fd)[0]])
    return [
        (name, "JVP vs central difference", _rel(jv.item(), fd)),
        (name, "VJP: <grad, v> vs JVP", _rel(_tree_vdot(g, v), jv.item())),
        (name, "HVP vs difference of gradients", _rel(hv_l, hv_fd_l)),
    ]


def _tour(args) -> int:
    import jaclab as jl
    from jaclab import analysis, nn

    t0 = time.perf_counter()
    out_dir = os.path.abspath(args.out)
    os.makedirs(out_dir, exist_ok=True)
    rng = np.random.default_rng(0)
    rows = []
    rows += _exactness_rows("MLP 8-32-4 gelu", nn.MLP(8, 32, 4, "gelu"), rng.standard_normal((16, 8)), rng)
    rows += _exactness_rows("Attention d=8 h=2 causal", nn.Attention(8, 2, True), rng.standard_normal((2, 5, 8)), rng)
    res = nn.Sequential(*[nn.Residual(nn.MLP(8, 16, 8, "tanh"), scale=0.25) for _ in range(4)])
    rows += _exactness_rows("Residual MLP x4, s=1/4", res, rng.standard_normal((16, 8)), rng)
    tb = nn.TransformerBlock(8, 2, 16, causal=True, norm="layer")
    rows += _exactness_rows("TransformerBlock d=8", tb, rng.standard_normal((2, 5, 8)), rng)

    x = rng.standard_normal((6, 8))
    p = res.init(0)
    J = analysis.input_jacobian(res, p, x)
    Jfull = jl.jacobian(lambda h: res.apply(p, h))(x)
    rows.append(("Residual MLP x4", "per-sample input Jacobian vs jl.jacobian",
                 _rel(J, np.stack([Jfull[b, :, b, :] for b in range(6)]))))
    Js = analysis.layer_jacobians(res, p, x)
    rows.append(("Residual MLP x4", "chained layer Jacobians vs input Jacobian",
                 _rel(analysis.layer_jacobian(res, p, x, 0, len(Js), Js), J)))

    lines = ["# jaclab tour: exactness report", "", f"jaclab {jl.__version__}; BLAS: {jl.info()['blas']}", "",
             "Derivatives in float64 against central finite differences (step 1e-6; expect ~1e-8 to 1e-10, the",
             "finite-difference error) and exact paths against each other (expect ~1e-15).", "",
             "| block | check | relative error |", "| --- | --- | --- |"]
    lines += [f"| {b} | {c} | {e:.2e} |" for b, c, e in rows]
    ok = all(e < 1e-6 for _, _, e in rows)
    lines += ["", f"All checks {'passed' if ok else 'FAILED'} (threshold 1e-6). Took {time.perf_counter() - t0:.1f} s."]
    path = os.path.join(out_dir, "report.md")
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))
    print(f"\nreport written to {path}")
    return 0 if ok else 1


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="jaclab", description="Exact derivatives for MLP, attention and residual blocks.")
    sub = parser.add_subparsers(dest="cmd")
    sub.add_parser("info", help="version, BLAS, threads, CUDA").set_defaults(fn=_info)
    tour = sub.add_parser("tour", help="exactness tour; writes a markdown report")
    tour.add_argument("--out", default="jaclab-report", help="report folder (default ./jaclab-report)")
    tour.set_defaults(fn=_tour)
    args = parser.parse_args(argv)
    if not getattr(args, "fn", None):
        args = parser.parse_args(["tour"] + (argv or []))
    return args.fn(args)


if __name__ == "__main__":
    sys.exit(main())
