"""Reference models: small CNNs for the bundled data, and the papers' models."""

from captum_ext.models._mlp import tabular_mlp
from captum_ext.models._small import digits_cnn

__all__ = ["digits_cnn", "tabular_mlp"]
