"""examples/analysis_*.py: one runnable script per analysis; each runs with --quick and writes
its figure (named in its docstring, "Figure: NAME.png") into --out."""
from __future__ import annotations

import pathlib
import re
import subprocess
import sys

import pytest

EXAMPLES = pathlib.Path(__file__).resolve().parent.parent / "examples"
TOPICS = ["geometric_complexity", "jacobian_spectrum", "sharpness", "modified_loss", "lie_bracket",
          "icl_weight_update", "residual_expansion", "softmax_radius", "lqr_steering", "jacobian_alignment"]


def test_every_topic_has_an_example():
    have = sorted(p.stem[len("analysis_"):] for p in EXAMPLES.glob("analysis_*.py"))
    assert sorted(TOPICS) == sorted(set(have) & set(TOPICS)), have
    docs = (EXAMPLES.parent / "docs" / "examples.md").read_text()
    for t in have:
        assert f"analysis_{t}.py" in docs


@pytest.mark.parametrize("topic", TOPICS)
def test_example_runs_quick(topic, tmp_path):
    script = EXAMPLES / f"analysis_{topic}.py"
    m = re.search(r"Figure: (\S+\.png)", script.read_text())
    assert m, "the docstring must name the figure"
    p = subprocess.run([sys.executable, str(script), "--quick", "--out", str(tmp_path)], capture_output=True,
                       text=True, timeout=120)
    assert p.returncode == 0, p.stdout + p.stderr
    pytest.importorskip("matplotlib")
    assert (tmp_path / m.group(1)).exists()
