"""Evaluation metrics in the style of :mod:`captum.metrics`.

Functions take ``forward_func`` first, then ``inputs`` and the attributions (or
masks) to evaluate, run under ``torch.no_grad()``, return one value (or one
curve) per example, and give identical results with and without
``max_examples_per_batch``.
"""

from captum_ext.metrics._complete_sound import (
    CompletenessSoundness,
    completeness,
    saliency_auc,
    soundness,
    worst_case_completeness_soundness,
)
from captum_ext.metrics._deletion_insertion import deletion_auc, insertion_auc

__all__: list[str] = []
__all__ += [
    "CompletenessSoundness",
    "completeness",
    "deletion_auc",
    "insertion_auc",
    "saliency_auc",
    "soundness",
    "worst_case_completeness_soundness",
]
