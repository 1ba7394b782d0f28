"""``fit_patterns(kind="auto")``: the estimator of each layer follows what its
activation feeds.

The two-component estimator of Kindermans et al. (2018) assumes that the
layer's output goes into a ReLU; "auto" uses it there (and for the output
layer) and the linear estimator elsewhere. Each layer's "auto" pattern must be
the very pattern of the kind it should get, and "auto" must equal "relu" on a
plain ReLU network. The estimators themselves are checked against per-sample
loops in ``test_pattern_fitting.py``.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from captum_ext.attr import PatternAttribution, fit_patterns
from captum_ext.models import digits_cnn


class _Mixed(nn.Module):
    """One layer per case of what an activation can feed."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 3, padding=1)
        self.stem_bn = nn.BatchNorm2d(4)  # -> F.relu: relu
        self.c1 = nn.Conv2d(4, 4, 3, padding=1)  # -> nn.ReLU(inplace): relu
        self.act = nn.ReLU(inplace=True)
        self.c2 = nn.Conv2d(4, 4, 3, padding=1)
        self.c2_bn = nn.BatchNorm2d(4)  # -> += residual, then ReLU: linear
        self.c3 = nn.Conv2d(4, 4, 1)  # -> eval Dropout -> Tensor.relu: relu
        self.drop = nn.Dropout(0.5)
        self.c4 = nn.Conv2d(4, 4, 1)  # -> SiLU: linear
        self.c5 = nn.Conv2d(4, 4, 1)  # -> max-pool -> relu: linear
        self.c6 = nn.Conv2d(4, 4, 1)  # -> torch.relu6 via nn.ReLU6: relu
        self.relu6 = nn.ReLU6()
        self.fc = nn.Linear(4 * 4 * 4, 3)  # the output layer: relu

    def forward(self, x: Tensor) -> Tensor:
        h = F.relu(self.stem_bn(self.stem(x)))
        h = self.act(self.c1(h))
        out = self.c2_bn(self.c2(h))
        out += h
        h = torch.relu(out)
        h = self.drop(self.c3(h)).relu()
        h = F.silu(self.c4(h))
        h = torch.relu(F.max_pool2d(self.c5(h), 2))
        h = self.relu6(self.c6(h))
        return self.fc(h.flatten(1))


EXPECTED = {
    "stem": "relu",
    "c1": "relu",
    "c2": "linear",
    "c3": "relu",
    "c4": "linear",
    "c5": "linear",
    "c6": "relu",
    "fc": "relu",
}


def _mixed() -> nn.Module:
    torch.manual_seed(0)
    model = _Mixed().double()
    for bn in (model.stem_bn, model.c2_bn):
        bn.running_mean.uniform_(-0.3, 0.3)
        bn.running_var.uniform_(0.5, 2.0)
        bn.weight.data.uniform_(0.5, 1.5)
        bn.bias.data.uniform_(-0.3, 0.3)
    return model.eval()


def test_each_layer_gets_the_estimator_of_what_it_feeds() -> None:
    model = _mixed()
    data = [torch.randn(16, 3, 8, 8, dtype=torch.float64) for _ in range(3)]
    auto = fit_patterns(model, data)  # the default
    assert auto.kind == "auto"
    by_kind = {k: fit_patterns(model, data, kind=k) for k in ("relu", "linear")}
    assert set(auto) == set(EXPECTED)
    for name, kind in EXPECTED.items():
        other = "linear" if kind == "relu" else "relu"
        # the two estimators differ on every layer of this model ...
        assert not torch.allclose(by_kind["relu"][name], by_kind["linear"][name])
        # ... and "auto" is the expected one (up to the summation order: the
        # first two examples of the first batch go through the probe pass)
        torch.testing.assert_close(
            auto[name], by_kind[kind][name], rtol=1e-10, atol=1e-12, msg=name
        )
        assert not torch.allclose(auto[name], by_kind[other][name]), name


def test_auto_is_relu_on_a_plain_relu_network() -> None:
    torch.manual_seed(0)
    model = digits_cnn().eval()
    data = [torch.randn(64, 1, 8, 8) for _ in range(2)]
    auto = fit_patterns(model, data, kind="auto")
    relu = fit_patterns(model, data, kind="relu")
    assert set(auto) == set(relu)
    for name in relu:
        assert torch.equal(auto[name], relu[name]), name
    x = torch.randn(5, 1, 8, 8)
    a = PatternAttribution(model, auto).attribute(x, target=3)
    b = PatternAttribution(model, relu).attribute(x, target=3)
    assert torch.equal(a, b)


def test_a_final_softmax_keeps_the_output_layers_estimator() -> None:
    """Wrapping a model in a softmax (the PGIG paper explains probabilities)
    leaves its patterns unchanged."""
    torch.manual_seed(0)
    model = digits_cnn().eval()
    wrapped = nn.Sequential(model, nn.Softmax(dim=1)).eval()
    data = [torch.randn(64, 1, 8, 8)]
    plain = fit_patterns(model, data)
    probs = fit_patterns(wrapped, data)
    assert set(probs) == {f"0.{name}" for name in plain}
    for name in plain:
        assert torch.equal(probs[f"0.{name}"], plain[name]), name
    logs = fit_patterns(nn.Sequential(model, nn.LogSoftmax(dim=1)).eval(), data)
    assert torch.equal(logs["0.8"], plain["8"])


def test_metadata_queries_do_not_count_as_uses() -> None:
    """A shape check between the layer and its ReLU changes nothing."""

    class Checked(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = nn.Linear(5, 6)
            self.b = nn.Linear(6, 2)

        def forward(self, x: Tensor) -> Tensor:
            h = self.a(x)
            assert h.dim() == 2 and h.shape[1] == 6 and h.size(0) == x.size(0)
            return self.b(torch.relu(h))

    torch.manual_seed(1)
    model = Checked().double().eval()
    data = [torch.randn(40, 5, dtype=torch.float64)]
    auto = fit_patterns(model, data)
    relu = fit_patterns(model, data, kind="relu")
    linear = fit_patterns(model, data, kind="linear")
    assert torch.equal(auto["a"], relu["a"])
    assert not torch.allclose(auto["a"], linear["a"])


def test_a_tensor_used_twice_in_one_call() -> None:
    """``h * h`` passes the watched activation twice: one use, not a ReLU."""

    class Squared(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = nn.Linear(5, 6)
            self.b = nn.Linear(6, 2)

        def forward(self, x: Tensor) -> Tensor:
            h = self.a(x)
            return self.b(torch.relu(h * h))

    torch.manual_seed(2)
    model = Squared().double().eval()
    data = [torch.randn(40, 5, dtype=torch.float64)]
    auto = fit_patterns(model, data)
    linear = fit_patterns(model, data, kind="linear")
    torch.testing.assert_close(auto["a"], linear["a"], rtol=1e-10, atol=1e-12)


def test_bad_kind_lists_auto() -> None:
    with pytest.raises(ValueError, match=r"`kind`.*'auto'"):
        fit_patterns(digits_cnn().eval(), [torch.randn(4, 1, 8, 8)], kind="positive")
