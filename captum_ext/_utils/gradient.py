"""Gradient of a selected model output with respect to inputs."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from captum._utils.common import _run_forward, _select_targets
from captum._utils.typing import TargetType
from torch import Tensor

from captum_ext._utils.validation import check_target_in_range


def check_grad_mode(who: str) -> None:
    """Raise a clear RuntimeError when gradients cannot be taken.

    Under ``torch.inference_mode()`` autograd records nothing (and
    ``torch.enable_grad()`` cannot switch it back on), so every gradient
    method would fail with "element 0 of tensors does not require grad".
    Call this first in every gradient-based method (``who`` names it).
    """
    if torch.is_inference_mode_enabled():
        raise RuntimeError(
            f"{who} takes gradients, which is impossible under "
            "torch.inference_mode(); call it outside that context (under "
            "torch.no_grad() is fine: gradients are enabled where needed)."
        )


def run_forward_checked(
    forward_func: Callable[..., Any],
    inputs: tuple[Tensor, ...],
    target: Any,
    additional_forward_args: Any,
) -> Tensor:
    """Run the model and check its output and the target's range against it.

    Every caller takes gradients of this output, so this also refuses
    ``torch.inference_mode()`` (:func:`check_grad_mode`) before the pass.
    """
    check_grad_mode("This attribution method")
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


def _grad_leaf(x: Tensor) -> Tensor:
    """A fresh leaf that requires grad (an inference tensor is copied first)."""
    return (x.clone() if x.is_inference() else x.detach()).requires_grad_(True)


def target_gradients(
    forward_fn: Callable[..., Any],
    inputs: Tensor | tuple[Tensor, ...],
    target_ind: TargetType = None,
    additional_forward_args: object = None,
) -> tuple[Tensor, ...]:
    """Gradients of the selected output with respect to ``inputs``.

    The signature (and result) of Captum's ``compute_gradients``, the default
    ``GradientAttribution.gradient_func``: the captum-ext classes install this
    function as their ``gradient_func`` and call it through that attribute, so
    a user's replacement takes effect. Differences: the target's range is
    checked against the output with a clear message, one backward pass of the
    summed output replaces Captum's ``unbind`` (same gradients), and inputs
    that do not reach the output get zero gradients. The inputs are detached
    copies that require grad, so the caller's tensors (and their
    ``requires_grad`` flags) are never touched. Grad is enabled even when
    called under ``torch.no_grad()``.
    """
    check_grad_mode("Computing gradients")
    if isinstance(inputs, Tensor):
        inputs = (inputs,)
    leaves = tuple(_grad_leaf(x) for x in inputs)
    with torch.enable_grad():
        selected = forward_select(
            forward_fn, leaves, target_ind, additional_forward_args
        )
        check_one_output_per_example(selected)
        grads = torch.autograd.grad(selected.sum(), leaves, allow_unused=True)
    return tuple(torch.zeros_like(x) if g is None else g for x, g in zip(leaves, grads))
