"""Internal-neuron attribution for an input patch (patch conductance)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal, cast

import torch
from captum._utils.common import _format_additional_forward_args, _format_output
from captum._utils.typing import (
    BaselineType,
    TargetType,
    TensorOrTupleOfTensorsGeneric,
)
from captum.attr import GradientAttribution, LayerAttribution
from captum.attr._utils.common import _format_input_baseline, _validate_input
from captum.log import log_usage
from torch import Tensor, nn

from captum_ext._utils.batching import index_forward_args, target_for_rows
from captum_ext._utils.validation import (
    check_broadcasts_to,
    check_positive_int,
    format_inputs,
    validate_target,
)
from captum_ext.attr._utils.integration import check_quadrature, chunks, quadrature
from captum_ext.attr._utils.layer_passes import layer_pass

_DIRECTIONALS = ("jvp", "finite_difference")


def _patch_indicators(
    patch_mask: Any, inputs: tuple[Tensor, ...]
) -> tuple[tuple[Tensor, ...], int, bool]:
    """Check ``patch_mask`` and return per-input patch indicators.

    Returns ``(indicators, n_patches, is_id_map)`` where ``indicators[i]`` is a
    0/1 tensor of shape ``(B, n_patches, *inputs[i].shape[1:])`` with ``B`` 1
    or the batch size.
    """
    if isinstance(patch_mask, tuple):
        masks = patch_mask
        if len(masks) != len(inputs):
            raise ValueError(
                f"`patch_mask` has {len(masks)} entries but `inputs` has "
                f"{len(inputs)} tensors; give one mask per input tensor."
            )
    else:
        if len(inputs) > 1:
            raise ValueError(
                "`patch_mask` must be a tuple with one mask per input tensor "
                f"({len(inputs)}) when `inputs` is a tuple."
            )
        masks = (patch_mask,)
    kinds = set()
    for i, (m, x) in enumerate(zip(masks, inputs)):
        name = f"`patch_mask[{i}]`" if len(inputs) > 1 else "`patch_mask`"
        if not isinstance(m, Tensor):
            raise TypeError(
                f"{name} must be a torch.Tensor (bool or 0/1 for one patch, "
                f"integer patch ids for several), got {type(m).__name__}."
            )
        if m.is_complex():
            raise TypeError(f"{name} must be real, got {m.dtype}.")
        check_broadcasts_to(m, x, name)
        if m.dtype == torch.bool or m.is_floating_point():
            kinds.add("single")
            if m.is_floating_point() and not ((m == 0) | (m == 1)).all():
                raise ValueError(
                    f"{name} must hold only 0 and 1 (or be boolean) to mark one "
                    "patch; give an integer tensor of patch ids for several."
                )
        else:
            kinds.add("ids")
            if m.numel() > 0 and int(m.min()) < 0:
                raise ValueError(
                    f"{name} holds patch ids; they must be >= 0, got {int(m.min())}."
                )
    if len(kinds) > 1:
        raise TypeError(
            "`patch_mask` mixes boolean / 0-1 masks with integer patch-id maps; "
            "use one kind for every input tensor."
        )
    is_ids = kinds == {"ids"}
    n_patches = 1
    if is_ids:
        n_patches = 1 + max((int(m.max()) for m in masks if m.numel() > 0), default=0)
    indicators = []
    for m, x in zip(masks, inputs):
        batch = m.shape[0] if m.dim() == x.dim() else 1
        full = torch.broadcast_to(m.to(x.device), (batch, *tuple(x.shape[1:])))
        if is_ids:
            ids = torch.arange(n_patches, device=x.device)
            ids = ids.view((1, n_patches) + (1,) * (x.dim() - 1))
            ind = (full.unsqueeze(1) == ids).to(x.dtype)
        else:
            ind = (full != 0).to(x.dtype).unsqueeze(1)
        indicators.append(ind)
    return tuple(indicators), n_patches, is_ids


class PatchConductance(LayerAttribution, GradientAttribution):
    r"""Patch conductance: the part of an input patch's IG through each neuron.

    Lundstrom, Huang & Razaviyayn, "A Rigorous Study of Integrated Gradients
    Method and Extensions to Internal Neuron Attributions" (ICML 2022),
    section 6.2, eq. 7. Write the model as :math:`F = G \circ H` with
    :math:`H` the layer. For an input patch :math:`S` and the straight path
    :math:`\gamma(t) = x' + t (x - x')`,

    .. math::

        \mathrm{IG}_{S,j} = \sum_{i \in S} \mathrm{IG}_{i,j}
          = \int_0^1 \frac{\partial G}{\partial H_j}\big(H(\gamma(t))\big)\,
            D_{d_S} H_j(\gamma(t))\, dt, \qquad d_S = (x - x') \odot 1_S ,

    where :math:`D_{d_S} H_j` is the directional derivative of neuron
    :math:`j` along the patch's part of the path. No per-neuron Jacobian is
    formed: with ``directional="jvp"`` the directional derivative is computed
    exactly by forward-mode AD (about one forward pass of the first half of
    the model), with ``directional="finite_difference"`` by the paper's
    speed-up :math:`D_{d_S} H_j(z) \approx N\,[H_j(z + d_S / N) - H_j(z)]`
    with :math:`N` = ``n_steps`` (one extra forward pass of the first half).
    The integral uses Captum's quadrature (``method``, ``n_steps``).

    Identities (exact at equal quadrature points with ``jvp``):
    :math:`\sum_j \mathrm{IG}_{S,j} = \sum_{i \in S} \mathrm{IG}_i` when every
    path from the patch to the output runs through the layer (Captum's
    :class:`~captum.attr.IntegratedGradients` with the same ``method`` and
    ``n_steps``), and :math:`\mathrm{IG}_{S,j} + \mathrm{IG}_{S^c,j}` is the
    conductance of neuron :math:`j` (which Captum's
    :class:`~captum.attr.LayerConductance` approximates with finite
    differences of the layer along the path). The paper ranks neurons by
    :math:`\mathrm{IG}_{S,j}` to find those responsible for a region; see
    :func:`prune_neurons`.

    With ``directional="finite_difference"`` and ``method="riemann_right"``
    the computation is the authors' recipe (gradients at the right end points
    :math:`k/N`, differences with step :math:`d_S / N`).

    Args:
        forward_func (Callable): The forward function of the model or any
            modification of it.
        layer (torch.nn.Module): The layer whose neurons are attributed. It
            must run exactly once per forward pass.
        device_ids (list[int], optional): Accepted for compatibility with
            Captum's layer methods; models wrapped in ``DataParallel`` are not
            supported (the layer would run once per device).

    Examples::

        >>> net = ImageClassifier()
        >>> pc = PatchConductance(net, net.conv4)
        >>> patch = torch.zeros(1, 1, 32, 32, dtype=torch.bool)
        >>> patch[..., 8:16, 8:16] = True
        >>> # (N, C, H', W'): IG of the patch flowing through each neuron
        >>> attr = pc.attribute(images, patch, target=labels)
    """

    def __init__(
        self,
        forward_func: Callable[..., Tensor],
        layer: nn.Module,
        device_ids: list[int] | None = None,
    ) -> None:
        LayerAttribution.__init__(self, forward_func, layer, device_ids)
        GradientAttribution.__init__(self, forward_func)

    @log_usage(part_of_slo=True)
    def attribute(
        self,
        inputs: TensorOrTupleOfTensorsGeneric,
        patch_mask: Tensor | tuple[Tensor, ...],
        baselines: BaselineType = None,
        target: TargetType = None,
        additional_forward_args: Any = None,
        n_steps: int = 50,
        method: str = "riemann_trapezoid",
        internal_batch_size: int | None = None,
        attribute_to_layer_input: bool = False,
        directional: Literal["jvp", "finite_difference"] = "jvp",
        return_convergence_delta: bool = False,
        show_progress: bool = False,
    ) -> Tensor | tuple[Tensor, ...] | tuple[Tensor | tuple[Tensor, ...], Tensor]:
        r"""Compute the patch conductance of every neuron of the layer.

        Args:
            inputs (Tensor or tuple[Tensor, ...]): Input for which attributions
                are computed. Dimension 0 of every tensor indexes examples; a
                tuple is passed to ``forward_func`` as separate arguments.
            patch_mask (Tensor or tuple[Tensor, ...]): The input patch, one
                tensor per input tensor, each broadcastable to its input (a
                leading dimension of 1 or no batch dimension applies the mask
                to every example; inside :class:`~captum.attr.NoiseTunnel` use
                one of those). Either

                - a boolean (or 0/1 floating) mask: one patch S, the nonzero
                  features; or
                - an integer map of patch ids ``0 .. M-1`` (like Captum's
                  ``feature_mask``): M patches attributed in one call, patch
                  ``m`` being the features with id ``m`` (across all input
                  tensors). A partition of the input gives, summed over
                  patches, the conductance of each neuron.
            baselines (scalar, Tensor, tuple, optional): Path starting points,
                with Captum's :class:`~captum.attr.IntegratedGradients`
                conventions (per example, or one broadcast to all).
                Default: None (zeros).
            target (int, tuple, Tensor, or list, optional): Output indices, with
                Captum's ``TargetType`` semantics. Default: None.
            additional_forward_args (Any, optional): Extra arguments passed to
                ``forward_func`` after the inputs; per-example tensors are
                repeated along the path. Default: None.
            n_steps (int, optional): Quadrature steps. Default: 50.
            method (str, optional): Captum's approximation method
                (``riemann_right``, ``riemann_left``, ``riemann_middle``,
                ``riemann_trapezoid``, ``gausslegendre``), with Captum's points
                and weights, except that ``riemann_trapezoid`` uses the
                trapezoid rule's weights (Captum 0.9's sum to ``(n - 1) / n``).
                Default: ``riemann_trapezoid``.
            internal_batch_size (int, optional): Most model evaluations per
                forward pass (at least one path point per pass, times the
                number of patches in the directional pass). The result does not
                depend on it. Default: None (one pass).
            attribute_to_layer_input (bool, optional): Attribute to the layer's
                input instead of its output. Default: False.
            directional (str, optional): ``"jvp"`` (exact directional
                derivative by forward-mode AD) or ``"finite_difference"`` (the
                paper's speed-up; works with any model). Default: ``"jvp"``.
            return_convergence_delta (bool, optional): Also return
                ``sum_j IG_{S,j} - sum_{i in S} IG_i`` with the input IG taken
                at the same quadrature points (one extra backward pass to the
                input per point). With ``jvp`` it is zero up to rounding when
                every path from the patch to the output crosses the layer.
                Default: False.
            show_progress (bool, optional): Show a progress bar over chunks.
                Default: False.

        Returns:
            **attributions** or 2-element tuple of **attributions**, **delta**:

            - **attributions** (*Tensor* or *tuple[Tensor, ...]*): for a single
              patch, shaped like the layer's output (or input), ``(bsz,
              *layer_shape)``; for an integer patch-id map with M patches,
              ``(bsz, M, *layer_shape)`` (dimension 1 indexes patches). A tuple
              when the layer has several outputs (inputs), as in Captum.
            - **delta** (*Tensor*, if ``return_convergence_delta``): ``(bsz,)``
              for a single patch, ``(bsz, M)`` for a patch-id map.

        Examples::

            >>> pc = PatchConductance(net, net.layer3)
            >>> # one patch
            >>> attr = pc.attribute(images, patch, target=labels)
            >>> # a 4x4 grid of patches in one call: (N, 16, *layer_shape)
            >>> grid = (torch.arange(32) // 8)[:, None] * 4 + torch.arange(32) // 8
            >>> attr = pc.attribute(images, grid[None, None], target=labels)
        """
        _is_inputs_tuple, inputs_tuple = format_inputs(inputs)
        bsz = inputs_tuple[0].shape[0]
        validate_target(target, bsz)
        check_quadrature(method, n_steps)
        check_positive_int(internal_batch_size, "internal_batch_size", allow_none=True)
        if directional not in _DIRECTIONALS:
            raise ValueError(
                f"`directional` must be one of {_DIRECTIONALS}, got {directional!r}."
            )
        indicators, n_patches, is_ids = _patch_indicators(patch_mask, inputs_tuple)
        xs = tuple(x.detach() for x in inputs_tuple)
        _, baselines_tuple = _format_input_baseline(xs, baselines)
        _validate_input(xs, baselines_tuple, n_steps, method)
        bases = tuple(
            torch.broadcast_to(
                b.detach() if isinstance(b, Tensor) else torch.tensor(b).to(x),
                x.shape,
            )
            for x, b in zip(xs, baselines_tuple)
        )
        afa = _format_additional_forward_args(additional_forward_args)

        attrs, is_layer_tuple, patch_ig = self._integrate(
            xs,
            bases,
            indicators,
            n_patches,
            target,
            afa,
            n_steps,
            method,
            internal_batch_size,
            attribute_to_layer_input,
            directional,
            return_convergence_delta,
            show_progress,
        )
        if not is_ids:
            attrs = tuple(a.squeeze(1) for a in attrs)
        result = _format_output(is_layer_tuple, attrs)
        if not return_convergence_delta:
            return result
        assert patch_ig is not None
        total = sum(a.reshape(bsz, n_patches, -1).sum(2) for a in attrs)
        delta = cast(Tensor, total) - patch_ig
        return result, (delta if is_ids else delta.squeeze(1))

    def _integrate(
        self,
        xs: tuple[Tensor, ...],
        bases: tuple[Tensor, ...],
        indicators: tuple[Tensor, ...],
        n_patches: int,
        target: TargetType,
        afa: Any,
        n_steps: int,
        method: str,
        internal_batch_size: int | None,
        to_layer_input: bool,
        directional: str,
        need_delta: bool,
        show_progress: bool,
    ) -> tuple[tuple[Tensor, ...], bool, Tensor | None]:
        bsz = xs[0].shape[0]
        device = xs[0].device
        m = n_patches
        step_sizes, alphas = quadrature(method, n_steps, xs[0].dtype, device)
        # One pass does it all (forward AD up to the layer, backward from the
        # output to the layer) when there is one patch and no input gradient.
        fused = directional == "jvp" and m == 1 and not need_delta
        per_chunk = internal_batch_size
        if per_chunk is not None and not fused:
            per_chunk = max(1, per_chunk // m)
        out: list[Tensor] | None = None
        patch_ig = (
            torch.zeros(bsz, m, dtype=xs[0].dtype, device=device)
            if need_delta
            else None
        )
        is_layer_tuple = False
        for start, stop in chunks(
            n_steps * bsz, per_chunk, show_progress, "PatchConductance"
        ):
            # step-major order, as in Captum: point q = (step q // bsz, example)
            q = torch.arange(start, stop, device=device)
            k, ex = q // bsz, q % bsz
            b = ex.numel()
            points, tangents = [], []
            for x, base, ind in zip(xs, bases, indicators):
                view = (-1,) + (1,) * (x.dim() - 1)
                base_ex = base[ex]
                d_ex = x[ex] - base_ex
                # the same points as Captum's: x' + alpha (x - x')
                points.append(base_ex + alphas[k].view(view) * d_ex)
                ind_ex = ind[ex] if ind.shape[0] > 1 else ind
                # (b, M, ...) -> (b * M, ...): the patch directions d_S
                tangents.append((d_ex.unsqueeze(1) * ind_ex).flatten(0, 1))
            chunk_target = target_for_rows(target, ex, bsz)
            chunk_afa = index_forward_args(afa, ex, bsz)
            if fused:
                res = layer_pass(
                    self.forward_func,
                    self.layer,
                    tuple(points),
                    chunk_afa,
                    to_layer_input=to_layer_input,
                    tangents=tuple(tangents),
                    target=chunk_target,
                    need_grad=True,
                )
                assert res.layer_grads is not None and res.tangents is not None
                grads, directional_derivs = res.layer_grads, res.tangents
            else:
                res = layer_pass(
                    self.forward_func,
                    self.layer,
                    tuple(points),
                    chunk_afa,
                    to_layer_input=to_layer_input,
                    target=chunk_target,
                    need_grad=True,
                    need_input_grad=need_delta,
                    clone_values=directional == "finite_difference",
                )
                assert res.layer_grads is not None
                grads = res.layer_grads
                directional_derivs = self._directional(
                    res.values,
                    tuple(points),
                    tuple(tangents),
                    m,
                    ex,
                    afa,
                    bsz,
                    to_layer_input,
                    directional,
                    n_steps,
                )
                if patch_ig is not None:
                    assert res.input_grads is not None
                    ig_terms = sum(
                        (g.unsqueeze(1) * t.view((b, m, *t.shape[1:])))
                        .reshape(b, m, -1)
                        .sum(2)
                        for g, t in zip(res.input_grads, tangents)
                    )
                    patch_ig.index_add_(
                        0, ex, cast(Tensor, ig_terms) * step_sizes[k].view(-1, 1)
                    )
            is_layer_tuple = res.is_tuple
            if out is None:
                out = [
                    torch.zeros((bsz, m, *g.shape[1:]), dtype=g.dtype, device=g.device)
                    for g in grads
                ]
            for o, g, dd in zip(out, grads, directional_derivs):
                w = step_sizes[k].to(g.dtype).view((-1, 1) + (1,) * (g.dim() - 1))
                o.index_add_(0, ex, w * g.unsqueeze(1) * dd.view((b, m, *g.shape[1:])))
        assert out is not None
        return tuple(out), is_layer_tuple, patch_ig

    def _directional(
        self,
        values: tuple[Tensor, ...],
        points: tuple[Tensor, ...],
        tangents: tuple[Tensor, ...],
        m: int,
        ex: Tensor,
        afa: Any,
        bsz: int,
        to_layer_input: bool,
        directional: str,
        n_steps: int,
    ) -> tuple[Tensor, ...]:
        """Directional derivatives of the layer along each patch direction."""
        rows = ex.repeat_interleave(m)
        repeated = tuple(p.repeat_interleave(m, dim=0) for p in points)
        row_afa = index_forward_args(afa, rows, bsz)
        if directional == "jvp":
            res = layer_pass(
                self.forward_func,
                self.layer,
                repeated,
                row_afa,
                to_layer_input=to_layer_input,
                tangents=tangents,
            )
            assert res.tangents is not None
            return res.tangents
        # finite difference with the quadrature's own resolution h = 1 / n_steps
        h = 1.0 / n_steps
        shifted = tuple(p + h * t for p, t in zip(repeated, tangents))
        res = layer_pass(
            self.forward_func,
            self.layer,
            shifted,
            row_afa,
            to_layer_input=to_layer_input,
        )
        return tuple(
            (s - v.repeat_interleave(m, dim=0)) / h for s, v in zip(res.values, values)
        )

    def has_convergence_delta(self) -> bool:
        """PatchConductance returns the patch-completeness error on request."""
        return True

    @property
    def multiplies_by_inputs(self) -> bool:
        """Patch conductance multiplies by ``x - x'`` through the direction."""
        return True

    def attribute_future(self) -> None:
        """Not implemented: PatchConductance is computed synchronously."""
        raise NotImplementedError(
            "attribute_future is not implemented for PatchConductance"
        )
