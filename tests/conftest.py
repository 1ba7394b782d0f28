"""Suite-wide settings: deterministic, single-threaded-friendly torch."""

from __future__ import annotations

import os

import pytest
import torch

# Small models: many threads only add overhead. Under pytest-xdist every worker
# gets one thread (workers already fill the cores); alone, use up to two.
if os.environ.get("PYTEST_XDIST_WORKER"):
    torch.set_num_threads(1)
else:
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)
