"""LearnedMask batched vs one image at a time; deletion_auc vs Quantus PixelFlipping.

1. LearnedMask on a batch of 16 images vs 16 single-image runs (goal: batch at
   least 4x faster per image). A pool of 10 distractors used whole at every step
   (``n_distractors=None``: the same work as 10 random draws, but deterministic,
   so the two sides must return equal masks). Lower bound: ``n_iter`` forward +
   backward passes over 16 x 10 images. Two models: the bundled 8x8 digits CNN
   (cheap passes: a single image's steps are dominated by per-step overhead) and
   a VGG-style CNN on 3x32x32 (compute-bound on a CPU, where a 10-image pass is
   already efficient and batching gains little; the gain is a GPU's).
2. ``deletion_auc`` vs Quantus ``PixelFlipping`` (goal: at least 1.5x faster),
   same inputs, same pixel order (continuous attributions: no ties), zero fill,
   softmax probabilities, the same number of images per forward pass; the
   curves must be equal (Quantus' curve has no intact-input point, ours starts
   with it). Quantus 0.6's AUC helper uses ``np.trapz`` (gone in NumPy 2.4), so
   only its curves are compared. Two sizes: the bundled 8x8 digits CNN (cheap
   forward passes, where Quantus' per-step overhead shows) and the same CNN on
   28x28 images (compute-bound: both sides are close to the lower bound of
   ``n_steps + 1`` forward passes, so no large ratio is possible on a CPU).
   Quantus is optional: without it these rows are left out.
"""

from __future__ import annotations

import warnings
from typing import Any

import torch
from torch import Tensor

from benchmarks.harness import BenchRow
from benchmarks.models import image_batch
from captum_ext.attr import LearnedMask
from captum_ext.metrics import deletion_auc
from captum_ext.models import digits_cnn


def _learned_mask_row(device: torch.device, quick: bool, digits: bool) -> BenchRow:
    n_iter = 3 if quick else 10
    if digits:  # the bundled 8x8 digits CNN: cheap passes, overhead matters
        model, x, target = image_batch(
            16, device, make_model=digits_cnn, shape=(1, 8, 8)
        )
        note = "digits CNN, 16 x 1x8x8"
    else:  # compute-bound on a CPU
        model, x, target = image_batch(16, device)
        note = "VGG-style CNN, 16 x 3x32x32"
    pool = torch.randn(10, *x.shape[1:], generator=torch.Generator().manual_seed(1)).to(
        device
    )
    lm = LearnedMask(model)
    kw: dict[str, Any] = dict(
        distractors=pool, n_distractors=None, n_iter=n_iter, tv_coeff=0.01
    )

    def batched() -> Tensor:
        return lm.attribute(x, target=target, **kw)

    def singles() -> Tensor:
        return torch.cat(
            [
                lm.attribute(x[i : i + 1], target=target[i : i + 1], **kw)
                for i in range(x.shape[0])
            ]
        )

    mixed = (pool.unsqueeze(0) + x.unsqueeze(1)).reshape(-1, *x.shape[1:])
    mixed_target = target.repeat_interleave(pool.shape[0])

    def unit() -> None:
        leaf = mixed.detach().requires_grad_(True)
        out = torch.log_softmax(model(leaf), 1).gather(1, mixed_target[:, None])
        torch.autograd.grad(out.sum(), leaf)

    def check(ours: Tensor, theirs: Tensor) -> None:
        # Adam's normalised step turns last-bit differences of batched convs
        # into visible ones where a gradient is ~0: allow a few such pixels.
        diff = (ours - theirs).abs()
        assert diff.max() < 5e-3 and diff.mean() < 1e-5, (diff.max(), diff.mean())

    return BenchRow(
        name=f"LearnedMask (batch of 16, {'8x8' if digits else '32x32'})",
        counterpart="LearnedMask, 16 single-image runs",
        kind="naive",
        ours=batched,
        theirs=singles,
        goal=("speedup>=", 4.0),
        passes=n_iter,
        unit=unit,
        check=check,
        note=f"{note}, 10 distractors, {n_iter} Adam steps",
    )


def _quantus() -> Any:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import quantus
    except Exception:  # not installed, or broken in this environment
        return None
    return quantus


def _deletion_row(
    device: torch.device, side: int, batch: int, per_step: int, quantus: Any
) -> BenchRow:
    n_steps = side * side // per_step
    gen = torch.Generator().manual_seed(0)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = digits_cnn(image_size=side).eval().to(device)
    x = torch.randn(batch, 1, side, side, generator=gen).to(device)
    attr = torch.randn(batch, 1, side, side, generator=gen).to(device)
    with torch.no_grad():
        target = model(x).argmax(1)
    x_np, a_np, y_np = x.cpu().numpy(), attr.cpu().numpy(), target.cpu().numpy()
    metric = quantus.PixelFlipping(
        features_in_step=per_step,
        perturb_baseline=0.0,
        normalise=False,
        abs=False,
        disable_warnings=True,
    )

    def ours() -> Tensor:
        _, curves = deletion_auc(
            model,
            x,
            attr,
            target=target,
            fill="zero",
            n_steps=n_steps,
            return_curves=True,
            max_examples_per_batch=batch,  # Quantus' batch: same memory per pass
        )
        return curves

    def theirs() -> Tensor:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            curves = metric(
                model=model,
                x_batch=x_np,
                y_batch=y_np,
                a_batch=a_np,
                device=str(device),
                softmax=True,
                channel_first=True,
                batch_size=batch,
            )
        return torch.tensor(curves, dtype=torch.float32)

    def unit() -> None:
        with torch.no_grad():
            model(x)

    def check(our_curves: Tensor, their_curves: Tensor) -> None:
        torch.testing.assert_close(
            our_curves[:, 1:].cpu(), their_curves, rtol=1e-4, atol=1e-5
        )

    return BenchRow(
        name=f"deletion_auc ({side}x{side}, zero fill)",
        counterpart="PixelFlipping",
        kind="Quantus",
        ours=ours,
        theirs=theirs,
        goal=("speedup>=", 1.5),
        passes=n_steps + 1,
        unit=unit,
        check=check,
        note=f"digits CNN, {batch} x 1x{side}x{side}, {n_steps} steps of {per_step} px",
    )


def rows(device: torch.device, quick: bool) -> list[BenchRow]:
    out = [
        _learned_mask_row(device, quick, True),
        _learned_mask_row(device, quick, False),
    ]
    quantus = _quantus()
    if quantus is not None:
        # The bundled 8x8 digits (a cheap model: per-step overhead matters) and
        # 28x28 images (compute-bound: both sides near the forward-pass bound).
        out.append(_deletion_row(device, 8, 64 if quick else 256, 1, quantus))
        out.append(_deletion_row(device, 28, 16 if quick else 64, 16, quantus))
    return out
