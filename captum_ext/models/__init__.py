"""Reference models: small CNNs for the bundled data, and the papers' models."""

from captum_ext.models._batchnorm import fold_batchnorm
from captum_ext.models._mlp import tabular_mlp
from captum_ext.models._nib import NIBBatchNorm2d, is_positively_homogeneous, nib_vgg
from captum_ext.models._small import digits_cnn
from captum_ext.models._stress import pgig_stress_test
from captum_ext.models._vision import (
    TrainedVisionModel,
    digits_rgb,
    digits_vision_model,
    model_cache_dir,
)

__all__ = [
    "NIBBatchNorm2d",
    "TrainedVisionModel",
    "digits_cnn",
    "digits_rgb",
    "digits_vision_model",
    "fold_batchnorm",
    "is_positively_homogeneous",
    "model_cache_dir",
    "nib_vgg",
    "pgig_stress_test",
    "tabular_mlp",
]
