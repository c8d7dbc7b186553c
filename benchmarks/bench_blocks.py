#!/usr/bin/env python
"""jaclab block benchmark: jl.nn models under forward / grad / JVP / HVP / per-sample Jacobians.

Side by side in one run: jaclab vs JAX (``jax.jit``, ``block_until_ready``, x64 enabled) vs
PyTorch (``torch.func``, eager) when installed, float32 and float64. Prints a markdown table:
median ms per call, jaclab / fastest peer, fraction of the GEMM bound per library, max relative
difference of each peer's result to jaclab's, and a noise column. Not a test: nothing asserted.

    python benchmarks/bench_blocks.py                    # full run (~4-6 min on 2 cores)
    python benchmarks/bench_blocks.py --quick            # float64 only, few repeats
    python benchmarks/bench_blocks.py --workload W3 --dtype float32

Workloads (parameters are initialised by jaclab's ``init`` and fed to the peers as NumPy, so
every library computes the same maths on the same numbers):

- W1 ``mlp``: Sequential(Linear 784→512, Tanh, 512→512, Tanh, 512→512, Tanh, 512→10), batch
  256, loss = jl.cross_entropy(logits, int labels).
- W2 ``block``: one pre-LayerNorm TransformerBlock(d_model 256, 4 heads, MLP 256→1024→256 GELU
  (erf), causal), x (8, 128, 256), loss = mean(y²).
- W3 ``resmlp``: Sequential of 16 × Residual(MLP(256, 256, 256, "tanh"), scale=1/16), i.e.
  x ← x + (tanh(x W1 + b1) W2 + b2) / 16, batch 256, loss = mean(y²).

Tasks: ``fwd`` (loss value), ``grad`` (loss and its gradient w.r.t. params), ``jvp`` (model
output and its JVP w.r.t. params along a random param tangent), ``hvp`` (Hessian of the loss
w.r.t. params times that tangent, forward-over-reverse), ``jac_in`` (per-sample input Jacobian:
W1 (256, 10, 784), W3 batch 64 → (64, 256, 256); jaclab ``jl.analysis.input_jacobian``, peers
``vmap(jacrev(f_single))``), ``jac_layers`` (W3, batch 16: the 16 per-sample block Jacobians
(16, 256, 256); jaclab ``jl.analysis.layer_jacobians``, peers ``vmap(jacrev(block))`` at each
block's input activation; JAX jits the whole list as one function).

GEMM bound. "model FLOPs" count only matrix products (2·m·k·n each; softmax, norms and
elementwise ops are not counted; causal attention products are counted in full). Per product
P = A·B of the forward pass (g = 2mkn FLOPs), a task costs c·g with

    task   c (both A and B depend on params)   c (A is the data input x, so no dA)
    fwd    1                                   1
    grad   3   (P, dA = dP·Bᵀ, dB = Aᵀ·dP)      2
    jvp    3   (P, dA·B, A·dB)                  2
    hvp    9   (3 grad products × (primal + 2 tangent products))   4

and for per-sample Jacobians by reverse mode, ``F + n_out·F`` where F is the forward FLOPs at
that batch (each backward sweep w.r.t. the input costs one product per forward product):
W1 jac_in 11·F (n_out = 10), W3 jac_in 257·F (n_out = 256, batch 64), W3 jac_layers 257·F
(16 blocks, each F_block + 256·F_block, batch 16). The bound is model FLOPs / peak, where peak
is the best GFLOP/s of jaclab's own ``a @ b`` at 1024³ of the same dtype (measured at start and
end; the better is used). "% bound" = bound time / measured time.

Cross-check (XLA's ``compiled.cost_analysis()["flops"]`` of the jitted JAX peers, float32): within
4% of these counts for fwd / grad / jvp / jac_in (XLA also counts elementwise ops); for hvp XLA
counts ~11% fewer (9·g is the plain forward-over-reverse count); for jac_layers XLA counts 9.3
vs 17.3 GFLOP: under vmap the one-hot cotangent basis is not batched over samples, so the first
backward product of each block (basis · W2ᵀ) is done once instead of per sample (torch.func's
vmap does the same). A peer can therefore pass 100% on jac_layers; jaclab's per_sample_jacobian
does every product per sample.

Timing as in bench_core.py: each library in its own block (sleep before it so the previous
library's spinning BLAS/OpenMP/XLA threads go idle), three rounds of blocks A B C / C B A / A B C
(a load spike from another process during one block cannot move a median alone); calls are
never interleaved one by one. Rows whose call takes > 0.3 s get one call per block. The first call of each library (JIT compile for JAX) is not timed
and gives the result that is compared.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_core import NA, blocked, jax, jnp, machine_report, rel_diff, summarize, table, tfunc, torch  # noqa: E402

import jaclab as jl  # noqa: E402

if torch is not None:
    import torch.nn.functional as tF

DTYPES = {"float32": np.float32, "float64": np.float64}
LIBS = ("jaclab", "jax", "torch")


# --- timing: bench_core.blocked / summarize / rel_diff ------------------------------------


def gemm_peak(dtype, reps: int) -> float:
    """Best-of-``reps`` GFLOP/s of jaclab's ``a @ b`` at 1024³ (best, not median: other
    processes only ever slow it down, and a low peak would inflate every "% bound")."""
    rng = np.random.default_rng(0)
    a, b = (jl.array(rng.standard_normal((1024, 1024)).astype(dtype)) for _ in range(2))
    for _ in range(2):
        a @ b
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter()
        a @ b
        ts.append(time.perf_counter() - t0)
    return 2.0 * 1024**3 / min(ts) / 1e9


# --- model FLOPs -----------------------------------------------------------------------------
MULT = {"fwd": (1, 1), "grad": (3, 2), "jvp": (3, 2), "hvp": (9, 4)}


def task_flops(gemms: list, task: str) -> float:
    """gemms: [(m, k, n, a_is_data)] of one forward pass; see the module docstring."""
    return float(sum(2 * m * k * n * MULT[task][1 if data else 0] for m, k, n, data in gemms))


def fwd_flops(gemms: list) -> float:
    return float(sum(2 * m * k * n for m, k, n, _ in gemms))


def gemms_mlp(B):
    dims = [784, 512, 512, 512, 10]
    return [(B, dims[i], dims[i + 1], i == 0) for i in range(4)]


def gemms_block(B, T, d, H, dff):
    BT, dh = B * T, d // H
    return ([(BT, d, d, False)] * 3 + [(B * H * T, dh, T, False), (B * H * T, T, dh, False), (BT, d, d, False),
                                       (BT, d, dff, False), (BT, dff, d, False)])


def gemms_resmlp(B, L=16, d=256):
    return [(B, d, d, i == 0) for i in range(2 * L)]


# --- peer models (jaclab's param pytrees, same maths as jl.nn's C++ blocks) -------------------
RES_SCALE = 1.0 / 16
N_HEADS = 4


def jx_mlp(p, x):  # p: Sequential params [{"W","b"}, {}, ...]; {} = Tanh
    for layer in p:
        x = x @ layer["W"] + layer["b"] if layer else jnp.tanh(x)
    return x


def jx_ce(z, y):
    return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(z, axis=-1), y[:, None], axis=-1))


def jx_ln(x, n, eps=1e-5):
    m = jnp.mean(x, -1, keepdims=True)
    v = jnp.mean(jnp.square(x - m), -1, keepdims=True)
    return (x - m) / jnp.sqrt(v + eps) * n["g"] + n["b"]


def jx_block(p, x):
    B, T, d = x.shape
    dh = d // N_HEADS
    a, m = p["attn"], p["mlp"]
    h = jx_ln(x, p["norm1"])
    split = lambda t: t.reshape(B, T, N_HEADS, dh).transpose(0, 2, 1, 3)  # noqa: E731
    q, k, v = split(h @ a["Wq"]), split(h @ a["Wk"]), split(h @ a["Wv"])
    s = (q @ k.swapaxes(-1, -2)) * (1.0 / float(np.sqrt(dh)))
    s = jnp.where(jnp.tril(jnp.ones((T, T), bool)), s, -jnp.inf)
    o = (jax.nn.softmax(s, axis=-1) @ v).transpose(0, 2, 1, 3).reshape(B, T, d)
    x = x + o @ a["Wo"]
    h = jax.nn.gelu(jx_ln(x, p["norm2"]) @ m["W1"] + m["b1"], approximate=False)
    return x + (h @ m["W2"] + m["b2"])


def jx_resblock(p, x):
    return x + (jnp.tanh(x @ p["W1"] + p["b1"]) @ p["W2"] + p["b2"]) * RES_SCALE


def jx_resmlp(p, x):
    for pl in p:
        x = jx_resblock(pl, x)
    return x


def th_mlp(p, x):
    for layer in p:
        x = x @ layer["W"] + layer["b"] if layer else torch.tanh(x)
    return x


def th_ce(z, y):
    return -torch.mean(torch.gather(torch.log_softmax(z, -1), -1, y[:, None]))


def th_ln(x, n, eps=1e-5):
    m = x.mean(-1, keepdim=True)
    v = torch.square(x - m).mean(-1, keepdim=True)
    return (x - m) / torch.sqrt(v + eps) * n["g"] + n["b"]


def th_block(p, x):
    B, T, d = x.shape
    dh = d // N_HEADS
    a, m = p["attn"], p["mlp"]
    h = th_ln(x, p["norm1"])
    split = lambda t: t.reshape(B, T, N_HEADS, dh).transpose(1, 2)  # noqa: E731
    q, k, v = split(h @ a["Wq"]), split(h @ a["Wk"]), split(h @ a["Wv"])
    s = (q @ k.transpose(-1, -2)) * (1.0 / float(np.sqrt(dh)))
    s = s.masked_fill(~torch.tril(torch.ones(T, T, dtype=torch.bool, device=x.device)), float("-inf"))
    o = (torch.softmax(s, -1) @ v).transpose(1, 2).reshape(B, T, d)
    x = x + o @ a["Wo"]
    h = tF.gelu(th_ln(x, p["norm2"]) @ m["W1"] + m["b1"])
    return x + (h @ m["W2"] + m["b2"])


def th_resblock(p, x):
    return x + (torch.tanh(x @ p["W1"] + p["b1"]) @ p["W2"] + p["b2"]) * RES_SCALE


def th_resmlp(p, x):
    for pl in p:
        x = th_resblock(pl, x)
    return x


def msq_jx(y):
    return jnp.mean(jnp.square(y))


def msq_th(y):
    return torch.mean(torch.square(y))


def msq_jl(y):
    return jl.mean(jl.square(y))


# --- workloads -------------------------------------------------------------------------------
def make_workload(name: str, dtype):
    """Everything one (workload, dtype) needs: jaclab model + NumPy params/tangent/data, the peer
    model functions, the tasks and each task's model FLOPs."""
    rng = np.random.default_rng({"W1": 11, "W2": 12, "W3": 13}[name])
    w = {"name": name}
    if name == "W1":
        model = jl.nn.Sequential(jl.nn.Linear(784, 512), jl.nn.Tanh(), jl.nn.Linear(512, 512), jl.nn.Tanh(),
                                 jl.nn.Linear(512, 512), jl.nn.Tanh(), jl.nn.Linear(512, 10))
        B = 256
        x = rng.standard_normal((B, 784)).astype(dtype)
        w["labels"] = rng.integers(0, 10, B)
        w.update(label="`mlp` 784-512-512-512-10 tanh, B 256, CE", jx=jx_mlp, th=th_mlp, loss="ce")
        F = fwd_flops(gemms_mlp(B))
        w["flops"] = {t: task_flops(gemms_mlp(B), t) for t in MULT} | {"jac_in": 11 * F}
        w["tasks"] = ["fwd", "grad", "jvp", "hvp", "jac_in"]
        w["jac_x"] = x
    elif name == "W2":
        model = jl.nn.TransformerBlock(256, N_HEADS, 1024, causal=True, norm="layer")
        x = rng.standard_normal((8, 128, 256)).astype(dtype)
        w.update(label="`block` pre-LN transformer, (8,128,256), 4 heads, causal, MLP 1024 GELU, mean y²",
                 jx=jx_block, th=th_block, loss="msq")
        g = gemms_block(8, 128, 256, N_HEADS, 1024)
        w["flops"] = {t: task_flops(g, t) for t in MULT}
        w["tasks"] = ["fwd", "grad", "jvp", "hvp"]
    else:
        model = jl.nn.Sequential(*[jl.nn.Residual(jl.nn.MLP(256, 256, 256, "tanh"), scale=RES_SCALE)
                                   for _ in range(16)])
        x = rng.standard_normal((256, 256)).astype(dtype)
        w.update(label="`resmlp` 16 × (x + tanh(x W1 + b1) W2 + b2)/16, width 256, B 256, mean y²",
                 jx=jx_resmlp, th=th_resmlp, jx_blk=jx_resblock, th_blk=th_resblock, loss="msq")
        w["flops"] = {t: task_flops(gemms_resmlp(256), t) for t in MULT} | {
            "jac_in": 257 * fwd_flops(gemms_resmlp(64)), "jac_layers": 257 * fwd_flops(gemms_resmlp(16))}
        w["tasks"] = ["fwd", "grad", "jvp", "hvp", "jac_in", "jac_layers"]
        w["jac_x"], w["layers_x"] = x[:64], x[:16]
    params = model.init(seed=0, dtype=dtype)
    # W3's biases are zero from init; the random tangent has non-zero bias entries all the same.
    tangent = jl.tree_map(lambda a: rng.standard_normal(a.shape).astype(dtype), params)
    w.update(model=model, params=params, tangent=tangent, x=x)
    return w


