"""Ablation-augmentation transforms (``torch.nn.Module``).

The ablated data augmentations of Liu, Najmi & Sundararajan, "Ablated Data
Augmentation as Regularization" (2020): they work on one sample (in a
Dataset's transform or in ``torchvision.transforms.v2.Compose``) and on whole
batches (e.g. ``train_model(..., transform=...)``), with an optional
``torch.Generator``. :mod:`captum_ext.transforms.linear` holds the closed forms
that least squares on such data converges to.
"""

from captum_ext.transforms import linear
from captum_ext.transforms._ablation import InvertedInputDropout, MeanAblation
from captum_ext.transforms._cutout import MeanCutout

__all__ = ["InvertedInputDropout", "MeanAblation", "MeanCutout", "linear"]
