r"""The path-integral engine shared by every IG-style method of captum-ext.

Integrated Gradients and its relatives integrate something along straight
paths :math:`\gamma_p(\alpha) = s_p + \alpha\, d_p` (start :math:`s_p`,
direction :math:`d_p = x - x'`) with Captum's quadrature. This module holds
the parts they share, each written once:

- :func:`check_quadrature` and :func:`quadrature`: Captum's ``method`` values
  with Captum's points *and* weights, plus ``"trapezoid"`` (the trapezoid rule
  proper, see :func:`quadrature`);
- :func:`step_chunks`: Captum's ``internal_batch_size`` rule (whole steps per
  forward pass, Captum's warning when it is below the number of examples);
- :func:`path_chunks`: the points of one chunk in Captum's step-major order,
  with ``target`` and ``additional_forward_args`` expanded by Captum's own
  ``_expand_target`` / ``_expand_additional_forward_args``, and one progress
  bar;
- :func:`integrate_gradients`: the quadrature-weighted path gradients through
  a Captum ``gradient_func`` (``GradientAttribution.gradient_func``), and
  :func:`times_directions`, the one ``(x - x')`` multiply.

:class:`~captum_ext.attr.DistributionalIG`,
:class:`~captum_ext.attr.PatternGuidedIG`,
:class:`~captum_ext.attr.PatchConductance` and
:func:`~captum_ext.metrics.ablation_penalties` all run on it.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import torch
from captum._utils.common import (
    _expand_additional_forward_args,
    _expand_target,
)
from captum._utils.progress import progress
from captum.attr._utils.approximation_methods import (
    SUPPORTED_METHODS,
    approximation_parameters,
)
from torch import Tensor

from captum_ext._utils.validation import check_positive_int

#: The trapezoid rule proper on Captum's ``riemann_trapezoid`` points (not a
#: Captum method name; see :func:`quadrature`).
TRAPEZOID = "trapezoid"

#: Every accepted ``method``: Captum's five, then ``"trapezoid"``.
METHODS: tuple[str, ...] = (*SUPPORTED_METHODS, TRAPEZOID)


def check_quadrature(method: Any, n_steps: Any) -> None:
    """Check ``method`` and ``n_steps`` before any work.

    Asserted where Captum asserts (an unknown method, a Riemann rule with one
    step, where Captum's ``approximation_parameters`` asserts too); a
    non-positive or non-int ``n_steps`` is a ValueError.
    """
    check_positive_int(n_steps, "n_steps")
    assert isinstance(method, str) and method in METHODS, (
        f"Approximation method must be one of {list(METHODS)}. Given {method!r}"
    )
    assert method == "gausslegendre" or n_steps > 1, (
        f"The number of steps has to be larger than one for {method}."
    )


def quadrature(
    method: str, n_steps: int, dtype: torch.dtype, device: torch.device
) -> tuple[Tensor, Tensor]:
    """Weights and points in [0, 1] of the approximation ``method``.

    For Captum's method names these are Captum's ``approximation_parameters``,
    points and weights, so results equal Captum's. Note that Captum 0.9's
    ``riemann_trapezoid`` pairs the points ``linspace(0, 1, n)`` (spacing
    ``1 / (n - 1)``) with weights ``1 / n`` halved at the ends, which sum to
    ``(n - 1) / n``: its integrals, even of constants, are scaled by that
    factor (2.5% at 40 steps). ``"trapezoid"`` is the trapezoid rule proper on
    the same points, weights ``1 / (n - 1)`` halved at the ends (they sum to
    one; results are Captum's ``riemann_trapezoid`` times ``n / (n - 1)``).
    New tensors on every call (the rule itself is cached).
    """
    step_sizes, alphas = _quadrature_values(method, n_steps)
    return (
        torch.tensor(step_sizes, dtype=dtype, device=device),
        torch.tensor(alphas, dtype=dtype, device=device),
    )


@lru_cache(maxsize=32)
def _quadrature_values(
    method: str, n_steps: int
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """:func:`quadrature`'s rule as floats, cached (Gauss-Legendre: eigensolve)."""
    if method == TRAPEZOID:
        _, alphas_func = approximation_parameters("riemann_trapezoid")
        alphas = tuple(float(a) for a in alphas_func(n_steps))
        inner = 1.0 / (n_steps - 1)
        ends = 0.5 / (n_steps - 1)
        return (ends,) + (inner,) * (n_steps - 2) + (ends,), alphas
    step_sizes_func, alphas_func = approximation_parameters(method)
    return (
        tuple(float(w) for w in step_sizes_func(n_steps)),
        tuple(float(a) for a in alphas_func(n_steps)),
    )


def step_chunks(
    n_steps: int,
    num_examples: int,
    internal_batch_size: int | None,
    n_paths: int | None = None,
) -> list[tuple[int, int, int, int]]:
    """Captum's ``internal_batch_size`` rule: ``(k0, k1, p0, p1)`` rectangles.

    Each forward pass evaluates steps ``k0:k1`` of paths ``p0:p1``. As in
    Captum's ``_batch_attribution``: None is one pass; otherwise each pass
    holds ``max(1, internal_batch_size // n_paths)`` whole steps of every
    path, and an ``internal_batch_size`` below ``num_examples`` warns (with
    Captum's message) and is raised to ``num_examples``. ``n_paths`` (default
    ``num_examples``) is larger when one example has several paths
    (DistributionalIG's references); when even one step of every path exceeds
    ``internal_batch_size``, the paths of each step are split into groups of
    at most ``internal_batch_size``. With one path per example this is
    exactly Captum's rule.
    """
    paths = num_examples if n_paths is None else n_paths
    if internal_batch_size is None:
        return [(0, n_steps, 0, paths)]
    size = internal_batch_size
    if size < num_examples:
        warnings.warn(
            "Internal batch size cannot be less than the number of input examples. "
            f"Defaulting to internal batch size of {num_examples} equal to the "
            "number of examples.",
            stacklevel=3,
        )
        size = num_examples
    per_chunk = size // paths
    if per_chunk >= 1:
        return [
            (k, min(k + per_chunk, n_steps), 0, paths)
            for k in range(0, n_steps, per_chunk)
        ]
    return [
        (k, k + 1, p, min(p + size, paths))
        for k in range(n_steps)
        for p in range(0, paths, size)
    ]


def slice_paths(value: Any, p0: int, p1: int, n_paths: int) -> Any:
    """Rows ``p0:p1`` of a per-path target or forward-argument tuple.

    Only needed when a pass holds part of the paths (see :func:`step_chunks`);
    per-path tensors and lists have ``n_paths`` rows, anything else (ints,
    tuples of ints, 0-d tensors, non-tensors) is passed unchanged.
    """
    if p0 == 0 and p1 == n_paths:
        return value
    if isinstance(value, list):
        return value[p0:p1]
    if isinstance(value, Tensor):
        return value[p0:p1] if value.dim() > 0 and value.numel() > 1 else value
    return value


@dataclass
class PathChunk:
    """One forward pass worth of path points (see :func:`path_chunks`).

    ``points[i]`` is ``(c * g, ...)``: steps ``k0:k1`` (``c`` of them) of
    paths ``p0:p1`` (``g`` of them), in Captum's step-major order (row
    ``j * g + p``). ``weights`` and ``alphas`` are the ``c`` quadrature
    weights and points. ``target`` and ``additional_forward_args`` are
    expanded to the rows with Captum's helpers.
    """

    k0: int
    k1: int
    p0: int
    p1: int
    alphas: Tensor
    weights: Tensor
    points: tuple[Tensor, ...]
    target: Any
    additional_forward_args: Any

    @property
    def steps(self) -> int:
        return self.k1 - self.k0

    @property
    def paths(self) -> int:
        return self.p1 - self.p0


def path_chunks(
    starts: Sequence[Tensor],
    directions: Sequence[Tensor],
    n_steps: int,
    method: str,
    internal_batch_size: int | None,
    num_examples: int,
    target: Any,
    additional_forward_args: Any,
    show_progress: bool = False,
    desc: str = "",
) -> Iterator[PathChunk]:
    """The path points ``starts + alpha * directions``, chunk by chunk.

    ``starts`` and ``directions`` hold one ``(P, ...)`` tensor per input (or
    a start broadcastable to it). ``target`` and ``additional_forward_args``
    are per path (with one path per example, exactly what the user passed;
    ``additional_forward_args`` already formatted as a tuple or None); each
    chunk repeats them over its steps with Captum's ``_expand_target`` and
    ``_expand_additional_forward_args`` (every tensor that is not 0-d is
    repeated, as in Captum's IntegratedGradients). Chunks follow
    :func:`step_chunks`. ``show_progress`` shows one Captum progress bar over
    the chunks.
    """
    n_paths = directions[0].shape[0]
    dtype = directions[0].dtype
    device = directions[0].device
    weights, alphas = quadrature(method, n_steps, torch.float64, device)
    weights, alphas = weights.to(dtype), alphas.to(dtype)
    rects = step_chunks(n_steps, num_examples, internal_batch_size, n_paths)
    iterable: Any = rects
    if show_progress:
        iterable = progress(rects, desc=f"{desc} attribution", total=len(rects))
    for k0, k1, p0, p1 in iterable:
        c = k1 - k0
        a = alphas[k0:k1]
        points = []
        for s, d in zip(starts, directions):
            d_g = d[p0:p1]
            s_g = s[p0:p1] if s.dim() > 0 and s.shape[0] == n_paths else s
            view = (c,) + (1,) * d_g.dim()
            point = s_g + a.view(view).to(d_g.dtype) * d_g.unsqueeze(0)
            points.append(point.reshape(c * d_g.shape[0], *d_g.shape[1:]))
        yield PathChunk(
            k0,
            k1,
            p0,
            p1,
            a,
            weights[k0:k1],
            tuple(points),
            _expand_target(slice_paths(target, p0, p1, n_paths), c),
            _expand_additional_forward_args(
                slice_paths_args(additional_forward_args, p0, p1, n_paths), c
            ),
        )


def slice_paths_args(afa: Any, p0: int, p1: int, n_paths: int) -> Any:
    """:func:`slice_paths` applied to every element of a forward-argument tuple."""
    if afa is None or (p0 == 0 and p1 == n_paths):
        return afa
    return tuple(slice_paths(a, p0, p1, n_paths) for a in afa)


def sum_steps(values: Tensor, chunk: PathChunk) -> Tensor:
    """``sum_j w_j values[j]`` of a chunk's ``(c * g, ...)`` rows: ``(g, ...)``."""
    c, g = chunk.steps, chunk.paths
    v = values.reshape(c, g, *values.shape[1:])
    w = chunk.weights.to(v.dtype).view((c,) + (1,) * (v.dim() - 1))
    return (v * w).sum(dim=0)


def times_directions(
    values: Sequence[Tensor], directions: Sequence[Tensor]
) -> tuple[Tensor, ...]:
    """``values * (x - x')``: the one place the path direction multiplies in."""
    return tuple(v * d for v, d in zip(values, directions))


def integrate_gradients(
    gradient_func: Callable[..., Any],
    forward_func: Callable[..., Any],
    starts: Sequence[Tensor],
    directions: Sequence[Tensor],
    n_steps: int,
    method: str,
    internal_batch_size: int | None,
    num_examples: int,
    target: Any,
    additional_forward_args: Any,
    multiply_by_directions: bool,
    show_progress: bool = False,
    desc: str = "",
) -> tuple[Tensor, ...]:
    r"""Integrated gradients along every path: ``(P, ...)`` per input.

    :math:`\sum_j w_j \nabla F(s_p + \alpha_j d_p)`, times :math:`d_p`
    when ``multiply_by_directions`` (IG), else the path-averaged gradient
    (IG with ``multiply_by_inputs=False``). Gradients come from
    ``gradient_func(forward_fn=..., inputs=..., target_ind=...,
    additional_forward_args=...)``, the signature of Captum's
    ``GradientAttribution.gradient_func``, called once per chunk with inputs
    that require grad (as Captum's IntegratedGradients calls it).
    """
    n_paths = directions[0].shape[0]
    totals = [torch.zeros_like(d) for d in directions]
    for chunk in path_chunks(
        starts,
        directions,
        n_steps,
        method,
        internal_batch_size,
        num_examples,
        target,
        additional_forward_args,
        show_progress,
        desc,
    ):
        grads = gradient_func(
            forward_fn=forward_func,
            inputs=tuple(p.requires_grad_() for p in chunk.points),
            target_ind=chunk.target,
            additional_forward_args=chunk.additional_forward_args,
        )
        for total, g in zip(totals, grads):
            part = sum_steps(g.detach(), chunk)
            if chunk.p0 == 0 and chunk.p1 == n_paths:
                total += part
            else:
                total[chunk.p0 : chunk.p1] += part
    if multiply_by_directions:
        return times_directions(totals, directions)
    return tuple(totals)


def straight_paths(
    inputs: Sequence[Tensor], baselines: Sequence[Any]
) -> tuple[tuple[Tensor, ...], tuple[Tensor, ...]]:
    """Starts and directions of IG's paths from Captum-formatted baselines.

    ``baselines`` come from Captum's ``_format_input_baseline`` (a tensor
    shaped like the input or like one example, or a number, per input). The
    starts stay as given (broadcast by :func:`path_chunks`); the directions
    ``x - x'`` are shaped like the inputs. Both are detached.
    """
    starts = []
    for x, b in zip(inputs, baselines):
        if isinstance(b, Tensor):
            starts.append(b.detach().to(device=x.device))
        else:
            starts.append(torch.tensor(b, dtype=x.dtype, device=x.device))
    directions = tuple(
        torch.broadcast_to(x.detach() - s, x.shape) for x, s in zip(inputs, starts)
    )
    return tuple(starts), directions
