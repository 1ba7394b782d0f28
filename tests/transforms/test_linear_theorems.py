"""Theorems 1 and 2 on real data: augmented least squares -> the closed forms."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import Tensor

from captum_ext.data import load_diabetes
from captum_ext.metrics import contribution_covariance_penalty, modified_l2_penalty
from captum_ext.transforms import InvertedInputDropout, MeanAblation
from captum_ext.transforms.linear import (
    LinearFit,
    ccp_regression,
    modified_l2_regression,
)

LAM = 0.3


@pytest.fixture(scope="module")
def raw_data() -> tuple[Tensor, Tensor]:
    """Diabetes on its original scale (age in years, BMI, blood serum values),
    shifted by +-2 standard deviations per feature (alternating) so that the
    means are away from 0 (0.47 to 258) and the variances away from 1 (0.25 to
    about 1200)."""
    d = load_diabetes(standardize=False, raw_scale=True, dtype=torch.float64)
    x = torch.cat([d.x_train, d.x_test])
    y = torch.cat([d.y_train, d.y_test])
    signs = torch.tensor([(-1.0) ** j for j in range(x.shape[1])], dtype=x.dtype)
    x = x + 2 * x.std(0) * signs
    # nothing near standardised: means away from 0, variances away from 1
    assert x.mean(0).abs().min() > 0.4 and x.mean(0).abs().max() > 100
    assert (x.var(0) - 1).abs().min() > 0.5 and x.var(0).max() > 100
    return x, y


def _ols(x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    """Least squares with intercept, written out (normal equations)."""
    z = torch.cat([torch.ones(x.shape[0], 1, dtype=x.dtype), x], dim=1)
    sol = torch.linalg.solve(z.T @ z, z.T @ y)
    return sol[1:], sol[0]


def _augmented_ols(
    x: Tensor, y: Tensor, transform: torch.nn.Module, checkpoints: list[int]
) -> list[tuple[Tensor, Tensor]]:
    """OLS on a growing augmented data set, read at ``checkpoints`` passes.

    Each pass over the n rows draws fresh masks (as training epochs do; the
    paper resamples rows with replacement, which has the same limit and more
    variance). The transform runs on blocks of whole passes at once, and the
    normal equations are accumulated, so 10^6 rows take about a second.
    """
    k = x.shape[1]
    gram = torch.zeros(k + 1, k + 1, dtype=x.dtype)
    cross = torch.zeros(k + 1, dtype=x.dtype)
    fits, done = [], 0
    for target in checkpoints:
        while done < target:
            reps = min(400, target - done)
            xa = transform(x.repeat(reps, 1))
            z = torch.cat([torch.ones(xa.shape[0], 1, dtype=x.dtype), xa], dim=1)
            gram += z.T @ z
            cross += z.T @ y.repeat(reps)
            done += reps
        sol = torch.linalg.solve(gram, cross)
        fits.append((sol[1:], sol[0]))
    return fits


def _rel(a: Tensor, b: Tensor) -> float:
    return float((a - b).norm() / b.norm())


@pytest.mark.parametrize("kind", ["mean_ablation", "inverted_dropout"])
def test_augmented_ols_converges_to_the_closed_form(
    raw_data: tuple[Tensor, Tensor], kind: str
) -> None:
    x, y = raw_data
    n = x.shape[0]
    gen = torch.Generator().manual_seed(2020)
    if kind == "mean_ablation":
        transform: torch.nn.Module = MeanAblation.from_data(x, LAM, generator=gen)
        coef, intercept = ccp_regression(x, y, LAM)
    else:
        transform = InvertedInputDropout(LAM, generator=gen)
        coef, intercept = modified_l2_regression(x, y, LAM)
    passes = [23, 227, 2263]  # 10^4, 10^5 and 10^6 augmented rows (n = 442)
    fits = _augmented_ols(x, y, transform, passes)
    errors = [_rel(b, coef) for b, _ in fits]
    intercept_errors = [
        abs(float(b0 - intercept)) / abs(float(intercept)) for _, b0 in fits
    ]
    assert passes[-1] * n >= 10**6
    assert errors[-1] < 0.02 and intercept_errors[-1] < 0.02, (errors, intercept_errors)
    assert errors[0] > errors[1] > errors[2], errors  # shrinking as rows grow
    # negative controls: the closed forms it must NOT converge to
    ols_coef, _ = _ols(x, y)
    assert _rel(ols_coef, coef) > 0.1  # the augmentation does regularise
    if kind == "inverted_dropout":
        xc = x - x.mean(0)
        d = torch.diag(x.var(0, unbiased=False) + x.mean(0) ** 2)
        g, c = xc.T @ xc, xc.T @ (y - y.mean())
        printed = torch.linalg.solve(g + LAM / (1 - LAM) * d, c)  # without n
        ridge = torch.linalg.solve(
            g + n * LAM / (1 - LAM) * torch.diag(d.diag() - x.mean(0) ** 2), c
        )
        for wrong in (printed, ridge):
            assert _rel(fits[-1][0], wrong) > 10 * errors[-1]


def test_closed_forms_written_out(raw_data: tuple[Tensor, Tensor]) -> None:
    """Eq. 3 and theorem 2 recomputed from the paper's matrices."""
    x, y = raw_data
    n = x.shape[0]
    xc, yc = x - x.mean(0), y - y.mean()
    v = torch.diag(x.var(0, unbiased=False))
    d = torch.diag(x.var(0, unbiased=False) + x.mean(0) ** 2)
    for lam in (0.0, 0.2, 0.7):
        expected = torch.linalg.solve((1 - lam) * xc.T @ xc + n * lam * v, xc.T @ yc)
        coef, intercept = ccp_regression(x, y, lam)
        torch.testing.assert_close(coef, expected)
        torch.testing.assert_close(intercept, y.mean() - x.mean(0) @ expected)
        expected = torch.linalg.solve(xc.T @ xc + n * lam / (1 - lam) * d, xc.T @ yc)
        torch.testing.assert_close(modified_l2_regression(x, y, lam).coef, expected)
    # lam = 0: both are OLS; lam = 1: CCP gives one regression per feature
    ols_coef, ols_intercept = _ols(x, y)
    torch.testing.assert_close(ccp_regression(x, y, 0.0).coef, ols_coef)
    torch.testing.assert_close(
        modified_l2_regression(x, y, 0.0).intercept, ols_intercept
    )
    singles = torch.stack([(xc[:, j] @ yc) / (xc[:, j] @ xc[:, j]) for j in range(10)])
    torch.testing.assert_close(ccp_regression(x, y, 1.0).coef, singles)


