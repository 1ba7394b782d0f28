"""Run every benchmark row: ``python -m benchmarks.run [--quick] [--only TEXT]``.

Rows come from the modules in ``benchmarks/rows/``: each defines
``rows(device: torch.device, quick: bool) -> list[BenchRow]`` (an empty list
when an optional counterpart such as Quantus is not importable). Prints the
machine, one markdown table and the rows' notes; writes JSON (``--json``) and,
with ``--markdown PATH``, the same report as a markdown file. A row whose
results differ from its counterpart's, or that fails, is reported in the table
and makes the command exit with status 1; the other rows still run.
See ``benchmarks/README.md``.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
import traceback
import warnings
from typing import Any

import torch

from benchmarks import rows as rows_pkg
from benchmarks.harness import (
    BenchRow,
    machine_description,
    markdown_table,
    measure,
    write_json,
)


def collect(
    device: torch.device,
    quick: bool,
    only: str | None,
    problems: list[str] | None = None,
) -> list[BenchRow]:
    """Import every row module and gather its rows (filtered by ``only``).

    A module that fails to import or to build its rows is skipped and
    described in ``problems`` when a list is given (else the error is raised).
    """
    out: list[BenchRow] = []
    for info in sorted(pkgutil.iter_modules(rows_pkg.__path__), key=lambda i: i.name):
        try:
            module = importlib.import_module(f"benchmarks.rows.{info.name}")
            built = module.rows(device, quick)
        except Exception as err:
            if problems is None:
                raise
            problems.append(f"rows/{info.name}.py: {type(err).__name__}: {err}")
            continue
        if not built and problems is not None:
            problems.append(
                f"rows/{info.name}.py: no rows (an optional counterpart is not "
                "importable; see benchmarks/README.md)"
            )
        for row in built:
            if only is None or only.lower() in (row.name + row.counterpart).lower():
                out.append(row)
    return out


def _failed(row: BenchRow, err: Exception) -> dict[str, Any]:
    message = str(err).strip().splitlines()[0] if str(err).strip() else ""
    return {
        "name": row.name,
        "counterpart": row.counterpart,
        "kind": row.kind,
        "results": f"**FAILED** ({type(err).__name__}: {message[:80]})",
        "note": row.note,
        "failed": True,
    }


def report(results: list[dict[str, Any]], device: torch.device) -> str:
    """The machine, the table and numbered notes, as markdown."""
    machine = machine_description()
    desc = ", ".join(f"{k} {v}" for k, v in machine.items())
    timer = results[0].get("timer", "wall") if results else "wall"
    clock = "process CPU time" if timer == "cpu" else "wall time"
    lines = [
        "# captum-ext benchmark results",
        "",
        "Written by `python -m benchmarks.run --markdown benchmarks/RESULTS.md` "
        "(Quantus rows need `quantus` importable; see benchmarks/README.md). "
        "ratio = our time / the counterpart's; *ours / lower bound* = our time "
        "over `passes` x the measured cost of one unavoidable pass (1.0 = no "
        "overhead).",
        "",
        f"Machine: {desc}; device: {device}; timings: medians of {clock}.",
        "",
        markdown_table(results),
        "",
    ]
    for i, r in enumerate(results, 1):
        if r.get("note"):
            lines.append(f"{i}. {r['name']} vs {r['counterpart']}: {r['note']}")
    return "\n".join(lines) + "\n"


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
    parser.add_argument(
        "--timer",
        choices=("wall", "cpu"),
        default="wall",
        help="wall time (default) or process CPU time (steadier on a shared CPU)",
    )
    parser.add_argument(
        "--threads", type=int, default=None, help="torch.set_num_threads(N) first"
    )
    parser.add_argument("--json", default="benchmarks/results/latest.json")
    parser.add_argument(
        "--markdown", default=None, help="also write the report to this file"
    )
    parser.add_argument(
        "--list", action="store_true", help="list the rows and exit (no timing)"
    )
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore", message="Input Tensor .* did not already require")
    device = torch.device(args.device)
    if args.timer == "cpu" and device.type != "cpu":
        parser.error("--timer cpu measures CPU time: use it with --device cpu")
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    repeats = args.repeats or (3 if args.quick else 9)
    problems: list[str] = []
    rows = collect(device, args.quick, args.only, problems)
    for p in problems:
        print(f"note: {p}", file=sys.stderr)
    if args.list:
        for row in rows:
            print(f"{row.name} vs {row.counterpart} ({row.kind})")
        return 0
    results = []
    for row in rows:
        print(f"... {row.name} vs {row.counterpart}", file=sys.stderr, flush=True)
        try:
            results.append(measure(row, repeats=repeats, timer=args.timer))
        except Exception as err:
            traceback.print_exc(file=sys.stderr)
            results.append(_failed(row, err))
    text = report(results, device)
    print(text)
    if args.json:
        write_json(args.json, results, str(device))
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(text)
    failed = any(r.get("failed") for r in results) or any(
        p for p in problems if "no rows" not in p
    )
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
