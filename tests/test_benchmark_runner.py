"""The benchmark runner: one command, one table, failures reported (no timing)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

from benchmarks import run
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
    table = markdown_table([res])
    assert table.count("\n") == 2 and "4 fwd" in table and "toy twin (naive)" in table


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
