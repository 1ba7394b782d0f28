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
import torch.nn.functional as F
from captum._utils.common import _run_forward
from torch import Tensor, nn
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.overrides import TorchFunctionMode

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


def _tangent(value: Any) -> Any:
    """``(primal, tangent)`` of a dual tensor at the current level, else None."""
    if not isinstance(value, Tensor):
        return None
    dual = fwAD.unpack_dual(value)
    return None if dual.tangent is None else dual


def _plain(*values: Any) -> bool:
    """True when none of ``values`` carries a tangent (parameters, statistics)."""
    return all(_tangent(v) is None for v in values)


_CONV_DIMS = {torch.conv1d: 3, torch.conv2d: 4, torch.conv3d: 5}


def _affine_rule(
    mode: TangentRules, func: Callable[..., Any], args: tuple, kwargs: dict
) -> Any:
    """Convolution / linear with plain parameters: tangent = the map, no bias.

    PyTorch's rule adds ``map(input, 0-weight-tangent)``: a third full
    convolution (matrix product) per layer.
    """
    if len(args) < 2 or "input" in kwargs or "weight" in kwargs:
        return NotImplemented
    x, weight = args[0], args[1]
    dual = _tangent(x)
    bias = args[2] if len(args) > 2 else kwargs.get("bias")
    if dual is None or not _plain(weight, bias):
        return NotImplemented
    primal = func(dual.primal, *args[1:], **kwargs)
    t_kwargs = {k: (None if k == "bias" else v) for k, v in kwargs.items()}
    t_rest = (None, *args[3:]) if len(args) > 2 else ()
    # batched input (examples along dim 0): a row-periodic tangent stays so
    batched = x.dim() == _CONV_DIMS.get(func, x.dim()) and x.dim() >= 2
    compact = mode.compact(x) if batched else None
    if compact is None:
        return fwAD.make_dual(primal, func(dual.tangent, weight, *t_rest, **t_kwargs))
    small, repeats = compact
    return mode.periodic(primal, func(small, weight, *t_rest, **t_kwargs), repeats)


_BATCH_NORM_ARGS = (
    "input",
    "running_mean",
    "running_var",
    "weight",
    "bias",
    "training",
    "momentum",
    "eps",
)


def _batch_norm_rule(
    mode: TangentRules, func: Callable[..., Any], args: tuple, kwargs: dict
) -> Any:
    """Inference BatchNorm (running statistics): tangent = input tangent * scale.

    PyTorch's rule recomputes the normalisation around the tangent (about 7x
    the cost of the BatchNorm itself); here the tangent costs one BatchNorm.
    """
    if len(args) > len(_BATCH_NORM_ARGS):
        return NotImplemented
    bound = dict(zip(_BATCH_NORM_ARGS, args))
    if set(kwargs) & set(bound) or not set(kwargs) <= set(_BATCH_NORM_ARGS):
        return NotImplemented
    bound.update(kwargs)
    x, mean, var, weight = (
        bound.get("input"),
        bound.get("running_mean"),
        bound.get("running_var"),
        bound.get("weight"),
    )
    dual = _tangent(x)
    if (
        bound.get("training", False)
        or mean is None
        or var is None
        or dual is None
        or dual.tangent.dim() < 2
        or not _plain(mean, var, weight, bound.get("bias"))
    ):
        return NotImplemented
    primal = func(**{**bound, "input": dual.primal})
    # the tangent is the input tangent * weight / sqrt(var + eps): BatchNorm's
    # own kernel with a zero mean and no bias (faster than a broadcast multiply)
    linear = {**bound, "running_mean": torch.zeros_like(mean), "bias": None}
    compact = mode.compact(x)
    if compact is None:
        return fwAD.make_dual(primal, func(**{**linear, "input": dual.tangent}))
    rows, repeats = compact
    return mode.periodic(primal, func(**{**linear, "input": rows}), repeats)


_INPLACE_RELU = (torch.relu_, Tensor.relu_)
# PyTorch's own forward-mode rule of ReLU: the tangent where the output is > 0
_threshold_backward = torch.ops.aten.threshold_backward


def _relu_rule(
    mode: TangentRules, func: Callable[..., Any], args: tuple, kwargs: dict
) -> Any:
    """ReLU: PyTorch's rule (tangent zeroed where the output is zero), fused.

    In place (``inplace=True``, ``relu_``) both the primal and the tangent are
    written in place, as PyTorch's own rule does.
    """
    if len(args) != 1 or set(kwargs) - {"inplace"}:
        return NotImplemented
    dual = _tangent(args[0])
    if dual is None or dual.tangent._is_zerotensor():
        return NotImplemented
    if not (func in _INPLACE_RELU or bool(kwargs.get("inplace", False))):
        primal = torch.relu(dual.primal)
        return fwAD.make_dual(primal, _threshold_backward(dual.tangent, primal, 0))
    tangent = dual.tangent
    dual.primal.relu_()
    _threshold_backward.grad_input(tangent, dual.primal, 0, grad_input=tangent)
    return args[0]


def _attention_rule(
    mode: TangentRules, func: Callable[..., Any], args: tuple, kwargs: dict
) -> Any:
    """Attention on dual inputs: scaled dot-product attention's math backend.

    For ``F.scaled_dot_product_attention`` and for
    ``F.multi_head_attention_forward`` (``nn.MultiheadAttention``'s slow path,
    which calls it): the fused CPU / CUDA attention kernels have no
    forward-mode formula; the math backend is built from operations that
    have one.
    """
    if _plain(*args[:3], *kwargs.values()):
        return NotImplemented
    with sdpa_kernel(SDPBackend.MATH):
        return func(*args, **kwargs)


