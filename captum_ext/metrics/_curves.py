"""Shared engine for perturbation curves (deletion, insertion, degradation, masks).

A curve replaces (or reveals) the features of an input region by region, in an
order given per example, and records a score of the model's output at chosen
points. Everything is vectorised: for a chunk of (example, point) pairs, the
perturbed inputs are built in one ``torch.where`` from a per-feature *rank*
tensor (the position of the feature's region in the order), and evaluated in
one forward pass. Chunks never hold more than ``max_examples_per_batch``
perturbed inputs, and the result does not depend on the chunking.

This module is also the metrics' common front end: the fill vocabulary
(:func:`resolve_fills`), the ``blur_sigma``, ``probability_fn``, ``target``,
``additional_forward_args`` and ``max_examples_per_batch`` rules, and the
checks that every public metric runs before any forward pass.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from typing import Any, Literal, cast

import torch
import torch.nn.functional as F
from captum._utils.common import (
    _format_additional_forward_args,
    _run_forward,
    _select_targets,
)
from captum._utils.progress import progress
from captum._utils.typing import TargetType
from torch import Tensor

from captum_ext._utils.batching import (
    index_forward_args,
    slice_forward_args,
    target_for_rows,
)
from captum_ext._utils.validation import (
    check_broadcasts_to,
    check_target_in_range,
    validate_target,
)
from captum_ext.metrics._fills import gaussian_blur, region_means

ScoreFn = Callable[[Tensor], Tensor]
BatchSize = int | None | Literal["auto"]

#: Under ``max_examples_per_batch="auto"`` (the metrics' default), a forward
#: pass holds at most this many input elements (summed over the input
#: tensors): 2**21 floats, i.e. 8 MiB of float32 input, which is 13 images of
#: 3 x 224 x 224, 682 of 3 x 32 x 32 and 2674 of 1 x 28 x 28 (always at least
#: one example). It bounds the memory of the model's activations without
#: changing the result.
AUTO_BATCH_ELEMENTS = 2**21


def softmax_scores(output: Tensor) -> Tensor:
    """Softmax over the class dimension (dim 1)."""
    if not isinstance(output, Tensor) or output.dim() < 2:
        shape = tuple(output.shape) if isinstance(output, Tensor) else type(output)
        raise ValueError(
            "`forward_func` must return class scores of shape (bsz, n_classes, ...) "
            f"for the default softmax; got {shape}. Pass a `probability_fn` that "
            "maps its output to scores."
        )
    return F.softmax(output, dim=1)


# --- The common front end: checks that run before any work ------------------


def check_examples(inputs: tuple[Tensor, ...], is_tuple: bool) -> int:
    """The batch size; an empty batch is refused (ValueError naming ``inputs``)."""
    bsz = int(inputs[0].shape[0])
    if bsz == 0:
        shapes = [tuple(x.shape) for x in inputs]
        raise ValueError(
            "`inputs` holds no examples (batch size 0, shape "
            f"{shapes if is_tuple else shapes[0]}); pass at least one example."
        )
    return bsz


def check_batch_size(value: Any) -> None:
    """``max_examples_per_batch`` is a positive int, None (all) or ``"auto"``."""
    if value is None or value == "auto":
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(
            "`max_examples_per_batch` must be a positive int, None (every input "
            f"in one forward pass) or 'auto'; got {value!r}."
        )


def examples_per_pass(value: BatchSize, inputs: tuple[Tensor, ...]) -> int | None:
    """Inputs per forward pass: ``value``, or the ``"auto"`` cap for these inputs.

    ``"auto"`` allows :data:`AUTO_BATCH_ELEMENTS` input elements per pass (at
    least one example); None means every input in one pass, as in Captum.
    """
    if value != "auto":
        return value
    per_example = sum(math.prod(x.shape[1:]) for x in inputs)
    return max(1, AUTO_BATCH_ELEMENTS // max(1, per_example))


def check_forward_args(additional_forward_args: Any, bsz: int) -> Any:
    """Format forward args; every tensor with a dimension is per-example.

    Captum's rule (``_expand_additional_forward_args``): every tensor argument
    with at least one dimension has one row per example and follows its
    example through the perturbations; 0-d tensors and non-tensors are passed
    unchanged. A tensor whose first dimension is not the batch size would
    break in Captum's expansion; it is refused here with a clear message.
    """
    afa = _format_additional_forward_args(additional_forward_args)
    if afa is None:
        return None
    for i, a in enumerate(afa):
        if isinstance(a, Tensor) and a.dim() > 0 and a.shape[0] != bsz:
            raise ValueError(
                f"`additional_forward_args[{i}]` has shape {tuple(a.shape)}, but, as "
                "in Captum, every tensor in `additional_forward_args` is "
                f"per-example: its first dimension must be the batch size ({bsz}). "
                "Pass a constant tensor through a closure or functools.partial."
            )
    return afa


def check_target(target: TargetType, bsz: int) -> None:
    """Captum's ``TargetType`` checks; a negative int indexes from the end.

    As in Captum; its range is checked against the model's output.
    """
    if isinstance(target, int) and not isinstance(target, bool) and target < 0:
        return
    validate_target(target, bsz)


def check_blur_sigma(blur_sigma: Any, allow_none: bool = False) -> None:
    """``blur_sigma`` is a finite positive number (or None where allowed)."""
    if blur_sigma is None and allow_none:
        return
    if isinstance(blur_sigma, bool) or not isinstance(blur_sigma, (int, float)):
        raise TypeError(f"`blur_sigma` must be a number, got {blur_sigma!r}.")
    if not (math.isfinite(blur_sigma) and blur_sigma > 0):
        raise ValueError(
            "`blur_sigma` must be a finite positive number (the Gaussian's standard "
            f"deviation in pixels; 0 would leave the image unchanged), got "
            f"{blur_sigma!r}."
        )


def score_function(
    probability_fn: Callable[[Tensor], Tensor] | None, target: TargetType = 0
) -> ScoreFn:
    """The model-output -> score map (softmax over dim 1 unless overridden).

    ``target=None`` keeps the whole score, as in Captum, so it needs one score
    per example; the default softmax over classes never gives that, and the
    combination is refused before any work.
    """
    if probability_fn is not None and not callable(probability_fn):
        raise TypeError(
            "`probability_fn` must be callable or None, got "
            f"{type(probability_fn).__name__}."
        )
    if target is None and probability_fn is None:
        raise ValueError(
            "`target=None` keeps the whole score of each example, as in Captum, so "
            "it needs a `probability_fn` that returns one score per example; the "
            "default softmax returns one probability per class. Pass `target` (the "
            "class to track; the predicted class is "
            "`forward_func(inputs).argmax(1)`)."
        )
    return softmax_scores if probability_fn is None else probability_fn


def resolve_target(scores: Tensor, target: TargetType) -> TargetType:
    """Check ``target`` against the scores' shape, once, and normalise it.

    A list of ints becomes a tensor. (Negative entries of tensor or list
    targets were refused by the shared target validation, as in every
    attribution class: Captum would fail on them inside ``torch.gather``.)
    """
    if target is None:
        return None
    check_target_in_range(scores, target)
    if isinstance(target, list) and target and isinstance(target[0], int):
        target = torch.tensor(target, device=scores.device)
    if isinstance(target, Tensor) and target.numel() > 1:
        if bool((target < 0).any()):
            raise ValueError(
                "`target` given per example must hold indices >= 0 (Captum "
                f"selects them with torch.gather); got {int(target.min())}."
            )
        target = target.to(scores.device)
    return target


def select_scores(
    scores: Any, target: TargetType, rows: int, resolved: bool = False
) -> Tensor:
    """One score per row: ``target`` of the scores, with Captum's semantics.

    ``target=None`` takes the scores as they are, which must then be one per
    row (shape ``(rows,)`` or ``(rows, 1)``). A negative int target indexes
    from the end, as in Captum. With
    ``resolved=True``, ``target`` has been through :func:`resolve_target`.
    """
    if not isinstance(scores, Tensor):
        raise TypeError(
            "`probability_fn` (or `forward_func`) must return a Tensor, got "
            f"{type(scores).__name__}."
        )
    if scores.dim() == 0 or scores.shape[0] != rows:
        raise ValueError(
            f"The scores must have one row per input ({rows}); `probability_fn` / "
            f"`forward_func` returned shape {tuple(scores.shape)}."
        )
    if target is None:
        if scores[0].numel() != 1:
            raise ValueError(
                "`target=None` keeps the whole score of each example (as in Captum), "
                "which must then be one number per example; the scores have shape "
                f"{tuple(scores.shape)}. Pass `target` (the class to track)."
            )
        return scores.reshape(rows)
    if not resolved:
        target = resolve_target(scores, target)
    out = _select_targets(scores, target)
    if out.numel() != rows:
        raise ValueError(
            f"`target` {target!r} selects {tuple(out.shape[1:])} scores per example; "
            "it must select one."
        )
    return out.reshape(rows)


def all_finite(t: Tensor) -> bool:
    """Whether every entry is finite.

    One reduction in the common case (a finite sum); the elementwise test
    runs only when the sum is not finite (a NaN or inf, or an overflow).
    """
    return math.isfinite(float(t.sum())) or bool(torch.isfinite(t).all())


def warn_if_not_finite(values: Tensor, what: str) -> None:
    """Warn (naming the model) when a metric's result holds NaN or inf."""
    if values.numel() and not all_finite(values):
        warnings.warn(
            f"{what} holds NaN or infinite values: `forward_func` (through "
            "`probability_fn`) returned non-finite scores for some perturbed "
            "inputs; the result is not meaningful for those examples.",
            RuntimeWarning,
            stacklevel=3,
        )


