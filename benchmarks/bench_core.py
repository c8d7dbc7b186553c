#!/usr/bin/env python
"""jaclab core benchmark: call overhead, GEMM throughput, JVP/VJP/HVP of a tanh MLP.

Prints markdown tables (median of repeated ``time.perf_counter`` timings, after warm-up) next
to NumPy, JAX (jit) and PyTorch (torch.func, eager) when those are installed, plus the machine
it ran on. Not a test: nothing is asserted, targets are only marked.

    python benchmarks/bench_core.py            # full run (~1-3 min)
    python benchmarks/bench_core.py --quick    # smoke run (few repeats)

Peers run in the same process, each timed in its own block (with a short sleep before it so the
previous library's spinning BLAS/OpenMP threads go idle), blocks alternating A B C / C B A.
"""
from __future__ import annotations

import argparse
import ctypes
import gc
import os
import platform
import statistics
import sys
import time
import timeit

import numpy as np

import jaclab as jl

# --- optional peers (import guarded; a missing one prints "n/a") -------------------------------
try:
    import jax
    import jax.numpy as jnp

    jax.config.update("jax_enable_x64", True)  # float64 rows must really be float64 in JAX
except Exception:  # noqa: BLE001
    jax = jnp = None
try:
    import torch
    import torch.func as tfunc
except Exception:  # noqa: BLE001
    torch = tfunc = None

NA = "n/a"


# --- machine facts ---------------------------------------------------------------------------
def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def numpy_blas() -> str:
    """NumPy's BLAS as configured at build time, plus the runtime OpenBLAS core/threads."""
    try:
        b = np.__config__.CONFIG["Build Dependencies"]["blas"]
        s = f"{b.get('name')} {b.get('version')}"
    except Exception:  # noqa: BLE001
        s = "unknown"
    np.ones(2) @ np.ones(2)  # make sure the library is loaded
    try:
        with open("/proc/self/maps") as f:
            libs = sorted({ln.split()[-1] for ln in f if "numpy.libs" in ln and "openblas" in ln.lower()})
        for p in libs:
            lib = ctypes.CDLL(p)
            for pre, suf in (("scipy_", "64_"), ("scipy_", ""), ("", "64_"), ("", "")):
                try:
                    core = getattr(lib, f"{pre}openblas_get_corename{suf}")
                    nth = getattr(lib, f"{pre}openblas_get_num_threads{suf}")
                except AttributeError:
                    continue
                core.restype, nth.restype = ctypes.c_char_p, ctypes.c_int
                return f"{s} (core {core().decode()}, {nth()} threads)"
    except Exception:  # noqa: BLE001
        pass
    return s


def torch_blas() -> str:
    for line in torch.__config__.show().splitlines():
        for tok in line.replace(",", " ").split():
            if tok.startswith("BLAS_INFO="):
                return tok.split("=", 1)[1]
    return "?"


def machine_report() -> str:
    info = jl.info()
    aff = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    env = {k: os.environ[k] for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "XLA_FLAGS")
           if k in os.environ}
    rows = [
        ("CPU", cpu_model()),
        ("cores", f"{os.cpu_count()} logical, {aff} usable"),
        ("load avg (1/5/15 min)", " / ".join(f"{x:.2f}" for x in os.getloadavg())),
        ("python", f"{platform.python_version()} ({platform.machine()}, {platform.system()})"),
        ("jaclab", f"{info['version']}; BLAS {info['blas']} on {info['blas_threads']} thread(s); "
                   f"pool threads={info['threads']} (GEMMs split by jaclab's pool)"),
        ("numpy", f"{np.__version__}; BLAS {numpy_blas()}"),
        ("jax", f"{jax.__version__} (jaxlib {jax.lib.__version__ if hasattr(jax.lib, '__version__') else '?'}), "
                f"devices {[str(d) for d in jax.devices()]}, x64={jax.config.jax_enable_x64}, threads: XLA default"
         if jax else NA),
        ("torch", f"{torch.__version__}; BLAS {torch_blas()}; intra-op threads={torch.get_num_threads()}, "
                  f"inter-op={torch.get_num_interop_threads()}" if torch else NA),
        ("thread env vars", ", ".join(f"{k}={v}" for k, v in env.items()) or "none set (library defaults)"),
    ]
    return table(["item", "value"], rows)


# --- timing helpers --------------------------------------------------------------------------
def table(header, rows) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(out)


