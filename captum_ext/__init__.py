"""captum-ext: extensions to Captum from recent interpretability papers.

Subpackages mirror Captum's layout:

- :mod:`captum_ext.attr`: attribution methods (``GradientAttribution`` subclasses).
- :mod:`captum_ext.metrics`: evaluation metrics in the style of :mod:`captum.metrics`.
- :mod:`captum_ext.transforms`: ablation-augmentation transforms.
- :mod:`captum_ext.models`: reference models used by the papers.
- :mod:`captum_ext.data`: small bundled real data sets and synthetic data.
"""

from captum_ext._version import __version__

__all__ = ["__version__"]
