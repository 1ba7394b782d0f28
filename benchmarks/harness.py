"""Timing harness: ours vs a counterpart, in one process, interleaved.

Each :class:`BenchRow` holds two zero-argument callables that do the same work
(ours and the counterpart's). The harness warms both up, then alternates them
for ``repeats`` rounds (switching which goes first every round, so drift and
caching favour neither), takes medians, and reports the ratio
``ours / counterpart``. Optionally a row gives the number of forward+backward
passes the method needs and a callable that runs one such pass; the harness
then reports ``ours / (passes * one pass)``, the distance to the pass-count
lower bound. Goals are checked and shown, never asserted: timings do not go
into tests.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch


@dataclass
class BenchRow:
    """One benchmark comparison.

    Attributes:
        name: What is measured (our method and setting).
        counterpart: What it is compared with.
        kind: ``"Captum"``, ``"Quantus"``, ``"naive"`` or ``"forward pass"``.
        ours: Runs our method once.
        theirs: Runs the counterpart once (same inputs, same result).
        goal: ``("ratio<=", x)`` (ours/theirs at most x) or ``("speedup>=", x)``
            (theirs/ours at least x), or None.
        passes: Passes our method needs at the least (the lower bound), in units
            of ``unit``, or None.
        unit: Runs one pass at the same batch size (the unit of cost), or None.
        unit_kind: What one unit pass is: ``"fwd+bwd"`` (a forward and a
            backward pass w.r.t. the input: attribution methods) or ``"fwd"``
            (a plain forward pass without grad: perturbation metrics).
        check: Called once with (ours(), theirs()) results; raises if they differ.
        note: Free text (sizes, settings).
    """

    name: str
    counterpart: str
    kind: str
    ours: Callable[[], Any]
    theirs: Callable[[], Any]
    goal: tuple[str, float] | None = None
    passes: float | None = None
    unit: Callable[[], Any] | None = None
    unit_kind: str = "fwd+bwd"
    check: Callable[[Any, Any], None] | None = None
    note: str = ""
    result: dict[str, Any] = field(default_factory=dict)


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


#: Clocks ``measure`` can use: wall time, or this process's CPU time (all its
#: threads; steadier than wall time when other jobs share the CPU, CPU only).
TIMERS: dict[str, Callable[[], float]] = {
    "wall": time.perf_counter,
    "cpu": time.process_time,
}


def _once(fn: Callable[[], Any], clock: Callable[[], float]) -> float:
    _sync()
    start = clock()
    fn()
    _sync()
    return clock() - start


def measure(
    row: BenchRow, repeats: int = 7, warmup: int = 2, timer: str = "wall"
) -> dict[str, Any]:
    """Time one row and fill ``row.result`` (``timer``: a key of ``TIMERS``)."""
    clock = TIMERS[timer]
    checked = "n/a"
    if row.check is not None:
        row.check(row.ours(), row.theirs())
        checked = "equal"
    for _ in range(warmup):
        row.ours()
        row.theirs()
        if row.unit is not None:
            row.unit()
    t_ours, t_theirs, t_unit = [], [], []
    for r in range(repeats):
        pair = [(t_ours, row.ours), (t_theirs, row.theirs)]
        if r % 2:
            pair.reverse()
        for bucket, fn in pair:
            bucket.append(_once(fn, clock))
        if row.unit is not None:
            t_unit.append(_once(row.unit, clock))
    ours = statistics.median(t_ours)
    theirs = statistics.median(t_theirs)
    res: dict[str, Any] = {
        "name": row.name,
        "counterpart": row.counterpart,
        "kind": row.kind,
        "ours_ms": 1000 * ours,
        "theirs_ms": 1000 * theirs,
        "ratio": ours / theirs,
        "speedup": theirs / ours,
        "results": checked,
        "note": row.note,
        "timer": timer,
    }
    if row.passes is not None and t_unit:
        unit = statistics.median(t_unit)
        res["passes"] = row.passes
        res["unit_kind"] = row.unit_kind
        res["unit_ms"] = 1000 * unit
        res["over_lower_bound"] = ours / (row.passes * unit)
    if row.goal is not None:
        op, value = row.goal
        metric = res["ratio"] if op == "ratio<=" else res["speedup"]
        res["goal"] = f"{'ratio' if op == 'ratio<=' else 'speed-up'} "
        res["goal"] += f"{'<=' if op == 'ratio<=' else '>='} {value:g}"
        res["goal_met"] = metric <= value if op == "ratio<=" else metric >= value
    row.result = res
    return res


def markdown_table(results: list[dict[str, Any]]) -> str:
    """Render results as one markdown table (one line per row, no notes).

    Columns: our method; the counterpart and its kind (Captum / Quantus /
    naive); median times; ``ours/theirs`` (below 1: we are faster) and the goal;
    whether the results were checked equal; the pass-count lower bound
    (``passes`` x the measured cost of one ``unit`` pass) and our time divided
    by it (1.0 = no overhead beyond the passes the method cannot avoid). A row
    whose check or run failed shows the error in the results column.
    """
    head = (
        "| method | counterpart | ours (ms) | theirs (ms) | ratio ours/theirs "
        "| goal | met | results | passes | unit (ms) | ours / lower bound |"
    )
    lines = [head, "|" + "---|" * 11]
    for r in results:
        goal = r.get("goal", "")
        met = {True: "yes", False: "**no**"}.get(r.get("goal_met"), "")  # type: ignore[arg-type]
        lb = f"{r['over_lower_bound']:.2f}" if "over_lower_bound" in r else ""
        passes = ""
        if "passes" in r:
            passes = f"{r['passes']:g} {r.get('unit_kind', 'fwd+bwd')}"
        unit = f"{r['unit_ms']:.2f}" if "unit_ms" in r else ""
        ours = f"{r['ours_ms']:.2f}" if "ours_ms" in r else ""
        theirs = f"{r['theirs_ms']:.2f}" if "theirs_ms" in r else ""
        ratio = f"{r['ratio']:.3f}" if "ratio" in r else ""
        lines.append(
            f"| {r['name']} | {r['counterpart']} ({r['kind']}) | {ours} "
            f"| {theirs} | {ratio} | {goal} | {met} "
            f"| {r['results']} | {passes} | {unit} | {lb} |"
        )
    return "\n".join(lines)


def _cpu_model() -> str:
    """The CPU's model name (Linux), else what ``platform`` knows."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_description() -> dict[str, Any]:
    """Where the numbers were taken."""
    info: dict[str, Any] = {
        "cpu": _cpu_model(),
        "logical_cpus": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "torch_threads": torch.get_num_threads(),
    }
    try:
        import captum

        info["captum"] = captum.__version__
    except ImportError:  # pragma: no cover
        pass
    try:
        import quantus

        info["quantus"] = quantus.__version__
    except ImportError:
        pass
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def write_json(path: str, results: list[dict[str, Any]], device: str) -> None:
    """Write results and the machine description as JSON."""
    payload = {"machine": machine_description(), "device": device, "rows": results}
    with open(path, "w") as f:
        json.dump(payload, f, indent=2)
