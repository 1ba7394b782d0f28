"""PatternGuidedIG: eq. 4, the linear identity of section 4.1, fig. 2 d."""

from __future__ import annotations

import pytest
import torch
from captum.attr import IntegratedGradients
from captum.attr._utils.approximation_methods import approximation_parameters
from captum.testing.helpers.basic_models import BasicModel_MultiLayer_MultiInput
from torch import Tensor, nn

from captum_ext.attr import (
    PatternAttribution,
    PatternGuidedIG,
    PatternSet,
    fit_patterns,
)
from captum_ext.models import pgig_stress_test

METHODS = [
    "riemann_right",
    "riemann_left",
    "riemann_middle",
    "riemann_trapezoid",
    "gausslegendre",
]


def _weight_sum(method: str, n_steps: int) -> float:
    """Sum of Captum's weights: 1, or (n - 1) / n for riemann_trapezoid."""
    return float(sum(approximation_parameters(method)[0](n_steps)))


def _unit_patterns(model: nn.Module) -> PatternSet:
    return PatternSet(
        {
            n: torch.ones_like(m.weight)
            for n, m in model.named_modules()
            if isinstance(m, (nn.Linear, nn.Conv2d))
        }
    )


@pytest.mark.parametrize("method", METHODS)
def test_linear_model_identity(method: str) -> None:
    """Section 4.1: for f(x) = Wx + b, PGIG = pattern * IG (any baseline)."""
    torch.manual_seed(0)
    layer = nn.Linear(6, 3).double()
    patterns = fit_patterns(layer, [torch.randn(50, 6, dtype=torch.float64)])
    x = torch.randn(4, 6, dtype=torch.float64)
    baseline = torch.randn(1, 6, dtype=torch.float64)
    target = [2, 0, 1, 2]
    pgig = PatternGuidedIG(layer, patterns).attribute(
        x, baseline, target=target, n_steps=7, method=method
    )
    ig = IntegratedGradients(layer).attribute(
        x, baseline, target=target, n_steps=7, method=method
    )
    torch.testing.assert_close(pgig, patterns[""][target] * ig)
    # and in closed form: (x - x') * w_c * a_c times the sum of the quadrature
    # weights (Captum's: 1, or (n - 1) / n for riemann_trapezoid)
    expected = (x - baseline) * (layer.weight * patterns[""]).detach()[target]
    expected = expected * _weight_sum(method, 7)
    torch.testing.assert_close(pgig, expected)


@pytest.mark.parametrize("method", METHODS)
def test_unit_patterns_reproduce_captum_ig(method: str) -> None:
    # A = 1: the pattern backward is the gradient, PGIG is IG (tuple inputs,
    # additional forward args, baselines, internal batching)
    model = BasicModel_MultiLayer_MultiInput().double()
    torch.manual_seed(0)
    x = (torch.randn(5, 3, dtype=torch.float64), torch.randn(5, 3, dtype=torch.float64))
    base = (torch.zeros(1, 3, dtype=torch.float64), 0.5)
    afa = (torch.randn(5, 3, dtype=torch.float64), 2)
    kwargs = dict(
        target=[0, 1, 1, 0, 1], additional_forward_args=afa, n_steps=9, method=method
    )
    ig = IntegratedGradients(model).attribute(x, base, **kwargs)
    pgig = PatternGuidedIG(model, _unit_patterns(model))
    for ibs in (None, 5, 12):
        got = pgig.attribute(x, base, internal_batch_size=ibs, **kwargs)
        assert isinstance(got, tuple) and len(got) == 2
        for g, e in zip(got, ig):
            torch.testing.assert_close(g, e)


def test_relu_net_equals_riemann_sum_by_hand() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 5), nn.ReLU(), nn.Linear(5, 2)).double().eval()
    patterns = fit_patterns(net, [torch.randn(40, 3, dtype=torch.float64)])
    b1 = (net[0].weight * patterns["0"]).detach()
    b2 = (net[2].weight * patterns["2"]).detach()
    x = torch.randn(3, 3, dtype=torch.float64)
    n_steps = 6
    expected = torch.zeros_like(x)
    for k in range(1, n_steps + 1):  # eq. 4 with m = n_steps, right Riemann sum
        xk = k / n_steps * x
        gate = (net[0](xk) > 0).double()
        expected += ((b2[1] * gate) @ b1).detach() / n_steps
    expected *= x
    got = PatternGuidedIG(net, patterns).attribute(
        x, target=1, n_steps=n_steps, method="riemann_right"
    )
    torch.testing.assert_close(got, expected)
    # multiply_by_inputs=False returns the path average
    avg = PatternGuidedIG(net, patterns, multiply_by_inputs=False).attribute(
        x, target=1, n_steps=n_steps, method="riemann_right"
    )
    torch.testing.assert_close(avg * x, got)


def test_stress_test_figure_2d() -> None:
    """Section 3 / fig. 2 d: IG takes the distractor, PA starves on the plateau,
    PGIG does neither."""
    model, x, z = pgig_stress_test(seed=0, dtype=torch.float64)
    assert x.shape == (401, 2) and bool(
        torch.isclose(z[-1], torch.tensor(2.0, dtype=z.dtype))
    )
    patterns = fit_patterns(model, [x])
    ig = IntegratedGradients(model).attribute(x, target=0, n_steps=50)
    pa = PatternAttribution(model, patterns).attribute(x, target=0)
    pgig = PatternGuidedIG(model, patterns).attribute(x, target=0, n_steps=50)
    plateau = z > 1.0

    def distractor_share(a: Tensor) -> float:
        return float(a[:, 1].abs().sum() / a[:, 0].abs().sum())

    # IG: a clear share for the pure-noise dimension (it follows w = (1, -1))
    assert distractor_share(ig) > 0.15
    # IG and PGIG follow the function on the plateau: completeness-like sums ~ 1
    assert float(ig[plateau].sum(1).min()) > 0.95
    # PA: zero in the signal (and every) dimension on the plateau z > 1 ...
    assert torch.equal(pa[plateau], torch.zeros_like(pa[plateau]))
    # ... but, like PGIG, almost nothing for the distractor off the plateau
    assert distractor_share(pa) < 0.02
    # PGIG: distractor < 2% of the signal, signal dimension non-zero on the plateau
    assert distractor_share(pgig) < 0.02
    assert float(pgig[plateau, 0].abs().min()) > 0.5
    # with one unit per layer, the pattern backward is the gradient times the
    # product of the patterns on the path: PGIG = (a1 * a2) * IG
    torch.testing.assert_close(pgig, ig * patterns["0"][0] * patterns["2"][0, 0])


def test_bad_arguments() -> None:
    torch.manual_seed(0)
    layer = nn.Linear(3, 2)
    method = PatternGuidedIG(layer, fit_patterns(layer, [torch.randn(10, 3)]))
    x = torch.randn(4, 3)
    with pytest.raises(AssertionError, match="method"):
        method.attribute(x, target=0, method="simpson")
    with pytest.raises(ValueError, match="n_steps"):
        method.attribute(x, target=0, n_steps=0)
    with pytest.raises(ValueError, match="internal_batch_size"):
        method.attribute(x, target=0, internal_batch_size=0)
    with pytest.raises(AssertionError, match=r"[Bb]aseline"):
        method.attribute(x, torch.zeros(3, 3), target=0)
    assert method.multiplies_by_inputs is True
