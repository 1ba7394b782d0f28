"""Catalogue of bad calls to the attribution classes: each one is refused
before any work with the exception type and the argument named in its
message (or warned about, naming the argument)."""

from __future__ import annotations

import warnings
from typing import Any

import pytest
import torch
from torch import nn

from captum_ext.attr import LayerPatchConductance, PatchConductance
from captum_ext.metrics import ablation_penalties
from tests.contract.fixtures import make_fixture
from tests.contract.registry import CASES, ContractCase, Ctx

# Every registered class takes gradients (RecursiveMaskAttribution wraps a
# gradient method in each of its cases).
_GRADIENT_CASES = list(CASES)


def _built(
    case: ContractCase, fixture_name: str = "cnn"
) -> tuple[Any, Any, dict[str, Any]]:
    fixture = make_fixture(fixture_name)
    ctx = Ctx(fixture.model, fixture.layer, fixture.inputs, None, fixture_name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        method = case.build(ctx)
    return fixture, method, case.attr_kwargs(ctx)


class _CountForwards(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return self.model(x)


@pytest.mark.parametrize("case", _GRADIENT_CASES, ids=lambda c: c.id)
def test_inference_mode_is_refused_clearly(case: ContractCase) -> None:
    fixture, method, kwargs = _built(case)
    with torch.inference_mode(), pytest.raises(RuntimeError, match="inference_mode"):
        method.attribute(fixture.inputs, target=fixture.target, **kwargs)


def test_inference_mode_is_refused_clearly_by_ablation_penalties() -> None:
    fixture = make_fixture("mlp")
    with torch.inference_mode(), pytest.raises(RuntimeError, match="inference_mode"):
        ablation_penalties(fixture.model, fixture.inputs, target=fixture.target)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_empty_batch_names_inputs(case: ContractCase) -> None:
    fixture, method, kwargs = _built(case)
    empty = fixture.inputs[:0]
    with pytest.raises(ValueError, match="`inputs` is an empty batch"):
        method.attribute(empty, target=None, **kwargs)


def test_empty_batch_names_inputs_in_ablation_penalties() -> None:
    fixture = make_fixture("mlp")
    with pytest.raises(ValueError, match="`inputs` is an empty batch"):
        ablation_penalties(fixture.model, fixture.inputs[:0])


@pytest.mark.parametrize(
    "mask",
    [torch.zeros(1, 1, 8, 8, dtype=torch.bool), torch.zeros(8, 8)],
    ids=["bool", "float"],
)
def test_all_false_patch_mask_is_refused(mask: torch.Tensor) -> None:
    fixture = make_fixture("cnn")
    counted = _CountForwards(fixture.model)
    pc = PatchConductance(counted, fixture.layer)
    with pytest.raises(ValueError, match="`patch_mask` selects no feature"):
        pc.attribute(fixture.inputs, mask, target=0)
    assert counted.calls == 0


def test_unused_patch_ids_warn_naming_patch_mask() -> None:
    fixture = make_fixture("cnn")
    ids = torch.zeros(8, 8, dtype=torch.long)
    ids[4:] = 2  # id 1 marks nothing
    pc = PatchConductance(fixture.model, fixture.layer)
    with pytest.warns(UserWarning, match=r"`patch_mask`: patch ids \[1\]"):
        out = pc.attribute(fixture.inputs, ids, target=0, n_steps=4)
    assert float(out[:, 1].abs().max()) == 0.0


@pytest.mark.parametrize("cls", [PatchConductance, LayerPatchConductance])
def test_layer_outside_the_model_is_refused_before_any_forward_pass(
    cls: type[PatchConductance],
) -> None:
    fixture = make_fixture("cnn")
    counted = _CountForwards(fixture.model)
    stranger = nn.Conv2d(1, 4, 3)
    with pytest.raises(ValueError, match=r"`layer`.*not a module of `forward_func`"):
        cls(counted, stranger)
    with pytest.raises(ValueError, match="`layer`"):
        cls(counted.forward, stranger)  # a bound method of the model
    with pytest.raises(TypeError, match="`layer`"):
        cls(counted, "3")  # type: ignore[arg-type]
    assert counted.calls == 0


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
@pytest.mark.parametrize(
    "target",
    [[0, -1, 2, 1], torch.tensor([0, -1, 2, 1])],
    ids=["list", "tensor"],
)
def test_negative_per_example_targets_name_target(
    case: ContractCase, target: Any
) -> None:
    fixture, method, kwargs = _built(case)
    with pytest.raises(ValueError, match=r"`target`.*>= 0"):
        method.attribute(fixture.inputs, target=target, **kwargs)
