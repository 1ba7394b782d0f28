"""Synthetic signal + distractor data of the PGIG paper (section 3)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class SignalDistractorData:
    """Two-dimensional inputs ``x = s + d`` with a known signal and distractor.

    Attributes:
        z: The target values on the grid, ``(n,)``.
        signal: ``s = (1, 0) z``, ``(n, 2)``: carries all information about z,
            in the first ("signal") dimension only.
        distractor: ``d = (1, 1) eps``, ``(n, 2)``: noise in both dimensions.
        x: The inputs ``s + d``, ``(n, 2)``; ``w = (1, -1)`` recovers z exactly
            (``w^T x = z``) by cancelling the distractor.
        y: The saturating target ``1 - ReLU(1 - z)`` (a plateau for z > 1).
    """

    z: Tensor
    signal: Tensor
    distractor: Tensor
    x: Tensor
    y: Tensor


def signal_distractor_data(
    noise_std: float = 0.3,
    step: float = 0.01,
    endpoint: bool = True,
    eps: Tensor | None = None,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float32,
) -> SignalDistractorData:
    r"""The stress-test data of Schwarzenberg & Castle, section 3 (fig. 2 b).

    Targets on the grid :math:`z = -2, -2 + \text{step}, \dots, 2`, signal
    :math:`s = (1, 0)^T z`, distractor :math:`d = (1, 1)^T \epsilon` with
    :math:`\epsilon \sim \mathcal{N}(0, \sigma^2)` drawn independently per
    point, inputs :math:`x = s + d`, and the saturating target
    :math:`y = 1 - \operatorname{ReLU}(1 - z)`. The second input dimension
    carries only noise; the model :math:`w = (1, -1)` recovers z by cancelling
    it, and its linear pattern is close to :math:`(1, 0)`.

    Args:
        noise_std (float): Standard deviation :math:`\sigma` of the distractor
            scale (0.3 in the paper's notebook).
        step (float): Grid step of z.
        endpoint (bool): Include z = 2 (the paper's grid, 401 points). The
            reference notebook used ``np.arange(-2, 2, 0.01)``, which stops at
            1.99 (400 points): pass False to reproduce it.
        eps (Tensor, optional): The distractor scales :math:`\epsilon`, one per
            grid point, instead of drawing them (e.g. to reproduce a draw of
            another random number generator). ``noise_std`` and ``generator``
            are then unused.
        generator (torch.Generator, optional): Source of the noise.
        dtype (torch.dtype): Floating dtype of the tensors.

    Returns:
        SignalDistractorData: z, signal, distractor, x and y.

    Examples::

        >>> data = signal_distractor_data(generator=torch.Generator().manual_seed(0))
        >>> data.x.shape
        torch.Size([401, 2])
        >>> torch.allclose(data.x[:, 0] - data.x[:, 1], data.z)
        True
    """
    if not step > 0:
        raise ValueError(f"`step` must be positive, got {step!r}.")
    if not noise_std >= 0:
        raise ValueError(f"`noise_std` must be non-negative, got {noise_std!r}.")
    n_steps = round(4.0 / step)
    if abs(n_steps * step - 4.0) > 1e-9:
        raise ValueError(f"`step` must divide the interval [-2, 2], got {step!r}.")
    n = n_steps + 1 if endpoint else n_steps
    z = -2.0 + step * torch.arange(n, dtype=torch.float64)
    if eps is None:
        noise = torch.randn(n, generator=generator, dtype=torch.float64) * noise_std
    else:
        if not isinstance(eps, Tensor) or eps.shape != (n,):
            raise ValueError(
                f"`eps` must be a tensor of shape ({n},) (one value per grid point)."
            )
        noise = eps.detach().to(torch.float64)
    signal = torch.stack([z, torch.zeros_like(z)], dim=1)
    distractor = torch.stack([noise, noise], dim=1)
    x = signal + distractor
    y = 1.0 - torch.relu(1.0 - z)
    return SignalDistractorData(
        z=z.to(dtype),
        signal=signal.to(dtype),
        distractor=distractor.to(dtype),
        x=x.to(dtype),
        y=y.to(dtype),
    )
