"""Models and inputs the contract harness runs every registered method on."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn


class TripwireError(RuntimeError):
    """Raised by :class:`Tripwire` when armed."""


def _raise_in_backward(grad: Tensor) -> Tensor:
    raise TripwireError("tripwire: backward")


class Tripwire(nn.Module):
    """Identity layer that counts forward calls and can raise mid-way.

    ``mode=None``: identity. ``mode="forward"``: raise on forward call number
    ``after + 1``. ``mode="backward"``: raise when the gradient flows back
    through it.
    """

    def __init__(self) -> None:
        super().__init__()
        self.mode: str | None = None
        self.after = 0
        self.calls = 0

    def forward(self, x: Tensor) -> Tensor:
        self.calls += 1
        if self.mode == "forward" and self.calls > self.after:
            raise TripwireError("tripwire: forward")
        if self.mode == "backward" and x.requires_grad:
            x = x.clone()
            x.register_hook(_raise_in_backward)
        return x


class MultiInputNet(nn.Module):
    """Two tensor inputs plus an additional per-example scale argument."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(4, 8)
        self.fc2 = nn.Linear(3, 8)
        self.trip = Tripwire()
        self.fc3 = nn.Linear(8, 6)
        self.out = nn.Linear(6, 3)

    def forward(self, x1: Tensor, x2: Tensor, scale: Tensor) -> Tensor:
        h = torch.relu(self.fc1(x1) + self.fc2(x2))
        h = torch.relu(self.fc3(self.trip(h)))
        return self.out(h) * scale


@dataclass
class ModelFixture:
    """A model with inputs, targets and forward args for contract checks."""

    name: str
    model: nn.Module
    inputs: Tensor | tuple[Tensor, ...]
    target: Any
    additional_forward_args: Any = None
    layer_name: str = ""
    n_classes: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def tripwire(self) -> Tripwire:
        for m in self.model.modules():
            if isinstance(m, Tripwire):
                return m
        raise LookupError("fixture has no tripwire")

    @property
    def layer(self) -> nn.Module:
        return self.model.get_submodule(self.layer_name)

    @property
    def batch_size(self) -> int:
        x = self.inputs if isinstance(self.inputs, Tensor) else self.inputs[0]
        return x.shape[0]

    def example(self, i: int) -> ModelFixture:
        """The fixture restricted to example ``i`` (targets as a 1-list)."""
        inputs = (
            self.inputs[i : i + 1]
            if isinstance(self.inputs, Tensor)
            else tuple(x[i : i + 1] for x in self.inputs)
        )
        afa = self.additional_forward_args
        if isinstance(afa, tuple):
            afa = tuple(a[i : i + 1] if isinstance(a, Tensor) else a for a in afa)
        elif isinstance(afa, Tensor):
            afa = afa[i : i + 1]
        target = self.target
        if isinstance(target, list):
            target = [target[i]]
        return ModelFixture(
            self.name,
            self.model,
            inputs,
            target,
            afa,
            self.layer_name,
            self.n_classes,
            self.extra,
        )


def make_fixture(name: str, seed: int = 0) -> ModelFixture:
    """Build a fresh fixture: ``mlp``, ``cnn`` or ``multi_input``."""
    gen = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if name == "mlp":
            model: nn.Module = nn.Sequential(
                nn.Linear(6, 10),
                nn.ReLU(),
                Tripwire(),
                nn.Linear(10, 10),
                nn.ReLU(),
                nn.Linear(10, 4),
            )
            inputs: Any = torch.randn(5, 6, generator=gen)
            return ModelFixture(
                name, model.eval(), inputs, [0, 1, 2, 3, 1], None, "3", 4
            )
        if name == "cnn":
            model = nn.Sequential(
                nn.Conv2d(1, 4, 3, padding=1),
                nn.ReLU(),
                Tripwire(),
                nn.Conv2d(4, 6, 3, padding=1),
                nn.ReLU(),
                nn.MaxPool2d(2),
                nn.Flatten(),
                nn.Linear(6 * 4 * 4, 5),
            )
            inputs = torch.randn(4, 1, 8, 8, generator=gen)
            return ModelFixture(name, model.eval(), inputs, [0, 4, 2, 1], None, "3", 5)
        if name == "multi_input":
            model = MultiInputNet()
            inputs = (
                torch.randn(4, 4, generator=gen),
                torch.randn(4, 3, generator=gen),
            )
            scale = torch.rand(4, 1, generator=gen) + 0.5
            return ModelFixture(
                name, model.eval(), inputs, [2, 0, 1, 2], (scale,), "fc3", 3
            )
    raise ValueError(f"unknown fixture {name!r}")


FIXTURE_NAMES = ("mlp", "cnn", "multi_input")
