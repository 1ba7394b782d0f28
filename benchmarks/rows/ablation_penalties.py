"""Ablated augmentation: a batched transform vs a per-sample loop, and
ablation_penalties (one IG pass, one backward per chunk) vs two Captum IG calls."""

from __future__ import annotations

import torch
from captum.attr import IntegratedGradients
from torch import Tensor

from benchmarks.harness import BenchRow
from captum_ext.metrics import (
    AblationPenalties,
    ablation_penalties,
    contribution_covariance_penalty,
    modified_l2_penalty,
)
from captum_ext.models import tabular_mlp
from captum_ext.transforms import MeanAblation


def _transform_row(device: torch.device, quick: bool) -> BenchRow:
    batch, k = (64, 30) if quick else (256, 30)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(batch, k, generator=gen).to(device)
    mean = torch.zeros(k, device=device)
    rng = torch.Generator().manual_seed(0)
    ablate = MeanAblation(0.25, mean, generator=rng)

    def ours() -> Tensor:
        rng.manual_seed(0)
        return ablate(x)

    def per_sample() -> Tensor:  # what a Dataset transform does, one row at a time
        rng.manual_seed(0)
        return torch.stack([ablate(row) for row in x])

    def check(a: Tensor, b: Tensor) -> None:
        # same generator stream: the batch gets the masks of the row-by-row loop
        assert (a == 0).float().mean().item() > 0.15
        torch.testing.assert_close(a, b, rtol=0, atol=0)

    return BenchRow(
        name="MeanAblation (batch)",
        counterpart="per-sample loop",
        kind="naive",
        ours=ours,
        theirs=per_sample,
        goal=("speedup>=", 10.0),
        check=check,
        note=f"batch {batch} x {k} features, p = 0.25",
    )


def _penalties_row(device: torch.device, quick: bool) -> BenchRow:
    n, k, steps = (64, 30, 50) if quick else (143, 30, 100)
    gen = torch.Generator().manual_seed(0)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = tabular_mlp(k, 2, hidden_layers=2, width=100).eval().to(device)
    x = torch.randn(n, k, generator=gen).to(device)
    ig = IntegratedGradients(model)
    avg = IntegratedGradients(model, multiply_by_inputs=False)

    def ours() -> AblationPenalties:
        return ablation_penalties(model, x, target=1, n_steps=steps)

    def captum_two_calls() -> tuple[Tensor, Tensor]:
        attr = ig.attribute(x, target=1, n_steps=steps)
        grads = avg.attribute(x, target=1, n_steps=steps)
        return contribution_covariance_penalty(attr), modified_l2_penalty(grads, x)

    def check(a: AblationPenalties, b: tuple[Tensor, Tensor]) -> None:
        torch.testing.assert_close(a.ccp, b[0], rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(a.ml2p, b[1], rtol=1e-5, atol=1e-7)

    expanded = x.repeat(steps, 1)

    def unit() -> None:  # one forward + backward over all n * steps path points
        leaf = expanded.detach().requires_grad_(True)
        torch.autograd.grad(model(leaf)[:, 1].sum(), leaf)

    return BenchRow(
        name="ablation_penalties",
        counterpart="IntegratedGradients x2 (multiply_by_inputs True/False)",
        kind="Captum",
        ours=ours,
        theirs=captum_two_calls,
        goal=("speedup>=", 2.0),
        passes=1,
        unit=unit,
        check=check,
        note=f"MLP 2x100, {n} examples x {k} features, {steps} steps",
    )


def rows(device: torch.device, quick: bool) -> list[BenchRow]:
    return [_transform_row(device, quick), _penalties_row(device, quick)]
