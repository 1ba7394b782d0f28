"""Internal-neuron attribution for an input patch (patch conductance)."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any, Literal, cast, overload

import torch
from captum._utils.common import (
    ExpansionTypes,
    _expand_additional_forward_args,
    _format_additional_forward_args,
    _format_output,
)
from captum._utils.common import _validate_input as _validate_input_basic
from captum._utils.typing import (
    BaselineType,
    TargetType,
    TensorOrTupleOfTensorsGeneric,
)
from captum.attr import GradientAttribution, LayerAttribution
from captum.attr._utils.common import _format_input_baseline
from captum.log import log_usage
from torch import Tensor, nn

from captum_ext._utils.gradient import check_grad_mode
from captum_ext._utils.model_state import preserves_model_state
from captum_ext._utils.validation import (
    check_broadcasts_to,
    check_positive_int,
    format_inputs,
    validate_target,
)
from captum_ext.attr._utils.integration import (
    PathChunk,
    check_quadrature,
    path_chunks,
    straight_paths,
    sum_steps,
)
from captum_ext.attr._utils.layer_passes import layer_pass

_DIRECTIONALS = ("jvp", "finite_difference")
_ANCHORS = ("point", "step_start")


def _check_layer_in_model(forward_func: Any, layer: Any) -> None:
    """Refuse, before any forward pass, a layer that is not part of the model."""
    if not isinstance(layer, nn.Module):
        raise TypeError(
            f"`layer` must be a torch.nn.Module, got {type(layer).__name__}."
        )
    model = forward_func
    if not isinstance(model, nn.Module):
        model = getattr(forward_func, "__self__", None)
    if isinstance(model, nn.Module) and not any(
        mod is layer for mod in model.modules()
    ):
        raise ValueError(
            f"`layer` ({type(layer).__name__}) is not a module of `forward_func` "
            f"({type(model).__name__}); pass a layer of the model that is "
            "attributed (e.g. model.layer2)."
        )


def _per_row(patch_dirs: tuple[Tensor, ...], steps: int) -> tuple[Tensor, ...]:
    """The patch directions of every row of a chunk: step-major, as its points."""
    return tuple(t.repeat((steps,) + (1,) * (t.dim() - 1)) for t in patch_dirs)


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
    # features of each patch, over every input tensor (and mask row)
    sizes = torch.stack(
        [ind.sum(dim=[d for d in range(ind.dim()) if d != 1]) for ind in indicators]
    ).sum(0)
    if not is_ids and float(sizes[0]) == 0:
        raise ValueError(
            "`patch_mask` selects no feature (it is all False / 0): the patch is "
            "empty, so every attribution would be zero. Mark the patch with True "
            "(or 1)."
        )
    empty = [i for i, v in enumerate(sizes.tolist()) if v == 0]
    if is_ids and empty:
        warnings.warn(
            f"`patch_mask`: patch ids {empty} mark no feature; their attributions "
            "are zero.",
            UserWarning,
            stacklevel=3,
        )
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

    With ``directional="finite_difference"`` the difference is taken at the
    quadrature point itself, :math:`N\,[H(\gamma(\alpha_k) + d_S/N) -
    H(\gamma(\alpha_k))]`, the paper's formula. The authors' code
    (``method="riemann_right"``) takes it at the start of each step instead,
    :math:`N\,[H(\gamma((k-1)/N) + d_S/N) - H(\gamma((k-1)/N))]`, with the
    gradient at :math:`\gamma(k/N)`: ``difference_at="step_start"`` with
    ``method="riemann_right"`` is their recipe (0.7% per neuron away from the
    default at :math:`N = 256` on our test network; both converge to the
    ``jvp`` result as ``n_steps`` grows).

    Quadrature on residual stages: :math:`\mathrm{IG}_{S,j} +
    \mathrm{IG}_{S^c,j}` is the conductance at the quadrature points (exact
    with ``jvp``), while Captum's :class:`~captum.attr.LayerConductance`
    integrates finite differences of the layer between consecutive points,
    so the two agree only as ``n_steps`` grows. Measured on a random-weight
    torchvision ``resnet18`` (stage ``layer2``, 2 images of 3x32x32, float64,
    one patch and its complement), the relative gap with the same ``method``
    is 3.3%, 0.26%, 1.7e-4 and 1.1e-5 at 8, 32, 128 and 512 steps with
    ``gausslegendre`` (second order: about 16x smaller per 4x steps), and
    7.1%, 1.6% and 0.39% at 8, 32 and 128 steps with ``riemann_trapezoid``
    (first order, dominated by Captum's weights summing to
    :math:`(n-1)/n`), while the completeness delta of ``jvp`` stays at
    rounding level (below 1e-15). ``gausslegendre`` (the default) converges
    much faster; see the test
    ``test_residual_stage_converges_to_layer_conductance``.

    Cost and architectures with ``jvp``: one patch costs one forward pass
    with tangents up to the layer and one backward pass from the output to
    the layer. The tangents of convolutions, linear layers, inference
    BatchNorm and ReLU use their own forward-mode rules (PyTorch's generic
    ones cost a third convolution per layer, treating the parameters as
    possible dual tensors), and the layers before the first nonlinearity
    compute them once per example rather than once per path point. On a
    random-weight torchvision ``resnet18`` (``layer2``, 3x224x224, 8 steps, 1
    thread) this is 1.15x Captum's LayerConductance, whose finite
    differences need no tangents (``benchmarks/RESULTS.md``). Forward AD also
    goes through attention: during the pass ``nn.MultiheadAttention``'s fused
    fast path is not taken and scaled dot-product attention runs on its math
    backend, so a torchvision ``VisionTransformer`` works with ``jvp``.

    Like Captum's :class:`~captum.attr.LayerConductance`, the layer gradients
    come from a hooked forward / backward pass of the layer, not from
    ``gradient_func``. Models wrapped in ``DataParallel`` are not supported
    (the layer would run once per device; this raises a clear error), so,
    unlike Captum's layer methods, there is no ``device_ids`` argument.

    Args:
        forward_func (Callable): The forward function of the model or any
            modification of it.
        layer (torch.nn.Module): The layer whose neurons are attributed. It
            must run exactly once per forward pass; when ``forward_func`` is
            an ``nn.Module`` (or one of its bound methods) the layer must be
            one of its modules.

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
    ) -> None:
        _check_layer_in_model(forward_func, layer)
        LayerAttribution.__init__(self, forward_func, layer)
        GradientAttribution.__init__(self, forward_func)

    @overload
    def attribute(
        self,
        inputs: TensorOrTupleOfTensorsGeneric,
        patch_mask: Tensor | tuple[Tensor, ...],
        baselines: BaselineType = None,
        target: TargetType = None,
        additional_forward_args: Any = None,
        n_steps: int = 50,
        method: str = "gausslegendre",
        internal_batch_size: int | None = None,
        attribute_to_layer_input: bool = False,
        directional: Literal["jvp", "finite_difference"] = "jvp",
        return_convergence_delta: Literal[False] = False,
        show_progress: bool = False,
        difference_at: Literal["point", "step_start"] = "point",
    ) -> Tensor | tuple[Tensor, ...]: ...

    @overload
    def attribute(
        self,
        inputs: TensorOrTupleOfTensorsGeneric,
        patch_mask: Tensor | tuple[Tensor, ...],
        baselines: BaselineType = None,
        target: TargetType = None,
        additional_forward_args: Any = None,
        n_steps: int = 50,
        method: str = "gausslegendre",
        internal_batch_size: int | None = None,
        attribute_to_layer_input: bool = False,
        directional: Literal["jvp", "finite_difference"] = "jvp",
        *,
        return_convergence_delta: Literal[True],
        show_progress: bool = False,
        difference_at: Literal["point", "step_start"] = "point",
    ) -> tuple[Tensor | tuple[Tensor, ...], Tensor]: ...

    @log_usage(part_of_slo=True)
    @preserves_model_state
    def attribute(
        self,
        inputs: TensorOrTupleOfTensorsGeneric,
        patch_mask: Tensor | tuple[Tensor, ...],
        baselines: BaselineType = None,
        target: TargetType = None,
        additional_forward_args: Any = None,
        n_steps: int = 50,
        method: str = "gausslegendre",
        internal_batch_size: int | None = None,
        attribute_to_layer_input: bool = False,
        directional: Literal["jvp", "finite_difference"] = "jvp",
        return_convergence_delta: bool = False,
        show_progress: bool = False,
        difference_at: Literal["point", "step_start"] = "point",
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
                ``riemann_trapezoid``, ``gausslegendre``) with Captum's points
                and weights, as in :class:`~captum.attr.LayerConductance`; or
                ``"trapezoid"``, the trapezoid rule proper on
                ``riemann_trapezoid``'s points (Captum 0.9's
                ``riemann_trapezoid`` weights sum to ``(n - 1) / n``).
                Default: ``gausslegendre`` (Captum's default).
            internal_batch_size (int, optional): As in Captum: each forward /
                backward pass to the layer holds ``internal_batch_size //
                bsz`` whole steps (at least one; a value below the batch size
                warns, as Captum does). The directional pass of M patches
                evaluates M rows per path point. The result does not depend on
                it. Default: None (one pass).
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
            difference_at (str, optional): Where ``finite_difference`` takes
                its difference: ``"point"``, at each quadrature point (the
                paper's formula), or ``"step_start"``, at the point one step
                ``1 / n_steps`` earlier on the path, as in the authors' code
                (one more forward pass of the first half). Ignored with
                ``jvp``. Default: ``"point"``.

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
        check_grad_mode("PatchConductance")
        _is_inputs_tuple, inputs_tuple = format_inputs(inputs)
        bsz = inputs_tuple[0].shape[0]
        validate_target(target, bsz)
        check_quadrature(method, n_steps)
        check_positive_int(internal_batch_size, "internal_batch_size", allow_none=True)
        if directional not in _DIRECTIONALS:
            raise ValueError(
                f"`directional` must be one of {_DIRECTIONALS}, got {directional!r}."
            )
        if difference_at not in _ANCHORS:
            raise ValueError(
                f"`difference_at` must be one of {_ANCHORS}, got {difference_at!r}."
            )
        indicators, n_patches, is_ids = _patch_indicators(patch_mask, inputs_tuple)
        xs = tuple(x.detach() for x in inputs_tuple)
        _, baselines_tuple = _format_input_baseline(xs, baselines)
        _validate_input_basic(xs, baselines_tuple)
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
            difference_at,
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
        difference_at: str,
        need_delta: bool,
        show_progress: bool,
    ) -> tuple[tuple[Tensor, ...], bool, Tensor | None]:
        bsz = xs[0].shape[0]
        m = n_patches
        starts, directions = straight_paths(xs, bases)
        # One pass does it all (forward AD up to the layer, backward from the
        # output to the layer) when there is one patch and no input gradient.
        fused = directional == "jvp" and m == 1 and not need_delta
        out: list[Tensor] | None = None
        patch_ig = (
            torch.zeros(bsz, m, dtype=xs[0].dtype, device=xs[0].device)
            if need_delta
            else None
        )
        is_layer_tuple = False
        # the patch directions d_S = (x - x') * 1_S of every example and patch,
        # (bsz, M, ...) flattened to (bsz * M, ...): the tangents of one step
        patch_dirs = tuple(
            (d.unsqueeze(1) * ind).flatten(0, 1)
            for d, ind in zip(directions, indicators)
        )
        for chunk in path_chunks(
            starts,
            directions,
            n_steps,
            method,
            internal_batch_size,
            bsz,
            target,
            afa,
            show_progress,
            "PatchConductance",
        ):
            c = chunk.steps
            rows = c * bsz
            if fused:
                res = layer_pass(
                    self.forward_func,
                    self.layer,
                    chunk.points,
                    chunk.additional_forward_args,
                    to_layer_input=to_layer_input,
                    tangents=patch_dirs,
                    tangent_repeats=c,
                    target=chunk.target,
                    need_grad=True,
                )
                assert res.layer_grads is not None and res.tangents is not None
                grads, directional_derivs = res.layer_grads, res.tangents
            else:
                res = layer_pass(
                    self.forward_func,
                    self.layer,
                    chunk.points,
                    chunk.additional_forward_args,
                    to_layer_input=to_layer_input,
                    target=chunk.target,
                    need_grad=True,
                    need_input_grad=need_delta,
                    clone_values=directional == "finite_difference",
                )
                assert res.layer_grads is not None
                grads = res.layer_grads
                directional_derivs = self._directional(
                    res.values,
                    chunk,
                    patch_dirs,
                    directions,
                    m,
                    to_layer_input,
                    directional,
                    difference_at,
                    n_steps,
                )
                if patch_ig is not None:
                    assert res.input_grads is not None
                    ig_terms = sum(
                        (g.unsqueeze(1) * t.view((rows, m, *t.shape[1:])))
                        .reshape(rows, m, -1)
                        .sum(2)
                        for g, t in zip(res.input_grads, _per_row(patch_dirs, c))
                    )
                    patch_ig += sum_steps(cast(Tensor, ig_terms), chunk)
            is_layer_tuple = res.is_tuple
            if out is None:
                out = [
                    torch.zeros((bsz, m, *g.shape[1:]), dtype=g.dtype, device=g.device)
                    for g in grads
                ]
            for o, g, dd in zip(out, grads, directional_derivs):
                o += sum_steps(g.unsqueeze(1) * dd.view((rows, m, *g.shape[1:])), chunk)
        assert out is not None
        return tuple(out), is_layer_tuple, patch_ig

    def _directional(
        self,
        values: tuple[Tensor, ...],
        chunk: PathChunk,
        patch_dirs: tuple[Tensor, ...],
        directions: tuple[Tensor, ...],
        m: int,
        to_layer_input: bool,
        directional: str,
        difference_at: str,
        n_steps: int,
    ) -> tuple[Tensor, ...]:
        """Directional derivatives of the layer along each patch direction.

        ``patch_dirs`` are the ``bsz * M`` directions of one step (the same
        for every step of the chunk).
        """
        c = chunk.steps
        # each row of the chunk once per patch: Captum's repeat_interleave
        # expansion, as NoiseTunnel expands per-example arguments
        row_afa = _expand_additional_forward_args(
            chunk.additional_forward_args, m, ExpansionTypes.repeat_interleave
        )
        if directional == "jvp":
            res = layer_pass(
                self.forward_func,
                self.layer,
                tuple(p.repeat_interleave(m, dim=0) for p in chunk.points),
                row_afa,
                to_layer_input=to_layer_input,
                tangents=patch_dirs,
                tangent_repeats=c,
            )
            assert res.tangents is not None
            return res.tangents
        # finite difference with the quadrature's own resolution h = 1 / n_steps
        h = 1.0 / n_steps
        if difference_at == "step_start":
            # the authors' anchor: the start of the step that ends at the point
            anchors = tuple(
                p - h * d.repeat((c,) + (1,) * (d.dim() - 1))
                for p, d in zip(chunk.points, directions)
            )
            values = layer_pass(
                self.forward_func,
                self.layer,
                anchors,
                chunk.additional_forward_args,
                to_layer_input=to_layer_input,
            ).values
        else:
            anchors = chunk.points
        shifted = tuple(
            p.repeat_interleave(m, dim=0) + h * t
            for p, t in zip(anchors, _per_row(patch_dirs, c))
        )
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


#: The Captum-style name of :class:`PatchConductance` (Captum's layer methods
#: are called ``Layer...``, e.g. :class:`~captum.attr.LayerConductance`): the
#: same class.
LayerPatchConductance = PatchConductance
