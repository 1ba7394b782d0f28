"""Benchmark rows build and their 'equal results' checks hold (no timing here)."""

from __future__ import annotations

import torch

from benchmarks.harness import markdown_table
from benchmarks.run import collect


def test_rows_agree_with_their_counterparts() -> None:
    rows = collect(torch.device("cpu"), quick=True, only=None)
    assert rows
    fake = []
    for row in rows:
        if row.check is not None:
            row.check(row.ours(), row.theirs())
        fake.append(
            {
                "name": row.name,
                "counterpart": row.counterpart,
                "kind": row.kind,
                "ours_ms": 1.0,
                "theirs_ms": 1.0,
                "ratio": 1.0,
                "results": "equal",
            }
        )
    assert markdown_table(fake).count("\n") == len(rows) + 1
