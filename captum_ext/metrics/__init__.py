"""Evaluation metrics in the style of :mod:`captum.metrics`.

Functions take ``forward_func`` first, then ``inputs`` and the attributions (or
masks) to evaluate, run under ``torch.no_grad()``, return one value (or one
curve) per example, and give identical results with and without
``max_examples_per_batch``.

Conventions of the perturbation metrics (curves, AUCs, masked accuracy):

- ``target`` and ``additional_forward_args`` mean what they mean in Captum.
  ``target`` indexes the score of each example in the output of
  ``probability_fn`` (a softmax over dimension 1 by default); a negative
  int counts from the end, and negative entries of per-example tensor or
  list targets are refused (as in every attribution class).
  ``target=None`` takes that output whole, so it must be one score per
  example (e.g. ``probability_fn=lambda out:
  out.softmax(1)[:, 3]``); with the default softmax a ``target`` is
  required, and its absence is refused before any forward pass. For the
  predicted class pass ``target=forward_func(inputs).argmax(1)``. Every
  tensor in ``additional_forward_args`` with a dimension is per-example and
  follows its example through the perturbations.
- One fill vocabulary, ``fill=``: ``"zero"``, ``"mean"`` (per example and
  channel), ``"blur"`` (a Gaussian blur of standard deviation
  ``blur_sigma`` pixels), ``"patch_mean"`` (image degradation's patches), a
  finite number, a tensor broadcastable to the input, a callable mapping the
  input to such a tensor, or a tuple with one of these per input tensor.
- ``max_examples_per_batch``: a positive int, None (every perturbed input in
  one forward pass, as in Captum) or ``"auto"`` (the default: at most 2**21
  input elements, e.g. 13 images of 3 x 224 x 224, per forward pass), which
  bounds memory without changing the result. ``show_progress=True`` shows a
  progress bar over the perturbed inputs of the curve metrics.
- An empty batch, NaN or infinite attributions, masks or fills are refused
  with a ValueError naming the argument; a model that returns non-finite
  scores gives a RuntimeWarning.
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
    "EvaluationBatchError",
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
