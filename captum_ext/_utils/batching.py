"""Splitting per-example arguments into chunks of a flattened batch."""

from __future__ import annotations

from typing import Any

from captum._utils.common import _expand_target
from captum._utils.typing import TargetType
from torch import Tensor


def slice_forward_args(afa: Any, sl: slice, n: int) -> Any:
    """Slice the per-example tensors (leading dim ``n``) of forward args."""
    if afa is None:
        return None
    return tuple(
        a[sl] if isinstance(a, Tensor) and a.dim() > 0 and a.shape[0] == n else a
        for a in afa
    )


def repeat_forward_args(afa: Any, times: int, n: int) -> Any:
    """Repeat the per-example tensors (leading dim ``n``) ``times`` times, in
    repeat-major order (rows ``r * n + i``), for a batch stacked ``times`` deep."""
    if afa is None:
        return None
    return tuple(
        a.repeat(times, *([1] * (a.dim() - 1)))
        if isinstance(a, Tensor) and a.dim() > 0 and a.shape[0] == n
        else a
        for a in afa
    )


def index_forward_args(afa: Any, rows: Tensor, n: int) -> Any:
    """Gather ``rows`` of the per-example tensors (leading dim ``n``)."""
    if afa is None:
        return None
    return tuple(
        a[rows.to(a.device)]
        if isinstance(a, Tensor) and a.dim() > 0 and a.shape[0] == n
        else a
        for a in afa
    )


def target_for_rows(target: TargetType, ex: Tensor, bsz: int) -> TargetType:
    """The per-row target for rows ``ex`` of the flattened (example, point) grid."""
    if target is None or isinstance(target, (int, tuple)):
        return target
    if isinstance(target, Tensor):
        if target.numel() == 1:
            return target
        return target.to(ex.device)[ex]
    if isinstance(target, list):
        idx = ex.tolist()
        return [target[i] for i in idx]
    return _expand_target(target, 1)


def forward_args_for_paths(afa: Any, ex: Tensor | None, n: int) -> Any:
    """Forward args (a formatted tuple or None) for paths of examples ``ex``.

    ``ex`` is None when the paths are the examples themselves, in order: the
    arguments are then left as the user gave them (Captum's rule applies to
    them unchanged). Otherwise every tensor that is not 0-d must have one row
    per example (dimension 0 of size ``n``) and is gathered at ``ex``.
    """
    if afa is None or ex is None:
        return afa
    out = []
    for i, a in enumerate(afa):
        if isinstance(a, Tensor) and a.dim() > 0:
            if a.shape[0] != n:
                raise ValueError(
                    f"`additional_forward_args[{i}]` has {a.shape[0]} rows, not one "
                    f"per example ({n}): with several paths per example (several "
                    "references), every tensor argument that is not 0-d must have "
                    "one row per example so that each path gets its example's row."
                )
            a = a[ex.to(a.device)]
        out.append(a)
    return tuple(out)
