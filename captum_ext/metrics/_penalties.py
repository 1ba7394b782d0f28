"""The penalties that ablated data augmentations impose (CCP, Modified L2)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal, NamedTuple

import torch
from captum._utils.common import _format_additional_forward_args
from captum._utils.common import _validate_input as _validate_input_basic
from captum._utils.typing import BaselineType, TargetType
from captum.attr._utils.common import _format_input_baseline
from captum.log import log_usage
from torch import Tensor

from captum_ext._utils.gradient import check_grad_mode, target_gradients
from captum_ext._utils.model_state import preserves_model_state
from captum_ext._utils.validation import (
    check_positive_int,
    format_inputs,
    validate_target,
)
from captum_ext.attr._utils.integration import (
    check_quadrature,
    integrate_gradients,
    straight_paths,
    times_directions,
)


def _flat_features(values: Any, name: str) -> tuple[Tensor, torch.dtype]:
    """``(n, k)`` float64 view of a Tensor or tuple (features concatenated)."""
    _, tensors = format_inputs(values, name=name)
    dtype = tensors[0].dtype
    flat = torch.cat(
        [t.reshape(t.shape[0], -1).to(torch.float64) for t in tensors], dim=1
    )
    return flat, dtype


def contribution_covariance_penalty(
    attributions: Tensor | tuple[Tensor, ...],
) -> Tensor:
    r"""Contribution Covariance Penalty of a set of attributions (eq. 1 / eq. 4).

    Liu, Najmi & Sundararajan, "Ablated Data Augmentation as Regularization"
    (2020). For contributions (attributions) :math:`a_{ij}` of feature
    :math:`j` to example :math:`i` of :math:`n` examples,

    .. math::

        \mathrm{CCP} = n \sum_{j \ne k} -\operatorname{cov}(a_j, a_k)
        = n \Big(\sum_j \operatorname{var}(a_j)
        - \operatorname{var}\big(\textstyle\sum_j a_j\big)\Big),

    with population (divide-by-:math:`n`) covariances over the examples; the
    second form (eq. 4) is the one computed, in :math:`O(nk)`. For a linear
    model, :math:`a_{ij} = \beta_j x_{ij}` and
    :math:`\mathrm{CCP} = \beta^\top (nV - \underline X^\top \underline X)\beta`;
    for a network the paper takes Integrated Gradients attributions (see
    :func:`ablation_penalties`). The penalty is negative when contributions
    reinforce each other and positive when they cancel; mean-ablation
    augmentation lowers it (theorem 1).

    Args:
        attributions (Tensor or tuple[Tensor, ...]): ``(n, ...)`` per example;
            all non-batch dimensions (and all tensors of a tuple) are features.

    Returns:
        Tensor: a scalar (0-d) in the attributions' dtype (computed in float64),
        differentiable with respect to ``attributions`` (so it can also serve as
        an explicit training penalty).

    Examples::

        >>> ig = IntegratedGradients(model)
        >>> attr = ig.attribute(x_test, target=1, n_steps=100)
        >>> contribution_covariance_penalty(attr)
    """
    a, dtype = _flat_features(attributions, "attributions")
    centred = a - a.mean(dim=0)
    per_feature = centred.pow(2).sum()  # n * sum_j var(a_j)
    total = centred.sum(dim=1).pow(2).sum()  # n * var(sum_j a_j)
    return (per_feature - total).to(dtype)


def modified_l2_penalty(
    coefficients: Tensor | tuple[Tensor, ...],
    inputs: Tensor | tuple[Tensor, ...],
    average: Literal["coefficients", "penalty"] = "coefficients",
) -> Tensor:
    r"""Modified L2 penalty of coefficients on a data set (eq. 2).

    Liu, Najmi & Sundararajan, "Ablated Data Augmentation as Regularization"
    (2020). With :math:`\mu_j` and :math:`v_j` the mean and population
    variance of feature :math:`j` over ``inputs``,

    .. math::

        \mathrm{ML2P} = \sum_j (v_j + \mu_j^2)\,\beta_j^2 ,

    the ridge penalty with each coefficient weighted by its feature's second
    moment :math:`\mathbb E[x_j^2]` (equal to L2 on standardised features).
    Inverted input dropout lowers it (theorem 2).

    ``coefficients`` may be global (shaped like one example, e.g. a linear
    model's :math:`\beta`) or per example (shaped like ``inputs``), as for a
    network's *average gradients* (Integrated Gradients with
    ``multiply_by_inputs=False``, section 3.2). Per-example coefficients are
    reduced over the examples as ``average`` says:

    - ``"coefficients"`` (default): :math:`\beta_j = \frac1n \sum_i g_{ij}`,
      then eq. 2 — the network's mean average gradient plays the role of the
      linear coefficient, and the value equals eq. 2 for a linear model.
    - ``"penalty"``: :math:`\frac1n \sum_i \sum_j (v_j + \mu_j^2) g_{ij}^2`,
      eq. 2 per example then averaged; it also counts how much the gradients
      vary between examples (also eq. 2 for a linear model).

    When ``coefficients`` has the shape of ``inputs`` it is per example.

    Args:
        coefficients (Tensor or tuple[Tensor, ...]): Global ``(...)`` or per
            example ``(n, ...)``, with the structure of ``inputs``.
        inputs (Tensor or tuple[Tensor, ...]): The data ``(n, ...)`` whose
            feature means and variances weight the coefficients.
        average (str): ``"coefficients"`` or ``"penalty"`` (see above).

    Returns:
        Tensor: a scalar (0-d) in the inputs' dtype (computed in float64),
        differentiable with respect to ``coefficients``.

    Examples::

        >>> coef, _ = modified_l2_regression(X, y, 0.3)
        >>> modified_l2_penalty(coef, X)
        >>> avg_grad = IntegratedGradients(model, multiply_by_inputs=False).attribute(
        ...     x_test, target=1, n_steps=100)
        >>> modified_l2_penalty(avg_grad, x_test)
    """
    if average not in ("coefficients", "penalty"):
        raise ValueError(
            f"`average` must be 'coefficients' or 'penalty', got {average!r}."
        )
    is_tuple, xs = format_inputs(inputs)
    if isinstance(coefficients, Tensor):
        cs: tuple[Tensor, ...] = (coefficients,)
    elif isinstance(coefficients, tuple) and all(
        isinstance(c, Tensor) for c in coefficients
    ):
        cs = coefficients
    else:
        raise TypeError(
            "`coefficients` must be a Tensor or a tuple of Tensors, got "
            f"{type(coefficients).__name__}."
        )
    if len(cs) != len(xs) or is_tuple != isinstance(coefficients, tuple):
        raise ValueError(
            "`coefficients` must have the structure of `inputs` (a Tensor for a "
            f"Tensor, a tuple of {len(xs)} for a tuple)."
        )
    per_example = all(c.shape == x.shape for c, x in zip(cs, xs))
    if not per_example and not all(c.shape == x.shape[1:] for c, x in zip(cs, xs)):
        raise ValueError(
            "`coefficients` must be shaped like one example (global coefficients) "
            "or like `inputs` (per example); got "
            f"{[tuple(c.shape) for c in cs]} for inputs {[tuple(x.shape) for x in xs]}."
        )
    x, dtype = _flat_features(xs, "inputs")
    second_moment = x.var(dim=0, unbiased=False) + x.mean(dim=0).pow(2)  # (k,)
    n = x.shape[0]
    c = torch.cat(
        [t.reshape(n if per_example else 1, -1).to(torch.float64) for t in cs],
        dim=1,
    )
    if average == "coefficients" or not per_example:
        value = (second_moment * c.mean(dim=0).pow(2)).sum()
    else:
        value = (second_moment * c.pow(2)).sum(dim=1).mean()
    return value.to(dtype)


class AblationPenalties(NamedTuple):
    """What :func:`ablation_penalties` returns.

    Attributes:
        ccp: Contribution Covariance Penalty of the IG attributions (0-d).
        ml2p: Modified L2 penalty of the average gradients (0-d).
        attributions: IG attributions, structured like the inputs.
        average_gradients: IG path-averaged gradients, structured like the inputs.
    """

    ccp: Tensor
    ml2p: Tensor
    attributions: Tensor | tuple[Tensor, ...]
    average_gradients: Tensor | tuple[Tensor, ...]


@log_usage(part_of_slo=True)
@preserves_model_state
def ablation_penalties(
    forward_func: Callable[..., Tensor],
    inputs: Tensor | tuple[Tensor, ...],
    target: TargetType = None,
    baselines: BaselineType = None,
    additional_forward_args: Any = None,
    n_steps: int = 100,
    method: str = "gausslegendre",
    average: Literal["coefficients", "penalty"] = "coefficients",
    internal_batch_size: int | None = None,
    show_progress: bool = False,
) -> AblationPenalties:
    r"""CCP and Modified L2 penalty of a network on a data set (section 3).

    Liu, Najmi & Sundararajan, "Ablated Data Augmentation as Regularization"
    (2020), section 3: contributions become Integrated Gradients attributions
    and coefficients become *average gradients*, IG divided by
    :math:`x - x'`, i.e. IG with ``multiply_by_inputs=False``:

    .. math::

        g_{ij} = \int_0^1 \frac{\partial F(x'_i + \alpha (x_i - x'_i))}
        {\partial x_{ij}}\, d\alpha, \qquad a_{ij} = (x_{ij} - x'_{ij})\, g_{ij},

    then :math:`\mathrm{CCP} =` :func:`contribution_covariance_penalty`
    :math:`(a)` and :math:`\mathrm{ML2P} =` :func:`modified_l2_penalty`
    :math:`(g, x)`. Both come from **one** IG pass (the attributions are the
    average gradients times :math:`x - x'`), computed as Captum's
    ``IntegratedGradients`` with the same quadrature but with one backward
    pass per chunk of steps. Defaults follow section 4.1:
    zero baseline (the feature means, for standardised features), 100 steps;
    for a classifier pass ``target`` = the class whose logit is the response.
    For a linear model :math:`a_{ij} = \beta_j x_{ij}` exactly, so the values
    equal the linear-model penalties.

    Args:
        forward_func (Callable): The model (or any forward function).
        inputs (Tensor or tuple[Tensor, ...]): The evaluation data ``(n, ...)``
            (the paper uses the test split).
        target (int, tuple, Tensor, or list, optional): Captum ``TargetType``:
            the output (e.g. class logit) explained. Default: None (a model
            with one output per example).
        baselines (scalar, Tensor or tuple, optional): IG baselines, as in
            Captum. Default: None (zeros).
        additional_forward_args (Any, optional): Extra arguments of
            ``forward_func``.
        n_steps (int): IG steps. Default: 100 (section 4.1).
        method (str): Captum IG integration method, with Captum's points and
            weights, or ``"trapezoid"`` (see
            :class:`~captum_ext.attr.PatternGuidedIG`). Default:
            ``"gausslegendre"``.
        average (str): How :func:`modified_l2_penalty` reduces the per-example
            average gradients. Default: ``"coefficients"``.
        internal_batch_size (int, optional): As in Captum's
            IntegratedGradients: chunks of ``internal_batch_size // n`` whole
            steps (at least one; below ``n`` it warns, as Captum does).
            Results are equal. Default: None (one pass).
        show_progress (bool, optional): Show a progress bar over the chunks.
            Default: False.

    Returns:
        AblationPenalties: ``(ccp, ml2p, attributions, average_gradients)``.

    Examples::

        >>> model = tabular_mlp(30, 2, hidden_layers=1)
        >>> ablate = MeanAblation.from_data(data.x_train, p=0.3)
        >>> train_model(model, data.x_train, data.y_train, transform=ablate)
        >>> result = ablation_penalties(model, data.x_test, target=1)
        >>> result.ccp, result.ml2p
    """
    check_grad_mode("ablation_penalties")
    is_tuple, xs = format_inputs(inputs)
    validate_target(target, xs[0].shape[0])
    check_quadrature(method, n_steps)
    check_positive_int(internal_batch_size, "internal_batch_size", allow_none=True)
    if average not in ("coefficients", "penalty"):
        raise ValueError(
            f"`average` must be 'coefficients' or 'penalty', got {average!r}."
        )
    formatted, bases = _format_input_baseline(xs, baselines)
    _validate_input_basic(formatted, bases)
    starts, directions = straight_paths(formatted, bases)
    grads = integrate_gradients(
        target_gradients,
        forward_func,
        starts,
        directions,
        n_steps,
        method,
        internal_batch_size,
        xs[0].shape[0],
        target,
        _format_additional_forward_args(additional_forward_args),
        False,
        show_progress,
        "ablation_penalties",
    )
    attributions = times_directions(grads, directions)
    ccp = contribution_covariance_penalty(attributions)
    ml2p = modified_l2_penalty(grads, xs, average=average)
    if not is_tuple:
        return AblationPenalties(ccp, ml2p, attributions[0], grads[0])
    return AblationPenalties(ccp, ml2p, attributions, grads)
