"""Pattern-Guided Integrated Gradients (Schwarzenberg & Castle, 2021)."""

from __future__ import annotations

from typing import Any, cast

from captum._utils.common import (
    _format_additional_forward_args,
    _format_output,
)
from captum._utils.common import _validate_input as _validate_input_basic
from captum._utils.typing import (
    BaselineType,
    TargetType,
    TensorOrTupleOfTensorsGeneric,
)
from captum.attr._utils.common import _format_input_baseline
from captum.log import log_usage
from torch import Tensor, nn

from captum_ext._utils.gradient import check_grad_mode, target_gradients
from captum_ext._utils.model_state import preserves_model_state
from captum_ext._utils.validation import (
    check_positive_int,
    format_inputs,
    validate_target,
)
from captum_ext.attr._core.pattern._backward import pattern_backward
from captum_ext.attr._core.pattern._base import _PatternAttributionBase
from captum_ext.attr._core.pattern._pattern_set import PatternSet
from captum_ext.attr._utils.integration import (
    check_quadrature,
    integrate_gradients,
    straight_paths,
)


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
    ``n_steps``, ``internal_batch_size``) exactly as
    :class:`captum.attr.IntegratedGradients` does: with all-ones patterns the
    result is Captum's IG. Gradients go through ``self.gradient_func`` (with
    the pattern backward pass installed), so a replacement takes effect. Like
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
        # the pattern backward pass is installed by hooks around the calls of
        # gradient_func, so a replacement gradient_func sees it too
        self.gradient_func = target_gradients
        self._multiply_by_inputs = bool(multiply_by_inputs)

    def _substitute(self, weight: Tensor, pattern: Tensor) -> Tensor:
        return weight * pattern

    @log_usage(part_of_slo=True)
    @preserves_model_state
    def attribute(
        self,
        inputs: TensorOrTupleOfTensorsGeneric,
        baselines: BaselineType = None,
        target: TargetType = None,
        additional_forward_args: Any = None,
        n_steps: int = 50,
        method: str = "gausslegendre",
        internal_batch_size: int | None = None,
        show_progress: bool = False,
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
            method (str): Captum's approximation method, with Captum's points
                and weights: ``"riemann_right"``, ``"riemann_left"``,
                ``"riemann_middle"``, ``"riemann_trapezoid"`` or
                ``"gausslegendre"``; or ``"trapezoid"``, the trapezoid rule
                proper on ``riemann_trapezoid``'s points (Captum 0.9's
                ``riemann_trapezoid`` weights sum to ``(n_steps - 1) /
                n_steps``). Default: ``"gausslegendre"``.
            internal_batch_size (int, optional): As in Captum's
                IntegratedGradients: the steps are split into chunks of
                ``internal_batch_size // bsz`` whole steps (at least one; a
                value below the batch size warns, as Captum does), one forward
                and backward pass each, with the same result. Default: None
                (all steps in one pass).
            show_progress (bool, optional): Show a progress bar over the
                chunks of steps. Default: False.

        Returns:
            Tensor or tuple[Tensor, ...]: the attributions, with the structure
            and shapes of ``inputs``.

        Examples::

            >>> pgig = PatternGuidedIG(model, patterns)
            >>> attr = pgig.attribute(images, target=labels, n_steps=25,
            ...                       internal_batch_size=256)
        """
        check_grad_mode("PatternGuidedIG")
        is_inputs_tuple, inputs_tuple = format_inputs(inputs)
        validate_target(target, inputs_tuple[0].shape[0])
        check_quadrature(method, n_steps)
        check_positive_int(internal_batch_size, "internal_batch_size", allow_none=True)
        formatted_inputs, formatted_baselines = _format_input_baseline(
            inputs_tuple, baselines
        )
        _validate_input_basic(formatted_inputs, formatted_baselines)
        starts, directions = straight_paths(formatted_inputs, formatted_baselines)
        layers, weights = self._backward_layers()
        with pattern_backward(self._model, layers, weights):
            attributions = integrate_gradients(
                self.gradient_func,
                self._checked_forward,
                starts,
                directions,
                n_steps,
                method,
                internal_batch_size,
                inputs_tuple[0].shape[0],
                target,
                _format_additional_forward_args(additional_forward_args),
                self._multiply_by_inputs,
                show_progress,
                "PatternGuidedIG",
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
