"""Benchmark rows build and their 'equal results' checks hold (no timing here)."""

from __future__ import annotations

import torch

from benchmarks.harness import markdown_table
from benchmarks.run import collect


def test_rows_agree_with_their_counterparts() -> None:
    rows = collect(torch.device("cpu"), quick=True, only=None)
    assert rows
    fake = []
    for i, row in enumerate(rows):
        if row.check is not None:
            row.check(row.ours(), row.theirs())
        # distinct, known numbers per row, so that the table can be read back
        ours, theirs = float(i + 2), 2.0
        fake.append(
            {
                "name": row.name,
                "counterpart": row.counterpart,
                "kind": row.kind,
                "ours_ms": ours,
                "theirs_ms": theirs,
                "ratio": ours / theirs,
                "results": "equal" if row.check is not None else "n/a",
            }
        )
    body = markdown_table(fake).splitlines()[2:]
    assert len(body) == len(rows)
    for line, row, res in zip(body, rows, fake):
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        assert cells[0] == row.name
        assert cells[1] == f"{row.counterpart} ({row.kind})"
        assert float(cells[2]) / float(cells[3]) == float(cells[4])
        assert cells[4] == f"{res['ratio']:.3f}"
        assert cells[7] == res["results"]
