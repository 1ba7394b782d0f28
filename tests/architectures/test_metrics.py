"""Every metric of captum_ext.metrics on five torchvision architectures.

The metrics only run the model forward (or, for the penalties and the
mask-accuracy curve, through Captum-style gradients), so every architecture is
expected to work: finite values of the documented shape, the model
bit-identical afterwards, and per-example metrics equal batched and one
example at a time.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import pytest
import torch
from torch import Tensor

from captum_ext.attr import GradientSignInput
from captum_ext.metrics import (
    ablation_penalties,
    aopc,
    completeness,
    contribution_covariance_penalty,
    deletion_auc,
    evaluate_attributions,
    image_degradation,
    insertion_auc,
    masked_input_accuracy,
    masked_input_accuracy_curve,
    modified_l2_penalty,
    saliency_auc,
    soundness,
    worst_case_completeness_soundness,
)
from tests.architectures import _archs
from tests.helpers import assert_model_unchanged, snapshot

Metric = Callable[[torch.nn.Module, Tensor, Tensor, Tensor], Tensor]


def _gxsi(model: torch.nn.Module, x: Tensor, t: Tensor) -> Tensor:
    return GradientSignInput(model).attribute(x, target=t)


def _degradation(model: torch.nn.Module, x: Tensor, a: Tensor, t: Tensor) -> Tensor:
    return image_degradation(model, x, a, target=t, patch_size=8, n_steps=None)


def _p_and_g(model: torch.nn.Module, x: Tensor, a: Tensor, t: Tensor) -> tuple:
    g = saliency_auc(model, x, a, target=t, n_points=5)
    with torch.no_grad():
        p = model(x).softmax(1).gather(1, t[:, None])[:, 0]
    return g, p


def _wccs(model: torch.nn.Module, x: Tensor, a: Tensor, t: Tensor) -> Tensor:
    res = worst_case_completeness_soundness(
        model, x, GradientSignInput(model).attribute, n_points=5
    )
    return torch.stack([res.worst_completeness, res.worst_soundness], 1)


def _evaluate(model: torch.nn.Module, x: Tensor, a: Tensor, t: Tensor) -> Tensor:
    res = evaluate_attributions(
        GradientSignInput(model),
        [(x, t)],
        {"degradation": partial(image_degradation, patch_size=8, n_steps=None)},
        process_group=None,
    )
    return res.scores["degradation"]


#: name -> (metric, per-example output shape after the batch dimension);
#: shape None: a population value (0-d), not split per example.
METRICS: dict[str, tuple[Metric, tuple[int, ...] | None]] = {
    "image_degradation": (_degradation, (17,)),
    "aopc": (lambda m, x, a, t: aopc(_degradation(m, x, a, t)), ()),
    "deletion_auc": (
        lambda m, x, a, t: deletion_auc(m, x, a, target=t, n_steps=8),
        (),
    ),
    "insertion_auc": (
        lambda m, x, a, t: insertion_auc(m, x, a, target=t, n_steps=8, fill="mean"),
        (),
    ),
    "saliency_auc": (lambda m, x, a, t: _p_and_g(m, x, a, t)[0], ()),
    "completeness": (lambda m, x, a, t: completeness(*_p_and_g(m, x, a, t)), ()),
    "soundness": (lambda m, x, a, t: soundness(*_p_and_g(m, x, a, t)), ()),
    "worst_case_completeness_soundness": (_wccs, (2,)),
    "masked_input_accuracy": (
        lambda m, x, a, t: masked_input_accuracy(m, x, (a > 0).float(), t),
        (),
    ),
    "masked_input_accuracy_curve": (
        lambda m, x, a, t: masked_input_accuracy_curve(m, x, t, n_iterations=2),
        (3,),
    ),
    "evaluate_attributions": (_evaluate, (17,)),
    "contribution_covariance_penalty": (
        lambda m, x, a, t: contribution_covariance_penalty(a),
        None,
    ),
    "modified_l2_penalty": (lambda m, x, a, t: modified_l2_penalty(a, x), None),
    "ablation_penalties": (
        lambda m, x, a, t: torch.stack(
            ablation_penalties(m, x, target=t, n_steps=4)[:2]
        ),
        None,
    ),
}


@pytest.mark.slow
@pytest.mark.parametrize("metric", sorted(METRICS))
@pytest.mark.parametrize("arch", _archs.ARCHS)
def test_metric_on_architecture(arch: str, metric: str) -> None:
    model = _archs.model(arch)
    x = _archs.images(2, seed=1)
    t = torch.tensor([3, 5])
    a = _gxsi(model, x, t)
    fn, shape = METRICS[metric]
    before = snapshot(model)
    out = fn(model, x, a, t)
    assert_model_unchanged(before, model)
    assert torch.isfinite(out).all(), f"{metric} on {arch}: non-finite"
    if shape is None:
        assert out.shape in (torch.Size([]), torch.Size([2]))
        return
    assert out.shape == (2, *shape)
    single = torch.cat(
        [fn(model, x[i : i + 1], a[i : i + 1], t[i : i + 1]) for i in range(2)]
    )
    torch.testing.assert_close(single, out, rtol=1e-4, atol=1e-5)
