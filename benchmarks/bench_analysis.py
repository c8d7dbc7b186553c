#!/usr/bin/env python
"""jaclab analysis benchmark: geometric complexity and Hessian eigenvalues on W1.

Workload W1 of bench_blocks.py (Sequential 784-512-512-512-10 tanh, batch 256, jaclab ``init``
parameters fed to every library), float64 and float32. Prints markdown tables; not a test:
nothing asserted, targets are only marked.

    python benchmarks/bench_analysis.py                    # full run (~1-2 min on 2 cores)
    python benchmarks/bench_analysis.py --quick            # smoke run (~20-50 s per dtype); not for quoting
    python benchmarks/bench_analysis.py --dtype float32    # repeatable; default both

1. Geometric complexity GC = mean_b ||d f(x_b) / d x_b||_F^2 (logits, exact): jaclab
   ``jl.analysis.geometric_complexity(model, p, x)`` vs JAX ``jax.jit`` of ``vmap(jacrev)`` +
   the mean of squared Frobenius norms, and ``torch.func`` ``vmap(jacrev)`` (eager) + the same.
   Target: jaclab >= 2x faster than JAX. GEMM bound: reverse mode costs 11·F model FLOPs (one
   forward + one backward sweep per output, F = forward FLOPs; see bench_blocks.py), bound time
   = 11·F / jaclab's 1024³ GEMM peak. The GC values must agree (~1e-12 f64, ~1e-5 f32).
2. ``jl.analysis.hessian_eigs(loss, p, k=5)`` with loss = cross-entropy of the logits, at the
   default iters (min(n, max(3k, k + 30)) = 35) and at iters=60, next to the same number of
   plain ``jl.hvp(loss, (p,), (v,))`` calls along a fixed random tangent (HVP-only baseline):
   Lanczos (``_lanczos``) calls ``_hvp_flat``'s matvec, i.e. one ``jl.hvp``, exactly once per
   iteration (checked at run time by counting). Target: eigs time / HVP-only time <= 1.2.
   A jitted JAX HVP (bench_blocks' ``hvp`` task) per-call time × iters is shown for reference.

Timing as in bench_blocks.py: each library (or variant) in its own ``bench_core.blocked`` block
with a sleep before it, three rounds of blocks (A B C / C B A / A B C), first call untimed (JIT
compile / warm-up); slow rows (a call > 0.3 s) get one call per block. Section 2 calls take
seconds: one call per block, five rounds (one with --quick); its ratio is the median over rounds of
eigs / HVP-only measured in adjacent blocks of the same round.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_blocks import (DTYPES, first_calls, fwd_flops, gemm_peak, gemms_mlp, jax_tasks, jx_mlp,  # noqa: E402
                          make_workload, print_header, th_mlp)
from bench_core import NA, blocked, jax, jnp, summarize, table, tfunc, torch  # noqa: E402

import jaclab as jl  # noqa: E402

LIBS = ("jaclab", "jax", "torch")
K = 5  # hessian_eigs(k=5)
GC_TARGET, EIGS_TARGET = 2.0, 1.2


def noise_of(times: dict) -> str:
    """summarize's spread, or n/a when some entry has a single sample (--quick section 2)."""
    return NA if min(len(v) for v in times.values()) < 2 else summarize(times)[1]


def time_fns(fns: dict, reps: dict) -> tuple[dict, dict, str]:
    """(first-call results, median ms per name, noise) over three rounds of blocks, after first_calls."""
    res, first = first_calls(fns)
    slow = first > 0.3
    warmup = 0 if slow else 1 if first > 0.05 else 2
    times = blocked(fns, min_reps=3 if slow else reps["min"], max_reps=reps["max"], budget_s=reps["budget"],
                    rounds=3, warmup=warmup)
    return res, {k: s * 1e3 for k, s in summarize(times)[0].items()}, noise_of(times)


# --- 1. geometric complexity -----------------------------------------------------------------
def gc_fns(w) -> dict:
    model, p, X = w["model"], jl.tree_map(jl.array, w["params"]), jl.array(w["x"])
    fns = {"jaclab": lambda: jl.analysis.geometric_complexity(model, p, X)}
    if jax is not None:
        pj, Xj = jax.tree_util.tree_map(jnp.asarray, w["params"]), jnp.asarray(w["x"])
        gc = jax.jit(lambda p, X: jnp.mean(jnp.sum(jnp.square(
            jax.vmap(jax.jacrev(jx_mlp, argnums=1), in_axes=(None, 0))(p, X)), axis=(1, 2))))
        fns["jax"] = lambda: jax.block_until_ready(gc(pj, Xj))
    if torch is not None:
        t = lambda a: torch.from_numpy(np.ascontiguousarray(a).copy())  # noqa: E731
        pt, Xt = jl.tree_map(t, w["params"]), t(w["x"])
        jac = tfunc.vmap(tfunc.jacrev(th_mlp, argnums=1), in_dims=(None, 0))
        fns["torch"] = lambda: torch.mean(torch.sum(torch.square(jac(pt, Xt)), dim=(1, 2)))
    return fns


