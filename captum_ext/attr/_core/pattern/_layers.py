"""Which layers carry patterns, and the checks that refuse unsupported models."""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.modules.conv import _ConvNd

from captum_ext.models._nib import NIBBatchNorm2d

#: Layer types whose weights get a pattern.
PATTERN_LAYER_TYPES: tuple[type[nn.Module], ...] = (nn.Linear, nn.Conv2d)


def conv_padding(conv: nn.Conv2d) -> tuple[int, int, int, int]:
    """Zero padding of a Conv2d as ``(top, bottom, left, right)``.

    Handles integer / tuple paddings and the strings ``"valid"`` and ``"same"``
    (whose split can be asymmetric, as in PyTorch: the extra row or column goes
    to the bottom / right).
    """
    padding = conv.padding
    if isinstance(padding, str):
        if padding == "valid":
            return (0, 0, 0, 0)
        pads = []
        for d, k in zip(conv.dilation, conv.kernel_size):
            total = d * (k - 1)
            pads.append((total // 2, total - total // 2))
        return (pads[0][0], pads[0][1], pads[1][0], pads[1][1])
    ph, pw = padding
    return (int(ph), int(ph), int(pw), int(pw))


def check_supported_model(model: nn.Module, purpose: str) -> None:
    """Refuse models the pattern estimator and backward rules do not cover.

    Raises ValueError, naming the offending module, for BatchNorm layers
    (including :class:`~captum_ext.models.NIBBatchNorm2d`; fold them first with
    :func:`captum_ext.models.fold_batchnorm`), for convolutions other than
    ``nn.Conv2d`` and for ``nn.Conv2d`` with a non-zero padding mode.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(
            f"`model` must be a torch.nn.Module (patterns are attached to its "
            f"layers), got {type(model).__name__}."
        )
    for name, module in model.named_modules():
        label = name or "<root>"
        if isinstance(module, (_BatchNorm, NIBBatchNorm2d)):
            raise ValueError(
                f"`model` contains the BatchNorm layer {label!r} "
                f"({type(module).__name__}); {purpose} requires BatchNorm to be "
                "folded into the preceding Conv2d / Linear layer first: "
                "model = captum_ext.models.fold_batchnorm(model)."
            )
        if isinstance(module, _ConvNd) and not isinstance(module, nn.Conv2d):
            raise ValueError(
                f"`model` contains {label!r} ({type(module).__name__}); patterns "
                "are implemented for nn.Linear and nn.Conv2d only."
            )
        if isinstance(module, nn.Conv2d) and module.padding_mode != "zeros":
            raise ValueError(
                f"Conv2d {label!r} uses padding_mode={module.padding_mode!r}; "
                "patterns support zero padding only."
            )


def select_layers(
    model: nn.Module, layers: Sequence[str | nn.Module] | None = None
) -> dict[str, nn.Module]:
    """The pattern layers of ``model`` by name, in module order.

    ``layers=None`` selects every ``nn.Linear`` and ``nn.Conv2d``; otherwise
    each entry is a submodule name or the submodule itself.
    """
    named = {name: m for name, m in model.named_modules()}
    if layers is None:
        chosen = {
            name: m for name, m in named.items() if isinstance(m, PATTERN_LAYER_TYPES)
        }
        if not chosen:
            raise ValueError(
                "`model` has no nn.Linear or nn.Conv2d layer to fit patterns for."
            )
        return chosen
    if isinstance(layers, (str, nn.Module)) or not isinstance(layers, Sequence):
        raise TypeError(
            "`layers` must be a list of layer names or modules, got "
            f"{type(layers).__name__}."
        )
    if len(layers) == 0:
        raise ValueError("`layers` is empty.")
    by_id = {id(m): name for name, m in named.items()}
    wanted: set[str] = set()
    for layer in layers:
        if isinstance(layer, str):
            if layer not in named:
                raise ValueError(f"`layers`: the model has no submodule {layer!r}.")
            name = layer
        elif isinstance(layer, nn.Module):
            if id(layer) not in by_id:
                raise ValueError(
                    f"`layers`: {type(layer).__name__} module is not part of `model`."
                )
            name = by_id[id(layer)]
        else:
            raise TypeError(
                "`layers` entries must be submodule names or modules, got "
                f"{type(layer).__name__}."
            )
        if not isinstance(named[name], PATTERN_LAYER_TYPES):
            raise ValueError(
                f"`layers`: {name!r} is a {type(named[name]).__name__}; patterns "
                "exist for nn.Linear and nn.Conv2d only."
            )
        wanted.add(name)
    return {name: m for name, m in named.items() if name in wanted}