def _ccp_matrix_form(beta: Tensor, x: Tensor) -> Tensor:
    xc = x - x.mean(0)
    nv = torch.diag((xc**2).sum(0))
    return beta @ (nv - xc.T @ xc) @ beta


def test_closed_forms_minimise_the_penalised_objectives(
    raw_data: tuple[Tensor, Tensor],
) -> None:
    x, y = raw_data

    def ccp_objective(beta: Tensor, beta0: Tensor) -> Tensor:
        penalty = contribution_covariance_penalty(x * beta)
        torch.testing.assert_close(penalty, _ccp_matrix_form(beta, x))
        return ((y - beta0 - x @ beta) ** 2).sum() + LAM * penalty

    def ml2_objective(beta: Tensor, beta0: Tensor) -> Tensor:
        penalty = modified_l2_penalty(beta, x)
        mu, v = x.mean(0), x.var(0, unbiased=False)
        torch.testing.assert_close(penalty, ((v + mu**2) * beta**2).sum())
        mse = ((y - beta0 - x @ beta) ** 2).mean()
        return mse + LAM / (1 - LAM) * penalty

    gen = torch.Generator().manual_seed(0)
    for objective, fit in (
        (ccp_objective, ccp_regression(x, y, LAM)),
        (ml2_objective, modified_l2_regression(x, y, LAM)),
    ):
        beta = fit.coef.clone().requires_grad_(True)
        beta0 = fit.intercept.clone().requires_grad_(True)
        value = objective(beta, beta0)
        g_beta, g_beta0 = torch.autograd.grad(value, (beta, beta0))
        # scale: the gradient at beta = 0, where the fit is far from optimal
        zero = torch.zeros_like(beta, requires_grad=True)
        scale = torch.autograd.grad(objective(zero, y.mean()), zero)[0].norm()
        assert float(g_beta.norm() / scale) < 1e-9
        assert abs(float(g_beta0)) < 1e-9 * float(scale)
        # and it is a minimum: every random perturbation increases the objective
        with torch.no_grad():
            for _ in range(20):
                step = torch.randn(beta.shape, generator=gen, dtype=beta.dtype)
                step *= 0.01 * beta.abs()
                assert objective(beta + step, beta0) > value