def jaclab_tasks(w) -> dict:
    model = w["model"]
    p = jl.tree_map(jl.array, w["params"])
    v = jl.tree_map(jl.array, w["tangent"])
    X = jl.array(w["x"])
    if w["loss"] == "ce":
        y = jl.array(w["labels"])
        loss = lambda p: jl.cross_entropy(model.apply(p, X), y)  # noqa: E731
    else:
        loss = lambda p: msq_jl(model.apply(p, X))  # noqa: E731
    fns = {
        "fwd": lambda: loss(p),
        "grad": lambda: jl.value_and_grad(loss)(p),
        "jvp": lambda: jl.jvp(lambda q: model.apply(q, X), (p,), (v,)),
        "hvp": lambda: jl.hvp(loss, (p,), (v,))[0],
    }
    if "jac_x" in w:
        jx = w["jac_x"]
        fns["jac_in"] = lambda: jl.analysis.input_jacobian(model, p, jx)
    if "layers_x" in w:
        lx = w["layers_x"]
        fns["jac_layers"] = lambda: jl.analysis.layer_jacobians(model, p, lx)
    return fns


def jax_tasks(w) -> dict:
    f = w["jx"]
    p = jax.tree_util.tree_map(jnp.asarray, w["params"])
    v = jax.tree_util.tree_map(jnp.asarray, w["tangent"])
    X = jnp.asarray(w["x"])
    if w["loss"] == "ce":
        y = jnp.asarray(w["labels"])
        loss = lambda p, X: jx_ce(f(p, X), y)  # noqa: E731
    else:
        loss = lambda p, X: msq_jx(f(p, X))  # noqa: E731
    fwd = jax.jit(loss)
    vg = jax.jit(jax.value_and_grad(loss))
    jvp_ = jax.jit(lambda p, v, X: jax.jvp(lambda q: f(q, X), (p,), (v,)))
    hvp = jax.jit(lambda p, v, X: jax.jvp(lambda q: jax.grad(loss)(q, X), (p,), (v,))[1])
    bur = jax.block_until_ready
    fns = {
        "fwd": lambda: bur(fwd(p, X)),
        "grad": lambda: bur(vg(p, X)),
        "jvp": lambda: bur(jvp_(p, v, X)),
        "hvp": lambda: bur(hvp(p, v, X)),
    }
    if "jac_x" in w:
        jac = jax.jit(jax.vmap(jax.jacrev(f, argnums=1), in_axes=(None, 0)))
        JX = jnp.asarray(w["jac_x"])
        fns["jac_in"] = lambda: bur(jac(p, JX))
    if "layers_x" in w:
        blk = w["jx_blk"]
        bjac = jax.vmap(jax.jacrev(blk, argnums=1), in_axes=(None, 0))

        @jax.jit
        def layer_jacs(p, h):
            out = []
            for pl in p:
                out.append(bjac(pl, h))
                h = blk(pl, h)
            return out

        LX = jnp.asarray(w["layers_x"])
        fns["jac_layers"] = lambda: bur(layer_jacs(p, LX))
    return fns


