"""Sphinx configuration for captum-ext."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
sys.path.insert(0, str(ROOT))

import captum_ext  # noqa: E402

project = "captum-ext"
author = "captum-ext contributors"
copyright = "2026, captum-ext contributors"
release = captum_ext.__version__
version = release

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "sphinx.ext.intersphinx",
    "sphinx.ext.viewcode",
    "myst_nb",
]

autosummary_generate = False
autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_typehints_format = "short"
autodoc_class_signature = "separated"
autodoc_default_options = {"members": True, "show-inheritance": True}
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False

# Tutorials are rendered from their committed outputs, never executed here.
nb_execution_mode = "off"
myst_enable_extensions = ["dollarmath", "amsmath"]
source_suffix = {".rst": "restructuredtext", ".md": "myst-nb", ".ipynb": "myst-nb"}
exclude_patterns = ["_build", "**.ipynb_checkpoints"]

intersphinx_mapping: dict[str, tuple[str, str | None]] = {}

html_theme = "furo"
html_title = f"captum-ext {release}"
html_static_path = ["_static"]
suppress_warnings = ["mystnb.unknown_mime_type", "config.cache"]


def _copy_tutorials(app: object) -> None:
    """Copy the notebooks of ``tutorials/`` into the docs source tree."""
    target = DOCS / "tutorials"
    target.mkdir(exist_ok=True)
    for old in target.glob("*.ipynb"):
        old.unlink()
    for nb in sorted((ROOT / "tutorials").glob("*.ipynb")):
        shutil.copy2(nb, target / nb.name)


def setup(app: object) -> None:
    app.connect("builder-inited", _copy_tutorials)  # type: ignore[attr-defined]
