"""Every notebook in tutorials/ executes top to bottom and shows pictures.

The test runs each notebook in its CI-sized mode (``CAPTUM_EXT_TUTORIAL_TEST=1``,
read by the notebook's ``parameters`` cell: less data, fewer epochs and steps)
with no time limit, so a busy machine makes it slower but cannot make it fail.
The committed outputs are those of the full mode.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "tutorials").glob("*.ipynb"))
#: What the last cell of every notebook prints.
TIMING = re.compile(r"ran in (\d+) s wall-clock, (\d+) s CPU \((CI|full) mode\)")


def _last_output(nb: nbformat.NotebookNode) -> str:
    cell = nb.cells[-1]
    assert cell.cell_type == "code", "the last cell must print the notebook's time"
    return "".join(o.get("text", "") for o in cell.get("outputs", []))


def test_there_are_tutorials() -> None:
    assert NOTEBOOKS, "tutorials/ has no notebooks"


def test_tutorials_page_states_the_committed_times() -> None:
    """docs/tutorials/index.md gives each notebook's time as its full run printed."""
    page = (ROOT / "docs" / "tutorials" / "index.md").read_text()
    assert "2-core AMD EPYC" in page  # the machine of the committed runs
    for path in NOTEBOOKS:
        nb = nbformat.read(str(path), as_version=4)
        printed = TIMING.search(_last_output(nb))
        assert printed and printed[3] == "full", path.name
        row = re.search(
            rf"^\| \[`{path.stem}`\]\({path.stem}\.ipynb\) \| (\d+) s \| (\d+) s \|$",
            page,
            flags=re.M,
        )
        assert row, f"docs/tutorials/index.md has no row for {path.name}"
        assert (row[1], row[2]) == (printed[2], printed[1]), (
            f"{path.name}: the page says {row[1]} s CPU, {row[2]} s wall-clock; the "
            f"notebook printed {printed[2]} s CPU, {printed[1]} s wall-clock"
        )


@pytest.mark.notebook
@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_tutorial_executes(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    nb = nbformat.read(str(path), as_version=4)
    # committed notebooks carry their outputs (the docs render them)
    committed_images = sum(
        "image/png" in out.get("data", {})
        for cell in nb.cells
        if cell.cell_type == "code"
        for out in cell.get("outputs", [])
    )
    assert committed_images >= 1, f"{path.name}: committed without figure outputs"
    # committed from a full-mode run, which printed its time
    match = TIMING.search(_last_output(nb))
    assert match and match[3] == "full", f"{path.name}: not committed from full mode"
    parameters = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(parameters) == 1, f"{path.name}: needs one `parameters` cell"
    assert "CAPTUM_EXT_TUTORIAL_TEST" in parameters[0].source
    pythonpath = os.environ.get("PYTHONPATH", "")
    monkeypatch.setenv("PYTHONPATH", str(ROOT) + os.pathsep + pythonpath)
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    monkeypatch.setenv("CAPTUM_EXT_TUTORIAL_TEST", "1")
    NotebookClient(
        nb,
        timeout=None,  # no wall-clock limit: load must not fail the suite
        kernel_name="python3",
        resources={"metadata": {"path": str(ROOT)}},
    ).execute()
    images = sum(
        "image/png" in out.get("data", {})
        for cell in nb.cells
        if cell.cell_type == "code"
        for out in cell.get("outputs", [])
    )
    assert images >= 1, f"{path.name} shows no pictures"
    match = TIMING.search(_last_output(nb))
    assert match and match[3] == "CI", f"{path.name} did not run in CI mode"
