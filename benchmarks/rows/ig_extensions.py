"""IG extensions: PatchConductance and DistributionalIG against Captum.

- PatchConductance (jvp) with the whole image as the patch (= conductance) vs
  Captum LayerConductance, same steps, on a conv layer of the VGG-style CNN
  (goal ratio <= 2).
- PatchConductance of a patch vs the naive way: Captum NeuronConductance called
  once per neuron of a 64-neuron layer, summed over the patch (goal >= 50x).
- DistributionalIG over K = 16 references vs a Python loop of Captum
  IntegratedGradients over the references, averaged (goal >= 1.5x).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from captum.attr import IntegratedGradients, LayerConductance, NeuronConductance
from torch import Tensor

from benchmarks.harness import BenchRow
from benchmarks.models import forward_backward, image_batch
from captum_ext.attr import DistributionalIG, PatchConductance
from captum_ext.models import digits_cnn


def _assert_l2_close(a: Tensor, b: Tensor, tol: float = 0.15) -> None:
    """Relative L2 difference below ``tol`` (for approximations of ``b``)."""
    rel = (a - b).norm() / b.norm()
    assert rel < tol, f"relative L2 difference {rel:.3f}"


def _digits_batch(
    batch: int, device: torch.device
) -> tuple[torch.nn.Module, Tensor, Tensor]:
    return image_batch(batch, device, make_model=digits_cnn, shape=(1, 8, 8))


def _expanded_unit(
    model: torch.nn.Module, x: Tensor, target: Tensor, copies: int
) -> Callable[[], None]:
    """One forward+backward pass over ``copies`` copies of the batch (the
    lower bound of a method evaluating that many path points)."""
    xx, tt = x.repeat((copies,) + (1,) * (x.dim() - 1)), target.repeat(copies)
    return lambda: forward_backward(model, xx, tt)


def _conductance_row(
    device: torch.device, quick: bool, index: int, shape: str
) -> BenchRow:
    batch, n_steps = (4, 16) if quick else (16, 32)
    model, x, target = image_batch(batch, device)
    layer = model[index]
    everything = torch.ones(1, 1, 32, 32, dtype=torch.bool, device=device)
    pc, lc = PatchConductance(model, layer), LayerConductance(model, layer)
    method = "riemann_trapezoid"

    def ours() -> Tensor:
        return pc.attribute(
            x, everything, target=target, n_steps=n_steps, method=method
        )

    def theirs() -> Tensor:
        return lc.attribute(x, target=target, n_steps=n_steps, method=method)

    def check(a: Tensor, b: Tensor) -> None:
        # the same quantity (conductance), integrated two ways: exact
        # directional derivatives at the trapezoid points vs Captum's finite
        # differences of the layer between consecutive points
        _assert_l2_close(a, b.detach())

    return BenchRow(
        name=f"PatchConductance (jvp, {n_steps} steps, layer {index})",
        counterpart="LayerConductance",
        kind="Captum",
        ours=ours,
        theirs=theirs,
        goal=("ratio<=", 2.0),
        passes=1,
        unit=_expanded_unit(model, x, target, n_steps),
        check=check,
        note=f"VGG-style CNN, batch {batch} x 3x32x32, layer {shape}; lower "
        "bound: one forward+backward over all path points",
    )


def _naive_rows(device: torch.device, quick: bool) -> list[BenchRow]:
    batch, n_steps = (8, 16) if quick else (32, 32)
    model, x, target = _digits_batch(batch, device)
    layer = model[7]  # ReLU of the hidden linear layer: 64 neurons
    patch = torch.zeros(1, 1, 8, 8, device=device)
    patch[..., 2:6, 2:6] = 1.0
    pc, nc = PatchConductance(model, layer), NeuronConductance(model, layer)

    def theirs() -> Tensor:
        cols = [
            (nc.attribute(x, j, target=target, n_steps=n_steps) * patch).sum(
                dim=(1, 2, 3)
            )
            for j in range(64)
        ]
        return torch.stack(cols, dim=1)

    # the same points and weights (NeuronConductance's default method)
    method = "riemann_trapezoid"

    def exact(a: Tensor, b: Tensor) -> None:
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)

    def close(a: Tensor, b: Tensor) -> None:
        # finite differences with step 1/n_steps (first order; the ReLU kinks
        # of this random network make it coarse): close, not equal
        _assert_l2_close(a, b)

    out = []
    for directional, check in (("jvp", exact), ("finite_difference", close)):

        def ours(directional: str = directional) -> Tensor:
            return pc.attribute(
                x,
                patch.bool(),
                target=target,
                n_steps=n_steps,
                method=method,
                directional=directional,  # type: ignore[arg-type]
            )

        out.append(
            BenchRow(
                name=f"PatchConductance ({directional}, 64 neurons, {n_steps} steps)",
                counterpart="NeuronConductance x 64",
                kind="naive",
                ours=ours,
                theirs=theirs,
                goal=("speedup>=", 50.0),
                passes=1,
                unit=_expanded_unit(model, x, target, n_steps),
                check=check,
                note=f"digits CNN, batch {batch} x 1x8x8, hidden layer of 64"
                + ("" if directional == "jvp" else "; approximate (L2 < 15%)"),
            )
        )
    return out


def _distributional_rows(device: torch.device, quick: bool) -> list[BenchRow]:
    k = 16
    rows = []
    for label, (model, x, target), n_steps in (
        ("digits CNN", _digits_batch(8 if quick else 32, device), 16 if quick else 32),
        ("VGG-style CNN", image_batch(2 if quick else 4, device), 16),
    ):
        gen = torch.Generator().manual_seed(1)
        refs = torch.randn((k, *tuple(x.shape[1:])), generator=gen).to(device)
        dig, ig = DistributionalIG(model), IntegratedGradients(model)

        def ours(
            dig: DistributionalIG = dig,
            x: Tensor = x,
            refs: Tensor = refs,
            target: Tensor = target,
            n_steps: int = n_steps,
        ) -> Tensor:
            # one pass per bsz * n_steps points, the size of one Captum IG
            # call of the loop (None would be one pass over all K paths)
            return dig.attribute(
                x,
                refs,
                target=target,
                n_steps=n_steps,
                internal_batch_size=x.shape[0] * n_steps,
            )

        def theirs(
            ig: IntegratedGradients = ig,
            x: Tensor = x,
            refs: Tensor = refs,
            target: Tensor = target,
            n_steps: int = n_steps,
        ) -> Tensor:
            total = torch.zeros_like(x)
            for r in refs:
                total += ig.attribute(x, r.expand_as(x), target=target, n_steps=n_steps)
            return total / refs.shape[0]

        def check(a: Tensor, b: Tensor) -> None:
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)

        rows.append(
            BenchRow(
                name=f"DistributionalIG (K = {k}, {n_steps} steps)",
                counterpart=f"IntegratedGradients loop x {k}",
                kind="naive",
                ours=ours,
                theirs=theirs,
                goal=("speedup>=", 1.5),
                # k passes of bsz * n_steps points each
                passes=k,
                unit=_expanded_unit(model, x, target, n_steps),
                check=check,
                note=f"{label}, batch {x.shape[0]} x {'x'.join(map(str, x.shape[1:]))}",
            )
        )
    return rows


def rows(device: torch.device, quick: bool) -> list[BenchRow]:
    return [
        # a layer in the middle (ReLU after conv 2) and a deep one (after conv 4):
        # forward-mode AD runs through everything before the layer
        _conductance_row(device, quick, 3, "32x32x32"),
        _conductance_row(device, quick, 8, "64x16x16"),
        *_naive_rows(device, quick),
        *_distributional_rows(device, quick),
    ]
