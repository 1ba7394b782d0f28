"""Every attribution class on five torchvision architectures (random weights).

Each (architecture, method) case is either correct -- finite, shaped like the
input (or the layer), the model bit-identical afterwards, and the batched
result equal to the per-example results -- or refused with a clear error that
names the offending module, before any forward pass. ``EXPECTED`` is the
table; docs/methods.md reproduces it. One case, "float64", overflows float32
with the defaults (a RuntimeWarning naming the knob, never a silent
non-finite map) and is correct with ``compute_dtype=torch.float64``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch import Tensor, nn

from captum_ext.attr import (
    DistributionalIG,
    GradientSignInput,
    LearnedMask,
    PatchConductance,
    PatternAttribution,
    PatternGuidedIG,
    PatternNet,
    RecursiveMaskAttribution,
    fit_patterns,
)
from tests.architectures import _archs
from tests.helpers import assert_model_unchanged, snapshot

METHODS = (
    "GradientSignInput",
    "RecursiveMaskAttribution",
    "PatternNet",
    "PatternAttribution",
    "PatternGuidedIG",
    "DistributionalIG",
    "PatchConductance",
    "PatchConductance[finite_difference]",
    "LearnedMask",
)

# Why the ViT is refused by the pattern family: the pattern estimator and its
# backward rule cover layers y = W x + b followed by pointwise nonlinearities;
# attention multiplies two functions of the input and LayerNorm divides by one.
_VIT_PATTERN = r"(?s)(MultiheadAttention|self_attention|LayerNorm|ln_1).*"

#: "ok", or the regex a refusal's message must match.
EXPECTED: dict[tuple[str, str], str] = {
    (arch, method): "ok" for arch in _archs.ARCHS for method in METHODS
}
for _m in ("PatternNet", "PatternAttribution", "PatternGuidedIG"):
    EXPECTED["vit", _m] = _VIT_PATTERN
# PatternNet's signal is a product of per-layer inflations over depth: on the
# random-weight EfficientNet-B0 it reaches 2.6e44, beyond float32's 3.4e38,
# so every value overflows; computed in float64 it is finite.
EXPECTED["efficientnet_b0", "PatternNet"] = "float64"

#: Tolerance of batched vs per-example results, relative to the largest
#: magnitude (batched convolutions differ in the last bits), with an absolute
#: floor far below float32 resolution of the O(1) outputs (a random
#: EfficientNet's patch conductances are ~1e-15, i.e. zero).
RTOL = 1e-4
ATOL_FLOOR = 1e-9


def _fit(model: nn.Module) -> Any:
    gen = torch.Generator().manual_seed(7)
    batches = [torch.randn(8, 3, 32, 32, generator=gen) for _ in range(2)]
    return fit_patterns(model, batches)


def _refs() -> Tensor:
    return torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(3))


def _patch() -> Tensor:
    mask = torch.zeros(1, 3, 32, 32, dtype=torch.bool)
    mask[..., 8:20, 8:20] = True
    return mask


def _runner(
    arch: str, method: str, compute_dtype: torch.dtype | None = None
) -> Callable[[Tensor, Tensor], Tensor]:
    """Construct the method (construction may refuse) and return x, t -> attr."""
    model = _archs.model(arch)
    if method == "GradientSignInput":
        gxsi = GradientSignInput(model)
        return lambda x, t: gxsi.attribute(x, target=t)
    if method == "RecursiveMaskAttribution":
        rma = RecursiveMaskAttribution(model)
        return lambda x, t: rma.attribute(x, target=t, n_iterations=2)
    if method in ("PatternNet", "PatternAttribution", "PatternGuidedIG"):
        cls = {
            "PatternNet": PatternNet,
            "PatternAttribution": PatternAttribution,
            "PatternGuidedIG": PatternGuidedIG,
        }[method]
        pattern_method = (
            PatternNet(model, _fit(model), compute_dtype=compute_dtype)
            if method == "PatternNet"
            else cls(model, _fit(model))
        )
        if method == "PatternGuidedIG":
            return lambda x, t: pattern_method.attribute(x, target=t, n_steps=4)
        return lambda x, t: pattern_method.attribute(x, target=t)
    if method == "DistributionalIG":
        dig = DistributionalIG(model)
        refs = _refs()
        return lambda x, t: dig.attribute(x, baselines=refs, target=t, n_steps=3)
    if method.startswith("PatchConductance"):
        pc = PatchConductance(model, _archs.layer(arch))
        directional = "finite_difference" if "finite" in method else "jvp"
        return lambda x, t: pc.attribute(
            x, _patch(), target=t, n_steps=4, directional=directional
        )
    if method == "LearnedMask":
        lm = LearnedMask(model)
        refs = _refs()
        return lambda x, t: lm.attribute(
            x, target=t, distractors=refs, n_distractors=None, n_iter=2, lr=0.1
        )
    raise AssertionError(method)


def _forward_calls(model: nn.Module) -> tuple[list[int], Any]:
    calls = [0]

    def hook(module: nn.Module, args: Any) -> None:
        calls[0] += 1

    return calls, model.register_forward_pre_hook(hook)


@pytest.mark.slow
@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("arch", _archs.ARCHS)
def test_method_on_architecture(arch: str, method: str) -> None:
    model = _archs.model(arch)
    x = _archs.images(2)
    # the predicted classes: a random network's logit of an arbitrary class can
    # be negative on every fitting image, and its "relu" pattern is then zero
    with torch.no_grad():
        target = model(x).argmax(1)
    expected = EXPECTED[arch, method]
    before = snapshot(model)
    compute_dtype = None
    if expected == "float64":
        with pytest.warns(RuntimeWarning, match=r"compute_dtype=torch\.float64"):
            out = _runner(arch, method)(x, target)
        assert not torch.isfinite(out).any(), "float32 no longer overflows"
        assert_model_unchanged(before, model)
        compute_dtype = torch.float64
    elif expected != "ok":
        calls, handle = _forward_calls(model)
        try:
            with pytest.raises(
                (ValueError, TypeError, RuntimeError, NotImplementedError),
                match=expected,
            ):
                run = _runner(arch, method)
                run(x, target)
        finally:
            handle.remove()
        assert_model_unchanged(before, model)
        # refused before the model ran (fit_patterns, if it ran, counts too)
        assert calls[0] == 0, f"{method} on {arch}: {calls[0]} forward passes"
        return
    run = _runner(arch, method, compute_dtype)
    out = run(x, target)
    assert_model_unchanged(before, model)
    assert isinstance(out, Tensor)
    if method.startswith("PatchConductance"):
        with torch.no_grad():
            acts = []
            handle = _archs.layer(arch).register_forward_hook(
                lambda m, a, o: acts.append(o)
            )
            try:
                model(x)
            finally:
                handle.remove()
        assert out.shape == acts[0].shape
    else:
        assert out.shape == x.shape
    assert torch.isfinite(out).all(), f"{method} on {arch}: non-finite values"
    assert out.abs().max() > 0, f"{method} on {arch}: all zero"
    single = torch.cat([run(x[i : i + 1], target[i : i + 1]) for i in range(2)])
    scale = float(out.abs().max())
    torch.testing.assert_close(single, out, rtol=RTOL, atol=RTOL * scale + ATOL_FLOOR)
    assert_model_unchanged(before, model)
