"""PatternNet, PatternAttribution and Pattern-Guided IG, with pattern fitting."""

from captum_ext.attr._core.pattern._fit import fit_patterns
from captum_ext.attr._core.pattern._pattern_set import PatternSet
from captum_ext.attr._core.pattern.pattern_attribution import (
    PatternAttribution,
    PatternNet,
)
from captum_ext.attr._core.pattern.pattern_guided_ig import PatternGuidedIG

__all__ = [
    "PatternAttribution",
    "PatternGuidedIG",
    "PatternNet",
    "PatternSet",
    "fit_patterns",
]
