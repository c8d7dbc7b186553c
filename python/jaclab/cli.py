"""The ``jaclab`` command.

    jaclab info            version, BLAS, threads, CUDA
    jaclab tour [--out D] [--quick]
                           the main job (jaclab.tour), on built-in data: (a) JVP / VJP / HVP
                           exactness vs finite differences, (b) the ICL weight-update identity,
                           (c) SGD vs backward-SGD vs RK4 on shared batches, (d) geometric
                           complexity, Jacobian spectra and sharpness during training, (e)
                           residual path growth vs depth; writes D/report.md + PNG plots (default
                           ./jaclab-report). Exit code 1 if an exactness check fails.
    jaclab train [...]     train a model on built-in data with the C++ loop (jl.optim.train):
                           progress bar, summary table, loss-curve PNG (needs matplotlib);
                           --compare sgd,adam,rk4 runs several optimizers on the same batches.
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


def _tour(args) -> int:
    from jaclab import tour

    return tour.run(args.out, quick=args.quick)


# ---- train ----------------------------------------------------------------------------------------
OPTIMIZER_CHOICES = ("sgd", "momentum", "nesterov", "adam", "adamw", "backward-sgd", "euler", "heun", "midpoint", "rk4",
                     "rk4-adam", "rk23", "rk45", "polyak")
DEFAULT_LR = {"sgd": 0.1, "momentum": 0.05, "nesterov": 0.05, "adam": 0.01, "adamw": 0.01, "backward-sgd": 0.1,
              "euler": 0.1, "heun": 0.1, "midpoint": 0.1, "rk4": 0.1, "rk4-adam": 0.01, "rk23": 0.1, "rk45": 0.1,
              "polyak": 1.0}


def make_optimizer(name: str, lr: float | None):
    """(optimizer, order) for a CLI name; ``lr`` None takes the name's default (polyak: lr = max step)."""
    from jaclab import optim

    lr = DEFAULT_LR[name] if lr is None else lr
    if name in ("sgd", "backward-sgd"):
        return optim.SGD(lr), ("backward" if name == "backward-sgd" else "forward")
    table = {
        "momentum": lambda: optim.Momentum(lr, 0.9),
        "nesterov": lambda: optim.Momentum(lr, 0.9, nesterov=True),
        "adam": lambda: optim.Adam(lr),
        "adamw": lambda: optim.AdamW(lr),
        "rk4-adam": lambda: optim.RK("rk4", lr, preconditioner="adam"),
        "polyak": lambda: optim.Polyak(max_lr=lr),
    }
    if name in table:
        return table[name](), "forward"
    if name in ("euler", "heun", "midpoint", "rk4", "rk23", "rk45"):
        return optim.RK(name, lr), "forward"
    raise ValueError(f"unknown optimizer {name!r} (choices: {', '.join(OPTIMIZER_CHOICES)})")


def make_task(model: str, data: str | None, seed: int):
    """(model, loss, X, Y, description) for the CLI's models and data sets."""
    import jaclab as jl
    from jaclab import nn

    data = data or ("icl" if model == "transformer" else "spirals")
    if data == "spirals":
        X, Y = jl.data.spirals(600, 3, seed=seed)
        loss, d_out = "cross_entropy", 3
    elif data == "moons":
        X, Y = jl.data.two_moons(400, seed=seed)
        loss, d_out = "cross_entropy", 2
    elif data == "digits":
        X, Y = jl.data.digits()
        loss, d_out = "cross_entropy", 10
    elif data == "teacher":
        X, Y = jl.data.teacher_student(512, 10, 32, 1, noise=0.05, seed=seed)
        loss, d_out = "mse", 1
    elif data == "icl":
        X, Y = jl.data.icl_regression(512, n_context=8, d=4, seed=seed)
        loss, d_out = "mse", 1
    else:
        raise ValueError(f"unknown data {data!r} (spirals, moons, digits, teacher, icl)")
    if (model == "transformer") != (X.ndim == 3):
        raise ValueError(f"--model {model} does not fit --data {data} (transformer <-> icl)")
    d_in = X.shape[-1]
    if model == "mlp":
        m = nn.Sequential(nn.Linear(d_in, 64), nn.Tanh(), nn.Linear(64, 64), nn.Tanh(), nn.Linear(64, d_out))
    elif model == "resmlp":
        m = nn.Sequential(nn.Linear(d_in, 32), *[nn.Residual(nn.MLP(32, 64, 32, "gelu"), 0.5) for _ in range(3)],
                          nn.Linear(32, d_out))
    elif model == "transformer":
        m = nn.Sequential(nn.Linear(d_in, 16), nn.TransformerBlock(16, 2, 32), nn.TransformerBlock(16, 2, 32),
                          nn.LastToken(), nn.Linear(16, d_out))
    else:
        raise ValueError(f"unknown model {model!r} (mlp, resmlp, transformer)")
    return m, loss, X, Y, f"{data} ({X.shape[0]} samples, {loss})"


def _full_metrics(model, params, loss, X, Y):
    import jaclab as jl

    out = np.asarray(model.apply(params, X))
    if loss == "cross_entropy":
        return float(jl.cross_entropy(out, Y).item()), float(np.mean(np.argmax(out, -1) == Y))
    return float(np.mean((out - Y) ** 2)), None


