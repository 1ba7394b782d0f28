"""Fold BatchNorm into the preceding Conv / Linear layer."""

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
        fused = _fuse_pair(prev, bn)
        if fused is None:
            continue
        seq._modules[prev_name] = fused
        seq._modules[name] = nn.Identity()


def _fuse_pair(prev: nn.Module, bn: nn.Module) -> nn.Module | None:
    if isinstance(prev, nn.Conv2d) and isinstance(bn, NIBBatchNorm2d):
        return _fuse_conv_nib(prev, bn)
    conv_bn = (
        (nn.Conv1d, nn.BatchNorm1d),
        (nn.Conv2d, nn.BatchNorm2d),
        (nn.Conv3d, nn.BatchNorm3d),
    )
    for conv_type, bn_type in conv_bn:
        if isinstance(prev, conv_type) and isinstance(bn, bn_type):
            return fuse_conv_bn_eval(prev, bn)
    if isinstance(prev, nn.Linear) and isinstance(bn, nn.BatchNorm1d):
        return fuse_linear_bn_eval(prev, bn)
    return None


def _fold_traced(model: nn.Module) -> None:
    """Fold BatchNorms wherever they follow a layer in the traced graph.

    ``torch.fx`` traces the forward pass; a BatchNorm module whose only input
    is the output of a Conv / Linear module, used by nothing else, with both
    modules called once, is folded (as an attribute of a block, e.g. a
    ResNet ``BasicBlock``'s ``conv1`` / ``bn1``). Models that cannot be traced
    keep only the ``nn.Sequential`` folding.
    """
    try:
        import torch.fx

        graph = torch.fx.symbolic_trace(model).graph
    except Exception:  # dynamic control flow etc.: nothing to fold here
        return
    calls: dict[str, int] = {}
    for node in graph.nodes:
        if node.op == "call_module":
            calls[str(node.target)] = calls.get(str(node.target), 0) + 1
    named = dict(model.named_modules())
    for node in graph.nodes:
        if node.op != "call_module" or len(node.args) != 1 or node.kwargs:
            continue
        bn = named.get(str(node.target))
        prev_node = node.args[0]
        if not isinstance(bn, (_BatchNorm, NIBBatchNorm2d)):
            continue
        if not isinstance(prev_node, torch.fx.Node) or prev_node.op != "call_module":
            continue
        if len(prev_node.users) != 1 or calls[str(prev_node.target)] != 1:
            continue
        if calls[str(node.target)] != 1 or bn.running_var is None:
            continue
        prev = named.get(str(prev_node.target))
        fused = None if prev is None else _fuse_pair(prev, bn)
        if fused is None:
            continue
        model.set_submodule(str(prev_node.target), fused)
        model.set_submodule(str(node.target), nn.Identity())
        named[str(prev_node.target)] = fused


def fold_batchnorm(model: nn.Module) -> nn.Module:
    r"""A copy of ``model`` with each BatchNorm folded into the layer before it.

    A BatchNorm directly after an ``nn.Conv1d/2d/3d`` or ``nn.Linear`` is
    merged into that layer, using the running statistics (eval-mode
    BatchNorm), wherever the pair sits: inside an ``nn.Sequential`` or as
    attributes of a block (found by tracing the forward pass with
    ``torch.fx``; the layer's output must feed only the BatchNorm):

    .. math::

        W' = \frac{\gamma}{\sqrt{\sigma^2 + \epsilon}} W, \qquad
        b' = \frac{\gamma (b - \mu)}{\sqrt{\sigma^2 + \epsilon}} + \beta ,

    (a :class:`~captum_ext.models.NIBBatchNorm2d` has no mean and no shift, so
    only the scale :math:`\gamma / \sqrt{\sigma^2 + \epsilon}` is folded),
    and the BatchNorm is replaced by ``nn.Identity``, so submodule names are
    kept (patterns fitted on the folded model name the same layers). The
    result computes the same function as ``model.eval()`` (up to float
    rounding). ``model`` itself is not modified. PatternNet, PatternAttribution
    and PGIG do not need this (they handle BatchNorm themselves, with the same
    result); it gives a BatchNorm-free model for other uses.

    Args:
        model (nn.Module): The model; each BatchNorm must directly follow the
            Conv / Linear layer it is folded into (as in torchvision's VGG,
            ResNet, MobileNet and EfficientNet).

    Returns:
        nn.Module: the folded copy, in eval mode.

    Raises:
        ValueError: If a BatchNorm remains that could not be folded (not
            directly after a Conv / Linear layer, as in DenseNet's
            pre-activation blocks, or without running statistics).

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
    if any(isinstance(m, (_BatchNorm, NIBBatchNorm2d)) for m in folded.modules()):
        _fold_traced(folded)
    left = [
        name
        for name, m in folded.named_modules()
        if isinstance(m, (_BatchNorm, NIBBatchNorm2d))
    ]
    if left:
        raise ValueError(
            f"fold_batchnorm: could not fold BatchNorm layer(s) {left}: each must "
            "directly follow an nn.Conv1d/2d/3d or nn.Linear whose output nothing "
            "else uses (found in an nn.Sequential or by tracing the forward pass "
            "with torch.fx). PatternNet, PatternAttribution and PGIG do not need "
            "folding: they handle BatchNorm themselves."
        )
    return folded
