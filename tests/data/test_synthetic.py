"""signal_distractor_data: the synthetic data of the PGIG paper (section 3)."""

from __future__ import annotations

import pytest
import torch

from captum_ext.data import signal_distractor_data


def test_data_as_section_3_describes() -> None:
    gen = torch.Generator().manual_seed(3)
    data = signal_distractor_data(generator=gen, dtype=torch.float64)
    n = 401  # z = -2, -1.99, ..., 2
    assert data.z.shape == (n,) and data.x.shape == (n, 2)
    torch.testing.assert_close(data.z, torch.linspace(-2, 2, n, dtype=torch.float64))
    torch.testing.assert_close(data.signal[:, 0], data.z)
    assert torch.equal(data.signal[:, 1], torch.zeros(n, dtype=torch.float64))
    eps = data.distractor[:, 0]
    assert torch.equal(data.distractor[:, 1], eps)  # (1, 1) * eps
    torch.testing.assert_close(data.x, data.signal + data.distractor)
    torch.testing.assert_close(data.y, 1 - torch.relu(1 - data.z))
    # eps ~ N(0, 0.3^2)
    assert abs(float(eps.mean())) < 0.05 and abs(float(eps.std()) - 0.3) < 0.04
    # w = (1, -1) cancels the distractor exactly
    torch.testing.assert_close(
        data.x @ torch.tensor([1.0, -1.0], dtype=torch.float64), data.z
    )
    # reproducible through the generator, reference grid without the endpoint
    again = signal_distractor_data(
        generator=torch.Generator().manual_seed(3), dtype=torch.float64
    )
    assert torch.equal(again.x, data.x)
    assert signal_distractor_data(endpoint=False).z.shape == (400,)
    fixed = signal_distractor_data(eps=torch.zeros(401))
    assert torch.equal(fixed.x[:, 1], torch.zeros(401))
    with pytest.raises(ValueError, match="eps"):
        signal_distractor_data(eps=torch.zeros(10))
    with pytest.raises(ValueError, match="step"):
        signal_distractor_data(step=0.03)
