"""Suite-wide settings: deterministic, single-threaded-friendly torch."""

from __future__ import annotations

import os

import pytest
import torch

# Small models: many threads only add overhead, and workers share 2 cores.
torch.set_num_threads(max(1, min(2, (os.cpu_count() or 1))))


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)
