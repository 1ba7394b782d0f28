"""Every attribution class through one table of calls, against Captum.

The same ``target`` (including -1, 0-d and 1-d tensors, negative and
wrong-length per-example lists), ``additional_forward_args`` (per-example,
0-d, and a (1, 1) tensor that Captum's IntegratedGradients repeats over the
steps) and ``internal_batch_size`` (below and above the batch size) must give
the same behaviour as in the class's Captum analogue: an error exactly where
Captum errors, Captum's warning where Captum warns, and a result of the
input's shape otherwise. IG-style classes are held to IntegratedGradients,
single-pass classes to InputXGradient.
"""

from __future__ import annotations

import warnings
from typing import Any

import pytest
import torch
from captum.attr import InputXGradient, IntegratedGradients

from captum_ext.attr import (
    DistributionalIG,
    PatchConductance,
    PatternGuidedIG,
)
from tests.contract.fixtures import make_fixture
from tests.contract.registry import CASES, ContractCase, Ctx

_IG_STYLE = (DistributionalIG, PatchConductance, PatternGuidedIG)
_IBS_WARNING = "Internal batch size cannot be less"
_BUILT: dict[tuple[Any, ...], Any] = {}


def _is_ig_style(case: ContractCase) -> bool:
    return issubclass(case.cls, _IG_STYLE) or "IntegratedGradients" in case.id


# (label, fixture, call keywords): the table
_CALLS: list[tuple[str, str, dict[str, Any]]] = [
    ("target=-1", "cnn", {"target": -1}),
    ("target=tensor(-1)", "cnn", {"target": torch.tensor(-1)}),
    ("target=(-1,)", "cnn", {"target": (-1,)}),
    ("target=tensor[4]", "cnn", {"target": torch.tensor([0, 4, 2, 1])}),
    ("target=list[4]", "cnn", {"target": [0, 4, 2, 1]}),
    ("target=list-negative", "cnn", {"target": [0, -1, 2, 1]}),
    ("target=tensor-negative", "cnn", {"target": torch.tensor([0, -1, 2, 1])}),
    ("target=list-short", "cnn", {"target": [0, 1]}),
    ("target=tensor-short", "cnn", {"target": torch.tensor([0, 1])}),
    ("target=out-of-range", "cnn", {"target": 5}),
    ("ibs<bsz", "cnn", {"target": [0, 4, 2, 1], "internal_batch_size": 2}),
    ("ibs=9", "cnn", {"target": -1, "internal_batch_size": 9}),
    ("afa=per-example", "multi_input", {"target": [2, 0, 1, 2]}),
    ("afa=0-d", "multi_input", {"target": 1, "afa": "0-d"}),
    ("afa=(1,1)", "multi_input", {"target": 1, "afa": "(1,1)"}),
    (
        "afa=per-example,ibs=8",
        "multi_input",
        {"target": torch.tensor([2, 0, 1, 2]), "internal_batch_size": 8},
    ),
]


def _params() -> list[Any]:
    out = []
    for case in CASES:
        for label, fixture, call in _CALLS:
            if fixture not in case.fixtures:
                continue
            if "internal_batch_size" in call and not case.has_internal_batch_size:
                continue
            out.append(pytest.param(case, fixture, call, id=f"{case.id}-{label}"))
    return out


def _afa(fixture: Any, kind: str | None) -> Any:
    scale = fixture.additional_forward_args
    if kind is None or scale is None:
        return scale
    if kind == "0-d":
        return (torch.tensor(1.5),)
    return (scale[0][:1],)  # shape (1, 1): repeated over the steps by Captum IG


def _run(fn: Any) -> tuple[Any, BaseException | None, list[str]]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            return fn(), None, [str(w.message) for w in caught]
        except Exception as err:
            return None, err, [str(w.message) for w in caught]


@pytest.mark.parametrize("case,fixture_name,call", _params())
def test_same_behaviour_as_captum(
    case: ContractCase, fixture_name: str, call: dict[str, Any]
) -> None:
    call = dict(call)
    afa_kind = call.pop("afa", None)
    key = (case.id, fixture_name, afa_kind)
    if key not in _BUILT:  # pattern fits are the slow part: one per fixture
        fixture = make_fixture(fixture_name)
        afa = _afa(fixture, afa_kind)
        ctx = Ctx(fixture.model, fixture.layer, fixture.inputs, afa, fixture_name)
        _BUILT[key] = (fixture, afa, ctx, case.build(ctx))
    fixture, afa, ctx, method = _BUILT[key]
    model = fixture.model
    kwargs = {**case.attr_kwargs(ctx), **call, "additional_forward_args": afa}
    ig_style = _is_ig_style(case)
    theirs_kwargs = dict(call, additional_forward_args=afa)
    if ig_style:
        theirs_kwargs["n_steps"] = 4

        def theirs() -> Any:
            return IntegratedGradients(model).attribute(fixture.inputs, **theirs_kwargs)

    else:
        theirs_kwargs.pop("internal_batch_size", None)

        def theirs() -> Any:
            return InputXGradient(model).attribute(fixture.inputs, **theirs_kwargs)

    _, captum_err, captum_warnings = _run(theirs)
    result, our_err, our_warnings = _run(
        lambda: method.attribute(fixture.inputs, **kwargs)
    )
    if captum_err is None:
        assert our_err is None, (
            f"Captum accepts this call, {case.id} raised {our_err!r}"
        )
        shaped = result[0] if isinstance(result, tuple) and case.is_layer else result
        assert shaped is not None
    else:
        assert our_err is not None, (
            f"Captum raises {captum_err!r}; {case.id} returned a result"
        )
        # ours: a clear error naming the argument, or the model's own error
        # on the arguments Captum hands it too
        if "target" in call and not isinstance(captum_err, RuntimeError | IndexError):
            assert isinstance(our_err, ValueError | TypeError | AssertionError)
    if ig_style:
        captum_warned = any(_IBS_WARNING in w for w in captum_warnings)
        assert captum_warned == any(_IBS_WARNING in w for w in our_warnings)
