"""Attribution axioms as checks: the known results of the IG study and its
references come out, a planted violation is caught, and the metric contract
(chunking, model untouched, errors) holds."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
import torch
from captum.attr import (
    GuidedBackprop,
    InputXGradient,
    IntegratedGradients,
    Saliency,
)
from captum.metrics import sensitivity_max
from torch import Tensor, nn

from captum_ext.attr import DistributionalIG, PatternAttribution, fit_patterns
from captum_ext.metrics._axioms._report import CHECKS
from captum_ext.metrics.axioms import (
    AxiomReport,
    PerModel,
    axiom_report,
    completeness_violation,
    dummy_violation,
    equivalent_model,
    ig_lipschitz_bound,
    implementation_invariance_violation,
    linearity_violation,
    local_lipschitz,
    ndp_violation,
    passes,
    plot_axiom_report,
    sensitivity_violation,
    symmetry_violation,
)
from tests.helpers import assert_model_unchanged, snapshot

IG_KW = {"n_steps": 256}


def _mlp(seed: int = 0, d: int = 6, out: int = 3) -> nn.Sequential:
    torch.manual_seed(seed)
    return (
        nn.Sequential(nn.Linear(d, 10), nn.ReLU(), nn.Linear(10, out)).double().eval()
    )


def _x(n: int = 5, d: int = 6, seed: int = 1) -> Tensor:
    return torch.randn(
        n, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64
    )


def _refs(k: int = 6, d: int = 6, seed: int = 2) -> Tensor:
    return torch.randn(
        k, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64
    )


def _flipped_ig(feature: int = 0) -> Any:
    """IG with a deliberately wrong sign on one feature (a planted violation)."""

    def attribute(
        inputs: Tensor,
        baselines: Any = None,
        target: Any = None,
        additional_forward_args: Any = None,
        forward_func: Any = None,
    ) -> Tensor:
        a = IntegratedGradients(forward_func).attribute(
            inputs,
            baselines=baselines,
            target=target,
            additional_forward_args=additional_forward_args,
            **IG_KW,
        )
        sign = torch.ones(inputs.shape[1:], dtype=a.dtype)
        sign.view(-1)[feature] = -1
        return a * sign

    return attribute


def _flipped_dig(feature: int = 0) -> Any:
    def attribute(
        inputs: Tensor,
        baselines: Any = None,
        target: Any = None,
        additional_forward_args: Any = None,
        forward_func: Any = None,
    ) -> Tensor:
        a = DistributionalIG(forward_func).attribute(
            inputs,
            baselines=baselines,
            target=target,
            additional_forward_args=additional_forward_args,
            **IG_KW,
        )
        sign = torch.ones(inputs.shape[1:], dtype=a.dtype)
        sign.view(-1)[feature] = -1
        return a * sign

    return attribute


# ---------------------------------------------------------------- completeness


def test_ig_satisfies_completeness_at_enough_steps() -> None:
    m, x = _mlp(), _x()
    ig = IntegratedGradients(m)
    fine = completeness_violation(ig, m, x, 0.1, 1, attribute_kwargs=IG_KW)
    coarse = completeness_violation(ig, m, x, 0.1, 1, attribute_kwargs={"n_steps": 2})
    assert fine.max() < 2e-3 and fine.details["relative"].median() < 1e-2
    assert coarse.max() > 10 * fine.max()  # the gap is the quadrature error
    # the gap is exactly |sum A - (F(x) - F(x'))|, against Captum's own delta
    _, delta = ig.attribute(x, 0.1, target=1, return_convergence_delta=True, **IG_KW)
    torch.testing.assert_close(fine.violation, delta.abs())


def test_distributional_ig_satisfies_distributional_completeness() -> None:
    m, x, refs = _mlp(), _x(), _refs()
    res = completeness_violation(
        DistributionalIG(m), m, x, target=2, references=refs, attribute_kwargs=IG_KW
    )
    assert res.axiom == "completeness (distributional)"
    expected = m(x)[:, 2] - m(refs)[:, 2].mean()
    torch.testing.assert_close(res.details["output_difference"], expected.detach())
    assert res.max() < 2e-3


@pytest.mark.parametrize("cls", [Saliency, GuidedBackprop])
def test_saliency_and_guided_backprop_violate_completeness(cls: type) -> None:
    m, x = _mlp(), _x()
    res = completeness_violation(cls(m), m, x, None, 1)
    assert res.details["relative"].min() > 0.05
    assert not res.all_pass(1e-2)


def test_planted_sign_flip_caught_by_completeness() -> None:
    m, x = _mlp(), _x()
    good = completeness_violation(
        IntegratedGradients(m), m, x, None, 1, attribute_kwargs=IG_KW
    )
    bad = completeness_violation(_flipped_ig(0), m, x, None, 1)
    ig = IntegratedGradients(m).attribute(x, target=1, **IG_KW)
    # flipping feature 0 moves the sum by 2 |A_0|
    torch.testing.assert_close(bad.violation, 2 * ig[:, 0].abs(), atol=3e-3, rtol=0)
    assert good.all_pass(3e-3) and not bad.all_pass(3e-3)
    bad_d = completeness_violation(_flipped_dig(0), m, x, target=1, references=_refs())
    assert bad_d.max() > 1e-2


# -------------------------------------------------------------- sensitivity(a)


def _saturating(x: Tensor) -> Tensor:
    return 1 - torch.relu(1 - x)


def test_sensitivity_a_classic_example() -> None:
    """f(x) = 1 - ReLU(1 - x) at x = 2, baseline 0 (Sundararajan et al. 2017)."""
    x = torch.tensor([[2.0]], dtype=torch.float64)
    sal = sensitivity_violation(Saliency(_saturating), _saturating, x, 0.0)
    ixg = sensitivity_violation(InputXGradient(_saturating), _saturating, x, 0.0)
    ig = sensitivity_violation(
        IntegratedGradients(_saturating), _saturating, x, 0.0, attribute_kwargs=IG_KW
    )
    for res in (sal, ixg):  # the output changes by 1, the attribution is 0
        assert res.details["output_difference"].item() == 1.0
        assert res.details["attribution"].item() == 0.0
        assert res.violation.item() == 1.0
    assert ig.violation.item() < 1e-2
    assert abs(ig.details["attribution"].item() - 1.0) < 1e-2


def test_sensitivity_a_pairs_differ_in_one_feature() -> None:
    m, x = _mlp(), _x()
    res = sensitivity_violation(
        IntegratedGradients(m), m, x, 0.0, 0, n_features=3, attribute_kwargs=IG_KW
    )
    feat = res.details["features"]
    assert feat.shape == (5, 3)
    # the 3 features farthest from the baseline
    torch.testing.assert_close(feat, x.abs().argsort(dim=1, descending=True)[:, :3])
    # for IG a one-feature pair's attribution is the whole output change
    torch.testing.assert_close(
        res.details["attribution"], res.details["output_difference"], atol=2e-3, rtol=0
    )
    sal = sensitivity_violation(Saliency(m), m, x, 0.0, 0, n_features=3)
    assert sal.max() > 0.01


def test_sensitivity_a_distributional() -> None:
    m, x, refs = _mlp(), _x(), _refs()
    res = sensitivity_violation(
        DistributionalIG(m),
        m,
        x,
        target=0,
        references=refs,
        n_features=2,
        attribute_kwargs=IG_KW,
    )
    assert res.max() < 2e-3
    # E_i equals F(x) - E F(X') with X' = x except feature i from the references
    i = int(res.details["features"][0, 0])
    xr = x[:1].repeat(refs.shape[0], 1)
    xr[:, i] = refs[:, i]
    expected = (m(x[:1])[0, 0] - m(xr)[:, 0].mean()).item()
    assert abs(res.details["output_difference"][0, 0].item() - expected) < 1e-12
    planted = sensitivity_violation(
        lambda inputs, **kw: torch.zeros_like(inputs), m, x, target=0, references=refs
    )
    assert planted.max() > 0.01


# ----------------------------------------------------------------------- dummy


def test_ig_satisfies_dummy_and_leaky_method_is_caught() -> None:
    m, x = _mlp(), _x()
    ig = dummy_violation(
        IntegratedGradients(m), m, x, None, 1, features=[0, 2], attribute_kwargs=IG_KW
    )
    assert ig.max() == 0.0
    assert ig.details["mask"].tolist() == [True, False, True, False, False, False]

    def leaky(inputs: Tensor, forward_func: Any = None, **kw: Any) -> Tensor:
        a = IntegratedGradients(forward_func).attribute(inputs, **kw)
        return a + 0.1 * a.mean(dim=1, keepdim=True)  # smears credit onto every feature

    res = dummy_violation(leaky, m, x, None, 1, features=[0, 2])
    assert res.min() > 0
    dist = dummy_violation(
        DistributionalIG(m), m, x, target=1, references=_refs(), features=[1, 4]
    )
    assert dist.max() == 0.0


# ------------------------------------------------------------------- linearity


def test_ig_satisfies_linearity_two_models_and_two_heads() -> None:
    m, g, x = _mlp(0), _mlp(5), _x()
    ig = IntegratedGradients(m)
    two_models = linearity_violation(
        ig, m, x, 0.2, 1, other_forward_func=g, coefficients=(2.0, -3.0)
    )
    heads = linearity_violation(ig, m, x, 0.2, 1, other_target=2)
    assert two_models.max() < 1e-10 and heads.max() < 1e-10
    # the check compares against A(F) and A(G) computed directly
    nonlinear = linearity_violation(Saliency(m), m, x, None, 1, other_target=2)  # abs
    ref_a = Saliency(m).attribute(x, target=1)
    ref_b = Saliency(m).attribute(x, target=2)
    comb = (1.5 * m(x.requires_grad_(True))[:, 1] - 0.5 * m(x)[:, 2]).sum()
    grad = torch.autograd.grad(comb, x)[0].abs()
    x.requires_grad_(False)
    expected = (grad - 1.5 * ref_a + 0.5 * ref_b).abs().sum(dim=1)
    torch.testing.assert_close(nonlinear.violation, expected)
    dist = linearity_violation(
        DistributionalIG(m), m, x, target=1, references=_refs(), other_target="next"
    )
    assert dist.max() < 1e-10


def test_planted_nonlinear_method_is_caught_by_linearity() -> None:
    m, x = _mlp(), _x()

    def squared(inputs: Tensor, forward_func: Any = None, **kw: Any) -> Tensor:
        return IntegratedGradients(forward_func).attribute(inputs, **kw) ** 2

    assert linearity_violation(squared, m, x, None, 1, other_target=2).min() > 1e-4


# -------------------------------------------------------------------- symmetry


def test_ig_satisfies_symmetry_and_planted_flip_is_caught() -> None:
    m, x = _mlp(), _x()
    ig = symmetry_violation(
        IntegratedGradients(m),
        m,
        x,
        0.3,
        2,
        pairs=[(0, 3), (1, 5)],
        attribute_kwargs=IG_KW,
    )
    assert ig.max() < 1e-12
    bad = symmetry_violation(_flipped_ig(0), m, x, 0.3, 2, pairs=[(0, 3), (1, 5)])
    # the flipped feature's attribution is -A_0 while A_3 = A_0
    assert bad.min() > 1e-3 and bad.details["relative"].min() == pytest.approx(1.0)
    gen = torch.Generator().manual_seed(3)
    rand = symmetry_violation(
        IntegratedGradients(m), m, x, 0.3, 2, n_pairs=3, generator=gen
    )
    assert rand.details["pairs"].shape == (3, 2) and rand.max() < 1e-12


def test_distributional_symmetry() -> None:
    m, x, refs = _mlp(), _x(), _refs()
    res = symmetry_violation(
        DistributionalIG(m),
        m,
        x,
        target=0,
        references=refs,
        pairs=[(2, 4)],
        attribute_kwargs=IG_KW,
    )
    assert res.max() < 1e-10
    bad = symmetry_violation(
        _flipped_dig(2), m, x, target=0, references=refs, pairs=[(2, 4)]
    )
    assert bad.min() > 1e-3


# ------------------------------------------------------ implementation invariance


def test_pattern_attribution_violates_implementation_invariance() -> None:
    """The PGIG camera-ready example: two equal nets, PA [1.634, 6.366] vs
    [2.092, 5.908] at x = (3, 3) (Schwarzenberg & Castle, arXiv:2007.10685)."""
    rs = np.random.RandomState(42)
    x1 = rs.normal(size=5000, loc=0.0, scale=0.7)
    flip = rs.choice(a=[False, True], size=5000, p=[0.5, 0.5])
    data = torch.from_numpy(np.stack([x1, np.where(flip, x1, -x1)], axis=1))
    first, second, single = (
        nn.Linear(2, 1, bias=False).double(),
        nn.Linear(1, 1).double(),
        nn.Linear(2, 1).double(),
    )
    with torch.no_grad():
        first.weight.copy_(torch.tensor([[1.0, 2.0]]))
        second.weight.fill_(1.0)
        second.bias.fill_(-1.0)
        single.weight.copy_(torch.tensor([[1.0, 2.0]]))
        single.bias.fill_(-1.0)
    net1 = nn.Sequential(first, nn.ReLU(), second, nn.ReLU()).eval()
    net2 = nn.Sequential(single, nn.ReLU()).eval()
    x = torch.tensor([[3.0, 3.0]], dtype=torch.float64)
    pa = PerModel(lambda net: PatternAttribution(net, fit_patterns(net, [data])))
    res = implementation_invariance_violation(pa, net1, x, target=0, equivalent=net2)
    torch.testing.assert_close(
        res.details["attributions"],
        torch.tensor([[1.6343, 6.3657]], dtype=torch.float64),
        atol=1e-4,
        rtol=0,
    )
    torch.testing.assert_close(
        res.details["other_attributions"],
        torch.tensor([[2.0919, 5.9081]], dtype=torch.float64),
        atol=1e-4,
        rtol=0,
    )
    assert res.violation.item() == pytest.approx(2 * (2.0919 - 1.6343), abs=3e-4)
    ig = implementation_invariance_violation(
        IntegratedGradients(net1), net1, x, target=0, equivalent=net2
    )
    assert ig.max() < 1e-12


def test_library_built_equivalents() -> None:
    m, x = _mlp(), _x()
    for kind in ("permute_hidden", "sign_split"):
        twin = equivalent_model(m, kind)
        torch.testing.assert_close(twin(x), m(x))
        res = implementation_invariance_violation(
            IntegratedGradients(m),
            m,
            x,
            None,
            1,
            equivalent=kind,
            attribute_kwargs=IG_KW,
        )
        assert res.max() < 1e-10
    # GuidedBackprop rewrites ReLU backward passes: the input's sign split changes it
    gb = implementation_invariance_violation(
        GuidedBackprop(m), m, x, None, 1, equivalent="sign_split"
    )
    assert gb.max() > 1e-2
    torch.manual_seed(0)
    bn = nn.Sequential(
        nn.Linear(6, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 2)
    ).double()
    bn.train()(torch.randn(64, 6, dtype=torch.float64))  # running statistics
    bn.eval()
    res = implementation_invariance_violation(
        IntegratedGradients(bn), bn, x, None, 0, equivalent="fold_batchnorm"
    )
    assert res.max() < 1e-8
    assert equivalent_model(m, "permute_hidden")[0].weight.ne(m[0].weight).any()


def test_planted_implementation_dependent_method_is_caught() -> None:
    m, x = _mlp(), _x()

    def by_first_weight(inputs: Tensor, forward_func: Any = None, **kw: Any) -> Tensor:
        a = IntegratedGradients(forward_func).attribute(inputs, **kw)
        first = next(forward_func.parameters())  # depends on the parameterisation
        return a * (1 + first[0, 0].detach())

    res = implementation_invariance_violation(by_first_weight, m, x, None, 1)
    assert res.min() > 1e-4


def test_not_equivalent_model_is_refused() -> None:
    m, x = _mlp(), _x()
    with pytest.raises(ValueError, match="not functionally equal"):
        implementation_invariance_violation(
            IntegratedGradients(m), m, x, None, 1, equivalent=_mlp(3)
        )


# -------------------------------------------------------------------------- NDP


def test_ig_satisfies_ndp_and_gradient_methods_do_not() -> None:
    m, x = _mlp(), _x()
    ig = ndp_violation(IntegratedGradients(m), m, x, 0.0, 1, attribute_kwargs=IG_KW)
    assert ig.details["premise"].all()
    assert ig.max() == 0.0
    # the gradient of the shifted model, dF/dx_i + c sign(x_i - x'_i), is negative
    # where x_i < x'_i: a gradient map violates NDP
    sal = ndp_violation(Saliency(m), m, x, 0.0, 1, attribute_kwargs={"abs": False})
    assert sal.details["premise"].all() and sal.max() > 0.5
    # Gradient * Input with baseline 0 is x_i dF/dx_i + c |x_i| >= 0 on the shifted
    # model, but not with another baseline
    ixg0 = ndp_violation(InputXGradient(m), m, x, 0.0, 1)
    ixg = ndp_violation(InputXGradient(m), m, x, 0.5, 1)
    assert ixg0.max() == 0.0 and ixg.max() > 0
    bad = ndp_violation(_flipped_ig(0), m, x, 0.0, 1)
    assert bad.min() > 0
    # the flipped feature carries all the negative mass: IG_0 on the shifted model
    shifted = ndp_violation(IntegratedGradients(m), m, x, 0.0, 1, shift=None)
    assert shifted.details["shift"].eq(0).all()


def test_ndp_model_already_monotone() -> None:
    w = torch.tensor([[1.0, 2.0, 0.5]], dtype=torch.float64)

    def monotone(x: Tensor) -> Tensor:
        return torch.tanh(x @ w.T)[:, 0] + x.clamp_min(0).sum(1)

    x = torch.rand(4, 3, dtype=torch.float64) + 0.5
    res = ndp_violation(
        IntegratedGradients(monotone),
        monotone,
        x,
        0.0,
        shift=None,
        attribute_kwargs=IG_KW,
    )
    assert res.details["premise"].all() and res.max() == 0.0
    decreasing = ndp_violation(
        IntegratedGradients(monotone), lambda v: -monotone(v), x, 0.0, shift=None
    )
    assert not decreasing.details["premise"].any()


def test_distributional_ndp() -> None:
    m, x, refs = _mlp(), _x(), _refs()
    res = ndp_violation(
        DistributionalIG(m), m, x, target=1, references=refs, attribute_kwargs=IG_KW
    )
    assert res.details["premise"].all() and res.max() == 0.0
    bad = ndp_violation(_flipped_dig(0), m, x, target=1, references=refs)
    assert bad.min() > 0


# -------------------------------------------------------------------- Lipschitz


def test_ig_lipschitz_large_near_relu_kink() -> None:
    """max(x1, x2) = x2 + ReLU(x1 - x2): IG (baseline 0) jumps across x1 = x2."""

    def relu_max(x: Tensor) -> Tensor:
        return x[:, 1] + torch.relu(x[:, 0] - x[:, 1])

    x = torch.tensor([[1.0, 1.001], [3.0, -1.0]], dtype=torch.float64)
    gen = torch.Generator().manual_seed(0)
    res = local_lipschitz(
        IntegratedGradients(relu_max),
        relu_max,
        x,
        0.0,
        radius=0.01,
        n_samples=16,
        generator=gen,
    )
    assert res.violation[0] > 30  # a jump of ~1 within 0.01
    assert res.violation[1] < 1.5  # far from the kink IG is linear: L = 1


def _tanh_net() -> tuple[nn.Sequential, Tensor, Tensor]:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 1)).double().eval()
    w1, v = net[0].weight.detach(), net[2].weight.detach()[0]
    m = (v.abs().unsqueeze(1) * w1.abs()).sum(dim=0)  # |dF/dx_i| <= sum_j |v_j W_ji|
    tanh2 = 4 / (3 * math.sqrt(3))  # max |tanh''|
    lip = float(v.abs().max() * tanh2 * torch.linalg.matrix_norm(w1, 2) ** 2)
    return net, m, torch.tensor(lip, dtype=torch.float64)


def test_ig_lipschitz_below_theorem_4_bound_on_smooth_net() -> None:
    net, m, lip = _tanh_net()
    x = _x(4, 4)
    radius = 0.2
    lo = torch.minimum(x, torch.zeros_like(x)) - radius
    hi = torch.maximum(x, torch.zeros_like(x)) + radius
    bound = ig_lipschitz_bound(m, float(lip), lo, hi).norm(dim=1)
    res = local_lipschitz(
        IntegratedGradients(net),
        net,
        x,
        0.0,
        0,
        radius=radius,
        attribute_kwargs={"n_steps": 64},
        generator=torch.Generator().manual_seed(0),
    )
    assert (res.violation <= bound).all()
    assert (res.violation > 0.05 * bound).all()  # a real estimate, not 0


def test_lipschitz_closed_form_and_captum_sensitivity_max() -> None:
    """F = w.x: IG = w (x - x'), Lipschitz constant max |w_i| exactly."""
    w = torch.tensor([0.5, -3.0, 1.0, 2.0], dtype=torch.float64)

    def linear(x: Tensor) -> Tensor:
        return x @ w

    x = _x(3, 4)
    ig = IntegratedGradients(linear)
    res = local_lipschitz(
        ig,
        linear,
        x,
        0.0,
        radius=0.1,
        n_samples=32,
        n_ascent_steps=4,
        generator=torch.Generator().manual_seed(0),
    )
    assert (res.violation <= 3.0 + 1e-9).all() and (res.violation > 2.0).all()
    torch.manual_seed(0)
    sens = sensitivity_max(ig.attribute, x, perturb_radius=0.1, n_perturb_samples=16)
    a_norm = (w * x).norm(dim=1)
    # Captum's ratio is bounded by the exact constant times the l-inf ball's l2 radius
    assert (sens <= 3.0 * 0.1 * 2 / a_norm + 1e-9).all()
    lin = local_lipschitz(
        ig,
        linear,
        x,
        0.0,
        radius=0.1,
        norm="linf",
        n_samples=16,
        n_ascent_steps=0,
        generator=torch.Generator().manual_seed(0),
    )
    assert (lin.details["sensitivity"] <= 3.0 * 0.1 * 2 / a_norm + 1e-9).all()


def test_theorem_4_bound_values() -> None:
    k = ig_lipschitz_bound(
        torch.tensor([1.0, 2.0]), 0.5, -1.0, torch.tensor([1.0, 3.0])
    )
    torch.testing.assert_close(k, torch.tensor([1.5, 3.0], dtype=torch.float64))
    with pytest.raises(ValueError, match="upper"):
        ig_lipschitz_bound(1.0, 1.0, 1.0, 0.0)


# ---------------------------------------------------------------------- report


def test_axiom_report_table_markdown_and_figure() -> None:
    import matplotlib

    matplotlib.use("Agg")
    m, x = _mlp(), _x(4)
    data = [_x(64, 6, seed=9)]
    methods = {
        "IG": (IntegratedGradients(m), IG_KW),
        "Saliency": Saliency(m),
        "PatternAttribution": PatternAttribution(m, fit_patterns(m, data)),
    }
    state = snapshot(m)
    rep = axiom_report(methods, m, x, target=1)
    assert_model_unchanged(state, m)
    assert isinstance(rep, AxiomReport)
    assert list(rep.table) == list(methods)
    assert rep.checks == list(CHECKS)
    assert rep.table["IG"]["completeness"] < 2e-3
    assert rep.table["Saliency"]["completeness"] > 0.05
    passed = rep.passed()
    assert passed["IG"]["dummy"] and passed["IG"]["linearity"] and passed["IG"]["NDP"]
    assert passed["Saliency"]["completeness"] is False
    # PatternAttribution cannot be rebound to the wrapped models: n/a with a reason
    assert rep.table["PatternAttribution"]["dummy"] is None
    assert "PerModel" in rep.errors["PatternAttribution"]["dummy"]
    assert rep.table["PatternAttribution"]["completeness"] is not None
    md = rep.to_markdown()
    assert md.count("\n| ") == 3 and "n/a" in md and "✗" in md
    fig = plot_axiom_report(rep, title="t")
    assert len(fig.axes) == 2
    # the table's numbers are the means of the per-example results
    assert rep.table["IG"]["NDP"] == rep.results["IG"]["NDP"].mean()


def test_report_distributional() -> None:
    m, x = _mlp(), _x(3)
    rep = axiom_report(
        {"DistributionalIG": (DistributionalIG(m), IG_KW)},
        m,
        x,
        target=0,
        references=_refs(),
        checks=["completeness", "symmetry", "NDP"],
    )
    assert rep.results["DistributionalIG"]["completeness"].axiom.endswith(
        "(distributional)"
    )
    assert all(rep.passed()["DistributionalIG"].values())


# ---------------------------------------------------------- contract: chunking


_CHECKS = [
    (completeness_violation, {}),
    (sensitivity_violation, {"n_features": 3}),
    (dummy_violation, {"features": [1, 2]}),
    (linearity_violation, {"other_target": "next"}),
    (symmetry_violation, {"pairs": [(0, 1)]}),
    (implementation_invariance_violation, {"generator": None}),
    (ndp_violation, {}),
]


@pytest.mark.parametrize("fn,kw", _CHECKS, ids=[f.__name__ for f, _ in _CHECKS])
def test_results_independent_of_chunking(fn: Any, kw: dict[str, Any]) -> None:
    m, x = _mlp(), _x(5)
    ig = IntegratedGradients(m)
    kw = {k: v for k, v in kw.items() if v is not None}
    if fn is implementation_invariance_violation:
        kw["generator"] = torch.Generator().manual_seed(0)
    full = fn(ig, m, x, 0.1, 1, attribute_kwargs={"n_steps": 20}, **kw)
    if fn is implementation_invariance_violation:
        kw["generator"] = torch.Generator().manual_seed(0)
    chunked = fn(
        ig,
        m,
        x,
        0.1,
        1,
        attribute_kwargs={"n_steps": 20},
        max_examples_per_batch=2,
        **kw,
    )
    torch.testing.assert_close(
        full.violation, chunked.violation, rtol=1e-10, atol=1e-12
    )


def test_lipschitz_independent_of_chunking() -> None:
    m, x = _mlp(), _x(3)
    ig = IntegratedGradients(m)
    runs = [
        local_lipschitz(
            ig,
            m,
            x,
            0.0,
            1,
            generator=torch.Generator().manual_seed(0),
            attribute_kwargs={"n_steps": 10},
            max_examples_per_batch=c,
        )
        for c in (None, 4)
    ]
    torch.testing.assert_close(
        runs[0].violation, runs[1].violation, rtol=1e-10, atol=1e-12
    )


def test_tuple_inputs_and_forward_args() -> None:
    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b = nn.Linear(3, 5), nn.Linear(2, 5)
            self.out = nn.Linear(5, 2)

        def forward(self, x1: Tensor, x2: Tensor, scale: Tensor) -> Tensor:
            return self.out(torch.tanh(self.a(x1) + self.b(x2))) * scale

    torch.manual_seed(0)
    net = Net().double().eval()
    x = (_x(4, 3), _x(4, 2, seed=5))
    scale = torch.tensor([[1.0], [2.0], [0.5], [3.0]], dtype=torch.float64)
    ig = IntegratedGradients(net)
    state = snapshot(net)
    for fn, kw in _CHECKS:
        kw = {k: v for k, v in kw.items() if v is not None}
        if fn is implementation_invariance_violation:
            kw["equivalent"] = "sign_split"  # Net is no nn.Sequential
        res = fn(ig, net, x, None, 1, (scale,), attribute_kwargs=IG_KW, **kw)
        tol = 2e-3 if fn in (completeness_violation, sensitivity_violation) else 1e-9
        assert res.max() <= tol, fn.__name__
        chunked = fn(
            ig,
            net,
            x,
            None,
            1,
            (scale,),
            attribute_kwargs=IG_KW,
            max_examples_per_batch=3,
            **kw,
        )
        torch.testing.assert_close(
            res.violation, chunked.violation, rtol=1e-9, atol=1e-12
        )
    assert_model_unchanged(state, net)


# ------------------------------------------------------------ contract: errors


def test_clear_errors_before_work() -> None:
    m, x = _mlp(), _x()
    ig = IntegratedGradients(m)
    with pytest.raises(TypeError, match="`method`"):
        completeness_violation(42, m, x)
    with pytest.raises(ValueError, match="not both"):
        completeness_violation(ig, m, x, 0.0, references=_refs())
    with pytest.raises(ValueError, match="`baselines`"):
        completeness_violation(ig, m, x, torch.zeros(3, 6))
    with pytest.raises(AssertionError):
        completeness_violation(ig, m, x, target=torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="max_examples_per_batch"):
        completeness_violation(ig, m, x, target=0, max_examples_per_batch=0)
    with pytest.raises(ValueError, match="disjoint"):
        symmetry_violation(ig, m, x, target=0, pairs=[(0, 1), (1, 2)])
    with pytest.raises(ValueError, match="`pairs`"):
        symmetry_violation(ig, m, x, target=0, pairs=[(0, 9)])
    with pytest.raises(ValueError, match="`features`"):
        dummy_violation(ig, m, x, target=0, features=[7])
    with pytest.raises(ValueError, match="`coefficients`"):
        linearity_violation(ig, m, x, target=0, coefficients=(1.0,))
    with pytest.raises(ValueError, match="`radius`"):
        local_lipschitz(ig, m, x, target=0, radius=0)
    with pytest.raises(ValueError, match="`norm`"):
        local_lipschitz(ig, m, x, target=0, norm="l1")
    with pytest.raises(ValueError, match="`kind`"):
        equivalent_model(m, "transpose")
    with pytest.raises(ValueError, match="train mode"):
        equivalent_model(
            nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2)), "fold_batchnorm"
        )
    with pytest.raises(ValueError, match="`shift`"):
        ndp_violation(ig, m, x, target=0, shift=-1.0)
    with pytest.raises(ValueError, match="`attribute_kwargs`"):
        completeness_violation(ig, m, x, target=0, attribute_kwargs={"target": 1})
    with pytest.raises(ValueError, match="`tol`"):
        passes(torch.zeros(2), -1.0)
    with pytest.raises(ValueError, match="Unknown check"):
        axiom_report({"IG": ig}, m, x, target=0, checks=["fairness"])
    with pytest.raises(TypeError, match="PerModel"):
        dummy_violation(PatternAttribution(m, fit_patterns(m, [x])), m, x, target=0)


