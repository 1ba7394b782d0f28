"""Streaming, data-parallel estimation of PatternNet / PatternAttribution patterns."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable, Sequence
from typing import Any, cast

import torch
import torch.nn.functional as F
from captum._utils.progress import progress
from torch import Tensor, nn
from torch.nn.modules.dropout import _DropoutNd

from captum_ext._utils.validation import check_positive_int
from captum_ext.attr._core.pattern._layers import (
    check_supported_model,
    conv_padding,
    select_layers,
)
from captum_ext.attr._core.pattern._pattern_set import _KINDS, PatternSet


class _LayerStats:
    """Sufficient statistics of one layer, accumulated in float64.

    With ``y`` the layer's output (bias included), ``M`` the sample mask
    (``y > 0`` for the "relu" kind, all ones for "linear"; each output unit
    ``j`` has its own) and ``x`` the unit's input (patch), the accumulators
    hold, in the weight's layout ``(out, fan_in)``:

    - ``count[j] = sum M_j``, ``sum_x[j] = sum M_j x``,
      ``sum_xy[j] = sum M_j x y_j``,
    - ``sum_y[j] = sum y_j`` over all samples and ``n_all``, the sample count.

    Per batch, ``x`` and ``y`` are centred on (approximate) batch means ``c``
    and ``d`` (the conditioning trick of one-pass covariance updates) and the
    sums of the centred values are computed in ``compute_dtype``; the raw sums
    follow in float64, exactly for any ``c`` and ``d``:
    ``sum M x = Q' + c sum M``,
    ``sum M x y = P' + d Q' + c sum M (y - d) + c d sum M`` and
    ``sum y = n d + sum (y - d)``,
    with ``Q' = sum M (x - c)`` and ``P' = sum M (x - c)(y - d)``.
    """

    def __init__(
        self, name: str, module: nn.Module, kind: str, compute_dtype: torch.dtype | None
    ) -> None:
        self.name = name
        self.module = module
        self.weight = cast(Tensor, module.weight)
        self.relu = kind == "relu"
        self.compute_dtype = compute_dtype
        self.out_features = int(self.weight.shape[0])
        self.fan_in = int(self.weight[0].numel())
        self.count: Tensor | None = None
        self.sum_x: Tensor | None = None
        self.sum_xy: Tensor | None = None
        self.sum_y: Tensor | None = None
        self.n_all: Tensor | None = None

    def _dtype(self, y: Tensor) -> torch.dtype:
        if self.compute_dtype is not None:
            return self.compute_dtype
        if y.dtype in (torch.float32, torch.float64):
            return y.dtype
        return torch.float32

    def _ensure(self, device: torch.device) -> None:
        if self.count is None:
            f64 = torch.float64
            d, k = self.out_features, self.fan_in
            self.count = torch.zeros(d, dtype=f64, device=device)
            self.sum_x = torch.zeros(d, k, dtype=f64, device=device)
            self.sum_xy = torch.zeros(d, k, dtype=f64, device=device)
            self.sum_y = torch.zeros(d, dtype=f64, device=device)
            self.n_all = torch.zeros((), dtype=f64, device=device)

    def update(self, x: Tensor, y: Tensor) -> None:
        x, y = x.detach(), y.detach()
        self._ensure(y.device)
        if isinstance(self.module, nn.Conv2d):
            batch = self._conv_products(x, y)
        else:
            batch = self._linear_products(x, y)
        q, p, c, d, n, count, sum_yc_pos, sum_yc = (
            t.to(torch.float64) if isinstance(t, Tensor) else t for t in batch
        )
        assert self.sum_x is not None and self.sum_xy is not None
        assert self.count is not None and self.sum_y is not None
        assert self.n_all is not None
        q = q.reshape(-1, self.fan_in)  # (1 or out, fan_in): broadcast over out
        p = p.reshape(self.out_features, self.fan_in)
        c = c.reshape(-1, self.fan_in)  # (1 or out, fan_in)
        self.sum_x.add_(q).addcmul_(c, count[:, None])
        self.sum_xy.add_(p).addcmul_(d[:, None], q)
        self.sum_xy.addcmul_(c, (sum_yc_pos + d * count)[:, None])
        self.count += count
        self.sum_y += n * d + sum_yc
        self.n_all += n

    def _linear_products(self, x: Tensor, y: Tensor) -> tuple[Any, ...]:
        dt = self._dtype(y)
        xs = x.reshape(-1, x.shape[-1]).to(dt)
        ys = y.reshape(-1, y.shape[-1]).to(dt)
        n = ys.shape[0]
        c = xs.mean(0)
        d = ys.mean(0)
        xc = xs - c
        yc = ys - d
        sum_yc = yc.sum(0)
        if self.relu:
            z = torch.empty(n, 2 * self.out_features, dtype=dt, device=y.device)
            m, my = z[:, : self.out_features], z[:, self.out_features :]
            torch.gt(ys, 0, out=m)
            torch.mul(yc, m, out=my)
            sums = z.sum(0)
            count, sum_yc_pos = sums[: self.out_features], sums[self.out_features :]
            r = z.T @ xc  # (2 * out, in)
            q, p = r[: self.out_features], r[self.out_features :]
        else:
            count = torch.full_like(d, float(n))
            sum_yc_pos = sum_yc
            q = xc.sum(0)  # the same for every output unit
            p = yc.T @ xc
        return q, p, c, d, n, count, sum_yc_pos, sum_yc

    def _conv_products(self, x: Tensor, y: Tensor) -> tuple[Any, ...]:
        conv = self.module
        assert isinstance(conv, nn.Conv2d)
        dt = self._dtype(y)
        n_img, c_out, h_out, w_out = y.shape
        c_in = x.shape[1]
        groups = conv.groups
        cg = c_out // groups
        x, y = x.to(dt), y.to(dt)
        n = n_img * h_out * w_out
        # any shifts give exact sums; near-means give well-conditioned ones
        c = x[:8].mean(dim=(0, 2, 3))
        d = y.mean(dim=(0, 2, 3))
        # zero padding first, then centring: padded inputs are x = 0, x - c = -c
        top, bottom, left, right = conv_padding(conv)
        if top or bottom or left or right:
            xc = F.pad(x, (left, right, top, bottom))
            xc.sub_(c[None, :, None, None])
        else:
            xc = x - c[None, :, None, None]
        # z holds, per group, the channels [M_g, M_g * (y_g - d_g)]; one
        # convolution weight-gradient call forms both im2col products
        # sum_{images, positions} patch' (x) z, and its bias gradient the
        # per-channel sums of z (counts and sum M (y - d)).
        z = torch.empty(n_img, groups, 2, cg, h_out, w_out, dtype=dt, device=y.device)
        m, my = z[:, :, 0], z[:, :, 1]
        yg = y.view(n_img, groups, cg, h_out, w_out)
        torch.sub(yg, d.view(1, groups, cg, 1, 1), out=my)
        sum_yc = my.sum(dim=(0, 3, 4)).reshape(c_out)  # sum y = n d + sum (y - d)
        if self.relu:
            torch.gt(yg, 0, out=m)
            my.mul_(m)
        else:
            m.fill_(1.0)
        weight_size = (2 * c_out, *self.weight.shape[1:])
        _, r, zsum = torch.ops.aten.convolution_backward(
            z.view(n_img, 2 * c_out, h_out, w_out),
            xc,
            xc.new_empty(1).expand(weight_size),
            [2 * c_out],
            list(conv.stride),
            [0, 0],
            list(conv.dilation),
            False,
            [0, 0],
            groups,
            [False, True, True],
        )
        zsum = zsum.reshape(groups, 2, cg)
        count = zsum[:, 0].reshape(c_out)
        if dt != torch.float64 and n >= 2**24:  # beyond exact float32 integers
            count = m.sum(dim=(0, 3, 4), dtype=torch.float64).reshape(c_out)
        sum_yc_pos = zsum[:, 1].reshape(c_out)
        r = r.reshape(groups, 2, cg, -1)
        q = r[:, 0].reshape(c_out, -1)
        p = r[:, 1].reshape(c_out, -1)
        kh, kw = conv.kernel_size
        c_rows = (
            c.reshape(groups, 1, c_in // groups, 1)
            .expand(groups, cg, c_in // groups, kh * kw)
            .reshape(c_out, -1)
        )
        return q, p, c_rows, d, n, count, sum_yc_pos, sum_yc

    def buffers(self) -> list[Tensor]:
        assert self.count is not None and self.sum_x is not None
        assert self.sum_xy is not None and self.sum_y is not None
        assert self.n_all is not None
        return [self.count, self.sum_x, self.sum_xy, self.sum_y, self.n_all]

    def pattern(self) -> Tensor:
        """Eq. 2 of the PGIG paper (Kindermans et al.'s two-component a+)."""
        count, sum_x, sum_xy, sum_y, n_all = self.buffers()
        weight = self.weight.detach().to(count.device, torch.float64)
        w = weight.reshape(self.out_features, self.fan_in)
        safe_count = torch.where(count == 0, torch.ones_like(count), count)
        mean_x = sum_x / safe_count[:, None]
        mean_xy = sum_xy / safe_count[:, None]
        mean_y = sum_y / n_all
        num = mean_xy - mean_x * mean_y[:, None]
        den = (w * num).sum(dim=1)
        den = torch.where(den == 0, torch.ones_like(den), den)
        a = num / den[:, None]
        return a.reshape(weight.shape).to(self.weight.dtype).cpu()


def _default_unpack(batch: Any) -> tuple[Any, ...]:
    if isinstance(batch, Tensor):
        return (batch,)
    if isinstance(batch, (tuple, list)) and len(batch) > 0:
        if not isinstance(batch[0], Tensor):
            raise TypeError(
                "`data` items given as tuples must hold the model input first "
                f"(a Tensor), got {type(batch[0]).__name__}; pass `unpack_batch` "
                "for other layouts."
            )
        return (batch[0],)
    raise TypeError(
        "`data` must yield Tensors or (input, ...) tuples, got "
        f"{type(batch).__name__}; pass `unpack_batch` to map an item to the "
        "model's arguments."
    )


def _batch_size(args: tuple[Any, ...]) -> int:
    for a in args:
        if isinstance(a, Tensor) and a.dim() > 0:
            return int(a.shape[0])
    return 0


def _resolve_process_group(process_group: Any) -> tuple[bool, Any]:
    """``(reduce, group)`` for ``process_group`` (None, "auto" or a group)."""
    if process_group is None:
        return False, None
    import torch.distributed as dist

    if isinstance(process_group, str):
        if process_group != "auto":
            raise ValueError(
                "`process_group` must be None, 'auto' or a "
                f"torch.distributed.ProcessGroup, got {process_group!r}."
            )
        if dist.is_available() and dist.is_initialized():
            return True, None
        return False, None
    if not dist.is_available() or not dist.is_initialized():
        raise ValueError(
            "`process_group` was given but torch.distributed is not initialised; "
            "call torch.distributed.init_process_group first (or pass None)."
        )
    if not isinstance(process_group, dist.ProcessGroup):
        raise TypeError(
            "`process_group` must be None, 'auto' or a "
            f"torch.distributed.ProcessGroup, got {type(process_group).__name__}."
        )
    return True, process_group


def _all_reduce(stats: list[_LayerStats], num_examples: Tensor, group: Any) -> None:
    """Sum every accumulator over the ranks of ``group`` with one all_reduce."""
    import torch.distributed as dist

    tensors = [b for s in stats for b in s.buffers()] + [num_examples]
    flat = torch.cat([t.reshape(-1) for t in tensors])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM, group=group)
    offset = 0
    for t in tensors:
        size = t.numel()
        t.copy_(flat[offset : offset + size].view_as(t))
        offset += size


