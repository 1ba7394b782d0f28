"""Deletion and insertion AUC (pixel-order perturbation curves)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import torch
from captum._utils.typing import TargetType, TensorOrTupleOfTensorsGeneric
from captum.log import log_usage
from torch import Tensor

from captum_ext._utils.model_state import preserves_model_state
from captum_ext._utils.validation import check_positive_int, format_inputs
from captum_ext.metrics._curves import (
    BatchSize,
    check_batch_size,
    check_blur_sigma,
    check_examples,
    check_fill,
    check_finite_explanations,
    check_forward_args,
    check_target,
    curve_at_points,
    examples_per_pass,
    input_region_ranks,
    resolve_fills,
    score_function,
    warn_if_not_finite,
)

FillType = Any


def format_explanations(
    explanations: Any,
    inputs: tuple[Tensor, ...],
    is_inputs_tuple: bool,
    name: str,
) -> tuple[Tensor, ...]:
    """Check attributions / masks mirror the inputs' structure and broadcast."""
    if is_inputs_tuple:
        if not isinstance(explanations, tuple) or not all(
            isinstance(a, Tensor) for a in explanations
        ):
            raise TypeError(
                f"`{name}` must be a tuple of Tensors (one per input tensor) when "
                f"`inputs` is a tuple; got {type(explanations).__name__}."
            )
        if len(explanations) != len(inputs):
            raise ValueError(
                f"`{name}` has {len(explanations)} tensors but `inputs` has "
                f"{len(inputs)}."
            )
        expl: tuple[Tensor, ...] = explanations
    else:
        if not isinstance(explanations, Tensor):
            raise TypeError(
                f"`{name}` must be a Tensor like `inputs`; got "
                f"{type(explanations).__name__}."
            )
        expl = (explanations,)
    for i, (a, x) in enumerate(zip(expl, inputs)):
        label = f"{name}[{i}]" if is_inputs_tuple else name
        try:
            shape = torch.broadcast_shapes(a.shape, x.shape)
        except RuntimeError:
            shape = None
        if shape != x.shape or a.dim() != x.dim():
            raise ValueError(
                f"`{label}` of shape {tuple(a.shape)} must have the input's number "
                f"of dimensions and broadcast to its shape {tuple(x.shape)}."
            )
        if a.shape[0] != x.shape[0]:
            raise ValueError(
                f"`{label}` must have one entry per example (dim 0 = "
                f"{x.shape[0]}); got {a.shape[0]}."
            )
        if a.is_complex() or a.dtype == torch.bool:
            raise TypeError(f"`{label}` must be real-valued, got {a.dtype}.")
    return tuple(a.detach() for a in expl)


def ordered_curve(
    forward_func: Callable[..., Any],
    inputs: Any,
    explanations: Any,
    target: TargetType,
    fill: FillType,
    fractions: Tensor | None,
    n_steps: int | None,
    mode: Literal["delete", "insert"],
    additional_forward_args: Any,
    blur_sigma: float,
    probability_fn: Callable[[Tensor], Tensor] | None,
    max_examples_per_batch: BatchSize,
    explanations_name: str,
    show_progress: bool = False,
    desc: str = "",
) -> tuple[Tensor, Tensor]:
    """Validate, rank regions (most relevant first) and evaluate the curve.

    Points are ``round(f * n_regions)`` for the given ``fractions``, or
    ``round(j * n_regions / n_steps)`` for ``j = 0..n_steps``.

    Returns:
        ``(curve (bsz, n_points), fraction of regions at each point (n_points,))``.
    """
    is_tuple, inputs_t = format_inputs(inputs)
    bsz = check_examples(inputs_t, is_tuple)
    expl = format_explanations(explanations, inputs_t, is_tuple, explanations_name)
    check_finite_explanations(expl, explanations_name)
    check_target(target, bsz)
    check_batch_size(max_examples_per_batch)
    check_blur_sigma(blur_sigma)
    score_fn = score_function(probability_fn, target)
    check_fill(fill, inputs_t)
    afa = check_forward_args(additional_forward_args, bsz)
    with torch.no_grad():
        fills = resolve_fills(fill, inputs_t, float(blur_sigma))
        ranks, n_regions = input_region_ranks(expl, inputs_t)
        if fractions is None:
            assert n_steps is not None
            j = torch.arange(n_steps + 1, dtype=torch.long)
            ks = (2 * j * n_regions + n_steps) // (2 * n_steps)  # round half up
        else:
            ks = torch.floor(fractions.double() * n_regions + 0.5).long()
        curve = curve_at_points(
            forward_func,
            inputs_t,
            fills,
            ranks,
            ks,
            mode,
            target,
            afa,
            examples_per_pass(max_examples_per_batch, inputs_t),
            score_fn,
            show_progress,
            desc or explanations_name,
        )
    warn_if_not_finite(curve, f"The {desc or mode} curve")
    return curve, ks.to(curve.dtype) / n_regions


