"""Learned saliency masks with distractor replacement, TV and L1 penalties."""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from typing import Any, Literal, cast

import torch
import torch.nn.functional as F
from captum._utils.common import (
    _format_additional_forward_args,
    _format_output,
    _select_targets,
)
from captum._utils.progress import progress
from captum._utils.typing import TargetType, TensorOrTupleOfTensorsGeneric
from captum.attr import GradientAttribution
from captum.log import log_usage
from torch import Tensor

from captum_ext._utils.batching import index_forward_args, target_for_rows
from captum_ext._utils.gradient import run_forward_checked
from captum_ext._utils.model_state import preserves_model_state
from captum_ext._utils.validation import (
    check_generator,
    check_positive_int,
    check_target_in_range,
    format_inputs,
    validate_target,
)

DistractorFn = Callable[[int, torch.Generator | None], Any]

_BETA1, _BETA2, _EPS = 0.9, 0.999, 1e-8


class LearnedMask(GradientAttribution):
    r"""Saliency masks learned against random distractors (complete and sound saliency).

    The mask-learning procedure of Gupta et al., "New Definitions and
    Evaluations for Saliency Methods: Staying Intrinsic, Complete and Sound"
    (NeurIPS 2022, appendix A, eq. 6; https://openreview.net/forum?id=opw858PBJl6).
    For each example a mask
    :math:`M = \sigma(W)` is learned at resolution
    :math:`\lceil H/s \rceil \times \lceil W/s \rceil`, bilinearly upsampled to
    :math:`M^{\times s}` (``align_corners=False``), and the part of the image it
    keeps is pasted onto distractors :math:`\bar x` drawn from a pool of other
    images:

    .. math::

        L(M) = -\log \mathbb{E}_{\bar x}\left[
            p_a\!\left(M^{\times s} \odot x + (1 - M^{\times s}) \odot \bar x\right)
        \right]
        + \lambda_{TV}\, TV(M^{\times s}) + \lambda_1 \lVert M^{\times s} \rVert_1,

    with :math:`TV(M) = \sum_{i,j} |M_{i+1,j} - M_{i,j}|^q + |M_{i,j+1} - M_{i,j}|^q`
    over all pairs of vertical and horizontal neighbours (``tv_power``
    :math:`q`, 2 by default, the squared differences of the authors' code).
    ``tv_variant="authors"`` reproduces the total variation of the authors'
    code (https://github.com/agup/soundness_saliency,
    ``batch_mask_Kcert_TV``), which takes both differences only from the
    pixels with :math:`i < H-1` and :math:`j < W-1` and so leaves out the
    :math:`H-1` vertical differences in the last column and the :math:`W-1`
    horizontal differences in the last row: it sums :math:`2(H-1)(W-1)` of
    the :math:`2HW-H-W` neighbour pairs (1458 of 1512 on a 28x28 mask).

    The expectation is estimated with ``n_distractors`` distractors drawn
    with replacement at every step. :math:`W` starts at zero (mask 0.5) and
    is optimised with Adam (:math:`\beta = (0.9, 0.999)`,
    :math:`\epsilon = 10^{-8}`, the defaults of :class:`torch.optim.Adam`).

    By default the loss is the negative log of the *distractor-averaged*
    probability, as above: appendix A's aim of making the average probability
    :math:`\mathbb{E}_{\bar x}[p_a]` high, through the negative log of its
    footnote 11. Eq. 5-6 of the paper write the expectation outside the log,
    :math:`\mathbb{E}_{\bar x}[-\log p_a(\cdot)]`; ``loss="mean_log"``
    optimises that form (the two differ by Jensen's gap). The authors' code
    does neither: it applies a cross-entropy loss to the averaged
    probabilities, treating them as logits.

    **Batch independence.** All examples of a batch are optimised together:
    every step runs one forward and one backward pass over ``batch x
    n_distractors`` images (in chunks of ``internal_batch_size``). At each
    step *one* set of ``n_distractors`` distractors is drawn (pool indices
    from ``generator``, or one call of a callable pool) and used for every
    example of the batch (each example still sees ``n_distractors``
    independent draws per step, as in the paper; only their sharing across
    the batch is a choice of ours). Each example's loss depends only on its
    own mask and the batch's losses are summed (not averaged), so each
    example's gradient does not depend on the batch size; Adam's update is
    element-wise, and early stopping is decided per example. An example's
    mask is therefore the same (to float rounding) whether it is attributed
    alone or anywhere in a batch, given the same ``generator`` state. (The
    authors' code draws separate distractors for each example from one random
    stream, so an example's draws depend on its position in the batch; it
    also divides the loss by the batch size, which changes Adam's steps only
    through :math:`\epsilon`.)

    Gradients are taken with respect to the mask parameters only
    (:func:`torch.autograd.grad`): the model's parameters keep their
    ``requires_grad`` flags and receive no ``.grad``, and the model's
    ``training`` mode is left as the caller set it.

    Args:
        forward_func (Callable): The forward function of the model or any
            modification of it. It must return logits (turned into
            probabilities with a softmax over dimension 1) unless
            ``probability_fn`` is given to ``attribute``.

    Examples::

        >>> net = ImageClassifier()
        >>> images = torch.randn(4, 3, 32, 32)
        >>> pool = torch.randn(100, 3, 32, 32)  # e.g. training images
        >>> lm = LearnedMask(net)
        >>> masks = lm.attribute(images, target=3, distractors=pool, n_iter=300)
        >>> masks.shape  # values in [0, 1], one value per pixel
        torch.Size([4, 3, 32, 32])
    """

    def __init__(self, forward_func: Callable[..., Tensor]) -> None:
        GradientAttribution.__init__(self, forward_func)

    @log_usage(part_of_slo=True)
    @preserves_model_state
    def attribute(
        self,
        inputs: TensorOrTupleOfTensorsGeneric,
        target: TargetType,
        distractors: Tensor | tuple[Tensor, ...] | DistractorFn,
        additional_forward_args: Any = None,
        n_distractors: int | None = 10,
        n_iter: int = 2000,
        lr: float = 0.05,
        l1_coeff: float = 2e-5,
        tv_coeff: float = 0.01,
        tv_power: int = 2,
        tv_variant: Literal["full", "authors"] = "full",
        upsample: int = 1,
        show_progress: bool = False,
        generator: torch.Generator | None = None,
        probability_fn: Callable[[Tensor], Tensor] | None = None,
        early_stop_patience: int | None = None,
        early_stop_tol: float = 1e-4,
        internal_batch_size: int | None = None,
        return_loss_history: bool = False,
        loss: Literal["log_mean", "mean_log"] = "log_mean",
    ) -> TensorOrTupleOfTensorsGeneric | tuple[TensorOrTupleOfTensorsGeneric, Tensor]:
        r"""Learn one mask per example and return it broadcast to the inputs.

        Args:
            inputs (Tensor or tuple[Tensor, ...]): Images ``(N, C, H, W)`` to
                explain (a tuple of such tensors gets one mask per tensor,
                learned jointly). Dimension 0 indexes examples.
            target (int, tuple, Tensor, or list): The class whose probability
                the mask must keep high, with Captum's ``TargetType``
                semantics (one index for all examples, or one per example).
                None is allowed only when the (probability) output has one
                value per example.
            distractors (Tensor, tuple[Tensor, ...] or Callable): The pool the
                masked-out pixels are taken from: a tensor ``(K, C, H, W)`` of
                K images shaped like one example (a tuple of such tensors, with
                a common K, for tuple inputs), or a callable
                ``(n, generator) -> Tensor`` returning ``n`` distractor images
                ``(n, C, H, W)`` (or a tuple), called once per step with
                ``n = n_distractors``; the images it returns are used for
                every example of the batch. Use a pool of one constant image
                for a grey fill. Must be finite.
            additional_forward_args (Any, optional): Extra arguments passed to
                ``forward_func`` after the inputs; per-example tensors are
                repeated for each distractor. Default: None.
            n_distractors (int or None, optional): Distractors per step, drawn
                with replacement from the pool (or produced by the callable)
                once per step and shared by every example of the batch, so
                that an example's mask does not depend on the batch. None:
                use every image of the pool at every step (the exact
                expectation over the pool; deterministic). Default: 10.
            n_iter (int, optional): Adam steps. Default: 2000 (the paper's).
            lr (float, optional): Adam learning rate. Default: 0.05.
            l1_coeff (float, optional): :math:`\lambda_1`, weight of the sum of
                the upsampled mask's values. Default: 2e-5.
            tv_coeff (float, optional): :math:`\lambda_{TV}`, weight of the
                total variation of the upsampled mask. Default: 0.01.
            tv_power (int, optional): 1 (absolute) or 2 (squared neighbour
                differences, the authors' choice). Default: 2.
            tv_variant (str, optional): ``"full"``: the sum over every pair
                of vertical and horizontal neighbours. ``"authors"``: the sum
                of the authors' code, which leaves out the last column's
                vertical and the last row's horizontal differences (see
                above). Default: ``"full"``.
            upsample (int, optional): Scale factor :math:`s`: the mask is
                learned at ``(ceil(H/s), ceil(W/s))`` and upsampled
                bilinearly. Default: 1.
            show_progress (bool, optional): Show a progress bar with the mean
                loss. Default: False.
            generator (torch.Generator, optional): Source of the distractor
                draws (and passed to a callable pool); the same generator state
                gives the same masks. Default: None (the global RNG).
            probability_fn (Callable, optional): Maps the model's outputs to
                probabilities before the target is selected. Default: None
                (softmax over dimension 1, computed as ``log_softmax`` for
                numerical stability).
            early_stop_patience (int, optional): Stop optimising an example
                once its loss has not improved by more than a relative
                ``early_stop_tol`` for this many steps (each example stops on
                its own; stopped examples leave the forward passes). Default:
                None (run all ``n_iter`` steps).
            early_stop_tol (float, optional): Relative improvement that resets
                the patience counter. Default: 1e-4.
            internal_batch_size (int, optional): As in Captum: the number of
                masked images per forward pass, made of whole distractor
                draws (Captum's "steps") for every example still optimising,
                ``internal_batch_size // examples`` draws per pass (at least
                one, with Captum's warning when ``internal_batch_size`` is
                below the number of examples). The chunks' gradients are
                combined exactly, so results equal the unchunked call (to
                float rounding). Default: None (all at once).
            return_loss_history (bool, optional): Also return the per-example
                loss at every step. Default: False.
            loss (str, optional): ``"log_mean"``: :math:`-\log
                \mathbb{E}_{\bar x}[p_a]`, the negative log of the
                distractor-averaged probability (appendix A: make the
                average probability high; smooth when single distractors
                give tiny probabilities);
                ``"mean_log"``: :math:`\mathbb{E}_{\bar x}[-\log p_a]`, the
                expectation outside the log as written in eq. 5-6 of the
                paper. The two differ by Jensen's gap. Default: ``"log_mean"``.

        Returns:
            Tensor or tuple[Tensor, ...], or (masks, loss_history):
            The learned masks :math:`M^{\times s}` in [0, 1], broadcast over
            channels to the structure and shapes of ``inputs``. With
            ``return_loss_history=True`` also a tensor ``(n_iter, N)`` of each
            example's loss (objective value) at every step, NaN after the
            example stopped early.

        Examples::

            >>> lm = LearnedMask(net)
            >>> masks, history = lm.attribute(
            ...     images, target=labels, distractors=train_images,
            ...     n_iter=500, tv_coeff=0.01, upsample=4,
            ...     generator=torch.Generator().manual_seed(0),
            ...     return_loss_history=True,
            ... )
            >>> kept = masks >= masks.flatten(1).quantile(0.7, dim=1).view(-1, 1, 1, 1)

        Raises:
            ValueError: Before any forward pass for an empty batch, inputs or
                a distractor pool with NaN or inf values, and bad knob values;
                on the first pass when ``probability_fn`` does not return
                finite probabilities in [0, 1]; and as soon as the model's
                outputs or the gradient with respect to a mask stop being
                finite (the masks would be NaN).
        """
        is_inputs_tuple, inputs_tuple = format_inputs(inputs)
        bsz = inputs_tuple[0].shape[0]
        if bsz == 0:
            raise ValueError(
                "`inputs` is an empty batch (dimension 0 has size 0); "
                "LearnedMask needs at least one example."
            )
        for i, x in enumerate(inputs_tuple):
            label = f"inputs[{i}]" if is_inputs_tuple else "inputs"
            if x.dim() != 4:
                raise ValueError(
                    f"`{label}` must be images (N, C, H, W); got shape "
                    f"{tuple(x.shape)}."
                )
            if not bool(torch.isfinite(x).all()):
                raise ValueError(f"`{label}` contains non-finite values (NaN or inf).")
        validate_target(target, bsz)
        pool = _check_distractors(distractors, inputs_tuple, is_inputs_tuple)
        if n_distractors is None:
            if pool is None:
                raise ValueError(
                    "`n_distractors=None` (use the whole pool) needs `distractors` "
                    "to be a tensor pool, not a callable."
                )
        else:
            check_positive_int(n_distractors, "n_distractors")
        check_positive_int(n_iter, "n_iter")
        check_positive_int(upsample, "upsample")
        check_positive_int(internal_batch_size, "internal_batch_size", allow_none=True)
        check_positive_int(early_stop_patience, "early_stop_patience", allow_none=True)
        _check_nonneg_float(lr, "lr", strictly=True)
        _check_nonneg_float(l1_coeff, "l1_coeff")
        _check_nonneg_float(tv_coeff, "tv_coeff")
        _check_nonneg_float(early_stop_tol, "early_stop_tol")
        if tv_power not in (1, 2) or isinstance(tv_power, bool):
            raise ValueError(f"`tv_power` must be 1 or 2, got {tv_power!r}.")
        if tv_variant not in ("full", "authors"):
            raise ValueError(
                f"`tv_variant` must be 'full' or 'authors', got {tv_variant!r}."
            )
        check_generator(generator)
        if probability_fn is not None and not callable(probability_fn):
            raise TypeError("`probability_fn` must be callable or None.")
        if loss not in ("log_mean", "mean_log"):
            raise ValueError(f"`loss` must be 'log_mean' or 'mean_log', got {loss!r}.")

        with torch.enable_grad():
            masks, history = _optimise(
                self.forward_func,
                tuple(x.detach() for x in inputs_tuple),
                target,
                pool,
                distractors if pool is None else None,
                _format_additional_forward_args(additional_forward_args),
                n_distractors,
                n_iter,
                lr,
                l1_coeff,
                tv_coeff,
                tv_power,
                tv_variant,
                upsample,
                show_progress,
                generator,
                probability_fn,
                early_stop_patience,
                early_stop_tol,
                internal_batch_size,
                loss,
            )
        out = cast(
            TensorOrTupleOfTensorsGeneric, _format_output(is_inputs_tuple, masks)
        )
        if return_loss_history:
            return out, history
        return out

    def attribute_future(self) -> None:
        """Not implemented: masks are learned synchronously."""
        raise NotImplementedError("attribute_future is not implemented for LearnedMask")


