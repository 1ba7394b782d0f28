"""Recursive attribution masks and masked input accuracy (GxSI paper).

* RecursiveMaskAttribution, 5 iterations, vs the same 5 calls of the wrapped
  method written as a plain loop (Algorithm 1 by hand): goal ratio <= 1.1.
* masked_input_accuracy vs a plain forward pass over the same masked data:
  goal ratio <= 1.2.
"""

from __future__ import annotations

from typing import Any

import torch
from captum.attr import IntegratedGradients
from torch import Tensor, nn

from benchmarks.harness import BenchRow
from benchmarks.models import forward_backward
from captum_ext.attr import GradientSignInput, RecursiveMaskAttribution
from captum_ext.metrics import masked_input_accuracy
from captum_ext.models import nib_vgg

N_ITER = 5


def _minmax(a: Tensor) -> Tensor:
    flat = a.flatten(2)
    lo = flat.amin(-1, keepdim=True)
    hi = flat.amax(-1, keepdim=True)
    spread = hi - lo
    safe = torch.where(spread > 0, spread, torch.ones_like(spread))
    return ((flat - lo) / safe * (spread > 0)).view_as(a)


def _model(device: torch.device) -> nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = nib_vgg("vgg13-6", num_classes=10, in_channels=3, width=0.25)
        with torch.no_grad():
            model.train()(torch.randn(64, 3, 32, 32))
    return model.eval().to(device)


def _close(ours: Tensor, theirs: Tensor) -> None:
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-5)


def rows(device: torch.device, quick: bool) -> list[BenchRow]:
    batch = 16 if quick else 128
    ig_steps = 4 if quick else 8
    model = _model(device)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(batch, 3, 32, 32, generator=gen).to(device)
    target = torch.randint(0, 10, (batch,), generator=gen).to(device)

    out = []
    cases: tuple[tuple[str, Any, dict[str, Any]], ...] = (
        ("GradientSignInput", GradientSignInput(model), {}),
        (
            "IntegratedGradients",
            IntegratedGradients(model),
            {"n_steps": ig_steps, "internal_batch_size": ig_steps * batch},
        ),
    )
    for name, method, kwargs in cases:
        rma = RecursiveMaskAttribution(model, method)

        def ours(
            rma: RecursiveMaskAttribution = rma, kwargs: dict[str, Any] = kwargs
        ) -> Tensor:
            return rma.attribute(x, target=target, n_iterations=N_ITER, **kwargs)

        def theirs(method: Any = method, kwargs: dict[str, Any] = kwargs) -> Tensor:
            mask = torch.ones_like(x)
            for _ in range(N_ITER):
                a = method.attribute(x * mask, target=target, **kwargs)
                mask = mask * _minmax(a.detach())
            return mask

        steps = kwargs.get("n_steps", 1)
        out.append(
            BenchRow(
                name=f"RecursiveMaskAttribution({name}), {N_ITER} iterations",
                counterpart=f"{N_ITER} direct {name} calls (hand-written loop)",
                kind="naive",
                ours=ours,
                theirs=theirs,
                goal=("ratio<=", 1.1),
                passes=N_ITER * steps,
                unit=lambda: forward_backward(model, x, target),
                check=_close,
                note=f"NIB VGG13-6 width 0.25, batch {batch} x 3x32x32"
                + (f", {steps} IG steps" if steps > 1 else ""),
            )
        )

    masks = torch.rand(x.shape, generator=gen).to(device)
    labels = target

    def mia() -> Tensor:
        return masked_input_accuracy(model, x, masks, labels)

    def plain() -> Tensor:
        with torch.no_grad():
            return model(x * masks).argmax(1) == labels

    def forward_only() -> None:
        with torch.no_grad():
            model(x)

    out.append(
        BenchRow(
            name="masked_input_accuracy",
            counterpart="plain forward pass on x * m",
            kind="forward pass",
            ours=mia,
            theirs=plain,
            goal=("ratio<=", 1.2),
            passes=1,
            unit=forward_only,
            check=lambda a, b: torch.testing.assert_close(a, b),
            note=f"NIB VGG13-6 width 0.25, batch {batch} x 3x32x32; lower bound: "
            "one forward pass on x",
        )
    )
    return out
