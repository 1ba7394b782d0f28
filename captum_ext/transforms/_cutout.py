"""Cutout with the data mean as the fill."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from captum_ext.transforms._base import (
    RandomTransform,
    check_input,
    check_mean,
    check_probability,
    randint,
    rewrap,
    split_batch,
    uniform,
)
from captum_ext.transforms._stats import data_mean


def _check_size(size: Any) -> tuple[int, ...]:
    values = size if isinstance(size, (tuple, list)) else (size,)
    if not 1 <= len(values) <= 2 or any(
        isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in values
    ):
        raise ValueError(
            "`size` must be a positive int or a pair (height, width) of positive "
            f"ints, got {size!r}."
        )
    return tuple(values)


def _check_size_fits(size: tuple[int, ...], spatial: tuple[int, ...]) -> None:
    """Refuse a region larger than the samples: it would replace every sample."""
    sides = size if len(size) == len(spatial) else size * len(spatial)
    if any(side > extent for side, extent in zip(sides, spatial)):
        raise ValueError(
            f"`size` {size!r} is larger than the samples' spatial size "
            f"{tuple(spatial)!r}; every region would cover the whole sample. Use "
            "a `size` no larger than the sample."
        )


class MeanCutout(RandomTransform):
    r"""Cutout: a random square of each sample replaced by the mean.

    Cutout (DeVries & Taylor 2017) ablates a contiguous region instead of
    independent features; it is one of the *ablated data augmentations*
    studied by Liu, Najmi & Sundararajan ("Ablated Data Augmentation as
    Regularization", 2020). Here the region is filled with ``mean`` (the data
    mean, as in mean ablation) rather than zero; pass a zero ``mean`` for the
    original cutout.

    For each sample, with probability ``p``, a centre :math:`(c_h, c_w)` is
    drawn uniformly over the spatial grid and the window

    .. math::

        [c_h - \lfloor s_h/2 \rfloor,\ c_h - \lfloor s_h/2 \rfloor + s_h)
        \times [c_w - \lfloor s_w/2 \rfloor,\ c_w - \lfloor s_w/2 \rfloor + s_w),

    clipped to the grid (so regions at the border are smaller, as in the
    original cutout), is replaced in every channel. The spatial dimensions are
    the last two of a sample; for one-dimensional samples (tabular rows or
    sequences) the region is a window of ``size`` consecutive features.

    **One sample or a batch** is recognised from ``mean`` exactly as in
    :class:`MeanAblation`: an input with as many dimensions as ``mean`` is one
    sample, one more dimension is a batch. All samples of a batch get their own
    region, drawn in one vectorised step. Generators in DataLoader workers are
    handled as described for :class:`MeanAblation`, and so are PIL images,
    integer tensors (the fill is ``mean`` rounded), tv_tensors and ``(image,
    label)`` samples.

    Args:
        size (int or tuple[int, int]): Side of the square, or ``(height,
            width)`` of the rectangle (one int for 1-D samples).
        mean (Tensor): The fill: shaped like one sample or broadcastable to it
            with size-1 dimensions (e.g. ``(C, 1, 1)``).
        p (float): Probability of cutting out a region from each sample, in
            [0, 1]. Default: 1 (always, as in the original cutout).
        generator (torch.Generator, optional): Source of randomness.

    Examples::

        >>> data = load_digits()
        >>> cutout = MeanCutout.from_data(data.x_train, size=4, reduce_dims=(1, 2))
        >>> cutout(data.x_train[:16]).shape
        torch.Size([16, 1, 8, 8])
    """

    mean: Tensor

    def __init__(
        self,
        size: int | tuple[int, int],
        mean: Tensor,
        p: float = 1.0,
        generator: torch.Generator | None = None,
    ) -> None:
        self.size = _check_size(size)
        self.p = check_probability(p, allow_one=True)
        checked = check_mean(mean)
        if checked.dim() == 1 and len(self.size) == 2:
            raise ValueError(
                "`size` must be one int for one-dimensional samples (the mean has "
                f"shape {tuple(checked.shape)}), got {size!r}."
            )
        spatial = tuple(checked.shape[-2:] if checked.dim() >= 2 else checked.shape)
        if all(extent > 1 for extent in spatial):  # a full-size mean: check now
            _check_size_fits(self.size, spatial)
        RandomTransform.__init__(self, generator)
        self.register_buffer("mean", checked)

    @classmethod
    def from_data(
        cls,
        data: Any,
        size: int | tuple[int, int],
        p: float = 1.0,
        generator: torch.Generator | None = None,
        reduce_dims: tuple[int, ...] = (),
        batch_size: int = 1024,
        show_progress: bool = False,
    ) -> MeanCutout:
        """Build the transform with the mean of ``data``, in one streaming pass.

        Args:
            data (Tensor, Dataset, DataLoader or iterable): As for
                :meth:`MeanAblation.from_data`.
            size (int or tuple[int, int]): Side (or height and width) of the region.
            p (float): Probability of a cutout per sample, in [0, 1].
            generator (torch.Generator, optional): Source of randomness.
            reduce_dims (tuple[int, ...]): Sample dimensions averaged over too
                (``(1, 2)``: per-channel mean of ``(C, H, W)`` images).
            batch_size (int): Rows per chunk when reading a tensor or Dataset.
            show_progress (bool): Show a progress bar over batches.

        Returns:
            MeanCutout: the transform.

        Examples::

            >>> cutout = MeanCutout.from_data(images, size=8, reduce_dims=(1, 2))
        """
        _check_size(size)
        check_probability(p, allow_one=True)
        mean = data_mean(data, reduce_dims, batch_size, show_progress)
        return cls(size, mean, p=p, generator=generator)

    def forward(self, x: Tensor) -> Tensor:
        """Cut a region out of one sample or out of each sample of a batch.

        Args:
            x (Tensor): One sample (shaped like ``mean``) or a batch of them.

        Returns:
            Tensor: a new tensor of the same shape and dtype (``x`` itself when
            ``p == 0``); ``x`` is never modified.
        """
        check_input(x, "MeanCutout")
        batched = split_batch(x, self.mean, "MeanCutout")
        if self.p == 0.0:
            return x
        xb = x if batched else x.unsqueeze(0)
        n = xb.shape[0]
        spatial = tuple(xb.shape[-2:]) if xb.dim() >= 3 else (xb.shape[-1],)
        _check_size_fits(self.size, spatial)
        sizes = self.size if len(self.size) == len(spatial) else self.size * 2
        generator = self._rng()
        keep_region = torch.ones(n, dtype=torch.bool, device=x.device)
        if self.p < 1.0:
            keep_region = uniform((n,), generator, x.device) < self.p
        region: Tensor | None = None
        for extent, side in zip(spatial, sizes):
            centre = randint(extent, (n,), generator, x.device)
            start = centre - side // 2
            pos = torch.arange(extent, device=x.device)
            inside = (pos >= start[:, None]) & (pos < (start + side)[:, None])
            if region is None:
                region = inside
            else:  # (n, H) x (n, W) -> (n, H, W)
                region = region[:, :, None] & inside[:, None, :]
        assert region is not None
        region = region & keep_region.view(n, *([1] * (region.dim() - 1)))
        shape = (n,) + (1,) * (xb.dim() - 1 - len(spatial)) + tuple(spatial)
        out = torch.where(region.view(shape), self.mean.to(xb), xb)
        out = out if batched else out.squeeze(0)
        return rewrap(out, x)

    def extra_repr(self) -> str:
        return f"size={self.size}, p={self.p}, mean_shape={tuple(self.mean.shape)}"
