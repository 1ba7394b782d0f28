"""The README's usage example runs as written."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


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
