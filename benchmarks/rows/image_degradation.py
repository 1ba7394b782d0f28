"""image_degradation vs Quantus RegionPerturbation and vs a naive step loop.

Matched with Quantus 0.6.0 (``quantus.RegionPerturbation``, read in its source):

- patches: Quantus tiles the (padded) image with ``view_as_blocks`` into
  ``patch_size x patch_size`` blocks over all channels, row-major; with image
  sides that are multiples of ``patch_size`` (28 and 32 with patches of 2 or 4
  here) there is no padding and the blocks are exactly our patches, in the same
  numbering;
- order: Quantus sums the attributions over each block (all channels) and sorts
  with ``np.argsort(-sums)`` ("morf"); we sum the channel-summed map per patch
  and sort descending (continuous random attributions: no ties, so the
  unstable numpy sort and our stable sort agree);
- fill: the paper's per-channel patch mean through a ``perturb_func`` that
  writes each block's per-channel mean (Quantus's built-in "mean" baseline is
  the whole image's mean, not the patch's), and, in a second row, Quantus's
  stock constant baseline ``perturb_baseline=0.0`` against our
  ``fill="zero"``;
- scores: Quantus records ``softmax(f(x))_y - softmax(f(x_k))_y`` for
  k = 1..regions_evaluation; we return ``p_0 .. p_n``, so the check compares
  ``p_0 - p_k`` with Quantus's values (and never its ``np.trapz`` AUC, broken
  on NumPy 2). Quantus runs one forward pass of the whole batch per step, as we
  do with ``max_examples_per_batch`` = the batch size.

Two settings: LeNet on 1x28x28 (the model of Quantus's MNIST tutorials), where
a forward pass is cheap and the per-step work around it shows; and the shared
VGG-style CNN on 3x32x32, where forward passes dominate and every correct
implementation is close to the forward-pass lower bound.

Quantus is LGPL and never a dependency: its rows appear only when it is
importable (``PYTHONPATH=/work/bench-extra``); the naive-loop row always runs.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from benchmarks.harness import BenchRow
from benchmarks.models import cifar_cnn, image_batch
from captum_ext.metrics import image_degradation
from captum_ext.metrics._curves import patch_region_map


def _forward(model: nn.Module, x: Tensor) -> None:
    """The unit of cost: one plain forward pass of the batch, no grad."""
    with torch.no_grad():
        model(x)


def _naive_loop(
    model: nn.Module, x: Tensor, a: Tensor, target: Tensor, patch: int, n_steps: int
) -> Tensor:
    """A hand-written torch loop: one in-place patch write and forward per step."""
    with torch.no_grad():
        bsz, _, height, width = x.shape
        rm, n = patch_region_map(height, width, patch)
        rm = rm.to(x.device)
        scores = torch.zeros(bsz, n, device=x.device)
        scores.index_add_(1, rm.flatten(), a.sum(1).flatten(1))
        order = scores.argsort(dim=1, descending=True, stable=True)
        rows = torch.arange(bsz, device=x.device)
        current = x.clone()
        out = [torch.softmax(model(current), 1)[rows, target]]
        for k in range(n_steps):
            mask = (rm[None] == order[:, k, None, None])[:, None]  # (bsz, 1, H, W)
            count = mask.sum((2, 3), keepdim=True)
            mean = (x * mask).sum((2, 3), keepdim=True) / count
            current = torch.where(mask, mean, current)
            out.append(torch.softmax(model(current), 1)[rows, target])
        return torch.stack(out, 1)


def _quantus_rows(
    model: nn.Module,
    x: Tensor,
    a: Tensor,
    target: Tensor,
    patch: int,
    n_steps: int,
    batch: int,
    note: str,
    short: str,
) -> list[BenchRow]:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import quantus
    except Exception:  # not installed (CI) or broken: no Quantus rows
        return []
    x_np, a_np, y_np = x.cpu().numpy(), a.cpu().numpy(), target.cpu().numpy()

    def patch_mean(arr: np.ndarray, indices: np.ndarray, **kwargs: Any) -> np.ndarray:
        # indices: one block per example over (C, p, p), channel-major
        out = arr.copy()
        b = np.arange(arr.shape[0])[:, None]
        vals = arr[b, indices].reshape(arr.shape[0], -1, patch * patch)
        means = np.repeat(vals.mean(-1, keepdims=True), patch * patch, -1)
        out[b, indices] = means.reshape(arr.shape[0], -1)
        return out

    def metric(**fill: Any) -> Any:
        return quantus.RegionPerturbation(
            patch_size=patch,
            order="morf",
            regions_evaluation=n_steps,
            abs=False,
            normalise=False,
            disable_warnings=True,
            display_progressbar=False,
            **fill,
        )

    def run_quantus(m: Any) -> np.ndarray:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            scores = m(
                model=model,
                x_batch=x_np,
                y_batch=y_np,
                a_batch=a_np,
                device=str(x.device),
                batch_size=batch,
                softmax=True,
                channel_first=True,
            )
        return np.stack(scores)

    def check(ours: Tensor, theirs: np.ndarray) -> None:
        drop = (ours[:, :1] - ours[:, 1:]).cpu()
        torch.testing.assert_close(drop, torch.from_numpy(theirs), rtol=1e-5, atol=1e-6)

    rows = []
    for label, ours_fill, fill_kwargs in (
        ("patch mean", "patch_mean", {"perturb_func": patch_mean}),
        ("zero", "zero", {"perturb_baseline": 0.0}),
    ):
        m = metric(**fill_kwargs)

        def ours(fill: str = ours_fill) -> Tensor:
            return image_degradation(
                model, x, a, target, patch, n_steps, fill, max_examples_per_batch=batch
            )

        rows.append(
            BenchRow(
                name=f"image_degradation ({short}, {label} fill)",
                counterpart="quantus.RegionPerturbation",
                kind="Quantus",
                ours=ours,
                theirs=lambda m=m: run_quantus(m),
                goal=("speedup>=", 1.5),
                passes=n_steps + 1,
                unit=lambda: _forward(model, x),
                unit_kind="fwd",
                check=check,
                note=f"{note}; same patches, MoRF order, {label} fill, softmax "
                "of the label; curves compared as p_0 - p_k",
            )
        )
    return rows


def lenet(num_classes: int = 10) -> nn.Sequential:
    """LeNet-5 for 1x28x28 images, the model of Quantus's own MNIST tutorials."""
    return nn.Sequential(
        nn.Conv2d(1, 6, 5),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(6, 16, 5),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(16 * 4 * 4, 120),
        nn.ReLU(),
        nn.Linear(120, 84),
        nn.ReLU(),
        nn.Linear(84, num_classes),
    )


