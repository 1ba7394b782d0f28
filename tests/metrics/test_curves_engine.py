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


def test_input_region_ranks_pixels_and_features_jointly() -> None:
    from captum_ext.metrics._curves import input_region_ranks

    img = torch.tensor([[[[1.0, 5.0], [3.0, 0.0]], [[1.0, 0.0], [0.0, 0.0]]]])
    vec = torch.tensor([[4.0, -1.0, 2.5]])
    inputs = (torch.zeros(1, 2, 2, 2), torch.zeros(1, 3))
    (r_img, r_vec), n = input_region_ranks((img, vec), inputs)
    assert n == 4 + 3
    # pixel scores (channel sums): 2, 5, 3, 0; features 4, -1, 2.5
    # descending: 5 (px1), 4 (f0), 3 (px2), 2.5 (f2), 2 (px0), 0 (px3), -1 (f1)
    assert r_img.shape == (1, 1, 2, 2) and r_vec.shape == (1, 3)
    assert r_img.flatten().tolist() == [4, 0, 2, 5]
    assert r_vec.flatten().tolist() == [1, 6, 3]
    # a mask broadcast over channels ranks like its channel-expanded copy
    mask = torch.rand(2, 1, 3, 3)
    x = torch.zeros(2, 3, 3, 3)
    (a,), _ = input_region_ranks((mask,), (x,))
    (b,), _ = input_region_ranks((mask.expand_as(x).clone(),), (x,))
    assert torch.equal(a, b)


def test_gaussian_blur_matches_scipy_and_fills() -> None:
    import numpy as np
    from scipy.ndimage import gaussian_filter

    from captum_ext.metrics._curves import gaussian_blur, resolve_fills

    x = torch.randn(2, 3, 7, 6, dtype=torch.float64)
    for sigma in (0.5, 1.0, 2.5, 6.0):
        got = gaussian_blur(x, sigma)
        ref = np.stack(
            [
                [
                    gaussian_filter(c.numpy(), sigma, mode="nearest", truncate=3)
                    for c in e
                ]
                for e in x
            ]
        )
        # scipy's radius is int(3 sigma + 0.5), ours ceil(3 sigma): same here
        torch.testing.assert_close(got, torch.from_numpy(ref))
    assert torch.equal(gaussian_blur(x, 0.0), x)
    zero, mean, blur, num, ten = (
        resolve_fills(f, (x,), 1.0)[0]
        for f in ("zero", "mean", "blur", 0.5, torch.ones(3, 1, 1))
    )
    assert zero.item() == 0.0 and num.item() == 0.5 and ten.shape == (3, 1, 1)
    torch.testing.assert_close(mean.expand_as(x)[1, 2], x[1, 2].mean().expand(7, 6))
    torch.testing.assert_close(blur, gaussian_blur(x, 1.0))
    flat = torch.randn(4, 5)
    torch.testing.assert_close(
        resolve_fills("mean", (flat,), 1.0)[0], flat.mean(1, keepdim=True)
    )
    with pytest.raises(ValueError, match="fill"):
        resolve_fills(("zero",), (x, flat), 1.0)


def test_curve_at_points_evaluates_each_count_once() -> None:
    from captum_ext.metrics._curves import curve_at_points

    calls = []

    def model(x: torch.Tensor) -> torch.Tensor:
        calls.append(x.shape[0])
        return x.flatten(1)[:, :3]

    x = torch.randn(2, 1, 3, 3)
    ranks = region_ranks(torch.randn(2, 9)).view(2, 1, 3, 3)
    ks = torch.tensor([0, 2, 2, 5, 0, 9])
    got = curve_at_points(model, (x,), (torch.zeros(1),), (ranks,), ks, "delete", 1)
    full = perturbation_curve(model, (x,), (torch.zeros(1),), (ranks,), ks, "delete", 1)
    torch.testing.assert_close(got, full)
    assert calls[0] == 2 * 4  # four distinct counts
