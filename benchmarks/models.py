"""Models and inputs shared by benchmark rows."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn


def cifar_cnn(num_classes: int = 10, width: int = 32) -> nn.Sequential:
    """A VGG-style ReLU CNN for 3x32x32 inputs (big enough to time honestly)."""
    w = width
    return nn.Sequential(
        nn.Conv2d(3, w, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(w, w, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(w, 2 * w, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(2 * w, 2 * w, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(2 * w * 8 * 8, 256),
        nn.ReLU(),
        nn.Linear(256, num_classes),
    )


def image_batch(
    batch: int,
    device: torch.device,
    seed: int = 0,
    make_model: Callable[[], nn.Module] = cifar_cnn,
    shape: tuple[int, ...] = (3, 32, 32),
) -> tuple[nn.Module, Tensor, Tensor]:
    """A seeded model in eval mode (the VGG-style CNN by default), a batch of
    images of ``shape`` and per-example targets of 10 classes."""
    gen = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = make_model().eval().to(device)
    x = torch.randn(batch, *shape, generator=gen).to(device)
    target = torch.randint(0, 10, (batch,), generator=gen).to(device)
    return model, x, target


def forward_backward(model: nn.Module, x: Tensor, target: Tensor) -> None:
    """One forward and one backward pass w.r.t. the input (the unit of cost)."""
    leaf = x.detach().requires_grad_(True)
    out = model(leaf).gather(1, target[:, None]).sum()
    torch.autograd.grad(out, leaf)
