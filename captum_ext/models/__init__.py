"""Reference models: small CNNs for the bundled data, and the papers' models."""

from captum_ext.models._batchnorm import fold_batchnorm
from captum_ext.models._small import digits_cnn
from captum_ext.models._stress import pgig_stress_test

__all__ = ["digits_cnn", "fold_batchnorm", "pgig_stress_test"]
