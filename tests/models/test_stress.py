"""pgig_stress_test: the network of the PGIG paper's section 3 (fig. 2 c)."""

from __future__ import annotations

import torch

from captum_ext.models import pgig_stress_test


def test_stress_network_models_the_plateau() -> None:
    model, x, z = pgig_stress_test(seed=7)
    assert not model.training
    out = model(x).detach()
    assert out.shape == (401, 1)
    torch.testing.assert_close(out[:, 0], 1 - torch.relu(1 - z), atol=1e-5, rtol=0)
    # the weights of fig. 2 c
    assert torch.equal(model[0].weight.detach(), torch.tensor([[-1.0, 1.0]]))
    assert float(model[0].bias.detach()) == 1.0
    assert float(model[2].weight.detach()) == -1.0
    assert float(model[2].bias.detach()) == 1.0
    x2 = pgig_stress_test(seed=7)[1]
    assert torch.equal(x, x2) and not torch.equal(x, pgig_stress_test(seed=8)[1])