def _check_nonneg_float(value: Any, name: str, strictly: bool = False) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if ok and math.isfinite(float(value)):
        if (float(value) > 0) if strictly else (float(value) >= 0):
            return
    kind = "a positive" if strictly else "a non-negative"
    raise ValueError(f"`{name}` must be {kind} finite number, got {value!r}.")


def _check_distractors(
    distractors: Any, inputs: tuple[Tensor, ...], is_tuple: bool
) -> tuple[Tensor, ...] | None:
    """Validate a distractor pool; None for a callable."""
    if callable(distractors) and not isinstance(distractors, Tensor):
        return None
    if isinstance(distractors, Tensor):
        if len(inputs) != 1:
            raise TypeError(
                "`distractors` must be a tuple of tensors (one pool per input "
                f"tensor) when `inputs` is a tuple of {len(inputs)} tensors."
            )
        pool: tuple[Tensor, ...] = (distractors,)
    elif isinstance(distractors, tuple) and all(
        isinstance(d, Tensor) for d in distractors
    ):
        pool = distractors
    else:
        raise TypeError(
            "`distractors` must be a Tensor (a pool of images), a tuple of "
            "Tensors or a callable (n, generator) -> Tensor; got "
            f"{type(distractors).__name__}."
        )
    if len(pool) != len(inputs):
        raise ValueError(
            f"`distractors` has {len(pool)} tensors but `inputs` has {len(inputs)}."
        )
    sizes = set()
    for i, (d, x) in enumerate(zip(pool, inputs)):
        label = f"distractors[{i}]" if is_tuple else "distractors"
        if d.dim() != x.dim() or tuple(d.shape[1:]) != tuple(x.shape[1:]):
            raise ValueError(
                f"`{label}` must be a pool (K, {', '.join(map(str, x.shape[1:]))}) "
                f"of images shaped like one input example; got {tuple(d.shape)}."
            )
        if d.shape[0] < 1:
            raise ValueError(f"`{label}` is an empty pool.")
        if not d.is_floating_point():
            raise TypeError(f"`{label}` must be floating point, got {d.dtype}.")
        if not bool(torch.isfinite(d).all()):
            raise ValueError(f"`{label}` contains non-finite values (NaN or inf).")
        sizes.add(d.shape[0])
    if len(sizes) > 1:
        raise ValueError(
            "All tensors in `distractors` must hold the same number of images; "
            f"got {[d.shape[0] for d in pool]}."
        )
    return tuple(d.detach().to(x.device, x.dtype) for d, x in zip(pool, inputs))


