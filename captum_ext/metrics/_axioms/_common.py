"""Shared pieces of the axiom checks: inputs, rows, chunked calls, results."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from captum._utils.common import _format_additional_forward_args, _select_targets
from torch import Tensor

from captum_ext._utils.batching import (
    index_forward_args,
    slice_forward_args,
    target_for_rows,
)
from captum_ext._utils.gradient import check_one_output_per_example, forward_select
from captum_ext._utils.validation import (
    check_broadcasts_to,
    check_generator,
    check_positive_int,
    format_inputs,
    validate_target,
)
from captum_ext.attr._core.distributional_ig import _reference_tensors
from captum_ext.metrics._axioms._methods import BoundMethod, Method, MethodType


@dataclass
class AxiomResult:
    """The measured violation of one axiom, per example.

    Attributes:
        axiom (str): Which axiom was checked.
        violation (Tensor): ``(n,)`` float64, the measured violation of each
            example (0 for a method that satisfies the axiom exactly; for
            :func:`local_lipschitz` the Lipschitz estimate).
        details (dict[str, Tensor]): Further per-example quantities (the
            relative violation, the output differences, the attributions the
            measure was taken from, ...), documented by each check.
    """

    axiom: str
    violation: Tensor
    details: dict[str, Tensor] = field(default_factory=dict)

    def passes(self, tol: float) -> Tensor:
        """``(n,)`` bool: the examples whose violation is at most ``tol``."""
        return passes(self.violation, tol)

    def all_pass(self, tol: float) -> bool:
        """Whether every example's violation is at most ``tol``."""
        return bool(self.passes(tol).all())

    def mean(self) -> float:
        """Mean violation over the examples."""
        return float(self.violation.mean())

    def min(self) -> float:
        """Smallest violation over the examples."""
        return float(self.violation.min())

    def max(self) -> float:
        """Largest violation over the examples."""
        return float(self.violation.max())


def passes(violation: Tensor, tol: float) -> Tensor:
    """Turn measured violations into pass / fail with a tolerance.

    Args:
        violation (Tensor): Measured violations (any shape), e.g.
            ``AxiomResult.violation``.
        tol (float): The largest violation that still passes (>= 0).

    Returns:
        Tensor: bool, ``violation <= tol`` (NaN fails).

    Examples::

        >>> res = completeness_violation(IntegratedGradients(model), model, x)
        >>> passes(res.violation, 1e-3)
        tensor([True, True])
    """
    if not isinstance(violation, Tensor):
        raise TypeError(
            f"`violation` must be a Tensor, got {type(violation).__name__}."
        )
    if isinstance(tol, bool) or not isinstance(tol, (int, float)) or not tol >= 0:
        raise ValueError(f"`tol` must be a non-negative number, got {tol!r}.")
    return violation <= tol


class Layout:
    """Flattens a tuple of ``(rows, ...)`` tensors into ``(rows, D)`` and back."""

    def __init__(self, inputs: tuple[Tensor, ...]) -> None:
        self.shapes = [tuple(x.shape[1:]) for x in inputs]
        self.sizes = [math.prod(s) for s in self.shapes]
        self.dim = sum(self.sizes)

    def flatten(self, xs: tuple[Tensor, ...]) -> Tensor:
        return torch.cat([x.reshape(x.shape[0], -1) for x in xs], dim=1)

    def unflatten(self, flat: Tensor) -> tuple[Tensor, ...]:
        parts = torch.split(flat, self.sizes, dim=1)
        return tuple(p.reshape(p.shape[0], *s) for p, s in zip(parts, self.shapes))


