"""The PGIG paper's stress-test network (section 3, fig. 2 c)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from captum_ext.data._synthetic import signal_distractor_data


def pgig_stress_test(
    seed: int = 42, noise_std: float = 0.3, dtype: torch.dtype = torch.float32
) -> tuple[nn.Sequential, Tensor, Tensor]:
    r"""The combined plateau + distractor stress test of the PGIG paper.

    Schwarzenberg & Castle, *Pattern-Guided Integrated Gradients*, section 3:
    the network :math:`f(x) = f^{(2)}(\rho(f^{(1)}(x)))` with dense layers
    :math:`f^{(1)}(x) = -w^T x + 1`, :math:`w = (1, -1)^T`, and
    :math:`f^{(2)}(h) = -h + 1`, i.e.

    .. math::

        f(x) = 1 - \operatorname{ReLU}(1 - w^T x),

    which cancels the distractor (:math:`w^T d = 0`) and reaches a non-zero
    plateau for :math:`z = w^T x > 1` (fig. 2 a, c); with inputs
    :math:`x = (1, 0)^T z + (1, 1)^T \epsilon` on the grid
    :math:`z = -2, -1.99, \dots, 2` (fig. 2 b, see
    :func:`captum_ext.data.signal_distractor_data`).

    Args:
        seed (int): Seed of the distractor noise (a ``torch.Generator``).
        noise_std (float): Standard deviation of the distractor scale.
        dtype (torch.dtype): Floating dtype of model and data.

    Returns:
        tuple: ``(model, inputs, z)``: the network (``nn.Sequential`` of
        ``Linear(2, 1)``, ``ReLU``, ``Linear(1, 1)``, in eval mode, output
        ``(n, 1)``: explain ``target=0``), the inputs ``(401, 2)`` and the
        targets ``z`` ``(401,)``.

    Examples::

        >>> model, x, z = pgig_stress_test(seed=0)
        >>> model(x).shape
        torch.Size([401, 1])
        >>> bool(((model(x)[:, 0] - (1 - torch.relu(1 - z))).abs() < 1e-5).all())
        True
    """
    data = signal_distractor_data(
        noise_std=noise_std,
        generator=torch.Generator().manual_seed(seed),
        dtype=dtype,
    )
    first, second = nn.Linear(2, 1, dtype=dtype), nn.Linear(1, 1, dtype=dtype)
    with torch.no_grad():
        first.weight.copy_(torch.tensor([[-1.0, 1.0]], dtype=dtype))
        first.bias.fill_(1.0)
        second.weight.fill_(-1.0)
        second.bias.fill_(1.0)
    model = nn.Sequential(first, nn.ReLU(), second)
    return model.eval(), data.x, data.z
