"""All axiom checks for several methods at once: a table and a figure."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from captum._utils.typing import TargetType
from captum.log import log_usage
from torch import Tensor

from captum_ext._utils.model_state import preserves_model_state
from captum_ext.metrics._axioms._checks import (
    completeness_violation,
    dummy_violation,
    implementation_invariance_violation,
    linearity_violation,
    ndp_violation,
    sensitivity_violation,
    symmetry_violation,
)
from captum_ext.metrics._axioms._common import AxiomResult
from captum_ext.metrics._axioms._lipschitz import local_lipschitz

#: check name -> function
CHECKS: dict[str, Callable[..., AxiomResult]] = {
    "completeness": completeness_violation,
    "sensitivity(a)": sensitivity_violation,
    "dummy": dummy_violation,
    "linearity": linearity_violation,
    "symmetry": symmetry_violation,
    "implementation invariance": implementation_invariance_violation,
    "NDP": ndp_violation,
    "local Lipschitz": local_lipschitz,
}

#: Default tolerances on each check's ``violation`` (absolute) for pass / fail.
DEFAULT_TOLERANCES: dict[str, float] = {
    "completeness": 1e-2,
    "sensitivity(a)": 1e-2,
    "dummy": 1e-6,
    "linearity": 1e-4,
    "symmetry": 1e-4,
    "implementation invariance": 1e-4,
    "NDP": 1e-6,
    "local Lipschitz": math.inf,
}


@dataclass
class AxiomReport:
    """Measured violations of every axiom for every method.

    Attributes:
        table (dict[str, dict[str, float | None]]): method -> check -> the mean
            violation over the examples (None where the check could not run
            for the method; the reason is in ``errors``).
        results (dict[str, dict[str, AxiomResult]]): the per-example results.
        errors (dict[str, dict[str, str]]): method -> check -> why it did not
            run.
        tolerances (dict[str, float]): the tolerance of each check.
        checks (list[str]): the checks, in column order.
    """

    table: dict[str, dict[str, float | None]]
    results: dict[str, dict[str, AxiomResult]]
    errors: dict[str, dict[str, str]] = field(default_factory=dict)
    tolerances: dict[str, float] = field(default_factory=dict)
    checks: list[str] = field(default_factory=list)

    def passed(self) -> dict[str, dict[str, bool | None]]:
        """Method -> check -> whether every example is within the tolerance."""
        out: dict[str, dict[str, bool | None]] = {}
        for name, row in self.results.items():
            out[name] = {}
            for check in self.checks:
                res = row.get(check)
                tol = self.tolerances.get(check, 0.0)
                out[name][check] = (
                    None if res is None or math.isinf(tol) else res.all_pass(tol)
                )
        return out

    def to_markdown(self, digits: int = 3) -> str:
        """The table as GitHub markdown.

        Each cell: the mean violation, with ✓ when every example is within the
        check's tolerance and ✗ when some are not.
        """
        passed = self.passed()
        head = "| method | " + " | ".join(self.checks) + " |"
        sep = "|---|" + "---|" * len(self.checks)
        lines = [head, sep]
        for name, row in self.table.items():
            cells = []
            for check in self.checks:
                v = row.get(check)
                if v is None:
                    cells.append("n/a")
                    continue
                mark = passed[name].get(check)
                text = f"{v:.{digits}g}"
                cells.append(text if mark is None else f"{text} {'✓' if mark else '✗'}")
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        tol = ", ".join(
            f"{c} {self.tolerances[c]:g}"
            for c in self.checks
            if not math.isinf(self.tolerances.get(c, math.inf))
        )
        lines.append("")
        lines.append(
            "Mean violation over the examples; ✓ / ✗: every example within the "
            f"tolerance ({tol})."
        )
        return "\n".join(lines)


@log_usage(part_of_slo=True)
@preserves_model_state
def axiom_report(
    methods: Mapping[str, Any],
    forward_func: Callable[..., Any],
    inputs: Tensor | tuple[Tensor, ...],
    baselines: Any = None,
    target: TargetType = None,
    additional_forward_args: Any = None,
    *,
    references: Any = None,
    checks: Sequence[str] | None = None,
    check_kwargs: Mapping[str, Mapping[str, Any]] | None = None,
    tolerances: Mapping[str, float] | None = None,
    generator_seed: int = 0,
    max_examples_per_batch: int | None = None,
) -> AxiomReport:
    r"""Run every axiom check for every method: one table of violations.

    The axioms of Lundstrom, Huang & Razaviyayn, *A Rigorous Study of
    Integrated Gradients Method and Extensions to Internal Neuron
    Attributions* (ICML 2022, `arXiv:2202.11912
    <https://arxiv.org/abs/2202.11912>`_), sections 2, 4 and 5: completeness,
    sensitivity(a), dummy, linearity, symmetry preserving, implementation
    invariance, NDP, and a local Lipschitz estimate (section 4.1). With
    ``references`` the distributional forms are run (the methods then get the
    reference set as ``baselines``). A check that cannot run for a method (a
    PatternAttribution cannot be rebound to the wrapped models of dummy,
    linearity, ...) gives None in the table and its reason in ``errors``.
    The same random pairs / feature sets (seeded by ``generator_seed``) are
    used for every method.

    Args:
        methods (Mapping[str, Any]): name -> method (any form the checks
            accept), or name -> ``(method, attribute_kwargs)``.
        forward_func (Callable): The model.
        inputs (Tensor or tuple[Tensor, ...]): ``(n, ...)`` the inputs.
        baselines: The baselines (single checks). Default: zeros.
        target (TargetType, optional): The output explained.
        additional_forward_args (Any, optional): Extra model arguments.
        references (optional): A ``(K, ...)`` reference set: distributional
            checks instead of single-baseline ones.
        checks (Sequence[str], optional): Which checks (names of
            ``AxiomReport.checks``). Default: all.
        check_kwargs (Mapping, optional): check name -> extra keyword
            arguments for that check (e.g. ``{"linearity": {"other_target":
            1}}``; linearity defaults to ``other_target="next"``, two heads).
        tolerances (Mapping[str, float], optional): Overrides of the default
            tolerances.
        generator_seed (int): Seed of every check's random draws.
        max_examples_per_batch (int, optional): Rows per call.

    Returns:
        AxiomReport: ``table``, ``results``, ``errors``, ``to_markdown()``;
        :func:`plot_axiom_report` draws it.

    Examples::

        >>> report = axiom_report({"IG": IntegratedGradients(model),
        ...                        "Saliency": Saliency(model)}, model, x, target=y)
        >>> print(report.to_markdown())
    """
    if not isinstance(methods, Mapping) or not methods:
        raise TypeError("`methods` must be a non-empty mapping name -> method.")
    names = list(CHECKS) if checks is None else list(checks)
    for c in names:
        if c not in CHECKS:
            raise ValueError(
                f"Unknown check {c!r} in `checks`; expected some of {list(CHECKS)}."
            )
    extra = dict(check_kwargs or {})
    for c in extra:
        if c not in CHECKS:
            raise ValueError(f"Unknown check {c!r} in `check_kwargs`.")
    tols = dict(DEFAULT_TOLERANCES)
    for c, t in (tolerances or {}).items():
        if c not in CHECKS:
            raise ValueError(f"Unknown check {c!r} in `tolerances`.")
        tols[c] = float(t)
    table: dict[str, dict[str, float | None]] = {}
    results: dict[str, dict[str, AxiomResult]] = {}
    errors: dict[str, dict[str, str]] = {}
    for name, entry in methods.items():
        method, kwargs = entry if isinstance(entry, tuple) else (entry, None)
        table[name], results[name], errors[name] = {}, {}, {}
        for c in names:
            fn = CHECKS[c]
            ck = dict(extra.get(c, {}))
            if c == "linearity":
                ck.setdefault("other_target", "next")
            if c in (
                "dummy",
                "symmetry",
                "implementation invariance",
                "local Lipschitz",
            ):
                ck.setdefault(
                    "generator", torch.Generator().manual_seed(generator_seed)
                )
            try:
                res = fn(
                    method,
                    forward_func,
                    inputs,
                    baselines if references is None else None,
                    target,
                    additional_forward_args,
                    references=references,
                    attribute_kwargs=kwargs,
                    max_examples_per_batch=max_examples_per_batch,
                    **ck,
                )
            except (TypeError, ValueError, AssertionError, RuntimeError) as err:
                table[name][c] = None
                errors[name][c] = f"{type(err).__name__}: {err}"
                continue
            results[name][c] = res
            table[name][c] = res.mean()
    return AxiomReport(table, results, errors, {c: tols[c] for c in names}, names)


def plot_axiom_report(
    report: AxiomReport, ax: Any = None, title: str | None = None
) -> Any:
    """A heat map of an :class:`AxiomReport`.

    Methods x checks, coloured by log10(mean violation), with the value written
    in each cell ("n/a" where the check did not run).

    Needs matplotlib (the ``demo`` extra).

    Args:
        report (AxiomReport): From :func:`axiom_report`.
        ax (matplotlib Axes, optional): Where to draw. Default: a new figure.
        title (str, optional): Axes title.

    Returns:
        matplotlib.figure.Figure: the figure.

    Examples::

        >>> fig = plot_axiom_report(axiom_report(methods, model, x, target=0))
        >>> fig.savefig("axioms.png")
    """
    if not isinstance(report, AxiomReport):
        raise TypeError(
            f"`report` must be an AxiomReport, got {type(report).__name__}."
        )
    import matplotlib.pyplot as plt

    methods = list(report.table)
    checks = report.checks
    vals = torch.full((len(methods), len(checks)), math.nan, dtype=torch.float64)
    for r, m in enumerate(methods):
        for c, check in enumerate(checks):
            v = report.table[m].get(check)
            if v is not None:
                vals[r, c] = math.log10(max(abs(v), 1e-12))
    if ax is None:
        fig, ax = plt.subplots(
            figsize=(1.3 * len(checks) + 2.5, 0.5 * len(methods) + 1.8)
        )
    else:
        fig = ax.figure
    im = ax.imshow(vals.numpy(), cmap="viridis", aspect="auto")
    ax.set_xticks(range(len(checks)), checks, rotation=35, ha="right")
    ax.set_yticks(range(len(methods)), methods)
    for r, m in enumerate(methods):
        for c, check in enumerate(checks):
            v = report.table[m].get(check)
            ax.text(
                c,
                r,
                "n/a" if v is None else f"{v:.2g}",
                ha="center",
                va="center",
                color="white"
                if v is not None and vals[r, c] < torch.nanmean(vals)
                else "black",
                fontsize=8,
            )
    fig.colorbar(im, ax=ax, label="log10 mean violation")
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return fig