def format_baselines(baselines: Any, xs: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
    """One ``(n, ...)`` baseline tensor per input (None -> zeros, numbers filled)."""
    if isinstance(baselines, tuple):
        if len(baselines) != len(xs):
            raise ValueError(
                f"`baselines` has {len(baselines)} entries but `inputs` has "
                f"{len(xs)} tensors."
            )
        entries: tuple[Any, ...] = baselines
    else:
        entries = (baselines,) * len(xs)
    out = []
    for i, (b, x) in enumerate(zip(entries, xs)):
        label = f"`baselines[{i}]`" if len(xs) > 1 else "`baselines`"
        if b is None:
            out.append(torch.zeros_like(x))
        elif isinstance(b, bool) or not isinstance(b, (int, float, Tensor)):
            raise TypeError(
                f"{label} must be None, a number or a Tensor, got {type(b).__name__}."
            )
        elif isinstance(b, Tensor):
            check_broadcasts_to(b, x, label)
            out.append(b.detach().to(x.dtype).expand_as(x).clone())
        else:
            out.append(torch.full_like(x, float(b)))
    return tuple(out)


@dataclass
class Setup:
    """Validated arguments shared by every check."""

    method: Method
    forward_func: Any
    is_tuple: bool
    xs: tuple[Tensor, ...]
    n: int
    layout: Layout
    target: Any
    afa: Any
    chunk: int | None
    baselines: tuple[Tensor, ...] | None
    references: tuple[Tensor, ...] | None

    @property
    def distributional(self) -> bool:
        return self.references is not None

    @property
    def dtype(self) -> torch.dtype:
        return self.xs[0].dtype

    @property
    def device(self) -> torch.device:
        return self.xs[0].device

    def flat_x(self) -> Tensor:
        return self.layout.flatten(self.xs)


def setup(
    method: MethodType,
    forward_func: Any,
    inputs: Any,
    baselines: Any,
    target: Any,
    additional_forward_args: Any,
    references: Any,
    attribute_kwargs: Mapping[str, Any] | None,
    max_examples_per_batch: int | None,
    generator: Any = None,
    allow_references: bool = True,
) -> Setup:
    """Validate the common arguments before any work."""
    m = Method(method, attribute_kwargs)
    if forward_func is None:
        forward_func = m.own_forward_func
        if forward_func is None:
            raise ValueError(
                "`forward_func` is required unless `method` is an Attribution "
                "instance (whose forward_func is then used)."
            )
    if not callable(forward_func):
        raise TypeError(
            f"`forward_func` must be callable, got {type(forward_func).__name__}."
        )
    is_tuple, xs = format_inputs(inputs)
    if len({x.dtype for x in xs}) > 1 or len({x.device for x in xs}) > 1:
        raise ValueError(
            "All tensors in `inputs` must share one dtype and device for the "
            "axiom checks."
        )
    n = int(xs[0].shape[0])
    validate_target(target, n)
    check_positive_int(max_examples_per_batch, "max_examples_per_batch", True)
    check_generator(generator)
    afa = _format_additional_forward_args(additional_forward_args)
    refs = None
    bs = None
    if references is not None:
        if not allow_references:
            raise ValueError(
                "This check has no distributional form; omit `references`."
            )
        if baselines is not None:
            raise ValueError(
                "Give either `baselines` (one baseline per example) or "
                "`references` (a reference distribution), not both."
            )
        refs = tuple(r.to(xs[0].device) for r in _reference_tensors(references, xs))
    else:
        bs = format_baselines(baselines, xs)
    return Setup(
        m,
        forward_func,
        is_tuple,
        xs,
        n,
        Layout(xs),
        target,
        afa,
        max_examples_per_batch,
        bs,
        refs,
    )


def rows_target(target: Any, ex: Tensor, n: int) -> Any:
    """The target of each row of a stacked batch whose row r is example ex[r]."""
    return target_for_rows(target, ex, n)


def _chunks(total: int, size: int | None) -> list[slice]:
    size = total if size is None else size
    return [slice(s, min(s + size, total)) for s in range(0, total, max(size, 1))]


def attribute_rows(
    bound: BoundMethod,
    s: Setup,
    inputs: tuple[Tensor, ...],
    baselines: tuple[Tensor, ...] | None,
    target: Any,
    afa: Any,
) -> Tensor:
    """Attributions of stacked rows, ``(rows, D)`` float64, chunked by rows.

    ``baselines`` is per row (``(rows, ...)``) or, for the distributional
    checks, ``s.references`` (shared by all rows).
    """
    total = int(inputs[0].shape[0])
    shared = baselines is not None and baselines is s.references
    outs = []
    for sl in _chunks(total, s.chunk):
        idx = torch.arange(sl.start, sl.stop, device=inputs[0].device)
        xb = tuple(x[sl] for x in inputs)
        bb = (
            baselines
            if shared or baselines is None
            else tuple(b[sl] for b in baselines)
        )
        tb = target_for_rows(target, idx, total)
        ab = slice_forward_args(afa, sl, total)
        a = bound.run(xb, s.is_tuple, bb, tb, ab)
        outs.append(s.layout.flatten(a).double())
    return torch.cat(outs, dim=0)


def forward_rows(
    model: Any, s: Setup, inputs: tuple[Tensor, ...], target: Any, afa: Any
) -> Tensor:
    """The selected output of every row, ``(rows,)`` float64, under no_grad."""
    total = int(inputs[0].shape[0])
    outs = []
    with torch.no_grad():
        for sl in _chunks(total, s.chunk):
            idx = torch.arange(sl.start, sl.stop, device=inputs[0].device)
            sel = forward_select(
                model,
                tuple(x[sl] for x in inputs),
                target_for_rows(target, idx, total),
                slice_forward_args(afa, sl, total),
            )
            check_one_output_per_example(sel)
            outs.append(sel.reshape(sel.shape[0]).double())
    return torch.cat(outs, dim=0)


def raw_forward_rows(
    model: Any, s: Setup, inputs: tuple[Tensor, ...], afa: Any
) -> Tensor:
    """The full output of every row (no target selection), under no_grad."""
    total = int(inputs[0].shape[0])
    outs = []
    with torch.no_grad():
        for sl in _chunks(total, s.chunk):
            outs.append(
                forward_select(
                    model,
                    tuple(x[sl] for x in inputs),
                    None,
                    slice_forward_args(afa, sl, total),
                )
            )
    return torch.cat(outs, dim=0)


def flat_width(s: Setup, model: Any) -> int:
    """Number of outputs per example of ``model`` (its output flattened)."""
    first = tuple(x[:1] for x in s.xs)
    out = raw_forward_rows(model, s, first, slice_forward_args(s.afa, slice(0, 1), s.n))
    return math.prod(out.shape[1:])


def flat_targets(s: Setup, model: Any, target: Any) -> Tensor:
    """``(n,)`` long: the index of each example's target in its flattened output."""
    out = raw_forward_rows(model, s, s.xs, s.afa)
    d = math.prod(out.shape[1:])
    grid = torch.arange(d, device=out.device).reshape(1, *out.shape[1:])
    grid = grid.expand(out.shape[0], *out.shape[1:])
    sel = _select_targets(grid, target)
    check_one_output_per_example(sel)
    return sel.reshape(-1).long()


def tile_rows(xs: tuple[Tensor, ...], ex: Tensor) -> tuple[Tensor, ...]:
    return tuple(x[ex] for x in xs)


def rows_afa(afa: Any, ex: Tensor, n: int, tags: tuple[Tensor, ...] = ()) -> Any:
    """The user's forward args gathered for rows ``ex``, plus tag tensors."""
    base = index_forward_args(afa, ex, n)
    if not tags:
        return base
    return (*(base or ()), *tags)


def l1(a: Tensor) -> Tensor:
    return a.abs().sum(dim=-1)


def safe_ratio(num: Tensor, den: Tensor) -> Tensor:
    """Num / den with 0 / 0 = 0 (a nonzero over zero is inf)."""
    out = num / den
    return torch.where((num == 0) & (den == 0), torch.zeros_like(out), out)


def check_choice(value: Any, name: str, options: tuple[str, ...]) -> None:
    if value not in options:
        raise ValueError(f"`{name}` must be one of {list(options)}, got {value!r}.")


def check_nonneg(value: Any, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
        raise ValueError(f"`{name}` must be a non-negative number, got {value!r}.")
