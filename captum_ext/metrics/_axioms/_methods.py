"""Binding an attribution method to a model, and running it on stacked rows."""

from __future__ import annotations

import copy
import inspect
from collections.abc import Callable, Mapping
from typing import Any

from captum.attr import Attribution, NoiseTunnel
from torch import Tensor, nn

#: What the checks accept as a method: an Attribution instance, an Attribution
#: class, a :class:`PerModel` factory, or a plain callable.
MethodType = Any


class PerModel:
    r"""An attribution method built anew for every model a check attributes.

    Checks such as :func:`~captum_ext.metrics.axioms.dummy_violation` attribute
    a *wrapped* model, and :func:`implementation_invariance_violation` a second,
    functionally equal model. An Attribution instance is rebound to those
    models by a shallow copy with its ``forward_func`` (and ``model``)
    replaced; that is right for Captum's gradient and perturbation methods,
    but not for a method holding state fitted to one model, such as
    :class:`~captum_ext.attr.PatternAttribution` (its patterns). Wrap a
    factory in ``PerModel`` to build the method for each model instead.

    Args:
        factory (Callable): ``model -> Attribution`` (or ``model -> callable``
            following the plain-callable protocol of the checks).

    Examples::

        >>> pa = PerModel(lambda m: PatternAttribution(m, fit_patterns(m, data)))
        >>> implementation_invariance_violation(pa, net1, x, equivalent=net2)
    """

    def __init__(self, factory: Callable[[Any], Any]) -> None:
        if not callable(factory):
            raise TypeError(
                f"`factory` must be callable, got {type(factory).__name__}."
            )
        self.factory = factory

    def __repr__(self) -> str:
        return f"PerModel({self.factory!r})"


def _takes(fn: Callable[..., Any], name: str) -> bool:
    """Whether ``fn`` names the parameter.

    A ``**kwargs`` catch-all does not count: RecursiveMaskAttribution forwards
    it to a method that may not take ``baselines``.
    """
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return True
    if name in params:
        return True
    inner = getattr(getattr(fn, "__self__", None), "attribution_method", None)
    catch_all = any(p.kind == inspect.Parameter.VAR_KEYWORD for p in params.values())
    if catch_all and inner is not None and hasattr(inner, "attribute"):
        # NoiseTunnel passes its **kwargs to the method it wraps
        return _takes(inner.attribute, name)
    return False


def _rebind(method: Any, model: Any) -> Any:
    """A shallow copy of an Attribution instance that explains ``model``."""
    inner = getattr(method, "attribution_method", None)
    if isinstance(method, NoiseTunnel) or hasattr(inner, "attribute"):
        # wrappers of another method (NoiseTunnel, RecursiveMaskAttribution):
        # rebind the wrapped method too
        out = copy.copy(method)
        out.attribution_method = _rebind(inner, model)
        out.forward_func = model
        return out
    if hasattr(method, "layer"):
        raise TypeError(
            f"{type(method).__name__} is a layer method tied to a module of its "
            "model and cannot be rebound to a wrapped or equivalent model; pass "
            "`PerModel(factory)` instead."
        )
    if hasattr(method, "patterns"):
        raise TypeError(
            f"{type(method).__name__} holds patterns fitted to its model and "
            "cannot be rebound to a wrapped or equivalent model; pass "
            "`PerModel(lambda m: ...)` building it for each model instead."
        )
    out = copy.copy(method)
    out.forward_func = model
    if hasattr(out, "model"):
        if not isinstance(model, nn.Module):
            raise TypeError(
                f"{type(method).__name__} needs an nn.Module model; got "
                f"{type(model).__name__}."
            )
        out.model = model
    return out


