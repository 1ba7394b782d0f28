"""Captum's names mean Captum's things: every IG-style class against Captum.

DistributionalIG with one reference and PatternGuidedIG with all-ones
patterns are Captum's IntegratedGradients, for every ``method``, ``n_steps``,
``internal_batch_size``, tuple inputs and forward args that are not
per-example tensors; a replaced ``gradient_func`` takes effect.
"""

from __future__ import annotations

import warnings
from typing import Any

import pytest
import torch
from captum.attr import IntegratedGradients
from torch import Tensor, nn

from captum_ext.attr import (
    DistributionalIG,
    GradientSignInput,
    PatchConductance,
    PatternGuidedIG,
    PatternSet,
)
from captum_ext.metrics import ablation_penalties

CAPTUM_METHODS = [
    "riemann_right",
    "riemann_left",
    "riemann_middle",
    "riemann_trapezoid",
    "gausslegendre",
]


class TwoInputNet(nn.Module):
    """Tuple inputs; forward args: a per-example tensor, a shared (5,) tensor
    that Captum repeats over the steps (the model reads its mean, which the
    repetition keeps), a 0-d tensor Captum leaves alone, and a float."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(4, 6)
        self.fc2 = nn.Linear(3, 6)
        self.out = nn.Linear(6, 3)

    def forward(
        self, x1: Tensor, x2: Tensor, scale: Tensor, shared: Tensor, k: Tensor, c: float
    ) -> Tensor:
        h = torch.relu(self.fc1(x1) + self.fc2(x2 * scale) * shared.mean())
        return self.out(h) * k + c


def _setup() -> tuple[nn.Module, tuple[Tensor, Tensor], tuple[Tensor, Tensor], Any]:
    torch.manual_seed(0)
    model = TwoInputNet().double().eval()
    x = (torch.randn(4, 4).double(), torch.randn(4, 3).double())
    base = (torch.randn(1, 4).double(), torch.randn(1, 3).double())
    afa = (
        torch.rand(4, 3).double() + 0.5,
        torch.tensor([0.5, 1.0, 1.5, 2.0, 2.5]).double(),
        torch.tensor(1.5).double(),
        0.25,
    )
    return model, x, base, afa


def _assert_rel_close(ours: Any, theirs: Any, rel: float = 1e-6) -> None:
    ours = ours if isinstance(ours, tuple) else (ours,)
    theirs = theirs if isinstance(theirs, tuple) else (theirs,)
    assert len(ours) == len(theirs)
    for a, b in zip(ours, theirs):
        assert a.shape == b.shape
        scale = float(b.abs().max())
        assert scale > 0
        torch.testing.assert_close(a, b, rtol=rel, atol=rel * scale)


def _captum_ig(model: nn.Module, x: Any, base: Any, **kw: Any) -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Captum's internal_batch_size warning
        return IntegratedGradients(model).attribute(x, base, **kw)


def _unit_patterns(model: nn.Module) -> PatternSet:
    return PatternSet(
        {
            n: torch.ones_like(m.weight)
            for n, m in model.named_modules()
            if isinstance(m, (nn.Linear, nn.Conv2d))
        }
    )


@pytest.mark.parametrize("ibs", [None, 12, 3], ids=["ibs-none", "ibs-12", "ibs-3"])
@pytest.mark.parametrize("n_steps", [2, 7, 40])
@pytest.mark.parametrize("method", CAPTUM_METHODS)
def test_distributional_ig_with_one_reference_is_captum_ig(
    method: str, n_steps: int, ibs: int | None
) -> None:
    model, x, base, afa = _setup()
    kw: dict[str, Any] = {
        "target": [0, 2, 1, -1 % 3],
        "additional_forward_args": afa,
        "n_steps": n_steps,
        "method": method,
        "internal_batch_size": ibs,
    }
    theirs = _captum_ig(model, x, base, **kw)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ours = DistributionalIG(model).attribute(x, base, **kw)
    _assert_rel_close(ours, theirs)


@pytest.mark.parametrize("ibs", [None, 12, 3], ids=["ibs-none", "ibs-12", "ibs-3"])
@pytest.mark.parametrize("n_steps", [2, 7, 40])
@pytest.mark.parametrize("method", CAPTUM_METHODS)
def test_pgig_with_unit_patterns_is_captum_ig(
    method: str, n_steps: int, ibs: int | None
) -> None:
    model, x, base, afa = _setup()
    kw: dict[str, Any] = {
        "target": torch.tensor([0, 2, 1, 1]),
        "additional_forward_args": afa,
        "n_steps": n_steps,
        "method": method,
        "internal_batch_size": ibs,
    }
    theirs = _captum_ig(model, x, base, **kw)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ours = PatternGuidedIG(model, _unit_patterns(model)).attribute(x, base, **kw)
    _assert_rel_close(ours, theirs)


def test_internal_batch_size_below_the_batch_warns_as_captum_does() -> None:
    model, x, base, afa = _setup()
    kw: dict[str, Any] = {"target": 1, "additional_forward_args": afa, "n_steps": 4}
    with pytest.warns(UserWarning, match="Internal batch size cannot be less"):
        IntegratedGradients(model).attribute(x, base, internal_batch_size=2, **kw)
    with pytest.warns(UserWarning, match="Internal batch size cannot be less"):
        DistributionalIG(model).attribute(x, base, internal_batch_size=2, **kw)
    with pytest.warns(UserWarning, match="Internal batch size cannot be less"):
        PatternGuidedIG(model, _unit_patterns(model)).attribute(
            x, base, internal_batch_size=2, **kw
        )
    with pytest.warns(UserWarning, match="Internal batch size cannot be less"):
        ablation_penalties(model, x, baselines=base, internal_batch_size=2, **kw)
    with pytest.warns(UserWarning, match="Internal batch size cannot be less"):
        PatchConductance(model, model.fc1).attribute(
            x,
            (torch.ones(1, 4, dtype=torch.bool), torch.zeros(1, 3, dtype=torch.bool)),
            base,
            internal_batch_size=2,
            **kw,
        )


@pytest.mark.parametrize("method", CAPTUM_METHODS)
def test_ablation_penalties_attributions_are_captum_ig(method: str) -> None:
    model, x, base, afa = _setup()
    kw: dict[str, Any] = {
        "target": [0, 2, 1, 1],
        "additional_forward_args": afa,
        "n_steps": 7,
        "method": method,
    }
    result = ablation_penalties(model, x, baselines=base, internal_batch_size=8, **kw)
    _assert_rel_close(result.attributions, _captum_ig(model, x, base, **kw))
    avg = IntegratedGradients(model, multiply_by_inputs=False).attribute(x, base, **kw)
    _assert_rel_close(result.average_gradients, avg)


@pytest.mark.parametrize("method", CAPTUM_METHODS)
def test_patch_conductance_over_every_feature_sums_to_captum_ig(method: str) -> None:
    """Every path crosses fc1 for x1: summed over fc1's neurons, the patch
    conductance of all of x1 is Captum's IG of x1 (jvp: exact)."""
    model, x, base, afa = _setup()
    kw: dict[str, Any] = {
        "target": [0, 2, 1, 1],
        "additional_forward_args": afa,
        "n_steps": 7,
        "method": method,
    }
    mask = (torch.ones(1, 4, dtype=torch.bool), torch.zeros(1, 3, dtype=torch.bool))
    for ibs in (None, 8):
        pc = PatchConductance(model, model.fc1).attribute(
            x, mask, base, internal_batch_size=ibs, **kw
        )
        _assert_rel_close(pc.sum(1), _captum_ig(model, x, base, **kw)[0].sum(1))


