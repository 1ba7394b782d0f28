"""captum-ext's own contract, checked for every class in the registry.

On each of our fixture models (a ReLU MLP, a CNN with max-pooling, a model with
tuple inputs and an additional forward argument): the model is left
bit-identical (parameters, buffers, storage, versions, ``.grad``, training and
requires_grad flags, hooks) after success and after exceptions raised mid-way
(bad target, a layer raising in forward or in backward); batched equals
per-example; results are the same under ``torch.no_grad()``; NoiseTunnel and
``captum.metrics.sensitivity_max`` work around the method; bad inputs are
refused before any forward pass; ``internal_batch_size`` does not change the
result.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
from captum.attr import NoiseTunnel
from captum.metrics import sensitivity_max
from torch import Tensor

from tests.contract.fixtures import ModelFixture, TripwireError, make_fixture
from tests.contract.registry import CASES, ContractCase, Ctx
from tests.helpers import assert_model_unchanged, snapshot


def _params(predicate=lambda case: True):
    for case in CASES:
        if not predicate(case):
            continue
        for name in case.fixtures:
            yield pytest.param(case, name, id=f"{case.id}-{name}")


def _setup(case: ContractCase, fixture_name: str):
    fx = make_fixture(fixture_name)
    ctx = _ctx(case, fx)
    return fx, ctx, case.build(ctx)


def _ctx(case: ContractCase, fx: ModelFixture) -> Ctx:
    return Ctx(
        fx.model,
        fx.layer if case.is_layer else None,
        fx.inputs,
        fx.additional_forward_args,
        fx.name,
    )


def _call(case: ContractCase, method: Any, fx: ModelFixture, **over: Any) -> Any:
    kwargs: dict[str, Any] = {"target": fx.target}
    if fx.additional_forward_args is not None:
        kwargs["additional_forward_args"] = fx.additional_forward_args
    kwargs.update(case.attr_kwargs(_ctx(case, fx)))
    kwargs.update(over)
    inputs = kwargs.pop("inputs", fx.inputs)
    return method.attribute(inputs, **kwargs)


def _as_tuple(x: Any) -> tuple[Tensor, ...]:
    return (x,) if isinstance(x, Tensor) else tuple(x)


def _assert_close(case: ContractCase, a: Any, b: Any) -> None:
    a_t, b_t = _as_tuple(a), _as_tuple(b)
    assert len(a_t) == len(b_t)
    for x, y in zip(a_t, b_t):
        torch.testing.assert_close(x, y, rtol=case.rtol, atol=case.atol)


def _layer_is_multi(case: ContractCase, fx: ModelFixture) -> bool:
    """Whether the attributed layer's output (or input) holds several tensors."""
    to_input = case.attr_kwargs(_ctx(case, fx)).get("attribute_to_layer_input", False)
    seen: list[Any] = []

    def hook(module: Any, args: Any, output: Any = None) -> None:
        seen.append(args if to_input else output)

    handle = (
        fx.layer.register_forward_pre_hook(hook)
        if to_input
        else fx.layer.register_forward_hook(hook)
    )
    try:
        with torch.no_grad():
            afa = fx.additional_forward_args or ()
            fx.model(*_as_tuple(fx.inputs), *afa)
    finally:
        handle.remove()
    return isinstance(seen[0], (tuple, list)) and len(seen[0]) > 1


@pytest.mark.parametrize("case,fixture_name", list(_params()))
def test_structure_and_model_unchanged(case: ContractCase, fixture_name: str) -> None:
    fx, _, method = _setup(case, fixture_name)
    inputs_before = tuple(x.clone() for x in _as_tuple(fx.inputs))
    flags_before = tuple(x.requires_grad for x in _as_tuple(fx.inputs))
    state = snapshot(fx.model)
    out = _call(case, method, fx)
    assert_model_unchanged(state, fx.model)
    # the user's inputs are untouched
    for x, before, flag in zip(_as_tuple(fx.inputs), inputs_before, flags_before):
        assert torch.equal(x, before) and x.requires_grad == flag
    # output structure mirrors the input structure (layer methods: the layer's
    # structure, as in Captum: a tuple only for a layer with several tensors)
    if case.is_layer:
        assert isinstance(out, tuple) == _layer_is_multi(case, fx)
    else:
        assert isinstance(out, tuple) == isinstance(fx.inputs, tuple)
    if not case.is_layer:
        for a, x in zip(_as_tuple(out), _as_tuple(fx.inputs)):
            assert a.shape == x.shape and a.dtype == x.dtype
            assert not a.requires_grad
            assert torch.isfinite(a).all()


