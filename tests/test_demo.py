"""The demo runs end to end and what it writes and prints is right.

One run of ``python -m captum_ext.demo --tiny`` (the smoke-test size) in a
subprocess, with every captum-ext attribution class's ``attribute`` wrapped to
record which classes the demo really calls. The checks read the files the
demo wrote and what it printed, and recompute what can be recomputed (which
methods score below the random order, the table from the JSON).
"""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pytest
from captum.attr import Attribution

import captum_ext.attr
from captum_ext import demo

ROOT = Path(__file__).resolve().parents[1]
FILES = ("attributions.png", "degradation.png", "metrics.md", "metrics.json")
#: Each metric and whether larger is better, written out here (not taken from
#: the demo) so that a wrong direction in the demo is caught.
DIRECTIONS = {
    "aopc_morf": True,
    "deletion_auc": False,
    "insertion_auc": True,
    "masked_input_accuracy": True,
}

# Runs the demo's command-line entry point with every public attribution class
# of captum_ext.attr counting its outermost `attribute` calls.
_RUNNER = """
import json, sys
from captum.attr import Attribution
import captum_ext.attr as attr
from captum_ext import demo

calls, depth = {}, [0]

def wrap(cls):
    original = cls.attribute
    def attribute(self, *args, **kwargs):
        if depth[0] == 0:
            calls[type(self).__name__] = calls.get(type(self).__name__, 0) + 1
        depth[0] += 1
        try:
            return original(self, *args, **kwargs)
        finally:
            depth[0] -= 1
    cls.attribute = attribute

for name in attr.__all__:
    obj = getattr(attr, name)
    if isinstance(obj, type) and issubclass(obj, Attribution):
        wrap(obj)
code = demo.main(sys.argv[2:])
with open(sys.argv[1], "w") as f:
    json.dump(calls, f)
sys.exit(code)
"""


def _attribution_classes() -> set[str]:
    return {
        obj.__name__
        for name in captum_ext.attr.__all__
        if isinstance(obj := getattr(captum_ext.attr, name), type)
        and issubclass(obj, Attribution)
    }


def _png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path.name} is not a PNG"
    assert data[12:16] == b"IHDR"
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("demo")
    calls_file = out.parent / "calls.json"
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            _RUNNER,
            str(calls_file),
            "--tiny",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT), "MPLBACKEND": "Agg"},
    )
    assert proc.returncode == 0, proc.stderr
    return {
        "out": out,
        "stdout": proc.stdout,
        "stderr": proc.stderr,
        "calls": json.loads(calls_file.read_text()),
        "summary": json.loads((out / "metrics.json").read_text()),
        "table": (out / "metrics.md").read_text(),
    }


def _expected_below_random(rows: list[dict[str, Any]]) -> set[tuple[str, str]]:
    rand = rows[-1]
    assert rand["method"] == "random order"
    return {
        (r["method"], key)
        for r in rows[:-1]
        for key, up in DIRECTIONS.items()
        if (r[key] < rand[key] if up else r[key] > rand[key])
    }


@pytest.mark.slow
def test_demo_calls_every_attribution_class(tiny: dict[str, Any]) -> None:
    classes = _attribution_classes()
    assert classes
    missing = sorted(classes - set(tiny["calls"]))
    assert not missing, f"the demo never calls attribute() of {missing}"


@pytest.mark.slow
def test_demo_writes_its_files(tiny: dict[str, Any]) -> None:
    out, summary = tiny["out"], tiny["summary"]
    assert sorted(p.name for p in out.iterdir()) == sorted(FILES)
    n_methods = len(demo._demo_methods())
    width, height = _png_size(out / "attributions.png")
    # one column per method plus the digit, one row per digit shown
    assert width > 100 * n_methods and height > 100 * summary["size"]["n_show"]
    width, height = _png_size(out / "degradation.png")
    assert width > 500 and height > 300


@pytest.mark.slow
def test_demo_prints_table_paths_and_its_time(tiny: dict[str, Any]) -> None:
    out, summary = tiny["out"], tiny["summary"]
    paths = "".join(f"{out / name}\n" for name in FILES)
    head = tiny["table"] + "\n" + paths
    assert tiny["stdout"].startswith(head)
    last = tiny["stdout"][len(head) :]
    match = re.fullmatch(
        r"python -m captum_ext\.demo --tiny took ([\d.]+) s wall-clock and "
        r"([\d.]+) s CPU on a (.+) \((\d+) torch threads\)\n",
        last,
    )
    assert match, last
    assert float(match[1]) == summary["command_wall_seconds"]
    assert float(match[2]) == summary["command_cpu_seconds"]
    assert match[3] == summary["machine"]
    assert int(match[4]) == summary["torch_threads"] >= 1
    # the whole command includes the run; CPU time is positive and finite
    assert 0 < summary["cpu_seconds"] <= summary["command_cpu_seconds"]
    assert 0 < summary["wall_seconds"] <= summary["command_wall_seconds"]
    assert math.isfinite(summary["command_cpu_seconds"])


