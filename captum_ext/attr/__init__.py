"""Attribution methods that extend :mod:`captum.attr`.

Every class subclasses :class:`captum.attr.GradientAttribution` (layer methods
also :class:`captum.attr.LayerAttribution`) and follows Captum's ``attribute``
conventions, so it can be used wherever a Captum method is used, including
inside :class:`captum.attr.NoiseTunnel` and :func:`captum.metrics.sensitivity_max`.
"""

from captum_ext.attr._core.distributional_ig import DistributionalIG
from captum_ext.attr._core.gradient_sign_input import GradientSignInput
from captum_ext.attr._core.layer.patch_conductance import (
    LayerPatchConductance,
    PatchConductance,
)
from captum_ext.attr._core.learned_mask import LearnedMask
from captum_ext.attr._core.pattern import (
    PatternAttribution,
    PatternGuidedIG,
    PatternNet,
    PatternSet,
    fit_patterns,
)
from captum_ext.attr._core.recursive_mask import RecursiveMaskAttribution
from captum_ext.attr._utils.pruning import neuron_ranking, prune_neurons, pruning_mask

__all__ = [
    "DistributionalIG",
    "GradientSignInput",
    "LayerPatchConductance",
    "LearnedMask",
    "PatchConductance",
    "PatternAttribution",
    "PatternGuidedIG",
    "PatternNet",
    "PatternSet",
    "RecursiveMaskAttribution",
    "fit_patterns",
    "neuron_ranking",
    "prune_neurons",
    "pruning_mask",
]