def _draw(
    pool: tuple[Tensor, ...] | None,
    fn: Any,
    n_distractors: int | None,
    inputs: tuple[Tensor, ...],
    generator: torch.Generator | None,
) -> tuple[Tensor, ...]:
    """One step's distractors ``(D, C, H, W)``, shared by every example."""
    if pool is not None:
        if n_distractors is None:
            return pool
        gen_device = generator.device if generator is not None else "cpu"
        idx = torch.randint(
            pool[0].shape[0], (n_distractors,), generator=generator, device=gen_device
        )
        return tuple(d[idx.to(d.device)] for d in pool)
    assert n_distractors is not None
    drawn = fn(n_distractors, generator)
    drawn_t = drawn if isinstance(drawn, tuple) else (drawn,)
    if len(drawn_t) != len(inputs):
        raise ValueError(
            f"`distractors` callable returned {len(drawn_t)} tensors for "
            f"{len(inputs)} input tensors."
        )
    out = []
    for d, x in zip(drawn_t, inputs):
        shape = (n_distractors, *x.shape[1:])
        if not isinstance(d, Tensor) or tuple(d.shape) != shape:
            got = tuple(d.shape) if isinstance(d, Tensor) else type(d).__name__
            raise ValueError(
                f"`distractors` callable must return images of shape {shape} "
                f"for n={n_distractors}; got {got}."
            )
        if not d.is_floating_point():
            raise TypeError(
                f"`distractors` callable must return floating point images, got "
                f"{d.dtype}."
            )
        d = d.detach().to(x.device, x.dtype)
        if not bool(torch.isfinite(d).all()):
            raise ValueError(
                "`distractors` callable returned non-finite (NaN or inf) images."
            )
        out.append(d)
    return tuple(out)


