"""The pattern backward pass: forward hooks that swap modules' backward rules.

Within :func:`pattern_backward`, forward hooks replace module outputs by
tensors with the same values whose backward rule is the pattern method's:

- **pattern layers** (``nn.Linear``, ``nn.Conv1d/2d/3d``): the incoming
  gradient is mapped to the layer's input with a substitute matrix ``B``
  (``A`` for PatternNet, ``W * A`` for PatternAttribution / PGIG) instead of
  ``W``: ``grad_in = B^T grad_out``, computed by the layer type's own
  input-gradient kernel (a matrix product, or the transposed convolution with
  the layer's stride, padding, dilation and groups). One generic rule for
  every layer type: the forward value is the layer's own, only the matrix of
  the backward changes. Biases are ignored.
- **eval-mode BatchNorm**, ``y = s x + t`` per channel: a diagonal linear
  layer whose pattern is ``1 / s`` for any estimator (``cov(x, y) / (s
  cov(x, y))``). PatternNet's rule divides the gradient by ``s``;
  PatternAttribution's (``W * A = s / s = 1``) passes it unchanged. This is
  exactly what folding the BatchNorm into the preceding (or following) layer
  and fitting patterns on the folded model gives, so models need no folding.
- **gated activations** ``y = x g(x)`` (SiLU, Hardswish, GELU, Mish): the
  gradient is multiplied by the gate ``g(x) = y / x`` in [0, 1] -- the smooth
  counterpart of ReLU's rule (ReLU's gradient *is* its gate ``1[x > 0]``).
  Their local gradients exceed 1 and turn negative near the threshold, which
  amplifies the backward over depth.
- **multiplicative gates** of torchvision's ``SqueezeExcitation`` blocks
  (MobileNetV3, EfficientNet), ``x * sigmoid(f(x))``: the scale is a constant
  gate (as the ReLU mask is), so the gradient is multiplied by it and does
  not enter the scale path.
- everything else (ReLU / ReLU6 / LeakyReLU gating, max-pool routing, average
  pooling, residual additions, concatenations, reshapes, and monotone
  activations such as sigmoid or tanh used element-wise, which keep their
  local gradient) has its ordinary autograd rule; so have functional
  operations inside custom ``forward`` methods.

The parameters are never touched and receive no gradient. The hooks are
removed in ``finally``.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn import grad as nn_grad
from torch.nn.modules.conv import _ConvNd

from captum_ext.attr._core.pattern._layers import (
    BATCHNORM_TYPES,
    CONV_TYPES,
    GATED_ACTIVATIONS,
    PATTERN_LAYER_TYPES,
    batchnorm_scale,
    conv_padding,
    gate_path_layers,
)

_INPUT_GRAD = {
    1: nn_grad.conv1d_input,
    2: nn_grad.conv2d_input,
    3: nn_grad.conv3d_input,
}


class _PatternLinear(torch.autograd.Function):
    """Identity on the layer output; backward ``grad_in = grad_out @ B``."""

    @staticmethod
    def forward(
        ctx: Any, x: Tensor, holder: tuple[Tensor], backward_weight: Tensor
    ) -> Tensor:
        ctx.save_for_backward(backward_weight)
        return holder[0]

    @staticmethod
    def backward(ctx: Any, grad_out: Tensor) -> tuple[Tensor, None, None]:
        (b,) = ctx.saved_tensors
        return grad_out @ b.to(grad_out.dtype), None, None


class _PatternConv(torch.autograd.Function):
    """Identity on the conv output; backward is the transposed conv with ``B``."""

    @staticmethod
    def forward(
        ctx: Any,
        x: Tensor,
        holder: tuple[Tensor],
        backward_weight: Tensor,
        conv: nn.Module,
    ) -> Tensor:
        ctx.save_for_backward(backward_weight)
        # the input only lends its shape and layout to the input-gradient
        # kernel (its values are not used), so it is kept without a version
        # check: a later in-place change of it cannot affect the result
        ctx.x = x.detach()
        assert isinstance(conv, _ConvNd)
        ctx.stride = list(conv.stride)
        ctx.dilation = list(conv.dilation)
        ctx.groups = conv.groups
        ctx.pads = conv_padding(conv)
        return holder[0]

    @staticmethod
    def backward(ctx: Any, grad_out: Tensor) -> tuple[Tensor, None, None, None]:
        (b,) = ctx.saved_tensors
        x = ctx.x
        ctx.x = None
        pads = ctx.pads
        b = b.to(grad_out.dtype)
        dims = len(pads)
        if all(lo == hi for lo, hi in pads):
            grad_in = torch.ops.aten.convolution_backward(
                grad_out,
                x,
                b,
                None,
                ctx.stride,
                [lo for lo, _ in pads],
                ctx.dilation,
                False,
                [0] * dims,
                ctx.groups,
                [True, False, False],
            )[0]
        else:  # asymmetric ("same") padding: the gradient of the padded input
            spatial = x.shape[2:]
            padded_size = (
                *x.shape[:2],
                *(s + lo + hi for s, (lo, hi) in zip(spatial, pads)),
            )
            padded = _INPUT_GRAD[dims](
                padded_size,
                b,
                grad_out,
                stride=ctx.stride,
                padding=0,
                dilation=ctx.dilation,
                groups=ctx.groups,
            )
            index = (
                slice(None),
                slice(None),
                *(slice(lo, lo + s) for s, (lo, _) in zip(spatial, pads)),
            )
            grad_in = padded[index]
        return grad_in, None, None, None


class _ScaledGrad(torch.autograd.Function):
    """Identity on a module's output; backward ``grad_in = factor * grad_out``.

    ``factor`` is None for the identity backward.
    """

    @staticmethod
    def forward(
        ctx: Any, x: Tensor, holder: tuple[Tensor], factor: Tensor | None
    ) -> Tensor:
        ctx.factor = factor
        return holder[0]

    @staticmethod
    def backward(ctx: Any, grad_out: Tensor) -> tuple[Tensor, None, None]:
        factor = ctx.factor
        ctx.factor = None
        if factor is None:
            return grad_out, None, None
        return grad_out * factor.to(grad_out.dtype), None, None


def _wants_rule(x: Any, out: Any) -> bool:
    return (
        isinstance(x, Tensor)
        and isinstance(out, Tensor)
        and torch.is_grad_enabled()
        and (x.requires_grad or out.requires_grad)
    )


def _layer_hook(backward_weight: Tensor) -> Any:
    def hook(module: nn.Module, args: tuple[Any, ...], kwargs: Any, out: Any) -> Any:
        x = args[0] if args else kwargs["input"]
        if not _wants_rule(x, out):
            return None
        # the new output is a fresh tensor object with the same values; the
        # graph of ``out`` (through the weights) is dropped.
        holder = (out.detach(),)
        if isinstance(module, CONV_TYPES):
            return _PatternConv.apply(x, holder, backward_weight, module)
        return _PatternLinear.apply(x, holder, backward_weight)

    return hook


def _batchnorm_hook(divide_by_scale: bool) -> Any:
    def hook(module: nn.Module, args: tuple[Any, ...], out: Any) -> Any:
        x = args[0]
        if not _wants_rule(x, out):
            return None
        factor = None
        if divide_by_scale:
            scale = batchnorm_scale(module).to(out.dtype)
            inv = torch.where(scale == 0, torch.zeros_like(scale), 1.0 / scale)
            factor = inv.view(1, -1, *([1] * (out.dim() - 2)))
        return _ScaledGrad.apply(x, (out.detach(),), factor)

    return hook


def _gate(module: nn.Module, x: Tensor) -> Tensor:
    """``g(x) = f(x) / x`` of a gated activation ``f(x) = x g(x)``."""
    if isinstance(module, nn.SiLU):
        return torch.sigmoid(x)
    if isinstance(module, nn.Hardswish):
        return torch.clamp(x + 3.0, 0.0, 6.0) / 6.0
    if isinstance(module, nn.GELU):
        if module.approximate == "tanh":
            inner = 0.7978845608028654 * (x + 0.044715 * x * x * x)
            return 0.5 * (1.0 + torch.tanh(inner))
        return 0.5 * (1.0 + torch.erf(x * 0.7071067811865476))
    assert isinstance(module, nn.Mish)
    return torch.tanh(F.softplus(x))


class _GateRule:
    """Pre-hook and hook pair giving a gated activation the rule ``g(x)``."""

    def __init__(self) -> None:
        self.stash: tuple[Tensor, Tensor] | None = None

    def pre_hook(self, module: nn.Module, args: tuple[Any, ...]) -> Any:
        self.stash = None
        x = args[0] if args else None
        if not isinstance(x, Tensor) or not torch.is_grad_enabled():
            return None
        if not x.requires_grad:
            return None
        with torch.no_grad():
            gate = _gate(module, x.detach())
        self.stash = (x, gate)
        if getattr(module, "inplace", False):
            # keep the pre-activation intact: the module acts on a copy
            return (x.clone(), *args[1:])
        return None

    def hook(self, module: nn.Module, args: tuple[Any, ...], out: Any) -> Any:
        stash, self.stash = self.stash, None
        if stash is None or not isinstance(out, Tensor):
            return None
        x, gate = stash
        return _ScaledGrad.apply(x, (out.detach(),), gate)


def _constant_gate_hook(module: nn.Module, args: tuple[Any, ...], out: Any) -> Any:
    return out.detach() if isinstance(out, Tensor) else None


def _make_refusal(name: str) -> Any:
    def hook(module: nn.Module, args: tuple[Any, ...], out: Any) -> None:
        raise ValueError(
            f"Layer {name!r} ({type(module).__name__}) was called but `patterns` "
            "has no pattern for it. PatternNet, PatternAttribution and PGIG need "
            "a pattern for every nn.Linear / nn.Conv1d/2d/3d the forward pass "
            "uses: fit_patterns with `layers=None` (the default), or with a "
            "`layers` list that includes this layer, on data that reaches it."
        )

    return hook


@contextmanager
def pattern_backward(
    model: nn.Module,
    layers: Mapping[str, nn.Module],
    backward_weights: Mapping[str, Tensor],
    divide_batchnorm_by_scale: bool = False,
) -> Iterator[None]:
    """Within the block, ``model`` backpropagates with the pattern rules.

    ``layers`` backpropagate with ``backward_weights``; BatchNorm layers with
    ``1 / s`` (``divide_batchnorm_by_scale``, PatternNet) or the identity;
    gated activations and SqueezeExcitation gates as described in the module
    docstring. Any other pattern layer of ``model`` (outside gate paths)
    raises when called.
    """
    handles = []
    try:
        for name, module in layers.items():
            handles.append(
                module.register_forward_hook(
                    _layer_hook(backward_weights[name]), with_kwargs=True
                )
            )
        gated = gate_path_layers(model)
        bn_hook = _batchnorm_hook(divide_batchnorm_by_scale)
        try:
            from torchvision.ops.misc import (  # type: ignore[import-untyped]
                SqueezeExcitation,
            )
        except ImportError:  # pragma: no cover - torchvision is optional
            SqueezeExcitation = None
        for name, module in model.named_modules():
            if isinstance(module, PATTERN_LAYER_TYPES):
                if name not in layers and name not in gated:
                    handles.append(module.register_forward_hook(_make_refusal(name)))
            elif isinstance(module, BATCHNORM_TYPES):
                handles.append(module.register_forward_hook(bn_hook))
            elif isinstance(module, GATED_ACTIVATIONS):
                rule = _GateRule()
                handles.append(module.register_forward_pre_hook(rule.pre_hook))
                handles.append(module.register_forward_hook(rule.hook))
            elif SqueezeExcitation is not None and isinstance(
                module, SqueezeExcitation
            ):
                handles.append(
                    module.scale_activation.register_forward_hook(_constant_gate_hook)
                )
        yield
    finally:
        for h in handles:
            h.remove()
