"""The IG study's key qualitative results on real data (digits, fixed seeds).

Section 7.2 / figure 4: pruning the neurons ranked highest by patch conductance
moves IG out of the patch (less IG inside, more outside) and keeps the model
confident, while pruning as many neurons ranked by global conductance does not
single out the patch and costs more confidence. Section 5: distributional IG
satisfies completeness against the mean reference output and, unlike IG with
a black baseline, attributes to pixels equal to the baseline.
"""

from __future__ import annotations

import pytest
import torch
from captum.attr import IntegratedGradients
from torch import Tensor, nn

from captum_ext.attr import DistributionalIG, PatchConductance, prune_neurons
from captum_ext.data import DataSplit, accuracy, load_digits, train_model
from captum_ext.models import digits_cnn


@pytest.fixture(scope="module")
def trained() -> tuple[nn.Sequential, DataSplit]:
    data = load_digits(seed=0)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = digits_cnn()
    train_model(model, data.x_train, data.y_train, epochs=10, seed=0)
    assert accuracy(model, data.x_test, data.y_test) > 0.95
    return model, data


@pytest.mark.slow
def test_patch_ranked_pruning_moves_ig_out_of_the_patch(
    trained: tuple[nn.Sequential, DataSplit],
) -> None:
    model, data = trained

    def confidence(z: Tensor) -> Tensor:
        return torch.softmax(model(z), dim=1)

    black = float((0.0 - data.mean.flatten()[0]) / data.std.flatten()[0])
    layer = model[3]  # second conv block, 32 x 8 x 8 neurons
    patch = torch.zeros(1, 1, 8, 8, dtype=torch.bool)
    patch[..., :, :4] = True  # the left half of the image
    pc = PatchConductance(confidence, layer)
    ig = IntegratedGradients(confidence)
    wins = {"inside": 0, "outside": 0, "confidence": 0}
    for cls in range(10):
        sel = data.y_test == cls
        x, y = data.x_test[sel], data.y_test[sel]
        base = torch.full_like(x, black)
        kw = {"target": y, "n_steps": 16}
        ranks = {
            "global": pc.attribute(x, torch.ones_like(patch), base, **kw).mean(0),
            "patch": pc.attribute(x, patch, base, **kw).mean(0),
        }
        res = {}
        for name, scores in ranks.items():
            with prune_neurons(layer, scores, 0.1):
                a = ig.attribute(x, base, **kw)
                with torch.no_grad():
                    p = confidence(x)[torch.arange(len(y)), y].mean().item()
            inside = (a * patch).sum((1, 2, 3)).mean().item()
            outside = (a * ~patch).sum((1, 2, 3)).mean().item()
            res[name] = (inside, outside, p)
        wins["inside"] += res["patch"][0] < res["global"][0]
        wins["outside"] += res["patch"][1] > res["global"][1]
        wins["confidence"] += res["patch"][2] > res["global"][2]
    # all ten classes show it with these seeds; allow one exception each
    assert min(wins.values()) >= 9, wins


@pytest.mark.slow
def test_distributional_ig_on_digits(trained: tuple[nn.Sequential, DataSplit]) -> None:
    model, data = trained
    x, y = data.x_test[:16], data.y_test[:16]
    generator = torch.Generator().manual_seed(0)
    index = torch.randperm(len(data.x_train), generator=generator)[:32]
    refs = data.x_train[index]
    black = float((0.0 - data.mean.flatten()[0]) / data.std.flatten()[0])
    eg = DistributionalIG(model).attribute(
        x, refs, target=y, n_steps=128, method="riemann_trapezoid"
    )
    with torch.no_grad():
        gap = model(x)[torch.arange(16), y] - model(refs)[:, y].mean(0)
    torch.testing.assert_close(eg.sum((1, 2, 3)), gap, rtol=1e-2, atol=2e-2)
    # pixels equal to the black baseline get exactly zero IG, not zero EG
    ig = IntegratedGradients(model).attribute(
        x, torch.full_like(x, black), target=y, n_steps=32
    )
    background = x == black
    assert background.any()
    assert torch.all(ig[background] == 0)
    assert (eg[background].abs() > 1e-3).float().mean() > 0.5
