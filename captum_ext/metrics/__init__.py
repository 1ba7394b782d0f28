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
from captum_ext.metrics._evaluate import (
    EvaluationBatchError,
    EvaluationResult,
    evaluate_attributions,
)
from captum_ext.metrics._image_degradation import aopc, image_degradation
from captum_ext.metrics._masked_input_accuracy import (
    masked_input_accuracy,
    masked_input_accuracy_curve,
)
from captum_ext.metrics._penalties import (
    AblationPenalties,
    ablation_penalties,
    contribution_covariance_penalty,
    modified_l2_penalty,
)

__all__ = [
    "AblationPenalties",
    "CompletenessSoundness",
    "EvaluationBatchError",
    "EvaluationResult",
    "ablation_penalties",
    "aopc",
    "completeness",
    "contribution_covariance_penalty",
    "deletion_auc",
    "evaluate_attributions",
    "image_degradation",
    "insertion_auc",
    "masked_input_accuracy",
    "masked_input_accuracy_curve",
    "modified_l2_penalty",
    "saliency_auc",
    "soundness",
    "worst_case_completeness_soundness",
]
