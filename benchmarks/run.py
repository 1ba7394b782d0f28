"""Run every benchmark row: ``python -m benchmarks.run [--quick] [--only TEXT]``.

Rows come from the modules in ``benchmarks/rows/``: each defines
``rows(device: torch.device, quick: bool) -> list[BenchRow]``. Prints one
markdown table and writes JSON (``--json``).
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
import warnings

import torch

from benchmarks import rows as rows_pkg
from benchmarks.harness import (
    BenchRow,
    machine_description,
    markdown_table,
    measure,
    write_json,
)


def collect(device: torch.device, quick: bool, only: str | None) -> list[BenchRow]:
    """Import every row module and gather its rows (filtered by ``only``)."""
    out: list[BenchRow] = []
    for info in sorted(pkgutil.iter_modules(rows_pkg.__path__), key=lambda i: i.name):
        module = importlib.import_module(f"benchmarks.rows.{info.name}")
        for row in module.rows(device, quick):
            if only is None or only.lower() in (row.name + row.counterpart).lower():
                out.append(row)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run")
    parser.add_argument("--quick", action="store_true", help="small sizes, 3 repeats")
    parser.add_argument(
        "--only", default=None, help="run rows whose name contains this"
    )
    parser.add_argument(
        "--device", default="cuda" if torch.cuda.is_available() else "cpu"
    )
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--json", default="benchmarks/results/latest.json")
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore", message="Input Tensor .* did not already require")
    device = torch.device(args.device)
    torch.manual_seed(0)
    repeats = args.repeats or (3 if args.quick else 9)
    results = []
    for row in collect(device, args.quick, args.only):
        print(f"... {row.name} vs {row.counterpart}", file=sys.stderr, flush=True)
        results.append(measure(row, repeats=repeats))
    print(f"machine: {machine_description()}  device: {device}\n")
    print(markdown_table(results))
    if args.json:
        write_json(args.json, results, str(device))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
