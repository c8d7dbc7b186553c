"""Attention and its exact tangent in one pass, on the GPU when there is one (else the CPU).

jl.jvp through jl.attention runs a fused kernel: the output o = softmax(q k^T / sqrt(dh)) v and
its tangent along (dq, dk, dv) come out of one pass, with no (T, S) matrix in memory on the GPU.
The script checks the tangent against float64 central differences on a small problem, then
times value + tangent at a larger size next to the value alone. No figure.

    python examples/gpu_attention_jvp.py [--quick] [--device cpu|cuda]
"""
import argparse
import time

import numpy as np

import jaclab as jl

ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
ap.add_argument("--quick", action="store_true", help="small sizes, a few seconds (for tests)")
ap.add_argument("--device", default="cuda" if jl.cuda_available() else "cpu")
args = ap.parse_args()
dev = args.device
rng = np.random.default_rng(0)


def attn(q, k, v):
    return jl.attention(q, k, v, causal=True)


# 1. Exactness: the tangent against central differences, float64, on the chosen device.
q, k, v, dq, dk, dv = (rng.standard_normal((1, 2, 16, 16)) for _ in range(6))
on = lambda *xs: tuple(jl.array(x, device=dev) for x in xs)  # noqa: E731
_, tangent = jl.jvp(attn, on(q, k, v), on(dq, dk, dv))
eps = 1e-6
fd = (np.asarray(attn(*on(q + eps * dq, k + eps * dk, v + eps * dv)).to("cpu"))
      - np.asarray(attn(*on(q - eps * dq, k - eps * dk, v - eps * dv)).to("cpu"))) / (2 * eps)
err = np.max(np.abs(np.asarray(tangent.to("cpu")) - fd)) / np.max(np.abs(fd))
print(f"device {dev}: JVP vs central differences (float64): max relative difference {err:.1e}")
assert err < 1e-7, err

# 2. Speed: value + tangent vs value alone (float32).
B, H, T, dh = (1, 2, 256, 64) if args.quick else ((8, 16, 4096, 64) if dev != "cpu" else (2, 4, 1024, 64))
x = [jl.array(rng.standard_normal((B, H, T, dh)).astype(np.float32), device=dev) for _ in range(6)]
sync = jl.cuda_synchronize if dev != "cpu" else (lambda: None)


def timed(f, reps=3):
    f()
    sync()
    t0 = time.perf_counter()
    for _ in range(reps):
        f()
    sync()
    return (time.perf_counter() - t0) / reps


t_val = timed(lambda: attn(*x[:3]))
t_jvp = timed(lambda: jl.jvp(attn, tuple(x[:3]), tuple(x[3:])))
flops = 12 * B * H * T * T * dh / 2  # causal: half the (T, S) products
print(f"B={B} H={H} T={T} dh={dh} float32, causal: value {t_val * 1e3:.2f} ms, value + tangent "
      f"{t_jvp * 1e3:.2f} ms ({t_jvp / t_val:.1f}x the value; {flops / t_jvp / 1e12:.2f} TFLOP/s)")
