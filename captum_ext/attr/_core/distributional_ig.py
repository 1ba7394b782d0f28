"""Integrated Gradients with a distribution of baselines (expected gradients)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal, cast, overload

import torch
from captum._utils.common import _format_additional_forward_args, _format_output
from captum._utils.typing import TargetType, TensorOrTupleOfTensorsGeneric
from captum.attr import GradientAttribution
from captum.log import log_usage
from torch import Tensor

from captum_ext._utils.batching import forward_args_for_paths, target_for_rows
from captum_ext._utils.gradient import check_grad_mode, forward_select, target_gradients
from captum_ext._utils.model_state import preserves_model_state
from captum_ext._utils.validation import (
    check_generator,
    check_positive_int,
    format_inputs,
    validate_target,
)
from captum_ext.attr._utils.integration import (
    check_quadrature,
    integrate_gradients,
    slice_paths,
    slice_paths_args,
)

#: A baseline distribution: K reference samples (a tensor, a number, or a tuple
#: of them for tuple inputs) or a sampler ``(n, generator) -> such a tensor``.
BaselineDistribution = (
    Tensor
    | int
    | float
    | tuple[Tensor | int | float, ...]
    | Callable[[int, torch.Generator | None], Any]
)


class _Pairs:
    """The (example, reference, weight) pairs whose IGs are averaged.

    ``refs`` holds one tensor per input, ``(R, *input.shape[1:])``; pair ``p``
    pairs example ``ex[p]`` with reference row ``ref[p]`` and has weight
    ``weight[p]`` (the weights of one example sum to one).
    """

    def __init__(
        self, refs: tuple[Tensor, ...], ex: Tensor, ref: Tensor, weight: Tensor
    ) -> None:
        self.refs = refs
        self.ex = ex
        self.ref = ref
        self.weight = weight

    def __len__(self) -> int:
        return int(self.ex.numel())

    def is_identity(self, bsz: int) -> bool:
        """Whether pair ``p`` is example ``p`` (one path per example, in order)."""
        return len(self) == bsz and bool(
            (self.ex == torch.arange(bsz, device=self.ex.device)).all()
        )


def _reference_tensors(
    baselines: Any, inputs: tuple[Tensor, ...], expected_k: int | None = None
) -> tuple[Tensor, ...]:
    """Check a reference set and return it as one ``(K, ...)`` tensor per input."""
    what = "the tensor returned by the `baselines` callable" if expected_k else None
    label = what or "`baselines`"
    if isinstance(baselines, tuple):
        entries = baselines
        if len(entries) != len(inputs):
            raise ValueError(
                f"{label} has {len(entries)} entries but `inputs` has "
                f"{len(inputs)} tensors; give one reference tensor (or number) "
                "per input tensor."
            )
    else:
        if len(inputs) > 1:
            raise ValueError(
                f"{label} must be a tuple with one entry per input tensor "
                f"({len(inputs)}) when `inputs` is a tuple."
            )
        entries = (baselines,)
    ks = set()
    for i, (b, x) in enumerate(zip(entries, inputs)):
        name = f"{label}[{i}]" if len(inputs) > 1 else label
        if isinstance(b, bool) or not isinstance(b, (Tensor, int, float)):
            raise TypeError(
                f"{name} must be a torch.Tensor of reference samples or a number, "
                f"got {type(b).__name__}."
            )
        if isinstance(b, Tensor):
            if b.dim() == x.dim() + 1 and b.shape[0] == 1:
                # (1, K, ...): the form that passes through NoiseTunnel
                b = b[0]
                entries = tuple(b if j == i else e for j, e in enumerate(entries))
            if b.dim() != x.dim() or tuple(b.shape[1:]) != tuple(x.shape[1:]):
                raise ValueError(
                    f"{name} must have shape (K, *inputs.shape[1:]) = "
                    f"(K, {', '.join(str(s) for s in x.shape[1:])}) (or "
                    "(1, K, *inputs.shape[1:]) inside NoiseTunnel): dimension "
                    f"0 indexes the K reference samples; got {tuple(b.shape)}."
                )
            if b.shape[0] == 0:
                raise ValueError(f"{name} holds no reference samples (K = 0).")
            if b.is_complex() or b.dtype == torch.bool:
                raise TypeError(f"{name} must be a real tensor, got {b.dtype}.")
            ks.add(int(b.shape[0]))
    if len(ks) > 1:
        raise ValueError(
            f"Every tensor in {label} must hold the same number of reference "
            f"samples K (dimension 0); got {sorted(ks)}."
        )
    k = ks.pop() if ks else 1
    if expected_k is not None and k != expected_k:
        raise ValueError(
            f"The `baselines` callable was asked for {expected_k} samples and "
            f"returned {k}."
        )
    out = []
    for b, x in zip(entries, inputs):
        if isinstance(b, Tensor):
            out.append(b.detach().to(dtype=x.dtype))
        else:
            out.append(
                x.new_full((1, *tuple(x.shape[1:])), float(b)).expand(
                    (k, *tuple(x.shape[1:]))
                )
            )
    return tuple(out)


def _make_pairs(
    baselines: Any,
    inputs: tuple[Tensor, ...],
    n_samples: int | None,
    generator: torch.Generator | None,
) -> _Pairs:
    """Validate ``baselines`` / ``n_samples`` and build the pairs (no model work)."""
    bsz = inputs[0].shape[0]
    device = inputs[0].device
    dtype = inputs[0].dtype if inputs[0].is_floating_point() else torch.float32
    if callable(baselines) and not isinstance(baselines, Tensor):
        if n_samples is None:
            raise ValueError(
                "`n_samples` is required when `baselines` is a callable sampler: "
                "it sets how many references are drawn per input."
            )
        n = bsz * n_samples
        refs = _reference_tensors(baselines(n, generator), inputs, expected_k=n)
        ex = torch.arange(bsz, device=device).repeat_interleave(n_samples)
        ref = torch.arange(n, device=device)
        weight = torch.full((n,), 1.0 / n_samples, dtype=dtype, device=device)
        return _Pairs(refs, ex, ref, weight)
    refs = _reference_tensors(baselines, inputs)
    k = refs[0].shape[0]
    if n_samples is None:
        ex = torch.arange(bsz, device=device).repeat_interleave(k)
        ref = torch.arange(k, device=device).repeat(bsz)
        weight = torch.full((bsz * k,), 1.0 / k, dtype=dtype, device=device)
        return _Pairs(refs, ex, ref, weight)
    draw_device = generator.device if generator is not None else torch.device("cpu")
    drawn = torch.randint(
        k, (bsz, n_samples), generator=generator, device=draw_device
    ).to(device)
    # Identical draws give identical IGs: evaluate each drawn (example,
    # reference) pair once, weighted by how often it was drawn.
    counts = torch.zeros(bsz, k, dtype=dtype, device=device)
    counts.scatter_add_(1, drawn, torch.ones_like(drawn, dtype=dtype))
    ex, ref = counts.nonzero(as_tuple=True)
    return _Pairs(refs, ex, ref, counts[ex, ref] / n_samples)


class DistributionalIG(GradientAttribution):
    r"""Integrated Gradients averaged over a distribution of baselines.

    Lundstrom, Huang & Razaviyayn, "A Rigorous Study of Integrated Gradients
    Method and Extensions to Internal Neuron Attributions" (ICML 2022),
    section 5. The distributional IG of input ``x`` for a baseline random
    variable :math:`X' \sim D` is the expected IG,

    .. math::

        \mathrm{EG}_i(x) = \mathbb{E}_{x' \sim D}\left[(x_i - x'_i)
            \int_0^1 \frac{\partial F}{\partial x_i}
            \big(x' + \alpha (x - x')\big)\, d\alpha\right],

    which satisfies distributional completeness,
    :math:`\sum_i \mathrm{EG}_i(x) = F(x) - \mathbb{E}_{D} F(X')`, as well as
    linearity, implementation invariance and the distributional
    symmetry-preserving axiom. Each IG is computed with Captum's quadrature
    (``method``, ``n_steps``) rather than one random ``alpha`` per draw (as
    Captum's :class:`~captum.attr.GradientShap` does), and every (example,
    reference, step) point is evaluated in batched forward / backward passes.

    With ``multiply_by_inputs=False`` the method returns the average gradient
    :math:`\mathbb{E}_{x'} \int_0^1 \nabla F(x' + \alpha(x - x'))\,d\alpha`
    (a "global" attribution in Captum's terms).

    Args:
        forward_func (Callable): The forward function of the model or any
            modification of it.
        multiply_by_inputs (bool, optional): Whether to multiply the averaged
            gradients by ``x - x'`` (distributional IG) or not (average
            gradient). Default: True.

    Examples::

        >>> net = ImageClassifier()
        >>> references = train_images[:64]            # K = 64 reference images
        >>> dig = DistributionalIG(net)
        >>> attr, delta = dig.attribute(
        ...     images, references, target=labels, return_convergence_delta=True
        ... )
    """

    def __init__(
        self, forward_func: Callable[..., Tensor], multiply_by_inputs: bool = True
    ) -> None:
        GradientAttribution.__init__(self, forward_func)
        self.gradient_func = target_gradients
        self._multiply_by_inputs = multiply_by_inputs

    @overload
    def attribute(
        self,
        inputs: TensorOrTupleOfTensorsGeneric,
        baselines: BaselineDistribution,
        target: TargetType = None,
        additional_forward_args: Any = None,
        n_samples: int | None = None,
        n_steps: int = 50,
        method: str = "gausslegendre",
        internal_batch_size: int | None = None,
        return_convergence_delta: Literal[False] = False,
        generator: torch.Generator | None = None,
        show_progress: bool = False,
    ) -> TensorOrTupleOfTensorsGeneric: ...

    @overload
    def attribute(
        self,
        inputs: TensorOrTupleOfTensorsGeneric,
        baselines: BaselineDistribution,
        target: TargetType = None,
        additional_forward_args: Any = None,
        n_samples: int | None = None,
        n_steps: int = 50,
        method: str = "gausslegendre",
        internal_batch_size: int | None = None,
        *,
        return_convergence_delta: Literal[True],
        generator: torch.Generator | None = None,
        show_progress: bool = False,
    ) -> tuple[TensorOrTupleOfTensorsGeneric, Tensor]: ...

    @log_usage(part_of_slo=True)
    @preserves_model_state
    def attribute(
        self,
        inputs: TensorOrTupleOfTensorsGeneric,
        baselines: BaselineDistribution,
        target: TargetType = None,
        additional_forward_args: Any = None,
        n_samples: int | None = None,
        n_steps: int = 50,
        method: str = "gausslegendre",
        internal_batch_size: int | None = None,
        return_convergence_delta: bool = False,
        generator: torch.Generator | None = None,
        show_progress: bool = False,
    ) -> TensorOrTupleOfTensorsGeneric | tuple[TensorOrTupleOfTensorsGeneric, Tensor]:
        r"""Compute distributional Integrated Gradients.

        Args:
            inputs (Tensor or tuple[Tensor, ...]): Input for which attributions
                are computed. Dimension 0 of every tensor indexes examples; a
                tuple is passed to ``forward_func`` as separate arguments.
            baselines (Tensor, number, tuple, or Callable): The baseline
                distribution D, given as

                - a tensor of K reference samples, ``(K, *inputs.shape[1:])``
                  (dimension 0 indexes samples, not examples; every example is
                  paired with the references), or a tuple of such tensors (all
                  with the same K) or numbers for tuple inputs; a number is a
                  constant reference (K = 1 with only numbers);
                - a callable ``(n, generator) -> references`` returning ``n``
                  samples in the format above (``n_samples`` is then required
                  and ``n = n_samples * batch size``; the first ``n_samples``
                  belong to example 0, and so on).

                Inside :class:`~captum.attr.NoiseTunnel`: NoiseTunnel checks
                ``baselines`` itself, before calling this method, and accepts
                only K = 1 or K = the batch size (any other K fails inside
                Captum with an AssertionError that prints the tensors, which
                this method cannot intercept). Two ways work for any K:

                - ``baselines=references[None]``, shape ``(1, K, ...)``:
                  NoiseTunnel passes it through unchanged and every noisy
                  input is paired with all K references (the exact
                  expectation, as outside NoiseTunnel);
                - ``draw_baseline_from_distrib=True``: NoiseTunnel draws one
                  reference per noisy input with NumPy's global RNG (which
                  ``generator`` does not control); those ``bsz *
                  nt_samples`` rows then form the reference set, so with
                  ``n_samples=None`` every noisy input is paired with all of
                  them, and ``n_samples=k`` draws k of them per noisy input.
            target (int, tuple, Tensor, or list, optional): Output indices for
                which gradients are computed, with Captum's ``TargetType``
                semantics. Default: None (the model returns a scalar per
                example).
            additional_forward_args (Any, optional): Extra arguments passed to
                ``forward_func`` after the inputs. With one reference, exactly
                as in Captum's IntegratedGradients (every tensor that is not
                0-d is repeated over the steps). With several references per
                example, every such tensor must have one row per example: each
                (example, reference) path gets its example's row, then
                Captum's rule repeats it over the steps. Default: None.
            n_samples (int, optional): None: use every reference sample (the
                exact expectation over the K references). An int: draw that
                many references per example, with replacement, from
                ``generator`` (pairs drawn more than once are evaluated once and
                weighted by their count). Required for a callable ``baselines``.
                Default: None.
            n_steps (int, optional): Quadrature steps per path. Default: 50.
            method (str, optional): Captum's approximation method, with
                Captum's points and weights: ``riemann_right``,
                ``riemann_left``, ``riemann_middle``, ``riemann_trapezoid`` or
                ``gausslegendre`` (with one reference the result is Captum's
                IntegratedGradients); or ``trapezoid``, the trapezoid rule
                proper on ``riemann_trapezoid``'s points (Captum 0.9's
                ``riemann_trapezoid`` weights sum to ``(n - 1) / n``, which
                scales its results by that factor).
                Default: ``gausslegendre``.
            internal_batch_size (int, optional): Captum's meaning: the most
                path points per forward / backward pass, in whole steps of
                every path (``internal_batch_size // (bsz * references per
                example)`` steps per pass); a value below the batch size warns
                and is raised to it, as in Captum. When one step of every path
                is more than ``internal_batch_size`` points, each step is split
                into groups of paths. The result does not depend on it.
                Default: None (one pass over every point, as in Captum). With
                many references, set it to bound memory; on CPU it is also
                faster: K = 16 references, 32 digits (8x8 CNN), 32 steps took
                1.43 s in one pass and 0.65 s with ``internal_batch_size =
                bsz * n_steps`` (medians of 5, 2-core AMD EPYC, one thread).
            return_convergence_delta (bool, optional): Also return the
                distributional completeness error
                ``sum(attr) - (F(x) - sum_k w_k F(x'_k))`` per example, where
                the ``w_k`` are the weights of the references used for that
                example (``1/K`` each when all are used). Meaningful with
                ``multiply_by_inputs=True``. Default: False.
            generator (torch.Generator, optional): Source of randomness for
                drawing references (``n_samples``) and for a callable sampler.
                None: the global RNG. Default: None.
            show_progress (bool, optional): Show a progress bar over the
                chunks of points. Default: False.

        Returns:
            **attributions** or 2-element tuple of **attributions**, **delta**:

            - **attributions** (*Tensor* or *tuple[Tensor, ...]*): the
              distributional IG, with the structure and shapes of ``inputs``.
            - **delta** (*Tensor*, if ``return_convergence_delta``): ``(bsz,)``.

        Examples::

            >>> dig = DistributionalIG(net)
            >>> # exact expectation over 16 training images
            >>> attr = dig.attribute(images, x_train[:16], target=labels)
            >>> # 8 references per image, drawn reproducibly
            >>> g = torch.Generator().manual_seed(0)
            >>> attr = dig.attribute(
            ...     images, x_train, target=labels, n_samples=8, generator=g
            ... )
        """
        check_grad_mode("DistributionalIG")
        is_inputs_tuple, inputs_tuple = format_inputs(inputs)
        bsz = inputs_tuple[0].shape[0]
        validate_target(target, bsz)
        check_quadrature(method, n_steps)
        check_positive_int(n_samples, "n_samples", allow_none=True)
        check_positive_int(internal_batch_size, "internal_batch_size", allow_none=True)
        check_generator(generator)
        xs = tuple(x.detach() for x in inputs_tuple)
        pairs = _make_pairs(baselines, xs, n_samples, generator)
        afa = _format_additional_forward_args(additional_forward_args)
        # None: the paths are the examples, in order (one reference)
        ex = None if pairs.is_identity(bsz) else pairs.ex
        path_target = target if ex is None else target_for_rows(target, ex, bsz)
        path_afa = forward_args_for_paths(afa, ex, bsz)

        starts = tuple(
            refs[pairs.ref.to(refs.device)].to(x.device)
            for x, refs in zip(xs, pairs.refs)
        )
        directions = tuple(x[pairs.ex] - s for x, s in zip(xs, starts))
        per_path = integrate_gradients(
            self.gradient_func,
            self.forward_func,
            starts,
            directions,
            n_steps,
            method,
            internal_batch_size,
            bsz,
            path_target,
            path_afa,
            self._multiply_by_inputs,
            show_progress,
            "DistributionalIG",
        )
        attributions = tuple(
            torch.zeros_like(x).index_add_(
                0,
                pairs.ex,
                p * pairs.weight.to(p.dtype).view((-1,) + (1,) * (p.dim() - 1)),
            )
            for x, p in zip(xs, per_path)
        )
        result = cast(
            TensorOrTupleOfTensorsGeneric,
            _format_output(is_inputs_tuple, attributions),
        )
        if not return_convergence_delta:
            return result
        delta = self._delta(
            xs,
            pairs,
            attributions,
            target,
            afa,
            path_target,
            path_afa,
            internal_batch_size,
        )
        return result, delta

    def _delta(
        self,
        xs: tuple[Tensor, ...],
        pairs: _Pairs,
        attributions: tuple[Tensor, ...],
        target: TargetType,
        afa: Any,
        path_target: TargetType,
        path_afa: Any,
        internal_batch_size: int | None,
    ) -> Tensor:
        """``sum(attr) - (F(x) - sum_k w_k F(x'_k))``, as Captum's IG delta."""
        bsz = xs[0].shape[0]
        n_pairs = len(pairs)
        size = n_pairs if internal_batch_size is None else internal_batch_size
        size = max(size, bsz)
        with torch.no_grad():
            f_x = forward_select(self.forward_func, xs, target, afa)
            f_x = f_x.reshape(bsz, -1).sum(1)
            f_ref = torch.zeros(bsz, dtype=f_x.dtype, device=f_x.device)
            for a in range(0, n_pairs, size):
                b = min(a + size, n_pairs)
                refs = tuple(
                    r[pairs.ref[a:b].to(r.device)].to(x.device)
                    for r, x in zip(pairs.refs, xs)
                )
                values = forward_select(
                    self.forward_func,
                    refs,
                    slice_paths(path_target, a, b, n_pairs),
                    slice_paths_args(path_afa, a, b, n_pairs),
                ).reshape(b - a, -1)
                f_ref.index_add_(
                    0, pairs.ex[a:b], values.sum(1) * pairs.weight[a:b].to(f_x)
                )
        total = sum(a.reshape(bsz, -1).sum(1) for a in attributions)
        return cast(Tensor, total) - (f_x - f_ref)

    def has_convergence_delta(self) -> bool:
        """DistributionalIG returns a completeness error on request."""
        return True

    @property
    def multiplies_by_inputs(self) -> bool:
        """Whether the averaged gradients are multiplied by ``x - x'``."""
        return self._multiply_by_inputs

    def attribute_future(self) -> None:
        """Not implemented: DistributionalIG is computed synchronously."""
        raise NotImplementedError(
            "attribute_future is not implemented for DistributionalIG"
        )
