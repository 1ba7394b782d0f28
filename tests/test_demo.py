"""The demo runs end to end in quick mode and writes its figures and tables."""

from __future__ import annotations

import inspect
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
from captum.attr import Attribution

import captum_ext.attr
from captum_ext import demo

ROOT = Path(__file__).resolve().parents[1]
FILES = ("attributions.png", "degradation.png", "metrics.md", "metrics.json")
METRICS = ("aopc_morf", "deletion_auc", "insertion_auc", "masked_input_accuracy")


def test_demo_runs_every_attribution_class() -> None:
    source = inspect.getsource(demo)
    classes = [
        name
        for name in captum_ext.attr.__all__
        if isinstance(getattr(captum_ext.attr, name), type)
        and issubclass(getattr(captum_ext.attr, name), Attribution)
    ]
    assert classes
    missing = [name for name in classes if f"{name}(" not in source]
    assert not missing, f"the demo does not run {missing}"


@pytest.mark.slow
def test_demo_quick(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "captum_ext.demo", "--quick", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
        env={**os.environ, "PYTHONPATH": str(ROOT), "MPLBACKEND": "Agg"},
    )
    assert proc.returncode == 0, proc.stderr
    assert "Warning" not in proc.stderr, proc.stderr
    for name in ("attributions.png", "degradation.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # stdout is the markdown table and the paths of the files, nothing else
    table = (tmp_path / "metrics.md").read_text()
    paths = "".join(f"{tmp_path / name}\n" for name in FILES)
    assert proc.stdout == table + "\n" + paths

    summary = json.loads((tmp_path / "metrics.json").read_text())
    assert summary["quick"] is True
    assert summary["test_accuracy"] > 0.9
    rows = {r["method"]: r for r in summary["methods"]}
    expected = [m.name for m in demo._demo_methods()] + ["random order"]
    assert list(rows) == expected
    for name, row in rows.items():
        assert f"| {name} |" in table
        assert math.isfinite(row["ms_per_batch"]) and row["ms_per_batch"] >= 0
        for key in METRICS:
            assert math.isfinite(row[key]), (name, key)
            assert 0.0 <= row[key] <= 1.0, (name, key, row[key])
        curve = summary["degradation_curves"][name]
        assert len(curve) == 17  # 16 patches of 2x2 on 8x8 digits, plus step 0
        assert all(math.isfinite(p) for p in curve)
    # the curves share their end points: the intact and the fully degraded digit
    ends = {(c[0], c[-1]) for c in summary["degradation_curves"].values()}
    assert max(a for a, _ in ends) - min(a for a, _ in ends) < 1e-6
    assert max(b for _, b in ends) - min(b for _, b in ends) < 1e-6
    # a gradient method finds the evidence much better than a random order
    ig, rand = rows["Integrated Gradients"], rows["random order"]
    assert ig["aopc_morf"] > rand["aopc_morf"] + 0.02
    assert ig["deletion_auc"] < rand["deletion_auc"] - 0.2
    assert ig["insertion_auc"] > rand["insertion_auc"] + 0.1
