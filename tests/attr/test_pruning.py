"""prune_neurons: top-ranked neurons zeroed inside a block, model left intact."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from captum_ext.attr import neuron_ranking, prune_neurons, pruning_mask
from tests.helpers import assert_model_unchanged, snapshot


def _mlp() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Linear(5, 8), nn.ReLU(), nn.Linear(8, 6), nn.ReLU(), nn.Linear(6, 3)
    ).eval()


def test_ranking_is_descending_and_stable() -> None:
    scores = torch.tensor([0.5, 2.0, -1.0, 2.0, 0.0])
    assert neuron_ranking(scores).tolist() == [1, 3, 0, 4, 2]
    assert neuron_ranking(scores, descending=False).tolist() == [2, 4, 0, 1, 3]
    assert neuron_ranking(scores.reshape(5, 1)).tolist() == [1, 3, 0, 4, 2]


@pytest.mark.parametrize(
    "amount,expected",
    [(0.0, 0), (0.1, 1), (0.25, 2), (0.5, 4), (1.0, 8), (3, 3), (0, 0)],
)
def test_pruning_mask_counts(amount: float, expected: int) -> None:
    scores = torch.arange(8.0)
    mask = pruning_mask(scores, amount)
    assert int(mask.sum()) == expected
    # the highest scores are the pruned ones
    assert mask[8 - expected :].all() and not mask[: 8 - expected].any()


def test_pruned_model_equals_manual_zeroing() -> None:
    model = _mlp()
    x = torch.randn(7, 5)
    scores = torch.randn(6)
    state = snapshot(model)
    with prune_neurons(model[3], scores, 2) as pruned:
        got = model(x)
    assert_model_unchanged(state, model)
    # reference written out: hidden activations with the two top neurons zeroed
    top2 = scores.argsort(descending=True)[:2]
    assert pruned.shape == (6,) and set(pruned.nonzero().flatten().tolist()) == set(
        top2.tolist()
    )
    with torch.no_grad():
        h = model[:4](x)
        h[:, top2] = 0.0
        expected = model[4](h)
    torch.testing.assert_close(got, expected)
    # outside the block the model is the original one again
    torch.testing.assert_close(model(x), model[4](model[:4](x)))


def test_channel_pruning_and_layer_input() -> None:
    torch.manual_seed(1)
    conv = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 2, 1))
    x = torch.randn(3, 1, 5, 5)
    scores = torch.tensor([0.1, 5.0, -2.0, 3.0]).view(4, 1, 1)  # whole channels
    with prune_neurons(conv[1], scores, 0.5):
        got = conv(x)
    with torch.no_grad():
        h = conv[1](conv[0](x))
        h[:, [1, 3]] = 0.0
        expected = conv[2](h)
    torch.testing.assert_close(got, expected)
    # the same neurons pruned as the input of the next layer
    with prune_neurons(conv[2], scores, 0.5, layer_input=True):
        torch.testing.assert_close(conv(x), expected)


def test_restored_after_exception() -> None:
    model = _mlp()
    state = snapshot(model)
    with pytest.raises(RuntimeError, match="inside"):
        with prune_neurons(model[1], torch.randn(8), 0.5):
            raise RuntimeError("inside the block")
    assert_model_unchanged(state, model)


def test_bad_arguments() -> None:
    model = _mlp()
    with pytest.raises(ValueError, match="amount"):
        pruning_mask(torch.randn(4), 1.5)
    with pytest.raises(ValueError, match="amount"):
        pruning_mask(torch.randn(4), 5)
    with pytest.raises(TypeError, match="amount"):
        pruning_mask(torch.randn(4), "half")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="NaN"):
        neuron_ranking(torch.tensor([1.0, float("nan")]))
    with pytest.raises(TypeError, match="layer"):
        with prune_neurons("fc", torch.randn(4), 1):  # type: ignore[arg-type]
            pass
    state = snapshot(model)
    with pytest.raises(ValueError, match="scores"):
        with prune_neurons(model[1], torch.randn(5), 1):
            model(torch.randn(2, 5))
    assert_model_unchanged(state, model)


def test_non_finite_activations_are_zeroed_not_nan() -> None:
    layer = nn.Identity()
    x = torch.tensor([[float("inf"), 1.0, -2.0]])
    with prune_neurons(layer, torch.tensor([3.0, 0.0, 1.0]), 1):
        out: Tensor = layer(x)
    assert out.tolist() == [[0.0, 1.0, -2.0]]