def fit_patterns(
    model: nn.Module,
    data: Iterable[Any],
    kind: str = "relu",
    layers: Sequence[str | nn.Module] | None = None,
    max_batches: int | None = None,
    show_progress: bool = False,
    process_group: Any = None,
    *,
    unpack_batch: Callable[[Any], Any] | None = None,
    compute_dtype: torch.dtype | None = None,
) -> PatternSet:
    r"""Estimate PatternNet / PatternAttribution patterns in one streaming pass.

    For every ``nn.Linear`` and ``nn.Conv2d`` layer with weight :math:`W`,
    input :math:`x` and output :math:`y = W x + b`, the pattern of output unit
    :math:`j` is the two-component estimator of Kindermans et al. (2018), eq. 2
    of Schwarzenberg & Castle, *Pattern-Guided Integrated Gradients*:

    .. math::

        a_j = \frac{\mathbb{E}_+[x y_j] - \mathbb{E}_+[x]\,\mathbb{E}[y_j]}
                   {w_j^T \left(\mathbb{E}_+[x y_j]
                    - \mathbb{E}_+[x]\,\mathbb{E}[y_j]\right)}

    where :math:`\mathbb{E}_+` averages over the samples with :math:`y_j > 0`
    (``kind="relu"``; also used for the last layer, as in the references) or
    over all samples (``kind="linear"``: :math:`a = \operatorname{cov}(x, y) /
    w^T \operatorname{cov}(x, y)`), and :math:`\mathbb{E}[y_j]` always averages
    over all samples. A zero count or zero denominator is replaced by 1. For
    ``nn.Conv2d`` every output position of every image is one sample of (input
    patch, output), with the layer's stride, padding (zeros count as inputs),
    dilation and groups. The bias cancels in the numerator.

    The pass is streaming: per batch, the im2col products
    :math:`\sum_n x_n [M_n, M_n y_n]` are formed by one matrix kernel per layer
    (a matrix multiply for ``nn.Linear``; for ``nn.Conv2d`` the convolution
    weight-gradient kernel, which computes the im2col product without
    materialising the patches), on ``x`` and ``y`` centred by batch means for
    conditioning, in ``compute_dtype``, and added to float64 accumulators from
    which the raw sums are reconstructed exactly. Memory does not grow with the
    data set; there are no per-sample Python loops. Layers that the forward
    pass never calls get no pattern (with ``layers=None``).

    Args:
        model (nn.Module): The model, with any BatchNorm folded
            (:func:`captum_ext.models.fold_batchnorm`). Call ``model.eval()``
            first: the pass runs the model as it is (under ``torch.no_grad``).
        data (Iterable): A DataLoader or any iterable of input tensors or
            ``(input, ...)`` tuples (the first element is the model input, as
            in ``(x, y)`` batches). Tensors are moved to the model's device.
        kind (str): ``"relu"`` (positive regime, the default) or ``"linear"``.
        layers (list[str or nn.Module], optional): Only these layers (names or
            modules). Default: every ``nn.Linear`` and ``nn.Conv2d``. The
            attribution classes need a pattern for every such layer the
            forward pass calls, so a subset is for inspecting patterns (or
            for models that route around the other layers).
        max_batches (int, optional): Stop after this many batches (per rank).
        show_progress (bool): Show a progress bar over batches.
        process_group (ProcessGroup or "auto", optional): Sum the statistics
            over the ranks of this ``torch.distributed`` group with one
            ``all_reduce`` at the end, so that ranks each passing over a shard
            get the patterns of the whole data set. ``"auto"``: the default
            group when ``torch.distributed`` is initialised, else no reduction.
        unpack_batch (Callable, optional): Maps one item of ``data`` to the
            model's positional arguments: a Tensor (one input) or a tuple
            passed as ``model(*args)`` -- for models with several inputs or
            additional forward arguments, e.g.
            ``unpack_batch=lambda b: (b[0], b[1], b[2])``.
        compute_dtype (torch.dtype, optional): Dtype of the per-batch products
            before they enter the float64 accumulators. Default: the layer's
            dtype (float32 kernels for float32 models, the fast path);
            ``torch.float64`` gives double precision throughout, at a few times
            the cost on CPUs.

    Returns:
        PatternSet: one pattern per layer, shaped like its weight.

    Examples::

        >>> data = load_digits()
        >>> model = digits_cnn().eval()
        >>> train_model(model, data.x_train, data.y_train)
        >>> patterns = fit_patterns(model, data.train_loader(batch_size=256))
        >>> patterns["0"].shape
        torch.Size([16, 1, 3, 3])
    """
    # ---- checks before any work -------------------------------------------
    check_supported_model(model, "fitting patterns")
    if kind not in _KINDS:
        raise ValueError(f"`kind` must be one of {_KINDS}, got {kind!r}.")
    check_positive_int(max_batches, "max_batches", allow_none=True)
    if unpack_batch is not None and not callable(unpack_batch):
        raise TypeError("`unpack_batch` must be callable or None.")
    if compute_dtype is not None and compute_dtype not in (
        torch.float32,
        torch.float64,
    ):
        raise ValueError(
            "`compute_dtype` must be None, torch.float32 or torch.float64, got "
            f"{compute_dtype!r}."
        )
    if isinstance(data, (Tensor, str, bytes)) or not isinstance(data, Iterable):
        raise TypeError(
            "`data` must be a DataLoader or an iterable of batches (a Tensor is a "
            "single batch: pass [tensor]), got "
            f"{type(data).__name__}."
        )
    chosen = select_layers(model, layers)
    reduce, group = _resolve_process_group(process_group)
    if any(isinstance(m, _DropoutNd) and m.training for m in model.modules()):
        warnings.warn(
            "fit_patterns: `model` has dropout layers in training mode (they act "
            "randomly); call model.eval() first.",
            UserWarning,
            stacklevel=2,
        )

    stats = {
        name: _LayerStats(name, m, kind, compute_dtype) for name, m in chosen.items()
    }
    param = next(model.parameters(), None)
    device = param.device if param is not None else None
    unpack = unpack_batch if unpack_batch is not None else _default_unpack

    def make_hook(s: _LayerStats) -> Callable[..., None]:
        def hook(
            module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], out: Any
        ) -> None:
            x = args[0] if args else kwargs["input"]
            s.update(x, out)

        return hook

    total: int | None = None
    if hasattr(data, "__len__"):
        try:
            total = len(data)  # type: ignore[arg-type]
        except TypeError:
            total = None
    if total is not None and max_batches is not None:
        total = min(total, max_batches)

    num_examples = 0
    handles = []
    try:
        for s in stats.values():
            handles.append(
                s.module.register_forward_hook(make_hook(s), with_kwargs=True)
            )
        with torch.no_grad():
            n_batches = 0
            for batch in progress(
                data, desc="fit patterns", total=total, disable=not show_progress
            ):
                if max_batches is not None and n_batches >= max_batches:
                    break
                args = unpack(batch)
                if not isinstance(args, tuple):
                    args = (args,)
                if device is not None:
                    args = tuple(
                        a.to(device) if isinstance(a, Tensor) else a for a in args
                    )
                model(*args)
                num_examples += _batch_size(args)
                n_batches += 1
    finally:
        for h in handles:
            h.remove()

    if reduce:
        for s in stats.values():
            s._ensure(device if device is not None else torch.device("cpu"))
        ref = next(iter(stats.values())).count
        assert ref is not None
        count_t = torch.tensor(
            float(num_examples), dtype=torch.float64, device=ref.device
        )
        _all_reduce(list(stats.values()), count_t, group)
        num_examples = round(float(count_t))
    elif n_batches == 0:
        raise ValueError("`data` yielded no batches.")

    patterns = {}
    for name, s in stats.items():
        if s.count is None or float(s.n_all if s.n_all is not None else 0) == 0:
            if layers is None:
                continue  # never called by the forward pass: nothing to explain
            raise ValueError(
                f"Layer {name!r} saw no data while fitting patterns (the model's "
                "forward never called it); leave it out of `layers`."
            )
        patterns[name] = s.pattern()
    if not patterns:
        raise ValueError("No pattern layer was called by the model's forward pass.")
    return PatternSet(patterns, kind=kind, num_examples=num_examples)
