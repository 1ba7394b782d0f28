"""Fold BatchNorm into the preceding Conv2d / Linear layer."""

from __future__ import annotations

import copy
import itertools

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.utils.fusion import fuse_conv_bn_eval, fuse_linear_bn_eval

from captum_ext.models._nib import NIBBatchNorm2d


def _fuse_conv_nib(conv: nn.Conv2d, bn: NIBBatchNorm2d) -> nn.Conv2d:
    """A copy of ``conv`` scaled by the eval-mode NIB BatchNorm that follows it."""
    assert bn.running_var is not None
    scale = torch.rsqrt(bn.running_var + bn.eps)
    if bn.weight is not None:
        scale = scale * bn.weight
    fused = copy.deepcopy(conv)
    with torch.no_grad():
        fused.weight.mul_(scale.to(fused.weight).view(-1, 1, 1, 1))
        if fused.bias is not None:
            fused.bias.mul_(scale.to(fused.bias))
    return fused


def _fold_sequential(seq: nn.Sequential) -> None:
    names = list(seq._modules.keys())
    for prev_name, name in itertools.pairwise(names):
        prev, bn = seq._modules[prev_name], seq._modules[name]
        if not isinstance(bn, (_BatchNorm, NIBBatchNorm2d)):
            continue
        if bn.running_var is None or getattr(bn, "running_mean", 0) is None:
            raise ValueError(
                f"BatchNorm {name!r} has no running statistics "
                "(track_running_stats=False) and cannot be folded."
            )
        if isinstance(prev, nn.Conv2d) and isinstance(bn, NIBBatchNorm2d):
            fused: nn.Module = _fuse_conv_nib(prev, bn)
        elif isinstance(prev, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d):
            fused = fuse_conv_bn_eval(prev, bn)
        elif isinstance(prev, nn.Linear) and isinstance(bn, nn.BatchNorm1d):
            fused = fuse_linear_bn_eval(prev, bn)
        else:
            continue
        seq._modules[prev_name] = fused
        seq._modules[name] = nn.Identity()


def fold_batchnorm(model: nn.Module) -> nn.Module:
    r"""A copy of ``model`` with each BatchNorm folded into the layer before it.

    A ``BatchNorm2d`` directly after an ``nn.Conv2d`` (or a ``BatchNorm1d``
    directly after an ``nn.Linear``) inside an ``nn.Sequential`` is merged into
    that layer, using the running statistics (eval-mode BatchNorm):

    .. math::

        W' = \frac{\gamma}{\sqrt{\sigma^2 + \epsilon}} W, \qquad
        b' = \frac{\gamma (b - \mu)}{\sqrt{\sigma^2 + \epsilon}} + \beta ,

    (a :class:`~captum_ext.models.NIBBatchNorm2d` has no mean and no shift, so
    only the scale :math:`\gamma / \sqrt{\sigma^2 + \epsilon}` is folded),
    and the BatchNorm is replaced by ``nn.Identity``, so submodule names are
    kept (patterns fitted on the folded model name the same layers). The
    result computes the same function as ``model.eval()`` (up to float
    rounding). ``model`` itself is not modified. PatternNet, PatternAttribution
    and PGIG need this: their references do not define rules for BatchNorm.

    Args:
        model (nn.Module): The model; BatchNorm layers must follow their
            Conv2d / Linear inside an ``nn.Sequential`` (as in torchvision's
            VGG ``features``).

    Returns:
        nn.Module: the folded copy, in eval mode.

    Raises:
        ValueError: If a BatchNorm remains that could not be folded (not
            directly after a Conv2d / Linear in an ``nn.Sequential``, or
            without running statistics).

    Examples::

        >>> net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU())
        >>> folded = fold_batchnorm(net)
        >>> x = torch.randn(2, 3, 8, 8)
        >>> torch.allclose(folded(x), net.eval()(x), atol=1e-5)
        True
    """
    if not isinstance(model, nn.Module):
        raise TypeError(
            f"`model` must be a torch.nn.Module, got {type(model).__name__}."
        )
    folded = copy.deepcopy(model).eval()
    for module in folded.modules():
        if isinstance(module, nn.Sequential):
            _fold_sequential(module)
    left = [
        name
        for name, m in folded.named_modules()
        if isinstance(m, (_BatchNorm, NIBBatchNorm2d))
    ]
    if left:
        raise ValueError(
            f"fold_batchnorm: could not fold BatchNorm layer(s) {left}: each must "
            "directly follow an nn.Conv2d (BatchNorm2d) or nn.Linear (BatchNorm1d) "
            "inside an nn.Sequential. Fold them by hand with "
            "torch.nn.utils.fusion.fuse_conv_bn_eval."
        )
    return folded