def bench_gc(dtypes, reps) -> list:
    rows = []
    for dt in dtypes:
        w = make_workload("W1", DTYPES[dt])
        res, ms, noise = time_fns(gc_fns(w), reps)
        val = {lib: float(r) for lib, r in res.items()}
        rd = {lib: abs(val["jaclab"] - v) / abs(v) for lib, v in val.items() if lib != "jaclab"}
        rows.append(dict(dtype=dt, flops=11 * fwd_flops(gemms_mlp(w["x"].shape[0])), ms=ms, gc=val["jaclab"], rd=rd,
                         noise=noise, load=os.getloadavg()[0]))
        print(f"  GC W1 {dt}: " + ", ".join(f"{k} {v:.2f} ms" for k, v in ms.items())
              + f"; rel diff {', '.join(f'{k} {v:.1e}' for k, v in rd.items())}; noise {noise}; "
              f"load {rows[-1]['load']:.2f}", file=sys.stderr, flush=True)  # progress
    return rows


def gc_table(rows, peaks) -> str:
    out = []
    for r in rows:
        ms, rd = r["ms"], r["rd"]
        bound_ms = r["flops"] / (peaks[r["dtype"]] * 1e9) * 1e3
        peers = [ms[k] for k in ("jax", "torch") if k in ms]
        sp_jax = ms["jax"] / ms["jaclab"] if "jax" in ms else None
        cell = lambda k: f"{ms[k]:.2f}" if k in ms else NA  # noqa: E731
        out.append([r["dtype"], f"{r['flops'] / 1e9:.2f}", cell("jaclab"), cell("jax"), cell("torch"),
                    NA if sp_jax is None else f"**{sp_jax:.2f}x**",
                    f"{min(peers) / ms['jaclab']:.2f}x" if peers else NA,
                    NA if sp_jax is None else ("yes" if sp_jax >= GC_TARGET else "**no**"),
                    " / ".join(f"{bound_ms / ms[k]:.0%}" if k in ms else NA for k in LIBS),
                    f"{r['gc']:.10g}", *(f"{rd[k]:.1e}" if k in rd else NA for k in ("jax", "torch")),
                    r["noise"], f"{r['load']:.2f}"])
    return table(["dtype", "model GFLOP (11·F)", "jaclab ms", "jax jit ms", "torch.func ms", "speed-up vs JAX",
                  "speed-up vs best peer", f"≥ {GC_TARGET:g}x vs JAX", "% GEMM bound (jl / jax / torch)",
                  "GC (jaclab)", "rel diff vs jax", "rel diff vs torch", "noise", "load 1 min"], out)


# --- 2. hessian_eigs vs its HVPs -------------------------------------------------------------
def count_hvps(loss, p) -> int:
    """jl.hvp calls made by one hessian_eigs(loss, p, k=K) at default iters (counted via the name
    that analysis._hvp_flat calls; restored afterwards). Also the untimed warm-up call."""
    real, calls = jl.analysis.hvp, [0]

    def counting(*a, **kw):
        calls[0] += 1
        return real(*a, **kw)

    jl.analysis.hvp = counting
    try:
        jl.analysis.hessian_eigs(loss, p, k=K)
    finally:
        jl.analysis.hvp = real
    return calls[0]