class ProgressBar:
    """A one-line text progress bar on stderr, driven by jl.optim.train's callback."""

    def __init__(self, label: str, total: int, stream=None, width: int = 28):
        self.label, self.total, self.width = label, total, width
        self.stream = stream or sys.stderr

    def __call__(self, step: int, loss: float, elapsed: float):
        frac = step / self.total
        bar = "#" * int(self.width * frac) + "-" * (self.width - int(self.width * frac))
        rate = step / elapsed if elapsed > 0 else float("inf")
        self.stream.write(f"\r{self.label:>14} [{bar}] {step}/{self.total} loss {loss:.4g} {rate:,.0f} it/s")
        if step == self.total:
            self.stream.write("\n")
        self.stream.flush()
        return True


def _train(args) -> int:
    import jaclab as jl

    names = [n.strip() for n in (args.compare.split(",") if args.compare else [args.optimizer]) if n.strip()]
    for n in names:
        if n not in OPTIMIZER_CHOICES:
            print(f"jaclab train: unknown optimizer {n!r} (choices: {', '.join(OPTIMIZER_CHOICES)})", file=sys.stderr)
            return 2
    try:
        model, loss, X, Y, desc = make_task(args.model, args.data, args.seed)
    except (ValueError, ImportError) as e:
        print(f"jaclab train: {e}", file=sys.stderr)
        return 2
    params = model.init(args.seed)
    print(f"model {args.model}: {model._spec().describe()}\ndata  {desc}; {args.steps} steps, batch {args.batch_size}, "
          f"seed {args.seed} (all optimizers see the same batches)")
    rows, curves = [], {}
    for name in names:
        opt, order = make_optimizer(name, args.lr)
        steps = args.steps
        t0 = time.perf_counter()
        r = jl.optim.train(model, params, loss, (X, Y), opt, steps=steps, batch_size=args.batch_size, seed=args.seed,
                           order=order, record_every=max(1, steps // 200), callback=ProgressBar(name, steps))
        secs = time.perf_counter() - t0
        full_loss, acc = _full_metrics(model, r.params, loss, X, Y)
        tail = r.losses[-max(1, len(r.losses) // 10):]
        rows.append((name, opt.describe(), order, r.steps, r.grad_evals, secs, float(np.mean(tail)), full_loss, acc))
        curves[name] = r.losses
        if r.stopped:
            print(f"{name}: stopped after {r.steps} steps", file=sys.stderr)
            break
    print()
    head = "| optimizer | rule | order | steps | grad evals | seconds | batch loss (last 10%) | full-data loss |" + (
        " accuracy |" if loss == "cross_entropy" else "")
    print(head)
    print("|" + " --- |" * (head.count("|") - 1))
    for name, rule, order, steps, ev, secs, bl, fl, acc in rows:
        line = f"| {name} | {rule} | {order} | {steps} | {ev} | {secs:.2f} | {bl:.4g} | {fl:.4g} |"
        if acc is not None:
            line += f" {acc:.3f} |"
        print(line)
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        np.savez(os.path.join(args.out, "losses.npz"), **{k: v for k, v in curves.items()})
        try:
            import matplotlib

            matplotlib.use("Agg")
            import matplotlib.pyplot as plt
        except ImportError:
            print(f"\nmatplotlib is not installed: no PNG (losses saved to {args.out}/losses.npz; pip install matplotlib)")
            return 0
        fig, ax = plt.subplots(figsize=(7, 4))
        for k, v in curves.items():
            ax.plot(np.arange(1, len(v) + 1), v, label=k, lw=1)
        ax.set_xlabel("iterate")
        ax.set_ylabel(f"minibatch {loss}")
        ax.set_yscale("log")
        ax.legend()
        ax.set_title(f"{args.model} on {desc}")
        fig.tight_layout()
        path = os.path.join(args.out, "losses.png")
        fig.savefig(path, dpi=120)
        print(f"\nplot written to {path}")
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="jaclab", description="Exact derivatives for MLP, attention and residual blocks.")
    sub = parser.add_subparsers(dest="cmd")
    sub.add_parser("info", help="version, BLAS, threads, CUDA").set_defaults(fn=_info)
    tour = sub.add_parser("tour", help="the main job: exactness, ICL identity, optimizers, geometry, residual "
                                       "growth; writes a report folder")
    tour.add_argument("--out", default="jaclab-report", help="report folder (default ./jaclab-report)")
    tour.add_argument("--quick", action="store_true", help="small sizes, a few seconds (for tests)")
    tour.set_defaults(fn=_tour)
    tr = sub.add_parser("train", help="train on built-in data with the C++ loop; progress, summary, plot")
    tr.add_argument("--model", choices=("mlp", "resmlp", "transformer"), default="mlp")
    tr.add_argument("--data", choices=("spirals", "moons", "digits", "teacher", "icl"), default=None,
                    help="default: spirals (mlp, resmlp), icl (transformer)")
    tr.add_argument("--optimizer", choices=OPTIMIZER_CHOICES, default="sgd")
    tr.add_argument("--compare", default=None, help="comma-separated optimizers, run on the same batches")
    tr.add_argument("--steps", type=int, default=2000)
    tr.add_argument("--lr", type=float, default=None, help="default: per optimizer")
    tr.add_argument("--batch-size", type=int, default=16)
    tr.add_argument("--seed", type=int, default=0)
    tr.add_argument("--out", default="jaclab-train", help="folder for losses.npz and losses.png ('' = none)")
    tr.set_defaults(fn=_train)
    args = parser.parse_args(argv)
    if not getattr(args, "fn", None):
        args = parser.parse_args(["tour"] + (argv or []))
    return args.fn(args)


if __name__ == "__main__":
    sys.exit(main())
