"""The Lie bracket of two tasks' gradient fields: the conflict term of continual learning (papers.md section 8).

Two regression tasks A and B share one MLP. Training on A then on B (one GD step each, step t)
differs from B then A by the commutator T_B(T_A(theta)) - T_A(T_B(theta)) = t^2 [g_A, g_B] + O(t^3),
with [g_A, g_B] = H_B g_A - H_A g_B (jl.analysis.lie_bracket: one gradient and two exact HVPs).
Figure: lie_bracket.png (the commutator is O(t^2); minus t^2 times the bracket it is O(t^3)).

    python examples/analysis_lie_bracket.py [--out docs/figures] [--quick]
"""
import numpy as np

import jaclab as jl
from _common import parse, pyplot, save

args = parse(__doc__.splitlines()[0])
A = jl.analysis
X, YA = jl.data.teacher_student(64, 4, 8, 1, seed=0)
YB = np.sin(X[:, :1] * 2) - X[:, 1:2]
model = jl.nn.Sequential(jl.nn.Linear(4, 16), jl.nn.Tanh(), jl.nn.Linear(16, 1))
params = model.init(seed=3)
loss_a = lambda p: jl.mse(model.apply(p, X), YA)  # noqa: E731
loss_b = lambda p: jl.mse(model.apply(p, X), YB)  # noqa: E731
theta, shapes, tree = jl.optim.flatten_params(params)
unflat = lambda v: jl.optim.unflatten_params(v, shapes, tree)  # noqa: E731
grad_a = lambda v: jl.optim.flatten_params(jl.grad(loss_a)(unflat(v)))[0]  # noqa: E731
grad_b = lambda v: jl.optim.flatten_params(jl.grad(loss_b)(unflat(v)))[0]  # noqa: E731

bracket = jl.optim.flatten_params(A.lie_bracket(loss_a, loss_b, params))[0]
ts = np.geomspace(1e-3, 1e-1, 4 if args.quick else 9)
comm, rem = [], []
for t in ts:
    ta = theta - t * grad_a(theta)
    tb = theta - t * grad_b(theta)
    c = (ta - t * grad_b(ta)) - (tb - t * grad_a(tb))  # T_B(T_A(theta)) - T_A(T_B(theta))
    comm.append(np.linalg.norm(c))
    rem.append(np.linalg.norm(c - t * t * bracket))
s1, s2 = np.polyfit(np.log(ts), np.log(comm), 1)[0], np.polyfit(np.log(ts), np.log(rem), 1)[0]
print(f"|[g_A, g_B]| = {np.linalg.norm(bracket):.4g}; commutator ~ t^{s1:.2f} (expect 2), "
      f"commutator - t^2 bracket ~ t^{s2:.2f} (expect 3)")
sym = jl.optim.flatten_params(A.lie_bracket(loss_b, loss_a, params))[0]
print(f"antisymmetry: |[g_A,g_B] + [g_B,g_A]| = {np.linalg.norm(bracket + sym):.2e}")

plt = pyplot()
if plt:
    fig, ax = plt.subplots(figsize=(6, 4.2))
    ax.loglog(ts, comm, "o-", label=f"|T_B T_A - T_A T_B| (slope {s1:.2f})")
    ax.loglog(ts, rem, "s-", label=f"|... - t^2 [g_A, g_B]| (slope {s2:.2f})")
    ax.set_xlabel("step size t")
    ax.set_title("order of two tasks: commutator vs Lie bracket")
    ax.legend()
    save(fig, args.out, "lie_bracket.png")
