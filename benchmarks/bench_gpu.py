#!/usr/bin/env python
"""jaclab GPU benchmark: the CUDA backend next to PyTorch (torch.func) and JAX on the same GPU.

    python benchmarks/bench_gpu.py            # needs a CUDA device; prints markdown tables
    python benchmarks/bench_gpu.py --part blocks --workloads W2,W3   # a part (each ~2-3 min on an H100)

1. cuBLAS peak: jaclab's own float32 ``a @ b`` (cuBLAS SGEMM, plain FP32, no TF32) at 8192³;
   the device's FP32 (non-tensor-core) peak = SMs × 128 lanes × 2 × max SM clock.
2. Attention, float32, B=8, H=16, T=S=4096, dh=64, non-causal and causal: forward + JVP (tangents
   of q, k, v) in one call. jaclab: ``jl.jvp(jl.attention)`` (the fused kernel). PyTorch:
   ``torch.func.jvp`` over ``F.scaled_dot_product_attention`` with each SDPA backend that runs
   (the fastest is reported; forward-mode AD is not implemented by every backend). JAX:
   ``jax.jvp`` of the unfused softmax(q kᵀ/√dh) v composition, jitted. FLOP count: forward
   4·BH·T·S·dh, JVP 8·BH·T·S·dh more (halved for causal); "× bound" = time / (FLOPs / FP32 peak).
3. W1/W2/W3 (the workloads of bench_blocks.py, float32) fwd / grad / jvp / hvp, plus W1 at batch
   16384 (GEMM-heavy). "% cuBLAS" = model GEMM FLOPs (bench_blocks' count) / time / the
   measured SGEMM peak. Results are compared: max relative difference to jaclab's.

Timing: each call is repeated until ~0.3 s (at least 3 calls) after warm-up, synchronising the
device once at the end; three such blocks per library, interleaved A B C / C B A / A B C; the
median block mean is reported. Matmul precision is plain FP32 in all three libraries (TF32 off:
torch.backends.cuda.matmul.allow_tf32 = False, jax_default_matmul_precision = "highest").
"""
from __future__ import annotations

import os

os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")  # three libraries share the GPU's memory
import platform
import statistics
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_blocks as bb  # noqa: E402
from bench_core import jax, jnp, rel_diff, table, tfunc, torch  # noqa: E402

import jaclab as jl  # noqa: E402

if torch is not None:
    import torch.nn.functional as tF

    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
if jax is not None:
    jax.config.update("jax_default_matmul_precision", "highest")


def sync_jl(r=None):
    jl.cuda_synchronize()
    return r


def sync_th(r=None):
    torch.cuda.synchronize()
    return r


def sync_jx(r):
    return jax.block_until_ready(r)


def time_block(fn, sync, target_s=0.3, min_calls=3) -> float:
    n, t0 = 0, time.perf_counter()
    while True:
        r = fn()
        n += 1
        if n >= min_calls and time.perf_counter() - t0 > target_s:
            break
    sync(r)
    return (time.perf_counter() - t0) / n


def compare(fns: dict, syncs: dict, rounds: int = 3) -> dict:
    """fns: lib -> callable. Returns lib -> median seconds per call."""
    for lib, f in fns.items():  # warm-up (compiles, autotunes, fills caches)
        syncs[lib](f())
        syncs[lib](f())
    times = {lib: [] for lib in fns}
    order = list(fns)
    for r in range(rounds):
        for lib in order if r % 2 == 0 else order[::-1]:
            times[lib].append(time_block(fns[lib], syncs[lib]))
    return {lib: statistics.median(ts) for lib, ts in times.items()}


def machine() -> str:
    info = jl.info()["cuda"]
    lines = [f"- GPU: {info['device_name']}, {info['multiprocessors']} SMs at up to {info['clock_khz'] / 1e3:.0f} MHz "
             f"(CUDA runtime {info['runtime_version']}, driver {info['driver_version']})",
             f"- host: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; Python {platform.python_version()}",
             f"- jaclab {jl.__version__} (cuBLAS: {jl._core._cublas_library()})"]
    if torch is not None:
        lines.append(f"- torch {torch.__version__}")
    if jax is not None:
        lines.append(f"- jax {jax.__version__}: {jax.devices()}")
    return "\n".join(lines)


def fp32_peak_tflops() -> float:
    """SMs × 128 FP32 lanes × 2 (FMA) × max SM clock."""
    c = jl.info()["cuda"]
    return c["multiprocessors"] * 128 * 2 * c["clock_khz"] * 1e3 / 1e12


def gemm_peak() -> float:
    n = 8192
    rng = np.random.default_rng(0)
    a, b = (jl.array(rng.standard_normal((n, n)).astype(np.float32), device="cuda") for _ in range(2))
    t = compare({"jaclab": lambda: a @ b}, {"jaclab": sync_jl})["jaclab"]
    return 2 * n**3 / t / 1e12