@pytest.mark.slow
def test_demo_reports_progress_per_method(tiny: dict[str, Any]) -> None:
    lines = tiny["stderr"].splitlines()
    assert "Warning" not in tiny["stderr"], tiny["stderr"]
    epochs = demo.SIZES["tiny"].epochs
    assert lines[0].startswith(f"trained the digits CNN ({epochs} epochs"), lines[0]
    names = [m.name for m in demo._demo_methods()] + ["random order"]
    progress = [ln for ln in lines if ln.startswith("[")]
    assert len(progress) == len(names)
    for k, (line, name) in enumerate(zip(progress, names), start=1):
        assert line.startswith(f"[{k:2d}/{len(names)}] {name} "), line
    assert lines[-1] == f"wrote {tiny['out']}"


@pytest.mark.slow
def test_demo_metrics_are_meaningful(tiny: dict[str, Any]) -> None:
    summary = tiny["summary"]
    assert summary["size"] == asdict(demo.SIZES["tiny"])
    assert summary["test_accuracy"] > 0.9
    rows = {r["method"]: r for r in summary["methods"]}
    expected = [m.name for m in demo._demo_methods()] + ["random order"]
    assert list(rows) == expected
    for name, row in rows.items():
        assert math.isfinite(row["ms_per_batch"]) and row["ms_per_batch"] >= 0
        for key in DIRECTIONS:
            assert math.isfinite(row[key]), (name, key)
            assert 0.0 <= row[key] <= 1.0, (name, key, row[key])
        curve = summary["degradation_curves"][name]
        assert len(curve) == 17  # 16 patches of 2x2 on 8x8 digits, plus step 0
        assert all(math.isfinite(p) and 0.0 <= p <= 1.0 for p in curve)
    # the curves share their end points: the intact and the fully degraded digit
    ends = {(c[0], c[-1]) for c in summary["degradation_curves"].values()}
    assert max(a for a, _ in ends) - min(a for a, _ in ends) < 1e-6
    assert max(b for _, b in ends) - min(b for _, b in ends) < 1e-6
    # AOPC is the mean drop of the mean curve from its first point
    for name, curve in summary["degradation_curves"].items():
        aopc = sum(curve[0] - p for p in curve) / len(curve)
        assert abs(aopc - rows[name]["aopc_morf"]) < 2e-4, name
    # a gradient method finds the evidence much better than a random order
    ig, rand = rows["Integrated Gradients"], rows["random order"]
    assert ig["aopc_morf"] > rand["aopc_morf"] + 0.02
    assert ig["deletion_auc"] < rand["deletion_auc"] - 0.2
    assert ig["insertion_auc"] > rand["insertion_auc"] + 0.1


@pytest.mark.slow
def test_demo_table_and_below_random_match_the_numbers(tiny: dict[str, Any]) -> None:
    summary, table = tiny["summary"], tiny["table"]
    for row in summary["methods"]:
        cells = [f"{row[k]:.3f}" for k in DIRECTIONS]
        assert f"| {row['method']} | {row['source']} | " in table
        assert " | ".join(cells) + " |" in table, row["method"]
    flagged = {(b["method"], b["metric"]) for b in summary["below_random"]}
    assert flagged == _expected_below_random(summary["methods"])


GOOD = {"aopc_morf": 0.2, "deletion_auc": 0.1, "insertion_auc": 0.9}
RANDOM = {"aopc_morf": 0.1, "deletion_auc": 0.6, "insertion_auc": 0.7}


def _rows(**worse: dict[str, float]) -> list[dict[str, Any]]:
    """Two methods and the random order; ``worse`` overrides metric values."""
    rows = []
    for key, name in (("a", "Guided Backprop"), ("b", "Saliency")):
        values = {**GOOD, "masked_input_accuracy": 1.0, **worse.get(key, {})}
        rows.append({"method": name, "source": "x", "ms_per_batch": 1.0, **values})
    rand = {**RANDOM, "masked_input_accuracy": 0.8}
    rows.append({"method": "random order", "source": "reference", **rand})
    rows[-1]["ms_per_batch"] = 0.0
    return rows


def test_below_random_uses_each_metrics_direction() -> None:
    # deletion: higher is worse; the others: lower is worse; ties are not worse
    rows = _rows(
        a={"deletion_auc": 0.7, "aopc_morf": 0.1},
        b={"insertion_auc": 0.6, "masked_input_accuracy": 0.79},
    )
    found = demo._below_random(rows, "random order")
    assert {(f["method"], f["metric"]) for f in found} == _expected_below_random(rows)
    assert {(f["method"], f["metric"]) for f in found} == {
        ("Guided Backprop", "deletion_auc"),
        ("Saliency", "insertion_auc"),
        ("Saliency", "masked_input_accuracy"),
    }
    assert demo._below_random(_rows(), "random order") == []
    # equal to the random order is not below it
    assert demo._below_random(_rows(a=RANDOM), "random order") == []


def test_markdown_says_where_and_why_a_method_is_below_random() -> None:
    size = demo.SIZES["tiny"]
    rows = _rows(a={"deletion_auc": 0.7})
    below = demo._below_random(rows, "random order")
    text = demo._markdown(rows, 0.99, size, below)
    line = next(ln for ln in text.splitlines() if ln.startswith("- Guided Backprop"))
    assert "deletion AUC 0.700 vs 0.600" in line
    assert "Likely reason: its maps are signed" in line
    assert "Saliency" not in "".join(ln for ln in text.splitlines() if ln[:2] == "- ")
    clean = demo._markdown(_rows(), 0.99, size, [])
    assert "Every method scores better than a random order" in clean
    assert "Likely reason" not in clean
