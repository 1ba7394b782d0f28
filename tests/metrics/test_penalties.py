"""CCP, Modified L2 penalty and the network-level convenience (IG, avg gradients)."""

from __future__ import annotations

import pytest
import torch
from captum.attr import IntegratedGradients
from torch import Tensor, nn

from captum_ext.data import load_diabetes
from captum_ext.metrics import (
    AblationPenalties,
    ablation_penalties,
    contribution_covariance_penalty,
    modified_l2_penalty,
)
from captum_ext.models import tabular_mlp
from captum_ext.transforms.linear import ccp_regression, modified_l2_regression
from tests.helpers import assert_model_unchanged, snapshot


def _pairwise_ccp(a: Tensor) -> float:
    """Eq. 1 written out: n * sum over j != k of -cov(a_j, a_k)."""
    n, k = a.shape
    total = 0.0
    for j in range(k):
        for m in range(k):
            if j != m:
                cov = ((a[:, j] - a[:, j].mean()) * (a[:, m] - a[:, m].mean())).mean()
                total -= float(cov)
    return n * total


def test_ccp_two_forms_agree() -> None:
    gen = torch.Generator().manual_seed(0)
    mixing = torch.randn(6, 6, generator=gen, dtype=torch.float64)
    a = torch.randn(200, 6, generator=gen, dtype=torch.float64) @ mixing + 3.0
    assert float(contribution_covariance_penalty(a)) == pytest.approx(
        _pairwise_ccp(a), rel=1e-10
    )
    # uncorrelated contributions: no penalty; perfectly reinforcing: negative
    independent = torch.eye(4, dtype=torch.float64).repeat(50, 1)
    independent = independent - independent.mean(0)
    cov = independent.T @ independent
    off_diagonal = cov - torch.diag(cov.diag())
    assert float(contribution_covariance_penalty(independent)) == pytest.approx(
        -float(off_diagonal.sum()), abs=1e-9
    )
    same = torch.randn(100, 1, generator=gen).repeat(1, 3)
    assert float(contribution_covariance_penalty(same)) < 0
    # tuple inputs: features of all tensors together; image-shaped features
    parts = (a[:, :2], a[:, 2:].reshape(200, 2, 2))
    torch.testing.assert_close(
        contribution_covariance_penalty(parts), contribution_covariance_penalty(a)
    )
    # one feature: nothing to cancel
    assert float(contribution_covariance_penalty(a[:, :1])) == pytest.approx(0.0)


def test_ccp_is_differentiable_and_keeps_dtype() -> None:
    a = torch.randn(30, 4, requires_grad=True)
    value = contribution_covariance_penalty(a)
    assert value.dtype == torch.float32 and value.shape == ()
    (grad,) = torch.autograd.grad(value, a)
    assert grad.shape == a.shape


def test_modified_l2_penalty_global_and_per_example() -> None:
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(120, 5, generator=gen, dtype=torch.float64) * 3 + 7
    beta = torch.randn(5, generator=gen, dtype=torch.float64)
    expected = sum(
        float(((x[:, j] - x[:, j].mean()) ** 2).mean() + x[:, j].mean() ** 2)
        * float(beta[j]) ** 2
        for j in range(5)
    )
    assert float(modified_l2_penalty(beta, x)) == pytest.approx(expected, rel=1e-12)
    # per-example coefficients that are all equal: the same value, both averages
    per_example = beta.expand(120, 5)
    for average in ("coefficients", "penalty"):
        value = modified_l2_penalty(per_example, x, average=average)  # type: ignore[arg-type]
        assert float(value) == pytest.approx(expected, rel=1e-12)
    # varying coefficients: "penalty" = mean of squares >= square of the mean
    g = beta + torch.randn(120, 5, generator=gen, dtype=torch.float64)
    second = (x**2).mean(0)
    assert float(modified_l2_penalty(g, x)) == pytest.approx(
        float((second * g.mean(0) ** 2).sum()), rel=1e-12
    )
    assert float(modified_l2_penalty(g, x, average="penalty")) == pytest.approx(
        float((second * g**2).sum(1).mean()), rel=1e-12
    )
    # tuple structure
    assert float(modified_l2_penalty((beta[:2], beta[2:]), (x[:, :2], x[:, 2:]))) == (
        pytest.approx(expected, rel=1e-12)
    )
    with pytest.raises(ValueError, match="shaped like one example"):
        modified_l2_penalty(beta[:3], x)
    with pytest.raises(ValueError, match="structure of `inputs`"):
        modified_l2_penalty((beta,), x)
    with pytest.raises(ValueError, match="`average`"):
        modified_l2_penalty(beta, x, average="mean")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="`coefficients`"):
        modified_l2_penalty([1.0, 2.0], x)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def diabetes_raw() -> tuple[Tensor, Tensor]:
    d = load_diabetes(standardize=False, raw_scale=True, dtype=torch.float64)
    return d.x_train, d.y_train


