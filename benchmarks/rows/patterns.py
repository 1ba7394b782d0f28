"""Pattern methods vs their Captum / plain-forward counterparts.

- PatternGuidedIG vs Captum IntegratedGradients, equal n_steps and
  internal_batch_size (goal ratio <= 1.2). Timed with unit patterns (A = 1),
  where PGIG must equal IG exactly; the pattern values do not change the cost.
- PatternAttribution vs Captum Saliency (goal ratio <= 1.3); with unit patterns
  PA = y_c * gradient, which the check verifies.
- fit_patterns vs a plain forward pass over the same batches (goal ratio <= 3);
  the check recomputes the last layer's pattern (eq. 2) from that forward pass.
  Lower bound: 3 forward passes (the forward, plus the two im2col products
  sum x [M, M y], each costing what the layer's forward costs).
"""

from __future__ import annotations

import torch
from captum.attr import IntegratedGradients, Saliency
from torch import Tensor, nn

from benchmarks.harness import BenchRow
from benchmarks.models import forward_backward, image_batch
from captum_ext.attr import (
    PatternAttribution,
    PatternGuidedIG,
    PatternSet,
    fit_patterns,
)


def _unit_patterns(model: nn.Module) -> PatternSet:
    return PatternSet(
        {
            n: torch.ones_like(m.weight)
            for n, m in model.named_modules()
            if isinstance(m, (nn.Linear, nn.Conv2d))
        }
    )


def _last_layer_pattern(h: Tensor, y: Tensor, w: Tensor) -> Tensor:
    """Eq. 2 (relu kind) for a Linear layer from its inputs h and outputs y."""
    h, y, w = h.double(), y.double(), w.double()
    mask = (y > 0).double()
    count = mask.sum(0).clamp_min(1)
    mean_x = (mask.T @ h) / count[:, None]
    mean_xy = ((mask * y).T @ h) / count[:, None]
    num = mean_xy - mean_x * y.mean(0)[:, None]
    den = (w * num).sum(1)
    return num / torch.where(den == 0, torch.ones_like(den), den)[:, None]


def rows(device: torch.device, quick: bool) -> list[BenchRow]:
    batch = 8 if quick else 32
    n_steps = 8 if quick else 32
    ibs = batch * (4 if quick else 16)
    model, x, target = image_batch(batch, device)
    unit = _unit_patterns(model)
    pgig = PatternGuidedIG(model, unit)
    ig = IntegratedGradients(model)

    def check_pgig(ours: Tensor, theirs: Tensor) -> None:
        torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-6)

    pa = PatternAttribution(model, unit)
    sal = Saliency(model)

    def check_pa(ours: Tensor, theirs: Tensor) -> None:
        with torch.no_grad():
            y_c = model(x).gather(1, target[:, None])[:, :, None, None]
        torch.testing.assert_close(ours, y_c * theirs, rtol=1e-4, atol=1e-6)

    n_batches, fit_batch = (2, 32) if quick else (8, 128)
    gen = torch.Generator().manual_seed(1)
    data = [
        torch.randn(fit_batch, 3, 32, 32, generator=gen).to(device)
        for _ in range(n_batches)
    ]
    body, head = model[:-1], model[-1]

    def plain_forward() -> tuple[list[Tensor], list[Tensor]]:
        hs, ys = [], []
        with torch.no_grad():
            for b in data:
                h = body(b)
                hs.append(h)
                ys.append(head(h))
        return hs, ys

    def check_fit(ours: PatternSet, theirs: tuple[list[Tensor], list[Tensor]]) -> None:
        hs, ys = theirs
        ref = _last_layer_pattern(torch.cat(hs), torch.cat(ys), head.weight.detach())
        got = ours[str(len(model) - 1)].double()
        torch.testing.assert_close(
            got, ref.to(got), rtol=1e-4, atol=1e-5 * float(ref.abs().max())
        )

    return [
        BenchRow(
            name=f"PatternGuidedIG (n_steps={n_steps}, ibs={ibs})",
            counterpart="IntegratedGradients",
            kind="Captum",
            ours=lambda: pgig.attribute(
                x, target=target, n_steps=n_steps, internal_batch_size=ibs
            ),
            theirs=lambda: ig.attribute(
                x, target=target, n_steps=n_steps, internal_batch_size=ibs
            ),
            goal=("ratio<=", 1.2),
            passes=n_steps,
            unit=lambda: forward_backward(model, x, target),
            check=check_pgig,
            note=f"VGG-style CNN, batch {batch} x 3x32x32, unit patterns",
        ),
        BenchRow(
            name="PatternAttribution",
            counterpart="Saliency",
            kind="Captum",
            ours=lambda: pa.attribute(x, target=target),
            theirs=lambda: sal.attribute(x, target=target, abs=False),
            goal=("ratio<=", 1.3),
            passes=1,
            unit=lambda: forward_backward(model, x, target),
            check=check_pa,
            note=f"VGG-style CNN, batch {batch} x 3x32x32, unit patterns",
        ),
        BenchRow(
            name="fit_patterns (relu kind)",
            counterpart="plain forward pass",
            kind="forward pass",
            ours=lambda: fit_patterns(model, data, kind="relu"),
            theirs=plain_forward,
            goal=("ratio<=", 3.0),
            # the forward plus two im2col products of each layer's forward cost
            passes=3,
            unit=plain_forward,
            check=check_fit,
            note=f"VGG-style CNN, {n_batches} batches of {fit_batch} x 3x32x32",
        ),
    ]
