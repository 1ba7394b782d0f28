"""Every method on an unmodified torchvision ResNet-18 at 3x224x224.

Issue "real architectures", item 5: each method against its Captum (or naive)
counterpart and its pass-count lower bound, on ``torchvision.models.resnet18``
(``weights=None``, ``num_classes=10``, eval mode; random weights, BatchNorm
statistics as initialised). ``--quick`` (and the test suite) uses 3x32x32.

- GradientSignInput vs Captum InputXGradient (goal ratio <= 1.1); one
  forward+backward pass. Check: ``GxSI * x == IxG * sign(x)``.
- PatternGuidedIG vs Captum IntegratedGradients, unit patterns (A = 1: PGIG
  must equal IG, BatchNorm folded inside), goal ratio <= 1.1; ``n_steps``
  passes.
- PatternAttribution vs Captum Saliency, unit patterns (PA = y_c * gradient),
  goal ratio <= 1.1; one pass.
- DistributionalIG (K references) vs a loop of K Captum IntegratedGradients
  calls, averaged (equal results), goal ratio <= 1.1; K passes of
  ``bsz * n_steps`` points.
- PatchConductance (jvp, whole-image patch) on ``layer2`` vs Captum
  LayerConductance, goal ratio <= 1.1; one pass over ``n_steps`` path copies.
  The same with ``directional="finite_difference"`` (Captum's approach:
  differences of the layer's values; here one more forward pass of the
  first half at the shifted points).
- LearnedMask (upsample 4) on a batch vs single-image runs (goal ratio <= 1.1:
  on a compute-bound CPU the batch cannot be much faster, but it must not be
  slower); ``n_iter`` passes over the image x distractor pairs.
- image_degradation (patch 9, 100 steps) vs a hand-written torch step loop
  (equal curves), goal ratio <= 1.1; ``n_steps + 1`` forward passes.
- fit_patterns vs a plain forward pass over the same batches (goal: at most 3
  forward passes); the check recomputes the ``fc`` pattern (eq. 2).
"""

from __future__ import annotations

from functools import cache
from typing import Any

import torch
from captum.attr import (
    InputXGradient,
    IntegratedGradients,
    LayerConductance,
    Saliency,
)
from torch import Tensor, nn

from benchmarks.harness import BenchRow
from benchmarks.models import forward_backward
from benchmarks.rows.ig_extensions import _assert_l2_close, _expanded_unit
from benchmarks.rows.image_degradation import _forward, _naive_loop
from benchmarks.rows.patterns import _last_layer_pattern, _unit_patterns
from captum_ext.attr import (
    DistributionalIG,
    GradientSignInput,
    LearnedMask,
    PatchConductance,
    PatternAttribution,
    PatternGuidedIG,
    PatternSet,
    fit_patterns,
)
from captum_ext.metrics import image_degradation


def _resnet18(device: torch.device) -> nn.Module | None:
    try:
        import torchvision.models as tvm  # type: ignore[import-untyped]
    except ImportError:
        return None
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = tvm.resnet18(weights=None, num_classes=10)
    return model.eval().to(device)


def _close(rtol: float = 1e-4) -> Any:
    def check(a: Tensor, b: Tensor) -> None:
        scale = float(b.abs().max())
        torch.testing.assert_close(a, b, rtol=rtol, atol=rtol * scale)

    return check


