#!/usr/bin/env python
"""jaclab optimizer-loop benchmark (a benchmark, not a test: prints a table, asserts nothing).

Model: the tiny MLP of issue 4, widths 16-16-16-16-10 (tanh), cross-entropy, batch 1, float64.

1. Per-step time of a gradient step (SGD) in the C++ loop ``jl.optim.train`` (target <= 10 us),
   next to a ``jax.jit``-compiled step called once per step from Python (x64, block_until_ready),
   and to calling ``jl.grad`` from Python per step.
2. Backward-SGD with N = 400 iterates (N(N+1)/2 = 80,200 gradient steps) in the C++ loop
   (target <= 2 s).

    python benchmarks/bench_optim.py [--quick]
"""
from __future__ import annotations

import argparse
import os
import statistics
import time

import numpy as np

import jaclab as jl
from jaclab import nn


def tiny_mlp():
    return nn.Sequential(nn.Linear(16, 16), nn.Tanh(), nn.Linear(16, 16), nn.Tanh(), nn.Linear(16, 16), nn.Tanh(),
                         nn.Linear(16, 10))


def data(n=1024, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, 16)), rng.integers(0, 10, n)


def median_time(fn, repeats):
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts), (np.percentile(ts, 75) - np.percentile(ts, 25)) / statistics.median(ts)


def bench_jaclab_loop(steps, repeats):
    model, (X, y) = tiny_mlp(), data()
    params = model.init(0)
    opt = jl.optim.SGD(0.01)
    jl.optim.train(model, params, "cross_entropy", (X, y), opt, steps=200, batch_size=1)  # warm-up
    t, noise = median_time(lambda: jl.optim.train(model, params, "cross_entropy", (X, y), opt, steps=steps,
                                                  batch_size=1), repeats)
    return t / steps, noise


def bench_jaclab_python(steps, repeats):
    model, (X, y) = tiny_mlp(), data()
    params = model.init(0)
    loss = lambda p, xb, yb: jl.cross_entropy(model.apply(p, xb), yb)  # noqa: E731
    g = jl.grad(loss)

    def run():
        p = params
        for i in range(steps):
            gr = g(p, X[i:i + 1], y[i:i + 1])
            p = jl.tree_map(lambda a, b: a - 0.01 * np.asarray(b), p, gr)

    run()
    t, noise = median_time(run, repeats)
    return t / steps, noise


def bench_jax(steps, repeats):
    try:
        import jax
        import jax.numpy as jnp

        jax.config.update("jax_enable_x64", True)
    except Exception:  # noqa: BLE001
        return None, None
    model, (X, y) = tiny_mlp(), data()
    params = jax.tree_util.tree_map(jnp.asarray, model.init(0))

    def forward(p, x):
        h = x
        for i, layer in enumerate(p):
            if layer:
                h = h @ layer["W"] + layer["b"]
                if i < len(p) - 1:
                    h = jnp.tanh(h)
        return h

    def loss(p, x, t):
        return -jnp.mean(jax.nn.log_softmax(forward(p, x))[jnp.arange(x.shape[0]), t])

    @jax.jit
    def step(p, x, t):
        g = jax.grad(loss)(p, x, t)
        return jax.tree_util.tree_map(lambda a, b: a - 0.01 * b, p, g)

    Xj, yj = jnp.asarray(X), jnp.asarray(y)
    xs = [Xj[i:i + 1] for i in range(steps)]
    ts = [yj[i:i + 1] for i in range(steps)]

    def run():
        p = params
        for i in range(steps):
            p = step(p, xs[i], ts[i])
        jax.block_until_ready(p)

    run()
    t, noise = median_time(run, repeats)
    return t / steps, noise


def bench_backward(n_iter, repeats):
    model, (X, y) = tiny_mlp(), data()
    params = model.init(0)
    opt = jl.optim.SGD(0.01)
    r = None

    def run():
        nonlocal r
        r = jl.optim.train(model, params, "cross_entropy", (X, y), opt, steps=n_iter, batch_size=1, order="backward")

    t, noise = median_time(run, repeats)
    return t, noise, r.grad_evals


def bench_w1_loop_overhead(steps, repeats):
    """W1 (784-512-512-512-10 tanh, batch 256, cross-entropy, SGD): per-step time of the C++ loop
    (forward + backward + update + batch gather) against forward + backward alone
    (jl.value_and_grad on one batch), each timed in its own block."""
    rng = np.random.default_rng(0)
    model = nn.Sequential(nn.Linear(784, 512), nn.Tanh(), nn.Linear(512, 512), nn.Tanh(),
                          nn.Linear(512, 512), nn.Tanh(), nn.Linear(512, 10))
    params = model.init(0)
    X, y = rng.standard_normal((256 * 10, 784)), rng.integers(0, 10, 256 * 10)
    xb, yb = X[:256], y[:256]
    vg = jl.value_and_grad(lambda p: jl.cross_entropy(model.apply(p, xb), yb))
    opt = jl.optim.SGD(0.01)
    vg(params)
    jl.optim.train(model, params, "cross_entropy", (X, y), opt, steps=3, batch_size=256)
    t_fb, n1 = median_time(lambda: [vg(params) for _ in range(steps)], repeats)
    t_loop, n2 = median_time(lambda: jl.optim.train(model, params, "cross_entropy", (X, y), opt, steps=steps,
                                                    batch_size=256), repeats)
    return t_fb / steps, t_loop / steps, max(n1, n2)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    steps, repeats = (2000, 3) if args.quick else (20000, 7)
    print(f"jaclab {jl.__version__}; BLAS {jl.info()['blas']} ({jl.info()['blas_threads']} thread; "
          f"{jl.num_threads()} pool threads split the GEMMs); "
          f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")
    print("tiny MLP 16-16-16-16-10 tanh, cross-entropy, batch 1, float64, SGD\n")
    print("| what | time | target | noise (IQR/median) |")
    print("| --- | --- | --- | --- |")
    t, nz = bench_jaclab_loop(steps, repeats)
    print(f"| jl.optim.train (C++ loop), per step | {t * 1e6:.1f} us | <= 10 us | {nz:.2f} |")
    t, nz = bench_jax(max(steps // 4, 500), repeats)
    print(f"| jax.jit step called per step from Python | " + ("n/a" if t is None else f"{t * 1e6:.1f} us") +
          f" | | {'' if nz is None else f'{nz:.2f}'} |")
    t, nz = bench_jaclab_python(max(steps // 20, 200), max(repeats // 2, 1))
    print(f"| jl.grad + NumPy update from Python, per step | {t * 1e6:.1f} us | | {nz:.2f} |")
    t, nz, ev = bench_backward(400, 1 if args.quick else 3)
    print(f"| backward-SGD N=400 ({ev} gradient steps), total | {t:.2f} s | <= 2 s | {nz:.2f} |")
    t_fb, t_loop, nz = bench_w1_loop_overhead(5 if args.quick else 20, 3 if args.quick else 5)
    print(f"| W1 forward+backward alone (jl.value_and_grad), per step | {t_fb * 1e3:.2f} ms | | {nz:.2f} |")
    print(f"| W1 C++ loop (incl. SGD update, batch gather), per step | {t_loop * 1e3:.2f} ms "
          f"({t_loop / t_fb - 1:+.1%}) | <= +5% | {nz:.2f} |")


if __name__ == "__main__":
    main()
