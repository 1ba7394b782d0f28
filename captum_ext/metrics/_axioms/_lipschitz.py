"""Local Lipschitz estimate of an attribution method, and theorem 4's bound."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from captum._utils.typing import TargetType
from captum.log import log_usage
from torch import Tensor

from captum_ext._utils.model_state import preserves_model_state
from captum_ext._utils.validation import check_positive_int
from captum_ext.metrics._axioms._common import (
    AxiomResult,
    attribute_rows,
    check_choice,
    rows_afa,
    rows_target,
    setup,
    tile_rows,
)
from captum_ext.metrics._axioms._methods import MethodType


def _project(y: Tensor, x: Tensor, radius: float, norm: str) -> Tensor:
    d = y - x
    if norm == "linf":
        return x + d.clamp(-radius, radius)
    size = d.norm(dim=-1, keepdim=True)
    return x + d * (radius / size.clamp_min(radius)).clamp(max=1.0)


def _ball(
    shape: tuple[int, ...], radius: float, norm: str, gen: Any, dtype: Any
) -> Tensor:
    if norm == "linf":
        return (
            (torch.rand(shape, generator=gen, dtype=torch.float64) * 2 - 1)
            .mul(radius)
            .to(dtype)
        )
    u = torch.randn(shape, generator=gen, dtype=torch.float64)
    u = u / u.norm(dim=-1, keepdim=True).clamp_min(1e-30)
    r = torch.rand((*shape[:-1], 1), generator=gen, dtype=torch.float64) ** (
        1.0 / shape[-1]
    )
    return (u * r * radius).to(dtype)


@log_usage(part_of_slo=True)
@preserves_model_state
def local_lipschitz(
    method: MethodType,
    forward_func: Callable[..., Any] | None,
    inputs: Tensor | tuple[Tensor, ...],
    baselines: Any = None,
    target: TargetType = None,
    additional_forward_args: Any = None,
    *,
    radius: float = 0.05,
    n_samples: int = 8,
    n_ascent_steps: int = 3,
    n_directions: int = 4,
    norm: str = "l2",
    references: Any = None,
    generator: torch.Generator | None = None,
    attribute_kwargs: Mapping[str, Any] | None = None,
    max_examples_per_batch: int | None = None,
) -> AxiomResult:
    r"""A local Lipschitz estimate of the attributions around each input.

    Estimates :math:`\max_{y \in B(x, r)} \|A(y) - A(x)\|_2 / \|y - x\|_2`
    from below (section 4.1 of Lundstrom et al., ICML 2022,
    `arXiv:2202.11912 <https://arxiv.org/abs/2202.11912>`_, which studies
    this sensitivity; theorem 4: IG may fail to be Lipschitz for ReLU models
    and is Lipschitz with constant at most :math:`M + |a_i - b_i| L / 2` per
    coordinate for a model with L-Lipschitz gradient, see
    :func:`ig_lipschitz_bound`). First ``n_samples`` points drawn uniformly in
    the ball, then ``n_ascent_steps`` steps of projected gradient ascent on
    the ratio from the best sample, the gradient estimated from
    ``n_directions`` random two-point differences (attributions are not
    differentiated). Every step attributes all examples' points in one
    stacked call. Every evaluated point counts; the estimate is the largest
    ratio seen.

    Captum's :func:`~captum.metrics.sensitivity_max` measures
    :math:`\max \|A(y) - A(x)\| / \|A(x)\|` over random points of an
    :math:`\ell_\infty` ball; the same quantity over this check's points is
    returned as ``details["sensitivity"]``.

    Args:
        method (Attribution, type, PerModel or Callable): The method checked
            (see :func:`~captum_ext.metrics.axioms.completeness_violation`).
        forward_func (Callable or None): The model F. None: the method's own.
        inputs (Tensor or tuple[Tensor, ...]): ``(n, ...)`` the inputs x.
        baselines (scalar, Tensor or tuple, optional): The baseline x'.
            Default: zeros.
        target (TargetType, optional): The output explained, as in Captum.
        additional_forward_args (Any, optional): Extra model arguments.
        references (Tensor or tuple, optional): A ``(K, ...)`` reference
            distribution instead of ``baselines``: the distributional form.
        attribute_kwargs (Mapping, optional): Extra keyword arguments for the
            method.
        max_examples_per_batch (int, optional): Rows per model / method call.
        radius (float): Radius r of the ball.
        n_samples (int): Random points per example.
        n_ascent_steps (int): Ascent steps (0: sampling only).
        n_directions (int): Random directions per ascent step.
        norm (str): ``"l2"`` or ``"linf"``: the ball's norm (ratios are
            always taken in the l2 norm).
        generator (torch.Generator, optional): Draws points and directions.

    Returns:
        AxiomResult: ``violation`` the estimate ``(n,)``; ``details``:
        ``"sensitivity"`` (max of l2(A(y) - A(x)) / l2(A(x))), ``"argmax"``
        ``(n, D)`` the point reaching the estimate.

    Examples::

        >>> local_lipschitz(IntegratedGradients(model), model, x, radius=0.1).violation
    """
    if (
        isinstance(radius, bool)
        or not isinstance(radius, (int, float))
        or not radius > 0
    ):
        raise ValueError(f"`radius` must be a positive number, got {radius!r}.")
    check_positive_int(n_samples, "n_samples")
    check_positive_int(n_directions, "n_directions")
    if (
        isinstance(n_ascent_steps, bool)
        or not isinstance(n_ascent_steps, int)
        or n_ascent_steps < 0
    ):
        raise ValueError(
            f"`n_ascent_steps` must be an int >= 0, got {n_ascent_steps!r}."
        )
    check_choice(norm, "norm", ("l2", "linf"))
    s = setup(
        method,
        forward_func,
        inputs,
        baselines,
        target,
        additional_forward_args,
        references,
        attribute_kwargs,
        max_examples_per_batch,
        generator,
    )
    radius = float(radius)
    bound = s.method.bind(s.forward_func)
    x = s.flat_x()
    n, d = x.shape
    a0: Tensor | None = None

    def evaluate(points: Tensor, include_x: bool) -> Tensor:
        """Ratios ``(n, m)`` at ``points`` ``(n, m, D)`` (and A(x) first if asked)."""
        nonlocal a0
        m = points.shape[1]
        flat = points.reshape(n * m, d)
        ex = torch.arange(n, device=s.device).repeat_interleave(m)
        if include_x:
            flat = torch.cat([x, flat])
            ex = torch.cat([torch.arange(n, device=s.device), ex])
        base = None
        if s.baselines is not None:
            base = tile_rows(s.baselines, ex)
        elif s.references is not None:
            base = s.references
        a = attribute_rows(
            bound,
            s,
            s.layout.unflatten(flat),
            base,
            rows_target(s.target, ex, n),
            rows_afa(s.afa, ex, n),
        )
        if include_x:
            a0, a = a[:n], a[n:]
        assert a0 is not None
        da = (a.view(n, m, d) - a0.unsqueeze(1)).norm(dim=-1)
        dx = (points.double() - x.double().unsqueeze(1)).norm(dim=-1)
        ratio = torch.where(dx > 0, da / dx.clamp_min(1e-300), torch.zeros_like(da))
        sens.append(da / a0.norm(dim=-1, keepdim=True).clamp_min(1e-300))
        return ratio

    sens: list[Tensor] = []
    pts = x.unsqueeze(1) + _ball(
        (n, n_samples, d), radius, norm, generator, x.dtype
    ).to(s.device)
    ratios = evaluate(pts, include_x=True)
    best, arg = ratios.max(dim=1)
    best_pt = pts[torch.arange(n), arg]
    cur = best_pt
    delta = 0.1 * radius
    for step in range(n_ascent_steps):
        u = torch.randn((n, n_directions, d), generator=generator, dtype=torch.float64)
        u = (u / u.norm(dim=-1, keepdim=True).clamp_min(1e-30)).to(x.dtype).to(s.device)
        cand = torch.cat(
            [
                _project(cur.unsqueeze(1) + delta * u, x.unsqueeze(1), radius, norm),
                _project(cur.unsqueeze(1) - delta * u, x.unsqueeze(1), radius, norm),
            ],
            dim=1,
        )
        r = evaluate(cand, include_x=False)
        diff = (r[:, :n_directions] - r[:, n_directions:]) / (2 * delta)
        g = (diff.unsqueeze(-1) * u.double()).sum(dim=1)
        g = g / g.norm(dim=-1, keepdim=True).clamp_min(1e-30)
        rb, ab = r.max(dim=1)
        better = rb > best
        best = torch.where(better, rb, best)
        best_pt = torch.where(better.unsqueeze(1), cand[torch.arange(n), ab], best_pt)
        cur = _project(
            cur + (radius / 2 ** (step + 1)) * g.to(x.dtype), x, radius, norm
        )
    if n_ascent_steps:
        r = evaluate(cur.unsqueeze(1), include_x=False)[:, 0]
        better = r > best
        best = torch.where(better, r, best)
        best_pt = torch.where(better.unsqueeze(1), cur, best_pt)
    return AxiomResult(
        "local Lipschitz",
        best,
        {"sensitivity": torch.cat(sens, dim=1).amax(dim=1), "argmax": best_pt},
    )


def ig_lipschitz_bound(
    max_partial: Tensor | float,
    grad_lipschitz: float,
    lower: Tensor | float,
    upper: Tensor | float,
) -> Tensor:
    r"""Theorem 4's bound on the Lipschitz constant of each IG coordinate.

    Lundstrom, Huang & Razaviyayn, ICML 2022
    (`arXiv:2202.11912 <https://arxiv.org/abs/2202.11912>`_), theorem 4: on
    the box :math:`[a, b]` with a fixed baseline, if :math:`\nabla F` is
    Lipschitz with constant L and :math:`|\partial F / \partial x_i| \le M_i`,
    then :math:`IG_i(x)` is Lipschitz in x with constant at most

    .. math::

        K_i = M_i + \frac{|a_i - b_i|}{2} L .

    The attribution vector is then Lipschitz (l2) with constant at most
    :math:`\|K\|_2`, which bounds :func:`local_lipschitz`'s estimate for IG
    (with enough quadrature steps) when the ball lies in the box.

    Args:
        max_partial (Tensor or float): :math:`M_i` (per feature or one number),
            any upper bound of :math:`\max |\partial_i F|` on the box.
        grad_lipschitz (float): L, a Lipschitz constant of :math:`\nabla F`.
        lower (Tensor or float): a, the box's lower corner.
        upper (Tensor or float): b, the box's upper corner.

    Returns:
        Tensor: :math:`K_i` per feature (float64, broadcast shape of the
        arguments).

    Examples::

        >>> ig_lipschitz_bound(torch.tensor([1.0, 2.0]), 0.5, -1.0, 1.0)
        tensor([1.5000, 2.5000], dtype=torch.float64)
    """
    if (
        isinstance(grad_lipschitz, bool)
        or not isinstance(grad_lipschitz, (int, float))
        or grad_lipschitz < 0
    ):
        raise ValueError(
            f"`grad_lipschitz` must be a number >= 0, got {grad_lipschitz!r}."
        )
    m = torch.as_tensor(max_partial, dtype=torch.float64)
    lo = torch.as_tensor(lower, dtype=torch.float64)
    hi = torch.as_tensor(upper, dtype=torch.float64)
    if (m < 0).any():
        raise ValueError("`max_partial` must be >= 0.")
    if (hi < lo).any():
        raise ValueError("`upper` must be >= `lower` in every coordinate.")
    return m + (hi - lo).abs() * float(grad_lipschitz) / 2