def test_standardised_features_modified_l2_is_ridge() -> None:
    sklearn_linear = pytest.importorskip("sklearn.linear_model")
    d = load_diabetes(standardize=False, raw_scale=True, dtype=torch.float64)
    x = (d.x_train - d.x_train.mean(0)) / d.x_train.std(0, unbiased=False)
    y = d.y_train
    n = x.shape[0]
    for lam in (0.1, 0.5):
        ridge = sklearn_linear.Ridge(alpha=n * lam / (1 - lam)).fit(
            x.numpy(), y.numpy()
        )
        fit = modified_l2_regression(x.numpy(), y.numpy(), lam)
        np.testing.assert_allclose(fit.coef, ridge.coef_, rtol=1e-10)
        np.testing.assert_allclose(fit.intercept, ridge.intercept_, rtol=1e-10)
        # Modified L2 equals L2 on standardised features
        beta = torch.from_numpy(fit.coef)
        torch.testing.assert_close(modified_l2_penalty(beta, x), (beta**2).sum())
    # with raw features it is not ridge
    raw = modified_l2_regression(d.x_train, y, 0.5).coef
    ridge_raw = sklearn_linear.Ridge(alpha=n).fit(d.x_train.numpy(), y.numpy()).coef_
    assert np.abs(raw.numpy() - ridge_raw).max() > 0.1 * np.abs(ridge_raw).max()


def test_types_shapes_and_errors(raw_data: tuple[Tensor, Tensor]) -> None:
    x, y = raw_data
    fit = ccp_regression(x.float(), y.float(), 0.4)
    assert isinstance(fit, LinearFit) and fit.coef.dtype == torch.float32
    assert fit.coef.shape == (10,) and fit.intercept.shape == ()
    np_fit = modified_l2_regression(x.numpy(), y.numpy(), 0.4)
    assert isinstance(np_fit.coef, np.ndarray) and np_fit.coef.dtype == np.float64
    torch_fit = modified_l2_regression(x, y, 0.4)
    np.testing.assert_allclose(np_fit.coef, torch_fit.coef.numpy())
    # several targets at once equal one at a time
    y2 = torch.stack([y, -2 * y + 1], dim=1)
    multi = ccp_regression(x, y2, 0.4)
    assert multi.coef.shape == (10, 2) and multi.intercept.shape == (2,)
    torch.testing.assert_close(multi.coef[:, 1], ccp_regression(x, y2[:, 1], 0.4).coef)
    with pytest.raises(ValueError, match=r"`lam` must be in \[0, 1\)"):
        modified_l2_regression(x, y, 1.0)
    with pytest.raises(ValueError, match=r"`lam` must be in \[0, 1\]"):
        ccp_regression(x, y, 1.2)
    with pytest.raises(ValueError, match="same number of rows"):
        ccp_regression(x, y[:-1], 0.1)
    with pytest.raises(ValueError, match="2-D"):
        ccp_regression(x[0], y, 0.1)
    with pytest.raises(TypeError, match="`X`"):
        ccp_regression(x.tolist(), y, 0.1)
    with pytest.raises(ValueError, match="singular"):
        constant = torch.cat([x, torch.ones(x.shape[0], 1, dtype=x.dtype)], dim=1)
        ccp_regression(constant, y, 0.5)