@pytest.mark.parametrize("case,fixture_name", list(_params()))
def test_bad_target_leaves_model_unchanged(
    case: ContractCase, fixture_name: str
) -> None:
    fx, _, method = _setup(case, fixture_name)
    state = snapshot(fx.model)
    # out-of-range class index: found at the first forward pass at the latest
    with pytest.raises((ValueError, AssertionError, IndexError)):
        _call(case, method, fx, target=fx.n_classes + 7)
    assert_model_unchanged(state, fx.model)
    # wrong number of targets / wrong target type: refused before any forward
    fx.tripwire.calls = 0
    with pytest.raises(AssertionError):
        _call(case, method, fx, target=[0] * (fx.batch_size + 1))
    with pytest.raises(TypeError):
        _call(case, method, fx, target=1.5)
    assert fx.tripwire.calls == 0
    assert_model_unchanged(state, fx.model)


@pytest.mark.parametrize("case,fixture_name", list(_params()))
@pytest.mark.parametrize("when", ["first", "last"])
def test_forward_error_leaves_model_unchanged(
    case: ContractCase, fixture_name: str, when: str
) -> None:
    """A layer raising in the first or the last forward pass of the method."""
    fx, _, method = _setup(case, fixture_name)
    fx.tripwire.calls = 0
    _call(case, method, fx)
    n_calls = fx.tripwire.calls
    assert n_calls >= 1
    state = snapshot(fx.model)
    fx.tripwire.calls = 0
    fx.tripwire.mode = "forward"
    fx.tripwire.after = 0 if when == "first" else n_calls - 1
    try:
        with pytest.raises(TripwireError):
            _call(case, method, fx)
    finally:
        fx.tripwire.mode = None
    assert_model_unchanged(state, fx.model)
    # and the method still works afterwards
    _call(case, method, fx)


@pytest.mark.parametrize("case,fixture_name", list(_params(lambda c: c.backward)))
def test_backward_error_leaves_model_unchanged(
    case: ContractCase, fixture_name: str
) -> None:
    fx, _, method = _setup(case, fixture_name)
    state = snapshot(fx.model)
    fx.tripwire.mode = "backward"
    try:
        with pytest.raises(TripwireError):
            _call(case, method, fx)
    finally:
        fx.tripwire.mode = None
    assert_model_unchanged(state, fx.model)


@pytest.mark.parametrize("case,fixture_name", list(_params()))
def test_bad_inputs_refused_before_work(case: ContractCase, fixture_name: str) -> None:
    fx, _, method = _setup(case, fixture_name)
    state = snapshot(fx.model)
    fx.tripwire.calls = 0
    with pytest.raises(TypeError, match="inputs"):
        _call(case, method, fx, inputs=[1.0, 2.0])
    with pytest.raises(TypeError, match="inputs"):
        bad = tuple(x.long() for x in _as_tuple(fx.inputs))
        _call(case, method, fx, inputs=bad if isinstance(fx.inputs, tuple) else bad[0])
    if isinstance(fx.inputs, tuple):
        with pytest.raises(ValueError, match="inputs"):
            _call(case, method, fx, inputs=(fx.inputs[0], fx.inputs[1][:-1]))
    assert fx.tripwire.calls == 0
    assert_model_unchanged(state, fx.model)


@pytest.mark.parametrize("case,fixture_name", list(_params()))
def test_batched_equals_per_example(case: ContractCase, fixture_name: str) -> None:
    fx, _, method = _setup(case, fixture_name)
    batched = _as_tuple(_call(case, method, fx))
    for i in range(fx.batch_size):
        one = fx.example(i)
        single = _as_tuple(_call(case, method, one))
        for b, s in zip(batched, single):
            torch.testing.assert_close(b[i : i + 1], s, rtol=case.rtol, atol=case.atol)


