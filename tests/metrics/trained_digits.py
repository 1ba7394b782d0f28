"""A small digits CNN trained once per test process (shared by metric tests)."""

from __future__ import annotations

from functools import lru_cache

import torch
from torch import Tensor, nn

from captum_ext.data import load_digits, train_model
from captum_ext.models import digits_cnn


@lru_cache(maxsize=1)
def trained_digits_cnn() -> tuple[nn.Module, Tensor, Tensor]:
    """(model in eval mode, 120 test images, their labels); ~95% test accuracy."""
    data = load_digits()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = digits_cnn(channels=(8, 16), hidden=32)
    train_model(model, data.x_train, data.y_train, epochs=3, seed=0)
    return model, data.x_test[:120], data.y_test[:120]
