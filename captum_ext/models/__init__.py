"""Reference models: small CNNs for the bundled data, and the papers' models."""

from captum_ext.models._mlp import tabular_mlp
from captum_ext.models._nib import NIBBatchNorm2d, is_positively_homogeneous, nib_vgg
from captum_ext.models._small import digits_cnn

__all__ = [
    "NIBBatchNorm2d",
    "digits_cnn",
    "is_positively_homogeneous",
    "nib_vgg",
    "tabular_mlp",
]