def torch_tasks(w) -> dict:
    f = w["th"]
    t = lambda a: torch.from_numpy(np.ascontiguousarray(a).copy())  # noqa: E731
    p = jl.tree_map(t, w["params"])
    v = jl.tree_map(t, w["tangent"])
    X = t(w["x"])
    if w["loss"] == "ce":
        y = t(w["labels"])
        loss = lambda p: th_ce(f(p, X), y)  # noqa: E731
    else:
        loss = lambda p: msq_th(f(p, X))  # noqa: E731

    def vg():
        g, val = tfunc.grad_and_value(loss)(p)
        return val, g

    fns = {
        "fwd": lambda: loss(p),
        "grad": vg,
        "jvp": lambda: tfunc.jvp(lambda q: f(q, X), (p,), (v,)),
        "hvp": lambda: tfunc.jvp(tfunc.grad(loss), (p,), (v,))[1],
    }
    if "jac_x" in w:
        JX = t(w["jac_x"])
        jac = tfunc.vmap(tfunc.jacrev(f, argnums=1), in_dims=(None, 0))
        fns["jac_in"] = lambda: jac(p, JX)
    if "layers_x" in w:
        blk = w["th_blk"]
        bjac = tfunc.vmap(tfunc.jacrev(blk, argnums=1), in_dims=(None, 0))
        LX = t(w["layers_x"])

        def layer_jacs():
            out, h = [], LX
            for pl in p:
                out.append(bjac(pl, h))
                h = blk(pl, h)
            return out

        fns["jac_layers"] = layer_jacs
    return fns


