"""Models built around the user's model for the checks (the user's is untouched).

Each wrapper is an ``nn.Module`` that holds the user's model and calls it once
per forward pass (so hook-based methods such as DeepLift see every module once).
Per-row data (the example a row came from, its feature index, ...) travels as
trailing ``additional_forward_args`` tensors, which Captum's methods expand with
the inputs.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

import torch
from torch import Tensor, nn

from captum_ext.metrics._axioms._common import Layout


class _Wrapper(nn.Module):
    def __init__(self, model: Any, layout: Layout, n_inputs: int, n_afa: int) -> None:
        super().__init__()
        # a Module child is registered (hooks of methods reach it); a plain
        # function is kept as an attribute
        if isinstance(model, nn.Module):
            self.model = model
        else:
            object.__setattr__(self, "_fn", model)
        self.layout = layout
        self.n_inputs = n_inputs
        self.n_afa = n_afa

    def call(self, xs: tuple[Tensor, ...], afa: tuple[Any, ...]) -> Tensor:
        fn = cast(
            Callable[..., Any], self._modules.get("model") or self.__dict__["_fn"]
        )
        return fn(*xs, *afa)

    #: number of per-row tensors the check appends to the forward args
    n_tags = 0

    def split(
        self, args: tuple[Any, ...]
    ) -> tuple[tuple[Tensor, ...], tuple[Any, ...], tuple[Any, ...]]:
        k, m = self.n_inputs, self.n_afa
        if len(args) != k + m + self.n_tags:
            raise TypeError(
                f"{type(self).__name__} (a model built by an axiom check) needs the "
                f"{self.n_tags} per-row argument(s) the check passes as "
                "additional_forward_args; it was called without them (a method "
                "that runs the model on its own data, such as fit_patterns, cannot "
                "be used with this check)."
            )
        return args[:k], args[k : k + m], args[k + m :]


class DummyWrapper(_Wrapper):
    """``F(where(mask, fill, y))``: the masked features never enter the model."""

    n_tags = 1

    def __init__(
        self, model: Any, layout: Layout, n_inputs: int, n_afa: int, mask: Tensor
    ) -> None:
        super().__init__(model, layout, n_inputs, n_afa)
        self.mask = mask

    def forward(self, *args: Any) -> Tensor:
        xs, afa, (fill,) = self.split(args)
        flat = self.layout.flatten(xs)
        flat = torch.where(self.mask.to(flat.device), fill.to(flat.dtype), flat)
        return self.call(self.layout.unflatten(flat), afa)


class SymmetrisedWrapper(_Wrapper):
    """``F(sort(y))``, symmetric in every pair.

    Each pair ``(i, j)`` is fed to the model as ``(max(y_i, y_j), min(y_i, y_j))``.
    """

    def __init__(
        self, model: Any, layout: Layout, n_inputs: int, n_afa: int, pairs: Tensor
    ) -> None:
        super().__init__(model, layout, n_inputs, n_afa)
        self.pairs = pairs

    def forward(self, *args: Any) -> Tensor:
        xs, afa, _ = self.split(args)
        flat = self.layout.flatten(xs)
        i, j = self.pairs[:, 0].to(flat.device), self.pairs[:, 1].to(flat.device)
        a, b = flat[:, i], flat[:, j]
        out = flat.clone()
        out[:, i] = torch.maximum(a, b)
        out[:, j] = torch.minimum(a, b)
        return self.call(self.layout.unflatten(out), afa)


class CombinationWrapper(_Wrapper):
    """``c_F F_{t_F}(y) + c_G G_{t_G}(y)`` per row, output ``(rows, 1)``."""

    n_tags = 3

    def __init__(
        self, model: Any, other: Any, layout: Layout, n_inputs: int, n_afa: int
    ) -> None:
        super().__init__(model, layout, n_inputs, n_afa)
        if other is None or other is model:
            self.other = None
        elif isinstance(other, nn.Module):
            self.other = other
        else:
            object.__setattr__(self, "_other_fn", other)
            self.other = None
        self.same = other is None or other is model

    def forward(self, *args: Any) -> Tensor:
        xs, afa, (coef, t_f, t_g) = self.split(args)
        out_f = self.call(xs, afa)
        rows = out_f.shape[0]
        f = out_f.reshape(rows, -1).gather(1, t_f.view(-1, 1))
        if self.same:
            out_g = out_f
        elif self.other is not None:
            out_g = self.other(*xs, *afa)
        else:
            out_g = self.__dict__["_other_fn"](*xs, *afa)
        g = out_g.reshape(rows, -1).gather(1, t_g.view(-1, 1))
        coef = coef.to(f.dtype)
        return coef[:, :1] * f + coef[:, 1:] * g


class OneFeatureWrapper(_Wrapper):
    """``F(x_row with feature i_row taken from y)``: only feature ``i`` varies."""

    n_tags = 2

    def forward(self, *args: Any) -> Tensor:
        xs, afa, (x_row, feature) = self.split(args)
        flat = self.layout.flatten(xs)
        keep = torch.nn.functional.one_hot(feature, self.layout.dim).bool()
        out = torch.where(keep, flat, x_row.to(flat.dtype))
        return self.call(self.layout.unflatten(out), afa)


class MonotoneWrapper(_Wrapper):
    """``F(y) - c ||y - x||_1``, made non-decreasing towards ``x``.

    Non-decreasing along every monotone path that ends at ``x`` wherever
    ``c >= max_i |dF/dy_i|``.
    """

    n_tags = 2

    def __init__(self, model: Any, layout: Layout, n_inputs: int, n_afa: int) -> None:
        super().__init__(model, layout, n_inputs, n_afa)
        # |d| = ReLU(d) + ReLU(-d) with modules, so that rule-based methods
        # (DeepLift's rescale rule) treat the penalty as they treat the model
        self.up = nn.ReLU()
        self.down = nn.ReLU()

    def forward(self, *args: Any) -> Tensor:
        xs, afa, (x_row, c) = self.split(args)
        out = self.call(xs, afa)
        flat = self.layout.flatten(xs)
        d = flat - x_row.to(flat.dtype)
        pen = c.to(flat.dtype) * (self.up(d) + self.down(-d)).sum(dim=1)
        return out - pen.view(-1, *([1] * (out.dim() - 1))).to(out.dtype)


class LinearShiftWrapper(_Wrapper):
    """``F(y) + w . y`` per row, with ``w = c sign(x - x')``.

    Linear in ``y``, so rule-based methods (DeepLift) treat it exactly; it grows
    along every monotone path from ``x'`` to ``x`` wherever
    ``c >= max_i |dF/dy_i|``.
    """

    n_tags = 1

    def forward(self, *args: Any) -> Tensor:
        xs, afa, (w,) = self.split(args)
        out = self.call(xs, afa)
        flat = self.layout.flatten(xs)
        shift = (flat * w.to(flat.dtype)).sum(dim=1)
        return out + shift.view(-1, *([1] * (out.dim() - 1))).to(out.dtype)


class SignSplit(nn.Module):
    """``F(ReLU(x) - ReLU(-x))``: a change of graph, not of function.

    The identity on the input, written with two ``nn.ReLU`` modules, in front
    of the model.
    """

    def __init__(self, model: Any, n_inputs: int = 1) -> None:
        super().__init__()
        self.n_inputs = n_inputs
        if isinstance(model, nn.Module):
            self.model = model
        else:
            object.__setattr__(self, "_fn", model)
        self.pos = nn.ReLU()
        self.neg = nn.ReLU()

    def forward(self, *args: Any) -> Tensor:
        fn = cast(
            Callable[..., Any], self._modules.get("model") or self.__dict__["_fn"]
        )
        k = self.n_inputs
        split = [self.pos(a) - self.neg(-a) for a in args[:k]]
        return fn(*split, *args[k:])
