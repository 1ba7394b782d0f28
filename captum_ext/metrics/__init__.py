"""Evaluation metrics in the style of :mod:`captum.metrics`.

Functions take ``forward_func`` first, then ``inputs`` and the attributions (or
masks) to evaluate, run under ``torch.no_grad()``, return one value (or one
curve) per example, and give identical results with and without
``max_examples_per_batch``.
"""

from captum_ext.metrics import axioms as axioms
from captum_ext.metrics._complete_sound import (
    CompletenessSoundness,
    completeness,
    saliency_auc,
    soundness,
    worst_case_completeness_soundness,
)
from captum_ext.metrics._deletion_insertion import deletion_auc, insertion_auc
from captum_ext.metrics._evaluate import EvaluationResult, evaluate_attributions
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
from captum_ext.metrics.axioms import (
    AxiomReport,
    AxiomResult,
    PerModel,
    axiom_report,
    completeness_violation,
    dummy_violation,
    equivalent_model,
    ig_lipschitz_bound,
    implementation_invariance_violation,
    linearity_violation,
    local_lipschitz,
    ndp_violation,
    passes,
    plot_axiom_report,
    sensitivity_violation,
    symmetry_violation,
)

__all__ = [
    "AblationPenalties",
    "AxiomReport",
    "AxiomResult",
    "CompletenessSoundness",
    "EvaluationResult",
    "PerModel",
    "ablation_penalties",
    "aopc",
    "axiom_report",
    "completeness",
    "completeness_violation",
    "contribution_covariance_penalty",
    "deletion_auc",
    "dummy_violation",
    "equivalent_model",
    "evaluate_attributions",
    "ig_lipschitz_bound",
    "image_degradation",
    "implementation_invariance_violation",
    "insertion_auc",
    "linearity_violation",
    "local_lipschitz",
    "masked_input_accuracy",
    "masked_input_accuracy_curve",
    "modified_l2_penalty",
    "ndp_violation",
    "passes",
    "plot_axiom_report",
    "saliency_auc",
    "sensitivity_violation",
    "soundness",
    "symmetry_violation",
    "worst_case_completeness_soundness",
]
