"""Argument checks that run before any work, with messages naming the argument."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from captum._utils.common import _validate_target
from torch import Tensor


def format_inputs(
    inputs: Any,
    name: str = "inputs",
    require_float: bool = True,
    allow_empty: bool = False,
) -> tuple[bool, tuple[Tensor, ...]]:
    """Check ``inputs`` (Tensor or tuple of Tensors) and return it as a tuple.

    Returns ``(is_tuple, inputs_tuple)``. Raises TypeError / ValueError that name
    the argument when the structure, dtype or batch sizes are wrong. The
    empty-batch contract of every captum-ext class: a batch of zero examples
    is a ValueError naming the argument (unless ``allow_empty``).
    """
    if isinstance(inputs, Tensor):
        is_tuple = False
        tensors: tuple[Tensor, ...] = (inputs,)
    elif isinstance(inputs, tuple):
        is_tuple = True
        if len(inputs) == 0:
            raise ValueError(
                f"`{name}` is an empty tuple; expected at least one Tensor."
            )
        for i, x in enumerate(inputs):
            if not isinstance(x, Tensor):
                raise TypeError(
                    f"`{name}[{i}]` must be a torch.Tensor, got {type(x).__name__}."
                )
        tensors = inputs
    else:
        raise TypeError(
            f"`{name}` must be a torch.Tensor or a tuple of torch.Tensors, "
            f"got {type(inputs).__name__}."
        )
    for i, x in enumerate(tensors):
        label = f"{name}[{i}]" if is_tuple else name
        if x.dim() == 0:
            raise ValueError(
                f"`{label}` must have a batch dimension (dim 0); got a 0-d tensor."
            )
        if require_float and not (x.is_floating_point() or x.is_complex()):
            raise TypeError(
                f"`{label}` must be a floating point tensor to take gradients, "
                f"got dtype {x.dtype}."
            )
    sizes = {x.shape[0] for x in tensors}
    if len(sizes) > 1:
        raise ValueError(
            f"All tensors in `{name}` must share the batch size (dim 0); "
            f"got {[x.shape[0] for x in tensors]}."
        )
    if not allow_empty and sizes == {0}:
        raise ValueError(
            f"`{name}` is an empty batch (dimension 0 has size 0); pass at least "
            "one example."
        )
    return is_tuple, tensors


def validate_target(target: Any, num_examples: int) -> None:
    """Check a Captum ``TargetType`` before any work.

    Wrong types raise TypeError; a list / tensor whose length does not match the
    batch raises AssertionError, exactly as Captum does. Negative indices
    follow Captum: an int, a 1-element tensor or the entries of a tuple index
    from the end (``target=-1`` is the last class); the per-example entries of
    an int list or a tensor go through ``torch.gather`` in Captum, which
    refuses them, so they are refused here with a clear ValueError.
    """
    if target is None:
        return
    if isinstance(target, bool):
        raise TypeError("`target` must be an int, tuple, Tensor or list; got bool.")
    if isinstance(target, int):
        return
    if isinstance(target, tuple):
        for t in target:
            if isinstance(t, bool) or not isinstance(t, (int, slice)):
                raise TypeError(
                    "`target` given as a tuple must hold ints (an index into the "
                    f"output's non-batch dimensions); got {type(t).__name__}."
                )
        return
    if isinstance(target, Tensor):
        if (
            target.is_floating_point()
            or target.is_complex()
            or target.dtype == torch.bool
        ):
            raise TypeError(
                "`target` given as a Tensor must hold integer indices, "
                f"got {target.dtype}."
            )
        if target.dim() > 1:
            raise ValueError(
                "`target` given as a Tensor must be a scalar or 1-D (one index per "
                f"example); got shape {tuple(target.shape)}."
            )
        _validate_target(num_examples, target)
        if target.numel() > 1 and bool((target < 0).any()):
            raise ValueError(
                "`target` given as a Tensor of per-example indices must be >= 0 "
                "(Captum selects them with torch.gather); got "
                f"{int(target.min())}."
            )
        return
    if isinstance(target, list):
        if len(target) == 0:
            raise ValueError("`target` is an empty list.")
        kinds = {type(t) for t in target}
        if not (kinds <= {int} or kinds <= {tuple}):
            raise TypeError(
                "`target` given as a list must hold only ints or only tuples; "
                f"got {sorted(k.__name__ for k in kinds)}."
            )
        _validate_target(num_examples, target)
        if kinds <= {int} and min(target) < 0:
            raise ValueError(
                "`target` given as a list of per-example ints must hold indices "
                "that are >= 0 (Captum selects them with torch.gather); got "
                f"{min(target)}."
            )
        return
    raise TypeError(
        "`target` must be None, an int, a tuple, a Tensor or a list; "
        f"got {type(target).__name__}."
    )


def _check_index(value: int, size: int, where: str) -> None:
    if value >= size or value < -size:
        raise ValueError(
            f"`target` index {value} is out of range for {where} of size {size}."
        )


def check_target_in_range(output: Tensor, target: Any) -> None:
    """Check that ``target`` indexes into ``output`` (shape ``(bsz, ...)``)."""
    if target is None:
        return
    non_batch = tuple(output.shape[1:])

    def check_tuple(idx: Sequence[Any]) -> None:
        if len(idx) > len(non_batch):
            # Captum asserts here too (``_verify_select_column``).
            raise AssertionError(
                f"`target` {tuple(idx)} has more indices than the output has "
                f"non-batch dimensions (output shape {tuple(output.shape)})."
            )
        for d, v in enumerate(idx):
            if isinstance(v, int):
                _check_index(v, non_batch[d], f"output dimension {d + 1}")

    if isinstance(target, int):
        if len(non_batch) == 0:
            raise ValueError(
                "`target` was given but the model returns one scalar per example "
                f"(output shape {tuple(output.shape)}); pass target=None."
            )
        _check_index(target, non_batch[0], "the output's class dimension")
    elif isinstance(target, tuple):
        check_tuple(target)
    elif isinstance(target, Tensor):
        if len(non_batch) == 0:
            raise ValueError(
                "`target` was given but the model returns one scalar per example "
                f"(output shape {tuple(output.shape)}); pass target=None."
            )
        if target.numel() > 0:
            # one host sync for both ends (this runs once per forward pass)
            lo, hi = (int(v) for v in torch.stack(torch.aminmax(target)).tolist())
            _check_index(hi, non_batch[0], "the output's class dimension")
            _check_index(lo, non_batch[0], "the output's class dimension")
    elif isinstance(target, list):
        if isinstance(target[0], int):
            if len(non_batch) == 0:
                raise ValueError(
                    "`target` was given but the model returns one scalar per "
                    f"example (output shape {tuple(output.shape)}); pass target=None."
                )
            _check_index(max(target), non_batch[0], "the output's class dimension")
            _check_index(min(target), non_batch[0], "the output's class dimension")
        else:
            for t in target:
                check_tuple(t)


def check_positive_int(value: Any, name: str, allow_none: bool = False) -> None:
    """Raise if ``value`` is not a positive int (or None when allowed)."""
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"`{name}` must be a positive int, got {value!r}.")


def check_generator(generator: Any) -> None:
    """Raise TypeError unless ``generator`` is a ``torch.Generator`` or None."""
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(
            "`generator` must be a torch.Generator or None, "
            f"got {type(generator).__name__}."
        )


def check_broadcasts_to(value: Tensor, x: Tensor, label: str) -> None:
    """Raise ValueError (naming ``label``) unless ``value`` broadcasts to ``x``."""
    try:
        shape = torch.broadcast_shapes(value.shape, x.shape)
    except RuntimeError:
        shape = None
    if shape != x.shape:
        raise ValueError(
            f"{label} of shape {tuple(value.shape)} does not broadcast to the "
            f"input's shape {tuple(x.shape)}."
        )