# --- main ------------------------------------------------------------------------------------
def print_header(what: str, dtypes: list, quick: bool) -> dict:
    """Title, machine report and jaclab's GEMM peak per dtype (returned, GFLOP/s)."""
    print(f"# jaclab {what} benchmark{' (--quick: not for quoting)' if quick else ''}\n")
    print("## Machine\n")
    print(machine_report(), flush=True)
    peaks = {dt: gemm_peak(DTYPES[dt], 6 if quick else 15) for dt in dtypes}
    print("\nGEMM peak (jaclab `a @ b`, 1024³, best of reps): "
          + ", ".join(f"{dt} {g:.1f} GFLOP/s" for dt, g in peaks.items()), flush=True)
    return peaks


def first_calls(fns: dict) -> tuple[dict, float]:
    """Untimed first call of each (JIT compile / warm-up; a second one for JAX and fast calls).
    Returns the results and the slowest last first-call time (to spot slow rows)."""
    res, first = {}, 0.0
    for lib, fn in fns.items():
        time.sleep(0.1)
        t0 = time.perf_counter()
        res[lib] = fn()
        if lib == "jax" or time.perf_counter() - t0 < 0.3:
            t0 = time.perf_counter()
            res[lib] = fn()
        first = max(first, time.perf_counter() - t0)
    return res, first


