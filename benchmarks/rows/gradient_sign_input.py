"""GxSI vs Captum InputXGradient: one forward+backward each (goal ratio <= 1.1)."""

from __future__ import annotations

import torch
from captum.attr import InputXGradient

from benchmarks.harness import BenchRow
from benchmarks.models import forward_backward, image_batch
from captum_ext.attr import GradientSignInput


def rows(device: torch.device, quick: bool) -> list[BenchRow]:
    batch = 32 if quick else 128
    model, x, target = image_batch(batch, device)
    gxsi, ixg = GradientSignInput(model), InputXGradient(model)

    def check(ours: torch.Tensor, theirs: torch.Tensor) -> None:
        # same gradient: GxSI * |x| == InputXGradient
        torch.testing.assert_close(ours * x.abs(), theirs, rtol=1e-4, atol=1e-6)

    return [
        BenchRow(
            name="GradientSignInput",
            counterpart="InputXGradient",
            kind="Captum",
            ours=lambda: gxsi.attribute(x, target=target),
            theirs=lambda: ixg.attribute(x, target=target),
            goal=("ratio<=", 1.1),
            passes=1,
            unit=lambda: forward_backward(model, x, target),
            check=check,
            note=f"VGG-style CNN, batch {batch} x 3x32x32",
        )
    ]
