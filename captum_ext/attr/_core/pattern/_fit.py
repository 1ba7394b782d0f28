"""Streaming, data-parallel estimation of PatternNet / PatternAttribution patterns."""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, cast

import torch
import torch.nn.functional as F
from captum._utils.progress import progress
from captum.log import log_usage
from torch import Tensor, nn
from torch.nn.modules.conv import _ConvNd

from captum_ext._utils.model_state import preserves_model_state
from captum_ext._utils.validation import check_positive_int
from captum_ext.attr._core.pattern._layers import (
    BATCHNORM_TYPES,
    CONV_TYPES,
    check_supported_model,
    conv_padding,
    select_layers,
)
from captum_ext.attr._core.pattern._pattern_set import _KINDS, PatternSet

#: Budget, in elements, of the per-chunk work buffers of one layer's update
#: (the centred inputs and the mask / masked-output channels): a batch is
#: split into chunks of examples so that memory stays bounded at any batch size
#: or resolution.
_CHUNK_ELEMENTS = 2**23

#: Convolutions with fewer output positions per example than this form their
#: im2col products with ``F.unfold`` and a matrix product (2-D only).
_UNFOLD_POSITIONS = 100

#: Elements per block when float32 products are added to float64
#: accumulators or turned into patterns: small enough that the temporaries
#: are recycled by the allocator instead of being fresh pages every time.
_ADD_BLOCK = 2**18

#: A Linear layer's rows are gathered over batches until there are this many.
_LINEAR_ROWS = 512

#: Default of ``fit_patterns``' ``eps``: the smallest cosine allowed between a
#: unit's weight vector and the numerator of its pattern.
DEFAULT_EPS = 1e-3


class _Workspace:
    """Work buffers shared by the layers' updates during one fit.

    The per-batch buffers of an update (the centred, padded inputs and the
    mask / masked-output channels) are taken from here and reused by every
    layer and batch: fresh buffers of that size would be new pages, and their
    page faults cost as much as the arithmetic. Each buffer keeps the size of
    the largest request, which :data:`_CHUNK_ELEMENTS` bounds.
    """

    def __init__(self) -> None:
        self.buffers: dict[tuple[str, torch.dtype, torch.device], Tensor] = {}

    def get(
        self, key: str, shape: Sequence[int], dtype: torch.dtype, device: torch.device
    ) -> Tensor:
        """An uninitialised contiguous tensor of ``shape`` (a reused buffer)."""
        numel = math.prod(shape)
        buf = self.buffers.get((key, dtype, device))
        if buf is None or buf.numel() < numel:
            buf = torch.empty(numel, dtype=dtype, device=device)
            self.buffers[(key, dtype, device)] = buf
        return buf[:numel].view(tuple(shape))


