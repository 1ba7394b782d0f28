"""Data-parallel fit_patterns: two gloo ranks on loopback equal one process."""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from captum_ext.attr import PatternSet, fit_patterns

WORLD = 2


def _model(dtype: torch.dtype) -> nn.Module:
    torch.manual_seed(0)
    return (
        nn.Sequential(
            nn.Conv2d(1, 4, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.Flatten(),
            nn.Linear(4 * 4 * 4, 6),
            nn.ReLU(),
            nn.Linear(6, 3),
        )
        .to(dtype)
        .eval()
    )


def _batches(dtype: torch.dtype) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(5)
    return [
        torch.randn(10, 1, 8, 8, generator=gen, dtype=dtype) + 0.5 for _ in range(7)
    ]


def _worker(rank: int, port: int, out_dir: str) -> None:
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    try:
        for dtype, group in (
            (torch.float64, "auto"),
            (torch.float32, dist.group.WORLD),
        ):
            shard = _batches(dtype)[rank::WORLD]  # 4 and 3 batches
            patterns = fit_patterns(_model(dtype), shard, process_group=group)
            patterns.save(Path(out_dir) / f"rank{rank}-{dtype}.pt")
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.distributed
def test_two_ranks_equal_one_process(tmp_path: Path) -> None:
    if not dist.is_available():
        pytest.skip("torch.distributed is not available in this build")
    # fork: the workers start in well under a second (no re-import of torch)
    context = mp.start_processes(
        _worker,
        args=(_free_port(), str(tmp_path)),
        nprocs=WORLD,
        join=False,
        start_method="fork",
    )
    deadline = time.monotonic() + 120
    while not context.join(timeout=1):
        if time.monotonic() > deadline:
            for process in context.processes:
                process.kill()
            pytest.fail("the distributed workers did not finish within 120 s")
    for dtype in (torch.float64, torch.float32):
        single = fit_patterns(_model(dtype), _batches(dtype))
        # float64: the statistics equal up to the order of float64 additions;
        # float32 patterns: also up to the final rounding to the weights' dtype
        rtol = 1e-10 if dtype == torch.float64 else 2 * torch.finfo(dtype).eps
        for rank in range(WORLD):
            got = PatternSet.load(tmp_path / f"rank{rank}-{dtype}.pt")
            assert got.num_examples == single.num_examples == 70
            assert list(got) == list(single)
            for name in single:
                ref = single[name].double()
                err = float((got[name].double() - ref).abs().max())
                assert err <= rtol * float(ref.abs().max()), (dtype, name, err)


def test_auto_without_distributed_is_a_plain_fit() -> None:
    assert not dist.is_initialized()
    plain = fit_patterns(_model(torch.float32), _batches(torch.float32)[:2])
    auto = fit_patterns(
        _model(torch.float32), _batches(torch.float32)[:2], process_group="auto"
    )
    for name in plain:
        assert torch.equal(auto[name], plain[name])
