"""Pattern-Guided Integrated Gradients (Schwarzenberg & Castle, 2021)."""

from __future__ import annotations

from typing import Any, cast

from captum._utils.common import _format_output
from captum._utils.typing import (
    BaselineType,
    TargetType,
    TensorOrTupleOfTensorsGeneric,
)
from captum.attr._utils.common import _format_input_baseline, _validate_input
from captum.log import log_usage
from torch import Tensor, nn

from captum_ext._utils.validation import (
    check_positive_int,
    format_inputs,
    validate_target,
)
from captum_ext.attr._core.pattern._backward import pattern_backward
from captum_ext.attr._core.pattern._base import _PatternAttributionBase
from captum_ext.attr._core.pattern._pattern_set import PatternSet
from captum_ext.attr._utils.integration import check_quadrature, path_average_gradients


class PatternGuidedIG(_PatternAttributionBase):
    r"""Pattern-Guided Integrated Gradients (PGIG).

    Schwarzenberg & Castle, *Pattern-Guided Integrated Gradients* (2020,
    workshop), eq. 4: Integrated Gradients whose path gradients are taken with
    the PatternAttribution backward pass :math:`\partial^{(p)}` (every
    ``nn.Linear`` / ``nn.Conv*d`` backpropagates with :math:`W \odot A`, ReLU
    gating and max-pool routing from the forward pass, biases ignored),
    started from 1 (as in IG) and multiplied by :math:`x - \bar{x}`:

    .. math::

        \phi^{PGIG}_{f,i}(x) = (x_i - \bar{x}_i) \int_0^1
        \frac{\partial^{(p)} f(\bar{x} + \alpha (x - \bar{x}))}
             {\partial^{(p)} x_i} \, d\alpha ,

    approximated with Captum's integration methods (``method``,
    ``n_steps``) exactly as :class:`captum.attr.IntegratedGradients` does. Like
    IG it does not vanish at saturated plateaus (the path passes through the
    unsaturated region); like PatternAttribution it avoids distractor
    directions that the model cancels. For a single linear layer it is
    :math:`p_i \cdot \phi^{IG}_{f,i}(x)` (section 4.1). Completeness does not
    hold in general, so no convergence delta is offered, and, like
    PatternAttribution, the method is not implementation invariant.

    The backward rules are applied with forward hooks (weights never modified,
    hooks removed in ``finally``); the model must not end in a softmax.

    Args:
        model (nn.Module): The model, in eval mode. Eval-mode BatchNorm is
            handled as the per-channel affine map it is (no folding needed);
            attention, LayerNorm and other layers outside the pattern theory
            are refused here, naming the module.
        patterns (PatternSet): Patterns of every ``nn.Linear`` /
            ``nn.Conv1d/2d/3d`` of ``model`` (:func:`fit_patterns`).
        multiply_by_inputs (bool): Multiply the integrated pattern gradients by
            ``inputs - baselines`` (eq. 4). With False, the path average of the
            pattern gradients is returned (cf. Captum's ``multiply_by_inputs``).

    Examples::

        >>> patterns = fit_patterns(model, train_loader)
        >>> pgig = PatternGuidedIG(model, patterns)
        >>> attr = pgig.attribute(images, target=labels, n_steps=25)
    """

    def __init__(
        self,
        model: nn.Module,
        patterns: PatternSet,
        multiply_by_inputs: bool = True,
    ) -> None:
        _PatternAttributionBase.__init__(self, model, patterns)
        self._multiply_by_inputs = bool(multiply_by_inputs)

    def _substitute(self, weight: Tensor, pattern: Tensor) -> Tensor:
        return weight * pattern

    @log_usage(part_of_slo=True)
    def attribute(
        self,
        inputs: TensorOrTupleOfTensorsGeneric,
        baselines: BaselineType = None,
        target: TargetType = None,
        additional_forward_args: Any = None,
        n_steps: int = 50,
        method: str = "gausslegendre",
        internal_batch_size: int | None = None,
    ) -> TensorOrTupleOfTensorsGeneric:
        r"""Compute PGIG attributions.

        Args:
            inputs (Tensor or tuple[Tensor, ...]): Input for which attributions
                are computed. Dimension 0 of every tensor indexes examples; a
                tuple is passed to the model as separate arguments.
            baselines (scalar, Tensor, tuple, optional): Starting points of the
                path, as in :class:`captum.attr.IntegratedGradients`: a scalar
                or a tensor per input, shaped like the input or like one
                example (broadcast). Default: None (zeros).
            target (int, tuple, Tensor, or list, optional): Output indices to
                explain, with Captum's ``TargetType`` semantics. Default: None
                (the model returns a scalar per example).
            additional_forward_args (Any, optional): Extra arguments passed to
                the model after the inputs (tensors are repeated for each
                step). Default: None.
            n_steps (int): Number of integration steps. Default: 50.
            method (str): Captum integration method: ``"riemann_right"``,
                ``"riemann_left"``, ``"riemann_middle"``,
                ``"riemann_trapezoid"`` or ``"gausslegendre"``. Captum's
                points; for ``"riemann_trapezoid"`` the weights are the
                trapezoid rule's (they sum to 1), whereas Captum 0.9's sum to
                ``(n_steps - 1) / n_steps``, so results are Captum's times
                ``n_steps / (n_steps - 1)`` for that method.
            internal_batch_size (int, optional): Most examples x steps per
                forward / backward pass (at least one step per pass); the steps
                are split into chunks, with the same result. Default: None (all
                steps in one pass).

        Returns:
            Tensor or tuple[Tensor, ...]: the attributions, with the structure
            and shapes of ``inputs``.

        Examples::

            >>> pgig = PatternGuidedIG(model, patterns)
            >>> attr = pgig.attribute(images, target=labels, n_steps=25,
            ...                       internal_batch_size=256)
        """
        is_inputs_tuple, inputs_tuple = format_inputs(inputs)
        validate_target(target, inputs_tuple[0].shape[0])
        formatted_inputs, formatted_baselines = _format_input_baseline(
            inputs_tuple, baselines
        )
        _validate_input(formatted_inputs, formatted_baselines, n_steps, method)
        check_quadrature(method, n_steps)
        check_positive_int(internal_batch_size, "internal_batch_size", allow_none=True)
        layers, weights = self._backward_layers()
        with pattern_backward(self._model, layers, weights):
            attributions = path_average_gradients(
                self._checked_forward,
                formatted_inputs,
                formatted_baselines,
                target,
                additional_forward_args,
                n_steps,
                method,
                internal_batch_size,
            )
        if self._multiply_by_inputs:
            attributions = tuple(
                a * (x.detach() - (b.detach() if isinstance(b, Tensor) else b))
                for a, x, b in zip(attributions, formatted_inputs, formatted_baselines)
            )
        self._warn_non_finite(attributions, formatted_inputs)
        return cast(
            TensorOrTupleOfTensorsGeneric,
            _format_output(is_inputs_tuple, attributions),
        )

    @property
    def multiplies_by_inputs(self) -> bool:
        """Whether the result is multiplied by ``inputs - baselines``."""
        return self._multiply_by_inputs