def check_finite_explanations(expl: tuple[Tensor, ...], name: str) -> None:
    """Refuse NaN / inf scores: they cannot be ranked (ValueError naming ``name``)."""
    for i, a in enumerate(expl):
        if a.is_floating_point() and not all_finite(a):
            label = f"{name}[{i}]" if len(expl) > 1 else name
            raise ValueError(
                f"`{label}` contains NaN or infinite values, which cannot be "
                "ranked; replace them (e.g. torch.nan_to_num) first."
            )


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
    show_progress: bool = False,
    desc: str = "perturbation curve",
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
        target: Captum target (selected after ``score_fn``, see
            :func:`select_scores`).
        additional_forward_args: Extra forward arguments (per-example tensors
            are repeated along the curve).
        max_examples_per_batch: Most perturbed inputs per forward pass (None:
            all at once).
        score_fn: Maps model outputs to scores (softmax by default).
        show_progress: Show a progress bar over the perturbed inputs.
        desc: The progress bar's label.

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
    bar = progress(total=total, desc=desc) if show_progress else None
    resolved = False
    try:
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
            out = cast(
                Tensor, _run_forward(forward_func, tuple(perturbed), None, chunk_afa)
            )
            out = score_fn(out)
            if not resolved:  # checked once, against the first chunk's scores
                if isinstance(out, Tensor):
                    target = resolve_target(out, target)
                resolved = True
            chunk_target = target_for_rows(target, ex, bsz)
            scores.append(select_scores(out, chunk_target, flat.numel(), True))
            if bar is not None:
                bar.update(flat.numel())
    finally:
        if bar is not None:
            bar.close()
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