def run_workload(name, dtype, reps, task_filter) -> tuple[list, str]:
    w = make_workload(name, dtype)
    libs = {"jaclab": jaclab_tasks(w)}
    if jax is not None:
        libs["jax"] = jax_tasks(w)
    if torch is not None:
        libs["torch"] = torch_tasks(w)
    rows = []
    for task in w["tasks"]:
        if task_filter and task not in task_filter:
            continue
        fns = {lib: d[task] for lib, d in libs.items()}
        res, first = first_calls(fns)  # untimed: JIT compile / warm-up, then the result to compare
        rd = {lib: rel_diff(res["jaclab"], r) for lib, r in res.items() if lib != "jaclab"}
        del res
        # 3 rounds (A B C, C B A, A B C): a neighbour's load spike during one block cannot move the
        # median alone. Slow rows (a call > 0.3 s): one call per block, no warm-up (just warmed).
        slow = first > 0.3
        warmup = 0 if first > 0.3 else 1 if first > 0.05 else 2  # slow calls were just warmed
        med, noise = summarize(blocked(fns, min_reps=3 if slow else reps["min"], max_reps=reps["max"],
                                       budget_s=reps["budget"], rounds=3, warmup=warmup))
        rows.append(dict(workload=name, task=task, dtype=np.dtype(dtype).name, flops=w["flops"][task],
                         ms={lib: s * 1e3 for lib, s in med.items()}, rd=rd, noise=noise, load=os.getloadavg()[0]))
        r = rows[-1]
        print(f"  {name} {task} {r['dtype']}: " + ", ".join(f"{k} {v:.2f} ms" for k, v in r["ms"].items())
              + f"; rel diff {', '.join(f'{k} {v:.1e}' for k, v in rd.items())}; noise {noise}; load {r['load']:.2f}",
              file=sys.stderr, flush=True)  # progress
    return rows, w["label"]


