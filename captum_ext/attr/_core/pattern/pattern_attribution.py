"""PatternNet and PatternAttribution (Kindermans et al., 2018)."""

from __future__ import annotations

from typing import Any, cast

import torch
from captum._utils.common import _format_output
from captum._utils.typing import TargetType, TensorOrTupleOfTensorsGeneric
from captum.log import log_usage
from torch import Tensor, nn

from captum_ext._utils.model_state import preserves_model_state
from captum_ext._utils.validation import format_inputs, validate_target
from captum_ext.attr._core.pattern._backward import pattern_backward
from captum_ext.attr._core.pattern._base import _PatternAttributionBase
from captum_ext.attr._core.pattern._pattern_set import PatternSet


class _StartFromOutput(_PatternAttributionBase):
    """Backward from the target output's value through the substituted layers."""

    @log_usage(part_of_slo=True)
    @preserves_model_state
    def attribute(
        self,
        inputs: TensorOrTupleOfTensorsGeneric,
        target: TargetType = None,
        additional_forward_args: Any = None,
    ) -> TensorOrTupleOfTensorsGeneric:
        r"""Backpropagate the target output's value with the pattern rules.

        Args:
            inputs (Tensor or tuple[Tensor, ...]): Input for which attributions
                are computed. Dimension 0 of every tensor indexes examples; a
                tuple is passed to the model as separate arguments.
            target (int, tuple, Tensor, or list, optional): Output indices to
                explain, with Captum's ``TargetType`` semantics (one index for
                all examples, or one per example). Default: None (the model
                returns a scalar per example).
            additional_forward_args (Any, optional): Extra arguments passed to
                the model after the inputs; no attributions are computed for
                them. Default: None.

        Returns:
            Tensor or tuple[Tensor, ...]: the attributions, with the structure
            and shapes of ``inputs`` (and their dtype, unless PatternNet's
            ``compute_dtype`` is set: then in ``compute_dtype``).

        Examples::

            >>> patterns = fit_patterns(model, train_loader)
            >>> attr = PatternAttribution(model, patterns).attribute(
            ...     images, target=labels)
        """
        is_inputs_tuple, inputs_tuple = format_inputs(inputs)
        validate_target(target, inputs_tuple[0].shape[0])
        layers, weights = self._backward_layers()
        dtype = self._compute_dtype
        leaves = tuple(
            (x if dtype is None or not x.is_floating_point() else x.to(dtype))
            .detach()
            .requires_grad_(True)
            for x in inputs_tuple
        )
        with (
            torch.enable_grad(),
            pattern_backward(
                self._model, layers, weights, self._divide_batchnorm_by_scale
            ),
        ):
            selected = self._forward_select(leaves, target, additional_forward_args)
            grads = torch.autograd.grad(
                selected,
                leaves,
                grad_outputs=selected.detach(),
                allow_unused=True,
            )
        attributions = tuple(
            torch.zeros_like(x) if g is None else g.detach()
            for x, g in zip(leaves, grads)
        )
        self._warn_non_finite(attributions, inputs_tuple)
        return cast(
            TensorOrTupleOfTensorsGeneric,
            _format_output(is_inputs_tuple, attributions),
        )

    @property
    def multiplies_by_inputs(self) -> bool:
        """False: the result is a (modified) gradient, not multiplied by x."""
        return False


