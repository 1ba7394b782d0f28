"""DistributionalIG: section 5 of the IG study, checked against Captum.

References are computed independently: Captum's IntegratedGradients over each
reference (with the same quadrature), forward passes written here, and Captum's
GradientShap (a Monte Carlo estimate of the same expectation).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from captum.attr import GradientShap, IntegratedGradients, NoiseTunnel
from captum.testing.helpers.basic_models import BasicModel_MultiLayer_MultiInput
from torch import Tensor, nn

from captum_ext.attr import DistributionalIG
from tests.attr.captum_quadrature import captum_scale
from tests.helpers import CallCounter, assert_model_unchanged, snapshot

METHODS = [
    "gausslegendre",
    "riemann_left",
    "riemann_right",
    "riemann_middle",
    "riemann_trapezoid",
]


@pytest.fixture
def smooth_net() -> nn.Module:
    torch.manual_seed(3)
    return nn.Sequential(
        nn.Linear(6, 12), nn.Tanh(), nn.Linear(12, 8), nn.Softplus(), nn.Linear(8, 3)
    ).eval()


@pytest.fixture
def relu_cnn() -> nn.Module:
    torch.manual_seed(4)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(4 * 3 * 3, 5),
    ).eval()


def _captum_mean_ig(
    model: Any, x: Any, refs: list[Any], weights: list[float] | None = None, **kw: Any
) -> Any:
    """Weighted mean of Captum IG with each reference broadcast to the batch."""
    ig = IntegratedGradients(model, multiply_by_inputs=kw.pop("mult", True))
    weights = weights or [1.0 / len(refs)] * len(refs)
    total: Any = None
    for r, w in zip(refs, weights):
        a = ig.attribute(x, baselines=r, **kw)
        if isinstance(a, tuple):
            total = (
                tuple(w * ai for ai in a)
                if total is None
                else tuple(t + w * ai for t, ai in zip(total, a))
            )
        else:
            total = w * a if total is None else total + w * a
    return total


@pytest.mark.parametrize("method", METHODS)
def test_one_reference_equals_captum_ig(relu_cnn: nn.Module, method: str) -> None:
    x = torch.randn(3, 1, 6, 6)
    ref = torch.randn(1, 1, 6, 6)
    target = [0, 4, 2]
    ours = DistributionalIG(relu_cnn).attribute(
        x, ref, target=target, n_steps=20, method=method
    )
    theirs = IntegratedGradients(relu_cnn).attribute(
        x, baselines=ref, target=target, n_steps=20, method=method
    )
    # identical for every method but riemann_trapezoid, where Captum's weights
    # sum to (n - 1) / n (see captum_quadrature.py)
    theirs = theirs * captum_scale(method, 20)
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6)


def test_trapezoid_weights_integrate_constants_exactly() -> None:
    """On a linear model IG is exact for any rule whose weights sum to one:
    ``"trapezoid"``'s do; Captum's riemann_trapezoid (which ours reproduces
    under that name) misses by the factor (n - 1) / n."""
    torch.manual_seed(0)
    lin = nn.Linear(4, 2)
    x, refs = torch.randn(3, 4), torch.randn(5, 4)
    exact = lin.weight.detach()[1] * (x - refs.mean(0))
    ours = DistributionalIG(lin).attribute(
        x, refs, target=1, n_steps=10, method="trapezoid"
    )
    torch.testing.assert_close(ours, exact, rtol=1e-5, atol=1e-6)
    captum_named = DistributionalIG(lin).attribute(
        x, refs, target=1, n_steps=10, method="riemann_trapezoid"
    )
    torch.testing.assert_close(captum_named, 0.9 * exact, rtol=1e-5, atol=1e-6)
    theirs = _captum_mean_ig(
        lin,
        x,
        [r[None] for r in refs],
        target=1,
        n_steps=10,
        method="riemann_trapezoid",
    )
    torch.testing.assert_close(theirs, 0.9 * exact, rtol=1e-5, atol=1e-6)


def test_scalar_baseline_is_one_constant_reference(relu_cnn: nn.Module) -> None:
    x = torch.randn(2, 1, 6, 6)
    ours = DistributionalIG(relu_cnn).attribute(x, -0.5, target=1, n_steps=16)
    theirs = IntegratedGradients(relu_cnn).attribute(
        x, baselines=-0.5, target=1, n_steps=16
    )
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("mult", [True, False], ids=["ig", "average-gradient"])
@pytest.mark.parametrize("method", ["gausslegendre", "riemann_trapezoid"])
def test_k_references_equal_mean_of_captum_ig(
    smooth_net: nn.Module, method: str, mult: bool
) -> None:
    x = torch.randn(4, 6)
    refs = torch.randn(7, 6)
    target = torch.tensor([0, 1, 2, 1])
    ours = DistributionalIG(smooth_net, multiply_by_inputs=mult).attribute(
        x, refs, target=target, n_steps=24, method=method
    )
    theirs = _captum_mean_ig(
        smooth_net,
        x,
        [r[None] for r in refs],
        target=target,
        n_steps=24,
        method=method,
        mult=mult,
    )
    theirs = theirs * captum_scale(method, 24)
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)


def test_tuple_inputs_and_forward_args_equal_mean_of_captum_ig() -> None:
    torch.manual_seed(0)
    model = BasicModel_MultiLayer_MultiInput().eval()
    x = (torch.randn(5, 3), torch.randn(5, 3))
    extra = (torch.randn(5, 3), 2)
    refs = (torch.randn(4, 3), torch.randn(4, 3))
    ours = DistributionalIG(model).attribute(
        x, refs, target=[0, 1, 0, 1, 1], additional_forward_args=extra, n_steps=16
    )
    theirs = _captum_mean_ig(
        model,
        x,
        [(refs[0][k : k + 1], refs[1][k : k + 1]) for k in range(4)],
        target=[0, 1, 0, 1, 1],
        additional_forward_args=extra,
        n_steps=16,
    )
    assert isinstance(ours, tuple) and len(ours) == 2
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_tuple_baselines_mix_tensor_and_number() -> None:
    torch.manual_seed(0)
    model = BasicModel_MultiLayer_MultiInput().eval()
    x = (torch.randn(3, 3), torch.randn(3, 3))
    extra = (torch.randn(3, 3), 1)
    refs = torch.randn(5, 3)
    ours = DistributionalIG(model).attribute(
        x, (refs, 0.25), target=1, additional_forward_args=extra, n_steps=12
    )
    theirs = _captum_mean_ig(
        model,
        x,
        [(refs[k : k + 1], 0.25) for k in range(5)],
        target=1,
        additional_forward_args=extra,
        n_steps=12,
    )
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_completeness_with_200_trapezoid_steps(smooth_net: nn.Module) -> None:
    """Distributional completeness: sum EG = F(x) - E_D F(X') (within 2e-3)."""
    torch.manual_seed(5)

    def model(z: Tensor) -> Tensor:
        return 5.0 * smooth_net(z)

    x = torch.randn(6, 6)
    refs = torch.randn(10, 6)
    target = [0, 1, 2, 0, 1, 2]
    attr, delta = DistributionalIG(model).attribute(
        x,
        refs,
        target=target,
        n_steps=200,
        method="trapezoid",
        return_convergence_delta=True,
    )
    with torch.no_grad():
        f_x = model(x)[torch.arange(6), target]
        f_refs = model(refs)[:, target].mean(0)  # (6,): E_D F_target(X')
    # large enough that weights summing to 199/200 (Captum's trapezoid) fail
    assert (f_x - f_refs).abs().max() > 0.5
    gap = attr.sum(1) - (f_x - f_refs)
    assert gap.abs().max() < 2e-3
    assert delta.shape == (6,)
    torch.testing.assert_close(delta, gap, rtol=0, atol=1e-5)


def test_convergence_delta_with_sampled_references(smooth_net: nn.Module) -> None:
    """With drawn references the completeness is against the drawn ones."""
    x = torch.randn(3, 6)
    refs = torch.randn(5, 6)
    n = 7
    g = torch.Generator().manual_seed(11)
    attr, delta = DistributionalIG(smooth_net).attribute(
        x,
        refs,
        target=2,
        n_samples=n,
        n_steps=200,
        method="riemann_trapezoid",
        return_convergence_delta=True,
        generator=g,
    )
    drawn = torch.randint(5, (3, n), generator=torch.Generator().manual_seed(11))
    with torch.no_grad():
        f_x = smooth_net(x)[:, 2]
        f_refs = smooth_net(refs)[:, 2][drawn].mean(1)
    gap = attr.sum(1) - (f_x - f_refs)
    assert gap.abs().max() < 2e-3
    torch.testing.assert_close(delta, gap, rtol=0, atol=1e-5)


def test_linearity(smooth_net: nn.Module, relu_cnn: nn.Module) -> None:
    """E(x, X', aF + bG) = a E(x, X', F) + b E(x, X', G)."""
    torch.manual_seed(1)
    f = smooth_net
    g = nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 3)).eval()
    a, b = 1.7, -0.6
    x = torch.randn(4, 6)
    refs = torch.randn(6, 6)

    def combo(inp: Tensor) -> Tensor:
        return a * f(inp) + b * g(inp)

    kw: dict[str, Any] = {"target": 1, "n_steps": 32}
    lhs = DistributionalIG(combo).attribute(x, refs, **kw)
    rhs = a * DistributionalIG(f).attribute(x, refs, **kw) + b * DistributionalIG(
        g
    ).attribute(x, refs, **kw)
    torch.testing.assert_close(lhs, rhs, rtol=1e-5, atol=1e-6)


