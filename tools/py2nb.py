"""Build a tutorial notebook from a percent-format script and execute it.

Usage: ``python tools/py2nb.py SOURCE.py tutorials/NAME.ipynb``

Cells start with ``# %%`` (code) or ``# %% [markdown]`` (markdown; each line's
leading ``# `` is removed). The notebook is executed in the repository root
with the local ``captum_ext`` importable, and saved with its outputs, so the
docs can render it without executing it again. Use ``--no-execute`` to only
convert.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]


def parse(source: str) -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    cells: list[tuple[str, list[str]]] = []
    for line in source.splitlines():
        if line.startswith("# %%"):
            kind = "markdown" if "[markdown]" in line else "code"
            cells.append((kind, []))
            continue
        if not cells:
            cells.append(("code", []))
        cells[-1][1].append(line)
    for kind, lines in cells:
        while lines and not lines[-1].strip():
            lines.pop()
        while lines and not lines[0].strip():
            lines.pop(0)
        if not lines:
            continue
        if kind == "markdown":
            text = "\n".join(
                ln[2:] if ln.startswith("# ") else ln.lstrip("#") for ln in lines
            )
            nb.cells.append(nbformat.v4.new_markdown_cell(text))
        else:
            nb.cells.append(nbformat.v4.new_code_cell("\n".join(lines)))
    nb.metadata["kernelspec"] = {
        "display_name": "Python 3",
        "language": "python",
        "name": "python3",
    }
    nb.metadata["language_info"] = {"name": "python"}
    return nb


def execute(nb: nbformat.NotebookNode, timeout: int = 600) -> float:
    env_path = os.environ.get("PYTHONPATH", "")
    os.environ["PYTHONPATH"] = str(ROOT) + (os.pathsep + env_path if env_path else "")
    os.environ.setdefault("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    start = time.perf_counter()
    NotebookClient(
        nb,
        timeout=timeout,
        kernel_name="python3",
        resources={"metadata": {"path": str(ROOT)}},
    ).execute()
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("source", type=Path)
    parser.add_argument("target", type=Path)
    parser.add_argument("--no-execute", action="store_true")
    args = parser.parse_args(argv)
    nb = parse(args.source.read_text())
    if not args.no_execute:
        seconds = execute(nb)
        print(f"executed in {seconds:.1f} s", file=sys.stderr)
    nbformat.write(nb, str(args.target))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
