"""Every public name is exported, documented, typed and in the API reference."""

from __future__ import annotations

import importlib
import inspect
import re
from pathlib import Path

import pytest

import captum_ext

ROOT = Path(__file__).resolve().parents[1]
SUBPACKAGES = sorted(
    p.name
    for p in (ROOT / "captum_ext").iterdir()
    if p.is_dir() and (p / "__init__.py").exists() and not p.name.startswith("_")
)
API_TEXT = "\n".join(p.read_text() for p in (ROOT / "docs" / "api").glob("*.rst"))


def _public(sub: str) -> list[tuple[str, object]]:
    mod = importlib.import_module(f"captum_ext.{sub}")
    return [(name, getattr(mod, name)) for name in getattr(mod, "__all__", [])]


def test_version() -> None:
    assert re.match(r"^\d+\.\d+\.\d+", captum_ext.__version__)


@pytest.mark.parametrize("sub", SUBPACKAGES)
def test_subpackage_has_api_page(sub: str) -> None:
    assert (ROOT / "docs" / "api" / f"{sub}.rst").exists()


@pytest.mark.parametrize("sub", SUBPACKAGES)
def test_public_names_documented(sub: str) -> None:
    for name, obj in _public(sub):
        assert re.search(rf"captum_ext\.{sub}\.{name}\b", API_TEXT), (
            f"captum_ext.{sub}.{name} is missing from docs/api/{sub}.rst"
        )
        doc = inspect.getdoc(obj) or ""
        assert len(doc) > 40, f"captum_ext.{sub}.{name} needs a docstring"
        if inspect.isfunction(obj):
            assert "Returns:" in doc or "Yields:" in doc, f"{name}: no Returns section"
            assert "Examples" in doc, f"{name}: no Examples section"
        if inspect.isclass(obj) and hasattr(obj, "attribute"):
            attr_doc = inspect.getdoc(obj.attribute) or ""
            assert "Args:" in attr_doc and "Returns:" in attr_doc, name
            assert "Examples" in doc or "Examples" in attr_doc, name