def test_linear_model_attributions_are_contributions(
    diabetes_raw: tuple[Tensor, Tensor],
) -> None:
    """IG (zero baseline) of a linear model is beta_j x_j, so the network
    penalties equal the linear-model penalties (section 3.1, 3.2)."""
    x, y = diabetes_raw
    for fit in (ccp_regression(x, y, 0.4), modified_l2_regression(x, y, 0.4)):
        model = nn.Linear(10, 1).double()
        with torch.no_grad():
            model.weight.copy_(fit.coef[None])
            model.bias.fill_(float(fit.intercept))
        result = ablation_penalties(model, x)
        assert isinstance(result, AblationPenalties)
        torch.testing.assert_close(result.attributions, x * fit.coef)
        torch.testing.assert_close(result.average_gradients, fit.coef.expand_as(x))
        xc = x - x.mean(0)
        linear_ccp = fit.coef @ (torch.diag((xc**2).sum(0)) - xc.T @ xc) @ fit.coef
        torch.testing.assert_close(result.ccp, linear_ccp)
        mu, v = x.mean(0), x.var(0, unbiased=False)
        torch.testing.assert_close(result.ml2p, ((v + mu**2) * fit.coef**2).sum())


def test_matches_captum_integrated_gradients() -> None:
    torch.manual_seed(0)
    model = tabular_mlp(8, 3, hidden_layers=2, width=16).eval()
    x = torch.randn(20, 8)
    target = torch.randint(0, 3, (20,))
    baseline = torch.randn(1, 8)
    state = snapshot(model)
    with torch.no_grad():
        result = ablation_penalties(
            model, x, target=target, baselines=baseline, n_steps=40
        )
    assert_model_unchanged(state, model)
    attr = IntegratedGradients(model).attribute(
        x, baselines=baseline, target=target, n_steps=40
    )
    grads = IntegratedGradients(model, multiply_by_inputs=False).attribute(
        x, baselines=baseline, target=target, n_steps=40
    )
    torch.testing.assert_close(result.attributions, attr, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(result.average_gradients, grads, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(result.ccp, contribution_covariance_penalty(attr))
    torch.testing.assert_close(result.ml2p, modified_l2_penalty(grads, x))
    # chunked steps give the same numbers; so does another quadrature vs Captum
    chunked = ablation_penalties(
        model, x, target=target, baselines=baseline, n_steps=40, internal_batch_size=70
    )
    torch.testing.assert_close(chunked.attributions, result.attributions)
    torch.testing.assert_close(chunked.ccp, result.ccp)
    riemann = ablation_penalties(model, x, target=1, n_steps=20, method="riemann_left")
    captum_riemann = IntegratedGradients(model).attribute(
        x, target=1, n_steps=20, method="riemann_left"
    )
    torch.testing.assert_close(riemann.attributions, captum_riemann)


def test_tuple_inputs_and_additional_forward_args() -> None:
    class TwoInputs(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = nn.Linear(3, 2)
            self.b = nn.Linear(4, 2)

        def forward(self, u: Tensor, w: Tensor, scale: Tensor) -> Tensor:
            return torch.tanh(self.a(u) + self.b(w)) * scale

    torch.manual_seed(0)
    model = TwoInputs()
    inputs = (torch.randn(10, 3), torch.randn(10, 4))
    scale = torch.rand(10, 1) + 0.5
    result = ablation_penalties(
        model, inputs, target=0, additional_forward_args=(scale,)
    )
    assert isinstance(result.attributions, tuple) and len(result.attributions) == 2
    expected = IntegratedGradients(model).attribute(
        inputs, target=0, additional_forward_args=(scale,), n_steps=100
    )
    for ours, theirs in zip(result.attributions, expected):
        torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6)


def test_bad_arguments_are_refused_before_work() -> None:
    model = tabular_mlp(4, 2, hidden_layers=1, width=8)
    x = torch.randn(6, 4)
    with pytest.raises(ValueError, match="n_steps"):
        ablation_penalties(model, x, target=0, n_steps=0)
    with pytest.raises(ValueError, match="`average`"):
        ablation_penalties(model, x, target=0, average="x")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="out of range"):
        ablation_penalties(model, x, target=5)
    with pytest.raises(AssertionError):
        ablation_penalties(model, x, target=[0, 1])  # wrong length, as in Captum
    with pytest.raises(TypeError, match="`inputs`"):
        ablation_penalties(model, x.tolist())  # type: ignore[arg-type]
    with pytest.raises(AssertionError):
        ablation_penalties(model, x)  # two outputs and no target
