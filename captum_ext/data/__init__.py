"""Small real data sets bundled through dependencies, and synthetic data.

Nothing here reaches the network: the real data sets ship inside
scikit-learn (the ``data`` extra), and synthetic data are generated.
"""

from captum_ext.data._synthetic import SignalDistractorData, signal_distractor_data
from captum_ext.data._tabular import (
    DataSplit,
    load_breast_cancer,
    load_diabetes,
    load_digits,
)
from captum_ext.data._training import accuracy, train_model

__all__ = [
    "DataSplit",
    "SignalDistractorData",
    "accuracy",
    "load_breast_cancer",
    "load_diabetes",
    "load_digits",
    "signal_distractor_data",
    "train_model",
]
