"""Write the small intersphinx inventories that docs/conf.py reads offline.

The docs build runs without network access (CI included), so intersphinx
cannot download the real ``objects.inv`` of Python, PyTorch, NumPy and Captum.
This script writes, for each of them, an inventory of only the names our
docstrings and type hints refer to, each pointing to its page in the real
online documentation. Sphinx then links those names exactly as it would with
the full inventories.

Add a name to ``ENTRIES`` when the docs start referring to a new one (a
nitpicky build, ``sphinx-build -n``, lists the unresolved ones), then run::

    python tools/make_intersphinx_inventories.py

and commit the changed ``docs/_inventories/*.inv``. The files follow the
Sphinx inventory format version 2 (a text header, then zlib-compressed lines
``name domain:role priority uri display-name``); this script checks each file
by reading it back with Sphinx's own ``InventoryFile``.
"""

from __future__ import annotations

import zlib
from pathlib import Path

OUT = Path(__file__).resolve().parents[1] / "docs" / "_inventories"
GEN = "generated"  # PyTorch's page of its own per name: generated/<name>.html
BUILTINS = "library/functions.html"

# project -> (version, base URL, [(name, role, page#anchor or "" for #name)])
ENTRIES: dict[str, tuple[str, str, list[tuple[str, str, str]]]] = {
    "python": (
        "3",
        "https://docs.python.org/3/",
        [
            *[(n, "py:class", BUILTINS) for n in ("int", "float", "bool")],
            *[
                (n, "py:class", "library/stdtypes.html")
                for n in ("str", "tuple", "list", "dict", "set")
            ],
            ("None", "py:data", "library/constants.html"),
            *[
                (n, "py:exception", "library/exceptions.html")
                for n in (
                    "AssertionError",
                    "KeyboardInterrupt",
                    "RuntimeError",
                    "TypeError",
                    "ValueError",
                    "UserWarning",
                    "NotImplementedError",
                )
            ],
            *[
                (f"collections.abc.{n}", "py:class", "library/collections.abc.html")
                for n in ("Callable", "Iterable", "Iterator", "Mapping", "Sequence")
            ],
            *[
                (f"typing.{n}", "py:data", "library/typing.html")
                for n in ("Any", "Literal", "Optional", "Union")
            ],
            ("functools.partial", "py:function", "library/functools.html"),
            ("os.PathLike", "py:class", "library/os.html"),
            ("os.replace", "py:function", "library/os.html"),
            ("os.fsync", "py:function", "library/os.html"),
            ("pathlib.Path", "py:class", "library/pathlib.html"),
            ("contextlib.contextmanager", "py:function", "library/contextlib.html"),
            ("warnings.warn", "py:function", "library/warnings.html"),
            ("typing.NamedTuple", "py:class", "library/typing.html"),
        ],
    ),
    "torch": (
        "stable",
        "https://pytorch.org/docs/stable/",
        [
            ("torch.Tensor", "py:class", "tensors.html"),
            ("torch.dtype", "py:class", "tensor_attributes.html"),
            ("torch.device", "py:class", "tensor_attributes.html"),
            ("torch.Generator", "py:class", GEN),
            ("torch.nn.Module", "py:class", GEN),
            ("torch.nn.Sequential", "py:class", GEN),
            ("torch.nn.BatchNorm2d", "py:class", GEN),
            ("torch.nn.Dropout", "py:class", GEN),
            ("torch.nn.Linear", "py:class", GEN),
            ("torch.nn.Conv2d", "py:class", GEN),
            ("torch.nn.ReLU", "py:class", GEN),
            ("torch.optim.Adam", "py:class", GEN),
            ("torch.optim.SGD", "py:class", GEN),
            ("torch.save", "py:function", GEN),
            ("torch.load", "py:function", GEN),
            ("torch.no_grad", "py:class", GEN),
            ("torch.inference_mode", "py:class", GEN),
            ("torch.autograd.grad", "py:function", GEN),
            ("torch.distributed", "py:module", "distributed.html#module-$"),
            *[
                (f"torch.utils.data.{n}", "py:class", "data.html")
                for n in (
                    "DataLoader",
                    "Dataset",
                    "IterableDataset",
                    "TensorDataset",
                    "DistributedSampler",
                    "RandomSampler",
                )
            ],
        ],
    ),
    "numpy": (
        "stable",
        "https://numpy.org/doc/stable/",
        [
            ("numpy.ndarray", "py:class", "reference/generated/numpy.ndarray.html"),
            ("numpy.integer", "py:class", "reference/arrays.scalars.html"),
            ("numpy.floating", "py:class", "reference/arrays.scalars.html"),
        ],
    ),
    "captum": (
        "0.9",
        "https://captum.ai/api/",
        [
            ("captum.attr", "py:module", "attribution.html#module-$"),
            ("captum.metrics", "py:module", "metrics.html#module-$"),
            ("captum.attr.Attribution", "py:class", "base_classes.html"),
            ("captum.attr.GradientAttribution", "py:class", "base_classes.html"),
            ("captum.attr.LayerAttribution", "py:class", "base_classes.html"),
            ("captum.attr.IntegratedGradients", "py:class", "integrated_gradients"),
            ("captum.attr.Saliency", "py:class", "saliency.html"),
            ("captum.attr.InputXGradient", "py:class", "input_x_gradient.html"),
            ("captum.attr.DeepLift", "py:class", "deep_lift.html"),
            ("captum.attr.GuidedBackprop", "py:class", "guided_backprop.html"),
            ("captum.attr.GradientShap", "py:class", "gradient_shap.html"),
            ("captum.attr.NoiseTunnel", "py:class", "noise_tunnel.html"),
            ("captum.attr.LayerConductance", "py:class", "layer.html"),
            ("captum.attr.LayerIntegratedGradients", "py:class", "layer.html"),
            ("captum.metrics.infidelity", "py:function", "metrics.html"),
            ("captum.metrics.sensitivity_max", "py:function", "metrics.html"),
        ],
    ),
}


def _line(name: str, role: str, page: str) -> str:
    if page == GEN:
        page = f"generated/{name}.html"
    elif not page.endswith(".html") and "#" not in page:
        page = f"{page}.html"
    uri = page if "#" in page else f"{page}#$"  # "$" stands for the name
    return f"{name} {role} 1 {uri} -"


def write(project: str, version: str, entries: list[tuple[str, str, str]]) -> Path:
    header = (
        "# Sphinx inventory version 2\n"
        f"# Project: {project}\n"
        f"# Version: {version}\n"
        "# The remainder of this file is compressed using zlib.\n"
    )
    body = "".join(_line(*e) + "\n" for e in sorted(set(entries)))
    path = OUT / f"{project}.inv"
    path.write_bytes(header.encode() + zlib.compress(body.encode(), 9))
    return path


def check(path: Path, base: str, entries: list[tuple[str, str, str]]) -> None:
    """Read the file back with Sphinx and check every entry resolves."""
    from sphinx.util.inventory import InventoryFile

    with open(path, "rb") as f:
        inv = InventoryFile.load(f, base, lambda base, uri: base + uri)
    data = inv.data if hasattr(inv, "data") else inv  # Sphinx >= 8.2 / older
    for name, role, _ in entries:
        item = data[role][name]
        uri = item.uri if hasattr(item, "uri") else item[2]
        assert uri.startswith(base), (name, uri)


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    for project, (version, base, entries) in ENTRIES.items():
        path = write(project, version, entries)
        check(path, base, entries)
        print(f"{path.relative_to(OUT.parents[1])}: {len(set(entries))} names")


if __name__ == "__main__":
    main()
