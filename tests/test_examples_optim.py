"""The optimizer example scripts (examples/*.py of docs/optim_tutorial.md) run with ``--quick``
into a temporary folder, write their figures, and their key numbers behave:

- backward_sgd: backward-SGD's step length ends < 1e-10 x the first one, forward-SGD's stays
  > 1e-6 x on its noise floor; across seeds both orders are equally far from the minimiser;
- rk_vs_euler: RK4's largest stable learning rate exceeds Euler's, and at a learning rate
  between the two Euler diverges while RK4 converges, at equal gradient evaluations;
- rk_stability: the measured per-step factors on 1/2 theta^T A theta equal |R(-h lambda)| to
  rounding and the stability limits match;
- optim_tutorial_plots: every figure is written; the mirror agreed with the C++ rule.

Also: the code blocks quoted from ``jl.optim.reference`` in the tutorial are verbatim, and the
tutorial's runnable ``python`` blocks run.
"""
from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLES = os.path.join(ROOT, "examples")
TUTORIAL = os.path.join(ROOT, "docs", "optim_tutorial.md")
MAX_FIGURE_BYTES = 150 * 1024


def run_example(name, tmp_path):
    pytest.importorskip("matplotlib")
    out = tmp_path / "figures"
    p = subprocess.run([sys.executable, os.path.join(EXAMPLES, name), "--quick", "--out", str(out)],
                       capture_output=True, text=True, timeout=300, cwd=str(tmp_path))
    assert p.returncode == 0, f"{name} failed:\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}"
    lines = [ln for ln in p.stdout.splitlines() if ln.startswith("RESULT ")]
    assert len(lines) == 1, p.stdout[-2000:]
    res = json.loads(lines[0][len("RESULT "):])
    assert res["files"], "no figure written"
    for fn in res["files"]:
        assert os.path.dirname(os.path.abspath(fn)) == str(out), fn
        assert os.path.getsize(fn) > 1000 and os.path.getsize(fn) <= MAX_FIGURE_BYTES, (fn, os.path.getsize(fn))
        with open(fn, "rb") as fh:
            assert fh.read(8) == b"\x89PNG\r\n\x1a\n"
    return res


def test_backward_sgd_example(tmp_path):
    r = run_example("backward_sgd.py", tmp_path)
    assert r["backward_end_over_initial"] < 1e-10           # worst seed: geometric decay to rounding
    assert r["forward_min_over_initial"] > 1e-6             # noise floor, second half of every run
    assert r["forward_end_over_initial_median"] > 1e-2
    assert r["backward_rate"] < 1
    assert r["within_run_spread"]["forward"] > 1e3 * r["within_run_spread"]["backward"]
    n = r["setup"]["N"]
    assert r["grad_evals_per_run"] == {"forward": n, "backward": n * (n + 1) // 2}
    # same distribution across seeds (fact (i)): the mean distances to theta* are alike
    f, b = r["across_seeds_dist_at_N"]["forward"], r["across_seeds_dist_at_N"]["backward"]
    assert abs(f[0] - b[0]) < 3 * max(f[1], b[1])


def test_rk_vs_euler_example(tmp_path):
    r = run_example("rk_vs_euler.py", tmp_path)
    lim = r["largest_stable_lr"]
    assert lim["rk4"] > 1.2 * lim["euler"]
    assert r["first_unstable_lr"]["euler"] < r["h_bad"] < lim["rk4"]
    fl = r["final_loss"]
    assert not math.isfinite(fl[f"euler@{r['h_bad']:.3g}"]) or fl[f"euler@{r['h_bad']:.3g}"] > r["initial_loss"]
    assert fl[f"rk4@{r['h_bad']:.3g}"] < 0.1 * r["initial_loss"]
    assert fl[f"euler@{r['h_ok']:.3g}"] < 0.1 * r["initial_loss"] and fl[f"rk4@{r['h_ok']:.3g}"] < 0.1 * r["initial_loss"]


def test_rk_stability_example(tmp_path):
    r = run_example("rk_stability.py", tmp_path)
    assert set(r["methods"]) == {"euler", "heun", "midpoint", "rk23", "rk4", "rk45"}
    for m, v in r["methods"].items():
        assert v["max_abs_dev_one_step"] < 1e-12, m       # one step = R(-h A) theta, to rounding
        assert v["max_rel_dev"] < 1e-9, m                  # n-step factor = |R|, where above rounding
        assert abs(v["limit_measured"] - v["limit_exact"]) < 0.15, m  # between neighbouring eigenvalues
    assert abs(r["methods"]["rk4"]["limit_exact"] - 2.7853) < 1e-3
    for m, v in r["momentum"].items():
        assert v["max_rel_dev_stable"] < 0.1, m


def test_tutorial_plots_example(tmp_path):
    r = run_example("optim_tutorial_plots.py", tmp_path)
    names = sorted(os.path.basename(f) for f in r["files"])
    assert names == sorted(f"optim_{k}.png" for k in ("sgd", "momentum", "adam", "rk", "rk_adaptive", "rk_variants", "polyak"))
    one = r["one_step"]
    assert one["SGD(0.1)"]["theta1"] == pytest.approx([a - 0.1 * g for a, g in zip(one["theta0"], one["grad0"])], rel=1e-15)
    assert one["Adam(0.1)"]["theta1"] == pytest.approx([a - 0.1 * math.copysign(1, g) for a, g in zip(one["theta0"], one["grad0"])],
                                                       abs=1e-9)
    assert r["polyak"]["quadratic/Polyak (f*=0)"]["final_loss"] < 1e-2 * one["loss0"]


def _tutorial():
    if not os.path.exists(TUTORIAL):
        pytest.skip("docs/optim_tutorial.md is missing")
    with open(TUTORIAL, encoding="utf-8") as fh:
        return fh.read()


def test_tutorial_quotes_of_the_mirror_are_verbatim():
    """```py blocks in the tutorial are quotes of jaclab/optim/reference.py and must stay verbatim."""
    import jaclab.optim.reference as ref

    with open(ref.__file__, encoding="utf-8") as fh:
        src = fh.read()
    quotes = re.findall(r"```py\n(.*?)```", _tutorial(), flags=re.S)
    assert len(quotes) >= 6
    for q in quotes:
        assert q in src, f"tutorial quote no longer in reference.py:\n{q}"


def test_tutorial_python_blocks_run(tmp_path, monkeypatch):
    """```python blocks run in order, in one namespace (as a reader would paste them)."""
    blocks = re.findall(r"```python\n(.*?)```", _tutorial(), flags=re.S)
    assert blocks
    monkeypatch.chdir(tmp_path)
    ns: dict = {"__name__": "tutorial"}
    for i, b in enumerate(blocks):
        try:
            exec(compile(b, f"optim_tutorial.md block {i}", "exec"), ns)
        except Exception as e:  # pragma: no cover - the message names the block
            raise AssertionError(f"tutorial block {i} failed: {e!r}\n{b}") from e