# ---- attention -------------------------------------------------------------------------------
def attention_rows(peak_fp32: float):
    """One library at a time (PyTorch's and JAX's unfused JVPs hold several 8 GiB (T, S) arrays;
    their caching allocators keep them), each freeing what it can before the next."""
    B, H, T, dh = 8, 16, 4096, 64
    rng = np.random.default_rng(1)
    arrs = [rng.standard_normal((B, H, T, dh)).astype(np.float32) for _ in range(6)]
    rows, state = [], {}
    for causal in (False, True):
        ms, res = {}, {}
        state[causal] = (ms, res, "n/a")
        jq = [jl.array(a, device="cuda") for a in arrs]
        jfn = lambda: jl.jvp(lambda q, k, v: jl.attention(q, k, v, causal=causal), tuple(jq[:3]),  # noqa: E731
                             tuple(jq[3:]))
        res["jaclab"] = [to_host(x) for x in jfn()]
        ms["jaclab"] = compare({"j": jfn}, {"j": sync_jl})["j"]
        del jq
        torch_path = "n/a"
        if torch is not None:
            from torch.nn.attention import SDPBackend, sdpa_kernel

            tq = [torch.from_numpy(a).cuda() for a in arrs]
            for backend in (SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.CUDNN_ATTENTION,
                            SDPBackend.MATH):
                def call(backend=backend):
                    with sdpa_kernel(backend):
                        return tfunc.jvp(lambda q, k, v: tF.scaled_dot_product_attention(q, k, v, is_causal=causal),
                                         tuple(tq[:3]), tuple(tq[3:]))
                try:
                    r = [to_host(x) for x in call()]
                    t = compare({"t": call}, {"t": sync_th})["t"]
                except Exception as e:  # noqa: BLE001  (no forward-mode AD in this backend, or no fp32)
                    print(f"  torch {backend.name}: {type(e).__name__}: {str(e).splitlines()[0][:120]}", file=sys.stderr)
                    torch.cuda.empty_cache()
                    continue
                print(f"  torch {backend.name}: {t * 1e3:.2f} ms", file=sys.stderr)
                if "torch" not in ms or t < ms["torch"]:
                    ms["torch"], res["torch"], torch_path = t, r, backend.name
                torch.cuda.empty_cache()
            del tq
            torch.cuda.empty_cache()
        state[causal] = (ms, res, torch_path)
    for causal in (False, True):  # JAX last: its allocator keeps what the unfused JVP took
        ms, res, torch_path = state[causal]
        if jax is not None:
            xq = [jnp.asarray(a) for a in arrs]
            mask = jnp.tril(jnp.ones((T, T), bool))

            def attn(q, k, v):
                s = (q @ k.swapaxes(-1, -2)) * float(1.0 / np.sqrt(dh))  # a Python float: stays float32
                if causal:
                    s = jnp.where(mask, s, -jnp.inf)
                return jax.nn.softmax(s, axis=-1) @ v

            jf = jax.jit(lambda q, k, v, a, b, c: jax.jvp(attn, (q, k, v), (a, b, c)))
            try:
                res["jax"] = [to_host(x) for x in jf(*xq)]
                ms["jax"] = compare({"x": lambda: jf(*xq)}, {"x": sync_jx})["x"]
            except Exception as e:  # noqa: BLE001
                print(f"  jax: {type(e).__name__}: {str(e).splitlines()[0][:160]}", file=sys.stderr)
            del xq
        flops = 12 * B * H * T * T * dh * (0.5 if causal else 1.0)
        rd = {lib: rel_diff(res["jaclab"], r) for lib, r in res.items() if lib != "jaclab"}
        bound = flops / (peak_fp32 * 1e12)
        rows.append([f"fwd+JVP {'causal' if causal else 'full'}", f"{ms['jaclab'] * 1e3:.2f}",
                     f"{ms['torch'] * 1e3:.2f} ({torch_path})" if "torch" in ms else "n/a",
                     f"{ms['jax'] * 1e3:.2f}" if "jax" in ms else "n/a",
                     f"{ms['torch'] / ms['jaclab']:.2f}×" if "torch" in ms else "n/a",
                     f"{flops / ms['jaclab'] / 1e12:.1f}", f"{ms['jaclab'] / bound:.2f}",
                     ", ".join(f"{k} {v:.1e}" for k, v in rd.items())])
        print("  " + " | ".join(rows[-1]), file=sys.stderr, flush=True)
    return rows


def to_host(x):
    if torch is not None and isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    if isinstance(x, jl.Tensor):
        return np.asarray(x.to("cpu"))
    return np.asarray(x)


# ---- W1/W2/W3 ----------------------------------------------------------------------------------
def workload(name: str, big: bool = False):
    w = bb.make_workload(name, np.float32)
    if big:  # W1 at batch 16384: the same model, GEMM-heavy
        B = 16384
        rng = np.random.default_rng(5)
        w["x"] = rng.standard_normal((B, 784)).astype(np.float32)
        w["labels"] = rng.integers(0, 10, B)
        w["flops"] = {t: bb.task_flops(bb.gemms_mlp(B), t) for t in bb.MULT}
        w["name"] = "W1 B=16384"
    return w


