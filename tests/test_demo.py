"""The demo runs end to end in quick mode and writes its figure and tables."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_demo_quick(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "captum_ext.demo", "--quick", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
        env={**__import__("os").environ, "PYTHONPATH": str(ROOT), "MPLBACKEND": "Agg"},
    )
    assert proc.returncode == 0, proc.stderr
    png = tmp_path / "attributions.png"
    assert png.exists() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["test_accuracy"] > 0.9
    names = [r["method"] for r in summary["timings"]]
    assert "GxSI" in names and "Integrated Gradients" in names
    assert "| GxSI |" in proc.stdout
