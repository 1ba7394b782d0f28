"""Evaluation metrics in the style of :mod:`captum.metrics`.

Functions take ``forward_func`` first, then ``inputs`` and the attributions (or
masks) to evaluate, run under ``torch.no_grad()``, return one value (or one
curve) per example, and give identical results with and without
``max_examples_per_batch``.
"""

__all__: list[str] = []

from captum_ext.metrics._masked_input_accuracy import (
    masked_input_accuracy,
    masked_input_accuracy_curve,
)

__all__ += ["masked_input_accuracy", "masked_input_accuracy_curve"]
