"""Sphinx configuration for captum-ext."""

from __future__ import annotations

import importlib
import shutil
import sys
from pathlib import Path
from typing import Any

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
    # MathJax 3 served from _static: math renders without network access
    "sphinx-mathjax-offline",
    "sphinx.ext.intersphinx",
    "sphinx.ext.viewcode",
    "myst_nb",
]

autosummary_generate = False
# Class docstring and __init__ docstring together, as in Captum's docs.
autoclass_content = "both"
# An __init__ without a docstring must not show Captum's (PatternNet would
# document a ``forward_func`` it does not take).
autodoc_inherit_docstrings = False
autodoc_member_order = "bysource"
# Defaults as written in the source (no private module paths in signatures).
autodoc_preserve_defaults = True
autodoc_typehints = "description"
autodoc_typehints_format = "short"
autodoc_class_signature = "mixed"
autodoc_default_options = {"members": True, "show-inheritance": True}
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False

# Tutorials are rendered from their committed outputs, never executed here.
nb_execution_mode = "off"
myst_enable_extensions = ["dollarmath", "amsmath"]
source_suffix = {".rst": "restructuredtext", ".md": "myst-nb", ".ipynb": "myst-nb"}
exclude_patterns = ["_build", "**.ipynb_checkpoints"]

# Offline intersphinx: small inventories of the names we refer to, pointing
# at the real online pages (made by tools/make_intersphinx_inventories.py);
# no network access is needed, here or in CI.
intersphinx_mapping: dict[str, tuple[str, str | None]] = {
    "python": ("https://docs.python.org/3/", "_inventories/python.inv"),
    "torch": ("https://pytorch.org/docs/stable/", "_inventories/torch.inv"),
    "numpy": ("https://numpy.org/doc/stable/", "_inventories/numpy.inv"),
    "captum": ("https://captum.ai/api/", "_inventories/captum.inv"),
}
napoleon_preprocess_types = True
napoleon_type_aliases = {
    "Tensor": "torch.Tensor",
    "nn.Module": "torch.nn.Module",
    "DataLoader": "torch.utils.data.DataLoader",
    "Dataset": "torch.utils.data.Dataset",
    "Attribution": "captum.attr.Attribution",
    "Callable": "collections.abc.Callable",
    "Mapping": "collections.abc.Mapping",
    "Iterable": "collections.abc.Iterable",
}

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


# Members never shown: Captum's asynchronous entry point, which our classes
# do not implement.
_HIDDEN_MEMBERS = {"attribute_future"}

# Public modules a base class may be re-exported from, most specific first.
_PUBLIC_MODULES = (
    "captum_ext.attr",
    "captum_ext.metrics",
    "captum_ext.models",
    "captum_ext.data",
    "captum_ext.transforms",
    "captum.attr",
    "captum.metrics",
    "torch.nn",
    "torch.utils.data",
    "torch",
)


def _skip_member(
    app: object, what: str, name: str, obj: object, skip: bool, options: object
) -> bool | None:
    return True if name in _HIDDEN_MEMBERS else None


def _public_name(cls: type) -> str | None:
    """The public dotted name ``cls`` is exported under, or None."""
    module = getattr(cls, "__module__", "") or ""
    name = cls.__qualname__
    if name.startswith("_"):
        return None
    if module == "builtins":
        return name
    for public in _PUBLIC_MODULES:  # the shortest public import path
        if module.split(".")[0] != public.split(".")[0]:
            continue
        try:
            if getattr(importlib.import_module(public), name, None) is cls:
                return f"{public}.{name}"
        except ImportError:  # pragma: no cover
            continue
    if not any(part.startswith("_") for part in module.split(".")):
        return f"{module}.{name}"
    return None


def _public_bases(
    app: object, name: str, obj: object, options: object, bases: list[Any]
) -> None:
    """Show only public base classes, under their public names.

    A private base (``_PatternAttributionBase``, or a class only importable
    from a private module) is replaced by its own bases; a public class
    defined in a private module (Captum's ``captum.attr._utils.attribution.
    GradientAttribution``) is shown as ``captum.attr.GradientAttribution``.
    """
    shown: list[Any] = []

    def visit(base: Any) -> None:
        if not isinstance(base, type) or base is object:
            if base not in shown:
                shown.append(base)
            return
        public = _public_name(base)
        if public is None:
            for parent in base.__bases__:
                visit(parent)
            return
        ref = f":py:class:`{public}`"
        if ref not in shown:
            shown.append(ref)

    for base in list(bases):
        visit(base)
    bases[:] = shown or [object]


def setup(app: object) -> None:
    app.connect("builder-inited", _copy_tutorials)  # type: ignore[attr-defined]
    app.connect("autodoc-skip-member", _skip_member)  # type: ignore[attr-defined]
    app.connect("autodoc-process-bases", _public_bases)  # type: ignore[attr-defined]