_RULES: dict[Any, Callable[..., Any]] = {
    torch.conv1d: _affine_rule,
    torch.conv2d: _affine_rule,
    torch.conv3d: _affine_rule,
    F.linear: _affine_rule,
    F.batch_norm: _batch_norm_rule,
    F.relu: _relu_rule,
    torch.relu: _relu_rule,
    torch.relu_: _relu_rule,
    Tensor.relu: _relu_rule,
    Tensor.relu_: _relu_rule,
    F.scaled_dot_product_attention: _attention_rule,
    F.multi_head_attention_forward: _attention_rule,
}


class TangentRules(TorchFunctionMode):
    """Forward-mode rules for a pass with dual inputs (a torch-function mode).

    PyTorch's generic forward-mode formulas treat every parameter as a
    possible dual tensor: a convolution or linear layer costs three
    convolutions (matrix products) instead of two, and an inference
    BatchNorm about seven times its own cost. With plain parameters the
    tangent of an affine map is the map without its bias, and that of an
    inference BatchNorm is the input tangent times its per-channel scale;
    ReLU's rule is fused. The values are PyTorch's up to rounding.

    Row-periodic tangents: the IG path points of one chunk share their
    tangents (the patch directions), step after step. The caller makes such
    a dual input with :meth:`periodic` (its ``rows`` distinct tangent rows
    and the number of repeats); until the first operation that is not one of
    the affine maps above (typically the first nonlinearity), the tangent is
    computed on the distinct rows only and repeated. A registered tensor
    changed in place since (its tangent's version counter moved) is treated
    as any other.

    The mode also makes forward AD go through attention: a torch-function
    mode turns off ``nn.MultiheadAttention``'s fused fast path (it is only
    taken when no argument has a torch-function override), and scaled
    dot-product attention on dual tensors runs on its math backend
    (``torch.nn.attention.sdpa_kernel``, which sets process-wide backend
    flags for the duration of the attention call). Any other
    operation, and any of these with a dual parameter, runs unchanged. Call
    :meth:`deactivate` once no dual tensor can follow (after the layer).
    """

    def __init__(self) -> None:
        super().__init__()
        self.active = True
        # id(dual) -> (dual, distinct tangent rows, repeats, tangent version)
        self._periodic: dict[int, tuple[Tensor, Tensor, int, int]] = {}

    def register(self, dual: Tensor, rows: Tensor, repeats: int) -> None:
        """Note that ``dual``'s tangent is ``rows`` repeated along dim 0."""
        tangent = fwAD.unpack_dual(dual).tangent
        assert tangent is not None and tangent.shape[0] == rows.shape[0] * repeats
        self._periodic[id(dual)] = (dual, rows, repeats, tangent._version)

    def compact(self, value: Any) -> tuple[Tensor, int] | None:
        """``(rows, repeats)`` of a registered, unmodified dual, else None."""
        entry = self._periodic.get(id(value))
        if entry is None or entry[0] is not value:
            return None
        tangent = fwAD.unpack_dual(value).tangent
        if tangent is None or tangent._version != entry[3]:
            return None  # changed in place since
        return entry[1], entry[2]

    def periodic(self, primal: Tensor, rows: Tensor, repeats: int) -> Tensor:
        """The dual of ``primal`` whose tangent is ``rows`` repeated (registered)."""
        if repeats == 1:
            return fwAD.make_dual(primal, rows)
        dual = fwAD.make_dual(primal, rows.repeat(repeats, *(1,) * (rows.dim() - 1)))
        self.register(dual, rows, repeats)
        return dual

    def deactivate(self) -> None:
        """Plain dispatch from now on (and drop the registered tensors)."""
        self.active = False
        self._periodic.clear()

    def __torch_function__(
        self,
        func: Callable[..., Any],
        types: Any,
        args: tuple = (),
        kwargs: dict | None = None,
    ) -> Any:
        kwargs = kwargs or {}
        if self.active:
            rule = _RULES.get(func)
            if rule is not None:
                out = rule(self, func, args, kwargs)
                if out is not NotImplemented:
                    return out
        return func(*args, **kwargs)


def layer_pass(
    forward_func: Callable[..., Any],
    layer: nn.Module,
    inputs: tuple[Tensor, ...],
    additional_forward_args: Any,
    *,
    to_layer_input: bool = False,
    tangents: tuple[Tensor, ...] | None = None,
    tangent_repeats: int = 1,
    target: Any = None,
    need_grad: bool = False,
    need_input_grad: bool = False,
    clone_values: bool = False,
) -> LayerValues:
    """Run ``forward_func`` once and read ``layer`` (see the module docstring).

    ``inputs`` are plain tensors (not the caller's: they are not modified).
    ``need_input_grad`` requires ``need_grad`` and excludes ``tangents``.
    With ``tangent_repeats`` = k > 1, ``tangents[i]`` holds ``r`` rows and
    ``inputs[i]`` has ``k * r``: row ``j * r + p`` has tangent row ``p`` (the
    steps of a path chunk share the patch directions; see
    :class:`TangentRules`).
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
            # no dual tensor follows the layer: plain dispatch from here on
            state["rules"].deactivate()
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
                    with fwAD.dual_level(), TangentRules() as state["rules"]:
                        duals = tuple(
                            state["rules"].periodic(x, t, tangent_repeats)
                            for x, t in zip(leaves, tangents)
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
                    with fwAD.dual_level(), TangentRules() as state["rules"]:
                        duals = tuple(
                            state["rules"].periodic(x, t, tangent_repeats)
                            for x, t in zip(inputs, tangents)
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
