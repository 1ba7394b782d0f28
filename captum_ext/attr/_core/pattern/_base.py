"""Shared machinery of the pattern-based attribution classes."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from itertools import chain
from typing import Any, cast

import torch
from captum.attr import GradientAttribution
from torch import Tensor, nn
from torch.func import functional_call

from captum_ext._utils.gradient import check_one_output_per_example, forward_select
from captum_ext.attr._core.pattern._layers import (
    check_supported_model,
)
from captum_ext.attr._core.pattern._pattern_set import PatternSet

_SOFTMAX_TYPES = (nn.Softmax, nn.LogSoftmax, nn.Softmin, nn.Softmax2d)


def _looks_like_softmax(output: Tensor) -> bool:
    """Rows that are probability (or log-probability) vectors."""
    if output.dim() != 2 or output.shape[1] < 2 or output.numel() == 0:
        return False
    with torch.no_grad():
        out = output.detach().float()
        if bool((out >= 0).all()) and bool(
            torch.allclose(out.sum(1), torch.ones_like(out[:, 0]), atol=1e-4)
        ):
            return True
        if bool((out <= 0).all()) and bool(
            torch.allclose(
                torch.logsumexp(out, 1), torch.zeros_like(out[:, 0]), atol=1e-4
            )
        ):
            return True
    return False


class _PatternAttributionBase(GradientAttribution):
    """Validates model and patterns; runs forward passes with pattern backward."""

    #: BatchNorm backward rule: divide by the scale (PatternNet's ``A = 1/s``)
    #: or pass the gradient unchanged (``W * A = 1``).
    _divide_batchnorm_by_scale = False

    #: Floating dtype of the forward and backward passes (None: the inputs').
    _compute_dtype: torch.dtype | None = None

    #: How to avoid an overflow of the backward pass (for the warning).
    _overflow_hint = (
        "Refit them with a larger stabiliser, fit_patterns(..., eps=1e-2), or "
        "on more data."
    )

    def __init__(self, model: nn.Module, patterns: PatternSet) -> None:
        GradientAttribution.__init__(self, model)
        check_supported_model(model, type(self).__name__)
        if not isinstance(patterns, PatternSet):
            raise TypeError(
                "`patterns` must be a PatternSet (from fit_patterns or "
                f"PatternSet.load), got {type(patterns).__name__}."
            )
        patterns.check(model)
        bad = patterns.non_finite_layers()
        if bad:
            raise ValueError(
                f"`patterns` of {bad} hold NaN or infinite values; refit them "
                "(fit_patterns) on finite data."
            )
        self.patterns = patterns
        self._weight_cache: dict[str, tuple[Any, Tensor]] = {}
        self._softmax_warned = False
        last = list(model.modules())[-1]
        if isinstance(last, _SOFTMAX_TYPES):
            self._warn_softmax(f"`model` ends in {type(last).__name__}")

    def _warn_softmax(self, why: str) -> None:
        if self._softmax_warned:
            return
        self._softmax_warned = True
        warnings.warn(
            f"{type(self).__name__}: {why}. Pattern methods explain logits: the "
            "softmax must not be part of the explained graph (its backward mixes "
            "the classes). Explain the model without its final softmax.",
            UserWarning,
            stacklevel=3,
        )

    @property
    def _model(self) -> nn.Module:
        return cast(nn.Module, self.forward_func)

    def _backward_layers(self) -> tuple[dict[str, nn.Module], dict[str, Tensor]]:
        """The model's pattern layers and the matrices their backward uses."""
        layers = self.patterns.check(self._model)
        weights = {}
        for name, module in layers.items():
            w = cast(Tensor, module.weight)
            pattern = self.patterns[name]
            # reuse the substitute while weight and pattern are the same tensors
            # with the same contents (the version counter tracks in-place edits)
            key = (w.data_ptr(), w._version, w.dtype, w.device, id(pattern))
            cached = self._weight_cache.get(name)
            if cached is None or cached[0] != key:
                a = pattern.to(device=w.device, dtype=w.dtype)
                cached = (key, self._substitute(w.detach(), a))
                self._weight_cache[name] = cached
            weights[name] = cached[1]
        return layers, weights

    def _substitute(self, weight: Tensor, pattern: Tensor) -> Tensor:
        raise NotImplementedError

    def _warn_non_finite(
        self, attributions: tuple[Tensor, ...], inputs: tuple[Tensor, ...]
    ) -> None:
        """Warn when finite inputs gave non-finite attributions."""
        if all(bool(torch.isfinite(a).all()) for a in attributions):
            return
        if not all(bool(torch.isfinite(x).all()) for x in inputs):
            return
        warnings.warn(
            f"{type(self).__name__}: the attributions of finite `inputs` hold "
            "non-finite values (the backward pass overflowed): ill-conditioned "
            f"`patterns` multiply over the layers. {self._overflow_hint}",
            RuntimeWarning,
            stacklevel=3,
        )

    def _checked_forward(self, *args: Any) -> Any:
        """The model's forward pass; warns once if its outputs look like softmax."""
        return self._check_output(self.forward_func(*args))

    def _forward_in(self, dtype: torch.dtype) -> Callable[..., Any]:
        """The model's forward pass computed in ``dtype``.

        The model's floating-point parameters and buffers are replaced by
        ``dtype`` copies for the call (:func:`torch.func.functional_call`; the
        model's own tensors are neither cast nor modified), and floating-point
        tensor arguments are cast to ``dtype``. Hooks on the model's modules,
        the pattern backward rules among them, act as usual.
        """
        model = self._model
        state = {
            name: t.detach().to(dtype)
            for name, t in chain(model.named_parameters(), model.named_buffers())
            if t.is_floating_point()
        }

        def forward(*args: Any) -> Any:
            cast_args = tuple(
                a.to(dtype) if isinstance(a, Tensor) and a.is_floating_point() else a
                for a in args
            )
            return self._check_output(functional_call(model, state, cast_args))

        return forward

    def _check_output(self, output: Any) -> Any:
        """``output``, after a warning (once) if it looks like softmax rows."""
        if (
            not self._softmax_warned
            and isinstance(output, Tensor)
            and _looks_like_softmax(output)
        ):
            self._warn_softmax("the model's outputs look like softmax probabilities")
        return output

    def _forward_select(
        self,
        inputs: tuple[Tensor, ...],
        target: Any,
        additional_forward_args: Any,
    ) -> Tensor:
        """Run the model (pattern hooks active) and select the target output."""
        forward = (
            self._checked_forward
            if self._compute_dtype is None
            else self._forward_in(self._compute_dtype)
        )
        selected = forward_select(forward, inputs, target, additional_forward_args)
        check_one_output_per_example(selected)
        return selected.reshape(selected.shape[0])

    def attribute_future(self) -> None:
        """Not implemented: pattern attributions are computed synchronously."""
        raise NotImplementedError(
            f"attribute_future is not implemented for {type(self).__name__}"
        )
