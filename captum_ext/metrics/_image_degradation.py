"""Image degradation (region perturbation) curves and their AOPC summary."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any, Literal, cast

import torch
from captum._utils.typing import TargetType, TensorOrTupleOfTensorsGeneric
from captum.log import log_usage
from torch import Tensor

from captum_ext._utils.model_state import preserves_model_state
from captum_ext._utils.validation import (
    check_generator,
    check_positive_int,
    format_inputs,
)
from captum_ext.metrics._curves import (
    BatchSize,
    check_batch_size,
    check_blur_sigma,
    check_examples,
    check_fill,
    check_forward_args,
    check_target,
    examples_per_pass,
    feature_ranks,
    patch_region_map,
    perturbation_curve,
    region_ranks,
    region_scores,
    resolve_fills,
    score_function,
    warn_if_not_finite,
)

Replacement = str | float | Tensor | tuple[Any, ...] | Callable[[Tensor], Tensor]

_ORDERS = ("morf", "lerf", "random")


@log_usage(part_of_slo=True)
@preserves_model_state
def image_degradation(
    forward_func: Callable[..., Tensor],
    inputs: TensorOrTupleOfTensorsGeneric,
    attributions: TensorOrTupleOfTensorsGeneric,
    target: TargetType = None,
    patch_size: int = 9,
    n_steps: int | None = 100,
    fill: Replacement = "patch_mean",
    order: Literal["morf", "lerf", "random"] = "morf",
    additional_forward_args: Any = None,
    generator: torch.Generator | None = None,
    max_examples_per_batch: BatchSize = "auto",
    *,
    blur_sigma: float | None = None,
    probability_fn: Callable[[Tensor], Tensor] | None = None,
    show_progress: bool = False,
    replacement: Replacement | None = None,
) -> Tensor:
    r"""Image degradation curves: the target's probability as patches are replaced.

    The benchmark of Schwarzenberg & Castle, "Pattern-Guided Integrated
    Gradients" (ICML 2020 workshop, https://arxiv.org/abs/2007.10685,
    section 5), after Kindermans et al. (2018) and Samek et al. (2016,
    "region perturbation", https://arxiv.org/abs/1509.06321). Each image is
    tiled into ``patch_size x patch_size`` patches; each patch :math:`P` is
    scored by its summed, channel-summed attribution

    .. math::

        s_P = \sum_{(h, w) \in P} \sum_c a_{c,h,w} ,

    and the patches are ranked (``order="morf"``: most relevant first, i.e.
    descending :math:`s_P`; ``"lerf"``: ascending; ``"random"``: a random
    permutation from ``generator``). Step :math:`k` replaces the first
    :math:`k` patches :math:`\pi_1, \dots, \pi_k` of the ranking in **every**
    channel and records the probability of the target (softmax unless
    ``probability_fn`` is given),

    .. math::

        p_k = \operatorname{softmax}\big(f(x^{(k)})\big)_t, \qquad
        x^{(k)}_{c,h,w} = \begin{cases}
            r_{c,h,w} & (h, w) \in \pi_1 \cup \dots \cup \pi_k \\
            x_{c,h,w} & \text{otherwise,}
        \end{cases}

    where, for the default ``fill="patch_mean"``, :math:`r_{c,h,w}` is
    the mean of channel :math:`c` of the *original* image over the patch that
    holds :math:`(h, w)` (the paper's "mean channel values"). Step 0 is the
    intact input, so the result has ``n_steps + 1`` columns. A faithful
    attribution makes the MoRF curve drop fast; :func:`aopc` summarises a curve.

    **Steps and patches.** One patch is replaced per step, as in the paper
    ("successively degrade the top 100 patches"): ``n_steps`` may be smaller
    than the number of patches (the curve then covers the ``n_steps`` top
    patches only), ``n_steps=None`` degrades every patch (the last point is the
    fully replaced image), and ``n_steps`` larger than the number of patches is
    an error. To cover a whole large image with fewer points, use larger
    patches. Patches tile the image from the top-left corner; when ``H`` or
    ``W`` is not a multiple of ``patch_size`` the last row / column of patches
    is narrower (their means are over their own pixels). With a tuple of
    inputs, the patches of all inputs are ranked together.

    **Differences from the authors' code** (the ``DFKI-NLP/pgig`` repository,
    https://github.com/DFKI-NLP/pgig): its degradation loop never degrades
    the top-ranked patch, and it skips channels whose patch mean is
    :math:`\le 0`. Here the top patch is replaced at step 1 and every channel
    of a patch is replaced.

    Ties between equal patch scores are broken by patch index (row-major), so
    results are deterministic. All perturbed inputs are built by tensor
    indexing and evaluated in batched forward passes of at most
    ``max_examples_per_batch`` images; the result does not depend on it.

    Args:
        forward_func (Callable): The model; returns logits ``(bsz, n_classes)``
            (the softmax over dimension 1 is applied here unless
            ``probability_fn`` is given).
        inputs (Tensor or tuple[Tensor, ...]): Images ``(bsz, C, H, W)``, at
            least one.
        attributions (Tensor or tuple[Tensor, ...]): Attributions with the
            structure of ``inputs``, each ``(bsz, C, H, W)`` or
            ``(bsz, 1, H, W)``, finite; only their per-patch sums are used.
        target (int, tuple, Tensor, or list, optional): Index of the recorded
            score in the output of ``probability_fn`` (by default the class
            whose probability is recorded), with Captum's ``TargetType``
            semantics. As in Captum, None takes that output whole, so it must
            be one score per example (e.g. ``probability_fn=lambda out:
            out.softmax(1)[:, 3]``); with the default softmax, ``target`` is
            required. For the predicted class, pass
            ``target=forward_func(inputs).argmax(1)``. Default: None.
        patch_size (int): Side of the square patches. Default: 9 (the paper's
            224 x 224 ImageNet setting).
        n_steps (int or None): Number of patches replaced, one per step (see
            above). None: all patches. Default: 100.
        fill (str, float, Tensor, Callable or tuple): The value a replaced
            pixel takes, in the metrics' one fill vocabulary.
            ``"patch_mean"`` (default): the per-example, per-channel mean of
            the patch; ``"zero"``: 0; ``"mean"``: the per-example,
            per-channel mean of the image; ``"blur"``: the image blurred by a
            Gaussian of standard deviation ``blur_sigma`` (replicate
            padding); a number: that constant; a Tensor broadcastable to the
            input; a callable mapping an input tensor to such a tensor (e.g.
            a different blur), called once on the intact input; or a tuple
            with one of these per input tensor.
        order (str): ``"morf"`` (most relevant first, default), ``"lerf"``
            (least relevant first) or ``"random"`` (attributions ignored).
        additional_forward_args (Any, optional): Extra arguments passed to
            ``forward_func`` after the inputs. As in Captum, every tensor with
            a dimension is per-example (leading dimension ``bsz``) and is
            repeated along the curve; other values are passed unchanged.
            Default: None.
        generator (torch.Generator, optional): Source of randomness for
            ``order="random"``. Default: None (the global RNG).
        max_examples_per_batch (int, None or "auto", optional): Most
            perturbed images per forward pass. None: all ``bsz * (n_steps +
            1)`` at once (as in Captum); ``"auto"``: at most 2**21 input
            elements per pass (13 images of 3 x 224 x 224), which bounds
            memory. The result does not depend on it. Default: ``"auto"``.
        blur_sigma (float, optional): Standard deviation (pixels, > 0) of the
            ``"blur"`` fill. None: ``patch_size / 2``. Default: None.
        probability_fn (Callable, optional): Maps model outputs to scores.
            Default: None (softmax over dimension 1).
        show_progress (bool, optional): Show a progress bar over the
            perturbed images. Default: False.
        replacement: Deprecated alias of ``fill`` (DeprecationWarning).

    Returns:
        Tensor: ``(bsz, n_steps + 1)`` target probabilities; column 0 is the
        intact input, column ``k`` the input with ``k`` patches replaced.

    Examples::

        >>> from captum.attr import IntegratedGradients
        >>> attr = IntegratedGradients(net).attribute(images, target=labels)
        >>> curves = image_degradation(
        ...     net, images, attr, target=labels, patch_size=2, n_steps=None
        ... )
        >>> aopc(curves).mean()  # larger: the attribution found what matters
    """
    if replacement is not None:
        warnings.warn(
            "`replacement` is deprecated; use `fill` (the metrics' one fill "
            "vocabulary).",
            DeprecationWarning,
            stacklevel=3,
        )
        if not (isinstance(fill, str) and fill == "patch_mean"):
            raise TypeError("Pass `fill` only (`replacement` is its deprecated alias).")
        fill = replacement
    is_tuple, xs = format_inputs(inputs)
    bsz = check_examples(xs, is_tuple)
    attrs = _check_attributions(attributions, xs, is_tuple)
    check_positive_int(patch_size, "patch_size")
    check_positive_int(n_steps, "n_steps", allow_none=True)
    check_batch_size(max_examples_per_batch)
    if order not in _ORDERS:
        raise ValueError(f"`order` must be one of {_ORDERS}, got {order!r}.")
    check_generator(generator)
    check_target(target, bsz)
    check_blur_sigma(blur_sigma, allow_none=True)
    score_fn = score_function(probability_fn, target)
    maps = [patch_region_map(x.shape[2], x.shape[3], patch_size) for x in xs]
    n_patches = sum(n for _, n in maps)
    steps = n_patches if n_steps is None else n_steps
    if steps > n_patches:
        raise ValueError(
            f"`n_steps` ({n_steps}) is larger than the number of patches "
            f"({n_patches} patches of {patch_size}x{patch_size}); pass "
            "n_steps=None to degrade every patch, or a smaller patch_size."
        )
    check_fill(fill, xs, patches=True)
    afa = check_forward_args(additional_forward_args, bsz)
    sigma = patch_size / 2.0 if blur_sigma is None else float(blur_sigma)

    with torch.no_grad():
        fills = resolve_fills(fill, xs, sigma, regions=maps)
        ranks = _patch_ranks(attrs, maps, order, generator)
        curve = perturbation_curve(
            forward_func,
            xs,
            fills,
            ranks,
            torch.arange(0, steps + 1),
            "delete",
            target,
            afa,
            examples_per_pass(max_examples_per_batch, xs),
            score_fn,
            show_progress,
            "image degradation",
        )
    warn_if_not_finite(curve, "The image degradation curve")
    return curve


@log_usage()
@preserves_model_state
def aopc(curves: Tensor) -> Tensor:
    r"""Area over the perturbation curve (AOPC), one value per example.

    Samek et al. (2016, https://arxiv.org/abs/1509.06321), eq. 12, for a
    degradation curve
    :math:`p_0, \dots, p_L` (column 0 the intact input, as returned by
    :func:`image_degradation`):

    .. math::

        \mathrm{AOPC} = \frac{1}{L + 1} \sum_{k=0}^{L} \big(p_0 - p_k\big) .

    For most-relevant-first curves larger is better (the probability drops
    sooner); for least-relevant-first curves smaller is better. Average over
    examples for the data-set score.

    Args:
        curves (Tensor): ``(bsz, L + 1)`` curves.

    Returns:
        Tensor: ``(bsz,)`` AOPC values.

    Examples::

        >>> curves = image_degradation(net, images, attr, target=labels)
        >>> aopc(curves).mean()
    """
    if not isinstance(curves, Tensor):
        raise TypeError(f"`curves` must be a Tensor, got {type(curves).__name__}.")
    if curves.dim() != 2 or curves.shape[1] < 1:
        raise ValueError(
            "`curves` must have shape (bsz, n_points) with n_points >= 1, got "
            f"{tuple(curves.shape)}."
        )
    if curves.numel() and not bool(torch.isfinite(curves).all()):
        raise ValueError("`curves` contains NaN or infinite values.")
    return (curves[:, :1] - curves).mean(dim=1)


def _check_attributions(
    attributions: Any, xs: tuple[Tensor, ...], is_tuple: bool
) -> tuple[Tensor, ...]:
    """Attributions must mirror the inputs' structure; returns them as a tuple."""
    for i, x in enumerate(xs):
        if x.dim() != 4:
            label = f"inputs[{i}]" if is_tuple else "inputs"
            raise ValueError(
                f"`{label}` must be images of shape (bsz, C, H, W); got shape "
                f"{tuple(x.shape)} (add a channel dimension with x.unsqueeze(1))."
            )
    if is_tuple:
        if not isinstance(attributions, tuple) or len(attributions) != len(xs):
            raise TypeError(
                f"`attributions` must be a tuple of {len(xs)} Tensors, like "
                f"`inputs`; got {type(attributions).__name__}."
            )
        attrs = attributions
    else:
        if not isinstance(attributions, Tensor):
            raise TypeError(
                "`attributions` must be a Tensor, like `inputs`; got "
                f"{type(attributions).__name__}."
            )
        attrs = (attributions,)
    out = []
    for i, (a, x) in enumerate(zip(attrs, xs)):
        label = f"attributions[{i}]" if is_tuple else "attributions"
        if not isinstance(a, Tensor):
            raise TypeError(f"`{label}` must be a Tensor, got {type(a).__name__}.")
        ok = (
            a.dim() == 4
            and a.shape[0] == x.shape[0]
            and a.shape[1] in (1, x.shape[1])
            and a.shape[2:] == x.shape[2:]
        )
        if not ok:
            raise ValueError(
                f"`{label}` must have shape {tuple(x.shape)} or "
                f"{(x.shape[0], 1, *x.shape[2:])} to match the inputs; got "
                f"{tuple(a.shape)}."
            )
        a = a.detach()
        if a.is_complex():
            raise TypeError(f"`{label}` must be real, got {a.dtype}.")
        if not a.is_floating_point():
            a = a.to(torch.get_default_dtype())
        if not bool(torch.isfinite(a).all()):
            raise ValueError(f"`{label}` contains NaN or infinite values.")
        out.append(a)
    return tuple(out)


def _patch_ranks(
    attrs: tuple[Tensor, ...],
    maps: list[tuple[Tensor, int]],
    order: str,
    generator: torch.Generator | None,
) -> tuple[Tensor, ...]:
    """Per-pixel rank of each pixel's patch, ranking all inputs' patches jointly."""
    dtype = attrs[0].dtype
    for a in attrs[1:]:
        dtype = torch.promote_types(dtype, a.dtype)
    scores = torch.cat(
        [region_scores(a.to(dtype), rm, n) for a, (rm, n) in zip(attrs, maps)], dim=1
    )
    ranks = region_ranks(scores, cast(Any, order), generator)
    out, offset = [], 0
    for rm, n in maps:
        out.append(feature_ranks(ranks[:, offset : offset + n], rm))
        offset += n
    return tuple(out)
