"""fit_patterns: one forward pass over the data, and results independent of how
the work is split (probe examples, accumulation blocks, training mode)."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import Tensor, nn

import captum_ext.attr._core.pattern._fit as fit_module
from captum_ext.attr import fit_patterns
from tests.attr.test_pattern_fitting import (
    _assert_rel,
    _patches_nd,
    _randomise_batchnorms,
    _vector_brute_force,
)

# the small block's last layer has output units that are never positive
pytestmark = pytest.mark.filterwarnings("ignore:fit_patterns. output units")


class _Block(nn.Module):
    """A residual block whose forward changes tensors in place.

    ``conv0`` is followed by an in-place ReLU (its output is overwritten),
    ``bn2``'s output gets the shortcut added in place, and the block input
    feeds two layers (``conv1`` and ``down``).
    """

    def __init__(self) -> None:
        super().__init__()
        self.conv0 = nn.Conv2d(3, 4, 3, padding=1)
        self.relu0 = nn.ReLU(inplace=True)
        self.conv1 = nn.Conv2d(4, 4, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(4)
        self.conv2 = nn.Conv2d(4, 4, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(4)
        self.down = nn.Conv2d(4, 4, 1)
        self.fc = nn.Linear(4 * 6 * 6, 5)

    def forward(self, x: Tensor) -> Tensor:
        x = self.relu0(self.conv0(x))
        out = torch.relu_(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out += self.down(x)
        return self.fc(torch.relu_(out).flatten(1))


class _ExampleCounter(nn.Module):
    """Counts the examples that go through the wrapped model."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.examples = 0

    def forward(self, x: Tensor) -> Tensor:
        self.examples += int(x.shape[0])
        return self.model(x)


def _block(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    model = _Block().double().eval()
    _randomise_batchnorms(model, seed + 1)
    return model


def _data(sizes: list[int], seed: int = 2) -> list[Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(n, 3, 6, 6, generator=gen, dtype=torch.float64) for n in sizes]


def test_eval_mode_fit_is_one_forward_pass_over_the_data() -> None:
    counted = _ExampleCounter(_block()).eval()
    fit_patterns(counted, _data([6, 5]))
    # the probe pass on the first two examples is not repeated
    assert counted.examples == 11
    counted.examples = 0
    fit_patterns(counted, _data([6, 5]), kind="linear")
    assert counted.examples == 11


def test_probe_examples_give_the_same_patterns_despite_in_place_ops() -> None:
    # one batch of 8: the first two examples' statistics come from the probe
    # pass (copies of layer inputs / outputs / BatchNorm masks, taken before
    # the in-place ReLU and the in-place shortcut addition change them);
    # batches of 2 are never split. Same data, same sums -> same patterns.
    model = _block()
    x = _data([8])[0]
    whole = fit_patterns(model, [x], eps=0.0)
    pairs = fit_patterns(model, [x[i : i + 2] for i in range(0, 8, 2)], eps=0.0)
    assert set(whole) == {"conv0", "conv1", "conv2", "down", "fc"}
    for name in whole:
        torch.testing.assert_close(whole[name], pairs[name], rtol=1e-9, atol=1e-12)


def _io(
    model: nn.Module, layer: nn.Module, gate_of: nn.Module | None, xs: list[Tensor]
) -> tuple[Tensor, Tensor, Tensor]:
    """Copies of ``layer``'s input and output and of ``gate_of``'s output."""
    got: dict[str, list[Tensor]] = {"x": [], "y": [], "g": []}

    def grab(m: nn.Module, args: Any, out: Tensor) -> None:
        if m is layer:
            got["x"].append(args[0].detach().clone())
            got["y"].append(out.detach().clone())
        if m is gate_of:
            got["g"].append(out.detach().clone())

    handles = [layer.register_forward_hook(grab)]
    if gate_of is not None:
        handles.append(gate_of.register_forward_hook(grab))
    try:
        with torch.no_grad():
            for x in xs:
                model(x)
    finally:
        for h in handles:
            h.remove()
    y = torch.cat(got["y"])
    return torch.cat(got["x"]), y, torch.cat(got["g"]) if got["g"] else y


def test_training_mode_batchnorm_sees_whole_batches() -> None:
    # A BatchNorm in training mode normalises by the statistics of the batch
    # it is given, so the first batch must not be split for the probe: the
    # masks must be those of whole-batch forward passes.
    model = _block()
    model.bn1.train()
    xs = _data([7, 5])
    with pytest.warns(UserWarning, match="training mode"):
        patterns = fit_patterns(model, xs, eps=0.0)
    flat = lambda t: t.double().movedim(1, -1).reshape(-1, t.shape[1])  # noqa: E731
    x, y, gate = _io(model, model.conv1, model.bn1, xs)
    expected = _vector_brute_force(
        _patches_nd(model.conv1, x), flat(y), flat(gate), model.conv1.weight, "relu"
    )
    _assert_rel(patterns["conv1"], expected, 1e-8)


def test_results_do_not_depend_on_the_accumulation_blocks(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    model = _block()
    xs = _data([5, 3, 4])
    for kind in ("relu", "linear"):
        default = fit_patterns(model, xs, kind=kind, eps=0.0)
        with monkeypatch.context() as m:
            # float64 accumulation and pattern rows in blocks of 7 elements,
            # and work buffers of a few examples' size: many blocks per layer
            m.setattr(fit_module, "_ADD_BLOCK", 7)
            m.setattr(fit_module, "_CHUNK_ELEMENTS", 600)
            small = fit_patterns(model, xs, kind=kind, eps=0.0)
        for name in default:
            torch.testing.assert_close(
                small[name], default[name], rtol=1e-9, atol=1e-12
            )


def test_model_and_linear_kind_layers_match_brute_force() -> None:
    # kind="linear" convolutions use one all-ones mask channel per group
    model = _block()
    xs = _data([6, 4])
    patterns = fit_patterns(model, xs, kind="linear", eps=0.0)
    flat = lambda t: t.double().movedim(1, -1).reshape(-1, t.shape[1])  # noqa: E731
    for layer in (model.conv0, model.conv2, model.down):
        x, y, _ = _io(model, layer, None, xs)
        expected = _vector_brute_force(
            _patches_nd(layer, x), flat(y), flat(y), layer.weight, "linear"
        )
        name = {m: n for n, m in model.named_modules()}[layer]
        _assert_rel(patterns[name], expected, 1e-8)
