"""README's table and docs/methods.md list every public method, metric and transform.

Each with a link to a tutorial that exists, and benchmark links to row modules that
exist.
"""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MODULES = (
    "captum_ext.attr",
    "captum_ext.metrics",
    "captum_ext.transforms",
    "captum_ext.transforms.linear",
)


def _public_names() -> list[str]:
    names = []
    for module in MODULES:
        mod = importlib.import_module(module)
        names += [n for n in mod.__all__ if not isinstance(getattr(mod, n), type(mod))]
    return names


def _readme_table() -> str:
    text = (ROOT / "README.md").read_text()
    return text.split("## What is in it", 1)[1].split("\n## ", 1)[0]


def _methods_page() -> str:
    return (ROOT / "docs" / "methods.md").read_text()


@pytest.mark.parametrize("name", _public_names())
def test_listed_in_readme_and_methods_page(name: str) -> None:
    assert re.search(rf"`(?:[a-z_.]+\.)?{name}`", _readme_table()), (
        f"{name} is missing from README's table"
    )
    assert re.search(rf"`~captum_ext\.[a-z_.]+\.{name}`", _methods_page()), (
        f"{name} is missing from docs/methods.md"
    )


def _table_rows(text: str) -> list[str]:
    return [ln for ln in text.splitlines() if ln.startswith("| ") and "---" not in ln]


def test_readme_rows_link_existing_tutorials_and_rows() -> None:
    rows = _table_rows(_readme_table())[1:]  # skip the header
    assert rows
    for row in rows:
        tutorials = re.findall(r"\]\((tutorials/[^)]+\.ipynb)\)", row)
        assert tutorials, f"no tutorial link in README row {row[:60]!r}"
        for link in tutorials + re.findall(r"\]\((benchmarks/rows/[^)]+)\)", row):
            assert (ROOT / link).exists(), link


def test_methods_page_rows_link_existing_tutorials_and_rows() -> None:
    rows = [r for r in _table_rows(_methods_page()) if "captum_ext." in r]
    assert rows
    for row in rows:
        tutorials = re.findall(r"\]\(tutorials/([a-z_]+)\)", row)
        assert tutorials, f"no tutorial link in methods.md row {row[:60]!r}"
        for name in tutorials:
            assert (ROOT / "tutorials" / f"{name}.ipynb").exists(), name
        for module in re.findall(r"benchmarks/rows/([a-z_]+)\.py", row):
            assert (ROOT / "benchmarks" / "rows" / f"{module}.py").exists(), module


def test_every_benchmark_row_module_is_linked() -> None:
    modules = {
        p.stem
        for p in (ROOT / "benchmarks" / "rows").glob("*.py")
        if p.stem != "__init__"
    }
    for text, where in ((_readme_table(), "README"), (_methods_page(), "methods.md")):
        linked = set(re.findall(r"benchmarks/rows/([a-z_]+)\.py", text))
        assert modules <= linked, f"{where} does not link {sorted(modules - linked)}"
