"""Shared engine for perturbation curves (deletion, insertion, degradation, masks).

A curve replaces (or reveals) the features of an input region by region, in an
order given per example, and records a score of the model's output at chosen
points. Everything is vectorised: for a chunk of (example, point) pairs, the
perturbed inputs are built in one ``torch.where`` from a per-feature *rank*
tensor (the position of the feature's region in the order), and evaluated in
one forward pass. Chunks never hold more than ``max_examples_per_batch``
perturbed inputs, and the result does not depend on the chunking.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal, cast

import torch
import torch.nn.functional as F
from captum._utils.common import (
    _format_additional_forward_args,
    _run_forward,
    _select_targets,
)
from captum._utils.typing import TargetType
from torch import Tensor

from captum_ext._utils.batching import (
    index_forward_args,
    slice_forward_args,
    target_for_rows,
)
from captum_ext._utils.validation import check_broadcasts_to, check_target_in_range
from captum_ext.metrics._fills import gaussian_blur

ScoreFn = Callable[[Tensor], Tensor]


def softmax_scores(output: Tensor) -> Tensor:
    """Softmax over the class dimension (dim 1)."""
    return F.softmax(output, dim=1)


def region_ranks(
    scores: Tensor,
    order: Literal["morf", "lerf", "random"] = "morf",
    generator: torch.Generator | None = None,
) -> Tensor:
    """Position of each region in the replacement order, ``(bsz, n_regions)``.

    ``morf``: most relevant first (descending score); ``lerf``: least relevant
    first; ``random``: a random permutation per example from ``generator``
    (drawn on the generator's device; the global CPU RNG when None).
    Ties are broken by region index (stable sort), so results are deterministic.
    """
    bsz, n = scores.shape
    if order == "random":
        # drawn where the generator lives (CPU for the global RNG)
        device = generator.device if generator is not None else torch.device("cpu")
        keys = torch.rand(bsz, n, generator=generator, device=device)
        keys = keys.to(scores.device)
        perm = keys.argsort(dim=1)
    elif order in ("morf", "lerf"):
        perm = scores.argsort(dim=1, descending=order == "morf", stable=True)
    else:
        raise ValueError(f"`order` must be 'morf', 'lerf' or 'random', got {order!r}.")
    ranks = torch.empty_like(perm)
    ranks.scatter_(1, perm, torch.arange(n, device=perm.device).expand(bsz, n))
    return ranks


def patch_region_map(height: int, width: int, patch_size: int) -> tuple[Tensor, int]:
    """Region id of every pixel for square patches (edge patches may be smaller).

    Returns ``(region_map (H, W) long, n_regions)``.
    """
    rows = torch.arange(height) // patch_size
    cols = torch.arange(width) // patch_size
    n_cols = (width + patch_size - 1) // patch_size
    n_rows = (height + patch_size - 1) // patch_size
    return rows[:, None] * n_cols + cols[None, :], n_rows * n_cols


def region_scores(attributions: Tensor, region_map: Tensor, n_regions: int) -> Tensor:
    """Sum of channel-summed attributions per region, ``(bsz, n_regions)``.

    ``attributions`` is ``(bsz, C, H, W)`` (or ``(bsz, H, W)``); ``region_map``
    is ``(H, W)``.
    """
    a = attributions if attributions.dim() == 3 else attributions.sum(dim=1)
    flat = a.reshape(a.shape[0], -1)
    index = region_map.to(a.device).reshape(1, -1).expand_as(flat)
    out = torch.zeros(a.shape[0], n_regions, dtype=flat.dtype, device=flat.device)
    return out.scatter_add_(1, index, flat)


def feature_ranks(ranks: Tensor, region_map: Tensor) -> Tensor:
    """Rank of every pixel's region, ``(bsz, 1, H, W)`` (broadcasts over channels)."""
    bsz = ranks.shape[0]
    rm = region_map.to(ranks.device)
    per_pixel = ranks.gather(1, rm.reshape(1, -1).expand(bsz, -1))
    return per_pixel.reshape(bsz, 1, *rm.shape)


def batched_outputs(
    forward_func: Callable[..., Any],
    inputs: tuple[Tensor, ...],
    additional_forward_args: Any = None,
    max_examples_per_batch: int | None = None,
) -> Tensor:
    """Model outputs for ``inputs`` in chunks of at most ``max_examples_per_batch``."""
    n = inputs[0].shape[0]
    step = n if max_examples_per_batch is None else max_examples_per_batch
    afa = _format_additional_forward_args(additional_forward_args)
    outs = []
    for start in range(0, n, max(1, step)):
        sl = slice(start, start + step)
        chunk_afa = slice_forward_args(afa, sl, n)
        out = _run_forward(forward_func, tuple(x[sl] for x in inputs), None, chunk_afa)
        outs.append(cast(Tensor, out))
    return torch.cat(outs, dim=0)


def perturbation_curve(
    forward_func: Callable[..., Any],
    inputs: tuple[Tensor, ...],
    fills: tuple[Tensor, ...],
    ranks: tuple[Tensor, ...],
    n_replaced: Tensor,
    mode: Literal["delete", "insert"],
    target: TargetType = None,
    additional_forward_args: Any = None,
    max_examples_per_batch: int | None = None,
    score_fn: ScoreFn = softmax_scores,
) -> Tensor:
    """Scores along a deletion or insertion curve, ``(bsz, n_points)``.

    Args:
        forward_func: The model.
        inputs: Inputs, each ``(bsz, ...)``.
        fills: Replacement values, each broadcastable to its input.
        ranks: Per-feature region rank, each broadcastable to its input;
            features with rank ``< k`` are the first ``k`` regions of the order.
        n_replaced: ``(n_points,)`` number of regions replaced (``delete``: the
            input with its first k regions set to the fill) or revealed
            (``insert``: the fill with the first k regions of the input) at each
            point of the curve.
        mode: ``"delete"`` or ``"insert"``.
        target: Captum target (selected after ``score_fn``).
        additional_forward_args: Extra forward arguments (per-example tensors
            are repeated along the curve).
        max_examples_per_batch: Most perturbed inputs per forward pass (None:
            all at once).
        score_fn: Maps model outputs to scores (softmax by default).

    Returns:
        Tensor: ``(bsz, n_points)`` target scores.
    """
    bsz = inputs[0].shape[0]
    n_points = int(n_replaced.numel())
    total = bsz * n_points
    step = total if max_examples_per_batch is None else max(1, max_examples_per_batch)
    afa = _format_additional_forward_args(additional_forward_args)
    ks = n_replaced.to(inputs[0].device)
    scores = []
    for start in range(0, total, step):
        flat = torch.arange(start, min(start + step, total), device=ks.device)
        ex, pt = flat // n_points, flat % n_points
        perturbed = []
        for x, fill, rank in zip(inputs, fills, ranks):
            shape = (-1,) + (1,) * (x.dim() - 1)
            xe = x[ex]
            # per-example fills follow the chunk; the others broadcast in where
            fe = fill[ex] if fill.dim() == x.dim() and fill.shape[0] > 1 else fill
            re = rank.expand(x.shape[0], *rank.shape[1:])[ex]
            chosen = re < ks[pt].view(shape)
            if mode == "delete":
                perturbed.append(torch.where(chosen, fe, xe))
            else:
                perturbed.append(torch.where(chosen, xe, fe))
        chunk_afa = index_forward_args(afa, ex, bsz)
        out = score_fn(
            cast(Tensor, _run_forward(forward_func, tuple(perturbed), None, chunk_afa))
        )
        chunk_target = target_for_rows(target, ex, bsz)
        check_target_in_range(out, chunk_target)
        scores.append(_select_targets(out, chunk_target))
    return torch.cat(scores).reshape(bsz, n_points)


# --- Pixel-order curves (deletion / insertion / saliency AUC) ------------------


def input_region_ranks(
    attributions: tuple[Tensor, ...],
    inputs: tuple[Tensor, ...],
) -> tuple[tuple[Tensor, ...], int]:
    """Ranks of regions, most relevant first, ranked jointly over all input tensors.

    A region is one pixel (all channels together, scored by the channel sum of
    the attributions) of a 4-D input ``(bsz, C, H, W)``, and one feature of
    any other input. ``attributions`` must broadcast to their inputs.

    Returns:
        ``(ranks, n_regions)``: per input, a rank tensor broadcastable to it
        (``(bsz, 1, H, W)`` for images, the input's shape otherwise), and the
        total number of regions.
    """
    bsz = inputs[0].shape[0]
    scores, shapes = [], []
    for a, x in zip(attributions, inputs):
        a = a.to(x.device).expand_as(x)
        if x.dim() == 4:
            scores.append(a.sum(dim=1).reshape(bsz, -1))
            shapes.append((bsz, 1, *x.shape[2:]))
        else:
            scores.append(a.reshape(bsz, -1))
            shapes.append(tuple(x.shape))
    counts = [s.shape[1] for s in scores]
    ranks = region_ranks(torch.cat(scores, dim=1), "morf")
    parts = torch.split(ranks, counts, dim=1)
    return tuple(p.reshape(shape) for p, shape in zip(parts, shapes)), sum(counts)


def resolve_fills(
    fill: Any, inputs: tuple[Tensor, ...], blur_sigma: float, name: str = "fill"
) -> tuple[Tensor, ...]:
    """Replacement values for each input from a fill specification.

    ``fill`` is ``"zero"``, ``"mean"`` (per example and channel over the
    pixels of an image; per example over the features otherwise), ``"blur"``
    (a Gaussian blur of the image with ``blur_sigma``), a number, a Tensor
    broadcastable to the input, or a tuple with one such entry per input.
    """
    if isinstance(fill, tuple):
        if len(fill) != len(inputs):
            raise ValueError(
                f"`{name}` has {len(fill)} entries but `inputs` has {len(inputs)}."
            )
        specs = fill
    else:
        specs = (fill,) * len(inputs)
    out = []
    for spec, x in zip(specs, inputs):
        if isinstance(spec, str):
            if spec == "zero":
                out.append(torch.zeros((), dtype=x.dtype, device=x.device))
            elif spec == "mean":
                dims = tuple(range(2, x.dim())) if x.dim() == 4 else None
                if dims is None:
                    dims = tuple(range(1, x.dim()))
                out.append(x.mean(dim=dims, keepdim=True))
            elif spec == "blur":
                if x.dim() != 4:
                    raise ValueError(
                        f"`{name}='blur'` needs images (bsz, C, H, W); got an input "
                        f"of shape {tuple(x.shape)}."
                    )
                out.append(gaussian_blur(x, blur_sigma))
            else:
                raise ValueError(
                    f"`{name}` must be 'zero', 'mean', 'blur', a number or a Tensor; "
                    f"got {spec!r}."
                )
        elif isinstance(spec, (int, float)) and not isinstance(spec, bool):
            out.append(torch.full((), float(spec), dtype=x.dtype, device=x.device))
        elif isinstance(spec, Tensor):
            check_broadcasts_to(spec, x, f"`{name}` tensor")
            out.append(spec.detach().to(x.device, x.dtype))
        else:
            raise TypeError(
                f"`{name}` must be 'zero', 'mean', 'blur', a number, a Tensor or a "
                f"tuple of these; got {type(spec).__name__}."
            )
    return tuple(out)


def curve_at_points(
    forward_func: Callable[..., Any],
    inputs: tuple[Tensor, ...],
    fills: tuple[Tensor, ...],
    ranks: tuple[Tensor, ...],
    n_replaced: Tensor,
    mode: Literal["delete", "insert"],
    target: TargetType = None,
    additional_forward_args: Any = None,
    max_examples_per_batch: int | None = None,
    score_fn: ScoreFn = softmax_scores,
) -> Tensor:
    """:func:`perturbation_curve` evaluated once per distinct point.

    ``n_replaced`` may repeat values (e.g. a fraction grid rounded to a small
    number of regions); each distinct count is evaluated once and the curve
    is gathered back to ``(bsz, len(n_replaced))``.
    """
    unique, inverse = torch.unique(n_replaced, sorted=True, return_inverse=True)
    curve = perturbation_curve(
        forward_func,
        inputs,
        fills,
        ranks,
        unique,
        mode,
        target,
        additional_forward_args,
        max_examples_per_batch,
        score_fn,
    )
    return curve[:, inverse.to(curve.device)]
