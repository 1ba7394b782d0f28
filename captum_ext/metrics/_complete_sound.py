"""The saliency AUC base metric, completeness and soundness (Gupta et al. 2022)."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import torch
from captum._utils.common import _is_tuple
from captum._utils.typing import TargetType, TensorOrTupleOfTensorsGeneric
from captum.log import log_usage
from torch import Tensor

from captum_ext._utils.batching import repeat_forward_args
from captum_ext._utils.model_state import preserves_model_state
from captum_ext._utils.validation import check_positive_int, format_inputs
from captum_ext.metrics._curves import (
    BatchSize,
    batched_outputs,
    check_batch_size,
    check_blur_sigma,
    check_examples,
    check_fill,
    check_forward_args,
    examples_per_pass,
    score_function,
)
from captum_ext.metrics._deletion_insertion import FillType, ordered_curve


def _fractions(n_points: int, fraction_range: tuple[float, float]) -> Tensor:
    check_positive_int(n_points, "n_points")
    ok = (
        isinstance(fraction_range, tuple)
        and len(fraction_range) == 2
        and all(
            isinstance(f, (int, float)) and not isinstance(f, bool)
            for f in fraction_range
        )
    )
    if not ok or not 0.0 <= fraction_range[0] <= fraction_range[1] <= 1.0:
        raise ValueError(
            "`fraction_range` must be a pair (lo, hi) with 0 <= lo <= hi <= 1; got "
            f"{fraction_range!r}."
        )
    lo, hi = float(fraction_range[0]), float(fraction_range[1])
    if n_points == 1:
        return torch.tensor([lo], dtype=torch.float64)
    return torch.linspace(lo, hi, n_points, dtype=torch.float64)


@log_usage(part_of_slo=True)
@preserves_model_state
def saliency_auc(
    forward_func: Callable[..., Any],
    inputs: TensorOrTupleOfTensorsGeneric,
    masks: TensorOrTupleOfTensorsGeneric,
    target: TargetType = None,
    fill: FillType = 0.0,
    n_points: int = 21,
    additional_forward_args: Any = None,
    fraction_range: tuple[float, float] = (0.0, 1.0),
    blur_sigma: float = 5.0,
    probability_fn: Callable[[Tensor], Tensor] | None = None,
    return_curves: bool = False,
    max_examples_per_batch: BatchSize = "auto",
    *,
    show_progress: bool = False,
) -> Tensor | tuple[Tensor, Tensor]:
    r"""The base metric :math:`g` of complete and sound saliency (mask AUC).

    Gupta et al., "New Definitions and Evaluations for Saliency Methods:
    Staying Intrinsic, Complete and Sound" (NeurIPS 2022,
    https://arxiv.org/abs/2211.02912, definition 3.5): the
    mean probability of label :math:`a` when only the top-:math:`k` pixels of
    the mask are kept and the rest are filled, over a grid of :math:`k`:

    .. math::

        g_a(x, M) = \frac{1}{|K|} \sum_{k \in K}
            p_a\left(\bar M_k \odot x + (1 - \bar M_k) \odot \text{fill}\right),

    where :math:`\bar M_k` keeps the :math:`k` largest mask values and
    :math:`K = \{\operatorname{round}(f N)\}` for ``n_points`` fractions
    :math:`f` evenly spaced over ``fraction_range`` (the paper's table 2 uses
    :math:`[0.2, 0.6]`; the default covers :math:`[0, 1]`). The fill is zero
    (grey in normalised space, as in the paper) by default. A pixel is all
    channels of a position of a 4-D input (ranked by the channel sum of the
    mask); ties keep the pixel order.

    Args:
        forward_func (Callable): The model; returns logits (softmax is applied)
            unless ``probability_fn`` is given.
        inputs (Tensor or tuple[Tensor, ...]): Inputs ``(bsz, ...)``, at least
            one example.
        masks (Tensor or tuple[Tensor, ...]): Saliency masks (or any finite
            scores) broadcastable to the inputs; only their order matters.
        target (int, tuple, Tensor, or list, optional): Captum ``TargetType``:
            the label :math:`a`, an index into the output of
            ``probability_fn``. As in Captum, None takes that output whole
            (one score per example, from a custom ``probability_fn``); with
            the default softmax, ``target`` is required. Default: None.
        fill (str, float, Tensor, Callable or tuple, optional): Value of the
            pixels not kept: a number, ``"zero"``, ``"mean"``, ``"blur"``, a
            tensor broadcastable to the inputs (e.g. other images), a callable
            mapping an input tensor to such a tensor, or a tuple of these (the
            vocabulary of :func:`~captum_ext.metrics.deletion_auc`).
            Default: 0.0.
        n_points (int, optional): Number of points :math:`k` in the grid.
            Default: 21.
        additional_forward_args (Any, optional): Extra forward arguments;
            every tensor with a dimension is per-example, as in Captum.
            Default: None.
        fraction_range (tuple[float, float], optional): Smallest and largest
            fraction of pixels kept. Default: (0.0, 1.0).
        blur_sigma (float, optional): Standard deviation (pixels, > 0) of the
            blur fill. Default: 5.0.
        probability_fn (Callable, optional): Maps model outputs to
            probabilities. Default: None (softmax over dimension 1).
        return_curves (bool, optional): Also return the curves (probability at
            each point of the grid). Default: False.
        max_examples_per_batch (int, None or "auto", optional): Most perturbed
            inputs per forward pass; None: all in one pass (as in Captum);
            ``"auto"``: at most 2**21 input elements per pass. Results do not
            depend on it. Default: ``"auto"``.
        show_progress (bool, optional): Show a progress bar over the
            perturbed inputs. Default: False.

    Returns:
        Tensor or (Tensor, Tensor): :math:`g` per example ``(bsz,)``; with
        ``return_curves=True`` also the curves ``(bsz, n_points)``.

    Examples::

        >>> masks = LearnedMask(net).attribute(images, target=labels,
        ...                                    distractors=pool, n_iter=300)
        >>> g = saliency_auc(net, images, masks, target=labels)
    """
    fractions = _fractions(n_points, fraction_range)
    curve, _ = ordered_curve(
        forward_func,
        inputs,
        masks,
        target,
        fill,
        fractions,
        None,
        "insert",
        additional_forward_args,
        blur_sigma,
        probability_fn,
        max_examples_per_batch,
        "masks",
        show_progress,
        "saliency AUC",
    )
    g = curve.mean(dim=1)
    if return_curves:
        return g, curve
    return g


def _as_unit_tensor(value: Any, name: str, what: str) -> Tensor:
    """``value`` as a floating tensor; every entry must lie in [0, 1]."""
    if isinstance(value, Tensor):
        if value.is_complex() or value.dtype == torch.bool:
            raise TypeError(f"`{name}` must be real-valued, got {value.dtype}.")
        t = value.detach()
        t = t if t.is_floating_point() else t.double()
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        t = torch.tensor(float(value), dtype=torch.float64)
    else:
        raise TypeError(
            f"`{name}` must be a Tensor or a number, got {type(value).__name__}."
        )
    if t.numel() and not bool(((t >= 0) & (t <= 1)).all()):  # NaN fails too
        finite = t[torch.isfinite(t)]
        seen = (
            f"values from {float(finite.min()):.4g} to {float(finite.max()):.4g}"
            if finite.numel()
            else "no finite values"
        )
        nan = ", and NaN or inf" if finite.numel() < t.numel() else ""
        raise ValueError(f"`{name}` is {what} and must lie in [0, 1]; got {seen}{nan}.")
    return t


def _check_unit(value: Any, name: str, low_open: bool = False) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if ok and math.isfinite(float(value)):
        v = float(value)
        if (0.0 < v <= 1.0) if low_open else (0.0 <= v <= 1.0):
            return
    interval = "(0, 1]" if low_open else "[0, 1]"
    raise ValueError(f"`{name}` must be a number in {interval}, got {value!r}.")


@log_usage()
@preserves_model_state
def completeness(
    g: Tensor | float,
    p: Tensor | float,
    epsilon1: float = 0.01,
    alpha: float = 1.0,
) -> Tensor:
    r"""Completeness of a saliency explanation (Gupta et al. 2022, eq. 1).

    How much of the model's confidence in a label the explanation recovers:

    .. math::

        \text{completeness}_a = \min\left(
            \frac{\max(\epsilon_1, g_a)}{\min(\alpha, p_a(x))}, 1\right),

    where :math:`g_a` is the base metric (:func:`saliency_auc`) of the mask
    for label :math:`a` and :math:`p_a(x)` the probability of :math:`a` on the
    intact input. A zero denominator gives 1.

    Args:
        g (Tensor or float): Base metric per example (any shape), in [0, 1].
        p (Tensor or float): Probability of the label on the intact input,
            in [0, 1], broadcastable with ``g``.
        epsilon1 (float, optional): Floor on :math:`g` (the paper's seed
            table uses 0.01). Default: 0.01.
        alpha (float, optional): Cap on the probability the explanation is
            asked to recover, in (0, 1]. Default: 1.0.

    Returns:
        Tensor: completeness in [0, 1], shaped like ``g`` and ``p`` broadcast.

    Examples::

        >>> completeness(torch.tensor([0.45, 0.9]), torch.tensor([0.9, 0.6]))
        tensor([0.5000, 1.0000])
    """
    _check_unit(epsilon1, "epsilon1")
    _check_unit(alpha, "alpha", low_open=True)
    g_t = _as_unit_tensor(g, "g", "a saliency AUC (saliency_auc)")
    p_t = _as_unit_tensor(p, "p", "a probability")
    num = g_t.clamp_min(epsilon1)
    den = p_t.clamp_max(alpha)
    safe = torch.where(den > 0, den, torch.ones_like(den))
    ratio = torch.where(den > 0, num / safe, torch.ones_like(num / safe))
    return ratio.clamp_max(1.0)


@log_usage()
@preserves_model_state
def soundness(
    g: Tensor | float,
    p: Tensor | float,
    epsilon2: float = 0.1,
) -> Tensor:
    r"""Soundness of a saliency explanation (Gupta et al. 2022, eq. 1).

    Whether the explanation claims more confidence in a label than the model
    has: an explanation method that finds masks with a high base metric for
    labels the model does not predict is unsound.

    .. math::

        \text{soundness}_a = \min\left(\frac{\max(\epsilon_2, p_a(x))}{g_a},
            1\right),

    with :math:`g_a` the base metric (:func:`saliency_auc`) of the mask for
    label :math:`a` and :math:`p_a(x)` the probability of :math:`a` on the
    intact input. :math:`g_a = 0` gives 1.

    Args:
        g (Tensor or float): Base metric per example (any shape), in [0, 1].
        p (Tensor or float): Probability of the label on the intact input,
            in [0, 1].
        epsilon2 (float, optional): Floor on the probability (the paper uses
            0.1). Default: 0.1.

    Returns:
        Tensor: soundness in [0, 1].

    Examples::

        >>> soundness(torch.tensor([0.5, 0.05]), torch.tensor([0.01, 0.02]))
        tensor([0.2000, 1.0000])
    """
    _check_unit(epsilon2, "epsilon2")
    g_t = _as_unit_tensor(g, "g", "a saliency AUC (saliency_auc)")
    p_t = _as_unit_tensor(p, "p", "a probability")
    num = p_t.clamp_min(epsilon2)
    safe = torch.where(g_t > 0, g_t, torch.ones_like(g_t))
    ratio = torch.where(g_t > 0, num / safe, torch.ones_like(num / safe))
    return ratio.clamp_max(1.0)


class CompletenessSoundness(NamedTuple):
    """Completeness and soundness for the top and second label of each example.

    Attributes:
        worst_completeness: ``(bsz,)`` minimum over the two labels.
        worst_soundness: ``(bsz,)`` minimum over the two labels.
        completeness: ``(bsz, 2)`` for the top and the second label.
        soundness: ``(bsz, 2)`` for the top and the second label.
        saliency_auc: ``(bsz, 2)`` base metric :math:`g` of each label's mask.
        probability: ``(bsz, 2)`` the model's probability of each label.
        labels: ``(bsz, 2)`` the top and the second label.
        masks: the masks (structure of the inputs) for the top label and for
            the second label.
    """

    worst_completeness: Tensor
    worst_soundness: Tensor
    completeness: Tensor
    soundness: Tensor
    saliency_auc: Tensor
    probability: Tensor
    labels: Tensor
    masks: tuple[Any, Any]


def _stack_fill(fill: Any, inputs: tuple[Tensor, ...], bsz: int) -> Any:
    """Repeat per-example fill tensors (shaped like their input) twice."""
    if isinstance(fill, tuple) and len(fill) != len(inputs):
        return fill  # refused with a clear message by saliency_auc
    specs = fill if isinstance(fill, tuple) else (fill,) * len(inputs)
    out = tuple(
        torch.cat([f, f])
        if isinstance(f, Tensor) and f.dim() == x.dim() and f.shape[0] == bsz > 1
        else f
        for f, x in zip(specs, inputs)
    )
    return out if isinstance(fill, tuple) else out[0]


@log_usage(part_of_slo=True)
@preserves_model_state
def worst_case_completeness_soundness(
    forward_func: Callable[..., Any],
    inputs: TensorOrTupleOfTensorsGeneric,
    explanation_func: Callable[..., Any],
    additional_forward_args: Any = None,
    fill: FillType = 0.0,
    n_points: int = 21,
    fraction_range: tuple[float, float] = (0.0, 1.0),
    epsilon1: float = 0.01,
    alpha: float = 1.0,
    epsilon2: float = 0.1,
    blur_sigma: float = 5.0,
    probability_fn: Callable[[Tensor], Tensor] | None = None,
    max_examples_per_batch: BatchSize = "auto",
    **kwargs: Any,
) -> CompletenessSoundness:
    r"""Masks for the top and second label, their completeness and soundness.

    The evaluation protocol of Gupta et al. (NeurIPS 2022, appendix D): for
    each input, the model's most probable label :math:`a` and second most
    probable label :math:`a'` are explained with ``explanation_func``, the
    base metric :math:`g` (:func:`saliency_auc`) of each mask is computed, and
    :func:`completeness` and :func:`soundness` are evaluated for both labels.
    The worst case is the minimum over the two labels (average it over
    examples to get the paper's tables). Both labels are explained in one call
    of ``explanation_func`` on the input batch stacked twice (top labels
    first), so a batched method such as :class:`~captum_ext.attr.LearnedMask`
    optimises all masks together.

    Args:
        forward_func (Callable): The model; returns logits (softmax is applied)
            unless ``probability_fn`` is given.
        inputs (Tensor or tuple[Tensor, ...]): Inputs ``(bsz, ...)``.
        explanation_func (Callable): Called as
            ``explanation_func(inputs, target=labels, **kwargs)`` (plus
            ``additional_forward_args=`` when given), e.g.
            ``LearnedMask(net).attribute``; returns masks (or attributions)
            with the structure of the inputs. Larger values mean "keep".
        additional_forward_args (Any, optional): Extra forward arguments.
            Default: None.
        fill: Fill of :func:`saliency_auc`. Default: 0.0.
        n_points (int, optional): Grid size of :func:`saliency_auc`.
            Default: 21.
        fraction_range (tuple[float, float], optional): Fractions of pixels
            kept in :func:`saliency_auc`. Default: (0.0, 1.0).
        epsilon1 (float, optional): Of :func:`completeness`. Default: 0.01.
        alpha (float, optional): Of :func:`completeness`. Default: 1.0.
        epsilon2 (float, optional): Of :func:`soundness`. Default: 0.1.
        blur_sigma (float, optional): Standard deviation of the blur fill.
            Default: 5.0.
        probability_fn (Callable, optional): Maps model outputs to
            probabilities. Default: None (softmax over dimension 1).
        max_examples_per_batch (int, None or "auto", optional): Most inputs
            per forward pass of the evaluation, as in :func:`saliency_auc`.
            Default: ``"auto"``.
        **kwargs (Any): Passed to ``explanation_func`` (e.g. ``distractors``,
            ``n_iter``, ``tv_coeff``, ``generator``).

    Returns:
        CompletenessSoundness: worst-case completeness and soundness
        ``(bsz,)``, per-label completeness, soundness, base metric,
        probability and labels ``(bsz, 2)``, and the two masks.

    Examples::

        >>> res = worst_case_completeness_soundness(
        ...     net, images, LearnedMask(net).attribute,
        ...     distractors=train_images, n_iter=300, tv_coeff=0.01,
        ...     generator=torch.Generator().manual_seed(0))
        >>> res.completeness[:, 0].mean(), res.worst_soundness.mean()
    """
    is_tuple, inputs_t = format_inputs(inputs)
    bsz = check_examples(inputs_t, is_tuple)
    if not callable(explanation_func):
        raise TypeError("`explanation_func` must be callable.")
    check_batch_size(max_examples_per_batch)
    _fractions(n_points, fraction_range)
    _check_unit(epsilon1, "epsilon1")
    _check_unit(alpha, "alpha", low_open=True)
    _check_unit(epsilon2, "epsilon2")
    score_fn = score_function(probability_fn)
    check_blur_sigma(blur_sigma)
    check_fill(fill, inputs_t)
    afa = check_forward_args(additional_forward_args, bsz)
    with torch.no_grad():
        probs = score_fn(
            batched_outputs(
                forward_func,
                inputs_t,
                afa,
                examples_per_pass(max_examples_per_batch, inputs_t),
            )
        )
    if probs.dim() != 2 or probs.shape[1] < 2:
        raise ValueError(
            "The model's probabilities must be (bsz, n_classes) with at least two "
            f"classes; got shape {tuple(probs.shape)}."
        )
    if not bool(((probs >= 0) & (probs <= 1)).all()):
        raise ValueError(
            "`probability_fn` must return probabilities in [0, 1] (completeness "
            "and soundness compare them with the saliency AUC); got values from "
            f"{float(probs.min()):.4g} to {float(probs.max()):.4g} (or NaN)."
        )
    top2 = probs.topk(2, dim=1)
    labels = top2.indices
    probability = top2.values
    both_labels = torch.cat([labels[:, 0], labels[:, 1]])
    doubled = tuple(torch.cat([x, x]) for x in inputs_t)
    doubled_in: Any = doubled if is_tuple else doubled[0]
    afa2 = repeat_forward_args(afa, 2, bsz)
    call_kwargs = dict(kwargs)
    if afa2 is not None:
        call_kwargs["additional_forward_args"] = afa2
    masks = explanation_func(doubled_in, target=both_labels, **call_kwargs)
    if _is_tuple(masks) != is_tuple:
        raise TypeError(
            "`explanation_func` must return the structure of `inputs` "
            f"({'a tuple' if is_tuple else 'a Tensor'})."
        )
    g = saliency_auc(
        forward_func,
        doubled_in,
        masks,
        target=both_labels,
        fill=_stack_fill(fill, inputs_t, bsz),
        n_points=n_points,
        additional_forward_args=afa2,
        fraction_range=fraction_range,
        blur_sigma=blur_sigma,
        probability_fn=probability_fn,
        max_examples_per_batch=max_examples_per_batch,
    )
    assert isinstance(g, Tensor)
    g2 = g.view(2, bsz).t().to(probability.dtype)
    comp = completeness(g2, probability, epsilon1, alpha).to(probability.dtype)
    sound = soundness(g2, probability, epsilon2).to(probability.dtype)
    if is_tuple:
        mask_pair = (
            tuple(m[:bsz].detach() for m in masks),
            tuple(m[bsz:].detach() for m in masks),
        )
    else:
        mask_pair = (masks[:bsz].detach(), masks[bsz:].detach())
    return CompletenessSoundness(
        worst_completeness=comp.min(dim=1).values,
        worst_soundness=sound.min(dim=1).values,
        completeness=comp,
        soundness=sound,
        saliency_auc=g2,
        probability=probability,
        labels=labels,
        masks=mask_pair,
    )