def fmt_row(r: dict, peak_gflops: float) -> list:
    ms, rd = r["ms"], r["rd"]
    bound_ms = r["flops"] / (peak_gflops * 1e9) * 1e3
    peers = [ms[k] for k in ("jax", "torch") if k in ms]
    cell = lambda k: f"{ms[k]:.2f}" if k in ms else NA  # noqa: E731
    frac = " / ".join(f"{bound_ms / ms[k]:.0%}" if k in ms else NA for k in LIBS)
    return [r["workload"], r["task"], r["dtype"], f"{r['flops'] / 1e9:.2f}", cell("jaclab"), cell("jax"), cell("torch"),
            f"**{ms['jaclab'] / min(peers):.2f}**" if peers else NA, frac,
            f"{rd['jax']:.1e}" if "jax" in rd else NA, f"{rd['torch']:.1e}" if "torch" in rd else NA, r["noise"],
            f"{r['load']:.2f}"]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="float64 only (unless --dtype), few repeats; not for quoting")
    ap.add_argument("--workload", action="append", choices=["W1", "W2", "W3"], help="repeatable; default all")
    ap.add_argument("--dtype", action="append", choices=list(DTYPES), help="repeatable; default both")
    ap.add_argument("--task", action="append", choices=["fwd", "grad", "jvp", "hvp", "jac_in", "jac_layers"],
                    help="repeatable; default all")
    args = ap.parse_args(argv)
    workloads = args.workload or ["W1", "W2", "W3"]
    dtypes = args.dtype or (["float64"] if args.quick else ["float32", "float64"])
    reps = dict(min=3, max=6, budget=0.25) if args.quick else dict(min=6, max=60, budget=0.8)

    t0 = time.perf_counter()
    peaks = print_header("block", dtypes, args.quick)
    all_rows, labels = [], {}
    for name in workloads:
        for dt in dtypes:
            rows, labels[name] = run_workload(name, DTYPES[dt], reps, args.task)
            all_rows += rows
    time.sleep(0.5)
    for dt in dtypes:  # peak again at the end: the better of the two is used
        peaks[dt] = max(peaks[dt], gemm_peak(DTYPES[dt], 6 if args.quick else 15))
    print("GEMM peak at end, used for % bound (best of start/end): "
          + ", ".join(f"{dt} {g:.1f} GFLOP/s" for dt, g in peaks.items()))
    print("\n## Results (median ms per call)\n")
    for name in workloads:
        print(f"- {name}: {labels[name]}")
    print("\nmodel GFLOP: matrix-product FLOPs of the task (formulas in the script's docstring); "
          "% GEMM bound = (model FLOPs / jaclab 1024³ GEMM peak of that dtype) / measured time, "
          "for jaclab / jax / torch; rel diff = max over leaves of ‖jaclab − peer‖∞ / ‖peer‖∞; "
          "noise = worst (p75 − p25) / median over the row's libraries ((max − min) / median for rows of 3 "
          "calls); load 1 min = 1-minute load average after the row: distrust rows where either is large.\n")
    print(table(["workload", "task", "dtype", "model GFLOP", "jaclab ms", "jax jit ms", "torch.func ms",
                 "jaclab / best peer", "% GEMM bound (jl / jax / torch)", "rel diff vs jax", "rel diff vs torch",
                 "noise", "load 1 min"], [fmt_row(r, peaks[r["dtype"]]) for r in all_rows]))
    print(f"\nload avg at end: {' / '.join(f'{x:.2f}' for x in os.getloadavg())}; "
          f"total {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
