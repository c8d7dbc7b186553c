"""`jaclab tour` (the main job): runs end to end in quick mode, writes a report with every
section, works without matplotlib, and fails (exit code 1) when an exactness check fails."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

SECTIONS = ["## (a) Exactness", "## (b) In-context learning", "## (c) Optimizers", "## (d) Geometry",
            "## (e) Residual path growth"]
PNGS = ["b_icl_dynamics.png", "c_optimizers.png", "d_geometry.png", "e_residual.png"]


def _run(args, timeout=120):
    return subprocess.run([sys.executable] + args, capture_output=True, text=True, timeout=timeout)


def test_tour_quick_writes_report(tmp_path):
    out = tmp_path / "report"
    p = _run(["-m", "jaclab.cli", "tour", "--quick", "--out", str(out)])
    assert p.returncode == 0, p.stdout + p.stderr
    report = out / "report.md"
    assert report.exists()
    text = report.read_text()
    for s in SECTIONS:
        assert s in text, f"missing section {s!r}"
    assert "all passed" in text and "FAILED" not in text
    assert str(report) in p.stdout
    assert (out / "tour.json").exists()
    pytest.importorskip("matplotlib")
    for png in PNGS:
        assert (out / png).exists(), png
        assert f"]({png})" in text


def test_tour_without_matplotlib(tmp_path):
    """The markdown is written without matplotlib, and says how to get the plots."""
    out = tmp_path / "report"
    code = ("import sys; sys.modules['matplotlib'] = None; from jaclab.cli import main; "
            f"sys.exit(main(['tour', '--quick', '--out', {str(out)!r}]))")
    p = _run(["-c", code])
    assert p.returncode == 0, p.stdout + p.stderr
    text = (out / "report.md").read_text()
    for s in SECTIONS:
        assert s in text
    assert 'pip install "jaclab[plots]"' in text
    assert not any(f.endswith(".png") for f in os.listdir(out))


def test_tour_fails_on_a_failed_exactness_check(tmp_path, monkeypatch):
    from jaclab import tour

    monkeypatch.setattr(tour, "exactness_rows", lambda name, *a: [(name, "broken derivative", 1.0)])
    monkeypatch.setattr(tour, "_pyplot", lambda: None)
    rc = tour.run(str(tmp_path / "r"), quick=True, stream=open(os.devnull, "w"))
    assert rc == 1
    text = (tmp_path / "r" / "report.md").read_text()
    assert "SOME FAILED" in text and "**FAILED**" in text


def test_tour_is_the_default_command(tmp_path, monkeypatch):
    from jaclab import cli, tour

    seen = {}
    monkeypatch.setattr(tour, "run", lambda out, quick=False: seen.update(out=out, quick=quick) or 0)
    assert cli.main([]) == 0
    assert seen == {"out": "jaclab-report", "quick": False}
    assert cli.main(["tour", "--quick", "--out", str(tmp_path)]) == 0
    assert seen == {"out": str(tmp_path), "quick": True}
