"""Loaders for scikit-learn's bundled real data sets, as standardised tensors."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import DataLoader, TensorDataset


@dataclass(frozen=True)
class DataSplit:
    """A seeded train/test split of a small real data set, as tensors.

    Attributes:
        x_train: Training inputs, ``(n_train, *feature_shape)``.
        y_train: Training targets (int64 class labels or float regression values).
        x_test: Test inputs, ``(n_test, *feature_shape)``.
        y_test: Test targets.
        mean: The statistic subtracted from the inputs (broadcastable to one
            example); zeros when not standardised.
        std: The statistic the inputs were divided by; ones when not standardised.
        feature_names: Names of the features (tabular data), or None.
        target_names: Names of the classes (classification), or None.
    """

    x_train: Tensor
    y_train: Tensor
    x_test: Tensor
    y_test: Tensor
    mean: Tensor
    std: Tensor
    feature_names: tuple[str, ...] | None = None
    target_names: tuple[str, ...] | None = None

    def unstandardize(self, x: Tensor) -> Tensor:
        """Map standardised inputs back to the data set's original scale."""
        return x * self.std.to(x) + self.mean.to(x)

    def train_loader(
        self, batch_size: int = 64, shuffle: bool = True, seed: int = 0
    ) -> DataLoader[tuple[Tensor, ...]]:
        """A DataLoader over the training split, reproducible through ``seed``."""
        generator = torch.Generator().manual_seed(seed)
        return DataLoader(
            TensorDataset(self.x_train, self.y_train),
            batch_size=batch_size,
            shuffle=shuffle,
            generator=generator,
        )

    def test_loader(self, batch_size: int = 256) -> DataLoader[tuple[Tensor, ...]]:
        """A DataLoader over the test split, in order."""
        return DataLoader(
            TensorDataset(self.x_test, self.y_test), batch_size=batch_size
        )


def _require_sklearn() -> Any:
    try:
        import sklearn.datasets as datasets
    except ImportError as err:  # pragma: no cover - exercised without the extra
        raise ImportError(
            "captum_ext.data needs scikit-learn for its bundled data sets: "
            "pip install 'captum-ext[data]'"
        ) from err
    return datasets


def _split_indices(
    n: int, test_size: float, seed: int, labels: Tensor | None
) -> tuple[Tensor, Tensor]:
    """Seeded (stratified when ``labels`` is given) train/test index split."""
    if not 0.0 < test_size < 1.0:
        raise ValueError(f"`test_size` must be in (0, 1), got {test_size!r}.")
    generator = torch.Generator().manual_seed(seed)
    if labels is None:
        perm = torch.randperm(n, generator=generator)
        n_test = max(1, round(n * test_size))
        return perm[n_test:].sort().values, perm[:n_test].sort().values
    train_parts, test_parts = [], []
    for c in labels.unique(sorted=True):
        idx = (labels == c).nonzero().squeeze(1)
        idx = idx[torch.randperm(idx.numel(), generator=generator)]
        n_test = max(1, round(idx.numel() * test_size))
        test_parts.append(idx[:n_test])
        train_parts.append(idx[n_test:])
    return torch.cat(train_parts).sort().values, torch.cat(test_parts).sort().values


def _make_split(
    x: Tensor,
    y: Tensor,
    *,
    test_size: float,
    seed: int,
    stratify: bool,
    standardize: bool,
    stat_dims: tuple[int, ...],
    feature_names: tuple[str, ...] | None = None,
    target_names: tuple[str, ...] | None = None,
) -> DataSplit:
    train_idx, test_idx = _split_indices(
        x.shape[0], test_size, seed, y if stratify else None
    )
    x_train, x_test = x[train_idx], x[test_idx]
    if standardize:
        mean = x_train.mean(dim=stat_dims, keepdim=True)[0]
        std = x_train.std(dim=stat_dims, keepdim=True)[0].clamp_min(1e-8)
    else:
        mean = torch.zeros_like(x_train[0])
        std = torch.ones_like(x_train[0])
    return DataSplit(
        x_train=(x_train - mean) / std,
        y_train=y[train_idx],
        x_test=(x_test - mean) / std,
        y_test=y[test_idx],
        mean=mean,
        std=std,
        feature_names=feature_names,
        target_names=target_names,
    )


