"""The benchmark runner: one command, one table, failures reported (no timing)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

from benchmarks import harness, run
from benchmarks.harness import BenchRow, markdown_table, measure


def _row(check_ok: bool = True) -> BenchRow:
    def check(a: torch.Tensor, b: torch.Tensor) -> None:
        if not check_ok:
            raise AssertionError("results differ")

    return BenchRow(
        name="toy",
        counterpart="toy twin",
        kind="naive",
        ours=lambda: torch.ones(3),
        theirs=lambda: torch.ones(3),
        goal=("speedup>=", 1.5),
        passes=4,
        unit=lambda: torch.ones(3),
        unit_kind="fwd",
        check=check,
        note="a toy row",
    )


@pytest.mark.parametrize("timer", ["wall", "cpu"])
def test_measure_fills_every_column(timer: str) -> None:
    res = measure(_row(), repeats=2, warmup=1, timer=timer)
    for key in ("ratio", "speedup", "over_lower_bound", "unit_ms", "goal_met"):
        assert key in res
    assert res["results"] == "equal" and res["passes"] == 4
    assert res["ratio"] == pytest.approx(res["ours_ms"] / res["theirs_ms"])


def _cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


class _FakeClock:
    """A clock that only the rows' callables advance, by known amounts."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def spend(self, seconds: float, value: object) -> object:
        self.now += seconds
        return value


@pytest.mark.parametrize(
    ("goal", "met", "shown"),
    [
        (("speedup>=", 1.5), False, "speed-up >= 1.5"),
        (("ratio<=", 1.5), True, "ratio <= 1.5"),
        (("ratio<=", 1.49), False, "ratio <= 1.49"),
    ],
)
def test_measured_numbers_are_consistent(
    monkeypatch: pytest.MonkeyPatch,
    goal: tuple[str, float],
    met: bool,
    shown: str,
) -> None:
    # ours costs 3 s, theirs 2 s, one unit pass 0.5 s: every column is known
    clock = _FakeClock()
    monkeypatch.setitem(harness.TIMERS, "fake", clock)
    seen = []
    row = BenchRow(
        name="toy",
        counterpart="toy twin",
        kind="naive",
        ours=lambda: clock.spend(3.0, "ours"),
        theirs=lambda: clock.spend(2.0, "theirs"),
        goal=goal,
        passes=4,
        unit=lambda: clock.spend(0.5, None),
        unit_kind="fwd",
        check=lambda a, b: seen.append((a, b)),
    )
    res = measure(row, repeats=3, warmup=1, timer="fake")
    assert seen == [("ours", "theirs")]  # the check got both results, once
    assert res["results"] == "equal"
    assert res["ours_ms"] == pytest.approx(3000.0)
    assert res["theirs_ms"] == pytest.approx(2000.0)
    assert res["ratio"] == pytest.approx(1.5)  # ours / theirs
    assert res["speedup"] == pytest.approx(2.0 / 3.0)
    assert res["unit_ms"] == pytest.approx(500.0)
    assert res["over_lower_bound"] == pytest.approx(3.0 / (4 * 0.5))
    assert res["goal"] == shown and res["goal_met"] is met
    lines = markdown_table([res]).splitlines()
    assert len(lines) == 3
    assert _cells(lines[2]) == [
        "toy",
        "toy twin (naive)",
        "3000.00",
        "2000.00",
        "1.500",
        shown,
        "yes" if met else "**no**",
        "equal",
        "4 fwd",
        "500.00",
        "1.50",
    ]


def test_results_column_without_check_and_with_a_failing_check() -> None:
    row = _row()
    row.check = None
    assert measure(row, repeats=1, warmup=0)["results"] == "n/a"
    with pytest.raises(AssertionError, match="results differ"):
        measure(_row(check_ok=False), repeats=1, warmup=0)


def test_failed_row_is_reported_not_fatal(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(
        run, "collect", lambda d, q, o, p=None: [_row(check_ok=False), _row()]
    )
    md = tmp_path / "table.md"
    code = run.main(
        ["--repeats", "1", "--json", str(tmp_path / "r.json"), "--markdown", str(md)]
    )
    assert code == 1  # a row whose results differ fails the command
    text = md.read_text()
    assert "**FAILED** (AssertionError: results differ)" in text
    assert text.count("| toy |") == 2 and "1. toy vs toy twin: a toy row" in text
    assert "**FAILED**" in capsys.readouterr().out


def test_quantus_rows_only_when_importable() -> None:
    from benchmarks.rows import image_degradation as rows_mod

    kinds = [r.kind for r in rows_mod.rows(torch.device("cpu"), quick=True)]
    has_quantus = importlib.util.find_spec("quantus") is not None
    assert ("Quantus" in kinds) == has_quantus
    assert "naive" in kinds  # the naive-loop row always runs (and is checked in CI)


def test_list_rows(capsys: pytest.CaptureFixture[str]) -> None:
    assert run.main(["--list", "--only", "degradation"]) == 0
    assert "torch step loop (naive)" in capsys.readouterr().out
