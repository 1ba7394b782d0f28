"""The pattern backward pass: forward hooks that swap each layer's backward rule.

For every ``nn.Linear`` / ``nn.Conv2d`` a forward hook replaces the layer's
output by the output of :class:`_PatternLinear` / :class:`_PatternConv2d`:
the forward value is the layer's own output (computed with its weights ``W``),
but the backward maps the incoming gradient to the layer's input with a
substitute matrix ``B`` (``A`` for PatternNet, ``W * A`` for
PatternAttribution) instead of ``W``. The parameters are never touched and
receive no gradient; every other operation (ReLU gating, max-pool routing,
reshapes, functional activations) keeps its ordinary autograd rule. The hooks
are removed in ``finally``.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import grad as nn_grad

from captum_ext.attr._core.pattern._layers import PATTERN_LAYER_TYPES, conv_padding


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


class _PatternConv2d(torch.autograd.Function):
    """Identity on the conv output; backward is the transposed conv with ``B``."""

    @staticmethod
    def forward(
        ctx: Any,
        x: Tensor,
        holder: tuple[Tensor],
        backward_weight: Tensor,
        conv: nn.Conv2d,
    ) -> Tensor:
        ctx.save_for_backward(backward_weight)
        # the input only lends its shape and layout to the input-gradient
        # kernel (its values are not used), so it is kept without a version
        # check: a later in-place change of it cannot affect the result
        ctx.x = x.detach()
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
        top, bottom, left, right = ctx.pads
        b = b.to(grad_out.dtype)
        if top == bottom and left == right:
            grad_in = torch.ops.aten.convolution_backward(
                grad_out,
                x,
                b,
                None,
                ctx.stride,
                [top, left],
                ctx.dilation,
                False,
                [0, 0],
                ctx.groups,
                [True, False, False],
            )[0]
        else:  # asymmetric ("same") padding: the gradient of the padded input
            n, c, h, w = x.shape
            padded = nn_grad.conv2d_input(
                (n, c, h + top + bottom, w + left + right),
                b,
                grad_out,
                stride=ctx.stride,
                padding=0,
                dilation=ctx.dilation,
                groups=ctx.groups,
            )
            grad_in = padded[:, :, top : top + h, left : left + w]
        return grad_in, None, None, None


def _make_hook(backward_weight: Tensor) -> Any:
    def hook(module: nn.Module, args: tuple[Any, ...], kwargs: Any, out: Any) -> Any:
        x = args[0] if args else kwargs["input"]
        if not isinstance(out, Tensor) or not torch.is_grad_enabled():
            return None
        if not (x.requires_grad or out.requires_grad):
            return None
        # the new output is a fresh tensor object with the same values; the
        # graph of ``out`` (through the weights) is dropped.
        holder = (out.detach(),)
        if isinstance(module, nn.Conv2d):
            return _PatternConv2d.apply(x, holder, backward_weight, module)
        return _PatternLinear.apply(x, holder, backward_weight)

    return hook


def _make_refusal(name: str) -> Any:
    def hook(module: nn.Module, args: tuple[Any, ...], out: Any) -> None:
        raise ValueError(
            f"Layer {name!r} ({type(module).__name__}) was called but `patterns` "
            "has no pattern for it. PatternNet, PatternAttribution and PGIG need "
            "a pattern for every nn.Linear / nn.Conv2d the forward pass uses: "
            "fit_patterns with `layers=None` (the default), or with a `layers` "
            "list that includes this layer, on data that reaches it."
        )

    return hook


@contextmanager
def pattern_backward(
    model: nn.Module,
    layers: Mapping[str, nn.Module],
    backward_weights: Mapping[str, Tensor],
) -> Iterator[None]:
    """Within the block, ``layers`` backpropagate with ``backward_weights``.

    Any other ``nn.Linear`` / ``nn.Conv2d`` of ``model`` raises when called.
    """
    handles = []
    try:
        for name, module in layers.items():
            handles.append(
                module.register_forward_hook(
                    _make_hook(backward_weights[name]), with_kwargs=True
                )
            )
        for name, module in model.named_modules():
            if isinstance(module, PATTERN_LAYER_TYPES) and name not in layers:
                handles.append(module.register_forward_hook(_make_refusal(name)))
        yield
    finally:
        for h in handles:
            h.remove()
