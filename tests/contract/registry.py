"""The one place where attribution classes join the contract harness.

Add one ``ContractCase`` line per attribution class. Its factory receives a
:class:`Ctx` (model, layer, example inputs) and returns a ready instance; its
``kwargs`` adds method knobs to every ``attribute`` call. ``captum_analogs``
names the Captum classes whose upstream test configs
(``captum.testing.attr.helpers.test_config``) apply to this class: the
harness reruns Captum's generic hook-removal and target tests on those configs
with this class swapped in (``test_captum_generic.py``), then our own
invariants on our fixture models (``test_invariants.py``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from captum.attr import Attribution, InputXGradient, IntegratedGradients, Saliency
from torch import Tensor, nn

from captum_ext.attr import (
    GradientSignInput,
    PatternAttribution,
    PatternGuidedIG,
    PatternNet,
    RecursiveMaskAttribution,
)
from tests.contract.fixtures import FIXTURE_NAMES
from tests.contract.pattern_factories import (
    make_pattern_attribution,
    make_pattern_net,
    make_pgig,
    pgig_kwargs,
)


@dataclass(frozen=True)
class Ctx:
    """What a factory or kwargs function may look at."""

    model: nn.Module
    layer: nn.Module | None
    inputs: Tensor | tuple[Tensor, ...]
    additional_forward_args: Any
    fixture: str | None  # our fixture's name, or None for a Captum config


@dataclass(frozen=True)
class ContractCase:
    """How to construct and call one attribution class in the harness."""

    cls: type[Attribution]
    make: Callable[[Ctx], Attribution] | None = None
    kwargs: Callable[[Ctx], dict[str, Any]] | None = None
    captum_analogs: tuple[type[Attribution], ...] = ()
    drop_args: tuple[str, ...] = ()
    fixtures: tuple[str, ...] = FIXTURE_NAMES
    is_layer: bool = False
    has_internal_batch_size: bool = False
    noise_tunnel: bool = True
    sensitivity: bool = True
    backward: bool = True
    rtol: float = 1e-5
    atol: float = 1e-6
    label: str = ""

    @property
    def id(self) -> str:
        return self.label or self.cls.__name__

    def build(self, ctx: Ctx) -> Attribution:
        if self.make is not None:
            return self.make(ctx)
        if self.is_layer:
            return self.cls(ctx.model, ctx.layer)  # type: ignore[call-arg]
        return self.cls(ctx.model)  # type: ignore[call-arg]

    def attr_kwargs(self, ctx: Ctx) -> dict[str, Any]:
        return dict(self.kwargs(ctx)) if self.kwargs is not None else {}


# One line per attribution class.
CASES: list[ContractCase] = [
    ContractCase(GradientSignInput, captum_analogs=(InputXGradient,)),
    ContractCase(RecursiveMaskAttribution, captum_analogs=(InputXGradient,)),
    ContractCase(
        RecursiveMaskAttribution,
        make=lambda ctx: RecursiveMaskAttribution(ctx.model, IntegratedGradients),
        kwargs=lambda ctx: {"n_iterations": 2, "n_steps": 4},
        captum_analogs=(InputXGradient,),
        has_internal_batch_size=True,
        label="RecursiveMaskAttribution[IntegratedGradients]",
    ),
    ContractCase(
        PatternNet, make=make_pattern_net, captum_analogs=(Saliency, InputXGradient)
    ),
    ContractCase(
        PatternAttribution,
        make=make_pattern_attribution,
        captum_analogs=(Saliency, InputXGradient),
    ),
    ContractCase(
        PatternGuidedIG,
        make=make_pgig,
        kwargs=pgig_kwargs,
        captum_analogs=(IntegratedGradients,),
        has_internal_batch_size=True,
    ),
]