def test_passes_turns_violations_into_pass_fail() -> None:
    v = torch.tensor([0.0, 1e-3, float("nan"), 2.0])
    assert passes(v, 1e-3).tolist() == [True, True, False, False]


def test_wrapping_methods_are_rebound_to_the_wrapped_model() -> None:
    """NoiseTunnel and RecursiveMaskAttribution hold an inner method: it must
    attribute the check's wrapper, not the original model."""
    from captum.attr import NoiseTunnel

    from captum_ext.attr import RecursiveMaskAttribution

    m, x = _mlp(), _x()
    nt = NoiseTunnel(IntegratedGradients(m))
    res = dummy_violation(
        nt,
        m,
        x,
        None,
        1,
        features=[0, 2],
        attribute_kwargs={"nt_samples": 3, "stdevs": 0.1},
    )
    assert res.max() == 0.0
    rec = RecursiveMaskAttribution(m, Saliency(m))
    res = dummy_violation(
        rec,
        m,
        x,
        None,
        1,
        features=[0, 2],
        attribute_kwargs={"n_iterations": 1, "per_channel": False},
    )
    # a min-max normalised mask gives the ignored features the minimum, 0
    assert res.max() == 0.0


@pytest.mark.parametrize(
    "fn",
    [completeness_violation, sensitivity_violation, symmetry_violation, ndp_violation],
)
def test_distributional_results_independent_of_chunking(fn: Any) -> None:
    m, x, refs = _mlp(), _x(5), _refs(4)
    dig = DistributionalIG(m)
    kw: dict[str, Any] = {"pairs": [(0, 1)]} if fn is symmetry_violation else {}
    full = fn(
        dig, m, x, target=1, references=refs, attribute_kwargs={"n_steps": 10}, **kw
    )
    chunked = fn(
        dig,
        m,
        x,
        target=1,
        references=refs,
        attribute_kwargs={"n_steps": 10},
        max_examples_per_batch=3,
        **kw,
    )
    torch.testing.assert_close(
        full.violation, chunked.violation, rtol=1e-10, atol=1e-12
    )
