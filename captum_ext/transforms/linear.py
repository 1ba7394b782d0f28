r"""Closed forms of least squares on ablation-augmented data (linear models).

Liu, Najmi & Sundararajan, "Ablated Data Augmentation as Regularization"
(2020), theorems 1 and 2: ordinary least squares (with intercept) on data
augmented by :class:`~captum_ext.transforms.MeanAblation` or
:class:`~captum_ext.transforms.InvertedInputDropout` with probability
:math:`\lambda` converges, as the augmented set grows, to a penalised least
squares fit on the original data whose closed form is computed here. Both
functions take the augmentation probability ``lam`` itself, so that
``ccp_regression(X, y, p)`` is the limit of OLS on ``MeanAblation(p, ...)``
data and ``modified_l2_regression(X, y, p)`` the limit on
``InvertedInputDropout(p)`` data.

Notation: :math:`\underline X`, :math:`\underline y` are ``X`` and ``y`` with
their column means subtracted (appendix A), :math:`n` the number of rows,
:math:`\mu_j`, :math:`v_j` the mean and (population, divide-by-:math:`n`)
variance of feature :math:`j`, :math:`V = \operatorname{diag}(v_j)`. The
intercept is :math:`\beta_0 = \bar y - \bar x^\top \beta`.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
import torch
from torch import Tensor

from captum_ext.transforms._base import check_probability

__all__ = ["LinearFit", "ccp_regression", "modified_l2_regression"]


class LinearFit(NamedTuple):
    """Coefficients and intercept of a linear model ``y ≈ intercept + X @ coef``.

    Attributes:
        coef: ``(k,)`` for a 1-D target, ``(k, t)`` for ``t`` targets; a Tensor
            when ``X`` was a Tensor (same dtype and device), else a NumPy array.
        intercept: A 0-d value for a 1-D target, ``(t,)`` otherwise, of the
            same kind as ``coef``.
    """

    coef: Any
    intercept: Any


def _as_tensor(value: Any, name: str) -> Tensor:
    if isinstance(value, Tensor):
        return value
    if isinstance(value, np.ndarray):
        return torch.from_numpy(value)
    raise TypeError(
        f"`{name}` must be a torch.Tensor or a numpy.ndarray, got "
        f"{type(value).__name__}."
    )


class _Moments(NamedTuple):
    n: int
    x_mean: Tensor  # (k,)
    y_mean: Tensor  # (t,)
    gram: Tensor  # centred X^T X, (k, k)
    cross: Tensor  # centred X^T y, (k, t)


def _moments(X: Any, y: Any) -> tuple[_Moments, bool, Tensor, bool]:
    """Centred float64 moments; also (y was 1-D, X as a tensor, X was numpy)."""
    is_numpy = isinstance(X, np.ndarray)
    xt, yt = _as_tensor(X, "X"), _as_tensor(y, "y")
    if xt.dim() != 2:
        raise ValueError(f"`X` must be 2-D (n, k), got shape {tuple(xt.shape)}.")
    if yt.dim() not in (1, 2):
        raise ValueError(f"`y` must be 1-D (n,) or 2-D (n, t), got {tuple(yt.shape)}.")
    if yt.shape[0] != xt.shape[0]:
        raise ValueError(
            f"`X` and `y` must have the same number of rows, got {xt.shape[0]} and "
            f"{yt.shape[0]}."
        )
    if xt.shape[0] < 2:
        raise ValueError(f"`X` needs at least 2 rows, got {xt.shape[0]}.")
    if xt.is_complex() or yt.is_complex():
        raise TypeError("`X` and `y` must be real.")
    y_was_1d = yt.dim() == 1
    x64 = xt.detach().to(torch.float64)
    y64 = yt.detach().to(device=xt.device, dtype=torch.float64)
    if y_was_1d:
        y64 = y64[:, None]
    if not (bool(torch.isfinite(x64).all()) and bool(torch.isfinite(y64).all())):
        raise ValueError("`X` and `y` must be finite.")
    x_mean, y_mean = x64.mean(0), y64.mean(0)
    xc, yc = x64 - x_mean, y64 - y_mean
    moments = _Moments(xt.shape[0], x_mean, y_mean, xc.T @ xc, xc.T @ yc)
    return moments, y_was_1d, xt, is_numpy


#: Smallest accepted reciprocal condition number of the penalised normal
#: equations after scaling them to unit diagonal. Below it the coefficients
#: are set by rounding, not by the data (duplicated or linearly dependent
#: columns with no penalty to separate them).
_RCOND = 1e-12


def _check_conditioning(matrix: Tensor, lam: float) -> None:
    """Refuse singular or numerically singular penalised normal equations."""
    diag = torch.diagonal(matrix)
    if bool((diag <= 0).any()):
        cols = torch.nonzero(diag <= 0).flatten().tolist()
        raise ValueError(
            "The penalised normal equations are singular: `X` has constant "
            f"columns {cols[:10]} that `lam`={lam} does not penalise."
        )
    scale = diag.rsqrt()
    eig = torch.linalg.eigvalsh(matrix * scale[:, None] * scale[None, :])
    rcond = float(eig[0] / eig[-1])
    if rcond < _RCOND:
        raise ValueError(
            "The penalised normal equations are singular: `X` has duplicated or "
            f"linearly dependent columns (reciprocal condition number {rcond:.1e}) "
            f"and `lam`={lam} does not separate them, so the coefficients would "
            "depend on rounding. Drop the redundant columns of `X` or use a "
            "larger `lam`."
        )


def _solve(
    matrix: Tensor,
    m: _Moments,
    y_was_1d: bool,
    like: Tensor,
    is_numpy: bool,
    lam: float,
) -> LinearFit:
    _check_conditioning(matrix, lam)
    coef = torch.linalg.solve(matrix, m.cross)
    intercept = m.y_mean - m.x_mean @ coef
    if y_was_1d:
        coef, intercept = coef[:, 0], intercept[0]
    dtype = like.dtype if like.is_floating_point() else torch.float64
    coef, intercept = coef.to(dtype), intercept.to(dtype)
    if is_numpy:
        return LinearFit(coef.cpu().numpy(), intercept.cpu().numpy())
    return LinearFit(coef, intercept)


def ccp_regression(X: Any, y: Any, lam: float) -> LinearFit:
    r"""Least squares with the Contribution Covariance Penalty (theorem 1, eq. 3).

    Minimises, over :math:`\beta_0, \beta`,

    .. math::

        \lVert y - \beta_0 - X\beta\rVert^2 + \lambda\,
        \underbrace{n \sum_{j \ne k} -\operatorname{cov}(\beta_j x_j,
        \beta_k x_k)}_{\beta^\top (nV - \underline X^\top \underline X)\beta},

    whose minimiser (unique for :math:`\lambda < 1`, and the limit of
    ordinary least squares on data augmented with
    :class:`~captum_ext.transforms.MeanAblation` of probability
    :math:`\lambda`) is

    .. math::

        \hat\beta_{ccp(\lambda)} = \big((1-\lambda)\,\underline X^\top
        \underline X + n\lambda V\big)^{-1} \underline X^\top \underline y .

    At :math:`\lambda = 1` it is the limit :math:`V^{-1}\underline X^\top
    \underline y / n`: one single-variable regression per feature (remark 1).
    Computed in float64.

    Args:
        X (Tensor or numpy.ndarray): Features ``(n, k)``, any scale.
        y (Tensor or numpy.ndarray): Targets ``(n,)`` or ``(n, t)``.
        lam (float): The penalty weight, equal to the mean-ablation probability,
            in [0, 1].

    Returns:
        LinearFit: ``(coef, intercept)``, Tensors (``X``'s dtype and device) when
        ``X`` is a Tensor, NumPy arrays when it is an array.

    Raises:
        ValueError: When the penalised normal equations are singular or
            numerically singular (reciprocal condition number below 1e-12
            after scaling to unit diagonal): constant columns that ``lam``
            does not penalise, or duplicated / linearly dependent columns
            at ``lam = 0``, whose coefficients are not unique.

    Examples::

        >>> data = load_diabetes(standardize=False, raw_scale=True)
        >>> coef, intercept = ccp_regression(data.x_train, data.y_train, 0.3)
        >>> pred = intercept + data.x_test @ coef
    """
    lam = check_probability(lam, "lam", allow_one=True)
    m, y_was_1d, like, is_numpy = _moments(X, y)
    diag = torch.diag(torch.diagonal(m.gram))  # n V
    matrix = (1.0 - lam) * m.gram + lam * diag
    return _solve(matrix, m, y_was_1d, like, is_numpy, lam)


def modified_l2_regression(X: Any, y: Any, lam: float) -> LinearFit:
    r"""Least squares with the Modified L2 penalty (theorem 2).

    Minimises, over :math:`\beta_0, \beta`, the mean squared error plus
    :math:`\lambda / (1-\lambda)` times the Modified L2 penalty (eq. 2),

    .. math::

        \frac{1}{n}\lVert y - \beta_0 - X\beta\rVert^2
        + \frac{\lambda}{1-\lambda} \sum_j (v_j + \mu_j^2)\,\beta_j^2 ,

    whose minimiser (the limit of ordinary least squares on data augmented
    with :class:`~captum_ext.transforms.InvertedInputDropout` of probability
    :math:`\lambda`) is

    .. math::

        \hat\beta_{ml2p(\lambda)} = \Big(\underline X^\top \underline X
        + \frac{n\lambda}{1-\lambda} D\Big)^{-1}
        \underline X^\top \underline y, \qquad
        D = \operatorname{diag}(v_j + \mu_j^2).

    The paper prints the last formula without the factor :math:`n`; its own
    derivation (the limits of :math:`\tfrac1N \tilde X^\top \tilde X` and
    :math:`\tfrac1N \tilde X^\top \tilde y`) gives it, and so does the
    augmented least squares fit this function is tested against. With
    standardised features (:math:`\mu = 0`, :math:`v = 1`) this is ridge
    regression with penalty :math:`n\lambda/(1-\lambda)`. Computed in float64.

    Args:
        X (Tensor or numpy.ndarray): Features ``(n, k)``, any scale.
        y (Tensor or numpy.ndarray): Targets ``(n,)`` or ``(n, t)``.
        lam (float): The inverted-dropout probability, in [0, 1).

    Returns:
        LinearFit: ``(coef, intercept)``, Tensors (``X``'s dtype and device) when
        ``X`` is a Tensor, NumPy arrays when it is an array.

    Raises:
        ValueError: When the penalised normal equations are singular or
            numerically singular (reciprocal condition number below 1e-12
            after scaling to unit diagonal): constant columns that ``lam``
            does not penalise, or duplicated / linearly dependent columns
            at ``lam = 0``, whose coefficients are not unique.

    Examples::

        >>> data = load_diabetes(standardize=False, raw_scale=True)
        >>> coef, intercept = modified_l2_regression(data.x_train, data.y_train, 0.2)
    """
    lam = check_probability(lam, "lam")
    m, y_was_1d, like, is_numpy = _moments(X, y)
    variance = torch.diagonal(m.gram) / m.n
    second_moment = variance + m.x_mean**2
    penalty = (m.n * lam / (1.0 - lam)) * torch.diag(second_moment)
    return _solve(m.gram + penalty, m, y_was_1d, like, is_numpy, lam)
