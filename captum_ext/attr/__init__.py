"""Attribution methods that extend :mod:`captum.attr`.

Every class subclasses :class:`captum.attr.GradientAttribution` (layer methods
also :class:`captum.attr.LayerAttribution`) and follows Captum's ``attribute``
conventions, so it can be used wherever a Captum method is used, including
inside :class:`captum.attr.NoiseTunnel` and :func:`captum.metrics.sensitivity_max`.
"""

from captum_ext.attr._core.gradient_sign_input import GradientSignInput
from captum_ext.attr._core.learned_mask import LearnedMask

__all__ = [
    "GradientSignInput",
    "LearnedMask",
]