class _LayerStats:
    """Sufficient statistics of one layer, accumulated in float64.

    With ``y`` the layer's output (bias included), ``M`` the sample mask
    (``v > 0`` for the "relu" kind, with ``v`` the input of the following
    activation: ``y`` itself, or the output of the BatchNorm that directly
    follows the layer; all ones for "linear"; each output unit ``j`` has its
    own) and ``x`` the unit's input (patch), the raw sums are, in the
    weight's layout ``(out, fan_in)``:

    - ``count[j] = sum M_j``, ``sum_x[j] = sum M_j x``,
      ``sum_xy[j] = sum M_j x y_j``,
    - ``sum_y[j] = sum y_j`` over all samples and ``n_all``, the sample count.

    They are accumulated centred: ``x`` and ``y`` are shifted by ``c`` and
    ``d``, the means of the first batch (the conditioning trick of one-pass
    covariance updates), the products of the shifted values are computed per
    batch in ``compute_dtype`` and added to float64 accumulators
    ``Q' = sum M (x - c)``, ``P' = sum M (x - c)(y - d)``,
    ``S' = sum M (y - d)`` and ``T' = sum (y - d)``. :meth:`pattern` uses
    them directly (``count * num = P' + delta Q' + c (S' + delta count)``
    with ``delta = -T' / n``); for a ``torch.distributed`` reduction,
    :meth:`raw_sums` first turns them into the raw sums, exactly for any ``c``
    and ``d``: ``sum M x = Q' + c sum M``,
    ``sum M x y = P' + d Q' + c (S' + d sum M)`` and
    ``sum y = n d + T'``. Per batch this costs one float64 addition of the
    products; for the "linear" kind ``Q'`` is the same for every unit (of a
    group): it is formed from one all-ones mask channel per group and kept as
    one row.
    """

    def __init__(
        self,
        name: str,
        module: nn.Module,
        kind: str,
        compute_dtype: torch.dtype | None,
        workspace: _Workspace | None = None,
    ) -> None:
        self.name = name
        self.module = module
        self.workspace = workspace if workspace is not None else _Workspace()
        self.weight = cast(Tensor, module.weight)
        self.is_conv = isinstance(module, CONV_TYPES)
        self.groups = int(getattr(module, "groups", 1))
        self.set_relu(kind != "linear")
        self.compute_dtype = compute_dtype
        self.out_features = int(self.weight.shape[0])
        self.fan_in = int(self.weight[0].numel())
        self.c: Tensor | None = None
        self.d: Tensor | None = None
        # r: the products [Q', P'] in the kernel's layout; z: [sum M, S']
        self.r: Tensor | None = None
        self.z: Tensor | None = None
        self.sum_yc: Tensor | None = None
        self.n_all = 0.0
        self.rows: list[tuple[Tensor, Tensor, Tensor | None]] = []
        self.n_rows = 0

    def set_relu(self, relu: bool) -> None:
        """Choose the estimator (before any data): positive regime or all samples."""
        self.relu = relu
        # "linear" kind: sum M x is the same for every unit (of a group)
        self.shared_x = not relu and self.groups == 1

    def _dtype(self, y: Tensor) -> torch.dtype:
        if self.compute_dtype is not None:
            return self.compute_dtype
        if y.dtype in (torch.float32, torch.float64):
            return y.dtype
        return torch.float32

    @property
    def seen(self) -> bool:
        return self.r is not None

    def update(self, x: Tensor, y: Tensor, gate: Tensor | None = None) -> None:
        """Add one batch: layer input ``x``, output ``y``, mask source ``gate``.

        ``gate`` (default ``y``) is the tensor whose positive entries form
        the "relu" mask; it has ``y``'s shape.
        """
        x, y = x.detach(), y.detach()
        g = y if gate is None else gate.detach()
        if self.is_conv:
            self._conv_products(x, y, g)
            return
        # Linear layers see few rows per batch but have large products: rows
        # are gathered (copied: the model may change them in place later)
        # until one matrix product over many rows pays for the float64
        # accumulation
        xs = x.reshape(-1, x.shape[-1])
        ys = y.reshape(-1, y.shape[-1])
        gs = ys if gate is None else g.reshape(-1, g.shape[-1])
        if not bool(torch.isfinite(ys).all() and torch.isfinite(xs).all()):
            raise _NonFiniteBatch(self.name)
        self.rows.append((xs.clone(), ys.clone(), None if gate is None else gs.clone()))
        self.n_rows += xs.shape[0]
        if self.n_rows >= _LINEAR_ROWS:
            self.flush()

    def flush(self) -> None:
        """Process the gathered rows of a Linear layer."""
        if not self.rows:
            return
        xs = torch.cat([r[0] for r in self.rows])
        ys = torch.cat([r[1] for r in self.rows])
        gs = torch.cat([r[1] if r[2] is None else r[2] for r in self.rows])
        self.rows = []
        self.n_rows = 0
        self._linear_products(xs, ys, gs)

    def _add(self, r: Tensor, z: Tensor, sum_yc: Tensor, n: int) -> None:
        f64 = torch.float64
        if not bool(torch.isfinite(r.sum() + sum_yc.sum())):
            raise _NonFiniteBatch(self.name)
        if self.r is None:
            # a copy: r may be a reused work buffer (float64 products)
            self.r = r.to(f64, copy=True)
            self.z = z.to(f64)
            self.sum_yc = sum_yc.to(f64)
        else:
            assert self.z is not None and self.sum_yc is not None
            _accumulate(self.r, r)
            self.z.add_(z)
            self.sum_yc.add_(sum_yc)
        self.n_all += n

    def _linear_products(self, x: Tensor, y: Tensor, g: Tensor) -> None:
        dt = self._dtype(y)
        f64 = torch.float64
        xs = x.reshape(-1, x.shape[-1])
        ys = y.reshape(-1, y.shape[-1])
        gs = g.reshape(-1, g.shape[-1])
        n = ys.shape[0]
        if self.c is None:
            self.c = xs.to(dt).mean(0)
            self.d = ys.to(dt).mean(0)
        c, d = self.c, self.d
        assert d is not None
        out = self.out_features
        rows = max(1, _CHUNK_ELEMENTS // (2 * out + xs.shape[1]))
        for start in range(0, n, rows):
            xc = xs[start : start + rows].to(dt) - c
            yc = ys[start : start + rows].to(dt) - d
            sum_yc = yc.sum(0)
            if self.relu:
                z = torch.empty(xc.shape[0], 2 * out, dtype=dt, device=y.device)
                m, my = z[:, :out], z[:, out:]
                torch.gt(gs[start : start + rows], 0, out=m)
                torch.mul(yc, m, out=my)
                self._add(z.T @ xc, z.sum(0, dtype=f64), sum_yc, xc.shape[0])
            else:
                r = torch.cat([xc.sum(0, keepdim=True), yc.T @ xc])  # (1 + out, in)
                zs = torch.cat([torch.full_like(sum_yc, xc.shape[0]), sum_yc])
                self._add(r, zs, sum_yc, xc.shape[0])

    def _conv_products(self, x: Tensor, y: Tensor, g: Tensor) -> None:
        conv = cast(_ConvNd, self.module)
        dt = self._dtype(y)
        f64 = torch.float64
        n_img, c_out = y.shape[:2]
        out_spatial = tuple(y.shape[2:])
        dims = len(out_spatial)
        c_in = x.shape[1]
        groups = self.groups
        cg = c_out // groups
        positions = 1
        for s in out_spatial:
            positions *= s
        reduce_dims = (0, *range(2, 2 + dims))
        if self.c is None:
            self.c = x[:8].to(dt).mean(dim=reduce_dims)
            self.d = y.to(dt).mean(dim=reduce_dims)
        c, d = self.c, self.d
        assert d is not None
        pads = conv_padding(conv)
        in_per_img = c_in
        for s, (lo, hi) in zip(x.shape[2:], pads):
            in_per_img *= s + lo + hi
        k_numel = int(self.weight[0, 0].numel())
        pointwise = k_numel == 1 and all(st == 1 for st in conv.stride)
        pointwise = pointwise and not any(lo or hi for lo, hi in pads)
        unfold = not pointwise and dims == 2 and groups == 1
        unfold = unfold and positions < _UNFOLD_POSITIONS
        # channels per group: the masks (one per unit for "relu"; for
        # "linear" the mask is all ones and one channel serves the group)
        # and the masked outputs
        head = cg if self.relu else 1
        zch = groups * (head + cg)
        per_img = in_per_img + zch * positions
        if unfold:
            per_img += c_in * k_numel * positions  # the im2col patches
        chunk = max(1, _CHUNK_ELEMENTS // per_img)
        weight_size = (zch, *self.weight.shape[1:])
        d_view = d.view(1, groups, cg, *([1] * dims))
        centre = c.view(1, -1, *([1] * dims))
        ws = self.workspace
        for start in range(0, n_img, chunk):
            xs = x[start : start + chunk]
            ys = y[start : start + chunk]
            ni = ys.shape[0]
            # zero padding, then centring: padded inputs are x = 0, x - c = -c
            padded = [ni, c_in] + [
                sz + lo + hi for sz, (lo, hi) in zip(x.shape[2:], pads)
            ]
            xc = ws.get("x", padded, dt, y.device)
            inner = xc
            for i, (lo, hi) in enumerate(pads):
                if lo:
                    xc.narrow(2 + i, 0, lo).copy_(centre.neg())
                if hi:
                    xc.narrow(2 + i, padded[2 + i] - hi, hi).copy_(centre.neg())
                inner = inner.narrow(2 + i, lo, padded[2 + i] - lo - hi)
            torch.sub(xs, centre, out=inner)
            # z holds, per group, the channels [M_g, M_g * (y_g - d_g)]; one
            # convolution weight-gradient call forms both im2col products
            # sum_{images, positions} patch' (x) z, and its bias gradient the
            # per-channel sums of z (counts and sum M (y - d)).
            z = ws.get("z", (ni, groups, head + cg, *out_spatial), dt, y.device)
            m, my = z[:, :, :head], z[:, :, head:]
            yg = ys.view(ni, groups, cg, *out_spatial)
            torch.sub(yg, d_view, out=my)
            # float32 per-batch sums like the kernel's; float64 across batches
            sum_yc = my.sum(dim=tuple(range(3, 3 + dims))).sum(0).reshape(c_out)
            if self.relu:
                gg = g[start : start + chunk].view(ni, groups, cg, *out_spatial)
                torch.gt(gg, 0, out=m)
                my.mul_(m)
            else:
                m.fill_(1.0)
            if pointwise:
                # 1x1 convolutions: the patches are the inputs themselves
                zz = z.view(ni, groups, head + cg, positions)
                rc = torch.einsum(
                    "ngol,ngkl->gok", zz, xc.reshape(ni, groups, -1, positions)
                )
                zc = zz.sum(dim=(0, 3))
            elif unfold:
                # few output positions: an explicit im2col and one (batched)
                # matrix product beat the weight-gradient kernel on CPUs
                u = F.unfold(
                    xc,
                    tuple(conv.kernel_size),
                    dilation=tuple(conv.dilation),
                    stride=tuple(conv.stride),
                )
                zt = z.view(ni, zch, positions).transpose(1, 2)
                rc = torch.mm(
                    zt.reshape(-1, zch).T,
                    u.transpose(1, 2).reshape(-1, u.shape[1]),
                    out=ws.get("r", (zch, u.shape[1]), dt, y.device),
                )
                zc = z.view(ni, zch, positions).sum(dim=(0, 2))
            else:
                _, rc, zc = torch.ops.aten.convolution_backward(
                    z.view(ni, zch, *out_spatial),
                    xc,
                    xc.new_empty(1).expand(weight_size),
                    [zch],
                    list(conv.stride),
                    [0] * dims,
                    list(conv.dilation),
                    False,
                    [0] * dims,
                    groups,
                    [False, True, True],
                )
            if dt != f64 and ni * positions >= 2**24:  # beyond exact float32 ints
                zc = torch.cat(
                    [
                        m.sum(dim=(0, *range(3, 3 + dims)), dtype=f64),
                        my.sum(dim=(0, *range(3, 3 + dims)), dtype=f64),
                    ],
                    dim=1,
                )
            self._add(
                rc.reshape(groups, head + cg, -1),
                zc.reshape(groups, head + cg),
                sum_yc,
                ni * positions,
            )

    def raw_sums(self, device: torch.device | None, raw: bool = True) -> list[Tensor]:
        """``[count, sum_x, sum_xy, sum_y, n_all]`` in float64 (zeros if unseen).

        Consumes the centred accumulators (computed in place). With
        ``raw=False`` the sums stay centred (no pass over the products; what
        :meth:`pattern` needs when no other process adds its sums):
        ``[count, Q', P', T', n_all, S']``.
        """
        f64 = torch.float64
        out, k = self.out_features, self.fan_in
        self.flush()
        if self.r is None:
            dev = device if device is not None else torch.device("cpu")
            return [
                torch.zeros(out, dtype=f64, device=dev),
                torch.zeros(1 if self.shared_x else out, k, dtype=f64, device=dev),
                torch.zeros(out, k, dtype=f64, device=dev),
                torch.zeros(out, dtype=f64, device=dev),
                torch.zeros((), dtype=f64, device=dev),
            ]
        assert self.c is not None and self.d is not None
        assert self.z is not None and self.sum_yc is not None
        r, z = self.r, self.z
        self.r = self.z = None
        d = self.d.to(f64)
        c = self.c.to(f64)
        if self.is_conv:
            groups, cg = self.groups, out // self.groups
            head = cg if self.relu else 1
            cin_g = c.numel() // groups
            # (groups, units, in channels, kernel positions) views, so that the
            # per-channel centre c broadcasts without an (out, fan_in) copy;
            # "linear": one Q' row and one count per group
            r4 = r.view(groups, head + cg, cin_g, k // cin_g)
            q4, p4 = r4[:, :head], r4[:, head:]
            count_h = z[:, :head]
            count = count_h.expand(groups, cg).reshape(out)
            sum_pos = z[:, head:].reshape(out)
            c4 = c.view(groups, 1, cin_g, 1)
            if raw:
                coef = (sum_pos + d * count).view(groups, cg, 1, 1)
                # sum_xy = P' + d Q' + c (S' + d count); sum_x = Q' + c count
                p4.addcmul_(d.view(groups, cg, 1, 1), q4).addcmul_(c4, coef)
                q4.addcmul_(c4, count_h.reshape(groups, head, 1, 1))
            q = q4.reshape(groups * head, k)
            if head != cg and not self.shared_x:
                q = q.repeat_interleave(cg, dim=0)
            p = p4.reshape(out, k)
        else:
            if self.relu:
                q, p = r[:out], r[out:]
            else:
                q, p = r[:1], r[1:]
            count, sum_pos = z[:out], z[out:]
            c_rows = c[None]
            if raw:
                coef = (sum_pos + d * count)[:, None]
                p.addcmul_(d[:, None], q).addcmul_(c_rows, coef)
                q.addcmul_(c_rows, count[:1, None] if self.shared_x else count[:, None])
        if self.shared_x:
            q = q[:1]
        n_all = torch.tensor(self.n_all, dtype=f64, device=q.device)
        if not raw:
            return [count.clone(), q, p, self.sum_yc, n_all, sum_pos.clone()]
        sum_y = self.n_all * d + self.sum_yc
        return [count.clone(), q.contiguous(), p.contiguous(), sum_y, n_all]

    def pattern(self, sums: list[Tensor], eps: float) -> tuple[Tensor, int, float]:
        """Eq. 2 of the PGIG paper (Kindermans et al.'s two-component a+).

        Returns the pattern, the number of units whose denominator was
        floored (``|w^T num| < eps |w| |num|``) and the smallest cosine
        ``|w^T num| / (|w| |num|)`` over the units with a non-zero numerator.
        Computed in blocks of rows, so that memory stays near the sums' size.
        """
        count, sum_x, sum_xy, sum_y, n_all = sums[:5]
        weight = self.weight.detach()
        w_all = weight.reshape(self.out_features, self.fan_in)
        out = torch.empty(
            self.out_features, self.fan_in, dtype=weight.dtype, device=count.device
        )
        safe = torch.where(count == 0, torch.ones_like(count), count)
        # count * num = sum M x (y - mean y), from the raw sums:
        #   sum_xy + delta sum_x, delta = -mean y,
        # or from the centred ones (x' = x - c, y' = y - d, T' = sum y'):
        #   P' + delta Q' + c (S' + delta count), delta = d - mean y = -T' / n
        delta = sum_y / n_all
        delta.neg_()
        c_full = coef_c = None
        if len(sums) == 6:
            assert self.c is not None
            coef_c = sums[5] + delta * count
            c = self.c.to(count.device, torch.float64)
            groups = self.groups
            cin_g = c.numel() // groups
            c_full = (
                c.view(groups, cin_g, 1)
                .expand(groups, cin_g, self.fan_in // cin_g)
                .reshape(groups, self.fan_in)
            )
        cg = self.out_features // self.groups
        floored = 0
        min_cos = float("inf")
        rows = max(1, _ADD_BLOCK // self.fan_in)
        for s in range(0, self.out_features, rows):
            e = min(s + rows, self.out_features)
            w = w_all[s:e].to(count.device, torch.float64)
            sx = sum_x if self.shared_x else sum_x[s:e]
            # the numerator, in place in the (consumed) sums
            num = sum_xy[s:e].addcmul_(sx, delta[s:e, None])
            if c_full is not None and coef_c is not None:
                rows_c = (
                    c_full
                    if self.groups == 1
                    else c_full[torch.arange(s, e, device=c_full.device) // cg]
                )
                num.addcmul_(rows_c, coef_c[s:e, None])
            num.div_(safe[s:e, None])
            den = torch.bmm(w.unsqueeze(1), num.unsqueeze(2)).view(-1)
            scale = torch.linalg.vector_norm(w, dim=1) * torch.linalg.vector_norm(
                num, dim=1
            )
            live = scale > 0
            if bool(live.any()):
                min_cos = min(min_cos, float((den.abs()[live] / scale[live]).min()))
            floor = eps * scale
            small = den.abs() < floor
            floored += int(small.sum())
            den = torch.where(small, torch.where(den < 0, -floor, floor), den)
            den = torch.where(den == 0, torch.ones_like(den), den)
            out[s:e] = num.div_(den[:, None])
        return out.reshape(weight.shape).cpu(), floored, min_cos


def _accumulate(acc: Tensor, r: Tensor) -> None:
    """``acc += r`` (``acc`` contiguous float64), in blocks of :data:`_ADD_BLOCK`.

    A float32 ``r`` is converted block by block: one mixed-dtype ``add_`` over
    the whole tensor would allocate a float64 copy of it, i.e. fresh pages
    (page faults) of twice the products' size on every batch.
    """
    flat = acc.view(-1)
    src = r.reshape(-1)
    for start in range(0, flat.numel(), _ADD_BLOCK):
        flat[start : start + _ADD_BLOCK].add_(src[start : start + _ADD_BLOCK])


class _NonFiniteBatch(Exception):
    def __init__(self, layer: str) -> None:
        super().__init__(layer)
        self.layer = layer


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


def _all_reduce(sums: list[list[Tensor]], num_examples: Tensor, group: Any) -> None:
    """Sum every raw sum over the ranks of ``group`` with one all_reduce."""
    import torch.distributed as dist

    tensors = [b for layer in sums for b in layer] + [num_examples]
    flat = torch.cat([t.reshape(-1) for t in tensors])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM, group=group)
    offset = 0
    for t in tensors:
        size = t.numel()
        t.copy_(flat[offset : offset + size].view_as(t))
        offset += size


def _first_examples(args: tuple[Any, ...], size: int) -> tuple[Any, ...] | None:
    """``args`` cut to their first ``size`` examples, or None if ambiguous."""
    n = _batch_size(args)
    if n <= size:
        return None
    return tuple(
        a[:size] if isinstance(a, Tensor) and a.dim() > 0 and a.shape[0] == n else a
        for a in args
    )


#: Functions that are a ReLU on their first argument (``nn.ReLU`` and
#: ``nn.ReLU6`` call them); see :func:`_probe`.
_RELU_FUNCTIONS = frozenset(
    {F.relu, F.relu_, F.relu6, torch.relu, torch.relu_, Tensor.relu, Tensor.relu_}
)


#: A layer whose activation goes straight into one of these is an output layer
#: (a model that returns probabilities): it gets the output layer's estimator.
_SOFTMAX_FUNCTIONS = frozenset(
    {F.softmax, F.log_softmax, torch.softmax, torch.log_softmax}
    | {Tensor.softmax, Tensor.log_softmax}
)


def _is_relu(func: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
    """Whether the call is a ReLU (or a ReLU6: ``nn.ReLU6`` calls hardtanh)."""
    if func in _RELU_FUNCTIONS:
        return True
    if func in (F.hardtanh, F.hardtanh_):
        low = args[1] if len(args) > 1 else kwargs.get("min_val", -1.0)
        return isinstance(low, (int, float)) and low == 0
    return False


class _FirstConsumer(torch.overrides.TorchFunctionMode):
    """Which watched tensors go first into a ReLU (or a softmax).

    For each watched tensor: whether the first operation that computes a
    tensor from it is a ReLU, or a softmax / log-softmax (the output layer of
    a model that returns probabilities), given the tensor unmodified.
    """

    def __init__(self) -> None:
        super().__init__()
        # id -> (tensor, version when produced); decided: id -> fed a ReLU?
        self.watched: dict[int, tuple[Tensor, int]] = {}
        self.decided: dict[int, bool] = {}
        self._paused = False

    @contextmanager
    def paused(self) -> Iterator[None]:
        """Operations in this context (the probe's own copies) are not uses."""
        self._paused = True
        try:
            yield
        finally:
            self._paused = False

    def watch(self, t: Any) -> None:
        if isinstance(t, Tensor) and id(t) not in self.decided:
            self.watched[id(t)] = (t, t._version)

    def __torch_function__(
        self,
        func: Any,
        types: Any,
        args: tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
    ) -> Any:
        kwargs = kwargs or {}
        if self._paused:
            return func(*args, **kwargs)
        hits = [
            (i, a)
            for i, a in enumerate((*args, *kwargs.values()))
            if isinstance(a, Tensor) and id(a) in self.watched
        ]
        # the versions before the call (an in-place op changes them)
        before = {id(a): a._version for _, a in hits}
        result = func(*args, **kwargs)
        # metadata queries (dim, size, shape, ...) return no tensor: not a use
        computes = isinstance(result, Tensor) or (
            isinstance(result, (tuple, list))
            and any(isinstance(r, Tensor) for r in result)
        )
        if computes:
            for i, a in hits:
                if result is a and a._version == before[id(a)]:
                    continue  # an identity (eval-mode Dropout): not a use
                entry = self.watched.pop(id(a), None)
                if entry is None:
                    continue  # the same tensor twice in one call (``h * h``)
                version = entry[1]
                self.decided[id(a)] = (
                    (_is_relu(func, args, kwargs) or func in _SOFTMAX_FUNCTIONS)
                    and i == 0
                    and before[id(a)] == version
                )
        return result


def _split_batch(
    model: nn.Module, args: tuple[Any, ...], size: int
) -> tuple[tuple[Any, ...], tuple[Any, ...]] | None:
    """``(first size examples, the others)``, or None unless exactly separable.

    Separable: the model is in eval mode (no module in training mode, so no
    batch statistics), and every argument is either a Tensor whose first
    dimension is the batch (larger than ``size``) or a plain scalar / string /
    None, passed to both halves.
    """
    n = _batch_size(args)
    if n <= size or any(m.training for m in model.modules()):
        return None
    for a in args:
        if isinstance(a, Tensor):
            if a.dim() == 0 or a.shape[0] != n:
                return None
        elif a is not None and not isinstance(a, (bool, int, float, str)):
            return None
    head = tuple(a[:size] if isinstance(a, Tensor) else a for a in args)
    tail = tuple(a[size:] if isinstance(a, Tensor) else a for a in args)
    return head, tail


#: Examples of the first batch that the probe pass runs on.
_PROBE_EXAMPLES = 2

_Stashed = tuple[str, Tensor, Tensor, Tensor | None]


def _probe(
    model: nn.Module, chosen: dict[str, nn.Module], args: tuple[Any, ...]
) -> tuple[
    dict[str, nn.Module], str | None, set[str], list[_Stashed], tuple[Any, ...] | None
]:
    """Which chosen layers feed a BatchNorm, which feed a ReLU, and the output layer.

    Returns ``({layer name: bn}, name, relu_fed, stash, rest)``, found by one
    forward pass on (a slice of) ``args``: a BatchNorm whose input is the very
    tensor a layer returned follows that layer; a layer is in ``relu_fed``
    when the first operation applied to its activation (its output, or its
    BatchNorm's output) is a ReLU, with the activation unmodified (so not a
    residual sum, a pooling or another activation first), or a softmax /
    log-softmax (an output layer of a model returning probabilities); the
    output layer
    is the one whose output is the model's return value (None if there is
    none).

    When the batch splits exactly into its first :data:`_PROBE_EXAMPLES`
    examples and the others (:func:`_split_batch`), the probe runs on the
    first ones and keeps copies of each chosen layer call's input, output
    and, if a BatchNorm follows, that BatchNorm's mask (``stash``: ``(name,
    x, y, gate)``; copies, since later in-place operations of the forward may
    change the originals), so that their statistics need no second pass;
    ``rest`` are the other examples (to be passed normally). Otherwise the
    stash is empty and ``rest`` is ``args``: the whole batch is still to do.
    """
    split = _split_batch(model, args, _PROBE_EXAMPLES)
    keep = split is not None
    outputs: dict[int, tuple[str, Tensor, int]] = {}
    pairs: dict[str, nn.Module] = {}
    bn_outputs: dict[str, Tensor] = {}
    mode = _FirstConsumer()
    # [name, x, y, mask of the following BatchNorm, that BatchNorm]
    stash: list[list[Any]] = []
    copies: dict[int, tuple[Tensor, int, Tensor]] = {}

    def copy(t: Tensor) -> Tensor:
        hit = copies.get(id(t))
        if hit is not None and hit[0] is t and hit[1] == t._version:
            return hit[2]  # the same input of several layers, unchanged
        c = t.detach().clone()
        copies[id(t)] = (t, t._version, c)
        return c

    def layer_hook(name: str) -> Callable[..., None]:
        def hook(
            module: nn.Module, a: tuple[Any, ...], kwargs: dict[str, Any], out: Any
        ) -> None:
            if isinstance(out, Tensor):
                outputs[id(out)] = (name, out, len(stash))
                mode.watch(out)
                if keep:
                    x = a[0] if a else kwargs["input"]
                    with mode.paused():
                        stash.append([name, copy(x), copy(out), None, None])

        return hook

    def bn_hook(module: nn.Module, inp: tuple[Any, ...], out: Any) -> None:
        x = inp[0] if inp else None
        found = outputs.get(id(x))
        if found is not None and found[1] is x:
            pairs[found[0]] = module
            if isinstance(out, Tensor):
                bn_outputs[found[0]] = out
                mode.watch(out)
                if keep:
                    with mode.paused():
                        stash[found[2]][3:] = [out > 0, module]

    def run(call_args: tuple[Any, ...]) -> Any:
        outputs.clear()
        pairs.clear()
        bn_outputs.clear()
        mode.watched.clear()
        mode.decided.clear()
        with mode:
            return model(*call_args)

    handles = []
    try:
        for name, m in chosen.items():
            handles.append(m.register_forward_hook(layer_hook(name), with_kwargs=True))
        for m in model.modules():
            if isinstance(m, BATCHNORM_TYPES):
                handles.append(m.register_forward_hook(bn_hook))
        with torch.no_grad():
            rest: tuple[Any, ...] | None = args
            small = split[0] if split is not None else _first_examples(args, 2)
            try:
                result = run(small if small is not None else args)
                if split is not None:
                    rest = split[1]
            except Exception:
                if small is None:
                    raise
                stash.clear()
                keep = False
                result = run(args)
    finally:
        for h in handles:
            h.remove()
    found = outputs.get(id(result))
    last = found[0] if found is not None and found[1] is result else None
    relu_fed = set()
    for name, out, _ in outputs.values():
        activation = bn_outputs.get(name, out) if name in pairs else out
        if mode.decided.get(id(activation), False):
            relu_fed.add(name)
    kept: list[_Stashed] = [
        (name, x, y, gate if bn is not None and pairs.get(name) is bn else None)
        for name, x, y, gate, bn in stash
    ]
    return pairs, last, relu_fed, kept, rest


@log_usage(part_of_slo=True)
@preserves_model_state
def fit_patterns(
    model: nn.Module,
    data: Iterable[Any],
    kind: str = "auto",
    layers: Sequence[str | nn.Module] | None = None,
    max_batches: int | None = None,
    show_progress: bool = False,
    process_group: Any = None,
    *,
    unpack_batch: Callable[[Any], Any] | None = None,
    compute_dtype: torch.dtype | None = None,
    eps: float = DEFAULT_EPS,
) -> PatternSet:
    r"""Estimate PatternNet / PatternAttribution patterns in one streaming pass.

    For every ``nn.Linear`` and ``nn.Conv1d`` / ``nn.Conv2d`` / ``nn.Conv3d``
    layer with weight :math:`W`, input :math:`x` and output
    :math:`y = W x + b`, the pattern of output unit :math:`j` is the
    two-component estimator of Kindermans et al. (2018), eq. 2 of Schwarzenberg
    & Castle, *Pattern-Guided Integrated Gradients*
    (https://arxiv.org/abs/2007.10685):

    .. math::

        a_j = \frac{\mathbb{E}_+[x y_j] - \mathbb{E}_+[x]\,\mathbb{E}[y_j]}
                   {w_j^T \left(\mathbb{E}_+[x y_j]
                    - \mathbb{E}_+[x]\,\mathbb{E}[y_j]\right)}

    where :math:`\mathbb{E}_+` averages over the samples in which the unit is
    active (the two-component estimator, for a unit followed by a ReLU) or
    over all samples (the linear estimator: :math:`a =
    \operatorname{cov}(x, y) / w^T \operatorname{cov}(x, y)`), and
    :math:`\mathbb{E}[y_j]` always averages over all samples. "Active" means
    that the input of the activation that follows is positive: the layer's
    output :math:`y_j > 0`, or, when a BatchNorm directly follows the layer,
    that BatchNorm's output (so the patterns equal those of the model with the
    BatchNorm folded, rescaled to the layer's own weight; see
    :mod:`captum_ext.attr._core.pattern._backward` for the BatchNorm rule).
    For a convolution every output position of every example is one sample of
    (input patch, output), with the layer's stride, padding (zeros count as
    inputs), dilation and groups. The bias cancels in the numerator.

    **Stabiliser.** When the numerator is nearly orthogonal to :math:`w_j`,
    the denominator nears zero and the pattern's norm :math:`1 / (|w_j|
    \cos\theta_j)` explodes, and the backward passes multiply such factors
    over the layers. The denominator's magnitude is therefore floored at
    ``eps`` :math:`|w_j|\,|\text{num}_j|` (its sign is kept), i.e.
    :math:`|\cos\theta_j| \ge` ``eps``; a warning names the layers where the
    floor applied. Units above the floor get the exact estimator; a zero
    count or numerator gives a zero pattern.

    The pass is streaming: per batch, the im2col products
    :math:`\sum_n x_n [M_n, M_n y_n]` are formed by one matrix kernel per layer
    (a matrix multiply for ``nn.Linear``; for convolutions the convolution
    weight-gradient kernel, which computes the im2col product without
    materialising the patches), on ``x`` and ``y`` centred by batch means for
    conditioning, in ``compute_dtype``, and added to float64 accumulators from
    which the raw sums are reconstructed exactly. Large batches are processed
    in chunks of examples, so the work buffers stay bounded (and are reused
    by every layer and batch); memory does not grow with the data set (the
    float64 statistics take 16 bytes per weight), and there are no
    per-sample Python loops. For ``kind="relu"`` one probe pass finds which
    layers a BatchNorm directly follows; in eval mode it runs on the first
    two examples and their statistics are taken from it, so the data go
    through the model once. Layers
    that the forward pass never calls get no pattern (with ``layers=None``);
    neither do the layers inside the scale path of torchvision
    ``SqueezeExcitation`` gates (the backward rules treat the gate as a
    constant). Non-finite values in a batch raise an error naming the batch.

    Args:
        model (nn.Module): The model, in eval mode (BatchNorm layers are
            handled as the per-channel affine maps they are in eval mode; the
            model is never modified). Attention, LayerNorm and other layers
            outside the pattern theory are refused before any forward pass.
        data (Iterable): A DataLoader or any iterable of input tensors or
            ``(input, ...)`` tuples (the first element is the model input, as
            in ``(x, y)`` batches). Tensors are moved to the model's device.
        kind (str): Which estimator each layer gets.
            ``"auto"`` (default): the two-component estimator for the layers
            whose activation (output, or output of the BatchNorm that follows)
            goes unmodified into a ReLU (``nn.ReLU``, ``F.relu``,
            ``torch.relu``, ReLU6, in place or not), and for the output layer
            (also one followed only by a softmax or log-softmax), as in the
            references; the linear estimator for the others: layers
            whose activation is first summed into a residual connection,
            pooled, concatenated, or fed to another activation (SiLU,
            Hardswish, GELU, ...), where the ReLU's positive regime does not
            apply. On a plain ReLU network (MLP, VGG) this is ``"relu"``.
            ``"relu"``: the two-component estimator for every layer (the
            references' choice). ``"linear"``: the linear estimator for every
            layer. On the trained torchvision ResNet-18 of
            :func:`captum_ext.models.digits_vision_model`, ``"relu"`` puts
            PatternAttribution below random order on image degradation, and
            ``"auto"`` well above it (``docs/patterns.md`` gives the numbers).
        layers (list[str or nn.Module], optional): Only these layers (names or
            modules). Default: every pattern layer. The attribution classes
            need a pattern for every such layer the forward pass calls, so a
            subset is for inspecting patterns (or for models that route
            around the other layers).
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
        eps (float): Stabiliser: the smallest ``|cos|`` allowed between a
            unit's weight and its pattern's numerator (the denominator floor,
            relative to the unit's scale). ``0`` disables the floor. Default:
            1e-3.

    Returns:
        PatternSet: one pattern per layer, shaped like its weight.

    Raises:
        ValueError: For unsupported models or arguments (before any forward
            pass), and for a batch with non-finite inputs or statistics
            (naming the batch and the layer).

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
    if (
        isinstance(eps, bool)
        or not isinstance(eps, (int, float))
        or not math.isfinite(eps)
        or not 0 <= eps < 1
    ):
        raise ValueError(f"`eps` must be a float in [0, 1), got {eps!r}.")
    if isinstance(data, (Tensor, str, bytes)) or not isinstance(data, Iterable):
        raise TypeError(
            "`data` must be a DataLoader or an iterable of batches (a Tensor is a "
            "single batch: pass [tensor]), got "
            f"{type(data).__name__}."
        )
    chosen = select_layers(model, layers)
    reduce, group = _resolve_process_group(process_group)

    workspace = _Workspace()
    stats = {
        name: _LayerStats(name, m, kind, compute_dtype, workspace)
        for name, m in chosen.items()
    }
    param = next(model.parameters(), None)
    device = param.device if param is not None else None
    unpack = unpack_batch if unpack_batch is not None else _default_unpack
    paired: dict[str, nn.Module] = {}
    output_layer: str | None = None
    pending: dict[int, tuple[_LayerStats, Tensor, Tensor]] = {}

    def make_hook(s: _LayerStats) -> Callable[..., None]:
        def hook(
            module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], out: Any
        ) -> None:
            x = args[0] if args else kwargs["input"]
            bn = paired.get(s.name)
            if bn is not None:  # the mask comes from the BatchNorm's output
                pending[id(bn)] = (s, x, out)
            else:
                s.update(x, out)

        return hook

    def bn_hook(module: nn.Module, args: tuple[Any, ...], out: Any) -> None:
        item = pending.pop(id(module), None)
        if item is None:
            return
        s, x, y = item
        s.update(x, y, out if args[0] is y else None)

    total: int | None = None
    if hasattr(data, "__len__"):
        try:
            total = len(data)  # type: ignore[arg-type]
        except TypeError:
            total = None
    if total is not None and max_batches is not None:
        total = min(total, max_batches)

    num_examples = 0
    n_batches = 0
    handles = []
    try:
        with torch.no_grad():
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
                for i, a in enumerate(args):
                    if isinstance(a, Tensor) and a.is_floating_point():
                        if not bool(torch.isfinite(a).all()):
                            raise ValueError(
                                f"`data`: batch {n_batches} holds non-finite "
                                f"values (NaN or inf) in model argument {i}; "
                                "patterns would all become NaN. Clean or drop "
                                "that batch."
                            )
                stash: list[_Stashed] = []
                rest: tuple[Any, ...] | None = args
                if n_batches == 0 and kind != "linear":
                    pairs, output_layer, relu_fed, stash, rest = _probe(
                        model, chosen, args
                    )
                    paired.update(pairs)
                    if kind == "auto":
                        for s in stats.values():
                            s.set_relu(s.name in relu_fed or s.name == output_layer)
                if n_batches == 0:
                    for s in stats.values():
                        handles.append(
                            s.module.register_forward_hook(
                                make_hook(s), with_kwargs=True
                            )
                        )
                    for bn in set(paired.values()):
                        handles.append(bn.register_forward_hook(bn_hook))
                try:
                    # the examples the probe pass already ran on, then the rest
                    for name, x, y, gate in stash:
                        stats[name].update(x, y, gate)
                    del stash
                    if rest is not None:
                        model(*rest)
                except _NonFiniteBatch as err:
                    raise ValueError(
                        f"`data`: batch {n_batches} gives non-finite statistics "
                        f"(NaN or inf) at layer {err.layer!r} although its inputs "
                        "are finite (the activations overflow); patterns would "
                        "all become NaN."
                    ) from None
                for s, x, y in pending.values():  # a pairing that did not occur
                    s.update(x, y)
                pending.clear()
                num_examples += _batch_size(args)
                n_batches += 1
    finally:
        pending.clear()
        for h in handles:
            h.remove()

    dev = device if device is not None else torch.device("cpu")
    try:
        # raw sums only where other processes add theirs
        sums = {name: s.raw_sums(dev, raw=reduce) for name, s in stats.items()}
    except _NonFiniteBatch as err:
        raise ValueError(
            f"`data` gives non-finite statistics (NaN or inf) at layer "
            f"{err.layer!r} although the inputs are finite (the activations "
            "overflow); patterns would all become NaN."
        ) from None
    if reduce:
        count_t = torch.tensor(float(num_examples), dtype=torch.float64, device=dev)
        _all_reduce([sums[n] for n in stats], count_t, group)
        num_examples = round(float(count_t))
    elif n_batches == 0:
        raise ValueError("`data` yielded no batches.")

    patterns = {}
    ill: list[str] = []
    for name, s in stats.items():
        if float(sums[name][4]) == 0:
            if layers is None:
                continue  # never called by the forward pass: nothing to explain
            raise ValueError(
                f"Layer {name!r} saw no data while fitting patterns (the model's "
                "forward never called it); leave it out of `layers`."
            )
        if name == output_layer and s.relu:
            never = (sums[name][0] == 0).nonzero().flatten().tolist()
            if never:
                shown = ", ".join(str(i) for i in never[:10])
                warnings.warn(
                    f"fit_patterns: output units [{shown}"
                    f"{', ...' if len(never) > 10 else ''}] of the output layer "
                    f"{name!r} were never positive on `data`, so their "
                    "kind='relu' patterns are zero and PatternNet, "
                    "PatternAttribution and PGIG return exactly zero for these "
                    "targets. Fit on more (or more representative) data, or "
                    "use kind='linear'.",
                    UserWarning,
                    stacklevel=2,
                )
        pattern, floored, min_cos = s.pattern(sums.pop(name), float(eps))
        patterns[name] = pattern
        if floored:
            ill.append(
                f"{name!r} ({floored} of {s.out_features} units, min |cos| "
                f"{min_cos:.1e})"
            )
    if not patterns:
        raise ValueError("No pattern layer was called by the model's forward pass.")
    if ill:
        warnings.warn(
            "fit_patterns: ill-conditioned layers, where a unit's pattern "
            "numerator is nearly orthogonal to its weight (denominator "
            f"|w^T num| < eps |w| |num|, eps={eps:g}): {', '.join(ill)}. Their "
            "denominators were floored at eps |w| |num| (raise `eps` for more "
            "stability, or fit on more data).",
            UserWarning,
            stacklevel=2,
        )
    return PatternSet(patterns, kind=kind, num_examples=num_examples)
