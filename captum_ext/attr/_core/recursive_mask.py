"""Recursive attribution mask (Algorithm 1 of the GxSI paper)."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import MethodType
from typing import Any, cast

import torch
from captum._utils.common import (
    _format_output,
    _format_tensor_into_tuples,
    _run_forward,
    _select_targets,
)
from captum._utils.progress import progress
from captum._utils.typing import TargetType, TensorOrTupleOfTensorsGeneric
from captum.attr import Attribution, GradientAttribution, NoiseTunnel
from captum.attr._utils.attribution import InternalAttribution
from captum.log import log_usage
from torch import Tensor, nn

from captum_ext._utils.gradient import check_grad_mode
from captum_ext._utils.model_state import preserves_model_state
from captum_ext._utils.validation import (
    check_positive_int,
    format_inputs,
    validate_target,
)
from captum_ext.attr._core.gradient_sign_input import GradientSignInput

# A spread below this many float ulps of the map's magnitude, or of the model's
# output for the example, is rounding noise: the map carries no information.
_CONSTANT_ULPS = 16.0


def _minmax_parts(
    attributions: Tensor, per_channel: bool = True, floor: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """Eq. 11 per example (and channel), and which blocks are uninformative.

    Returns ``(mask, flat_flags)``: the min-max normalised map shaped like
    ``attributions`` (0 in uninformative blocks), and a boolean ``(N, G)``
    tensor, True for the blocks (examples, or example-channels) whose spread
    is zero or at rounding level: at most ``16`` ulps of the block's
    magnitude, or at most ``floor[n]`` (an absolute spread per example).
    """
    if attributions.dim() < 2:
        raise ValueError(
            "min-max normalisation needs a feature dimension per example; got "
            f"shape {tuple(attributions.shape)}."
        )
    if per_channel and attributions.dim() >= 3:
        flat = attributions.flatten(2)
    else:
        flat = attributions.flatten(1).unsqueeze(1)
    lo = flat.amin(dim=-1, keepdim=True)
    hi = flat.amax(dim=-1, keepdim=True)
    spread = hi - lo
    if flat.is_floating_point():
        ulp = torch.finfo(flat.dtype).eps
        magnitude = torch.maximum(lo.abs(), hi.abs())
        constant = spread <= _CONSTANT_ULPS * ulp * magnitude
        if floor is not None:
            constant = constant | (spread <= floor.to(spread).view(-1, 1, 1))
    else:  # pragma: no cover - attributions are floating point in practice
        constant = spread == 0
    safe = torch.where(constant, torch.ones_like(spread), spread)
    mask = ((flat - lo) / safe).masked_fill(constant, 0.0).clamp(0.0, 1.0)
    return mask.reshape(attributions.shape), constant.flatten(1)


def _minmax_mask(attributions: Tensor, per_channel: bool = True) -> Tensor:
    r"""Min-max normalise an attribution map per example (and per channel).

    Eq. 11 of the GxSI paper, :math:`m = (A - \min A) / (\max A - \min A)`,
    with the minimum and maximum taken per example and, for inputs with a
    channel dimension (``(N, C, ...)`` with at least one dimension after
    ``C``), per channel over the remaining dimensions. 2-D inputs ``(N, D)``
    (tabular features) are one channel: normalised over the ``D`` features.
    With ``per_channel=False`` every example is normalised over all its
    features. A map whose spread is zero, or below float rounding noise
    (16 ulps of its magnitude), gives zeros (for display; the recursive mask
    uses 1 there, see :class:`RecursiveMaskAttribution`).

    Returns a tensor shaped like ``attributions`` with values in [0, 1].
    """
    return _minmax_parts(attributions, per_channel)[0]


def _same_model(a: Any, b: Any) -> bool:
    """Whether two forward functions are the same model (or its bound forward)."""
    if a is b:
        return True
    if isinstance(a, MethodType) and isinstance(b, MethodType):
        return a == b
    return getattr(a, "__self__", None) is b or getattr(b, "__self__", None) is a


class RecursiveMaskAttribution(GradientAttribution):
    r"""Recursive attribution mask (Algorithm 1 of the GxSI paper).

    Lee & Chang, "Attribution Mask: Filtering Out Irrelevant Features By
    Recursively Focusing Attention on Inputs of DNNs", section 3.1. Starting
    from :math:`m^*_0 = 1`, each iteration explains the *masked* input with a
    gradient-based attribution method, turns the attributions into a mask by
    min-max normalisation (eq. 11) and multiplies it into the running mask:

    .. math::

        A_i = \mathrm{Expl}(f, x \circ m^*_{i-1}, k), \qquad
        m_i = \frac{A_i - \min A_i}{\max A_i - \min A_i}, \qquad
        m^*_i = m^*_{i-1} \circ m_i .

    The result :math:`m^*_I` has the inputs' shape and values in [0, 1];
    :math:`x \circ m^*_I` keeps the parts of the input the method considers
    relevant to class ``k``. The paper scores masks with the masked input
    accuracy (eq. 12, :func:`captum_ext.metrics.masked_input_accuracy`); with
    Gradient * Sign-of-Input (:class:`GradientSignInput`, the default) on a
    no-implicit-bias model (:func:`captum_ext.models.nib_vgg`) it stays high
    over many iterations, while Gradient * Input, Integrated Gradients and
    DeepLift rise and then fall.

    Normalisation (as in the authors' code): per example and per channel over
    the remaining dimensions for inputs laid out ``(N, C, ...)`` like PyTorch
    convolutions (images: over height and width); 2-D inputs ``(N, D)``
    (tabular data) form a single channel and are normalised over their ``D``
    features; each tensor of a tuple input is normalised on its own. The
    mask is detached: it carries no gradient.

    **Noise floor.** Min-max normalisation stretches any map to [0, 1], also
    one that is only rounding noise (for example from a model whose output
    does not depend on the input), and the stretched noise depends on the
    batch the example sits in. A block (example, or example-channel) whose
    spread :math:`\max A - \min A` is at most 16 float ulps of the block's
    magnitude :math:`\max |A|`, or at most 16 ulps of the model's output
    :math:`|f_k(x)|` for that example (this compares like with like for
    maps in output units, such as GxSI, Gradient * Input and IG; the output
    is taken from the wrapped method's own forward pass on the unmasked
    inputs when it makes one, as gradient methods do, else from one extra
    forward pass per call), carries no
    information: its mask factor is **1** at that iteration (the running mask
    of the block is left unchanged, the neutral element of the product), and
    a warning names the examples. Constant maps are covered by the same
    rule. The decision is per example (for a model with one output per
    example; a model returning one value for the whole batch is scaled by its
    largest entry), so a batch gives the same masks as its examples one at a
    time.

    Every example is processed in the same batched call of the wrapped method
    per iteration (no per-example loop), so the cost is ``n_iterations``
    calls of the wrapped method plus element-wise work.

    Args:
        forward_func (Callable): The forward function of the model or any
            modification of it.
        attribution_method (type or Attribution): The method ``Expl``: an
            attribution *class* (constructed as ``attribution_method(
            forward_func)``, e.g. :class:`GradientSignInput`,
            :class:`captum.attr.InputXGradient`,
            :class:`captum.attr.IntegratedGradients`,
            :class:`captum.attr.DeepLift`, :class:`captum.attr.GuidedBackprop`,
            :class:`captum.attr.Saliency`) or a ready *instance* (e.g.
            ``NoiseTunnel(IntegratedGradients(model))``), used as given. It
            must return attributions shaped like its inputs (layer and neuron
            methods do not). Default: :class:`GradientSignInput`.

    Examples::

        >>> model = nib_vgg("vgg13-6", in_channels=1, width=0.125, image_size=8)
        >>> rma = RecursiveMaskAttribution(model.eval())  # GxSI masks
        >>> mask = rma.attribute(images, target=labels, n_iterations=5)
        >>> masked_images = images * mask
        >>> ig_masks = RecursiveMaskAttribution(model, IntegratedGradients)
        >>> m = ig_masks.attribute(images, target=labels, n_steps=32)
    """

    def __init__(
        self,
        forward_func: Callable[..., Any],
        attribution_method: type[Attribution] | Attribution = GradientSignInput,
    ) -> None:
        GradientAttribution.__init__(self, forward_func)
        is_class = isinstance(attribution_method, type)
        cls = (
            attribution_method
            if isinstance(attribution_method, type)
            else type(attribution_method)
        )
        if not issubclass(cls, Attribution):
            got = f"the class {cls.__name__}" if is_class else cls.__name__
            raise TypeError(
                "`attribution_method` must be a captum Attribution class or "
                f"instance, got {got}."
            )
        if is_class and issubclass(cls, NoiseTunnel):
            raise TypeError(
                "`attribution_method`: NoiseTunnel wraps an attribution "
                "instance; pass NoiseTunnel(Method(forward_func)) instead "
                "of the class."
            )
        if issubclass(cls, InternalAttribution):
            raise TypeError(
                "`attribution_method` must attribute to the inputs; layer "
                f"and neuron methods ({cls.__name__}) return maps that cannot "
                "mask the inputs."
            )
        if not is_class:
            own = getattr(attribution_method, "forward_func", None)
            if own is not None and not _same_model(own, forward_func):
                raise ValueError(
                    "`attribution_method` was built on a different forward "
                    f"function or model ({_name(own)}) than `forward_func` "
                    f"({_name(forward_func)}): the masks would explain that other "
                    "model. Build the instance on `forward_func`, or pass the class."
                )
        method = (
            attribution_method(forward_func)
            if isinstance(attribution_method, type)
            else attribution_method
        )
        self.attribution_method = method

    @log_usage(part_of_slo=True)
    @preserves_model_state
    def attribute(
        self,
        inputs: TensorOrTupleOfTensorsGeneric,
        target: TargetType = None,
        additional_forward_args: Any = None,
        n_iterations: int = 3,
        return_all_masks: bool = False,
        per_channel: bool = True,
        show_progress: bool = False,
        **attribution_kwargs: Any,
    ) -> TensorOrTupleOfTensorsGeneric:
        r"""Compute the recursive attribution mask :math:`m^*`.

        Args:
            inputs (Tensor or tuple[Tensor, ...]): Input for which the mask is
                computed. Dimension 0 of every tensor indexes examples; a
                tuple is passed to ``forward_func`` as separate arguments.
                Every tensor needs at least one feature dimension.
            target (int, tuple, Tensor, or list, optional): The class ``k``
                the masks focus on, with Captum's ``TargetType`` semantics;
                the same target is used at every iteration. The paper uses the
                true label, which lets the label shape the masked input; pass
                the model's predictions to avoid that. Default: None.
            additional_forward_args (Any, optional): Extra arguments passed to
                ``forward_func`` (and to the wrapped method) after the inputs;
                they are not masked. Default: None.
            n_iterations (int): Number of iterations ``I`` (attribution calls).
                Default: 3.
            return_all_masks (bool): Also return the intermediate masks: each
                output tensor then has a leading iteration dimension of size
                ``n_iterations``, entry ``i - 1`` being :math:`m^*_i`.
                Default: False.
            per_channel (bool): Normalise per channel (dimension 1) for inputs
                with three or more dimensions, as the paper does for images;
                False normalises each example over all its features.
                Default: True.
            show_progress (bool): Show a progress bar over the iterations
                (Captum's ``tqdm`` bar, on stderr). It is this method's own
                argument, not passed to the wrapped method. Default: False.
            **attribution_kwargs (Any): Passed unchanged to the wrapped
                method's ``attribute`` at every iteration (e.g. ``baselines``,
                ``n_steps``, ``internal_batch_size`` for Integrated Gradients,
                ``abs`` for Saliency, ``nt_type`` / ``nt_samples`` / ``stdevs``
                for NoiseTunnel). Baselines are not masked.

        Returns:
            Tensor or tuple[Tensor, ...]: The mask :math:`m^*_I` with the
            structure, shapes and dtypes of ``inputs``, values in [0, 1]; with
            ``return_all_masks=True``, tensors of shape
            ``(n_iterations, *input.shape)``.

        Examples::

            >>> rma = RecursiveMaskAttribution(model, GradientSignInput)
            >>> masks = rma.attribute(x, target=y, n_iterations=10,
            ...                       return_all_masks=True)
            >>> masks.shape  # (10, *x.shape)
        """
        if isinstance(self.attribution_method, GradientAttribution):
            check_grad_mode(
                f"RecursiveMaskAttribution({type(self.attribution_method).__name__})"
            )
        is_inputs_tuple, inputs_tuple = format_inputs(inputs)
        validate_target(target, inputs_tuple[0].shape[0])
        check_positive_int(n_iterations, "n_iterations")
        for name, flag in (
            ("return_all_masks", return_all_masks),
            ("per_channel", per_channel),
            ("show_progress", show_progress),
        ):
            if not isinstance(flag, bool):
                raise TypeError(f"`{name}` must be a bool, got {type(flag).__name__}.")
        if attribution_kwargs.get("return_convergence_delta", False):
            raise ValueError(
                "`return_convergence_delta` is not supported: "
                "RecursiveMaskAttribution returns masks, not attributions."
            )
        for i, x in enumerate(inputs_tuple):
            if x.dim() < 2:
                label = f"inputs[{i}]" if is_inputs_tuple else "inputs"
                raise ValueError(
                    f"`{label}` must have at least one feature dimension after "
                    f"the batch dimension to be masked; got shape {tuple(x.shape)}."
                )

        originals = tuple(x.detach() for x in inputs_tuple)
        floor: Tensor | None = None
        masks: tuple[Tensor, ...] | None = None
        history: list[tuple[Tensor, ...]] = []
        flagged: set[int] = set()
        for _ in progress(
            range(n_iterations),
            desc="RecursiveMaskAttribution",
            total=n_iterations,
            disable=not show_progress,
        ):
            current = (
                originals
                if masks is None
                else tuple(x * m for x, m in zip(originals, masks))
            )
            with self._capture_output(originals if masks is None else None) as seen:
                attributions = self.attribution_method.attribute(
                    _format_output(is_inputs_tuple, current),
                    target=target,
                    additional_forward_args=additional_forward_args,
                    **attribution_kwargs,
                )
            if masks is None:
                floor = self._output_floor(
                    originals, target, additional_forward_args, seen
                )
            step = self._masks_from(
                attributions, originals, per_channel, floor, flagged
            )
            masks = step if masks is None else tuple(m * s for m, s in zip(masks, step))
            if return_all_masks:
                history.append(masks)
        assert masks is not None
        if flagged:
            examples = sorted(flagged)
            warnings.warn(
                "RecursiveMaskAttribution: the map of `attribution_method` is at "
                "float rounding level (spread within 16 ulps of its magnitude or "
                f"of the model output) for examples {examples[:10]}"
                + (" ..." if len(examples) > 10 else "")
                + "; their mask factor is 1 at those iterations. Check that the "
                "model's output depends on `inputs`.",
                UserWarning,
                stacklevel=3,  # the caller of attribute (past log_usage)
            )
        result = (
            tuple(torch.stack([h[j] for h in history]) for j in range(len(masks)))
            if return_all_masks
            else masks
        )
        return cast(
            TensorOrTupleOfTensorsGeneric, _format_output(is_inputs_tuple, result)
        )

    @contextmanager
    def _capture_output(
        self, originals: tuple[Tensor, ...] | None
    ) -> Iterator[list[Tensor]]:
        """Keep the model's output on ``originals`` if the wrapped method runs it.

        Gradient methods (GxSI, Saliency, Gradient * Input, ...) run the model
        on the unmasked inputs in the first iteration; a forward hook, removed
        on exit, keeps that output so the noise floor needs no pass of its own.
        """
        seen: list[Tensor] = []
        model = self.forward_func
        if originals is None or not isinstance(model, nn.Module):
            yield seen
            return

        def hook(module: nn.Module, args: Any, output: Any) -> None:
            if seen or not isinstance(output, Tensor) or len(args) < len(originals):
                return
            for a, x in zip(args, originals):
                if not (
                    isinstance(a, Tensor)
                    and a.shape == x.shape
                    and a.dtype == x.dtype
                    and torch.equal(a.detach(), x)
                ):
                    return
            seen.append(output.detach())

        handle = model.register_forward_hook(hook)
        try:
            yield seen
        finally:
            handle.remove()

    def _output_floor(
        self,
        inputs: tuple[Tensor, ...],
        target: TargetType,
        additional_forward_args: Any,
        seen: list[Tensor],
    ) -> Tensor | None:
        """Per-example spread below which a map is rounding noise of the output."""
        if seen:
            out: Any = _select_targets(seen[0], target)
        else:
            with torch.no_grad():
                out = _run_forward(
                    self.forward_func, inputs, target, additional_forward_args
                )
        if not isinstance(out, Tensor) or not out.is_floating_point():
            return None
        n = inputs[0].shape[0]
        scale = out.detach().abs()
        scale = scale.reshape(n) if scale.numel() == n else scale.max().expand(n)
        return _CONSTANT_ULPS * torch.finfo(out.dtype).eps * scale

    def _masks_from(
        self,
        attributions: Any,
        originals: tuple[Tensor, ...],
        per_channel: bool,
        floor: Tensor | None,
        flagged: set[int],
    ) -> tuple[Tensor, ...]:
        attr_tuple = _format_tensor_into_tuples(attributions)
        if len(attr_tuple) != len(originals):
            raise ValueError(
                f"`attribution_method` returned {len(attr_tuple)} tensors for "
                f"{len(originals)} inputs."
            )
        out = []
        for a, x in zip(attr_tuple, originals):
            if not isinstance(a, Tensor) or a.shape != x.shape:
                shape = tuple(a.shape) if isinstance(a, Tensor) else type(a).__name__
                raise ValueError(
                    "`attribution_method` must return attributions shaped like "
                    f"its inputs; got {shape} for an input of shape "
                    f"{tuple(x.shape)}."
                )
            mask, constant = _minmax_parts(a.detach(), per_channel, floor)
            if bool(constant.any()):
                flagged.update(torch.nonzero(constant.any(1)).flatten().tolist())
                if per_channel and a.dim() >= 3:
                    view = constant.view(*constant.shape, *([1] * (a.dim() - 2)))
                else:
                    view = constant.view(-1, *([1] * (a.dim() - 1)))
                mask = mask.masked_fill(view, 1.0)
            out.append(mask.to(x.dtype))
        return tuple(out)

    def attribute_future(self) -> None:
        """Not implemented: the mask is computed synchronously."""
        raise NotImplementedError(
            "attribute_future is not implemented for RecursiveMaskAttribution"
        )


def _name(obj: Any) -> str:
    return getattr(obj, "__qualname__", None) or type(obj).__name__
