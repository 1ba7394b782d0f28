"""Execute tutorial notebooks and report their wall-clock and CPU time.

Usage: ``python tools/run_tutorials.py [--ci] [--write] [NOTEBOOK ...]``

Without arguments every notebook in ``tutorials/`` runs. ``--ci`` sets
``CAPTUM_EXT_TUTORIAL_TEST=1`` (the CI-sized mode the test suite uses: less
data, fewer epochs and steps); without it the notebooks run in full mode, the
mode whose outputs are committed. ``--write`` saves the executed notebook in
place (only do this in full mode). ``--cells`` also lists each cell's time.

The CPU time is that of the kernel process (user + system, all its threads),
read from ``getrusage`` of this process's children after the kernel exits.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import time
from datetime import datetime
from pathlib import Path

import nbformat
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _cell_seconds(cell: nbformat.NotebookNode) -> float:
    timing = cell.get("metadata", {}).get("execution", {})
    try:
        start = datetime.fromisoformat(timing["iopub.execute_input"].rstrip("Z"))
        end = datetime.fromisoformat(timing["shell.execute_reply"].rstrip("Z"))
    except (KeyError, ValueError):
        return float("nan")
    return (end - start).total_seconds()


def run(path: Path, ci: bool, write: bool, cells: bool) -> tuple[float, float]:
    """Execute one notebook; return its wall-clock and kernel CPU seconds."""
    nb = nbformat.read(str(path), as_version=4)
    env_path = os.environ.get("PYTHONPATH", "")
    os.environ["PYTHONPATH"] = str(ROOT) + (os.pathsep + env_path if env_path else "")
    os.environ.setdefault("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    if ci:
        os.environ["CAPTUM_EXT_TUTORIAL_TEST"] = "1"
    else:
        os.environ.pop("CAPTUM_EXT_TUTORIAL_TEST", None)
    cpu0, wall0 = _children_cpu(), time.perf_counter()
    NotebookClient(
        nb,
        timeout=None,
        kernel_name="python3",
        resources={"metadata": {"path": str(ROOT)}},
    ).execute()
    wall, cpu = time.perf_counter() - wall0, _children_cpu() - cpu0
    if cells:
        for i, cell in enumerate(nb.cells):
            if cell.cell_type == "code":
                first = cell.source.strip().splitlines()[0][:60] if cell.source else ""
                print(f"  [{i:2d}] {_cell_seconds(cell):7.1f} s  {first}")
    if write:
        nbformat.write(nb, str(path))
    return wall, cpu


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("notebooks", nargs="*", type=Path)
    parser.add_argument("--ci", action="store_true", help="CI-sized mode")
    parser.add_argument("--write", action="store_true", help="save outputs in place")
    parser.add_argument("--cells", action="store_true", help="time of every cell")
    args = parser.parse_args(argv)
    if args.write and args.ci:
        parser.error("--write saves full-mode outputs; drop --ci")
    paths = args.notebooks or sorted((ROOT / "tutorials").glob("*.ipynb"))
    mode = "CI mode" if args.ci else "full mode"
    for path in paths:
        wall, cpu = run(path, args.ci, args.write, args.cells)
        print(f"{path.name}: {wall:.1f} s wall, {cpu:.1f} s CPU ({mode})", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
