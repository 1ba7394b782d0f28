"""Streaming per-feature mean of a tensor, a Dataset or a DataLoader."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import torch
from captum._utils.progress import progress
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, TensorDataset

from captum_ext.transforms._base import _is_pil_image


def _pil_to_tensor(image: Any) -> Tensor:
    """A PIL image as a ``uint8`` tensor ``(C, H, W)`` (values 0-255)."""
    import numpy as np

    x = torch.from_numpy(np.array(image, dtype=np.uint8))
    return x[None] if x.dim() == 2 else x.permute(2, 0, 1).contiguous()


def _first_tensor(item: Any, where: str) -> Tensor:
    if isinstance(item, (tuple, list)) and item:
        item = item[0]
    if isinstance(item, Tensor):
        return item.as_subclass(Tensor)  # tv_tensors: the plain tensor
    if _is_pil_image(item):
        return _pil_to_tensor(item)
    raise TypeError(
        f"{where} must yield Tensors, PIL images or (input, ...) tuples/lists "
        f"whose first element is the input, got {type(item).__name__}."
    )


def _collate_inputs(items: list[Any]) -> Tensor:
    """Stack the inputs of a Dataset's samples (PIL images as uint8 tensors)."""
    return torch.stack([_first_tensor(item, "`data` (a Dataset)") for item in items])


def _batches(data: Any, batch_size: int) -> tuple[Iterator[Tensor], int | None]:
    """Iterate input batches ``(b, *sample_shape)`` from any supported source."""
    if isinstance(data, Tensor):
        if data.dim() < 2:
            raise ValueError(
                "`data` as a Tensor must be (n, *sample_shape) with at least 2 "
                f"dimensions, got shape {tuple(data.shape)}."
            )
        chunks = data.split(batch_size)
        return iter(chunks), len(chunks)
    if isinstance(data, TensorDataset):
        x = data.tensors[0]
        chunks = x.split(batch_size)
        return iter(chunks), len(chunks)
    if isinstance(data, DataLoader):
        # batch_size=None: the loader yields single samples, not batches.
        unbatched = data.batch_size is None and data.batch_sampler is None
        try:
            total: int | None = len(data)
        except TypeError:
            total = None

        def from_loader() -> Iterator[Tensor]:
            for item in data:
                x = _first_tensor(item, "`data` (a DataLoader)")
                yield x.unsqueeze(0) if unbatched else x

        return from_loader(), total
    if isinstance(data, Dataset):
        loader: DataLoader[Any] = DataLoader(
            data, batch_size=batch_size, collate_fn=_collate_inputs
        )
        return _batches(loader, batch_size)
    if isinstance(data, Iterable):

        def from_iterable() -> Iterator[Tensor]:
            for item in data:
                yield _first_tensor(item, "`data` (an iterable)")

        return from_iterable(), None
    raise TypeError(
        "`data` must be a Tensor (n, ...), a Dataset, a DataLoader or an iterable "
        f"of batches, got {type(data).__name__}."
    )


def data_mean(
    data: Any,
    reduce_dims: tuple[int, ...] = (),
    batch_size: int = 1024,
    show_progress: bool = False,
) -> Tensor:
    """Mean of the inputs over examples (and ``reduce_dims``), in one pass.

    Accumulates a float64 sum and count, so the result does not depend on how
    the data are batched; the result has the data's floating dtype (the default
    dtype for integer data). ``reduce_dims`` index the dimensions of one sample
    (0 is the first non-batch dimension) and are kept with size 1.
    """
    batches, total = _batches(data, batch_size)
    acc: Tensor | None = None
    count = 0
    sample_shape: tuple[int, ...] | None = None
    dtype = torch.get_default_dtype()
    dims: tuple[int, ...] = ()
    for x in progress(batches, desc="mean", total=total, disable=not show_progress):
        if x.dim() < 2:
            raise ValueError(
                f"`data` must yield batches (b, *sample_shape) with a sample of at "
                f"least one dimension, got shape {tuple(x.shape)}."
            )
        if sample_shape is None:
            sample_shape = tuple(x.shape[1:])
            if x.is_floating_point():
                dtype = x.dtype
            for d in reduce_dims:
                if isinstance(d, bool) or not isinstance(d, int):
                    raise TypeError(f"`reduce_dims` must hold ints, got {d!r}.")
                if not -len(sample_shape) <= d < len(sample_shape):
                    raise ValueError(
                        f"`reduce_dims` entry {d} is out of range for samples of "
                        f"shape {sample_shape}."
                    )
            dims = tuple(1 + (d % len(sample_shape)) for d in reduce_dims)
        elif tuple(x.shape[1:]) != sample_shape:
            raise ValueError(
                f"`data`: all samples must share one shape; got {sample_shape} "
                f"and {tuple(x.shape[1:])}."
            )
        x64 = x.detach().to(torch.float64)
        part = x64.sum(dim=(0, *dims), keepdim=True)[0]
        acc = part if acc is None else acc + part
        count += x.shape[0]
    if acc is None or count == 0 or sample_shape is None:
        raise ValueError("`data` holds no examples.")
    per_element = 1
    for d in dims:
        per_element *= sample_shape[d - 1]
    return (acc / (count * per_element)).to(dtype)
