"""The private curve engine equals a naive one-example, one-step loop."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from captum_ext.metrics._curves import (
    batched_outputs,
    feature_ranks,
    patch_region_map,
    perturbation_curve,
    region_ranks,
    region_scores,
)


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(2, 3, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(3 * 36, 4)
    ).eval()


def test_region_ranks_orders() -> None:
    scores = torch.tensor([[0.1, 3.0, -1.0, 3.0], [5.0, 4.0, 3.0, 2.0]])
    morf = region_ranks(scores, "morf")
    # region 1 and 3 tie at 3.0: stable order puts region 1 first
    assert morf.tolist() == [[2, 0, 3, 1], [0, 1, 2, 3]]
    lerf = region_ranks(scores, "lerf")
    assert lerf.tolist() == [[1, 2, 0, 3], [3, 2, 1, 0]]
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    r1, r2 = region_ranks(scores, "random", g1), region_ranks(scores, "random", g2)
    assert torch.equal(r1, r2)
    assert sorted(r1[0].tolist()) == [0, 1, 2, 3]
    with pytest.raises(ValueError, match="order"):
        region_ranks(scores, "best")  # type: ignore[arg-type]


def test_patch_regions_and_scores() -> None:
    rm, n = patch_region_map(5, 6, 2)
    assert n == 3 * 3 and rm.shape == (5, 6)
    assert rm[0, 0] == rm[1, 1] == 0 and rm[4, 5] == 8 and rm[0, 2] == 1
    a = torch.randn(2, 3, 5, 6)
    s = region_scores(a, rm, n)
    naive = torch.zeros(2, n)
    for b in range(2):
        for i in range(5):
            for j in range(6):
                naive[b, rm[i, j]] += a[b, :, i, j].sum()
    torch.testing.assert_close(s, naive)


@pytest.mark.parametrize("mode", ["delete", "insert"])
@pytest.mark.parametrize("chunk", [None, 1, 5, 7])
def test_curve_equals_naive_loop(mode: str, chunk: int | None) -> None:
    model = _model()
    x = torch.randn(3, 2, 6, 6)
    fill = x.mean(dim=(2, 3), keepdim=True)  # per-example, per-channel mean
    rm, n = patch_region_map(6, 6, 2)
    ranks = region_ranks(region_scores(torch.randn(3, 2, 6, 6), rm, n))
    fr = feature_ranks(ranks, rm)
    ks = torch.tensor([0, 1, 4, 9])
    target = [0, 3, 1]
    got = perturbation_curve(model, (x,), (fill,), (fr,), ks, mode, target, None, chunk)
    naive = torch.zeros(3, 4)
    for b in range(3):
        order = ranks[b].argsort()  # regions in replacement order
        for p, k in enumerate(ks.tolist()):
            xi = x[b].clone() if mode == "delete" else fill[b].expand(2, 6, 6).clone()
            for r in order[:k].tolist():
                m = rm == r
                if mode == "delete":
                    xi[:, m] = fill[b].expand(2, 6, 6)[:, m]
                else:
                    xi[:, m] = x[b][:, m]
            naive[b, p] = torch.softmax(model(xi[None]), 1)[0, target[b]]
    torch.testing.assert_close(got, naive.detach())


def test_tuple_inputs_forward_args_and_tensor_target() -> None:
    class Net(nn.Module):
        def forward(
            self, a: torch.Tensor, b: torch.Tensor, w: torch.Tensor
        ) -> torch.Tensor:
            return torch.stack([(a * w).sum(1), b.sum(1), (a - b).sum(1)], 1)

    a, b = torch.randn(4, 5), torch.randn(4, 5)
    w = torch.rand(4, 5)
    ranks = (region_ranks(torch.randn(4, 5)), region_ranks(torch.randn(4, 5)))
    ks = torch.arange(6)
    target = torch.tensor([0, 1, 2, 0])
    full = perturbation_curve(
        Net(),
        (a, b),
        (torch.zeros(1), torch.zeros(1)),
        ranks,
        ks,
        "delete",
        target,
        (w,),
        None,
    )
    chunked = perturbation_curve(
        Net(),
        (a, b),
        (torch.zeros(1), torch.zeros(1)),
        ranks,
        ks,
        "delete",
        target,
        (w,),
        3,
    )
    torch.testing.assert_close(full, chunked)
    assert full.shape == (4, 6)


def test_batched_outputs_chunking() -> None:
    model = _model()
    x = torch.randn(7, 2, 6, 6)
    torch.testing.assert_close(
        batched_outputs(model, (x,), None, 3), batched_outputs(model, (x,), None, None)
    )