def test_trapezoid_is_captum_riemann_trapezoid_rescaled() -> None:
    model, x, base, afa = _setup()
    kw: dict[str, Any] = {"target": 1, "additional_forward_args": afa, "n_steps": 9}
    theirs = _captum_ig(model, x, base, method="riemann_trapezoid", **kw)
    ours = DistributionalIG(model).attribute(x, base, method="trapezoid", **kw)
    _assert_rel_close(ours, tuple(t * 9 / 8 for t in theirs))


# --- gradient_func --------------------------------------------------------------


def _doubling(calls: list[int]) -> Any:
    from captum_ext._utils.gradient import target_gradients

    def gradient_func(
        forward_fn: Any,
        inputs: Any,
        target_ind: Any = None,
        additional_forward_args: Any = None,
    ) -> tuple[Tensor, ...]:
        calls.append(1)
        grads = target_gradients(
            forward_fn, inputs, target_ind, additional_forward_args
        )
        return tuple(2 * g for g in grads)

    return gradient_func


@pytest.mark.parametrize(
    "cls", ["DistributionalIG", "PatternGuidedIG", "GradientSignInput"]
)
def test_a_replaced_gradient_func_takes_effect(cls: str) -> None:
    model, x, base, afa = _setup()
    if cls == "DistributionalIG":
        method: Any = DistributionalIG(model)
        kw: dict[str, Any] = {"baselines": base, "n_steps": 5, "internal_batch_size": 8}
    elif cls == "PatternGuidedIG":
        method = PatternGuidedIG(model, _unit_patterns(model))
        kw = {"baselines": base, "n_steps": 5, "internal_batch_size": 8}
    else:
        method = GradientSignInput(model)
        kw = {}
    kw.update(target=1, additional_forward_args=afa)
    plain = method.attribute(x, **kw)
    calls: list[int] = []
    method.gradient_func = _doubling(calls)
    doubled = method.attribute(x, **kw)
    assert len(calls) == (1 if cls == "GradientSignInput" else 3)
    _assert_rel_close(doubled, tuple(2 * p for p in plain), rel=1e-12)


def test_pgig_progress_bar(capsys: pytest.CaptureFixture[str]) -> None:
    model, x, base, afa = _setup()
    pgig = PatternGuidedIG(model, _unit_patterns(model))
    kw: dict[str, Any] = {"target": 1, "additional_forward_args": afa, "n_steps": 6}
    plain = pgig.attribute(x, base, internal_batch_size=8, **kw)
    shown = pgig.attribute(x, base, internal_batch_size=8, show_progress=True, **kw)
    err = capsys.readouterr().err
    assert "PatternGuidedIG attribution" in err and "3/3" in err
    _assert_rel_close(shown, plain, rel=1e-12)
