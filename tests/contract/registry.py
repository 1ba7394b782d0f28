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

import torch
from captum.attr import (
    Attribution,
    GradientShap,
    InputXGradient,
    IntegratedGradients,
    LayerConductance,
    Saliency,
)
from torch import Tensor, nn

from captum_ext.attr import (
    DistributionalIG,
    GradientSignInput,
    LearnedMask,
    PatchConductance,
    PatternAttribution,
    PatternGuidedIG,
    PatternNet,
    RecursiveMaskAttribution,
)
from tests.contract.fixtures import FIXTURE_NAMES, make_fixture
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


def _as_tuple(x: Tensor | tuple[Tensor, ...]) -> tuple[Tensor, ...]:
    return x if isinstance(x, tuple) else (x,)


def _distributional_ig_kwargs(ctx: Ctx) -> dict[str, Any]:
    """K references, K = the fixture's batch size (NoiseTunnel accepts K = 1 or
    the batch size); the same references for per-example calls. Captum's
    GradientShap configs bring their own baselines and n_samples."""
    if ctx.fixture is None:
        return {}
    k = make_fixture(ctx.fixture).batch_size
    gen = torch.Generator().manual_seed(1)
    refs = tuple(
        torch.randn((k, *tuple(x.shape[1:])), generator=gen)
        for x in _as_tuple(ctx.inputs)
    )
    return {
        "baselines": refs if isinstance(ctx.inputs, tuple) else refs[0],
        "n_steps": 8,
    }


def _patch_conductance_kwargs(ctx: Ctx) -> dict[str, Any]:
    """A patch of the first half of each input's features, broadcast over the
    batch (so NoiseTunnel and per-example calls see the same patch)."""
    masks = []
    for x in _as_tuple(ctx.inputs):
        mask = torch.zeros(x.shape[1:], dtype=torch.bool).flatten()
        mask[: max(1, mask.numel() // 2)] = True
        masks.append(mask.reshape((1, *tuple(x.shape[1:]))))
    kwargs: dict[str, Any] = {
        "patch_mask": tuple(masks) if isinstance(ctx.inputs, tuple) else masks[0]
    }
    if ctx.fixture is not None:
        kwargs["n_steps"] = 8
    return kwargs


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
    ContractCase(
        DistributionalIG,
        kwargs=_distributional_ig_kwargs,
        captum_analogs=(GradientShap,),
        drop_args=("stdevs",),
        has_internal_batch_size=True,
    ),
    ContractCase(
        PatchConductance,
        kwargs=_patch_conductance_kwargs,
        captum_analogs=(LayerConductance,),
        is_layer=True,
        has_internal_batch_size=True,
        backward=False,  # its backward pass stops at the layer, after the tripwire
    ),
    # LearnedMask explains images only (fixture "cnn"); no Captum class learns
    # masks, so no upstream config applies. n_distractors=None uses the whole
    # (3-image) pool at every step: deterministic, hence batch-independent and
    # exact under NoiseTunnel / sensitivity_max. atol 1e-5: Adam's normalised
    # steps carry the last-bit differences of batched convolutions along.
    ContractCase(
        LearnedMask,
        kwargs=lambda ctx: {
            "distractors": torch.randn(
                3,
                *ctx.inputs.shape[1:],  # type: ignore[union-attr]
                generator=torch.Generator().manual_seed(1),
            ),
            "n_distractors": None,
            "n_iter": 8,
            "lr": 0.1,
        },
        fixtures=("cnn",),
        has_internal_batch_size=True,
        atol=1e-5,
    ),
    # LearnedMask with sampled distractors (2 of 5 per step): one draw per step
    # is shared by the whole batch, so with a freshly seeded generator for
    # every call a batch equals one-at-a-time calls. Not under sensitivity_max,
    # which passes the same generator object to consecutive calls (its state
    # moves on, so the draws differ by design); the case above covers it.
    ContractCase(
        LearnedMask,
        kwargs=lambda ctx: {
            "distractors": torch.randn(
                5,
                *ctx.inputs.shape[1:],  # type: ignore[union-attr]
                generator=torch.Generator().manual_seed(1),
            ),
            "n_distractors": 2,
            "generator": torch.Generator().manual_seed(2),
            "n_iter": 8,
            "lr": 0.1,
        },
        fixtures=("cnn",),
        has_internal_batch_size=True,
        sensitivity=False,
        atol=1e-5,
        label="LearnedMask-sampled",
    ),
]
