"""Feature-wise ablation transforms: mean ablation and inverted input dropout."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from captum_ext.transforms._base import (
    RandomTransform,
    check_input,
    check_mean,
    check_probability,
    rewrap,
    split_batch,
    uniform,
)
from captum_ext.transforms._stats import data_mean


class MeanAblation(RandomTransform):
    r"""Mean-ablated data augmentation: features replaced by their mean.

    Each feature of each sample is independently replaced by its data-set mean
    with probability ``p`` (Liu, Najmi & Sundararajan, "Ablated Data Augmentation
    as Regularization", 2020, section 2.1):

    .. math::

        \tilde x_{ij} = \begin{cases} \bar x_j & \text{with probability } p \\
        x_{ij} & \text{otherwise.} \end{cases}

    For a linear model fitted by least squares, training on such data converges
    (as the augmented set grows) to least squares plus ``p`` times the
    Contribution Covariance Penalty (theorem 1; closed form
    :func:`captum_ext.transforms.linear.ccp_regression`):

    .. math::

        \hat\beta = \big((1-p)\,\underline X^\top \underline X + n p V\big)^{-1}
        \underline X^\top \underline y .

    **One sample or a batch.** The transform compares the input with
    ``mean``: an input with as many dimensions as ``mean`` is one sample, an
    input with one more is a batch whose first dimension indexes samples. So
    give ``mean`` the shape of one sample, or a shape that broadcasts to it
    with size-1 dimensions (e.g. ``(C, 1, 1)`` for a per-channel image mean);
    a 0-d mean is refused because it cannot tell the two apart.

    **Inside torchvision v2 pipelines.** Calling the transform behaves like a
    ``torchvision.transforms.v2`` transform (torchvision is not needed): it
    takes PIL images, tv_tensors ``Image`` / ``Video`` (type kept) and
    integer tensors as well as floating ones, alone or inside ``(image,
    label, ...)`` tuples, lists and dicts, and passes everything else
    (labels, ``BoundingBoxes``, ``Mask``) through unchanged. Integer images
    (``uint8`` in 0-255, PIL images) are transformed in floating point, then
    rounded to the nearest integer and clamped to the dtype's range, so
    ``mean`` must be on the 0-255 scale (:meth:`from_data` on such images
    gives it). ``__call__`` below states the rules.

    **Randomness.** One uniform draw per element, from ``generator`` when
    given (else the global RNG), in one vectorised ``torch.where``; the same
    generator state gives the same mask whatever the input's dtype. The
    transform is applied whenever it is called (like torchvision's random
    transforms, it ignores ``training``). Inside DataLoader workers, prefer
    ``generator=None``: PyTorch seeds each worker's global RNG with
    ``base_seed + worker_id``, so a DataLoader built with a seeded
    ``generator`` is reproducible and its workers draw different masks. If a
    generator is given, each worker's copy of it (copied with its state, so
    identical in every worker) is re-seeded from the worker's seed on first
    use, which gives the same guarantees.

    Args:
        p (float): Probability of ablating each feature, in [0, 1).
        mean (Tensor): The replacement value: the data-set mean of each feature,
            shaped like one sample or broadcastable to it (see above). Stored
            as a buffer (moves with ``.to(device)``).
        generator (torch.Generator, optional): Source of randomness.

    Examples::

        >>> data = load_breast_cancer()
        >>> ablate = MeanAblation.from_data(data.x_train, p=0.25)
        >>> ablate(data.x_train[:8]).shape  # a batch
        torch.Size([8, 30])
        >>> ablate(data.x_train[0]).shape  # one sample
        torch.Size([30])
        >>> train_model(model, data.x_train, data.y_train, transform=ablate)
    """

    mean: Tensor

    def __init__(
        self, p: float, mean: Tensor, generator: torch.Generator | None = None
    ) -> None:
        self.p = check_probability(p)
        checked = check_mean(mean)
        RandomTransform.__init__(self, generator)
        self.register_buffer("mean", checked)

    @classmethod
    def from_data(
        cls,
        data: Any,
        p: float,
        generator: torch.Generator | None = None,
        reduce_dims: tuple[int, ...] = (),
        batch_size: int = 1024,
        show_progress: bool = False,
    ) -> MeanAblation:
        """Build the transform with the mean of ``data``, in one streaming pass.

        Args:
            data (Tensor, Dataset, DataLoader or iterable): The inputs: a tensor
                ``(n, *sample_shape)``; a Dataset whose items are inputs or
                ``(input, ...)`` tuples (read in batches of ``batch_size``;
                PIL images are read as ``uint8`` tensors ``(C, H, W)`` in 0-255,
                tv_tensors as plain tensors); a
                DataLoader (or any iterable) yielding such batches. Only one
                batch is in memory at a time; sums are accumulated in float64.
            p (float): Probability of ablating each feature, in [0, 1).
            generator (torch.Generator, optional): Source of randomness.
            reduce_dims (tuple[int, ...]): Dimensions of one sample (0 is the
                first non-batch dimension) to average over as well, kept with
                size 1: ``(1, 2)`` gives a per-channel mean ``(C, 1, 1)`` for
                ``(C, H, W)`` images. Default: ``()`` (a mean per feature).
            batch_size (int): Rows per chunk when reading a tensor or Dataset.
            show_progress (bool): Show a progress bar over batches.

        Returns:
            MeanAblation: the transform, with ``mean`` in the data's dtype.

        Examples::

            >>> ablate = MeanAblation.from_data(train_loader, p=0.1)
            >>> per_channel = MeanAblation.from_data(images, 0.1, reduce_dims=(1, 2))
        """
        check_probability(p)
        mean = data_mean(data, reduce_dims, batch_size, show_progress)
        return cls(p, mean, generator=generator)

    def forward(self, x: Tensor) -> Tensor:
        """Ablate features of one sample or of a batch.

        Args:
            x (Tensor): One sample (shaped like ``mean``) or a batch of them.

        Returns:
            Tensor: a new tensor of the same shape and dtype (``x`` itself when
            ``p == 0``); ``x`` is never modified.
        """
        check_input(x, "MeanAblation")
        split_batch(x, self.mean, "MeanAblation")
        if self.p == 0.0:
            return x
        draws = uniform(tuple(x.shape), self._rng(), x.device)
        out = torch.where(draws < self.p, self.mean.to(x), x)
        return rewrap(out, x)

    def extra_repr(self) -> str:
        return f"p={self.p}, mean_shape={tuple(self.mean.shape)}"


class InvertedInputDropout(RandomTransform):
    r"""Inverted input dropout: features zeroed, survivors scaled up.

    Each feature is independently set to zero with probability ``p`` and the
    surviving features are divided by ``1 - p``, so each feature keeps its
    expected value (Liu, Najmi & Sundararajan, "Ablated Data Augmentation as
    Regularization", 2020, section 2.1):

    .. math::

        \tilde x_{ij} = \begin{cases} 0 & \text{with probability } p \\
        x_{ij} / (1 - p) & \text{otherwise.} \end{cases}

    For a linear model fitted by least squares, training on such data converges
    to least squares plus a Modified L2 penalty on the coefficients
    (theorem 2; closed form
    :func:`captum_ext.transforms.linear.modified_l2_regression`):

    .. math::

        \hat\beta = \Big(\underline X^\top \underline X
        + \frac{n p}{1 - p} D\Big)^{-1} \underline X^\top \underline y,
        \qquad D = \operatorname{diag}(v_j + \mu_j^2).

    The transform is element-wise, so any shape works (one sample or a batch,
    tabular or images). It is the functional twin of ``torch.nn.Dropout``
    applied to the inputs, with an optional ``generator`` and applied whenever
    it is called (it ignores ``training``, like torchvision's random
    transforms). One uniform draw per element, the same draws as
    :class:`MeanAblation` for the same generator state. Generators in
    DataLoader workers are handled as described for :class:`MeanAblation`, and
    so are PIL images, integer tensors, tv_tensors and ``(image, label)``
    samples; for integer images the scaled survivors are rounded and clamped
    (a ``uint8`` pixel above ``255 (1 - p)`` saturates at 255, so the
    expectation is kept only below it: convert to float first where that
    matters).

    Args:
        p (float): Probability of zeroing each feature, in [0, 1).
        generator (torch.Generator, optional): Source of randomness.

    Examples::

        >>> generator = torch.Generator().manual_seed(0)
        >>> dropout = InvertedInputDropout(0.2, generator=generator)
        >>> x = torch.ones(4, 5)
        >>> dropout(x)  # entries are 0 or 1.25
        >>> train_model(model, data.x_train, data.y_train, transform=dropout)
    """

    def __init__(self, p: float, generator: torch.Generator | None = None) -> None:
        self.p = check_probability(p)
        RandomTransform.__init__(self, generator)

    def forward(self, x: Tensor) -> Tensor:
        """Drop features of one sample or of a batch (any shape).

        Args:
            x (Tensor): A floating-point tensor.

        Returns:
            Tensor: a new tensor of the same shape and dtype (``x`` itself when
            ``p == 0``); ``x`` is never modified.
        """
        check_input(x, "InvertedInputDropout")
        if self.p == 0.0:
            return x
        draws = uniform(tuple(x.shape), self._rng(), x.device)
        out = torch.where(draws < self.p, torch.zeros_like(x), x / (1.0 - self.p))
        return rewrap(out, x)

    def extra_repr(self) -> str:
        return f"p={self.p}"
