"""Gradient of a selected model output with respect to inputs."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from captum._utils.common import _run_forward, _select_targets
from torch import Tensor

from captum_ext._utils.validation import check_target_in_range


def run_forward_checked(
    forward_func: Callable[..., Any],
    inputs: tuple[Tensor, ...],
    target: Any,
    additional_forward_args: Any,
) -> Tensor:
    """Run the model and check its output and the target's range against it."""
    output = _run_forward(forward_func, inputs, None, additional_forward_args)
    if not isinstance(output, Tensor):
        raise TypeError(
            f"`forward_func` must return a Tensor, got {type(output).__name__}."
        )
    if output.dim() == 0:
        raise ValueError(
            "`forward_func` must return one value (or one row) per example; "
            "it returned a 0-d tensor."
        )
    check_target_in_range(output, target)
    return output


def forward_select(
    forward_func: Callable[..., Any],
    inputs: tuple[Tensor, ...],
    target: Any,
    additional_forward_args: Any,
) -> Tensor:
    """Run the model and select the target output, checking the target's range."""
    output = run_forward_checked(forward_func, inputs, target, additional_forward_args)
    return _select_targets(output, target)


def check_one_output_per_example(selected: Tensor) -> None:
    """Raise (as Captum does) unless the selected output is one value per example."""
    if selected[0].numel() != 1:
        raise AssertionError(
            "Target not provided when necessary, cannot take gradient with "
            "respect to multiple outputs."
        )


def target_gradients(
    forward_func: Callable[..., Any],
    inputs: tuple[Tensor, ...],
    target: Any,
    additional_forward_args: Any,
) -> tuple[Tensor, ...]:
    """Gradients of the selected output with respect to ``inputs``.

    The inputs are detached copies that require grad, so the caller's tensors
    (and their ``requires_grad`` flags) are never touched. Grad is enabled even
    when called under ``torch.no_grad()``.
    """
    leaves = tuple(x.detach().requires_grad_(True) for x in inputs)
    with torch.enable_grad():
        selected = forward_select(forward_func, leaves, target, additional_forward_args)
        check_one_output_per_example(selected)
        grads = torch.autograd.grad(selected.sum(), leaves, allow_unused=True)
    return tuple(torch.zeros_like(x) if g is None else g for x, g in zip(leaves, grads))
