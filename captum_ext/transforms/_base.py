"""Shared machinery of the ablation transforms: checks, random draws, workers."""

from __future__ import annotations

import hashlib
import math
from numbers import Real
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils._pytree import tree_flatten, tree_unflatten
from torch.utils.data import get_worker_info

from captum_ext._utils.validation import check_generator

_INTEGER_DTYPES = (
    torch.uint8,
    torch.int8,
    torch.int16,
    torch.int32,
    torch.int64,
)


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
            f"{owner} transforms floating-point and integer tensors, got dtype "
            f"{x.dtype}; convert first (e.g. x.float())."
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


def _is_pil_image(obj: Any) -> bool:
    cls = type(obj)
    return cls.__module__.startswith("PIL.") and any(
        c.__name__ == "Image" and c.__module__ == "PIL.Image" for c in cls.__mro__
    )


def _tv_kind(obj: Any) -> str | None:
    """The kind of a torchvision tv_tensor, None for anything else.

    ``"image"`` for Image / Video, ``"other"`` for the rest (BoundingBoxes,
    Mask, KeyPoints, ...).
    """
    if not isinstance(obj, Tensor) or type(obj) is Tensor:
        return None
    if not type(obj).__module__.startswith("torchvision"):
        return None
    from torchvision import tv_tensors

    if isinstance(obj, (tv_tensors.Image, tv_tensors.Video)):
        return "image"
    return "other"


def _transformed_leaves(leaves: list[Any]) -> list[int]:
    """Indices of the leaves a v2-style transform changes.

    As in torchvision's v2 transforms: tv_tensors Images / Videos and PIL
    images; plain tensors only when the sample has neither, and then only the
    first plain tensor (later ones, e.g. a label tensor, pass through).
    """
    explicit = [
        i
        for i, leaf in enumerate(leaves)
        if _tv_kind(leaf) == "image" or _is_pil_image(leaf)
    ]
    if explicit:
        return explicit
    for i, leaf in enumerate(leaves):
        if isinstance(leaf, Tensor) and type(leaf) is Tensor:
            return [i]
    return []


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

    def _module_call(self, x: Tensor) -> Tensor:
        # nn.Module's call (hooks included) on a floating-point tensor: forward
        out: Tensor = nn.Module.__call__(self, x)
        return out

    def _transform_leaf(self, x: Any) -> Any:
        """Transform one image-like leaf: float / integer tensor or PIL image."""
        if _is_pil_image(x):
            return self._apply_pil(x)
        like = x
        if type(x) is not Tensor:
            x = x.as_subclass(Tensor)  # tv_tensors: compute on the plain tensor
        if x.is_floating_point():
            out = self._module_call(x)
        elif x.dtype in _INTEGER_DTYPES:
            info = torch.iinfo(x.dtype)
            small = x.dtype in (torch.uint8, torch.int8, torch.int16)
            out = self._module_call(x.to(torch.float32 if small else torch.float64))
            out = out.round_().clamp_(info.min, info.max).to(x.dtype)
        else:
            out = self._module_call(check_input(x, type(self).__name__))
        return rewrap(out, like)

    def _apply_pil(self, image: Any) -> Any:
        import numpy as np
        from PIL import Image

        if image.mode not in ("L", "RGB", "RGBA"):
            raise TypeError(
                f"{type(self).__name__} transforms PIL images of mode 'L', 'RGB' "
                f"or 'RGBA', got mode {image.mode!r}; convert it first (e.g. "
                "image.convert('RGB'))."
            )
        array = np.asarray(image, dtype=np.uint8)
        x = torch.from_numpy(array.copy())
        x = x[None] if x.dim() == 2 else x.permute(2, 0, 1)
        out = self._transform_leaf(x.contiguous())
        out_array = out.permute(1, 2, 0).contiguous().numpy()
        if image.mode == "L":
            out_array = out_array[..., 0]
        return Image.fromarray(out_array)

    def __call__(self, *inputs: Any) -> Any:
        """Transform the images of a sample (or a batch); pass the rest through.

        ``forward`` transforms one floating-point tensor; calling the
        transform accepts more, like a ``torchvision.transforms.v2`` transform
        (without needing torchvision): ``inputs`` may
        be one tensor (one sample or a batch), a PIL image, a tv_tensors
        ``Image`` / ``Video``, or any nesting of tuples / lists / dicts of them
        with other entries (labels, ``BoundingBoxes``, ``Mask``, ...), given
        as one argument or several. The images are transformed (each with its
        own random draws) and everything else is returned unchanged, in the
        same structure. Which entries are images follows torchvision: tv_tensors
        images and PIL images; when there are none, the first plain tensor.

        dtypes: floating tensors are transformed as they are; integer tensors
        (e.g. ``uint8`` images in 0-255) are transformed in floating point and
        rounded to the nearest integer, clamped to the dtype's range, and
        returned in their dtype; PIL images (modes L, RGB, RGBA) as ``uint8``
        tensors ``(C, H, W)`` in 0-255, returned as PIL images of the same
        mode. ``mean`` must then be on the image's scale (0-255).

        Args:
            *inputs (Any): The sample, as one argument or several.

        Returns:
            Any: the transformed sample, in the structure of ``inputs`` (a
            tuple when several arguments were given).
        """
        if not inputs:
            raise TypeError(f"{type(self).__name__} expects an input, got none.")
        sample = inputs if len(inputs) > 1 else inputs[0]
        if isinstance(sample, Tensor) and type(sample) is Tensor:
            return self._transform_leaf(sample)
        leaves, spec = tree_flatten(sample)
        which = _transformed_leaves(leaves)
        if not which:
            raise TypeError(
                f"{type(self).__name__} found nothing to transform in a "
                f"{type(sample).__name__}: it transforms torch.Tensors, "
                "tv_tensors.Image / Video and PIL images (alone or inside "
                "tuples, lists and dicts)."
            )
        out = list(leaves)
        for i in which:
            out[i] = self._transform_leaf(leaves[i])
        return tree_unflatten(out, spec)