def _auc(
    forward_func: Callable[..., Any],
    inputs: TensorOrTupleOfTensorsGeneric,
    attributions: TensorOrTupleOfTensorsGeneric,
    target: TargetType,
    fill: FillType,
    n_steps: int,
    additional_forward_args: Any,
    blur_sigma: float,
    probability_fn: Callable[[Tensor], Tensor] | None,
    return_curves: bool,
    max_examples_per_batch: BatchSize,
    mode: Literal["delete", "insert"],
    show_progress: bool,
) -> Tensor | tuple[Tensor, Tensor]:
    check_positive_int(n_steps, "n_steps")
    curve, x = ordered_curve(
        forward_func,
        inputs,
        attributions,
        target,
        fill,
        None,
        n_steps,
        mode,
        additional_forward_args,
        blur_sigma,
        probability_fn,
        max_examples_per_batch,
        "attributions",
        show_progress,
        "deletion" if mode == "delete" else "insertion",
    )
    auc = torch.trapezoid(curve, x.to(curve.device), dim=1)
    if return_curves:
        return auc, curve
    return auc


@log_usage(part_of_slo=True)
@preserves_model_state
def deletion_auc(
    forward_func: Callable[..., Any],
    inputs: TensorOrTupleOfTensorsGeneric,
    attributions: TensorOrTupleOfTensorsGeneric,
    target: TargetType = None,
    fill: FillType = "zero",
    n_steps: int = 100,
    additional_forward_args: Any = None,
    blur_sigma: float = 5.0,
    probability_fn: Callable[[Tensor], Tensor] | None = None,
    return_curves: bool = False,
    max_examples_per_batch: BatchSize = "auto",
    *,
    show_progress: bool = False,
) -> Tensor | tuple[Tensor, Tensor]:
    r"""Area under the deletion curve (lower is better).

    The deletion game of Petsiuk et al. ("RISE", BMVC 2018,
    https://arxiv.org/abs/1806.07421), used as an intrinsic metric in Gupta et
    al. (NeurIPS 2022, https://arxiv.org/abs/2211.02912, tables 3, 5, 7, 9):
    pixels are removed (set to the ``fill``) in decreasing order of
    attribution, and the target's probability is recorded after each step:

    .. math::

        c_j = p_t\left(x \text{ with its top } k_j \text{ pixels replaced by the
        fill}\right), \qquad k_j = \operatorname{round}(j N / n_{steps}),
        \qquad \mathrm{AUC} = \int_0^1 c \, d(k/N)

    (trapezoid rule over the fraction of pixels removed). A pixel is all
    channels of one position of a 4-D input ``(N, C, H, W)``, ranked by the
    channel-summed attribution; for other inputs each feature is its own
    region. Tuple inputs are ranked jointly. Ties keep the pixel order.
    Attributions are ranked by their signed value: pass ``attributions.abs()``
    to rank by magnitude. Step 0 is the intact input.

    All ``bsz x (n_steps + 1)`` perturbed inputs are built with one
    ``torch.where`` per chunk and evaluated in batched forward passes of at
    most ``max_examples_per_batch`` inputs; repeated points are evaluated once.
    The results do not depend on the chunking.

    Args:
        forward_func (Callable): The model; returns logits (softmax is applied)
            unless ``probability_fn`` is given.
        inputs (Tensor or tuple[Tensor, ...]): Inputs ``(bsz, ...)``, at least
            one example.
        attributions (Tensor or tuple[Tensor, ...]): Scores broadcastable to
            the inputs (e.g. ``(bsz, 1, H, W)`` masks for colour images);
            finite (NaN cannot be ranked and is refused).
        target (int, tuple, Tensor, or list, optional): Captum ``TargetType``:
            the index of the tracked score in the output of ``probability_fn``
            (by default the class whose probability is tracked). As in Captum,
            None takes that output whole, so it must be one score per example
            (a ``probability_fn`` such as ``lambda out: out.softmax(1)[:, 3]``);
            with the default softmax, ``target`` is required. Default: None.
        fill (str, float, Tensor, Callable or tuple, optional): Replacement
            value: ``"zero"``, ``"mean"`` (per example and channel),
            ``"blur"`` (a Gaussian blur of the input with ``blur_sigma``), a
            number, a tensor broadcastable to the inputs, a callable mapping
            an input tensor to such a tensor (called once on the intact
            input), or a tuple of these (one per input). Default: ``"zero"``.
        n_steps (int, optional): Number of steps; the curve has
            ``n_steps + 1`` points. Default: 100.
        additional_forward_args (Any, optional): Extra forward arguments. As
            in Captum, every tensor with a dimension is per-example (first
            dimension ``bsz``) and is repeated along the curve; other values
            are passed unchanged. Default: None.
        blur_sigma (float, optional): Standard deviation (pixels, > 0) of the
            blur fill. Default: 5.0 (Petsiuk et al. at 224 x 224).
        probability_fn (Callable, optional): Maps model outputs to scores.
            Default: None (softmax over dimension 1).
        return_curves (bool, optional): Also return the curves. Default: False.
        max_examples_per_batch (int, None or "auto", optional): Most perturbed
            inputs per forward pass; None: all in one pass (as in Captum);
            ``"auto"``: at most 2**21 input elements per pass (e.g. 13 images
            of 3 x 224 x 224, 2674 of 1 x 28 x 28), which bounds memory.
            Results do not depend on it. Default: ``"auto"``.
        show_progress (bool, optional): Show a progress bar over the
            perturbed inputs. Default: False.

    Returns:
        Tensor or (Tensor, Tensor): AUC per example ``(bsz,)``; with
        ``return_curves=True`` also the curves ``(bsz, n_steps + 1)``.

    Examples::

        >>> attr = InputXGradient(net).attribute(images, target=labels)
        >>> auc = deletion_auc(net, images, attr, target=labels, n_steps=64)
    """
    return _auc(
        forward_func,
        inputs,
        attributions,
        target,
        fill,
        n_steps,
        additional_forward_args,
        blur_sigma,
        probability_fn,
        return_curves,
        max_examples_per_batch,
        "delete",
        show_progress,
    )


