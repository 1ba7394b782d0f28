"""The README's usage example runs as written, and its stated times are recorded."""

from __future__ import annotations

import json
import re
from dataclasses import asdict
from pathlib import Path
from typing import Any

from captum_ext import demo

ROOT = Path(__file__).resolve().parents[1]
#: The demo runs whose times the README states (their metrics.json, as written).
DEMO_RECORDS = ROOT / "docs" / "_static" / "demo"


def test_readme_example_runs() -> None:
    text = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    assert blocks, "README has no python example"
    code = blocks[0]
    assert len([ln for ln in code.splitlines() if ln.strip()]) <= 12
    namespace: dict[str, object] = {}
    exec(compile(code, "README.md", "exec"), namespace)
    assert namespace["gxsi"].shape == namespace["x"].shape  # type: ignore[attr-defined]


def test_quickstart_has_exactly_two_commands() -> None:
    text = (ROOT / "README.md").read_text()
    section = text.split("## Quickstart", 1)[1].split("##", 1)[0]
    block = re.findall(r"```bash\n(.*?)```", section, flags=re.S)[0]
    commands = [ln for ln in block.splitlines() if ln.strip()]
    assert len(commands) == 2
    assert "python -m captum_ext.demo" in commands[0]
    assert "pytest" in commands[1]
    ci = (ROOT / ".ci" / "run").read_text()
    assert 'pip install -e "\\.\\[dev\\]" && ' in ci  # CI runs the README's command


def _record(name: str, size: str) -> dict[str, Any]:
    record = json.loads((DEMO_RECORDS / name).read_text())
    # recorded with the demo as it is now: same sizes, same methods
    assert record["size"] == asdict(demo.SIZES[size]), f"{name} is stale"
    methods = [m.name for m in demo._demo_methods()] + ["random order"]
    assert [r["method"] for r in record["methods"]] == methods, f"{name} is stale"
    return record


def test_readme_demo_times_are_the_recorded_ones() -> None:
    """The times the README states are those the recorded demo runs printed."""
    text = " ".join((ROOT / "README.md").read_text().split())
    match = re.search(
        r"Measured on a (.+?) shared with other jobs[^:]*: the default run took "
        r"(\d+) s CPU \((\d+) s wall-clock\), `--quick` took (\d+) s CPU "
        r"\((\d+) s wall-clock\)",
        text,
    )
    assert match, "README.md does not state the demo's measured times"
    full = _record("metrics.json", "full")
    quick = _record("metrics_quick.json", "quick")
    assert match[1] == full["machine"] == quick["machine"]
    stated = [int(match[i]) for i in (2, 3, 4, 5)]
    recorded = [
        full["command_cpu_seconds"],
        full["command_wall_seconds"],
        quick["command_cpu_seconds"],
        quick["command_wall_seconds"],
    ]
    assert stated == [round(v) for v in recorded], (stated, recorded)
    # nothing else in the README claims a duration
    assert not re.search(r"\babout \d+ ?s\b|seconds on a CPU|under a minute", text)
