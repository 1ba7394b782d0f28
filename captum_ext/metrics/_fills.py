"""Replacement values ("fills") for perturbation metrics on images.

Each helper maps an image batch ``(bsz, C, H, W)`` to a tensor of the same
shape holding, at every pixel, the value that pixel takes once it is replaced.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor


def region_means(x: Tensor, region_map: Tensor, n_regions: int) -> Tensor:
    """Per-example, per-channel mean of ``x`` over each region, at every pixel.

    Args:
        x: Images ``(bsz, C, H, W)``.
        region_map: ``(H, W)`` long, the region id of every pixel.
        n_regions: Number of regions (ids are ``0 .. n_regions - 1``).

    Returns:
        Tensor: ``(bsz, C, H, W)``; pixel ``(h, w)`` of channel ``c`` holds the
        mean of channel ``c`` of ``x`` over the region of ``(h, w)``.
    """
    bsz, channels = x.shape[:2]
    flat = x.reshape(bsz, channels, -1)
    index = region_map.to(x.device).reshape(1, 1, -1).expand_as(flat)
    sums = torch.zeros(bsz, channels, n_regions, dtype=x.dtype, device=x.device)
    sums.scatter_add_(2, index, flat)
    counts = torch.bincount(region_map.reshape(-1), minlength=n_regions)
    means = sums / counts.to(device=x.device, dtype=x.dtype)
    return means.gather(2, index).reshape(x.shape)


def gaussian_kernel1d(sigma: float, dtype: torch.dtype, device: torch.device) -> Tensor:
    """Normalised 1-D Gaussian of standard deviation ``sigma``, radius ceil(3 sigma)."""
    radius = max(1, math.ceil(3.0 * sigma))
    t = torch.arange(-radius, radius + 1, dtype=torch.float64)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    return (k / k.sum()).to(device=device, dtype=dtype)


def gaussian_blur(x: Tensor, sigma: float) -> Tensor:
    """Separable Gaussian blur of every channel, replicate padding at the borders.

    Args:
        x: Images ``(bsz, C, H, W)`` (floating point).
        sigma: Standard deviation in pixels, positive; the kernel has radius
            ``ceil(3 sigma)``.

    Returns:
        Tensor: the blurred images, same shape and dtype.
    """
    if not sigma > 0:
        raise ValueError(f"`blur_sigma` must be positive, got {sigma!r}.")
    bsz, channels, height, width = x.shape
    k = gaussian_kernel1d(sigma, x.dtype, x.device)
    r = (k.numel() - 1) // 2
    y = x.reshape(bsz * channels, 1, height, width)
    y = F.conv2d(F.pad(y, (r, r, 0, 0), mode="replicate"), k.view(1, 1, 1, -1))
    y = F.conv2d(F.pad(y, (0, 0, r, r), mode="replicate"), k.view(1, 1, -1, 1))
    return y.reshape(x.shape)