@log_usage(part_of_slo=True)
@preserves_model_state
def insertion_auc(
    forward_func: Callable[..., Any],
    inputs: TensorOrTupleOfTensorsGeneric,
    attributions: TensorOrTupleOfTensorsGeneric,
    target: TargetType = None,
    fill: FillType = "zero",
    n_steps: int = 100,
    additional_forward_args: Any = None,
    blur_sigma: float = 5.0,
    probability_fn: Callable[[Tensor], Tensor] | None = None,
    return_curves: bool = False,
    max_examples_per_batch: BatchSize = "auto",
    *,
    show_progress: bool = False,
) -> Tensor | tuple[Tensor, Tensor]:
    r"""Area under the insertion curve (higher is better).

    The insertion game of Petsiuk et al. ("RISE", BMVC 2018,
    https://arxiv.org/abs/1806.07421): starting from the ``fill`` (Petsiuk et
    al. blur the image; grey is also common), pixels of the input are revealed
    in decreasing order of attribution and the target's probability is
    recorded:

    .. math::

        c_j = p_t\left(\text{fill with the top } k_j \text{ pixels of } x\right),
        \qquad k_j = \operatorname{round}(j N / n_{steps}),
        \qquad \mathrm{AUC} = \int_0^1 c \, d(k/N).

    Regions, ranking, ties, fills, targets and batching are as in
    :func:`deletion_auc`. Step 0 is the fill alone, the last step the intact
    input.

    Args:
        forward_func (Callable): The model; returns logits (softmax is applied)
            unless ``probability_fn`` is given.
        inputs (Tensor or tuple[Tensor, ...]): Inputs ``(bsz, ...)``, at least
            one example.
        attributions (Tensor or tuple[Tensor, ...]): Finite scores
            broadcastable to the inputs.
        target (int, tuple, Tensor, or list, optional): Captum ``TargetType``,
            as in :func:`deletion_auc` (None needs a ``probability_fn`` that
            returns one score per example). Default: None.
        fill (str, float, Tensor, Callable or tuple, optional): ``"zero"``,
            ``"mean"``, ``"blur"``, a number, a tensor, a callable or a tuple,
            as in :func:`deletion_auc`. Default: ``"zero"``.
        n_steps (int, optional): Number of steps (``n_steps + 1`` points).
            Default: 100.
        additional_forward_args (Any, optional): Extra forward arguments;
            every tensor with a dimension is per-example, as in Captum.
            Default: None.
        blur_sigma (float, optional): Standard deviation (pixels, > 0) of the
            blur fill. Default: 5.0.
        probability_fn (Callable, optional): Maps model outputs to scores.
            Default: None (softmax over dimension 1).
        return_curves (bool, optional): Also return the curves. Default: False.
        max_examples_per_batch (int, None or "auto", optional): Most perturbed
            inputs per forward pass, as in :func:`deletion_auc`. Results do
            not depend on it. Default: ``"auto"``.
        show_progress (bool, optional): Show a progress bar over the
            perturbed inputs. Default: False.

    Returns:
        Tensor or (Tensor, Tensor): AUC per example ``(bsz,)``; with
        ``return_curves=True`` also the curves ``(bsz, n_steps + 1)``.

    Examples::

        >>> auc = insertion_auc(net, images, attr, target=labels, fill="blur")
    """
    return _auc(
        forward_func,
        inputs,
        attributions,
        target,
        fill,
        n_steps,
        additional_forward_args,
        blur_sigma,
        probability_fn,
        return_curves,
        max_examples_per_batch,
        "insert",
        show_progress,
    )
