"""PatternSet: fitted patterns by layer name, with (de)serialisation and checks."""

from __future__ import annotations

import os
import pickle
from collections.abc import Iterator, Mapping
from typing import Any, cast

import torch
from torch import Tensor, nn

from captum_ext.attr._core.pattern._layers import PATTERN_LAYER_TYPES

_FORMAT_NAME = "captum_ext.PatternSet"
_KINDS = ("relu", "linear", "auto")


class PatternSet(Mapping[str, Tensor]):
    r"""Patterns of a model's ``nn.Linear`` / ``nn.Conv*d`` layers, by layer name.

    A read-only mapping from submodule names (as in ``model.named_modules()``)
    to pattern tensors shaped like each layer's weight: the informative
    directions :math:`a` of PatternNet / PatternAttribution (Kindermans et al.,
    2018), usually estimated with :func:`fit_patterns`. It is what
    :class:`PatternNet`, :class:`PatternAttribution` and
    :class:`PatternGuidedIG` take, and checks on use that it matches the model
    (:meth:`check`).

    Patterns are a statistic of the data *and* of the weights they were fitted
    with (eq. 2 of the PGIG paper divides by :math:`w^T \operatorname{cov}`), so
    refit them after the model changes.

    Args:
        patterns (Mapping[str, Tensor]): Layer name -> pattern tensor.
        kind (str): The ``kind`` of :func:`fit_patterns` that produced them:
            ``"relu"``, ``"linear"`` or ``"auto"`` (informational).
        num_examples (int, optional): How many data examples the statistics saw
            (summed over ranks); informational.

    Examples::

        >>> patterns = fit_patterns(model, train_loader)
        >>> patterns.save("patterns.pt")
        >>> patterns = PatternSet.load("patterns.pt")
        >>> PatternAttribution(model, patterns).attribute(images, target=labels)
    """

    #: Version of the ``state_dict`` layout written by :meth:`state_dict`.
    FORMAT_VERSION = 1

    def __init__(
        self,
        patterns: Mapping[str, Tensor],
        kind: str = "relu",
        num_examples: int | None = None,
    ) -> None:
        self._patterns: dict[str, Tensor] = {}
        self._kind = "relu"
        self._num_examples: int | None = None
        self._set(patterns, kind, num_examples)

    def _set(
        self, patterns: Mapping[str, Tensor], kind: str, num_examples: int | None
    ) -> None:
        if not isinstance(patterns, Mapping):
            raise TypeError(
                "`patterns` must be a mapping from layer names to tensors, got "
                f"{type(patterns).__name__}."
            )
        checked: dict[str, Tensor] = {}
        for name, value in patterns.items():
            if not isinstance(name, str):
                raise TypeError(
                    f"`patterns` keys must be layer names (str), got {name!r}."
                )
            if not isinstance(value, Tensor) or not value.is_floating_point():
                raise TypeError(
                    f"`patterns[{name!r}]` must be a floating point tensor, got "
                    f"{type(value).__name__}."
                )
            checked[name] = value.detach()
        if kind not in _KINDS:
            raise ValueError(f"`kind` must be one of {_KINDS}, got {kind!r}.")
        if num_examples is not None and (
            isinstance(num_examples, bool)
            or not isinstance(num_examples, int)
            or num_examples < 0
        ):
            raise ValueError(
                f"`num_examples` must be a non-negative int, got {num_examples!r}."
            )
        self._patterns = checked
        self._kind = kind
        self._num_examples = num_examples

    # Mapping interface
    def __getitem__(self, name: str) -> Tensor:
        return self._patterns[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._patterns)

    def __len__(self) -> int:
        return len(self._patterns)

    def __repr__(self) -> str:
        layers = ", ".join(
            f"{n!r}: {tuple(p.shape)}" for n, p in list(self._patterns.items())[:6]
        )
        more = ", ..." if len(self._patterns) > 6 else ""
        return f"PatternSet(kind={self._kind!r}, {{{layers}{more}}})"

    @property
    def kind(self) -> str:
        """The estimator the patterns come from (``"relu"`` or ``"linear"``)."""
        return self._kind

    @property
    def num_examples(self) -> int | None:
        """Number of data examples the statistics were computed from."""
        return self._num_examples

    def state_dict(self) -> dict[str, Any]:
        """The patterns and their metadata as a dict of tensors, strings and ints.

        Returns:
            dict: ``{"format", "format_version", "kind", "num_examples",
            "patterns"}``; loadable with ``torch.load(..., weights_only=True)``.

        Examples::

            >>> state = patterns.state_dict()
            >>> PatternSet({}).load_state_dict(state)
        """
        return {
            "format": _FORMAT_NAME,
            "format_version": self.FORMAT_VERSION,
            "kind": self._kind,
            "num_examples": -1 if self._num_examples is None else self._num_examples,
            "patterns": {n: p.detach().cpu() for n, p in self._patterns.items()},
        }

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Replace the patterns with those of a :meth:`state_dict`.

        Args:
            state_dict (Mapping): As returned by :meth:`state_dict`.

        Raises:
            ValueError: When the dict is not a PatternSet state or was written by
                an incompatible (newer) format version.
        """
        if not isinstance(state_dict, Mapping) or (
            state_dict.get("format") != _FORMAT_NAME
        ):
            raise ValueError(
                "`state_dict` is not a PatternSet state (expected the key "
                f"'format' == {_FORMAT_NAME!r})."
            )
        version = state_dict.get("format_version")
        if not isinstance(version, int) or version < 1:
            raise ValueError(
                f"PatternSet state has no valid format_version: {version!r}."
            )
        if version > self.FORMAT_VERSION:
            raise ValueError(
                f"PatternSet state has format_version {version}, newer than the "
                f"{self.FORMAT_VERSION} this captum-ext reads; upgrade captum-ext."
            )
        for key in ("kind", "patterns"):
            if key not in state_dict:
                raise ValueError(f"PatternSet state is missing the key {key!r}.")
        num = state_dict.get("num_examples", -1)
        self._set(
            state_dict["patterns"],
            state_dict["kind"],
            None if num is None or num < 0 else int(num),
        )

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the patterns to ``path`` with :func:`torch.save`.

        Args:
            path (str or PathLike): File to write.

        Raises:
            ValueError: If a pattern holds NaN or infinite values (nothing is
                written).
        """
        bad = self.non_finite_layers()
        if bad:
            raise ValueError(
                f"PatternSet.save: the patterns of {bad} hold NaN or infinite "
                f"values; refusing to write {os.fspath(path)!r}. Refit them on "
                "finite data."
            )
        torch.save(self.state_dict(), path)

    def non_finite_layers(self) -> list[str]:
        """Names of the layers whose pattern holds NaN or infinite values.

        Returns:
            list[str]: the layer names, in order (empty when all are finite).
        """
        return [n for n, p in self._patterns.items() if not bool(p.isfinite().all())]

    @classmethod
    def load(
        cls,
        path: str | os.PathLike[str],
        map_location: str | torch.device | None = None,
    ) -> PatternSet:
        """Read patterns written by :meth:`save` (``weights_only=True``).

        Args:
            path (str or PathLike): File to read.
            map_location (str or torch.device, optional): Passed to
                :func:`torch.load`.

        Returns:
            PatternSet: the loaded patterns.

        Raises:
            ValueError: If the file is truncated, corrupt or not a pattern
                file (the message names the file).

        Examples::

            >>> patterns = PatternSet.load("patterns.pt")
        """
        try:
            state = torch.load(path, map_location=map_location, weights_only=True)
        except (OSError, EOFError, RuntimeError, pickle.UnpicklingError) as err:
            if isinstance(err, FileNotFoundError):
                raise
            raise ValueError(
                f"PatternSet.load: cannot read {os.fspath(path)!r} as a pattern "
                f"file (truncated or not written by PatternSet.save?): {err}"
            ) from err
        out = cls({})
        try:
            out.load_state_dict(state)
        except (TypeError, ValueError) as err:
            raise type(err)(f"PatternSet.load({os.fspath(path)!r}): {err}") from err
        return out

    def check(self, model: nn.Module) -> dict[str, nn.Module]:
        """Check that the patterns match ``model``; return the layers they cover.

        Every pattern must name an ``nn.Linear`` / ``nn.Conv*d`` of ``model``
        whose weight has the pattern's shape. Layers of ``model`` without a
        pattern are allowed here (e.g. layers the forward pass never calls);
        the attribution classes raise if such a layer is called.

        Args:
            model (nn.Module): The model the patterns are used with.

        Returns:
            dict[str, nn.Module]: the layers that have patterns, by name.

        Raises:
            ValueError: On a mismatch, naming the layers concerned.

        Examples::

            >>> layers = patterns.check(model)
        """
        named = dict(model.named_modules())
        unknown = [
            n
            for n in self._patterns
            if not isinstance(named.get(n), PATTERN_LAYER_TYPES)
        ]
        if unknown:
            detail = ", ".join(
                f"{n!r} (a {type(named[n]).__name__})" if n in named else repr(n)
                for n in unknown
            )
            raise ValueError(
                "`patterns` do not match the model: it has no nn.Linear / "
                f"nn.Conv*d named {detail}. Were they fitted on another model?"
            )
        layers = {n: m for n, m in named.items() if n in self._patterns}
        for name, module in layers.items():
            weight = cast(Tensor, module.weight)
            pattern = self._patterns[name]
            if tuple(pattern.shape) != tuple(weight.shape):
                raise ValueError(
                    f"`patterns` do not match the model: layer {name!r} has weight "
                    f"shape {tuple(weight.shape)} but its pattern has shape "
                    f"{tuple(pattern.shape)}."
                )
        return layers
