"""Attribution-guided neuron pruning (section 7 of the IG study).

Neurons of a layer are ranked by a score (patch conductance, conductance, ...)
and the top of the ranking is zeroed while a ``with`` block runs. Zeroing is a
forward hook on the layer, removed when the block exits (also after an
exception): the model's parameters are never written.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn


def neuron_ranking(scores: Tensor, descending: bool = True) -> Tensor:
    """Flat indices of ``scores`` from the highest score to the lowest.

    Ties keep index order (a stable sort), so rankings are deterministic.

    Args:
        scores (Tensor): One score per neuron, any shape (for example a layer
            attribution averaged over examples, ``attr.mean(0)``).
        descending (bool): Highest score first (True) or lowest first.

    Returns:
        Tensor: ``(scores.numel(),)`` int64 indices into ``scores.flatten()``.

    Examples::

        >>> neuron_ranking(torch.tensor([0.1, 3.0, -2.0, 3.0]))
        tensor([1, 3, 0, 2])
    """
    if not isinstance(scores, Tensor):
        raise TypeError(
            f"`scores` must be a torch.Tensor, got {type(scores).__name__}."
        )
    if scores.is_complex() or scores.dtype == torch.bool:
        raise TypeError(f"`scores` must be real, got {scores.dtype}.")
    if torch.isnan(scores).any():
        raise ValueError("`scores` contains NaN; neurons cannot be ranked.")
    return scores.detach().flatten().argsort(descending=descending, stable=True)


def _n_pruned(amount: Any, n: int) -> int:
    # NumPy scalars count like Python ones: np.float64 subclasses float, and
    # np.int64 (from arithmetic on arrays, or an argmax) is an integer too.
    if isinstance(amount, (bool, np.bool_)) or not isinstance(
        amount, (int, float, np.integer, np.floating)
    ):
        raise TypeError(
            "`amount` must be a float fraction in [0, 1] or an int number of "
            f"neurons, got {type(amount).__name__}."
        )
    if isinstance(amount, np.integer):
        amount = int(amount)
    elif isinstance(amount, np.floating):
        amount = float(amount)
    if isinstance(amount, float):
        if not 0.0 <= amount <= 1.0:
            raise ValueError(f"`amount` as a fraction must be in [0, 1], got {amount}.")
        return round(amount * n)
    if not 0 <= amount <= n:
        raise ValueError(
            f"`amount` as a count must be in [0, {n}] (the number of neurons), "
            f"got {amount}."
        )
    return amount


def pruning_mask(
    scores: Tensor, amount: float | int, descending: bool = True
) -> Tensor:
    """Boolean mask of the neurons to prune: the top ``amount`` by score.

    Args:
        scores (Tensor): One score per neuron (any shape).
        amount (float or int): A fraction of the neurons in [0, 1] (rounded to
            the nearest count, as :mod:`torch.nn.utils.prune` does) or a count.
        descending (bool): Prune the highest scores (True) or the lowest.

    Returns:
        Tensor: bool tensor shaped like ``scores``, True for pruned neurons.

    Examples::

        >>> pruning_mask(torch.tensor([0.1, 3.0, -2.0, 2.0]), 0.5)
        tensor([False,  True, False,  True])
    """
    order = neuron_ranking(scores, descending)
    k = _n_pruned(amount, order.numel())
    mask = torch.zeros(order.numel(), dtype=torch.bool, device=order.device)
    mask[order[:k]] = True
    return mask.reshape(scores.shape)


@contextmanager
def prune_neurons(
    layer: nn.Module,
    scores: Tensor,
    amount: float | int,
    descending: bool = True,
    layer_input: bool = False,
) -> Iterator[Tensor]:
    r"""Zero the top-ranked neurons of ``layer`` while the ``with`` block runs.

    The pruning experiments of Lundstrom, Huang & Razaviyayn (ICML 2022,
    section 7): neurons are ranked by an attribution score (the patch
    conductance :math:`\mathrm{IG}_{S,j}` of :class:`PatchConductance`, or the
    conductance of Captum's :class:`~captum.attr.LayerConductance`, averaged
    over examples) and the top ones are set to zero, which for ReLU layers
    removes the feature they signal. A forward hook sets the pruned entries of
    the layer's output (or input) to zero; it is removed when the block exits,
    also after an exception, so the model is left exactly as it was (no
    weight is written).

    ``scores`` has one entry per neuron and broadcasts against one example of
    the layer's output: ``(C, H, W)`` prunes single units, ``(C, 1, 1)``
    whole channels.

    Args:
        layer (torch.nn.Module): The layer whose output (or input) is pruned.
            It must return a single tensor.
        scores (Tensor): Score per neuron, shaped like one example of the
            layer's output, or broadcastable to it.
        amount (float or int): Fraction of neurons in [0, 1] (rounded to the
            nearest count) or number of neurons to prune.
        descending (bool): Prune the highest scores (True) or the lowest.
        layer_input (bool): Prune the layer's (first) input instead of its
            output.

    Yields:
        Tensor: the boolean mask of pruned neurons, shaped like ``scores``.

    Examples::

        >>> pc = PatchConductance(model, model[7]).attribute(x, patch, target=y)
        >>> with prune_neurons(model[7], pc.mean(0), 0.05):
        ...     acc = accuracy(model, x_test, y_test)  # top 5% zeroed
        >>> # here the model is unchanged again
    """
    if not isinstance(layer, nn.Module):
        raise TypeError(
            f"`layer` must be a torch.nn.Module, got {type(layer).__name__}."
        )
    pruned = pruning_mask(scores, amount, descending)

    def apply(t: Any) -> Tensor:
        if not isinstance(t, Tensor):
            raise TypeError(
                "prune_neurons needs the layer's "
                + ("input" if layer_input else "output")
                + f" to be a single tensor, got {type(t).__name__}."
            )
        example_shape = tuple(t.shape[1:])
        try:
            shape = torch.broadcast_shapes(pruned.shape, example_shape)
        except RuntimeError:
            shape = None
        if shape != example_shape:
            raise ValueError(
                f"`scores` of shape {tuple(pruned.shape)} does not broadcast to one "
                f"example of the layer's {'input' if layer_input else 'output'}, "
                f"{example_shape}."
            )
        return t.masked_fill(pruned.to(t.device), 0)

    def forward_hook(module: nn.Module, args: Any, output: Any) -> Tensor:
        return apply(output)

    def pre_hook(module: nn.Module, args: Any) -> Any:
        return (apply(args[0]), *tuple(args[1:]))

    handle = (
        layer.register_forward_pre_hook(pre_hook)
        if layer_input
        else layer.register_forward_hook(forward_hook)
    )
    try:
        yield pruned
    finally:
        handle.remove()