class _SymmetricNet(nn.Module):
    """F(x) symmetric in features 0 and 1: depends on x0 + x1 and x0 * x1."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(2)
        self.body = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 1))

    def forward(self, x: Tensor) -> Tensor:
        feats = torch.stack([x[:, 0] + x[:, 1], x[:, 0] * x[:, 1], x[:, 2], x[:, 3]], 1)
        return self.body(feats).squeeze(1)


def test_symmetry_preserving() -> None:
    """Section 5, axiom 3: F symmetric in (i, j), X'_i and X'_j exchangeable,
    x_i = x_j  =>  E_i = E_j. Without exchangeability they differ."""
    model = _SymmetricNet().eval()
    torch.manual_seed(6)
    x = torch.randn(3, 4)
    x[:, 1] = x[:, 0]
    refs = torch.randn(5, 4) + torch.tensor([1.0, -1.0, 0.0, 0.0])
    swapped = refs[:, [1, 0, 2, 3]]
    exchangeable = torch.cat([refs, swapped])  # X' and X'* identically distributed
    attr = DistributionalIG(model).attribute(x, exchangeable, n_steps=64)
    torch.testing.assert_close(attr[:, 0], attr[:, 1], rtol=1e-5, atol=1e-6)
    # control: the same references without their swaps are not exchangeable
    skewed = DistributionalIG(model).attribute(x, refs, n_steps=64)
    assert (skewed[:, 0] - skewed[:, 1]).abs().max() > 1e-2


def test_sensitivity_a() -> None:
    """X' differs from x only in feature i and E F(X') != F(x) => E_i != 0."""
    model = _SymmetricNet().eval()
    x = torch.tensor([[0.3, -0.2, 0.5, 1.0]])
    refs = x.repeat(4, 1)
    refs[:, 2] = torch.tensor([-1.0, 2.0, 0.0, 3.0])
    attr = DistributionalIG(model).attribute(x, refs, n_steps=64)
    assert attr[0, 2].abs() > 1e-3
    assert torch.all(attr[0, [0, 1, 3]] == 0)


def test_sampling_with_generator_matches_the_draws(relu_cnn: nn.Module) -> None:
    """n_samples draws per example with replacement from the generator."""
    x = torch.randn(3, 1, 6, 6)
    refs = torch.randn(4, 1, 6, 6)
    n = 5
    ours = DistributionalIG(relu_cnn).attribute(
        x,
        refs,
        target=[1, 2, 3],
        n_samples=n,
        n_steps=16,
        generator=torch.Generator().manual_seed(7),
    )
    drawn = torch.randint(4, (3, n), generator=torch.Generator().manual_seed(7))
    expected = torch.zeros_like(x)
    ig = IntegratedGradients(relu_cnn)
    for e in range(3):
        for k in drawn[e].tolist():
            expected[e] += ig.attribute(
                x[e : e + 1], refs[k : k + 1], target=[1, 2, 3][e], n_steps=16
            )[0]
    torch.testing.assert_close(ours, expected / n, rtol=1e-5, atol=1e-6)


def test_generator_reproducible_and_global_rng_untouched(relu_cnn: nn.Module) -> None:
    x = torch.randn(2, 1, 6, 6)
    refs = torch.randn(20, 1, 6, 6)
    dig = DistributionalIG(relu_cnn)

    def run(seed: int) -> Tensor:
        return dig.attribute(
            x,
            refs,
            target=0,
            n_samples=3,
            n_steps=8,
            generator=torch.Generator().manual_seed(seed),
        )

    state = torch.get_rng_state()
    first, again, other = run(0), run(0), run(1)
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(first, again)
    assert not torch.allclose(first, other)


def test_callable_sampler(smooth_net: nn.Module) -> None:
    """A sampler (n, generator) -> references; n = batch size * n_samples."""
    calls: list[tuple[int, Tensor]] = []

    def sampler(n: int, generator: torch.Generator | None) -> Tensor:
        out = torch.randn(n, 6, generator=generator) * 0.5 + 1.0
        calls.append((n, out))
        return out

    x = torch.randn(3, 6)
    g = torch.Generator().manual_seed(0)
    ours = DistributionalIG(smooth_net).attribute(
        x, sampler, target=0, n_samples=4, n_steps=16, generator=g
    )
    assert len(calls) == 1 and calls[0][0] == 12
    drawn = calls[0][1]
    ig = IntegratedGradients(smooth_net)
    expected = torch.stack(
        [
            ig.attribute(
                x[e : e + 1].expand(4, 6),
                drawn[4 * e : 4 * e + 4],
                target=0,
                n_steps=16,
            ).mean(0)
            for e in range(3)
        ]
    )
    torch.testing.assert_close(ours, expected, rtol=1e-5, atol=1e-6)


def test_agrees_with_gradient_shap_in_expectation(smooth_net: nn.Module) -> None:
    """GradientShap (stdevs=0) is a Monte Carlo estimate of the same quantity:
    E over a uniformly drawn reference and a uniform alpha of
    grad F(x' + alpha (x - x')) * (x - x'). Its mean over R independent runs
    must lie within 4 standard errors (estimated from the runs) of the exact
    expectation, for every feature. Seeds are fixed, so the test is
    deterministic; the tolerance is what a correct estimator meets with
    probability > 0.999 per feature."""
    torch.manual_seed(8)
    np.random.seed(8)  # noqa: NPY002  (GradientShap draws with numpy)
    x = torch.randn(2, 6)
    refs = torch.randn(6, 6)
    exact = DistributionalIG(smooth_net).attribute(
        x, refs, target=1, n_steps=64, method="gausslegendre"
    )
    gs = GradientShap(smooth_net)
    runs = torch.stack(
        [gs.attribute(x, refs, target=1, n_samples=400, stdevs=0.0) for _ in range(25)]
    )
    mean = runs.mean(0)
    se = runs.std(0) / runs.shape[0] ** 0.5
    assert torch.all((mean - exact).abs() <= 4 * se + 1e-6)
    # and the estimator is informative: its error is far below the signal
    assert (mean - exact).norm() < 0.05 * exact.norm()


def test_internal_batch_size_any_chunking(relu_cnn: nn.Module) -> None:
    """Chunks that split pairs and steps anywhere (1, 7: coprime with the 3 x 5
    pairs; 1000: one chunk) give the same attributions and deltas."""
    x = torch.randn(3, 1, 6, 6)
    refs = torch.randn(5, 1, 6, 6)
    dig = DistributionalIG(relu_cnn)
    kw: dict[str, Any] = {"target": [0, 1, 2], "return_convergence_delta": True}
    full, d_full = dig.attribute(x, refs, n_steps=4, **kw)
    for ibs in (1, 7, 1000):
        got, d = dig.attribute(x, refs, n_steps=4, internal_batch_size=ibs, **kw)
        torch.testing.assert_close(got, full, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(d, d_full, rtol=1e-5, atol=1e-6)


def test_points_are_batched(relu_cnn: nn.Module) -> None:
    """Captum's internal_batch_size: None is one pass; else whole steps of all
    12 paths per pass, each step split into groups of paths when one step is
    more than internal_batch_size points."""
    model = CallCounter(relu_cnn)
    x = torch.randn(3, 1, 6, 6)
    refs = torch.randn(4, 1, 6, 6)
    DistributionalIG(model).attribute(x, refs, target=0, n_steps=10)
    assert model.calls == 1  # all 120 points
    for ibs, calls in ((120, 1), (40, 4), (12, 10), (11, 20), (5, 30)):
        model.calls = 0
        DistributionalIG(model).attribute(
            x, refs, target=0, n_steps=10, internal_batch_size=ibs
        )
        # 40: 3 steps of 12 paths (36 points) per pass, 4 passes; 11: two
        # groups of paths per step; 5: groups of 5 paths
        assert model.calls == calls, ibs


def test_noise_tunnel_draws_from_the_distribution(smooth_net: nn.Module) -> None:
    x = torch.randn(3, 6)
    refs = torch.randn(7, 6)
    nt = NoiseTunnel(DistributionalIG(smooth_net))
    out = nt.attribute(
        x,
        nt_type="smoothgrad",
        nt_samples=4,
        stdevs=0.0,
        draw_baseline_from_distrib=True,
        baselines=refs,
        target=0,
        n_steps=8,
    )
    assert out.shape == x.shape and torch.isfinite(out).all()


def test_model_unchanged_and_no_grad(relu_cnn: nn.Module) -> None:
    x = torch.randn(2, 1, 6, 6)
    refs = torch.randn(3, 1, 6, 6)
    state = snapshot(relu_cnn)
    expected = DistributionalIG(relu_cnn).attribute(x, refs, target=1, n_steps=8)
    with torch.no_grad():
        got = DistributionalIG(relu_cnn).attribute(x, refs, target=1, n_steps=8)
    torch.testing.assert_close(got, expected)
    assert_model_unchanged(state, relu_cnn)


@pytest.mark.parametrize(
    "kwargs,error,match",
    [
        ({"baselines": torch.randn(6)}, ValueError, "baselines"),
        ({"baselines": torch.randn(3, 5)}, ValueError, "baselines"),
        ({"baselines": torch.randn(0, 6)}, ValueError, "baselines"),
        ({"baselines": "zeros"}, TypeError, "baselines"),
        ({"baselines": (torch.randn(3, 6), 0.0)}, ValueError, "baselines"),
        ({"baselines": lambda n, g: torch.randn(n, 6)}, ValueError, "n_samples"),
        (
            {"baselines": lambda n, g: torch.randn(n + 1, 6), "n_samples": 2},
            ValueError,
            "callable",
        ),
        ({"n_samples": 0}, ValueError, "n_samples"),
        ({"n_steps": 0}, ValueError, "n_steps"),
        ({"internal_batch_size": -1}, ValueError, "internal_batch_size"),
        ({"generator": 3}, TypeError, "generator"),
        ({"method": "simpson"}, AssertionError, "method"),
    ],
)
def test_bad_arguments_refused_before_work(
    smooth_net: nn.Module, kwargs: dict[str, Any], error: type, match: str
) -> None:
    model = CallCounter(smooth_net)
    args: dict[str, Any] = {"baselines": torch.randn(3, 6), "target": 0}
    args.update(kwargs)
    with pytest.raises(error, match=match):
        DistributionalIG(model).attribute(torch.randn(2, 6), **args)
    assert model.calls == 0


def test_tuple_baselines_must_share_k() -> None:
    model = CallCounter(BasicModel_MultiLayer_MultiInput())
    x = (torch.randn(2, 3), torch.randn(2, 3))
    with pytest.raises(ValueError, match="same number of reference"):
        DistributionalIG(model).attribute(
            x,
            (torch.randn(3, 3), torch.randn(4, 3)),
            additional_forward_args=(torch.randn(2, 3), 1),
        )
    assert model.calls == 0


def test_show_progress(
    smooth_net: nn.Module, capsys: pytest.CaptureFixture[str]
) -> None:
    x, refs = torch.randn(2, 6), torch.randn(3, 6)
    plain = DistributionalIG(smooth_net).attribute(x, refs, target=0, n_steps=8)
    shown = DistributionalIG(smooth_net).attribute(
        x, refs, target=0, n_steps=8, internal_batch_size=10, show_progress=True
    )
    torch.testing.assert_close(shown, plain)
    assert "DistributionalIG" in capsys.readouterr().err


def test_noise_tunnel_with_any_number_of_references(smooth_net: nn.Module) -> None:
    """K = 5 references for 3 inputs: passed as (1, K, ...), NoiseTunnel leaves
    them alone and each noisy input gets the exact expectation over all K
    (stdevs=0: every noisy copy is the input, so the result is plain
    DistributionalIG). The (K, ...) form is refused by NoiseTunnel itself."""
    x = torch.randn(3, 6)
    refs = torch.randn(5, 6)
    nt = NoiseTunnel(DistributionalIG(smooth_net))
    kw: dict[str, Any] = {"nt_type": "smoothgrad", "nt_samples": 4, "stdevs": 0.0}
    out = nt.attribute(x, baselines=refs[None], target=[0, 1, 2], n_steps=8, **kw)
    direct = DistributionalIG(smooth_net).attribute(
        x, refs, target=[0, 1, 2], n_steps=8
    )
    torch.testing.assert_close(out, direct, rtol=1e-5, atol=1e-6)
    with pytest.raises(AssertionError, match="Baseline"):
        nt.attribute(x, baselines=refs, target=[0, 1, 2], n_steps=8, **kw)