def rows(device: torch.device, quick: bool) -> list[BenchRow]:
    model = _resnet18(device)
    if model is None:
        return []
    side = 32 if quick else 224
    size = f"3x{side}x{side}"
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, side, side, generator=gen).to(device)
    target = torch.tensor([1, 7], device=device)
    x1, t1 = x[:1], target[:1]
    unit_pass = lambda: forward_backward(model, x, target)  # noqa: E731
    note = f"torchvision resnet18 (weights=None), eval mode, {size}"
    out: list[BenchRow] = []

    # -- GxSI vs InputXGradient
    gxsi, ixg = GradientSignInput(model), InputXGradient(model)

    def check_gxsi(ours: Tensor, theirs: Tensor) -> None:
        _close()(ours * x, theirs * x.sign())

    out.append(
        BenchRow(
            name="GradientSignInput (resnet18)",
            counterpart="InputXGradient",
            kind="Captum",
            ours=lambda: gxsi.attribute(x, target=target),
            theirs=lambda: ixg.attribute(x, target=target),
            goal=("ratio<=", 1.1),
            passes=1,
            unit=unit_pass,
            check=check_gxsi,
            note=f"{note}, batch 2",
        )
    )

    # -- pattern methods with unit patterns (the pattern values do not change
    # the cost; with A = 1 the backward rule is the folded network's gradient)
    unit = _unit_patterns(model)
    n_steps = 4 if quick else 8
    # built on first use, so that a refusal fails this row only
    pgig = cache(lambda: PatternGuidedIG(model, unit))
    ig = IntegratedGradients(model)
    out.append(
        BenchRow(
            name=f"PatternGuidedIG (resnet18, n_steps={n_steps})",
            counterpart="IntegratedGradients",
            kind="Captum",
            ours=lambda: pgig().attribute(x1, target=t1, n_steps=n_steps),
            theirs=lambda: ig.attribute(x1, target=t1, n_steps=n_steps),
            goal=("ratio<=", 1.1),
            passes=1,
            unit=_expanded_unit(model, x1, t1, n_steps),
            check=_close(1e-3),
            note=f"{note}, batch 1, unit patterns (PGIG = IG)",
        )
    )
    pa = cache(lambda: PatternAttribution(model, unit))
    sal = Saliency(model)

    def check_pa(ours: Tensor, theirs: Tensor) -> None:
        with torch.no_grad():
            y_c = model(x).gather(1, target[:, None])[:, :, None, None]
        _close(1e-3)(ours, y_c * theirs)

    out.append(
        BenchRow(
            name="PatternAttribution (resnet18)",
            counterpart="Saliency",
            kind="Captum",
            ours=lambda: pa().attribute(x, target=target),
            theirs=lambda: sal.attribute(x, target=target, abs=False),
            goal=("ratio<=", 1.1),
            passes=1,
            unit=unit_pass,
            check=check_pa,
            note=f"{note}, batch 2, unit patterns (PA = y_c * gradient)",
        )
    )

    # -- DistributionalIG vs a loop of IG calls
    k = 2
    refs = torch.randn(k, 3, side, side, generator=gen).to(device)
    dig = DistributionalIG(model)

    def dig_loop() -> Tensor:
        total = torch.zeros_like(x1)
        for j in range(k):
            total += ig.attribute(
                x1,
                baselines=refs[j : j + 1],
                target=t1,
                n_steps=n_steps,
                method="gausslegendre",
            )
        return total / k

    out.append(
        BenchRow(
            name=f"DistributionalIG (resnet18, K = {k}, {n_steps} steps)",
            counterpart=f"IntegratedGradients loop x {k}",
            kind="Captum",
            ours=lambda: dig.attribute(x1, baselines=refs, target=t1, n_steps=n_steps),
            theirs=dig_loop,
            goal=("ratio<=", 1.1),
            passes=k,
            unit=_expanded_unit(model, x1, t1, n_steps),
            check=_close(1e-3),
            note=f"{note}, batch 1",
        )
    )

    # -- PatchConductance vs LayerConductance on layer2
    layer = model.get_submodule("layer2")
    everything = torch.ones(1, 1, side, side, dtype=torch.bool, device=device)
    pc, lc = PatchConductance(model, layer), LayerConductance(model, layer)
    pc_unit = _expanded_unit(model, x1, t1, n_steps)
    # jvp: exact directional derivatives by forward-mode AD; finite_difference:
    # Captum's own approach (differences of the layer's values), at the
    # quadrature points themselves, which costs a second forward pass of the
    # first half of the model at the shifted points
    for directional in ("jvp", "finite_difference"):
        out.append(
            BenchRow(
                name=(
                    f"PatchConductance (resnet18 layer2, {directional}, "
                    f"{n_steps} steps)"
                ),
                counterpart="LayerConductance",
                kind="Captum",
                ours=lambda d=directional: pc.attribute(
                    x1, everything, target=t1, n_steps=n_steps, directional=d
                ),
                theirs=lambda: lc.attribute(
                    x1, target=t1, n_steps=n_steps, method="riemann_trapezoid"
                ),
                goal=("ratio<=", 1.1),
                passes=1,
                unit=pc_unit,
                # two quadratures of the same integral: they agree only as
                # n_steps grows on a residual stage, so a loose relative-L2 check
                check=lambda a, b: _assert_l2_close(a, b.detach(), tol=1.5),
                note=f"{note}, batch 1, whole-image patch",
            )
        )

    # -- LearnedMask (upsample 4): batch of 2 vs 2 single runs
    n_iter = 2 if quick else 3
    pool = torch.randn(2, 3, side, side, generator=gen).to(device)
    lm = LearnedMask(model)
    kw: dict[str, Any] = dict(
        distractors=pool, n_distractors=None, n_iter=n_iter, upsample=4
    )
    mixed = (pool.unsqueeze(0) + x.unsqueeze(1)).reshape(-1, *x.shape[1:])
    mixed_target = target.repeat_interleave(pool.shape[0])

    def lm_unit() -> None:
        leaf = mixed.detach().requires_grad_(True)
        logp = torch.log_softmax(model(leaf), 1).gather(1, mixed_target[:, None])
        torch.autograd.grad(logp.sum(), leaf)

    def check_lm(ours: Tensor, theirs: Tensor) -> None:
        diff = (ours - theirs).abs()
        assert diff.max() < 5e-3 and diff.mean() < 1e-4, (diff.max(), diff.mean())

    out.append(
        BenchRow(
            name=f"LearnedMask (resnet18, upsample 4, batch 2, {n_iter} steps)",
            counterpart="LearnedMask, 2 single-image runs",
            kind="naive",
            ours=lambda: lm.attribute(x, target=target, **kw),
            theirs=lambda: torch.cat(
                [
                    lm.attribute(x[i : i + 1], target=target[i : i + 1], **kw)
                    for i in range(2)
                ]
            ),
            goal=("ratio<=", 1.1),
            passes=n_iter,
            unit=lm_unit,
            check=check_lm,
            note=f"{note}, 2 distractors (all used at every step)",
        )
    )

    # -- image_degradation (patch 9, 100 steps) vs a torch step loop
    patch, deg_steps = (9, 8) if quick else (9, 100)
    a = torch.randn(x1.shape, generator=gen).to(device)
    out.append(
        BenchRow(
            name=f"image_degradation (resnet18, patch {patch}, {deg_steps} steps)",
            counterpart="torch step loop",
            kind="naive",
            ours=lambda: image_degradation(
                model, x1, a, t1, patch, deg_steps, max_examples_per_batch=1
            ),
            theirs=lambda: _naive_loop(model, x1, a, t1, patch, deg_steps),
            goal=("ratio<=", 1.1),
            passes=deg_steps + 1,
            unit=lambda: _forward(model, x1),
            unit_kind="fwd",
            check=_close(1e-4),
            note=f"{note}, batch 1, max_examples_per_batch=1",
        )
    )

    # -- fit_patterns vs a plain forward pass
    fit_batch = 2 if quick else 4
    data = [
        torch.randn(fit_batch, 3, side, side, generator=gen).to(device)
        for _ in range(2)
    ]
    fc = model.get_submodule("fc")

    def plain_forward() -> tuple[list[Tensor], list[Tensor]]:
        hs: list[Tensor] = []
        ys: list[Tensor] = []
        handle = fc.register_forward_hook(
            lambda m, args, y: (hs.append(args[0]), ys.append(y))
        )
        try:
            with torch.no_grad():
                for b in data:
                    model(b)
        finally:
            handle.remove()
        return hs, ys

    def check_fit(ours: PatternSet, theirs: tuple[list[Tensor], list[Tensor]]) -> None:
        hs, ys = theirs
        ref = _last_layer_pattern(torch.cat(hs), torch.cat(ys), fc.weight.detach())
        got = ours["fc"].double()
        torch.testing.assert_close(
            got, ref.to(got), rtol=1e-4, atol=1e-5 * float(ref.abs().max())
        )

    out.append(
        BenchRow(
            name="fit_patterns (resnet18, relu kind)",
            counterpart="plain forward pass",
            kind="forward pass",
            ours=lambda: fit_patterns(model, data, kind="relu"),
            theirs=plain_forward,
            goal=("ratio<=", 3.0),
            passes=3,
            unit=plain_forward,
            unit_kind="fwd",
            check=check_fit,
            note=f"{note}, 2 batches of {fit_batch}, BatchNorm folded inside",
        )
    )
    return out
