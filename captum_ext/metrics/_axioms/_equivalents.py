"""Functionally equal networks with a different graph (implementation invariance)."""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

from captum_ext.metrics._axioms._wrappers import SignSplit

EQUIVALENCES = ("permute_hidden", "sign_split", "fold_batchnorm")

_ELEMENTWISE = (
    nn.ReLU,
    nn.LeakyReLU,
    nn.ELU,
    nn.GELU,
    nn.SiLU,
    nn.Softplus,
    nn.Tanh,
    nn.Sigmoid,
    nn.Identity,
    nn.Mish,
    nn.Dropout,
)
_CHANNELWISE = (
    nn.MaxPool1d,
    nn.MaxPool2d,
    nn.MaxPool3d,
    nn.AvgPool1d,
    nn.AvgPool2d,
    nn.AvgPool3d,
    nn.AdaptiveAvgPool2d,
    nn.AdaptiveMaxPool2d,
)
_CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d)


def _find_pair(model: nn.Module) -> tuple[nn.Module, nn.Module] | None:
    for seq in model.modules():
        if not isinstance(seq, nn.Sequential):
            continue
        mods = list(seq)
        for a, first in enumerate(mods):
            if isinstance(first, _CONV):
                if first.groups != 1:
                    continue
            elif not isinstance(first, nn.Linear):
                continue
            between = (
                (_ELEMENTWISE + _CHANNELWISE)
                if isinstance(first, _CONV)
                else _ELEMENTWISE
            )
            for nxt in mods[a + 1 :]:
                if isinstance(nxt, between):
                    continue
                same_kind = (
                    isinstance(nxt, nn.Linear)
                    if isinstance(first, nn.Linear)
                    else (isinstance(nxt, _CONV) and nxt.groups == 1)
                )
                if same_kind:
                    return first, nxt
                break
    return None


def equivalent_model(
    model: Any,
    kind: str,
    generator: torch.Generator | None = None,
    n_inputs: int = 1,
) -> Any:
    r"""A network computing the same function as ``model`` through another graph.

    For implementation invariance (axiom 2 of Lundstrom et al., ICML 2022,
    `arXiv:2202.11912 <https://arxiv.org/abs/2202.11912>`_; Sundararajan et
    al. 2017). ``model`` itself is never modified:

    - ``"permute_hidden"``: a copy whose first hidden layer has its units
      (channels) permuted, with the next layer's inputs permuted to match
      (the first ``Linear -> ... -> Linear`` or ``Conv -> ... -> Conv`` pair
      inside an ``nn.Sequential``, separated only by element-wise activations
      or pooling). Gradients are unchanged; methods bound to layer order are
      not.
    - ``"sign_split"``: :math:`F(\mathrm{ReLU}(x) - \mathrm{ReLU}(-x))`, the
      identity on the input written with two ``nn.ReLU`` modules (wraps the
      model, no copy). Methods that rewrite ReLU backward passes
      (GuidedBackprop, Deconvolution) change.
    - ``"fold_batchnorm"``: :func:`captum_ext.models.fold_batchnorm` (the
      model must be in eval mode).

    Args:
        model (nn.Module or Callable): The network (``"sign_split"`` accepts
            any callable).
        kind (str): One of the three names above.
        generator (torch.Generator, optional): Draws the permutation.
        n_inputs (int): Number of input tensors (``"sign_split"``).

    Returns:
        nn.Module: the equivalent network.

    Examples::

        >>> twin = equivalent_model(model, "permute_hidden")
        >>> torch.allclose(twin(x), model(x), atol=1e-6)
        True
    """
    if kind not in EQUIVALENCES:
        raise ValueError(f"`kind` must be one of {list(EQUIVALENCES)}, got {kind!r}.")
    if kind == "sign_split":
        if not callable(model):
            raise TypeError(f"`model` must be callable, got {type(model).__name__}.")
        return SignSplit(model, n_inputs)
    if not isinstance(model, nn.Module):
        raise TypeError(
            f"equivalence {kind!r} needs an nn.Module model, got "
            f"{type(model).__name__}."
        )
    if kind == "fold_batchnorm":
        if model.training:
            raise ValueError(
                "`model` is in train mode: folding BatchNorm uses the running "
                "statistics, so only an eval-mode model is equal to its folded "
                "copy. Call model.eval() first."
            )
        from captum_ext.models import fold_batchnorm

        if not any(
            isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules()
        ):
            raise ValueError("`model` has no BatchNorm layer to fold.")
        return fold_batchnorm(model)
    twin = copy.deepcopy(model)
    pair = _find_pair(twin)
    if pair is None:
        raise ValueError(
            "permute_hidden found no `Linear -> activation -> Linear` or "
            "`Conv -> activation/pooling -> Conv` pair inside an nn.Sequential of "
            "`model`; give the equivalent model yourself."
        )
    first, second = pair
    units = int(first.weight.shape[0])  # type: ignore[index]
    perm = torch.randperm(units, generator=generator)
    if torch.equal(perm, torch.arange(units)):
        perm = torch.roll(perm, 1)
    perm = perm.to(next(first.parameters()).device)
    with torch.no_grad():
        first.weight.copy_(first.weight[perm])  # type: ignore[index, operator]
        if first.bias is not None:
            first.bias.copy_(first.bias[perm])  # type: ignore[index, operator]
        second.weight.copy_(second.weight[:, perm])  # type: ignore[index, operator]
    return twin