def _upsampled(w: Tensor, size: tuple[int, int]) -> Tensor:
    m = torch.sigmoid(w)
    if tuple(m.shape[-2:]) == size:
        return m
    return F.interpolate(m, size=size, mode="bilinear", align_corners=False)


def _total_variation(m: Tensor, power: int, variant: str = "full") -> Tensor:
    """Per-example TV of ``m`` ``(n, 1, H, W)``.

    ``"full"``: every pair of vertical and horizontal neighbours. ``"authors"``:
    both differences taken from the pixels ``(i, j)`` with ``i < H - 1`` and
    ``j < W - 1`` only, as in the authors' code.
    """
    if variant == "authors":
        corner = m[..., :-1, :-1]
        dh = (m[..., 1:, :-1] - corner).abs()
        dw = (m[..., :-1, 1:] - corner).abs()
    else:
        dh = (m[..., 1:, :] - m[..., :-1, :]).abs()
        dw = (m[..., :, 1:] - m[..., :, :-1]).abs()
    if power == 2:
        dh, dw = dh * dh, dw * dw
    return dh.flatten(1).sum(1) + dw.flatten(1).sum(1)


def _objective(sums: Tensor, n_d: int, loss_kind: str, probabilities: bool) -> Tensor:
    """Per-example data term from per-chunk sums ``(n, n_chunks)``.

    A chunk's sum is, over its distractors, ``logsumexp`` of the log
    probabilities (default ``log_mean``), the sum of the probabilities
    (``log_mean`` with ``probability_fn``) or the sum of the log probabilities
    (``mean_log``). Differentiable, so that autograd gives each chunk's weight.
    """
    if loss_kind == "mean_log":
        return -sums.sum(dim=1) / n_d
    if probabilities:
        tiny = torch.finfo(sums.dtype).tiny
        return -(sums.sum(dim=1) / n_d).clamp_min(tiny).log()
    return -(torch.logsumexp(sums, dim=1) - math.log(n_d))


