"""A step-by-step smoke run of the CUDA backend: prints each step, so a crash shows where.

    python cuda/tests/smoke.py     # on a machine with a GPU, jaclab installed with CUDA
"""
import faulthandler

import numpy as np

import jaclab as jl

faulthandler.enable()


def step(name, f):
    print("--", name, flush=True)
    r = f()
    print("   ok", flush=True)
    return r


a = step("h2d", lambda: jl.array(np.arange(6.0).reshape(2, 3), device="cuda"))
b = step("d2h", lambda: a.to("cpu"))
step("asarray", lambda: print(np.asarray(b)))
c = step("add", lambda: a + a)
step("add d2h", lambda: print(np.asarray(c.to("cpu"))))
step("scalar", lambda: print(float(jl.sum(a * 2.0))))
step("matmul", lambda: print(np.asarray((a @ a.T).to("cpu"))))
step("jvp", lambda: print(jl.jvp(jl.tanh, (a,), (a,))[1].to("cpu")))
step("grad", lambda: print(jl.grad(lambda x: jl.sum(jl.tanh(x) ** 2))(a).to("cpu")))
