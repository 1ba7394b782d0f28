"""Contract cases of PatternNet, PatternAttribution and PatternGuidedIG.

Their factories fit patterns on the harness model itself, from noisy copies of
the harness inputs (with the same additional forward arguments), so the
patterns match whatever model a fixture or a Captum config provides.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from captum_ext.attr import (
    PatternAttribution,
    PatternGuidedIG,
    PatternNet,
    PatternSet,
    fit_patterns,
)


def fit_on_inputs(ctx: Any, n_batches: int = 8) -> PatternSet:
    inputs = ctx.inputs if isinstance(ctx.inputs, tuple) else (ctx.inputs,)
    afa = ctx.additional_forward_args
    extra = () if afa is None else (afa if isinstance(afa, tuple) else (afa,))
    gen = torch.Generator().manual_seed(123)
    batches = [
        tuple(
            x.detach() + torch.randn(x.shape, generator=gen, dtype=x.dtype)
            for x in inputs
        )
        for _ in range(n_batches)
    ]

    def unpack(batch: tuple[Tensor, ...]) -> tuple[Any, ...]:
        return (*batch, *extra)

    return fit_patterns(ctx.model, batches, unpack_batch=unpack)


def make_pattern_net(ctx: Any) -> PatternNet:
    return PatternNet(ctx.model, fit_on_inputs(ctx))


def make_pattern_attribution(ctx: Any) -> PatternAttribution:
    return PatternAttribution(ctx.model, fit_on_inputs(ctx))


def make_pgig(ctx: Any) -> PatternGuidedIG:
    return PatternGuidedIG(ctx.model, fit_on_inputs(ctx))


def pgig_kwargs(ctx: Any) -> dict[str, Any]:
    return {"n_steps": 8}
