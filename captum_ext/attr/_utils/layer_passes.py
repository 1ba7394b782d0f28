"""Forward / backward passes that read (and differentiate at) one layer.

One function, :func:`layer_pass`, runs the model once with a hook on the layer
and returns what the caller asks for:

- the layer's values (its output, or its input with ``to_layer_input``);
- their directional derivatives along input tangents, by forward-mode AD
  (``tangents``);
- the gradient of the target output with respect to the layer's values
  (``need_grad``), and optionally with respect to the inputs
  (``need_input_grad``).

Without ``need_grad`` the forward pass stops at the layer (the hook raises a
private exception), so only the first half of the model runs. With
``need_grad`` and no input gradient, the layer's values are detached leaves
for the rest of the forward pass, so the backward pass never goes past the
layer and no tangent is carried past it. Hooks are removed in ``finally``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.autograd.forward_ad as fwAD
from captum._utils.common import _run_forward
from torch import Tensor, nn

from captum_ext._utils.gradient import check_one_output_per_example, forward_select


class _StopForward(Exception):
    """Raised by the layer hook to end a forward pass at the layer."""


@dataclass
class LayerValues:
    """What one pass returns (fields are None when not requested)."""

    values: tuple[Tensor, ...]
    is_tuple: bool
    tangents: tuple[Tensor, ...] | None = None
    layer_grads: tuple[Tensor, ...] | None = None
    input_grads: tuple[Tensor, ...] | None = None


_FORWARD_AD_HINTS = ("forward ad", "forward-mode", "forward mode", "jvp")


def _forward_ad_unsupported(err: BaseException) -> bool:
    text = str(err).lower()
    return any(h in text for h in _FORWARD_AD_HINTS)


def layer_pass(
    forward_func: Callable[..., Any],
    layer: nn.Module,
    inputs: tuple[Tensor, ...],
    additional_forward_args: Any,
    *,
    to_layer_input: bool = False,
    tangents: tuple[Tensor, ...] | None = None,
    target: Any = None,
    need_grad: bool = False,
    need_input_grad: bool = False,
    clone_values: bool = False,
) -> LayerValues:
    """Run ``forward_func`` once and read ``layer`` (see the module docstring).

    ``inputs`` are plain tensors (not the caller's: they are not modified).
    ``need_input_grad`` requires ``need_grad`` and excludes ``tangents``.
    ``clone_values`` copies the layer's values when the forward pass goes on
    after the layer (so that in-place operations of the model cannot change
    them before they are used).
    Raises NotImplementedError (suggesting ``directional="finite_difference"``)
    when ``tangents`` are given and the model does not support forward-mode AD.
    """
    assert not (need_input_grad and (tangents is not None or not need_grad))
    state: dict[str, Any] = {"calls": 0}

    def capture(value: Any) -> Any:
        state["calls"] += 1
        if state["calls"] > 1:
            raise RuntimeError(
                "The attributed layer was called more than once in one forward "
                "pass (a shared module, or a model wrapped in DataParallel); "
                "attribute to a layer that runs exactly once."
            )
        is_seq = isinstance(value, (tuple, list))
        tensors = tuple(value) if is_seq else (value,)
        for t in tensors:
            if not isinstance(t, Tensor):
                raise TypeError(
                    "The attributed layer's "
                    + ("inputs" if to_layer_input else "outputs")
                    + f" must be tensors; got {type(t).__name__}."
                )
        state["is_tuple"] = len(tensors) > 1
        if tangents is not None:
            unpacked = [fwAD.unpack_dual(t) for t in tensors]
            primals = tuple(u.primal for u in unpacked)
            state["tangents"] = tuple(
                torch.zeros_like(u.primal) if u.tangent is None else u.tangent
                for u in unpacked
            )
        else:
            primals = tensors
        if not need_grad:
            state["values"] = tuple(p.detach() for p in primals)
            raise _StopForward
        torch.set_grad_enabled(True)
        if need_input_grad:
            # keep the graph to the inputs; hand a copy downstream so that
            # in-place operations after the layer leave the values intact
            state["wrt"] = primals
            new = tuple(p.clone() for p in primals)
        else:
            leaves = tuple(p.detach().requires_grad_(True) for p in primals)
            state["wrt"] = leaves
            new = tuple(leaf.clone() for leaf in leaves)
        state["values"] = tuple(
            p.detach().clone() if clone_values else p.detach() for p in primals
        )
        if not is_seq:
            return new[0]
        return list(new) if isinstance(value, list) else new

    def forward_hook(module: nn.Module, args: Any, output: Any) -> Any:
        return capture(output)

    def pre_hook(module: nn.Module, args: Any) -> Any:
        return capture(args)

    handle = (
        layer.register_forward_pre_hook(pre_hook)
        if to_layer_input
        else layer.register_forward_hook(forward_hook)
    )
    try:
        if need_grad:
            leaves = tuple(x.detach().requires_grad_(need_input_grad) for x in inputs)
            # Without an input gradient nothing flows back past the layer: the
            # part of the model before it runs without recording history, and
            # the hook switches recording on for the rest.
            prev = torch.is_grad_enabled()
            torch.set_grad_enabled(need_input_grad)
            try:
                if tangents is not None:
                    with fwAD.dual_level():
                        duals = tuple(
                            fwAD.make_dual(x, t) for x, t in zip(leaves, tangents)
                        )
                        output = _forward_ad_guard(
                            lambda: forward_select(
                                forward_func, duals, target, additional_forward_args
                            )
                        )
                else:
                    output = forward_select(
                        forward_func, leaves, target, additional_forward_args
                    )
                if "values" not in state:
                    raise AssertionError(
                        "Forward hook did not obtain any outputs for given layer"
                    )
                check_one_output_per_example(output)
                wrt = state["wrt"] + (leaves if need_input_grad else ())
                if not output.requires_grad:
                    raise RuntimeError(
                        "The model's output does not depend differentiably on the "
                        "attributed layer (is the layer run under torch.no_grad() "
                        "or its output detached inside the model?)."
                    )
                grads = torch.autograd.grad(output.sum(), wrt, allow_unused=True)
            finally:
                torch.set_grad_enabled(prev)
            grads = tuple(
                torch.zeros_like(w) if g is None else g for w, g in zip(wrt, grads)
            )
            n_layer = len(state["wrt"])
            return LayerValues(
                state["values"],
                state["is_tuple"],
                state.get("tangents"),
                grads[:n_layer],
                grads[n_layer:] if need_input_grad else None,
            )
        with torch.no_grad():
            try:
                if tangents is not None:
                    with fwAD.dual_level():
                        duals = tuple(
                            fwAD.make_dual(x, t) for x, t in zip(inputs, tangents)
                        )
                        _forward_ad_guard(
                            lambda: _run_forward(
                                forward_func, duals, None, additional_forward_args
                            )
                        )
                else:
                    _run_forward(forward_func, inputs, None, additional_forward_args)
            except _StopForward:
                pass
        if "values" not in state:
            raise AssertionError(
                "Forward hook did not obtain any outputs for given layer"
            )
        return LayerValues(state["values"], state["is_tuple"], state.get("tangents"))
    finally:
        handle.remove()


def _forward_ad_guard(run: Callable[[], Any]) -> Any:
    """Run a forward pass with dual inputs; a clear error if forward AD is missing."""
    try:
        return run()
    except (NotImplementedError, RuntimeError) as err:
        if not _forward_ad_unsupported(err):
            raise
        raise NotImplementedError(
            "directional='jvp' needs forward-mode AD (torch.autograd.forward_ad) "
            "through the layers before the attributed layer, and the model does "
            f"not support it ({type(err).__name__}: {str(err).splitlines()[0]}). "
            "Use directional='finite_difference' instead."
        ) from err