class BoundMethod:
    """A method bound to one model: ``run(inputs, baselines, target, afa)``."""

    def __init__(
        self,
        fn: Callable[..., Any],
        is_callable: bool,
        model: Any,
        attribute_kwargs: Mapping[str, Any],
        label: str,
    ) -> None:
        self.fn = fn
        self.is_callable = is_callable
        self.model = model
        self.kwargs = dict(attribute_kwargs)
        self.label = label
        self.takes_baselines = is_callable or _takes(fn, "baselines")
        self.takes_afa = is_callable or _takes(fn, "additional_forward_args")
        self.takes_target = is_callable or _takes(fn, "target")

    def run(
        self,
        inputs: tuple[Tensor, ...],
        is_tuple: bool,
        baselines: tuple[Tensor, ...] | None,
        target: Any,
        afa: Any,
    ) -> tuple[Tensor, ...]:
        kwargs = dict(self.kwargs)
        if baselines is not None and self.takes_baselines:
            kwargs["baselines"] = baselines if is_tuple else baselines[0]
        if self.takes_target:
            kwargs["target"] = target
        if afa is not None:
            if not self.takes_afa:
                raise TypeError(
                    f"{self.label}'s attribute does not take "
                    "`additional_forward_args`, which this check needs."
                )
            kwargs["additional_forward_args"] = afa
        if self.is_callable:
            kwargs["forward_func"] = self.model
        out = self.fn(inputs if is_tuple else inputs[0], **kwargs)
        if isinstance(out, tuple) and len(out) == 2 and not is_tuple:
            # (attributions, delta) from return_convergence_delta=True
            out = out[0]
        outs = out if isinstance(out, tuple) else (out,)
        if len(outs) != len(inputs) or not all(isinstance(a, Tensor) for a in outs):
            raise TypeError(
                f"{self.label} must return attributions shaped like `inputs` "
                f"(a Tensor or a tuple of {len(inputs)} Tensors)."
            )
        for a, x in zip(outs, inputs):
            if a.shape != x.shape:
                raise ValueError(
                    f"{self.label} returned attributions of shape "
                    f"{tuple(a.shape)} for inputs of shape {tuple(x.shape)}."
                )
        return tuple(a.detach() for a in outs)


class Method:
    """Normalises the ways a method can be given to a check."""

    def __init__(
        self,
        method: MethodType,
        attribute_kwargs: Mapping[str, Any] | None = None,
        name: str = "method",
    ) -> None:
        if attribute_kwargs is not None and not isinstance(attribute_kwargs, Mapping):
            raise TypeError(
                "`attribute_kwargs` must be a mapping of keyword arguments, got "
                f"{type(attribute_kwargs).__name__}."
            )
        self.kwargs = dict(attribute_kwargs or {})
        for reserved in ("inputs", "baselines", "target", "additional_forward_args"):
            if reserved in self.kwargs:
                raise ValueError(
                    f"`attribute_kwargs` must not hold {reserved!r}: the check "
                    "passes it."
                )
        self.name = name
        if isinstance(method, PerModel):
            self.kind = "factory"
        elif isinstance(method, type):
            if not issubclass(method, Attribution):
                raise TypeError(
                    f"`{name}` given as a class must subclass "
                    f"captum.attr.Attribution, got {method.__name__}."
                )
            self.kind = "class"
        elif hasattr(method, "attribute") and callable(method.attribute):
            self.kind = "instance"
        elif callable(method):
            self.kind = "callable"
        else:
            raise TypeError(
                f"`{name}` must be an Attribution instance or class, a PerModel "
                "factory, or a callable `(inputs, baselines=, target=, "
                "additional_forward_args=, forward_func=) -> attributions`; got "
                f"{type(method).__name__}."
            )
        self.method = method
        self.label = f"`{name}` ({getattr(method, '__name__', type(method).__name__)})"

    @property
    def own_forward_func(self) -> Any:
        if self.kind == "instance":
            return getattr(self.method, "forward_func", None)
        return None

    def bind(self, model: Any) -> BoundMethod:
        """The method explaining ``model``."""
        if self.kind == "callable":
            return BoundMethod(self.method, True, model, self.kwargs, self.label)
        if self.kind == "class":
            inst = self.method(model)
        elif self.kind == "factory":
            inst = self.method.factory(model)
            if not (hasattr(inst, "attribute") and callable(inst.attribute)):
                if callable(inst):
                    return BoundMethod(inst, True, model, self.kwargs, self.label)
                raise TypeError(
                    f"The PerModel factory of {self.label} returned "
                    f"{type(inst).__name__}, not an attribution method."
                )
        elif model is self.own_forward_func:
            inst = self.method
        else:
            inst = _rebind(self.method, model)
        return BoundMethod(inst.attribute, False, model, self.kwargs, self.label)