def load_digits(
    test_size: float = 0.25,
    seed: int = 0,
    standardize: bool = True,
    dtype: torch.dtype = torch.float32,
) -> DataSplit:
    """Scikit-learn's bundled handwritten digits as ``1 x 8 x 8`` images.

    1797 grey-scale 8x8 digits (pixel values 0-16), ten classes. No download:
    the data ship inside scikit-learn. With ``standardize=True`` the images are
    standardised with the training split's single-channel mean and standard
    deviation, as the GxSI paper does per channel for CIFAR (so a zeroed pixel
    is the data mean, and ``sign(x)`` is relative to it).

    Args:
        test_size (float): Fraction of each class held out for testing.
        seed (int): Seed of the stratified split.
        standardize (bool): Standardise with training statistics.
        dtype (torch.dtype): Floating dtype of the images.

    Returns:
        DataSplit: images ``(n, 1, 8, 8)`` and int64 labels.

    Examples::

        >>> data = load_digits()
        >>> data.x_train.shape
        torch.Size([1347, 1, 8, 8])
    """
    datasets = _require_sklearn()
    raw = datasets.load_digits()
    x = torch.as_tensor(raw.images, dtype=dtype).unsqueeze(1)
    y = torch.as_tensor(raw.target, dtype=torch.int64)
    return _make_split(
        x,
        y,
        test_size=test_size,
        seed=seed,
        stratify=True,
        standardize=standardize,
        stat_dims=(0, 2, 3),
        target_names=tuple(str(t) for t in raw.target_names),
    )


def load_breast_cancer(
    test_size: float = 0.25,
    seed: int = 0,
    standardize: bool = True,
    dtype: torch.dtype = torch.float32,
) -> DataSplit:
    """Scikit-learn's bundled Wisconsin breast cancer set (binary classification).

    569 examples, 30 real-valued features, labels 0 (malignant) / 1 (benign).
    Features are standardised per feature with training statistics unless
    ``standardize=False``.

    Args:
        test_size (float): Fraction of each class held out for testing.
        seed (int): Seed of the stratified split.
        standardize (bool): Standardise each feature with training statistics.
        dtype (torch.dtype): Floating dtype of the features.

    Returns:
        DataSplit: features ``(n, 30)`` and int64 labels.

    Examples::

        >>> data = load_breast_cancer()
        >>> data.x_train.shape[1]
        30
    """
    datasets = _require_sklearn()
    raw = datasets.load_breast_cancer()
    x = torch.as_tensor(raw.data, dtype=dtype)
    y = torch.as_tensor(raw.target, dtype=torch.int64)
    return _make_split(
        x,
        y,
        test_size=test_size,
        seed=seed,
        stratify=True,
        standardize=standardize,
        stat_dims=(0,),
        feature_names=tuple(str(f) for f in raw.feature_names),
        target_names=tuple(str(t) for t in raw.target_names),
    )


def load_diabetes(
    test_size: float = 0.25,
    seed: int = 0,
    standardize: bool = True,
    raw_scale: bool = False,
    dtype: torch.dtype = torch.float32,
) -> DataSplit:
    """Scikit-learn's bundled diabetes set (regression).

    442 examples, 10 features, a real-valued disease-progression target
    (returned unscaled, float). Scikit-learn ships the features already
    mean-centred and scaled; ``raw_scale=True`` loads the original measurements
    instead (age in years, BMI, ...), whose means and variances are far from
    0 and 1, useful for checking scale-dependent penalties.

    Args:
        test_size (float): Fraction held out for testing.
        seed (int): Seed of the split.
        standardize (bool): Standardise each feature with training statistics.
        raw_scale (bool): Load the unscaled original measurements.
        dtype (torch.dtype): Floating dtype of features and target.

    Returns:
        DataSplit: features ``(n, 10)`` and float targets ``(n,)``.

    Examples::

        >>> data = load_diabetes(standardize=False, raw_scale=True)
        >>> float(data.x_train[:, 0].mean()) > 1.0  # age in years
        True
    """
    datasets = _require_sklearn()
    raw = datasets.load_diabetes(scaled=not raw_scale)
    x = torch.as_tensor(raw.data, dtype=dtype)
    y = torch.as_tensor(raw.target, dtype=dtype)
    return _make_split(
        x,
        y,
        test_size=test_size,
        seed=seed,
        stratify=False,
        standardize=standardize,
        stat_dims=(0,),
        feature_names=tuple(str(f) for f in raw.feature_names),
    )
