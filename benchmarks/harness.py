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
        passes: Forward+backward passes our method needs (lower bound), or None.
        unit: Runs one forward+backward pass at the same batch size, or None.
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
    check: Callable[[Any, Any], None] | None = None
    note: str = ""
    result: dict[str, Any] = field(default_factory=dict)


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def _once(fn: Callable[[], Any]) -> float:
    _sync()
    start = time.perf_counter()
    fn()
    _sync()
    return time.perf_counter() - start


def measure(row: BenchRow, repeats: int = 7, warmup: int = 2) -> dict[str, Any]:
    """Time one row and fill ``row.result``."""
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
            bucket.append(_once(fn))
        if row.unit is not None:
            t_unit.append(_once(row.unit))
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
    }
    if row.passes is not None and t_unit:
        unit = statistics.median(t_unit)
        res["passes"] = row.passes
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
    """Render results as one markdown table."""
    head = (
        "| method | counterpart | ours (ms) | theirs (ms) | ratio ours/theirs "
        "| goal | met | results | passes | ours / lower bound |"
    )
    lines = [head, "|" + "---|" * 10]
    for r in results:
        goal = r.get("goal", "")
        met = {True: "yes", False: "**no**"}.get(r.get("goal_met"), "")  # type: ignore[arg-type]
        lb = f"{r['over_lower_bound']:.2f}" if "over_lower_bound" in r else ""
        passes = f"{r['passes']:g}" if "passes" in r else ""
        lines.append(
            f"| {r['name']} | {r['counterpart']} ({r['kind']}) | {r['ours_ms']:.2f} "
            f"| {r['theirs_ms']:.2f} | {r['ratio']:.3f} | {goal} | {met} "
            f"| {r['results']} | {passes} | {lb} |"
        )
    return "\n".join(lines)


def machine_description() -> dict[str, Any]:
    """Where the numbers were taken."""
    info: dict[str, Any] = {
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
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def write_json(path: str, results: list[dict[str, Any]], device: str) -> None:
    """Write results and the machine description as JSON."""
    payload = {"machine": machine_description(), "device": device, "rows": results}
    with open(path, "w") as f:
        json.dump(payload, f, indent=2)