FILL_NAMES = ("zero", "mean", "blur", "patch_mean")


def check_fill(fill: Any, inputs: tuple[Tensor, ...], patches: bool = False) -> None:
    """Refuse a bad fill specification before any work (naming ``fill``).

    The one fill vocabulary of the metrics: ``"zero"``, ``"mean"``,
    ``"blur"``, ``"patch_mean"`` (only where regions are patches:
    :func:`~captum_ext.metrics.image_degradation`), a finite number, a
    finite Tensor broadcastable to the input, a callable mapping the input
    tensor to such a Tensor, or a tuple with one of these per input tensor.
    """
    allowed = FILL_NAMES if patches else FILL_NAMES[:3]
    if isinstance(fill, tuple):
        if len(fill) != len(inputs):
            raise ValueError(
                f"`fill` has {len(fill)} entries but `inputs` has {len(inputs)}."
            )
        specs = fill
    else:
        specs = (fill,) * len(inputs)
    for i, (spec, x) in enumerate(zip(specs, inputs)):
        label = f"`fill[{i}]`" if isinstance(fill, tuple) else "`fill`"
        if isinstance(spec, str):
            if spec not in allowed:
                hint = (
                    " ('patch_mean' is image_degradation's patch fill)"
                    if spec == "patch_mean"
                    else ""
                )
                raise ValueError(
                    f"{label} must be one of {allowed}, a number, a Tensor or a "
                    f"callable; got {spec!r}{hint}."
                )
            if spec == "blur" and x.dim() != 4:
                raise ValueError(
                    f"{label}='blur' needs images (bsz, C, H, W); got an input of "
                    f"shape {tuple(x.shape)}."
                )
        elif isinstance(spec, (int, float)) and not isinstance(spec, bool):
            if not math.isfinite(spec):
                raise ValueError(f"{label} must be finite, got {spec!r}.")
        elif isinstance(spec, Tensor):
            check_broadcasts_to(spec, x, f"{label} tensor")
            if spec.is_complex() or spec.dtype == torch.bool:
                raise TypeError(f"{label} must be real-valued, got {spec.dtype}.")
            if spec.is_floating_point() and not bool(torch.isfinite(spec).all()):
                raise ValueError(f"{label} contains NaN or infinite values.")
        elif callable(spec) and not isinstance(spec, bool):
            continue
        else:
            raise TypeError(
                f"{label} must be one of {allowed}, a number, a Tensor, a callable "
                f"or a tuple of these; got {type(spec).__name__}."
            )


