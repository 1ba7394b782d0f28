"""The axiom checks of the IG study (sections 2, 4, 5; appendices A and K)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from captum._utils.typing import TargetType
from captum.log import log_usage
from torch import Tensor

from captum_ext._utils.batching import repeat_forward_args
from captum_ext._utils.gradient import target_gradients
from captum_ext._utils.model_state import preserves_model_state
from captum_ext._utils.validation import check_positive_int, validate_target
from captum_ext.metrics._axioms._common import (
    AxiomResult,
    Setup,
    attribute_rows,
    check_nonneg,
    flat_targets,
    flat_width,
    forward_rows,
    l1,
    rows_afa,
    rows_target,
    safe_ratio,
    setup,
    tile_rows,
)
from captum_ext.metrics._axioms._equivalents import equivalent_model
from captum_ext.metrics._axioms._methods import Method, MethodType
from captum_ext.metrics._axioms._wrappers import (
    CombinationWrapper,
    DummyWrapper,
    LinearShiftWrapper,
    MonotoneWrapper,
    OneFeatureWrapper,
    SymmetrisedWrapper,
)

_N_AFA = Callable[[Any], int]


def _n_afa(afa: Any) -> int:
    return 0 if afa is None else len(afa)


def _ar(s: Setup) -> Tensor:
    return torch.arange(s.n, device=s.device)


def _reference_outputs(s: Setup) -> Tensor:
    """``(n,)`` mean over the K references of F(x'_k) for each example's target."""
    assert s.references is not None
    k = int(s.references[0].shape[0])
    ex = _ar(s).repeat_interleave(k)
    ref = torch.arange(k, device=s.device).repeat(s.n)
    xs = tuple(r[ref] for r in s.references)
    out = forward_rows(
        s.forward_func, s, xs, rows_target(s.target, ex, s.n), rows_afa(s.afa, ex, s.n)
    )
    return out.view(s.n, k).mean(dim=1)


@log_usage(part_of_slo=True)
@preserves_model_state
def completeness_violation(
    method: MethodType,
    forward_func: Callable[..., Any] | None,
    inputs: Tensor | tuple[Tensor, ...],
    baselines: Any = None,
    target: TargetType = None,
    additional_forward_args: Any = None,
    *,
    references: Any = None,
    attribute_kwargs: Mapping[str, Any] | None = None,
    eps: float = 1e-12,
    max_examples_per_batch: int | None = None,
) -> AxiomResult:
    r"""Completeness: do the attributions add up to the change of the output?

    Axiom 3 of Lundstrom, Huang & Razaviyayn, *A Rigorous Study of Integrated
    Gradients Method and Extensions to Internal Neuron Attributions*
    (ICML 2022, `arXiv:2202.11912 <https://arxiv.org/abs/2202.11912>`_),
    section 2.2, and its distributional form (section 5, axiom 2):

    .. math::

        \sum_i A_i(x, x', F) = F(x) - F(x'), \qquad
        \sum_i E_i(x, X', F) = F(x) - \mathbb{E}\, F(X').

    The violation is the absolute gap
    :math:`|\sum_i A_i - (F(x) - F(x'))|` per example. Integrated Gradients
    satisfies the axiom up to its quadrature error; gradient maps do not.

    Args:
        method (Attribution, type, PerModel or Callable): The method checked:
            a Captum-style instance (its ``attribute`` is called), an
            Attribution class (built on the model), a :class:`PerModel`
            factory, or a callable ``(inputs, baselines=, target=,
            additional_forward_args=, forward_func=) -> attributions``.
        forward_func (Callable or None): The model F. None: the method's own.
        inputs (Tensor or tuple[Tensor, ...]): ``(n, ...)`` the inputs x.
        baselines (scalar, Tensor or tuple, optional): The baseline x'
            (broadcastable to the inputs). Default: zeros. Methods whose
            ``attribute`` takes no ``baselines`` are called without it.
        target (TargetType, optional): The output explained, as in Captum.
        additional_forward_args (Any, optional): Extra model arguments.
        references (Tensor or tuple, optional): Instead of ``baselines``, a
            reference distribution: ``(K, ...)`` samples X' passed to the
            method as its ``baselines`` (e.g.
            :class:`~captum_ext.attr.DistributionalIG`,
            :class:`~captum.attr.GradientShap`); the check is then the
            distributional form.
        attribute_kwargs (Mapping, optional): Extra keyword arguments for the
            method (``n_steps``, ``method``, ...).
        eps (float): Floor of the denominator of the relative gap.
        max_examples_per_batch (int, optional): Rows per model / method call.

    Returns:
        AxiomResult: ``violation`` the absolute gap ``(n,)``; ``details``:
        ``"relative"`` (gap / max(abs(F(x) - F(x')), eps)), ``"attribution_sum"``,
        ``"output_difference"``.

    Examples::

        >>> ig = IntegratedGradients(model)
        >>> res = completeness_violation(ig, model, x, target=3,
        ...                              attribute_kwargs={"n_steps": 200})
        >>> res.all_pass(1e-3)
        True
    """
    check_nonneg(eps, "eps")
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
    )
    bound = s.method.bind(s.forward_func)
    ar = _ar(s)
    a = attribute_rows(bound, s, s.xs, s.baselines or s.references, s.target, s.afa)
    if s.references is None:
        assert s.baselines is not None
        both = tuple(torch.cat([x, b]) for x, b in zip(s.xs, s.baselines))
        ex2 = torch.cat([ar, ar])
        out = forward_rows(
            s.forward_func,
            s,
            both,
            rows_target(s.target, ex2, s.n),
            repeat_forward_args(s.afa, 2, s.n),
        )
        diff = out[: s.n] - out[s.n :]
    else:
        fx = forward_rows(s.forward_func, s, s.xs, s.target, s.afa)
        diff = fx - _reference_outputs(s)
    total = a.sum(dim=1)
    gap = (total - diff).abs()
    return AxiomResult(
        "completeness (distributional)" if s.distributional else "completeness",
        gap,
        {
            "relative": gap / diff.abs().clamp_min(eps),
            "attribution_sum": total,
            "output_difference": diff,
        },
    )


def _pick_features(score: Tensor, features: Any, k: int, d: int) -> Tensor:
    """``(n, k)`` feature indices: the given ones, or the top-k by ``score``."""
    n = score.shape[0]
    if features is not None:
        idx = torch.as_tensor(features, dtype=torch.long, device=score.device)
        if idx.dim() != 1 or idx.numel() == 0:
            raise ValueError(
                "`features` must be a non-empty sequence of flat feature indices."
            )
        if int(idx.min()) < 0 or int(idx.max()) >= d:
            raise ValueError(
                f"`features` holds an index outside [0, {d}) (flat feature index "
                "over all input tensors)."
            )
        return idx.unsqueeze(0).expand(n, -1)
    order = torch.sort(score, dim=1, descending=True, stable=True).indices
    return order[:, : min(k, d)]


@log_usage(part_of_slo=True)
@preserves_model_state
def sensitivity_violation(
    method: MethodType,
    forward_func: Callable[..., Any] | None,
    inputs: Tensor | tuple[Tensor, ...],
    baselines: Any = None,
    target: TargetType = None,
    additional_forward_args: Any = None,
    *,
    references: Any = None,
    n_features: int = 4,
    features: Sequence[int] | None = None,
    attribute_kwargs: Mapping[str, Any] | None = None,
    max_examples_per_batch: int | None = None,
) -> AxiomResult:
    r"""Sensitivity(a): a feature that alone changes the output gets credit.

    Axiom 1 of the IG study (Lundstrom et al., ICML 2022,
    `arXiv:2202.11912 <https://arxiv.org/abs/2202.11912>`_, section 2.2;
    Sundararajan et al. 2017): if x and x' differ only in feature i and
    :math:`F(x) \ne F(x')`, then :math:`A_i(x, x', F) \ne 0`. Distributional
    form (section 5, axiom 1): X' differs from x only in feature i and
    :math:`\mathbb{E} F(X') \ne F(x)`, then :math:`E_i \ne 0`.

    The pairs are built from the inputs: for each example, its ``n_features``
    features farthest from the baseline (or the given ``features``) each give
    one baseline :math:`x'^{(i)}` equal to x except :math:`x'_i = b_i` (the
    distributional form: equal to x except feature i, drawn from the
    references). The violation of a pair is the output change the feature's
    attribution misses, :math:`\max(0, |F(x) - F(x'^{(i)})| - |A_i|)`: the
    full change when :math:`A_i = 0`, and 0 for every method that satisfies
    completeness; per example the largest over its pairs. All pairs of all
    examples are attributed in one stacked call.

    The classic violation: Saliency and Gradient * Input on
    :math:`f(x) = 1 - \mathrm{ReLU}(1 - x)` at x = 2, baseline 0 (the
    gradient is 0 on the plateau, while f changes by 1).

    For the distributional form, methods take one reference set for the whole
    batch, so each pair is evaluated on the model
    :math:`F_{x,i}(u) = F(x \text{ with } x_i := u_i)`, which equals F on x, on
    every reference point of the pair's distribution and along every path
    between them, with the reference set itself; for DistributionalIG this
    gives exactly :math:`E_i(x, X'^{(i)}, F)`.

    Args:
        method (Attribution, type, PerModel or Callable): The method checked
            (see :func:`completeness_violation`).
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
        n_features (int): Features tested per example (the farthest from the
            baseline, or from the references on average). Default: 4.
        features (Sequence[int], optional): Flat feature indices (over all
            input tensors, row-major) to test for every example instead.

    Returns:
        AxiomResult: ``violation`` ``(n,)``; ``details``: ``"features"``
        ``(n, k)``, ``"output_difference"`` ``(n, k)``, ``"attribution"``
        ``(n, k)`` (the tested feature's attribution), ``"pair_violation"``
        ``(n, k)``.

    Examples::

        >>> model = lambda x: 1 - torch.relu(1 - x)
        >>> sensitivity_violation(Saliency(model), model,
        ...                       torch.tensor([[2.0]])).violation
        tensor([1.], dtype=torch.float64)
    """
    check_positive_int(n_features, "n_features")
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
    )
    x = s.flat_x()
    d = s.layout.dim
    if s.references is None:
        assert s.baselines is not None
        b = s.layout.flatten(s.baselines)
        score = (x - b).abs()
    else:
        refs = s.layout.flatten(s.references)
        score = (x.unsqueeze(1) - refs.unsqueeze(0)).abs().mean(dim=1)
    feat = _pick_features(score, features, n_features, d)
    k = feat.shape[1]
    ex = _ar(s).repeat_interleave(k)
    fi = feat.reshape(-1)
    rows = torch.arange(ex.numel(), device=s.device)
    tgt = rows_target(s.target, ex, s.n)
    fx = forward_rows(s.forward_func, s, s.xs, s.target, s.afa)
    if s.references is None:
        xb = x[ex].clone()
        xb[rows, fi] = b[ex, fi]
        base_rows = s.layout.unflatten(xb)
        fb = forward_rows(s.forward_func, s, base_rows, tgt, rows_afa(s.afa, ex, s.n))
        bound = s.method.bind(s.forward_func)
        a = attribute_rows(
            bound, s, tile_rows(s.xs, ex), base_rows, tgt, rows_afa(s.afa, ex, s.n)
        )
    else:
        kr = refs.shape[0]
        # E F(X') with X' = x except feature i drawn from the references
        ex2 = ex.repeat_interleave(kr)
        r2 = torch.arange(kr, device=s.device).repeat(ex.numel())
        f2 = fi.repeat_interleave(kr)
        xr = x[ex2].clone()
        xr[torch.arange(ex2.numel(), device=s.device), f2] = refs[r2, f2]
        fb = (
            forward_rows(
                s.forward_func,
                s,
                s.layout.unflatten(xr),
                rows_target(s.target, ex2, s.n),
                rows_afa(s.afa, ex2, s.n),
            )
            .view(-1, kr)
            .mean(dim=1)
        )
        wrapper = OneFeatureWrapper(s.forward_func, s.layout, len(s.xs), _n_afa(s.afa))
        bound = s.method.bind(wrapper)
        a = attribute_rows(
            bound,
            s,
            tile_rows(s.xs, ex),
            s.references,
            tgt,
            rows_afa(s.afa, ex, s.n, (x[ex], fi)),
        )
    diff = (fx[ex] - fb).view(s.n, k)
    attr = a[rows, fi].view(s.n, k)
    pair = (diff.abs() - attr.abs()).clamp_min(0)
    return AxiomResult(
        "sensitivity(a) (distributional)" if s.distributional else "sensitivity(a)",
        pair.max(dim=1).values,
        {
            "features": feat,
            "output_difference": diff,
            "attribution": attr,
            "pair_violation": pair,
        },
    )


def _feature_mask(features: Any, s: Setup, generator: torch.Generator | None) -> Tensor:
    d = s.layout.dim
    if features is None:
        perm = torch.randperm(d, generator=generator)
        mask = torch.zeros(d, dtype=torch.bool)
        mask[perm[: max(1, d // 2)]] = True
        return mask.to(s.device)
    if isinstance(features, (Tensor, tuple)) and (
        (isinstance(features, Tensor) and features.dtype == torch.bool)
        or (
            isinstance(features, tuple) and all(isinstance(f, Tensor) for f in features)
        )
    ):
        parts = features if isinstance(features, tuple) else (features,)
        if len(parts) != len(s.xs):
            raise ValueError(
                "`features` given as boolean masks needs one mask per input tensor."
            )
        flat = []
        for m, x in zip(parts, s.xs):
            if m.dtype != torch.bool or tuple(m.shape) != tuple(x.shape[1:]):
                raise ValueError(
                    "`features` masks must be bool tensors shaped like one example "
                    f"({tuple(x.shape[1:])}); got {m.dtype} {tuple(m.shape)}."
                )
            flat.append(m.reshape(-1))
        return torch.cat(flat).to(s.device)
    idx = torch.as_tensor(features, dtype=torch.long)
    if idx.dim() != 1 or idx.numel() == 0 or int(idx.min()) < 0 or int(idx.max()) >= d:
        raise ValueError(
            f"`features` must be flat feature indices in [0, {d}) or boolean masks."
        )
    mask = torch.zeros(d, dtype=torch.bool)
    mask[idx] = True
    return mask.to(s.device)


@log_usage(part_of_slo=True)
@preserves_model_state
def dummy_violation(
    method: MethodType,
    forward_func: Callable[..., Any] | None,
    inputs: Tensor | tuple[Tensor, ...],
    baselines: Any = None,
    target: TargetType = None,
    additional_forward_args: Any = None,
    *,
    references: Any = None,
    features: Any = None,
    generator: torch.Generator | None = None,
    attribute_kwargs: Mapping[str, Any] | None = None,
    max_examples_per_batch: int | None = None,
) -> AxiomResult:
    r"""Sensitivity(b) / dummy: features the model ignores get no attribution.

    Axiom 5 of the IG study (Lundstrom et al., ICML 2022,
    `arXiv:2202.11912 <https://arxiv.org/abs/2202.11912>`_, section 2.2):
    if :math:`\partial_i F \equiv 0` then :math:`A_i = 0` (it carries over to
    distributional attributions unchanged, section 5). The model is wrapped
    as :math:`G(y) = F(y_{\bar S}, x_S)`: the features in S are replaced by
    the example's own values before F sees them, so they provably do not
    enter G, and :math:`G(x) = F(x)`. The violation is
    :math:`\sum_{i \in S} |A_i(x, x', G)|`.

    Args:
        method (Attribution, type, PerModel or Callable): The method checked
            (see :func:`completeness_violation`).
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
        features (optional): The dummy features S: flat feature indices, or a
            boolean mask shaped like one example (a tuple of masks for tuple
            inputs). Default: a random half of the features (``generator``).
        generator (torch.Generator, optional): Draws the default S.

    Returns:
        AxiomResult: ``violation`` ``(n,)``; ``details``: ``"relative"``
        (share of the total absolute attribution that lands on S),
        ``"mask"`` ``(D,)`` the flat dummy mask.

    Examples::

        >>> dummy_violation(IntegratedGradients(model), model, x, target=0,
        ...                 features=[0, 5]).violation
    """
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
    mask = _feature_mask(features, s, generator)
    wrapper = DummyWrapper(s.forward_func, s.layout, len(s.xs), _n_afa(s.afa), mask)
    bound = s.method.bind(wrapper)
    ar = _ar(s)
    a = attribute_rows(
        bound,
        s,
        s.xs,
        s.baselines or s.references,
        s.target,
        rows_afa(s.afa, ar, s.n, (s.flat_x(),)),
    )
    on_s = a[:, mask].abs().sum(dim=1)
    return AxiomResult(
        "dummy",
        on_s,
        {"relative": safe_ratio(on_s, l1(a)), "mask": mask},
    )


@log_usage(part_of_slo=True)
@preserves_model_state
def linearity_violation(
    method: MethodType,
    forward_func: Callable[..., Any] | None,
    inputs: Tensor | tuple[Tensor, ...],
    baselines: Any = None,
    target: TargetType = None,
    additional_forward_args: Any = None,
    *,
    other_forward_func: Callable[..., Any] | None = None,
    other_target: TargetType | str = None,
    coefficients: tuple[float, float] = (1.5, -0.5),
    references: Any = None,
    attribute_kwargs: Mapping[str, Any] | None = None,
    max_examples_per_batch: int | None = None,
) -> AxiomResult:
    r"""Linearity: :math:`A(aF + bG) = a A(F) + b A(G)`.

    Axiom 4 of the IG study (Lundstrom et al., ICML 2022,
    `arXiv:2202.11912 <https://arxiv.org/abs/2202.11912>`_, section 2.2).
    F is ``forward_func`` at ``target``; G is ``other_forward_func`` (default:
    the same model) at ``other_target`` (default: ``target``), so two heads of
    one model are compared by giving only ``other_target``. The three
    attributions are computed in one call of the method on the batch stacked
    three times, through a wrapper whose output for each row is
    :math:`c_F F_t + c_G G_s` with :math:`(c_F, c_G)` = (a, b), (1, 0) or
    (0, 1) (each model runs once per call). The violation is
    :math:`\|A(aF+bG) - aA(F) - bA(G)\|_1`.

    Args:
        method (Attribution, type, PerModel or Callable): The method checked
            (see :func:`completeness_violation`).
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
        other_forward_func (Callable, optional): The model G (taking the same
            inputs and forward arguments). Default: ``forward_func``.
        other_target (TargetType or "next", optional): G's output explained.
            Default: ``target``. ``"next"``: the output after each example's
            target (flat index + 1, cyclic), a second head of one model.
        coefficients (tuple[float, float]): (a, b). Default: (1.5, -0.5).

    Returns:
        AxiomResult: ``violation`` ``(n,)``; ``details``: ``"relative"``
        (violation / (abs(a) l1(A(F)) + abs(b) l1(A(G)))).

    Examples::

        >>> linearity_violation(IntegratedGradients(model), model, x,
        ...                     target=0, other_target=1).violation
    """
    if (
        not isinstance(coefficients, tuple)
        or len(coefficients) != 2
        or not all(
            isinstance(c, (int, float)) and not isinstance(c, bool)
            for c in coefficients
        )
    ):
        raise ValueError(
            "`coefficients` must be a tuple of two numbers (a, b), got "
            f"{coefficients!r}."
        )
    if other_forward_func is not None and not callable(other_forward_func):
        raise TypeError("`other_forward_func` must be callable.")
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
    )
    other = other_forward_func if other_forward_func is not None else s.forward_func
    t_f = flat_targets(s, s.forward_func, s.target)
    if isinstance(other_target, str):
        if other_target != "next":
            raise ValueError(
                "`other_target` given as a string must be 'next', got "
                f"{other_target!r}."
            )
        width = flat_width(s, other)
        t_g = (t_f + 1) % width
    else:
        g_target = target if other_target is None else other_target
        validate_target(g_target, s.n)
        t_g = flat_targets(s, other, g_target)
    a_, b_ = (float(c) for c in coefficients)
    n = s.n
    ex = _ar(s).repeat(3)
    coef = torch.tensor([[a_, b_], [1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    coef = coef.to(s.device).repeat_interleave(n, dim=0)
    wrapper = CombinationWrapper(
        s.forward_func, other, s.layout, len(s.xs), _n_afa(s.afa)
    )
    bound = s.method.bind(wrapper)
    base = (
        s.references
        if s.references is not None
        else (tile_rows(s.baselines, ex) if s.baselines is not None else None)
    )
    a = attribute_rows(
        bound,
        s,
        tile_rows(s.xs, ex),
        base,
        0,
        rows_afa(s.afa, ex, n, (coef, t_f[ex], t_g[ex])),
    )
    comb, af, ag = a[:n], a[n : 2 * n], a[2 * n :]
    err = l1(comb - a_ * af - b_ * ag)
    return AxiomResult(
        "linearity (distributional)" if s.distributional else "linearity",
        err,
        {"relative": safe_ratio(err, abs(a_) * l1(af) + abs(b_) * l1(ag))},
    )


def _pairs(
    pairs: Any, n_pairs: int, d: int, generator: torch.Generator | None
) -> Tensor:
    if pairs is None:
        check_positive_int(n_pairs, "n_pairs")
        if 2 * n_pairs > d:
            raise ValueError(
                f"`n_pairs` = {n_pairs} needs {2 * n_pairs} features; the inputs "
                f"have {d}."
            )
        perm = torch.randperm(d, generator=generator)[: 2 * n_pairs]
        return perm.view(n_pairs, 2)
    p = torch.as_tensor(pairs, dtype=torch.long)
    if p.dim() != 2 or p.shape[1] != 2 or p.shape[0] == 0:
        raise ValueError("`pairs` must be a non-empty sequence of (i, j) index pairs.")
    if int(p.min()) < 0 or int(p.max()) >= d:
        raise ValueError(f"`pairs` holds a feature index outside [0, {d}).")
    if p.reshape(-1).unique().numel() != p.numel():
        raise ValueError("`pairs` must be disjoint pairs of distinct features.")
    return p


@log_usage(part_of_slo=True)
@preserves_model_state
def symmetry_violation(
    method: MethodType,
    forward_func: Callable[..., Any] | None,
    inputs: Tensor | tuple[Tensor, ...],
    baselines: Any = None,
    target: TargetType = None,
    additional_forward_args: Any = None,
    *,
    references: Any = None,
    pairs: Sequence[tuple[int, int]] | None = None,
    n_pairs: int = 2,
    generator: torch.Generator | None = None,
    attribute_kwargs: Mapping[str, Any] | None = None,
    max_examples_per_batch: int | None = None,
) -> AxiomResult:
    r"""Symmetry preserving: symmetric features with equal values get equal credit.

    Axiom 6 of the IG study (Lundstrom et al., ICML 2022,
    `arXiv:2202.11912 <https://arxiv.org/abs/2202.11912>`_, section 2.2): if
    F is symmetric in (i, j), :math:`x_i = x_j` and :math:`x'_i = x'_j`, then
    :math:`A_i = A_j`; distributional form (section 5, axiom 3):
    :math:`X'_i, X'_j` exchangeable and :math:`x_i = x_j`, then
    :math:`E_i = E_j`.

    The model is made symmetric in every pair by a wrapper that feeds each
    pair to F sorted, as :math:`(\max(y_i, y_j), \min(y_i, y_j))` (one call of
    F, so hook-based methods work); each pair of every example is set to its
    mean value in the input and in the baseline; for the distributional form
    the references are made exchangeable in every pair by adding their copies
    with the pairs swapped (:math:`2^P K` references for P pairs). The
    violation is :math:`\max_{(i,j)} |A_i - A_j|`.

    Args:
        method (Attribution, type, PerModel or Callable): The method checked
            (see :func:`completeness_violation`).
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
        pairs (Sequence[tuple[int, int]], optional): Disjoint pairs of flat
            feature indices. Default: ``n_pairs`` random pairs.
        n_pairs (int): Number of random pairs when ``pairs`` is None.
        generator (torch.Generator, optional): Draws the random pairs.

    Returns:
        AxiomResult: ``violation`` ``(n,)``; ``details``: ``"relative"``
        (max over pairs of abs(A_i - A_j) / (abs(A_i) + abs(A_j))), ``"pairs"``.

    Examples::

        >>> symmetry_violation(IntegratedGradients(model), model, x, target=0,
        ...                    pairs=[(0, 3)]).violation
    """
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
    p = _pairs(pairs, n_pairs, s.layout.dim, generator).to(s.device)
    i, j = p[:, 0], p[:, 1]

    def equalise(flat: Tensor) -> Tensor:
        out = flat.clone()
        mean = (flat[:, i] + flat[:, j]) / 2
        out[:, i] = mean
        out[:, j] = mean
        return out

    xs = s.layout.unflatten(equalise(s.flat_x()))
    if s.references is None:
        assert s.baselines is not None
        base: Any = s.layout.unflatten(equalise(s.layout.flatten(s.baselines)))
    else:
        refs = s.layout.flatten(s.references)
        for a_i, a_j in p.tolist():
            swapped = refs.clone()
            swapped[:, [a_i, a_j]] = refs[:, [a_j, a_i]]
            refs = torch.cat([refs, swapped])
        base = s.layout.unflatten(refs)
        s.references = base
    wrapper = SymmetrisedWrapper(s.forward_func, s.layout, len(s.xs), _n_afa(s.afa), p)
    bound = s.method.bind(wrapper)
    a = attribute_rows(bound, s, xs, base, s.target, s.afa)
    diff = (a[:, i] - a[:, j]).abs()
    rel = safe_ratio(diff, a[:, i].abs() + a[:, j].abs())
    return AxiomResult(
        "symmetry (distributional)" if s.distributional else "symmetry",
        diff.max(dim=1).values,
        {"relative": rel.max(dim=1).values, "pairs": p},
    )


@log_usage(part_of_slo=True)
@preserves_model_state
def implementation_invariance_violation(
    method: MethodType,
    forward_func: Callable[..., Any] | None,
    inputs: Tensor | tuple[Tensor, ...],
    baselines: Any = None,
    target: TargetType = None,
    additional_forward_args: Any = None,
    *,
    equivalent: Any = "permute_hidden",
    other_method: MethodType = None,
    references: Any = None,
    atol: float = 1e-5,
    generator: torch.Generator | None = None,
    attribute_kwargs: Mapping[str, Any] | None = None,
    max_examples_per_batch: int | None = None,
) -> AxiomResult:
    r"""Implementation invariance: equal functions, equal attributions.

    Axiom 2 of the IG study (Lundstrom et al., ICML 2022,
    `arXiv:2202.11912 <https://arxiv.org/abs/2202.11912>`_, section 2.2;
    Sundararajan et al. 2017, section 2): A depends only on the function a
    network computes, not on its implementation. F is compared with a
    functionally equal network G: given by the user (``equivalent`` a model),
    or built from F by :func:`equivalent_model` (``"permute_hidden"``,
    ``"sign_split"``, ``"fold_batchnorm"``). G's outputs on the inputs are
    checked to equal F's (``atol``, relative to the output scale) before any
    attribution. The violation is :math:`\|A(F) - A(G)\|_1`.

    PatternAttribution is a known violator (Schwarzenberg & Castle,
    *Pattern-Guided Integrated Gradients*, 2021,
    `arXiv:2007.10685 <https://arxiv.org/abs/2007.10685>`_): two equal
    networks give [1.634, 6.366] and [2.092, 5.908] at x = (3, 3).

    Args:
        method (Attribution, type, PerModel or Callable): The method checked
            (see :func:`completeness_violation`).
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
        equivalent (str, nn.Module or Callable): The network G, or the name
            of an equivalence for :func:`equivalent_model`.
        other_method (optional): The method explaining G (e.g. a
            PatternAttribution with patterns fitted to G). Default: ``method``
            rebound to G (or built on G for a class / :class:`PerModel`).
        atol (float): Tolerance of the output-equality check, relative to
            the largest absolute output on the inputs.
        generator (torch.Generator, optional): For ``"permute_hidden"``.

    Returns:
        AxiomResult: ``violation`` ``(n,)``; ``details``: ``"relative"``
        (violation / l1(A(F))), ``"attributions"`` and
        ``"other_attributions"`` ``(n, D)``.

    Raises:
        ValueError: If G does not compute the same outputs as F on ``inputs``.

    Examples::

        >>> implementation_invariance_violation(
        ...     GuidedBackprop(model), model, x, target=0, equivalent="sign_split")
    """
    check_nonneg(atol, "atol")
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
    if isinstance(equivalent, str):
        other = equivalent_model(
            s.forward_func, equivalent, generator, n_inputs=len(s.xs)
        )
    elif callable(equivalent):
        other = equivalent
    else:
        raise TypeError(
            "`equivalent` must be a model or one of 'permute_hidden', 'sign_split', "
            f"'fold_batchnorm'; got {type(equivalent).__name__}."
        )
    f_out = forward_rows(s.forward_func, s, s.xs, s.target, s.afa)
    g_out = forward_rows(other, s, s.xs, s.target, s.afa)
    scale = float(f_out.abs().max()) if f_out.numel() else 0.0
    gap = float((f_out - g_out).abs().max()) if f_out.numel() else 0.0
    if not gap <= atol * max(scale, 1.0):
        raise ValueError(
            f"`equivalent` is not functionally equal to `forward_func` on `inputs`: "
            f"outputs differ by up to {gap:.3g} (atol {atol} x scale "
            f"{max(scale, 1.0):.3g})."
        )
    om = (
        s.method
        if other_method is None
        else Method(other_method, s.method.kwargs, "other_method")
    )
    base = s.baselines or s.references
    a_f = attribute_rows(s.method.bind(s.forward_func), s, s.xs, base, s.target, s.afa)
    a_g = attribute_rows(om.bind(other), s, s.xs, base, s.target, s.afa)
    err = l1(a_f - a_g)
    return AxiomResult(
        "implementation invariance",
        err,
        {
            "relative": safe_ratio(err, l1(a_f)),
            "attributions": a_f,
            "other_attributions": a_g,
        },
    )


@log_usage(part_of_slo=True)
@preserves_model_state
def ndp_violation(
    method: MethodType,
    forward_func: Callable[..., Any] | None,
    inputs: Tensor | tuple[Tensor, ...],
    baselines: Any = None,
    target: TargetType = None,
    additional_forward_args: Any = None,
    *,
    references: Any = None,
    shift: str | float | None = "auto",
    margin: float = 2.0,
    n_check: int = 16,
    attribute_kwargs: Mapping[str, Any] | None = None,
    max_examples_per_batch: int | None = None,
) -> AxiomResult:
    r"""Non-decreasing positivity (NDP): no negative attributions where F grows.

    Definition 6 of the IG study (Lundstrom et al., ICML 2022,
    `arXiv:2202.11912 <https://arxiv.org/abs/2202.11912>`_, section 4): if
    :math:`F(\gamma(t))` is non-decreasing along every monotone path from x'
    to x, then :math:`A(x, x', F) \ge 0`; distributional form (section 5,
    axiom 4): F non-decreasing from every point of the support of X' to x,
    then :math:`E(x, X', F) \ge 0`. Monotone path methods (IG) satisfy it.

    With ``shift="auto"`` (default) the model is made non-decreasing towards
    x, as in the proof of theorem 2 (add a linear term): with one baseline,
    :math:`G(y) = F(y) + c\,\operatorname{sign}(x - x')^\top y`; with
    references, :math:`G(y) = F(y) - c\,\|y - x\|_1`. Both grow along every
    monotone path to x (from x', from every reference) wherever
    :math:`c \ge \max_i |\partial_i F|`; c is ``margin`` times the largest
    partial derivative found at ``n_check`` points of the straight path(s)
    from the baseline (every reference) to x. A number sets c; None uses F
    itself (when it is non-decreasing by construction). Either way the premise
    is verified on those points (``details["premise"]``). The violation is the
    negative attribution mass :math:`\sum_i \max(0, -A_i)`.

    Args:
        method (Attribution, type, PerModel or Callable): The method checked
            (see :func:`completeness_violation`).
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
        shift ("auto", float or None): The constant c (see above).
        margin (float): Safety factor of the automatic c (>= 1).
        n_check (int): Points per straight path for c and the premise check.

    Returns:
        AxiomResult: ``violation`` ``(n,)``; ``details``: ``"relative"``
        (negative mass / total absolute attribution), ``"premise"`` (bool,
        the model grew along the checked path points), ``"shift"`` (c).

    Examples::

        >>> ndp_violation(IntegratedGradients(model), model, x, target=0).violation
    """
    check_positive_int(n_check, "n_check")
    if not (
        shift is None
        or shift == "auto"
        or (
            isinstance(shift, (int, float))
            and not isinstance(shift, bool)
            and shift >= 0
        )
    ):
        raise ValueError(
            f"`shift` must be 'auto', None or a number >= 0, got {shift!r}."
        )
    if isinstance(margin, bool) or not isinstance(margin, (int, float)) or margin < 1:
        raise ValueError(f"`margin` must be a number >= 1, got {margin!r}.")
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
    )
    x = s.flat_x()
    starts = (
        s.layout.flatten(s.references).unsqueeze(0).expand(s.n, -1, -1)
        if s.references is not None
        else s.layout.flatten(s.baselines).unsqueeze(1)  # type: ignore[arg-type]
    )
    k = starts.shape[1]
    t = torch.linspace(0, 1, n_check, dtype=x.dtype, device=s.device)
    # points (n, k, n_check, D) on the straight paths start -> x
    pts = starts.unsqueeze(2) + t.view(1, 1, -1, 1) * (
        x.view(s.n, 1, 1, -1) - starts.unsqueeze(2)
    )
    pts = pts.reshape(-1, x.shape[1])
    ex = _ar(s).repeat_interleave(k * n_check)
    tgt = rows_target(s.target, ex, s.n)
    pafa = rows_afa(s.afa, ex, s.n)
    if shift == "auto":
        grads = []
        for sl in [
            slice(a, min(a + (s.chunk or pts.shape[0]), pts.shape[0]))
            for a in range(0, pts.shape[0], s.chunk or pts.shape[0])
        ]:
            idx = torch.arange(sl.start, sl.stop, device=s.device)
            from captum_ext._utils.batching import slice_forward_args, target_for_rows

            g = target_gradients(
                s.forward_func,
                s.layout.unflatten(pts[sl]),
                target_for_rows(tgt, idx, pts.shape[0]),
                slice_forward_args(pafa, sl, pts.shape[0]),
            )
            grads.append(s.layout.flatten(g).abs().amax(dim=1))
        c = float(margin) * torch.cat(grads).view(s.n, -1).amax(dim=1).double()
    elif shift is None:
        c = torch.zeros(s.n, dtype=torch.float64, device=s.device)
    else:
        c = torch.full((s.n,), float(shift), dtype=torch.float64, device=s.device)
    if shift is None:
        model: Any = s.forward_func
        afa = s.afa
        vals = forward_rows(model, s, s.layout.unflatten(pts), tgt, pafa)
    elif s.references is None:
        # one baseline: the linear shift c sign(x - x') . y
        model = LinearShiftWrapper(s.forward_func, s.layout, len(s.xs), _n_afa(s.afa))
        assert s.baselines is not None
        w = c.to(x.dtype).unsqueeze(1) * torch.sign(x - s.layout.flatten(s.baselines))
        afa = rows_afa(s.afa, _ar(s), s.n, (w,))
        vals = forward_rows(
            model, s, s.layout.unflatten(pts), tgt, rows_afa(s.afa, ex, s.n, (w[ex],))
        )
    else:
        # many references: -c ||y - x||_1 grows towards x from every one of them
        model = MonotoneWrapper(s.forward_func, s.layout, len(s.xs), _n_afa(s.afa))
        afa = rows_afa(s.afa, _ar(s), s.n, (x, c.to(x.dtype)))
        vals = forward_rows(
            model,
            s,
            s.layout.unflatten(pts),
            tgt,
            rows_afa(s.afa, ex, s.n, (x[ex], c.to(x.dtype)[ex])),
        )
    vals = vals.view(s.n, k, n_check)
    steps = vals[..., 1:] - vals[..., :-1]
    tol = 1e-6 * vals.abs().amax(dim=(1, 2)).clamp_min(1.0)
    premise = (steps >= -tol.view(-1, 1, 1)).all(dim=2).all(dim=1)
    bound = s.method.bind(model)
    a = attribute_rows(bound, s, s.xs, s.baselines or s.references, s.target, afa)
    neg = (-a).clamp_min(0).sum(dim=1)
    return AxiomResult(
        "NDP (distributional)" if s.distributional else "NDP",
        neg,
        {"relative": safe_ratio(neg, l1(a)), "premise": premise, "shift": c},
    )