def per_call_us(stmt: str, env: dict, reps: int, target_s: float = 0.02) -> float:
    """Median µs per execution of ``stmt`` (timeit loops: no Python call wrapper in the loop)."""
    t = timeit.Timer(stmt, timer=time.perf_counter, globals=env)
    t.timeit(200)  # warm-up
    number = 100
    while True:  # pick a loop length so one repeat takes ~target_s
        dt = t.timeit(number)
        if dt >= target_s or number >= 10**6:
            break
        number = max(number * 2, int(number * target_s / max(dt, 1e-9) * 1.1))
    return statistics.median(t.repeat(repeat=reps, number=number)) / number * 1e6


def blocked(fns: dict, min_reps: int, max_reps: int, budget_s: float, rounds: int = 2,
            settle_s: float = 0.25, warmup: int = 2) -> dict:
    """Median seconds per call of each callable (``budget_s`` is per callable).

    Each callable is timed in its own block (warm-up calls first), in ``rounds`` blocks run in
    alternating order (A B C, C B A, ...) so slow drifts in machine load hit all alike. Calls are
    NOT interleaved one by one: OpenBLAS / OpenMP / XLA worker threads spin for a while after a
    call, and with two libraries' pools on 2 cores interleaving slows both by >10x. ``settle_s``
    of sleep before each block lets the previous library's threads go idle.
    """
    # Importing JAX and torch leaves ~1e6 Python objects behind; without this, the cyclic GC
    # rescans them now and then and charges it to whichever library allocates at that moment.
    gc.collect()
    gc.freeze()
    names = list(fns)
    times = {n: [] for n in names}
    lo, hi = -(-min_reps // rounds), max(1, max_reps // rounds)
    for r in range(rounds):
        for n in names if r % 2 == 0 else names[::-1]:
            fn = fns[n]
            time.sleep(settle_s)
            for _ in range(warmup):
                fn()
            start = time.perf_counter()
            for k in range(hi):
                t0 = time.perf_counter()
                fn()
                times[n].append(time.perf_counter() - t0)
                if k + 1 >= lo and time.perf_counter() - start > budget_s / rounds:
                    break
    return times


def summarize(times: dict) -> tuple[dict, str]:
    """(median seconds per name, worst spread over names as text): (p75 − p25) / median with
    ≥ 4 samples, (max − min) / median with 2-3 (slow rows)."""
    med, spread = {}, 0.0
    for n, v in times.items():
        med[n] = statistics.median(v)
        if len(v) >= 4:
            q = statistics.quantiles(v, n=4)
            spread = max(spread, (q[2] - q[0]) / med[n])
        elif len(v) >= 2:
            spread = max(spread, (max(v) - min(v)) / med[n])
    return med, f"{spread:.0%}"


def to_np(x):
    if torch is not None and isinstance(x, torch.Tensor):
        return x.detach().numpy()
    return np.asarray(x)


def rel_diff(a, b) -> float:
    """max over leaves of ‖a − b‖∞ / ‖b‖∞ (pytrees of the same structure; dicts sorted by key)."""
    la, lb = jl.tree_flatten(a)[0], jl.tree_flatten(b)[0]
    assert len(la) == len(lb), (len(la), len(lb))
    worst = 0.0
    for x, y in zip(la, lb):
        x, y = to_np(x).astype(np.float64), to_np(y).astype(np.float64)
        assert x.shape == y.shape, (x.shape, y.shape)
        worst = max(worst, float(np.max(np.abs(x - y)) / max(np.max(np.abs(y)), 1e-300)))
    return worst


def fmt_rd(x) -> str:
    return NA if x is None else f"{x:.1e}"


# --- 1. call overhead ------------------------------------------------------------------------
def bench_overhead(reps: int) -> str:
    rng = np.random.default_rng(0)
    cases = [("0-d", np.array(0.3)), ("(8,)", rng.standard_normal(8))]
    rows = []
    for label, arr in cases:
        env = {"jl": jl, "np": np, "t": jl.array(arr), "a": arr}
        if torch is not None:
            env.update(torch=torch, tt=torch.from_numpy(arr.copy()))
        if jax is not None:
            env.update(jnp=jnp, jt=jnp.asarray(arr))
        ops = [
            (f"jl.tanh(t), t {label}", "jl.tanh(t)", "np.tanh(a)", "torch.tanh(tt)", "jnp.tanh(jt)"),
            (f"t + t, t {label}", "t + t", "a + a", "tt + tt", "jt + jt"),
        ]
        if label == "(8,)":
            ops.append((f"jl.array(x), x {label} ndarray", "jl.array(a)", "np.array(a)", "torch.tensor(a)",
                        "jnp.asarray(a)"))
        for name, s_jl, s_np, s_t, s_jx in ops:
            us = per_call_us(s_jl, env, reps)
            r_np = per_call_us(s_np, env, reps)
            r_t = per_call_us(s_t, env, reps) if torch is not None else None
            r_jx = per_call_us(s_jx, env, reps) if jax is not None else None
            rows.append([f"`{name}`", f"{us:.2f}", "yes" if us <= 3.0 else "**no**", f"{r_np:.2f}",
                         NA if r_t is None else f"{r_t:.2f}", NA if r_jx is None else f"{r_jx:.2f}"])
    return table(["op", "jaclab µs", "≤ 3 µs", "numpy µs", "torch µs", "jax eager µs (dispatch)"], rows)


# --- 2. GEMM ---------------------------------------------------------------------------------
def bench_gemm(min_reps: int, max_reps: int, budget_s: float) -> str:
    rng = np.random.default_rng(1)
    rows = []
    for dtype in (np.float32, np.float64):
        for n in (256, 1024):
            a = rng.standard_normal((n, n)).astype(dtype)
            b = rng.standard_normal((n, n)).astype(dtype)
            ta, tb = jl.array(a), jl.array(b)
            med, noise = summarize(blocked({"jl": lambda: ta @ tb, "np": lambda: a @ b}, min_reps, max_reps,
                                           budget_s))
            rd = rel_diff(ta @ tb, a @ b)
            gf = {k: 2.0 * n**3 / v / 1e9 for k, v in med.items()}
            ratio = gf["jl"] / gf["np"]
            mark = ("yes" if ratio >= 0.9 else "**no**") if n == 1024 else ""
            rows.append([np.dtype(dtype).name, f"{n}³", f"{gf['jl']:.1f}", f"{gf['np']:.1f}", f"{ratio:.0%}", mark,
                         f"{rd:.1e}", noise])
    return table(["dtype", "size", "jaclab GFLOP/s", "numpy GFLOP/s", "jaclab/numpy", "≥ 90% (1024³)",
                  "max rel diff", "noise (IQR/median)"], rows)


# --- 3. MLP JVP / VJP / HVP ------------------------------------------------------------------
BATCH, WIDTH = 256, 512


def mlp(p, x, tanh):
    h = tanh(x @ p["W1"] + p["b1"])
    h = tanh(h @ p["W2"] + p["b2"])
    return tanh(h @ p["W3"] + p["b3"])


def mlp_data(dtype):
    rng = np.random.default_rng(2)
    s = 1.0 / np.sqrt(WIDTH)

    def tree():
        return {"W1": rng.standard_normal((WIDTH, WIDTH)) * s, "b1": rng.standard_normal(WIDTH) * 0.1,
                "W2": rng.standard_normal((WIDTH, WIDTH)) * s, "b2": rng.standard_normal(WIDTH) * 0.1,
                "W3": rng.standard_normal((WIDTH, WIDTH)) * s, "b3": rng.standard_normal(WIDTH) * 0.1}

    params, tangent = tree(), tree()
    x = rng.standard_normal((BATCH, WIDTH))
    cast = lambda t: {k: v.astype(dtype) for k, v in t.items()}  # noqa: E731
    return cast(params), cast(tangent), x.astype(dtype)


def jaclab_fns(params, tangent, x):
    p = {k: jl.array(v) for k, v in params.items()}
    v = {k: jl.array(t) for k, t in tangent.items()}
    X = jl.array(x)
    f = lambda p: mlp(p, X, jl.tanh)  # noqa: E731
    loss = lambda p: jl.mean(jl.square(f(p)))  # noqa: E731
    return {
        "JVP": lambda: jl.jvp(f, (p,), (v,))[1],
        "VJP (grad)": lambda: jl.grad(loss)(p),
        "HVP": lambda: jl.hvp(loss, (p,), (v,))[0],
    }


def jax_fns(params, tangent, x):
    p = {k: jnp.asarray(a) for k, a in params.items()}
    v = {k: jnp.asarray(a) for k, a in tangent.items()}
    X = jnp.asarray(x)
    f = lambda p, x: mlp(p, x, jnp.tanh)  # noqa: E731
    loss = lambda p, x: jnp.mean(f(p, x) ** 2)  # noqa: E731
    jvp_j = jax.jit(lambda p, v, x: jax.jvp(lambda q: f(q, x), (p,), (v,))[1])
    grad_j = jax.jit(jax.grad(loss))
    hvp_j = jax.jit(lambda p, v, x: jax.jvp(lambda q: jax.grad(loss)(q, x), (p,), (v,))[1])
    return {
        "JVP": lambda: jax.block_until_ready(jvp_j(p, v, X)),
        "VJP (grad)": lambda: jax.block_until_ready(grad_j(p, X)),
        "HVP": lambda: jax.block_until_ready(hvp_j(p, v, X)),
    }


def torch_fns(params, tangent, x):
    p = {k: torch.from_numpy(a.copy()) for k, a in params.items()}
    v = {k: torch.from_numpy(a.copy()) for k, a in tangent.items()}
    X = torch.from_numpy(x.copy())
    f = lambda p: mlp(p, X, torch.tanh)  # noqa: E731
    loss = lambda p: torch.mean(f(p) ** 2)  # noqa: E731
    return {
        "JVP": lambda: tfunc.jvp(f, (p,), (v,))[1],
        "VJP (grad)": lambda: tfunc.grad(loss)(p),
        "HVP": lambda: tfunc.jvp(tfunc.grad(loss), (p,), (v,))[1],
    }


def bench_mlp(min_reps: int, max_reps: int, budget_s: float) -> str:
    rows = []
    for dtype in (np.float64, np.float32):
        params, tangent, x = mlp_data(dtype)
        libs = {"jaclab": jaclab_fns(params, tangent, x)}
        if jax is not None:
            libs["jax"] = jax_fns(params, tangent, x)
        if torch is not None:
            libs["torch"] = torch_fns(params, tangent, x)
        for tr in ("JVP", "VJP (grad)", "HVP"):
            fns = {lib: d[tr] for lib, d in libs.items()}
            res = {lib: fn() for lib, fn in fns.items()}  # also the first warm-up (jit compile)
            rd = {lib: rel_diff(res["jaclab"], r) for lib, r in res.items() if lib != "jaclab"}
            med, noise = summarize(blocked(fns, min_reps, max_reps, budget_s))
            ms = {lib: t * 1e3 for lib, t in med.items()}
            peers = [ms[k] for k in ("jax", "torch") if k in ms]
            ratio = f"{ms['jaclab'] / min(peers):.2f}" if peers else NA
            cell = lambda k: f"{ms[k]:.2f}" if k in ms else NA  # noqa: E731
            rows.append([tr, np.dtype(dtype).name, cell("jaclab"), cell("jax"), cell("torch"), ratio,
                         fmt_rd(rd.get("jax")), fmt_rd(rd.get("torch")), noise])
    return table(["transform", "dtype", "jaclab ms", "jax jit ms", "torch.func ms", "jaclab / best peer",
                  "rel diff vs jax", "rel diff vs torch", "noise (IQR/median)"], rows)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="few repeats: a fast smoke run, numbers not stable")
    args = ap.parse_args(argv)
    if args.quick:
        ovh_reps, g = 3, dict(min_reps=4, max_reps=6, budget_s=0.2)
        m = dict(min_reps=2, max_reps=4, budget_s=0.2)
    else:
        ovh_reps, g = 31, dict(min_reps=20, max_reps=400, budget_s=1.5)
        m = dict(min_reps=10, max_reps=200, budget_s=2.0)

    t0 = time.perf_counter()
    print(f"# jaclab core benchmark{' (--quick: not for quoting)' if args.quick else ''}\n")
    print("## Machine\n")
    print(machine_report(), flush=True)
    print("\n## 1. Python → C++ call overhead (median µs per call)\n")
    print(bench_overhead(ovh_reps), flush=True)
    print("\n## 2. GEMM `a @ b`, square n×n (median GFLOP/s = 2n³ / time)\n")
    print(bench_gemm(**g), flush=True)
    print(f"\n## 3. 3-layer tanh MLP, batch {BATCH}, width {WIDTH} (median ms per call)\n")
    print("f(p, x) = tanh(tanh(tanh(x@W1+b1)@W2+b2)@W3+b3); JVP of f w.r.t. p along a random tangent; "
          "VJP = grad of mean(f²) w.r.t. p; HVP of mean(f²) w.r.t. p (forward-over-reverse). "
          "JAX: jax.jit, block_until_ready. torch: torch.func, eager. "
          "rel diff = max over leaves of ‖jaclab − peer‖∞ / ‖peer‖∞. "
          "noise = worst (p75 − p25) / median over the row's libraries: distrust rows where it is large.\n")
    print(bench_mlp(**m), flush=True)
    print(f"\nload avg at end: {' / '.join(f'{x:.2f}' for x in os.getloadavg())}; "
          f"total {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
