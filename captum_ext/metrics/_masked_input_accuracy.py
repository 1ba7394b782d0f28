"""Masked input accuracy (eq. 12 of the GxSI paper) and its curve over iterations."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import torch
from captum._utils.common import _format_output
from captum._utils.progress import progress
from captum._utils.typing import TensorOrTupleOfTensorsGeneric
from captum.attr import Attribution
from captum.log import log_usage
from torch import Tensor

from captum_ext._utils.batching import repeat_forward_args, slice_forward_args
from captum_ext._utils.model_state import preserves_model_state
from captum_ext._utils.validation import (
    check_broadcasts_to,
    check_positive_int,
    format_inputs,
)
from captum_ext.attr._core.gradient_sign_input import GradientSignInput
from captum_ext.attr._core.recursive_mask import RecursiveMaskAttribution
from captum_ext.metrics._curves import (
    BatchSize,
    batched_outputs,
    check_batch_size,
    check_examples,
    check_finite_explanations,
    check_forward_args,
    examples_per_pass,
)


def _format_labels(labels: Any, n: int, device: torch.device) -> Tensor:
    if isinstance(labels, list):
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in labels):
            raise TypeError("`labels` given as a list must hold ints.")
        labels = torch.tensor(labels, dtype=torch.long)
    if not isinstance(labels, Tensor):
        raise TypeError(
            "`labels` must be a 1-D integer Tensor or a list of ints, got "
            f"{type(labels).__name__}."
        )
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise TypeError(f"`labels` must hold integer classes, got {labels.dtype}.")
    if labels.dim() != 1 or labels.shape[0] != n:
        raise ValueError(
            f"`labels` must have shape ({n},) (one class per example), got "
            f"{tuple(labels.shape)}."
        )
    if n > 0 and int(labels.min()) < 0:
        raise ValueError("`labels` must be non-negative class indices.")
    return labels.to(device)


def _format_masks(masks: Any, inputs: tuple[Tensor, ...], is_tuple: bool) -> Any:
    if is_tuple != isinstance(masks, tuple):
        raise TypeError(
            "`masks` must have the structure of `inputs` (a Tensor for a Tensor, "
            "a tuple of the same length for a tuple)."
        )
    masks_tuple = masks if isinstance(masks, tuple) else (masks,)
    if len(masks_tuple) != len(inputs):
        raise ValueError(
            f"`masks` has {len(masks_tuple)} tensors for {len(inputs)} inputs."
        )
    for i, (m, x) in enumerate(zip(masks_tuple, inputs)):
        label = f"masks[{i}]" if is_tuple else "masks"
        if not isinstance(m, Tensor):
            raise TypeError(f"`{label}` must be a Tensor, got {type(m).__name__}.")
        check_broadcasts_to(m, x, f"`{label}`")
    check_finite_explanations(tuple(m.detach() for m in masks_tuple), "masks")
    return masks_tuple


def _check_logits(output: Tensor, labels: Tensor) -> None:
    if output.dim() != 2:
        raise ValueError(
            "`forward_func` must return class scores of shape (N, n_classes); "
            f"got {tuple(output.shape)}."
        )
    if labels.numel() > 0 and int(labels.max()) >= output.shape[1]:
        raise ValueError(
            f"`labels` holds class {int(labels.max())} but the model has "
            f"{output.shape[1]} outputs."
        )


@log_usage(part_of_slo=True)
@preserves_model_state
def masked_input_accuracy(
    forward_func: Callable[..., Any],
    inputs: TensorOrTupleOfTensorsGeneric,
    masks: TensorOrTupleOfTensorsGeneric,
    labels: Tensor | list[int],
    additional_forward_args: Any = None,
    max_examples_per_batch: BatchSize = "auto",
) -> Tensor:
    r"""Masked input accuracy (MIA, eq. 12 of the GxSI paper), per example.

    Lee & Chang, "Attribution Mask: Filtering Out Irrelevant Features By
    Recursively Focusing Attention on Inputs of DNNs": whether the model still
    predicts the label when the input is multiplied by a mask,

    .. math::

        Q = \frac{1}{|\mathcal{D}|} \sum_{(x, t) \in \mathcal{D}}
        \mathbb{1}\left[\arg\max_k f_k(x \circ m) = t\right];

    this function returns the indicator per example (``.float().mean()``
    gives :math:`Q`). The masks usually come from
    :class:`captum_ext.attr.RecursiveMaskAttribution`;
    :func:`masked_input_accuracy_curve` runs the whole protocol over
    iterations in one call.

    Runs under ``torch.no_grad()`` with at most ``max_examples_per_batch``
    examples per forward pass; the result does not depend on it.

    Args:
        forward_func (Callable): The model; returns class scores
            ``(N, n_classes)``.
        inputs (Tensor or tuple[Tensor, ...]): Inputs ``x`` (at least one
            example); a tuple is passed to ``forward_func`` as separate
            arguments.
        masks (Tensor or tuple[Tensor, ...]): Finite masks with the structure
            of ``inputs``, each broadcastable to its input (e.g.
            ``(N, 1, H, W)`` for ``(N, 3, H, W)`` images).
        labels (Tensor or list[int]): Class ``t`` of each example, ``(N,)``.
        additional_forward_args (Any, optional): Extra arguments passed to
            ``forward_func`` after the inputs. As in Captum, every tensor
            with a dimension is per-example (first dimension ``N``) and is
            sliced with the examples; other values are passed unchanged.
            Default: None.
        max_examples_per_batch (int, None or "auto", optional): Most examples
            per forward pass; None: all at once (as in Captum); ``"auto"``: at
            most 2**21 input elements per pass, which bounds memory.
            Default: ``"auto"``.

    Returns:
        Tensor: ``(N,)`` bool, True where ``argmax f(x * m) == label``.

    Examples::

        >>> masks = RecursiveMaskAttribution(model).attribute(x, target=y)
        >>> mia = masked_input_accuracy(model, x, masks, y).float().mean()
    """
    is_tuple, inputs_tuple = format_inputs(inputs, require_float=False)
    n = check_examples(inputs_tuple, is_tuple)
    masks_tuple = _format_masks(masks, inputs_tuple, is_tuple)
    labels_t = _format_labels(labels, n, inputs_tuple[0].device)
    check_batch_size(max_examples_per_batch)
    afa = check_forward_args(additional_forward_args, n)
    with torch.no_grad():
        masked = tuple(x * m for x, m in zip(inputs_tuple, masks_tuple))
        output = batched_outputs(
            forward_func,
            masked,
            afa,
            examples_per_pass(max_examples_per_batch, inputs_tuple),
        )
    _check_logits(output, labels_t)
    return output.argmax(dim=1) == labels_t


@log_usage(part_of_slo=True)
@preserves_model_state
def masked_input_accuracy_curve(
    forward_func: Callable[..., Any],
    inputs: TensorOrTupleOfTensorsGeneric,
    labels: Tensor | list[int],
    attribution_method: type[Attribution] | Attribution = GradientSignInput,
    additional_forward_args: Any = None,
    n_iterations: int = 10,
    mask_target: Literal["label", "predicted"] = "label",
    attribution_kwargs: dict[str, Any] | None = None,
    per_channel: bool = True,
    show_progress: bool = False,
    max_examples_per_batch: BatchSize = "auto",
) -> Tensor:
    r"""Masked input accuracy after 0, 1, ..., ``n_iterations`` mask iterations.

    The evaluation protocol of the GxSI paper (tables 2, 5, 6; Algorithm 1 and
    eq. 12) in one call: column 0 says whether the model classifies the clean
    input correctly, column ``i`` whether it classifies
    :math:`x \circ m^*_i` correctly, where :math:`m^*_i` is the recursive
    attribution mask after ``i`` iterations
    (:class:`captum_ext.attr.RecursiveMaskAttribution` with
    ``attribution_method``). ``.float().mean(0)`` is the MIA curve
    :math:`Q_0, Q_1, \dots, Q_I`.

    **Which class the masks explain.** ``mask_target="label"`` is the
    paper's protocol (and the authors' code): masks are computed for the
    *true label*, so the label shapes the masked input that is then scored
    against that same label. The label leaks into the input, and a curve
    above the clean accuracy partly measures that leak, not only the
    attribution method. ``mask_target="predicted"`` computes the masks for
    the model's prediction on the clean input, which uses no label: it
    measures how well masking preserves (and occasionally corrects) the
    prediction. Report which one you use.

    Cost: ``n_iterations`` batched calls of the attribution method and
    ``n_iterations + 1`` forward passes over the data. With
    ``max_examples_per_batch`` the examples are processed in chunks of that
    size (attribution calls and forward passes alike), which bounds memory;
    the result does not depend on it.

    Args:
        forward_func (Callable): The model; returns class scores
            ``(N, n_classes)``.
        inputs (Tensor or tuple[Tensor, ...]): Inputs (at least one
            example); a tuple is passed to ``forward_func`` as separate
            arguments.
        labels (Tensor or list[int]): True class of each example, ``(N,)``.
        attribution_method (type or Attribution): The method the masks are
            built from, as in :class:`RecursiveMaskAttribution` (a class
            constructed on ``forward_func`` or a ready instance).
            Default: :class:`captum_ext.attr.GradientSignInput`.
        additional_forward_args (Any, optional): Extra arguments passed to
            ``forward_func`` after the inputs; every tensor with a dimension
            is per-example, as in Captum. Default: None.
        n_iterations (int): Number of mask iterations ``I``. Default: 10.
        mask_target (str): ``"label"`` (the paper's protocol, leaks the label)
            or ``"predicted"`` (the clean prediction). Default: ``"label"``.
        attribution_kwargs (dict, optional): Passed to the method's
            ``attribute`` at every iteration (e.g. ``{"n_steps": 32}``).
            Tensors whose first dimension is the number of examples (such as
            per-example ``baselines``) are sliced along with the examples
            when ``max_examples_per_batch`` splits them. Default: None.
        per_channel (bool): Normalise masks per channel (see
            :class:`RecursiveMaskAttribution`). Default: True.
        show_progress (bool): Show a progress bar over example chunks.
            Default: False.
        max_examples_per_batch (int, None or "auto", optional): Most examples
            per attribution call and per forward pass; None: all at once (as
            in Captum); ``"auto"``: at most 2**21 input elements per call or
            pass, which bounds memory. The result does not depend on it.
            Default: ``"auto"``.

    Returns:
        Tensor: ``(N, n_iterations + 1)`` bool; column ``i`` is correct
        classification after ``i`` iterations (column 0: clean input).

    Examples::

        >>> curve = masked_input_accuracy_curve(model, x, y, GradientSignInput,
        ...                                     n_iterations=10)
        >>> curve.float().mean(0)  # Q_0 (clean accuracy), Q_1, ..., Q_10
        >>> honest = masked_input_accuracy_curve(model, x, y,
        ...                                      mask_target="predicted")
    """
    is_tuple, inputs_tuple = format_inputs(inputs)
    n = check_examples(inputs_tuple, is_tuple)
    labels_t = _format_labels(labels, n, inputs_tuple[0].device)
    check_positive_int(n_iterations, "n_iterations")
    check_batch_size(max_examples_per_batch)
    if mask_target not in ("label", "predicted"):
        raise ValueError(
            f"`mask_target` must be 'label' or 'predicted', got {mask_target!r}."
        )
    if attribution_kwargs is None:
        attribution_kwargs = {}
    if not isinstance(attribution_kwargs, dict):
        raise TypeError(
            "`attribution_kwargs` must be a dict, got "
            f"{type(attribution_kwargs).__name__}."
        )
    reserved = {"inputs", "target", "additional_forward_args", "n_iterations"}
    clash = sorted(reserved & attribution_kwargs.keys())
    if clash:
        raise ValueError(
            f"`attribution_kwargs` must not contain {clash}; they are set by "
            "masked_input_accuracy_curve."
        )
    masker = RecursiveMaskAttribution(forward_func, attribution_method)
    afa = check_forward_args(additional_forward_args, n)
    per_pass = examples_per_pass(max_examples_per_batch, inputs_tuple)

    with torch.no_grad():
        clean = batched_outputs(forward_func, inputs_tuple, afa, per_pass)
    _check_logits(clean, labels_t)
    predicted = clean.argmax(dim=1)
    targets = labels_t if mask_target == "label" else predicted
    result = torch.zeros(n, n_iterations + 1, dtype=torch.bool, device=labels_t.device)
    result[:, 0] = predicted == labels_t

    step = n if per_pass is None else per_pass
    starts = range(0, n, max(1, step))
    for start in progress(
        starts,
        desc="masked input accuracy",
        disable=not show_progress,
        total=len(starts),
    ):
        sl = slice(start, start + step)
        chunk = tuple(x[sl] for x in inputs_tuple)
        c = chunk[0].shape[0]
        chunk_afa = slice_forward_args(afa, sl, n)
        all_masks = masker.attribute(
            _format_output(is_tuple, chunk),
            target=targets[sl],
            additional_forward_args=chunk_afa,
            n_iterations=n_iterations,
            return_all_masks=True,
            per_channel=per_channel,
            **_slice_per_example(attribution_kwargs, sl, n),
        )
        masks_tuple = all_masks if isinstance(all_masks, tuple) else (all_masks,)
        with torch.no_grad():
            masked = tuple(
                (x.detach().unsqueeze(0) * m).flatten(0, 1)
                for x, m in zip(chunk, masks_tuple)
            )
            output = batched_outputs(
                forward_func,
                masked,
                repeat_forward_args(chunk_afa, n_iterations, c),
                per_pass,
            )
        correct = output.argmax(dim=1).view(n_iterations, c) == labels_t[sl]
        result[sl, 1:] = correct.t()
    return result


def _slice_per_example(kwargs: dict[str, Any], sl: slice, n: int) -> dict[str, Any]:
    """Slice the per-example tensors (leading dimension ``n``) of ``kwargs``.

    Tensors, and tensors inside tuples, whose first dimension is the number of
    examples follow the chunk (e.g. per-example IG ``baselines``); everything
    else is passed unchanged, as Captum treats additional forward arguments.
    """

    def cut(v: Any) -> Any:
        if isinstance(v, Tensor) and v.dim() > 0 and v.shape[0] == n:
            return v[sl]
        return v

    return {
        k: tuple(cut(x) for x in v) if isinstance(v, tuple) else cut(v)
        for k, v in kwargs.items()
    }
