"""Quadrature points and chunked iteration for path-integral attributions."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from captum._utils.progress import progress
from captum.attr._utils.approximation_methods import (
    SUPPORTED_METHODS,
    approximation_parameters,
)
from torch import Tensor

from captum_ext._utils.validation import check_positive_int


def check_quadrature(method: Any, n_steps: Any) -> None:
    """Check ``method`` (asserted, as Captum does) and ``n_steps`` before any work."""
    check_positive_int(n_steps, "n_steps")
    assert isinstance(method, str) and method in SUPPORTED_METHODS, (
        f"Approximation method must be one of {SUPPORTED_METHODS}. Given {method!r}"
    )


def quadrature(
    method: str, n_steps: int, dtype: torch.dtype, device: torch.device
) -> tuple[Tensor, Tensor]:
    """Captum's step sizes (weights) and alphas (points in [0, 1]) for ``method``."""
    step_sizes_func, alphas_func = approximation_parameters(method)
    step_sizes = torch.tensor(step_sizes_func(n_steps), dtype=dtype, device=device)
    alphas = torch.tensor(alphas_func(n_steps), dtype=dtype, device=device)
    return step_sizes, alphas


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