def rows(device: torch.device, quick: bool) -> list[BenchRow]:
    batch, patch, n_steps = (8, 4, 25) if quick else (32, 2, 100)
    gen = torch.Generator().manual_seed(1)
    out: list[BenchRow] = []
    settings = (
        ("LeNet (Quantus's MNIST tutorial model)", lenet, (1, 28, 28), True),
        ("VGG-style CNN (forward-bound)", cifar_cnn, (3, 32, 32), False),
    )
    for label, make_model, shape, all_rows in settings:
        model, x, target = image_batch(
            batch, device, make_model=make_model, shape=shape
        )
        a = torch.randn(x.shape, generator=gen).to(device)
        note = (
            f"{label}, batch {batch} x {'x'.join(map(str, shape))}, "
            f"{patch}x{patch} patches, {n_steps} steps"
        )
        short = f"{label.split()[0]} {'x'.join(map(str, shape))}"
        quantus_rows = _quantus_rows(
            model, x, a, target, patch, n_steps, batch, note, short
        )
        out.extend(quantus_rows if all_rows else quantus_rows[:1])
        if all_rows:
            out.append(
                _naive_row(model, x, a, target, patch, n_steps, batch, note, short)
            )
    return out


def _naive_row(
    model: nn.Module,
    x: Tensor,
    a: Tensor,
    target: Tensor,
    patch: int,
    n_steps: int,
    batch: int,
    note: str,
    short: str,
) -> BenchRow:
    def ours() -> Tensor:
        return image_degradation(
            model, x, a, target, patch, n_steps, max_examples_per_batch=batch
        )

    def check(ours_out: Tensor, naive_out: Tensor) -> None:
        torch.testing.assert_close(ours_out, naive_out, rtol=1e-5, atol=1e-6)

    return BenchRow(
        name=f"image_degradation ({short}, patch mean fill)",
        counterpart="torch step loop",
        kind="naive",
        ours=ours,
        theirs=lambda: _naive_loop(model, x, a, target, patch, n_steps),
        goal=("ratio<=", 1.1),
        passes=n_steps + 1,
        unit=lambda: _forward(model, x),
        unit_kind="fwd",
        check=check,
        note=f"{note}; one in-place patch write + forward per step",
    )
