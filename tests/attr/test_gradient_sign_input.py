"""GradientSignInput: eq. 13 of the GxSI paper, checked against Captum Saliency."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from captum.attr import InputXGradient, Saliency
from captum.testing.helpers.basic_models import BasicModel_MultiLayer
from torch import nn

from captum_ext.attr import GradientSignInput
from tests.helpers import assert_model_unchanged, snapshot


def _reference(model: nn.Module, x: Any, **kw: Any) -> Any:
    sal = Saliency(model).attribute(x, abs=False, **kw)
    if isinstance(x, tuple):
        return tuple(torch.sign(xi) * s for xi, s in zip(x, sal))
    return torch.sign(x) * sal


@pytest.fixture
def mlp() -> nn.Module:
    torch.manual_seed(1)
    return nn.Sequential(nn.Linear(5, 7), nn.ReLU(), nn.Linear(7, 3)).eval()


@pytest.mark.parametrize(
    "target",
    [
        2,
        (1,),
        torch.tensor(0),
        torch.tensor([1]),
        torch.tensor([0, 2, 1, 1]),
        [2, 2, 0, 1],
    ],
    ids=["int", "tuple", "scalar-tensor", "1-tensor", "tensor", "list"],
)
def test_equals_sign_times_saliency(mlp: nn.Module, target: Any) -> None:
    x = torch.randn(4, 5)
    x[0, 0] = 0.0
    got = GradientSignInput(mlp).attribute(x, target=target)
    torch.testing.assert_close(got, _reference(mlp, x, target=target))
    assert got[0, 0] == 0.0  # sign(0) = 0


def test_list_of_tuple_targets_on_multidim_output() -> None:
    model = BasicModel_MultiLayer()
    x = torch.randn(4, 3)
    target = [(1, 0, 0), (0, 1, 1), (1, 1, 1), (0, 0, 0)]
    got = GradientSignInput(model).attribute(
        x, target=target, additional_forward_args=(None, True)
    )
    ref = _reference(model, x, target=target, additional_forward_args=(None, True))
    torch.testing.assert_close(got, ref)


def test_scalar_output_needs_no_target() -> None:
    model = nn.Sequential(nn.Linear(3, 1), nn.Flatten(0))
    x = torch.randn(6, 3)
    got = GradientSignInput(model).attribute(x)
    torch.testing.assert_close(got, torch.sign(x) * model[0].weight.detach())


def test_linear_model_closed_form() -> None:
    # F(x) = W x  =>  dF_k/dx = W[k]  =>  GxSI = sign(x) * W[k]
    lin = nn.Linear(4, 3, bias=True)
    x = torch.tensor([[1.5, -2.0, 0.0, 0.1], [-0.3, 0.0, 4.0, -1.0]])
    got = GradientSignInput(lin).attribute(x, target=[2, 0])
    w = lin.weight.detach()
    expected = torch.sign(x) * torch.stack([w[2], w[0]])
    torch.testing.assert_close(got, expected)


def test_gxsi_equals_gxi_when_inputs_are_signs(mlp: nn.Module) -> None:
    # on inputs in {-1, 0, 1}, sign(x) = x: GxSI = Gradient * Input
    x = torch.randint(-1, 2, (6, 5)).float()
    got = GradientSignInput(mlp).attribute(x, target=1)
    torch.testing.assert_close(got, InputXGradient(mlp).attribute(x, target=1))


def test_tuple_inputs_and_additional_forward_args() -> None:
    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = nn.Linear(3, 4)
            self.b = nn.Linear(2, 4)

        def forward(self, x1: torch.Tensor, x2: torch.Tensor, w: float) -> torch.Tensor:
            return torch.tanh(self.a(x1) + w * self.b(x2))

    net = Net()
    x = (torch.randn(5, 3), torch.randn(5, 2))
    got = GradientSignInput(net).attribute(x, target=3, additional_forward_args=(0.5,))
    ref = _reference(net, x, target=3, additional_forward_args=(0.5,))
    assert isinstance(got, tuple) and len(got) == 2
    for g, r in zip(got, ref):
        torch.testing.assert_close(g, r)


def test_float64_and_no_grad(mlp: nn.Module) -> None:
    model = mlp.double()
    x = torch.randn(3, 5, dtype=torch.float64)
    with torch.no_grad():
        got = GradientSignInput(model).attribute(x, target=0)
    assert got.dtype == torch.float64
    torch.testing.assert_close(got, _reference(model, x, target=0))


def test_input_that_requires_grad_is_left_alone(mlp: nn.Module) -> None:
    leaf = torch.randn(3, 5, requires_grad=True)
    x = leaf * 2.0  # non-leaf input that is part of a user's graph
    got = GradientSignInput(mlp).attribute(x, target=0)
    assert not got.requires_grad
    assert leaf.grad is None and x.requires_grad


def test_bad_inputs(mlp: nn.Module) -> None:
    gxsi = GradientSignInput(mlp)
    state = snapshot(mlp)
    with pytest.raises(TypeError, match="inputs"):
        gxsi.attribute([[1.0] * 5], target=0)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="floating point"):
        gxsi.attribute(torch.ones(2, 5, dtype=torch.long), target=0)
    with pytest.raises(ValueError, match="out of range"):
        gxsi.attribute(torch.randn(2, 5), target=3)
    with pytest.raises(AssertionError):
        gxsi.attribute(torch.randn(2, 5), target=[0, 1, 2])
    with pytest.raises(TypeError, match="target"):
        gxsi.attribute(torch.randn(2, 5), target="cat")  # type: ignore[arg-type]
    with pytest.raises(AssertionError, match="Target not provided"):
        gxsi.attribute(torch.randn(2, 5))
    with pytest.raises(RuntimeError):
        gxsi.attribute(torch.randn(2, 4), target=0)  # wrong feature size
    assert_model_unchanged(state, mlp)


def test_multiplies_by_inputs(mlp: nn.Module) -> None:
    assert GradientSignInput(mlp).multiplies_by_inputs
    with pytest.raises(NotImplementedError):
        GradientSignInput(mlp).attribute_future()