def resolve_fills(
    fill: Any,
    inputs: tuple[Tensor, ...],
    blur_sigma: float,
    regions: list[tuple[Tensor, int]] | None = None,
) -> tuple[Tensor, ...]:
    """Replacement values for each input from a fill specification.

    ``fill`` is checked by :func:`check_fill`: ``"zero"``, ``"mean"`` (per
    example and channel over the pixels of an image; per example over the
    features otherwise), ``"blur"`` (a Gaussian blur of the image with
    ``blur_sigma``), ``"patch_mean"`` (per example, channel and region, with
    the ``regions`` ``(region_map, n_regions)`` of each input), a number, a
    Tensor broadcastable to the input, a callable applied once to the intact
    input, or a tuple with one such entry per input.
    """
    check_fill(fill, inputs, patches=regions is not None)
    specs = fill if isinstance(fill, tuple) else (fill,) * len(inputs)
    out = []
    for i, (spec, x) in enumerate(zip(specs, inputs)):
        if isinstance(spec, str):
            if spec == "zero":
                out.append(torch.zeros((), dtype=x.dtype, device=x.device))
            elif spec == "mean":
                dims = tuple(range(2 if x.dim() == 4 else 1, x.dim()))
                out.append(x.mean(dim=dims, keepdim=True))
            elif spec == "blur":
                out.append(gaussian_blur(x, blur_sigma))
            else:
                assert regions is not None
                out.append(region_means(x, *regions[i]))
        elif isinstance(spec, (int, float)):
            out.append(torch.full((), float(spec), dtype=x.dtype, device=x.device))
        elif isinstance(spec, Tensor):
            out.append(spec.detach().to(x.device, x.dtype))
        else:
            value = spec(x)
            label = f"`fill[{i}]`" if isinstance(fill, tuple) else "`fill`"
            if not isinstance(value, Tensor):
                raise TypeError(
                    f"{label} callable must return a Tensor, got "
                    f"{type(value).__name__}."
                )
            check_broadcasts_to(value, x, f"{label}(inputs)")
            value = value.detach().to(device=x.device, dtype=x.dtype)
            if not bool(torch.isfinite(value).all()):
                raise ValueError(f"{label}(inputs) contains NaN or infinite values.")
            out.append(value)
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
    show_progress: bool = False,
    desc: str = "perturbation curve",
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
        show_progress,
        desc,
    )
    return curve[:, inverse.to(curve.device)]
