"""Which layers carry patterns, the rules of the other modules, and the refusals.

The pattern theory (Kindermans et al., 2018) covers networks whose layers are
affine maps followed by element-wise nonlinearities. In a module tree that is:

- **pattern layers** (:data:`PATTERN_LAYER_TYPES`): ``nn.Linear`` and
  ``nn.Conv1d`` / ``nn.Conv2d`` / ``nn.Conv3d`` (any stride, dilation, groups,
  depthwise included, zero padding). Each gets a pattern shaped like its
  weight.
- **eval-mode BatchNorm** (``nn.BatchNorm1d/2d/3d`` and
  :class:`~captum_ext.models.NIBBatchNorm2d`): a fixed per-channel affine map
  :math:`y = s x + t`, handled functionally (see :mod:`._backward`), never
  by changing the model.
- **element-wise activations**, pooling, flattening, residual additions and
  concatenations: ordinary autograd rules, except the activations of
  :data:`GATED_ACTIVATIONS` and the multiplicative gates of torchvision's
  ``SqueezeExcitation`` blocks (see :mod:`._backward`).

Modules that mix positions or examples with data-dependent weights
(attention, LayerNorm / GroupNorm / InstanceNorm, recurrent layers, ...) are
outside the theory and refused up front by :func:`check_supported_model`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.modules.conv import _ConvNd

from captum_ext.models._nib import NIBBatchNorm2d

#: Layer types whose weights get a pattern.
PATTERN_LAYER_TYPES: tuple[type[nn.Module], ...] = (
    nn.Linear,
    nn.Conv1d,
    nn.Conv2d,
    nn.Conv3d,
)

#: Convolution types among the pattern layers.
CONV_TYPES: tuple[type[nn.Module], ...] = (nn.Conv1d, nn.Conv2d, nn.Conv3d)

#: BatchNorm types handled as per-channel affine maps.
BATCHNORM_TYPES: tuple[type[nn.Module], ...] = (_BatchNorm, NIBBatchNorm2d)

#: Activations of the form ``x * g(x)`` with a gate ``g`` in [0, 1]; their
#: backward rule multiplies by the gate ``g(x)`` (see ``_backward``).
GATED_ACTIVATIONS: tuple[type[nn.Module], ...] = (
    nn.SiLU,
    nn.Hardswish,
    nn.GELU,
    nn.Mish,
)


def _refused_types() -> list[tuple[type[nn.Module], str]]:
    mixes = (
        "normalises each example (or position) by statistics computed from the "
        "input itself, which is not a fixed linear map of its input"
    )
    refused: list[tuple[type[nn.Module], str]] = [
        (
            nn.MultiheadAttention,
            "attention weights depend on the input (a product of two functions "
            "of x followed by a softmax), so no layer-wise linear signal model "
            "exists for it",
        ),
        (nn.LayerNorm, mixes),
        (nn.GroupNorm, mixes),
        (nn.modules.instancenorm._InstanceNorm, mixes),
        (nn.LocalResponseNorm, mixes),
        (
            nn.RNNBase,
            "recurrent layers apply their weights repeatedly to hidden states",
        ),
        (nn.Bilinear, "the output is a product of two inputs"),
        (
            nn.modules.conv._ConvTransposeNd,
            "transposed convolutions have no pattern rule here",
        ),
    ]
    rms = getattr(nn, "RMSNorm", None)
    if rms is not None:
        refused.append((rms, mixes))
    return refused


_REFUSED = _refused_types()


def conv_padding(conv: nn.Module) -> list[tuple[int, int]]:
    """Zero padding of a convolution as ``[(before, after)]`` per spatial dim.

    Handles integer / tuple paddings and the strings ``"valid"`` and ``"same"``
    (whose split can be asymmetric, as in PyTorch: the extra element goes
    after).
    """
    assert isinstance(conv, _ConvNd)
    padding = conv.padding
    if isinstance(padding, str):
        if padding == "valid":
            return [(0, 0)] * len(conv.kernel_size)
        pads = []
        for d, k in zip(conv.dilation, conv.kernel_size):
            total = d * (k - 1)
            pads.append((total // 2, total - total // 2))
        return pads
    return [(int(p), int(p)) for p in padding]


def _label(name: str) -> str:
    return repr(name) if name else "<root>"


def check_supported_model(model: nn.Module, purpose: str) -> None:
    """Refuse models the pattern estimator and backward rules do not cover.

    Raises before any forward pass, naming the offending module and why:
    TypeError if ``model`` is not a module; ValueError for attention,
    LayerNorm / GroupNorm / InstanceNorm / LocalResponseNorm / RMSNorm,
    recurrent, bilinear and transposed-convolution layers, for convolutions
    with a non-zero ``padding_mode`` and for BatchNorm without running
    statistics (it normalises by batch statistics in eval mode too).
    """
    if not isinstance(model, nn.Module):
        raise TypeError(
            f"`model` must be a torch.nn.Module (patterns are attached to its "
            f"layers), got {type(model).__name__}."
        )
    for name, module in model.named_modules():
        for kind, why in _REFUSED:
            if isinstance(module, kind):
                raise ValueError(
                    f"`model` contains {_label(name)} ({type(module).__name__}), "
                    f"which {purpose} does not support: {why}. PatternNet, "
                    "PatternAttribution and PGIG are defined for networks of "
                    "Linear / Conv layers, BatchNorm, pooling and element-wise "
                    "activations (no transformers)."
                )
        if isinstance(module, _ConvNd) and not isinstance(module, CONV_TYPES):
            raise ValueError(
                f"`model` contains {_label(name)} ({type(module).__name__}); "
                "patterns are implemented for nn.Linear and nn.Conv1d / Conv2d / "
                "Conv3d only."
            )
        if isinstance(module, CONV_TYPES) and module.padding_mode != "zeros":
            raise ValueError(
                f"{type(module).__name__} {_label(name)} uses padding_mode="
                f"{module.padding_mode!r}; patterns support zero padding only."
            )
        if isinstance(module, BATCHNORM_TYPES) and (
            getattr(module, "running_var", None) is None
        ):
            raise ValueError(
                f"`model` contains the BatchNorm layer {_label(name)} "
                f"({type(module).__name__}) without running statistics "
                "(track_running_stats=False): it normalises by batch statistics "
                f"even in eval mode, which {purpose} does not support."
            )


def batchnorm_scale(bn: nn.Module) -> torch.Tensor:
    """The per-channel scale ``s`` of an eval-mode BatchNorm, ``y = s x + t``."""
    var = bn.running_var
    assert isinstance(var, torch.Tensor)
    scale = torch.rsqrt(var.detach() + float(bn.eps))  # type: ignore[arg-type]
    weight = getattr(bn, "weight", None)
    if weight is not None:
        scale = scale * weight.detach()
    return scale


def gate_path_layers(model: nn.Module) -> set[str]:
    """Names of the pattern layers inside a multiplicative gate's scale path.

    The backward rule of a torchvision ``SqueezeExcitation`` block treats its
    scale as a constant gate (see ``_backward``), so no gradient reaches the
    layers that compute it, and they need no pattern.
    """
    try:
        from torchvision.ops.misc import (  # type: ignore[import-untyped]
            SqueezeExcitation,
        )
    except ImportError:  # pragma: no cover - torchvision is optional
        return set()
    inside: set[str] = set()
    for name, module in model.named_modules():
        if isinstance(module, SqueezeExcitation):
            prefix = f"{name}." if name else ""
            for sub, m in module.named_modules():
                if isinstance(m, PATTERN_LAYER_TYPES):
                    inside.add(prefix + sub)
    return inside


def select_layers(
    model: nn.Module, layers: Sequence[str | nn.Module] | None = None
) -> dict[str, nn.Module]:
    """The pattern layers of ``model`` by name, in module order.

    ``layers=None`` selects every pattern layer except those inside a
    multiplicative gate's scale path (:func:`gate_path_layers`); otherwise
    each entry is a submodule name or the submodule itself.
    """
    named = {name: m for name, m in model.named_modules()}
    if layers is None:
        gated = gate_path_layers(model)
        chosen = {
            name: m
            for name, m in named.items()
            if isinstance(m, PATTERN_LAYER_TYPES) and name not in gated
        }
        if not chosen:
            raise ValueError(
                "`model` has no nn.Linear or nn.Conv1d/2d/3d layer to fit patterns for."
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
                raise ValueError(
                    f"`layers`: the model has no submodule {layer!r} (entries "
                    "must be names from model.named_modules())."
                )
            name = layer
        elif isinstance(layer, nn.Module):
            if id(layer) not in by_id:
                raise ValueError(
                    f"`layers`: the {type(layer).__name__} module given is not "
                    "part of `model` (pass the model's own submodule or its name)."
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
                "exist for nn.Linear and nn.Conv1d / Conv2d / Conv3d only."
            )
        wanted.add(name)
    return {name: m for name, m in named.items() if name in wanted}