def bench_eigs(dtypes, reps, rounds) -> str:
    rows = []
    for dt in dtypes:
        w = make_workload("W1", DTYPES[dt])
        model, p, v = w["model"], jl.tree_map(jl.array, w["params"]), jl.tree_map(jl.array, w["tangent"])
        X, y = jl.array(w["x"]), jl.array(w["labels"])
        loss = lambda p: jl.cross_entropy(model.apply(p, X), y)  # noqa: E731
        n = sum(int(np.prod(a.shape)) for a in jl.tree_flatten(w["params"])[0])
        settings = [("default", min(n, max(3 * K, K + 30))), ("60", 60)]
        c = count_hvps(loss, p)
        if c != settings[0][1]:
            print(f"WARNING: hessian_eigs(k={K}) made {c} HVPs, not iters = {settings[0][1]}: the HVP-only "
                  "baseline below assumes one per Lanczos iteration", flush=True)
        eig, fns = {}, {}
        for label, it in settings:
            kw = {} if label == "default" else {"iters": it}

            def eigs(label=label, kw=kw):
                eig[label] = jl.analysis.hessian_eigs(loss, p, k=K, **kw)

            def hvps(it=it):
                for _ in range(it):
                    out = jl.hvp(loss, (p,), (v,))
                return out

            fns[f"eigs {label}"], fns[f"hvp×{it}"] = eigs, hvps
        jl.hvp(loss, (p,), (v,))
        times = blocked(fns, min_reps=rounds, max_reps=rounds, budget_s=0.0, rounds=rounds, warmup=0)
        ms, noise = {k: s * 1e3 for k, s in summarize(times)[0].items()}, noise_of(times)
        jx_ms = None
        if jax is not None:
            time.sleep(0.25)
            _, jm, _ = time_fns({"jax": jax_tasks(w)["hvp"]}, reps)
            jx_ms = jm["jax"]
        load = os.getloadavg()[0]
        for label, it in settings:
            e, h = ms[f"eigs {label}"], ms[f"hvp×{it}"]
            # Median over rounds of eigs / HVP-only from the same round (their blocks are adjacent):
            # this VM's speed drifts by 10-30% over minutes, which a ratio of medians taken
            # over different minutes picks up and a per-round ratio mostly cancels.
            ratio = statistics.median(a / b for a, b in zip(times[f"eigs {label}"], times[f"hvp×{it}"]))
            print(f"  hessian_eigs W1 {dt} iters={it}: eigs {e:.0f} ms, {it} HVPs {h:.0f} ms, ratio {ratio:.3f}"
                  + (f", jax HVP×{it} {jx_ms * it:.0f} ms" if jx_ms else "") + f"; noise {noise}; load {load:.2f}",
                  file=sys.stderr, flush=True)
            rows.append([dt, f"{it}{' (default)' if label == 'default' else ''}", f"{c / settings[0][1]:g}", f"{e:.0f}", f"{h:.0f}",
                         f"**{ratio:.3f}**", "yes" if ratio <= EIGS_TARGET else "**no**", f"{h / it:.1f}",
                         NA if jx_ms is None else f"{jx_ms * it:.0f}",
                         NA if jx_ms is None else f"{h / (jx_ms * it):.2f}",
                         f"{eig[label][0]:.6g}", noise, f"{load:.2f}"])
    return table(["dtype", "iters = HVPs", "HVPs per iter (counted)", "hessian_eigs ms", "HVP-only ms",
                  "ratio eigs / HVP-only", f"≤ {EIGS_TARGET:g}", "jaclab ms per HVP", "jax jit HVP × iters ms",
                  "jaclab HVP-only / jax", "λ1", "noise", "load 1 min"], rows)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="few repeats, one round in section 2; not for quoting")
    ap.add_argument("--dtype", action="append", choices=list(DTYPES), help="repeatable; default both")
    args = ap.parse_args(argv)
    dtypes = args.dtype or ["float64", "float32"]
    reps = dict(min=3, max=6, budget=0.25) if args.quick else dict(min=6, max=60, budget=0.8)
    rounds = 1 if args.quick else 5

    t0 = time.perf_counter()
    peaks = print_header("analysis", dtypes, args.quick)
    gc_rows = bench_gc(dtypes, reps)
    eigs_table = bench_eigs(dtypes, reps, rounds)
    time.sleep(0.5)
    for dt in dtypes:  # peak again at the end: the better of the two is used
        peaks[dt] = max(peaks[dt], gemm_peak(DTYPES[dt], 6 if args.quick else 15))
    print("GEMM peak at end, used for % bound (best of start/end): "
          + ", ".join(f"{dt} {g:.1f} GFLOP/s" for dt, g in peaks.items()))
    print("\n## 1. Geometric complexity on W1 (median ms per call)\n")
    print("jaclab `jl.analysis.geometric_complexity(model, p, x)` (batched reverse sweeps, 10 directions); JAX `jax.jit` of "
          "`vmap(jacrev(f))` + mean of squared Frobenius norms; torch `torch.func.vmap(jacrev(f))` + the same. "
          "speed-up = peer ms / jaclab ms (target ≥ 2x vs JAX). % GEMM bound = (11·F / jaclab GEMM peak) "
          "/ measured time, jaclab / jax / torch. rel diff = |GC_jaclab − GC_peer| / |GC_peer|.\n")
    print(gc_table(gc_rows, peaks))
    print("\n## 2. `hessian_eigs(loss, p, k=5)` on W1 vs the HVPs it performs (median ms per call)\n")
    print("loss = `jl.cross_entropy(model.apply(p, X), labels)`. HVP-only = the same number of "
          "`jl.hvp(loss, (p,), (v,))` calls along a fixed random tangent (one per Lanczos iteration; "
          "counted on the untimed warm-up call at default iters). ratio = median over rounds of "
          "hessian_eigs / HVP-only timed in adjacent blocks of the same round (target ≤ 1.2: no overhead beyond the HVPs). jax = jitted forward-over-reverse HVP, "
          "per-call median × iters (reference only). λ1 = largest Ritz value of that call."
          + (" --quick: one call per variant, noise n/a." if args.quick else "") + "\n")
    print(eigs_table)
    print(f"\nload avg at end: {' / '.join(f'{x:.2f}' for x in os.getloadavg())}; "
          f"total {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
