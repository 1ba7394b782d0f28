"""A small, seeded training loop for the bundled data sets (seconds on a CPU)."""

from __future__ import annotations

from typing import Literal

import torch
from captum._utils.progress import progress
from torch import Tensor, nn

from captum_ext._utils.validation import check_positive_int


def train_model(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    *,
    task: Literal["classification", "regression"] = "classification",
    epochs: int = 20,
    batch_size: int = 64,
    lr: float = 1e-2,
    weight_decay: float = 0.0,
    seed: int = 0,
    transform: nn.Module | None = None,
    show_progress: bool = False,
) -> list[float]:
    """Train ``model`` in place with Adam and return the per-epoch mean loss.

    Mini-batches are shuffled with a generator seeded by ``seed``, and the
    global RNG (dropout, transforms) is forked and seeded, so a run is
    reproducible and leaves the caller's RNG state untouched. The model is left
    in eval mode.

    Args:
        model (nn.Module): The model to train (modified in place).
        x (Tensor): Inputs, ``(n, ...)``.
        y (Tensor): Class labels (``task="classification"``, cross-entropy on
            logits) or real targets (``task="regression"``, mean squared error;
            a model output of shape ``(n, 1)`` is squeezed).
        task (str): ``"classification"`` or ``"regression"``.
        epochs (int): Passes over the data.
        batch_size (int): Mini-batch size.
        lr (float): Adam learning rate.
        weight_decay (float): Adam weight decay.
        seed (int): Seed for shuffling and any randomness in the model.
        transform (nn.Module, optional): Applied to each input mini-batch during
            training only (e.g. an ablation-augmentation transform).
        show_progress (bool): Show a progress bar over epochs.

    Returns:
        list[float]: mean training loss of each epoch.

    Examples::

        >>> data = load_digits()
        >>> model = digits_cnn()
        >>> losses = train_model(model, data.x_train, data.y_train, epochs=15)
        >>> accuracy(model, data.x_test, data.y_test) > 0.9
        True
    """
    if task not in ("classification", "regression"):
        raise ValueError(
            f"`task` must be 'classification' or 'regression', got {task!r}."
        )
    if x.shape[0] != y.shape[0]:
        raise ValueError(
            f"`x` and `y` must have the same number of rows, got {x.shape[0]} "
            f"and {y.shape[0]}."
        )
    for name, value in (("epochs", epochs), ("batch_size", batch_size)):
        check_positive_int(value, name)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    loss_fn: nn.Module = (
        nn.CrossEntropyLoss() if task == "classification" else nn.MSELoss()
    )
    generator = torch.Generator().manual_seed(seed)
    history: list[float] = []
    n = x.shape[0]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model.train()
        for _ in progress(
            range(epochs), desc="train", disable=not show_progress, total=epochs
        ):
            perm = torch.randperm(n, generator=generator)
            total = 0.0
            for start in range(0, n, batch_size):
                idx = perm[start : start + batch_size]
                xb, yb = x[idx], y[idx]
                if transform is not None:
                    xb = transform(xb)
                out = model(xb)
                if task == "regression" and out.dim() == 2 and out.shape[1] == 1:
                    out = out.squeeze(1)
                loss = loss_fn(out, yb)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                total += float(loss.detach()) * idx.numel()
            history.append(total / n)
    model.eval()
    for p in model.parameters():
        p.grad = None
    return history


@torch.no_grad()
def accuracy(model: nn.Module, x: Tensor, y: Tensor, batch_size: int = 1024) -> float:
    """Fraction of examples whose arg-max output equals the label.

    Args:
        model (nn.Module): A classifier returning logits ``(n, n_classes)``.
        x (Tensor): Inputs.
        y (Tensor): Integer labels.
        batch_size (int): Examples per forward pass.

    Returns:
        float: accuracy in [0, 1].

    Examples::

        >>> accuracy(model, data.x_test, data.y_test)
        0.97...
    """
    correct = 0
    for start in range(0, x.shape[0], batch_size):
        pred = model(x[start : start + batch_size]).argmax(dim=1)
        correct += int((pred == y[start : start + batch_size]).sum())
    return correct / max(1, x.shape[0])
