"""Path integrals: quadrature points, chunked iteration, path gradients."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from functools import lru_cache
from typing import Any

import torch
from captum._utils.common import (
    _expand_additional_forward_args,
    _expand_target,
    _format_additional_forward_args,
)
from captum._utils.progress import progress
from captum.attr._utils.approximation_methods import (
    SUPPORTED_METHODS,
    approximation_parameters,
)
from torch import Tensor

from captum_ext._utils.gradient import target_gradients
from captum_ext._utils.validation import check_positive_int


def check_quadrature(method: Any, n_steps: Any) -> None:
    """Check ``method`` and ``n_steps`` before any work.

    Asserted where Captum asserts: an unknown method, a Riemann rule with one
    step.
    """
    check_positive_int(n_steps, "n_steps")
    assert isinstance(method, str) and method in SUPPORTED_METHODS, (
        f"Approximation method must be one of {SUPPORTED_METHODS}. Given {method!r}"
    )
    assert method == "gausslegendre" or n_steps > 1, (
        f"The number of steps has to be larger than one for {method}."
    )


def quadrature(
    method: str, n_steps: int, dtype: torch.dtype, device: torch.device
) -> tuple[Tensor, Tensor]:
    """Weights and points in [0, 1] of Captum's approximation ``method``.

    The points (``alphas``) are Captum's. The weights are Captum's too, except
    for ``riemann_trapezoid``: Captum 0.9 pairs the points
    ``linspace(0, 1, n)`` (spacing ``1 / (n - 1)``) with weights ``1 / n``
    (halved at the ends), which sum to ``(n - 1) / n``, so its integrals, even
    of constants, come out scaled by ``(n - 1) / n``. Here the weights are the
    trapezoid rule's on those points, ``1 / (n - 1)`` halved at the ends:
    results are Captum's times ``n / (n - 1)``, and completeness holds to
    second order. New tensors on every call (the rule itself is cached).
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
    step_sizes_func, alphas_func = approximation_parameters(method)
    alphas = tuple(float(a) for a in alphas_func(n_steps))
    if method == "riemann_trapezoid":
        inner = 1.0 / (n_steps - 1)
        ends = 0.5 / (n_steps - 1)
        return (ends,) + (inner,) * (n_steps - 2) + (ends,), alphas
    return tuple(float(w) for w in step_sizes_func(n_steps)), alphas


def chunks(
    total: int,
    size: int | None,
    show_progress: bool = False,
    desc: str = "",
) -> Iterator[tuple[int, int]]:
    """``(start, stop)`` ranges covering ``range(total)`` in pieces of ``size``."""
    step = total if size is None else max(1, size)
    starts = range(0, total, max(1, step))
    iterable: Any = starts
    if show_progress:
        iterable = progress(starts, desc=desc, total=len(starts))
    for start in iterable:
        yield start, min(start + step, total)


def path_average_gradients(
    forward_func: Callable[..., Any],
    inputs: tuple[Tensor, ...],
    baselines: tuple[Any, ...],
    target: Any,
    additional_forward_args: Any,
    n_steps: int,
    method: str,
    internal_batch_size: int | None,
) -> tuple[Tensor, ...]:
    """Quadrature-weighted gradients along the straight path from ``baselines``.

    Integrated Gradients with ``multiply_by_inputs=False``: Captum's points in
    Captum's step-major order, the weights of :func:`quadrature`. Each chunk
    of steps (``internal_batch_size // bsz`` of them, all when None) is one
    forward and one backward pass of the summed target outputs.
    ``baselines`` are tensors broadcastable to the inputs, or scalars.
    """
    step_sizes, alphas = quadrature(method, n_steps, torch.float64, inputs[0].device)
    n = inputs[0].shape[0]
    per_chunk = None if internal_batch_size is None else internal_batch_size // n
    args = _format_additional_forward_args(additional_forward_args)
    xs = tuple(x.detach() for x in inputs)
    bs = tuple(b.detach() if isinstance(b, Tensor) else b for b in baselines)
    totals = [torch.zeros_like(x) for x in xs]
    for start, stop in chunks(n_steps, per_chunk):
        c = stop - start
        scaled = []
        for x, b in zip(xs, bs):
            a = alphas[start:stop].to(x)
            path = b + a.view(c, *([1] * x.dim())) * (x - b).unsqueeze(0)
            scaled.append(path.reshape(c * n, *x.shape[1:]))
        grads = target_gradients(
            forward_func,
            tuple(scaled),
            _expand_target(target, c),
            _expand_additional_forward_args(args, c),
        )
        for total, x, g in zip(totals, xs, grads):
            w = step_sizes[start:stop].to(g)
            total += (g.view(c, *x.shape) * w.view(c, *([1] * x.dim()))).sum(dim=0)
    return tuple(totals)