@pytest.mark.parametrize("case,fixture_name", list(_params()))
def test_no_grad_context(case: ContractCase, fixture_name: str) -> None:
    fx, _, method = _setup(case, fixture_name)
    expected = _call(case, method, fx)
    with torch.no_grad():
        got = _call(case, method, fx)
    _assert_close(case, got, expected)


@pytest.mark.parametrize("case,fixture_name", list(_params(lambda c: c.noise_tunnel)))
def test_noise_tunnel(case: ContractCase, fixture_name: str) -> None:
    """With zero noise the three NoiseTunnel types have closed forms."""
    fx, _, method = _setup(case, fixture_name)
    plain = _as_tuple(_call(case, method, fx))
    nt = NoiseTunnel(method)
    state = snapshot(fx.model)
    expected = {
        "smoothgrad": plain,
        "smoothgrad_sq": tuple(p * p for p in plain),
        "vargrad": tuple(torch.zeros_like(p) for p in plain),
    }
    # vargrad = E[a^2] - E[a]^2 cancels in float32: its rounding error scales
    # with a^2, so the absolute tolerance follows the attributions' magnitude
    scale = max([1.0] + [float(p.abs().max()) for p in plain]) ** 2
    for nt_type, exp in expected.items():
        got = _as_tuple(_call(case, nt, fx, nt_type=nt_type, nt_samples=3, stdevs=0.0))
        atol = 1e-5 * scale if nt_type == "vargrad" else 1e-5
        for g, e in zip(got, exp):
            torch.testing.assert_close(g, e, rtol=1e-4, atol=atol)
    with torch.no_grad():
        noisy = _as_tuple(
            _call(case, nt, fx, nt_type="smoothgrad", nt_samples=4, stdevs=0.1)
        )
    for n, p in zip(noisy, plain):
        assert n.shape == p.shape and torch.isfinite(n).all()
    assert_model_unchanged(state, fx.model)


@pytest.mark.parametrize("case,fixture_name", list(_params(lambda c: c.sensitivity)))
def test_sensitivity_max(case: ContractCase, fixture_name: str) -> None:
    fx, _, method = _setup(case, fixture_name)
    kwargs = case.attr_kwargs(_ctx(case, fx))
    if fx.additional_forward_args is not None:
        kwargs["additional_forward_args"] = fx.additional_forward_args

    def no_perturbation(inputs: Any, perturb_radius: float = 0.0) -> Any:
        return inputs

    explain = method.attribute
    if case.is_layer:
        # sensitivity_max expects attributions shaped like the inputs' tuple;
        # layer methods (Captum's too) return the layer's structure, so wrap
        def explain(inputs: Any, **kw: Any) -> Any:
            return _as_tuple(method.attribute(inputs, **kw))

    # with no perturbation the attributions of the expanded batch must equal
    # the originals exactly, so the sensitivity is zero
    sens0 = sensitivity_max(
        explain,
        fx.inputs,
        perturb_func=no_perturbation,
        n_perturb_samples=3,
        target=fx.target,
        **kwargs,
    )
    assert sens0.shape == (fx.batch_size,)
    assert sens0.abs().max().item() <= 1e-4
    sens = sensitivity_max(
        explain, fx.inputs, n_perturb_samples=3, target=fx.target, **kwargs
    )
    assert sens.shape == (fx.batch_size,)
    assert torch.isfinite(sens).all() and (sens >= 0).all()


_IBS_PARAMS = list(_params(lambda c: c.has_internal_batch_size))


@pytest.mark.skipif(
    not _IBS_PARAMS, reason="no registered class has internal_batch_size"
)
@pytest.mark.parametrize("case,fixture_name", _IBS_PARAMS or [(None, None)])
def test_internal_batch_size(case: ContractCase, fixture_name: str) -> None:
    fx, _, method = _setup(case, fixture_name)
    full = _call(case, method, fx, internal_batch_size=None)
    n = fx.batch_size
    for ibs in (n, n + 1, 3 * n):
        _assert_close(case, _call(case, method, fx, internal_batch_size=ibs), full)