def jaclab_gpu_tasks(w) -> dict:
    model = w["model"]
    d = lambda a: jl.array(a, device="cuda")  # noqa: E731
    p, v, X = jl.tree_map(d, w["params"]), jl.tree_map(d, w["tangent"]), d(w["x"])
    if w["loss"] == "ce":
        y = d(w["labels"])
        loss = lambda p: jl.cross_entropy(model.apply(p, X), y)  # noqa: E731
    else:
        loss = lambda p: bb.msq_jl(model.apply(p, X))  # noqa: E731
    return {"fwd": lambda: loss(p), "grad": lambda: jl.value_and_grad(loss)(p),
            "jvp": lambda: jl.jvp(lambda q: model.apply(q, X), (p,), (v,)), "hvp": lambda: jl.hvp(loss, (p,), (v,))[0]}


def torch_gpu_tasks(w) -> dict:
    f = w["th"]
    t = lambda a: torch.from_numpy(np.ascontiguousarray(a).copy()).cuda()  # noqa: E731
    p, v, X = jl.tree_map(t, w["params"]), jl.tree_map(t, w["tangent"]), t(w["x"])
    if w["loss"] == "ce":
        y = t(w["labels"])
        loss = lambda p: bb.th_ce(f(p, X), y)  # noqa: E731
    else:
        loss = lambda p: bb.msq_th(f(p, X))  # noqa: E731

    def vg():
        g, val = tfunc.grad_and_value(loss)(p)
        return val, g

    return {"fwd": lambda: loss(p), "grad": vg, "jvp": lambda: tfunc.jvp(lambda q: f(q, X), (p,), (v,)),
            "hvp": lambda: tfunc.jvp(tfunc.grad(loss), (p,), (v,))[1]}


def flatten_result(r):
    leaves = jl.tree_flatten(r)[0]
    return [to_host(x) for x in leaves]


def workload_rows(peak_gemm: float, which: list):
    rows = []
    for key in which:
        name, big = ("W1", True) if key == "W1big" else (key, False)
        w = workload(name, big)
        libs = {"jaclab": (jaclab_gpu_tasks(w), sync_jl)}
        if torch is not None:
            libs["torch"] = (torch_gpu_tasks(w), sync_th)
        if jax is not None:
            libs["jax"] = (bb.jax_tasks(w), sync_jx)  # JAX places its arrays on the GPU by itself
        for task in ("fwd", "grad", "jvp", "hvp"):
            fns = {lib: t[task] for lib, (t, _) in libs.items()}
            syncs = {lib: s for lib, (_, s) in libs.items()}
            res = {lib: flatten_result(fn()) for lib, fn in fns.items()}
            rd = {lib: rel_diff(res["jaclab"], r) if len(r) == len(res["jaclab"]) else float("nan")
                  for lib, r in res.items() if lib != "jaclab"}
            ms = compare(fns, syncs)
            fl = w["flops"][task]
            best_peer = min((ms[k] for k in ms if k != "jaclab"), default=None)
            rows.append([w["name"], task, *(f"{ms[k] * 1e3:.3f}" if k in ms else "n/a" for k in ("jaclab", "torch", "jax")),
                         f"{ms['jaclab'] / best_peer:.2f}" if best_peer else "n/a",
                         f"{100 * fl / ms['jaclab'] / 1e12 / peak_gemm:.0f}%",
                         ", ".join(f"{k} {v:.1e}" for k, v in rd.items())])
            print("  " + " | ".join(rows[-1]), file=sys.stderr, flush=True)
    return rows


def main(argv=None) -> int:
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--part", choices=["all", "attention", "blocks"], default="all",
                    help="attention rows, W1/W2/W3 rows, or both (default)")
    ap.add_argument("--workloads", default="W1,W1big,W2,W3", help="comma-separated subset of W1,W1big,W2,W3")
    args = ap.parse_args(argv)
    if not jl.cuda_available():
        print("bench_gpu: no CUDA device (jl.cuda_available() is False)")
        return 1
    print("## GPU benchmark (benchmarks/bench_gpu.py)\n")
    print(machine())
    peak_fp32 = fp32_peak_tflops()
    peak_gemm = gemm_peak()
    print(f"- FP32 peak (SMs × 128 × 2 × clock): {peak_fp32:.1f} TFLOP/s; measured cuBLAS SGEMM 8192³ through "
          f"jaclab: {peak_gemm:.1f} TFLOP/s ({100 * peak_gemm / peak_fp32:.0f}% of FP32 peak)\n")
    if args.part in ("all", "attention"):
        print("### Attention forward + JVP, float32, B=8, H=16, T=S=4096, dh=64\n")
        print(table(["task", "jaclab ms", "torch.func.jvp ms (SDPA backend)", "jax ms", "torch / jaclab",
                     "jaclab TFLOP/s", "× FLOP bound", "max rel diff"], attention_rows(peak_fp32)), flush=True)
    if args.part in ("all", "blocks"):
        print("\n### W1 / W2 / W3 on the GPU, float32 (ms per call)\n")
        print(table(["workload", "task", "jaclab", "torch.func", "jax.jit", "jaclab / best peer", "% cuBLAS peak",
                     "max rel diff"], workload_rows(peak_gemm, args.workloads.split(","))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
