"""Shared machinery of the ablation transforms: checks, random draws, workers."""

from __future__ import annotations

import hashlib
import math
from numbers import Real
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import get_worker_info

from captum_ext._utils.validation import check_generator


def check_probability(p: Any, name: str = "p", allow_one: bool = False) -> float:
    """Return ``p`` as a float after checking it lies in [0, 1) (or [0, 1])."""
    if isinstance(p, bool) or not isinstance(p, Real):
        raise TypeError(f"`{name}` must be a real number, got {type(p).__name__}.")
    value = float(p)
    upper_ok = value <= 1.0 if allow_one else value < 1.0
    if not (math.isfinite(value) and value >= 0.0 and upper_ok):
        interval = "[0, 1]" if allow_one else "[0, 1)"
        raise ValueError(f"`{name}` must be in {interval}, got {p!r}.")
    return value


def check_mean(mean: Any, name: str = "mean") -> Tensor:
    """A detached floating-point copy of ``mean`` shaped like (part of) one sample."""
    if not isinstance(mean, Tensor):
        raise TypeError(
            f"`{name}` must be a torch.Tensor shaped like one sample (e.g. (k,) for "
            f"tabular data, (C, H, W) or (C, 1, 1) for images), got "
            f"{type(mean).__name__}."
        )
    if mean.dim() == 0:
        raise ValueError(
            f"`{name}` must have at least one dimension so that one sample and a "
            "batch can be told apart; give it the shape of one sample (e.g. (k,) "
            "or (C, 1, 1)), not a 0-d tensor."
        )
    if not mean.is_floating_point():
        mean = mean.to(torch.get_default_dtype())
    if not bool(torch.isfinite(mean).all()):
        raise ValueError(f"`{name}` must be finite.")
    return mean.detach().clone()


def check_input(x: Any, owner: str) -> Tensor:
    """Check that the transform's input is a floating-point tensor."""
    if not isinstance(x, Tensor):
        raise TypeError(f"{owner} expects a torch.Tensor, got {type(x).__name__}.")
    if not x.is_floating_point():
        raise TypeError(
            f"{owner} expects a floating-point tensor, got dtype {x.dtype}; convert "
            "first (e.g. torchvision.transforms.v2.ToDtype(torch.float32, "
            "scale=True) before it in a Compose)."
        )
    return x


def split_batch(x: Tensor, mean: Tensor, owner: str) -> bool:
    """Whether ``x`` is a batch, judged against the shape of ``mean``.

    ``x`` is one sample when it has as many dimensions as ``mean`` and a batch
    when it has one more; ``mean`` must broadcast to a sample without changing
    the sample's shape. Anything else raises a ValueError naming both shapes.
    """
    if x.dim() == mean.dim():
        batched = False
    elif x.dim() == mean.dim() + 1:
        batched = True
    else:
        raise ValueError(
            f"{owner}: the input has shape {tuple(x.shape)}, but `mean` has shape "
            f"{tuple(mean.shape)}; expected one sample with {mean.dim()} "
            f"dimensions or a batch with {mean.dim() + 1}."
        )
    sample = tuple(x.shape[1:] if batched else x.shape)
    ok = all(m in (1, s) for m, s in zip(mean.shape, sample))
    if not ok:
        raise ValueError(
            f"{owner}: `mean` of shape {tuple(mean.shape)} does not match samples "
            f"of shape {sample} (each dimension of `mean` must equal the sample's "
            "or be 1)."
        )
    return batched


def uniform(
    shape: tuple[int, ...], generator: torch.Generator | None, device: torch.device
) -> Tensor:
    """Float32 uniform draws on ``device`` (drawn on the generator's device)."""
    if generator is None:
        return torch.rand(shape, device=device)
    return torch.rand(shape, generator=generator, device=generator.device).to(device)


def randint(
    high: int,
    shape: tuple[int, ...],
    generator: torch.Generator | None,
    device: torch.device,
) -> Tensor:
    """Integers in ``[0, high)`` on ``device`` (drawn on the generator's device)."""
    if generator is None:
        return torch.randint(0, high, shape, device=device)
    return torch.randint(
        0, high, shape, generator=generator, device=generator.device
    ).to(device)


def rewrap(out: Tensor, like: Tensor) -> Tensor:
    """Give ``out`` the tensor subclass of ``like`` (torchvision's tv_tensors)."""
    cls = type(like)
    if cls is Tensor or not cls.__module__.startswith("torchvision"):
        return out
    from torchvision import tv_tensors  # type: ignore[import-untyped]

    return tv_tensors.wrap(out, like=like)


def _mix_seeds(a: int, b: int) -> int:
    digest = hashlib.blake2b(f"{a}:{b}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


class RandomTransform(nn.Module):
    """Base class: holds the optional generator and re-seeds it in workers.

    A ``torch.Generator`` is copied, state included, into every DataLoader
    worker process along with the Dataset that holds the transform, so without
    care all workers would draw the same masks. The first time the transform
    runs in a worker (and whenever the worker's seed changes), its copy of the
    generator is re-seeded from the worker's seed (``get_worker_info().seed``,
    itself derived from the DataLoader's base seed) mixed with the generator's
    own initial seed: workers then draw different masks, and a DataLoader
    built with a seeded ``generator`` reproduces them exactly. In the main
    process the generator is used exactly as given.
    """

    def __init__(self, generator: torch.Generator | None) -> None:
        nn.Module.__init__(self)
        check_generator(generator)
        self.generator = generator
        self._initial_seed = None if generator is None else generator.initial_seed()
        self._worker_seed: int | None = None

    def _rng(self) -> torch.Generator | None:
        generator = self.generator
        if generator is None:
            return None
        info = get_worker_info()
        if info is not None and info.seed != self._worker_seed:
            generator.manual_seed(_mix_seeds(int(self._initial_seed or 0), info.seed))
            self._worker_seed = info.seed
        return generator