def _one_chunk_objective(
    sums: Tensor, n_d: int, loss_kind: str, probabilities: bool
) -> Tensor:
    """:func:`_objective` for a single chunk ``(n,)``, in fewer operations."""
    if loss_kind == "mean_log":
        return -sums / n_d
    if probabilities:
        tiny = torch.finfo(sums.dtype).tiny
        return -(sums / n_d).clamp_min(tiny).log()
    return math.log(n_d) - sums


def _optimise(
    forward_func: Callable[..., Any],
    inputs: tuple[Tensor, ...],
    target: TargetType,
    pool: tuple[Tensor, ...] | None,
    fn: Any,
    afa: Any,
    n_distractors: int | None,
    n_iter: int,
    lr: float,
    l1_coeff: float,
    tv_coeff: float,
    tv_power: int,
    tv_variant: str,
    upsample: int,
    show_progress: bool,
    generator: torch.Generator | None,
    probability_fn: Callable[[Tensor], Tensor] | None,
    patience: int | None,
    tol: float,
    internal_batch_size: int | None,
    loss_kind: str,
) -> tuple[tuple[Tensor, ...], Tensor]:
    bsz = inputs[0].shape[0]
    device = inputs[0].device
    sizes = [(int(x.shape[2]), int(x.shape[3])) for x in inputs]
    weights = [
        torch.zeros(
            bsz,
            1,
            -(-h // upsample),
            -(-w // upsample),
            dtype=x.dtype,
            device=x.device,
        )
        for x, (h, w) in zip(inputs, sizes)
    ]
    exp_avg = [torch.zeros_like(w) for w in weights]
    exp_avg_sq = [torch.zeros_like(w) for w in weights]
    active = torch.ones(bsz, dtype=torch.bool, device=device)
    best = torch.full((bsz,), math.inf, dtype=torch.float64, device=device)
    since_best = torch.zeros(bsz, dtype=torch.long, device=device)
    history = torch.full((n_iter, bsz), math.nan, dtype=inputs[0].dtype, device=device)
    n_d = (
        pool[0].shape[0]
        if n_distractors is None and pool is not None
        else n_distractors
    )
    assert n_d is not None
    if internal_batch_size is not None and internal_batch_size < bsz:
        warnings.warn(
            "Internal batch size cannot be less than the number of input examples. "
            f"Defaulting to internal batch size of {bsz} equal to the number of "
            "examples.",
            stacklevel=3,
        )
    probabilities = probability_fn is not None
    tiny = torch.finfo(inputs[0].dtype).tiny
    checked = False

    bar = progress(
        range(n_iter), desc="LearnedMask", total=n_iter, disable=not show_progress
    )
    try:
        for it in bar:
            # rows still optimising; early stopping only ever switches rows
            # off, so each of them has taken exactly `it` steps so far
            rows = active.nonzero().squeeze(1)
            n_rows = rows.numel()
            if n_rows == 0:
                break
            drawn = _draw(pool, fn, n_distractors, inputs, generator)
            xs = inputs if n_rows == bsz else tuple(x[rows] for x in inputs)
            leaves = [
                (w if n_rows == bsz else w[rows]).detach().requires_grad_(True)
                for w in weights
            ]
            ms = [_upsampled(leaf, size) for leaf, size in zip(leaves, sizes)]
            penalty = _penalty(ms, l1_coeff, tv_coeff, tv_power, tv_variant)
            # Captum's internal_batch_size: whole distractor draws ("steps")
            # for every example, ibs // examples of them per forward pass
            per_pass = (
                n_d
                if internal_batch_size is None
                else max(1, internal_batch_size // n_rows)
            )
            if per_pass >= n_d:
                sums = _chunk_sums(
                    forward_func,
                    xs,
                    drawn,
                    ms,
                    rows,
                    target,
                    afa,
                    bsz,
                    probability_fn,
                    loss_kind,
                    tiny,
                    checked,
                )
                checked = True
                losses = _one_chunk_objective(sums, n_d, loss_kind, probabilities)
                losses = losses + penalty
                grads = list(torch.autograd.grad(losses.sum(), leaves))
            else:
                # one forward and backward pass per chunk of draws, back to
                # the (detached) upsampled masks; the chunks' gradients are
                # combined with the weights the objective gives each chunk
                # (exactly the unchunked gradient), then taken through the
                # upsampling once, with the penalty's
                m_det = [m.detach().requires_grad_(True) for m in ms]
                chunk_sums, chunk_grads = [], []
                for start in range(0, n_d, per_pass):
                    part = tuple(d[start : start + per_pass] for d in drawn)
                    s = _chunk_sums(
                        forward_func,
                        xs,
                        part,
                        m_det,
                        rows,
                        target,
                        afa,
                        bsz,
                        probability_fn,
                        loss_kind,
                        tiny,
                        checked,
                    )
                    checked = True
                    chunk_grads.append(torch.autograd.grad(s.sum(), m_det))
                    chunk_sums.append(s.detach())
                sums = torch.stack(chunk_sums, dim=1).requires_grad_(True)
                data = _objective(sums, n_d, loss_kind, probabilities)
                (coef,) = torch.autograd.grad(data.sum(), sums)
                grad_ms = [
                    sum(
                        coef[:, c].view(-1, 1, 1, 1) * g[i]
                        for c, g in enumerate(chunk_grads)
                    )
                    for i in range(len(ms))
                ]
                outs: list[Tensor] = list(ms)
                grad_outs: list[Tensor] = cast(list[Tensor], grad_ms)
                if penalty.requires_grad:
                    outs.append(penalty)
                    grad_outs.append(torch.ones_like(penalty))
                grads = list(torch.autograd.grad(outs, leaves, grad_outs))
                losses = data.detach() + penalty.detach()
            losses = losses.detach()
            # one host sync: a NaN or inf anywhere makes the sum non-finite
            # (a non-finite output or probability makes the loss non-finite)
            total = losses.sum()
            for g in grads:
                total = total + g.sum()
            if not math.isfinite(float(total)):
                _raise_non_finite(losses, grads, rows, it)
            _adam_step(weights, grads, exp_avg, exp_avg_sq, it + 1, rows, lr)
            history[it, rows] = losses
            if show_progress and hasattr(bar, "set_postfix"):
                bar.set_postfix(loss=float(losses.mean()), refresh=False)
            if patience is not None:
                cur = losses.double()
                prev = best[rows]
                improved = prev.isinf() | (cur < prev - tol * prev.abs())
                best[rows] = torch.where(improved, cur, prev)
                since_best[rows] = torch.where(
                    improved, torch.zeros_like(since_best[rows]), since_best[rows] + 1
                )
                active &= since_best < patience
    finally:
        if hasattr(bar, "close"):
            bar.close()
    with torch.no_grad():
        masks = tuple(
            _upsampled(w, size).expand_as(x).contiguous()
            for w, size, x in zip(weights, sizes, inputs)
        )
    return masks, history


def _penalty(
    ms: list[Tensor], l1_coeff: float, tv_coeff: float, tv_power: int, variant: str
) -> Tensor:
    """Per-example ``tv_coeff * TV(M) + l1_coeff * |M|_1`` over the masks."""
    penalty = torch.zeros(ms[0].shape[0], dtype=ms[0].dtype, device=ms[0].device)
    for m in ms:
        if l1_coeff:
            penalty = penalty + l1_coeff * m.flatten(1).sum(1)
        if tv_coeff:
            penalty = penalty + tv_coeff * _total_variation(m, tv_power, variant)
    return penalty


def _chunk_sums(
    forward_func: Callable[..., Any],
    xs: tuple[Tensor, ...],
    drawn: tuple[Tensor, ...],
    ms: list[Tensor],
    rows: Tensor,
    target: TargetType,
    afa: Any,
    bsz: int,
    probability_fn: Callable[[Tensor], Tensor] | None,
    loss_kind: str,
    tiny: float,
    checked: bool,
) -> Tensor:
    """One forward pass over examples ``rows`` x the draws ``drawn``.

    Returns each example's sum over these draws (see :func:`_objective`).
    """
    n_ex, k = rows.numel(), drawn[0].shape[0]
    masked = []
    for x, d, m in zip(xs, drawn, ms):
        # (n_ex, k, C, H, W): example-major, so row r * k + j is example r
        # with draw j
        mixed = d.unsqueeze(0) + m.unsqueeze(1) * (x.unsqueeze(1) - d.unsqueeze(0))
        masked.append(mixed.reshape(n_ex * k, *x.shape[1:]))
    point_rows = rows.repeat_interleave(k)
    out = run_forward_checked(
        forward_func, tuple(masked), None, index_forward_args(afa, point_rows, bsz)
    )
    row_target = target_for_rows(target, point_rows, bsz)
    if probability_fn is None:
        if out.dim() < 2:
            raise ValueError(
                "The model returned one value per example, so there is no class "
                "dimension to take a softmax over; pass `probability_fn`."
            )
        scores = F.log_softmax(out, dim=1)
    else:
        scores = probability_fn(out)
        if not checked:
            _check_probabilities(scores, n_ex * k)
    if not checked:
        check_target_in_range(scores, row_target)
    selected = _select_targets(scores, row_target)
    if selected.numel() != point_rows.numel():
        raise ValueError(
            "`target` must select one probability per example; the selected "
            f"output has shape {tuple(selected.shape)} for {point_rows.numel()} "
            "inputs."
        )
    selected = selected.reshape(n_ex, k)
    if probability_fn is None:
        if loss_kind == "mean_log":
            return selected.sum(dim=1)
        return torch.logsumexp(selected, dim=1)
    if loss_kind == "mean_log":
        return selected.clamp_min(tiny).log().sum(dim=1)
    return selected.sum(dim=1)


def _check_probabilities(scores: Any, n_points: int) -> None:
    """Check ``probability_fn``'s output on the first pass.

    It must hold one row of probabilities per masked image, finite and in
    [0, 1].
    """
    if not isinstance(scores, Tensor):
        raise TypeError(
            f"`probability_fn` must return a Tensor, got {type(scores).__name__}."
        )
    if scores.dim() == 0 or scores.shape[0] != n_points:
        raise ValueError(
            "`probability_fn` must return one row per masked image (dim 0 of "
            f"the model's output, {n_points} here); got shape "
            f"{tuple(scores.shape)}."
        )
    if not scores.is_floating_point():
        raise TypeError(
            f"`probability_fn` must return floating point values, got {scores.dtype}."
        )
    if not bool(torch.isfinite(scores).all()):
        raise ValueError("`probability_fn` returned non-finite values (NaN or inf).")
    lo_t, hi_t = torch.aminmax(scores.detach())
    lo, hi = float(lo_t), float(hi_t)
    if lo < 0 or hi > 1 + 1e-6:
        raise ValueError(
            "`probability_fn` must return probabilities in [0, 1]; got values "
            f"in [{lo:.4g}, {hi:.4g}]."
        )


def _raise_non_finite(
    losses: Tensor, grads: list[Tensor], rows: Tensor, it: int
) -> None:
    """Say which quantity of step ``it`` stopped being finite, and for whom."""
    bad = ~torch.isfinite(losses)
    if bool(bad.any()):
        # the penalty is finite while the mask is, so the outputs were not
        raise ValueError(
            f"LearnedMask: at step {it} `forward_func` (or `probability_fn`) "
            "returned non-finite (NaN or inf) values for the masked inputs of "
            f"example(s) {rows[bad].tolist()}; the masks would be NaN. Check the "
            "model and its inputs."
        )
    for g in grads:
        bad |= ~torch.isfinite(g).flatten(1).all(dim=1)
    examples = rows[bad].tolist()
    raise ValueError(
        f"LearnedMask: at step {it} the gradient of the loss with respect to the "
        f"mask became non-finite for example(s) {examples}: `forward_func`'s "
        "gradient is not finite at the masked inputs."
    )


def _adam_step(
    weights: list[Tensor],
    grads: list[Tensor],
    exp_avg: list[Tensor],
    exp_avg_sq: list[Tensor],
    step: int,
    rows: Tensor,
    lr: float,
) -> None:
    """Adam step ``step`` (torch.optim.Adam's formula) on rows ``rows``.

    ``grads`` are the gradients of those rows, in order.
    """
    bias1 = 1 - _BETA1**step
    bias2_sqrt = math.sqrt(1 - _BETA2**step)
    for w, gr, m, v in zip(weights, grads, exp_avg, exp_avg_sq):
        m_r = m[rows].mul_(_BETA1).add_(gr, alpha=1 - _BETA1)
        v_r = v[rows].mul_(_BETA2).addcmul_(gr, gr, value=1 - _BETA2)
        m[rows] = m_r
        v[rows] = v_r
        denom = v_r.sqrt() / bias2_sqrt + _EPS
        w[rows] = w[rows] - (lr / bias1) * m_r / denom