class PatternNet(_StartFromOutput):
    r"""PatternNet: the signal estimator of Kindermans et al. (2018).

    *Learning how to explain neural networks: PatternNet and
    PatternAttribution* (ICLR 2018); eq. 2-3 of Schwarzenberg & Castle,
    *Pattern-Guided Integrated Gradients*. The backward pass from the target
    output replaces every layer's weights :math:`W` by its pattern :math:`A`
    (fitted with :func:`fit_patterns`):

    .. math::

        s = y_c \, \frac{\partial^{(A)} f_c(x)}{\partial^{(A)} x},
        \qquad \text{layer rule: } \; g_{\text{in}} = A^T g_{\text{out}},

    where :math:`\partial^{(A)}` is the backward pass with that rule, ReLU
    gating and max-pool routing are those of the forward pass, biases are
    ignored and the backward starts from the explained logit's value
    :math:`y_c` (as in the original method): the result estimates the *signal*
    component of the input, in input units (for one linear layer,
    :math:`s = a\,y`). It is not multiplied by the input.

    The rules are applied with forward hooks that swap each ``nn.Linear`` /
    ``nn.Conv1d/2d/3d``'s backward (the weights are never modified; hooks are
    removed in ``finally``). BatchNorm, gated activations (SiLU, Hardswish,
    GELU) and SqueezeExcitation gates get the rules listed in
    ``docs/patterns.md``; every other operation, including functional
    activations in custom ``forward`` methods, keeps its ordinary gradient.
    Finite inputs with non-finite attributions give a warning.
    The model must not end in a softmax (a warning is issued): explain logits.

    **Deep networks.** Since :math:`w_j^T a_j = 1`, every unit's backward
    :math:`a_j w_j^T` is an oblique projection of norm
    :math:`1 / \cos\theta_j \ge 1`, so the signal grows with depth (a product
    over the layers): on the trained ResNet-18 of
    :func:`~captum_ext.models.digits_vision_model` it reaches
    :math:`1.9 \times 10^{39}` with ``kind="relu"`` patterns, beyond float32's
    :math:`3.4 \times 10^{38}` (:math:`5 \times 10^{32}` with the default
    ``kind="auto"``).
    Given the forward pass's gates, the backward is linear in its start value,
    so computing it in float64 (``compute_dtype=torch.float64``) gives the
    signal without overflow; see ``docs/patterns.md``.

    Args:
        model (nn.Module): The model, in eval mode. Eval-mode BatchNorm is
            handled as the per-channel affine map it is (no folding needed);
            attention, LayerNorm and other layers outside the pattern theory
            are refused here, naming the module.
        patterns (PatternSet): Patterns of every ``nn.Linear`` /
            ``nn.Conv1d/2d/3d`` of ``model`` (:func:`fit_patterns`).
        compute_dtype (torch.dtype, optional): Floating-point dtype of the
            forward and backward passes **and of the returned signal**. The
            model's floating-point parameters and buffers are replaced by
            copies in this dtype for the call (the model itself is not cast),
            and floating-point inputs and tensor ``additional_forward_args``
            are cast to it. ``torch.float64`` keeps the signal of deep
            networks finite (float64 reaches :math:`1.8 \times 10^{308}`).
            Default: None (the inputs' dtype, the model as it is).

    Examples::

        >>> patterns = fit_patterns(model, train_loader)
        >>> signal = PatternNet(model, patterns).attribute(images, target=labels)
        >>> # a deep network: the signal exceeds float32's range
        >>> deep = PatternNet(resnet, resnet_patterns, compute_dtype=torch.float64)
        >>> signal = deep.attribute(images, target=labels)  # float64
    """

    _divide_batchnorm_by_scale = True
    _overflow_hint = (
        "PatternNet's signal grows with depth: compute it in float64, "
        "PatternNet(..., compute_dtype=torch.float64), or refit the patterns "
        "with a larger stabiliser, fit_patterns(..., eps=1e-2)."
    )

    def __init__(
        self,
        model: nn.Module,
        patterns: PatternSet,
        compute_dtype: torch.dtype | None = None,
    ) -> None:
        """Takes ``model`` and ``patterns`` (see above), not a ``forward_func``."""
        if compute_dtype is not None and (
            not isinstance(compute_dtype, torch.dtype)
            or not compute_dtype.is_floating_point
        ):
            raise TypeError(
                "`compute_dtype` must be None or a floating-point torch.dtype "
                f"(e.g. torch.float64), got {compute_dtype!r}."
            )
        _PatternAttributionBase.__init__(self, model, patterns)
        self._compute_dtype = compute_dtype

    def _substitute(self, weight: Tensor, pattern: Tensor) -> Tensor:
        return pattern


class PatternAttribution(_StartFromOutput):
    r"""PatternAttribution (Kindermans et al., 2018).

    *Learning how to explain neural networks: PatternNet and
    PatternAttribution* (ICLR 2018); eq. 3 of Schwarzenberg & Castle,
    *Pattern-Guided Integrated Gradients*. The gradient backward pass with every
    layer's weights :math:`W` replaced by :math:`W \odot A`, the element-wise
    product with its pattern (fitted with :func:`fit_patterns`):

    .. math::

        \phi^{PA}_{f,i}(x) = y_c \, \frac{\partial^{(p)} f_c(x)}{\partial^{(p)} x_i},
        \qquad \text{layer rule: } \; g_{\text{in}} = (W \odot A)^T g_{\text{out}}.

    ReLU gating and max-pool routing come from the forward pass and biases are
    ignored. As in the original method (and the PGIG paper's fig. 2), the
    backward pass **starts from the target output's value** :math:`y_c`, not
    from 1: the attribution scales with the logit, and is zero when it is zero.
    The result is not multiplied by the input. Weights that mostly cancel
    distractors get small :math:`A`, so PatternAttribution attributes to the
    signal rather than the noise (Kindermans et al.), but, like the gradient,
    it is zero at saturated plateaus (see :class:`PatternGuidedIG`).

    The rules are applied with forward hooks that swap each ``nn.Linear`` /
    ``nn.Conv1d/2d/3d``'s backward (the weights are never modified; hooks are
    removed in ``finally``). BatchNorm, gated activations (SiLU, Hardswish,
    GELU) and SqueezeExcitation gates get the rules listed in
    ``docs/patterns.md``; every other operation, including functional
    activations in custom ``forward`` methods, keeps its ordinary gradient.
    Finite inputs with non-finite attributions give a warning.
    The model must not end in a softmax (a warning is issued): explain logits.

    Args:
        model (nn.Module): The model, in eval mode. Eval-mode BatchNorm is
            handled as the per-channel affine map it is (no folding needed);
            attention, LayerNorm and other layers outside the pattern theory
            are refused here, naming the module.
        patterns (PatternSet): Patterns of every ``nn.Linear`` /
            ``nn.Conv1d/2d/3d`` of ``model`` (:func:`fit_patterns`).

    Examples::

        >>> patterns = fit_patterns(model, train_loader)
        >>> pa = PatternAttribution(model, patterns)
        >>> attr = pa.attribute(images, target=labels)
    """

    def __init__(self, model: nn.Module, patterns: PatternSet) -> None:
        """Takes ``model`` and ``patterns`` (see above), not a ``forward_func``."""
        _PatternAttributionBase.__init__(self, model, patterns)

    def _substitute(self, weight: Tensor, pattern: Tensor) -> Tensor:
        return weight * pattern
