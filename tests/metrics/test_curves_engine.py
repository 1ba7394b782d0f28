"""The private curve engine equals a naive one-example, one-step loop."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from captum_ext.metrics._curves import (
    AUTO_BATCH_ELEMENTS,
    batched_outputs,
    check_batch_size,
    check_blur_sigma,
    check_fill,
    check_forward_args,
    examples_per_pass,
    feature_ranks,
    patch_region_map,
    perturbation_curve,
    region_ranks,
    region_scores,
    resolve_fills,
    select_scores,
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


class _ThreeScores(nn.Module):
    """Three scores from two inputs and a per-example forward argument."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[int] = []

    def forward(
        self, a: torch.Tensor, b: torch.Tensor, w: torch.Tensor
    ) -> torch.Tensor:
        self.rows.append(a.shape[0])
        return torch.stack([(a * w).sum(1), b.sum(1), (a - b).sum(1)], 1)


def _naive_delete_features(
    a: torch.Tensor,
    b: torch.Tensor,
    w: torch.Tensor,
    ranks: tuple[torch.Tensor, torch.Tensor],
    ks: list[int],
    target: list[int],
) -> torch.Tensor:
    """One example and one count at a time, with Python lists and loops."""
    out = torch.zeros(a.shape[0], len(ks), dtype=torch.float64)
    for i in range(a.shape[0]):
        for p, k in enumerate(ks):
            ai = [0.0 if int(r) < k else float(v) for v, r in zip(a[i], ranks[0][i])]
            bi = [0.0 if int(r) < k else float(v) for v, r in zip(b[i], ranks[1][i])]
            scores = [
                sum(u * float(s) for u, s in zip(ai, w[i])),
                sum(bi),
                sum(ai) - sum(bi),
            ]
            e = [math.exp(s - max(scores)) for s in scores]
            out[i, p] = e[target[i]] / sum(e)
    return out


@pytest.mark.parametrize("chunk", [None, 1, 3, 7, 100])
def test_tuple_inputs_forward_args_and_tensor_target(chunk: int | None) -> None:
    gen = torch.Generator().manual_seed(0)
    a, b = torch.randn(4, 5, generator=gen), torch.randn(4, 5, generator=gen)
    w = torch.rand(4, 5, generator=gen)
    # ranks over the 10 features of both inputs (a permutation per example)
    perm = torch.rand(4, 10, generator=gen).argsort(1).argsort(1)
    ranks = (perm[:, :5], perm[:, 5:])
    ks = [0, 1, 3, 6, 10]
    target = [0, 1, 2, 2]
    net = _ThreeScores()
    got = perturbation_curve(
        net,
        (a, b),
        (torch.zeros(1), torch.zeros(1)),
        ranks,
        torch.tensor(ks),
        "delete",
        torch.tensor(target),
        (w,),
        chunk,
    )
    want = _naive_delete_features(a, b, w, ranks, ks, [0, 1, 2, 2])
    torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-6)
    n = 4 * len(ks)
    step = n if chunk is None else chunk
    assert net.rows == [min(step, n - s) for s in range(0, n, step)]


def test_batched_outputs_equals_one_example_at_a_time() -> None:
    model = _model()
    x = torch.randn(7, 2, 6, 6)
    scale = torch.arange(1.0, 8.0).view(7, 1)

    def scaled(inp: torch.Tensor, s: torch.Tensor, offset: float) -> torch.Tensor:
        return model(inp) * s + offset

    for chunk in (None, 1, 3, 7):
        got = batched_outputs(scaled, (x,), (scale, 0.5), chunk)
        for i in range(7):
            want = model(x[i : i + 1]) * (i + 1.0) + 0.5
            torch.testing.assert_close(got[i : i + 1], want.detach())


def test_select_scores_follows_captum_targets() -> None:
    scores = torch.tensor([[0.1, 0.2, 0.7], [0.5, 0.3, 0.2]])
    torch.testing.assert_close(select_scores(scores, 2, 2), torch.tensor([0.7, 0.2]))
    torch.testing.assert_close(select_scores(scores, -1, 2), torch.tensor([0.7, 0.2]))
    torch.testing.assert_close(
        select_scores(scores, torch.tensor([0, 1]), 2), torch.tensor([0.1, 0.3])
    )
    torch.testing.assert_close(
        select_scores(scores, [2, 1], 2), torch.tensor([0.7, 0.3])
    )
    for negative in (torch.tensor([-3, 1]), [2, -2]):  # refused, as in every class
        with pytest.raises(ValueError, match="`target`"):
            select_scores(scores, negative, 2)
    # target=None: the scores as they are, one per example
    torch.testing.assert_close(
        select_scores(scores[:, :1], None, 2), torch.tensor([0.1, 0.5])
    )
    torch.testing.assert_close(
        select_scores(scores[:, 1], None, 2), torch.tensor([0.2, 0.3])
    )
    with pytest.raises(ValueError, match="target=None"):
        select_scores(scores, None, 2)
    with pytest.raises(ValueError, match="out of range"):
        select_scores(scores, 3, 2)
    with pytest.raises(ValueError, match="one row per input"):
        select_scores(scores, 0, 3)
    with pytest.raises(TypeError, match="probability_fn"):
        select_scores([0.1, 0.2], 0, 2)  # type: ignore[arg-type]


def test_examples_per_pass_auto_cap() -> None:
    img = (torch.zeros(2, 3, 224, 224),)
    assert examples_per_pass("auto", img) == AUTO_BATCH_ELEMENTS // (3 * 224 * 224)
    assert examples_per_pass("auto", img) == 13
    assert examples_per_pass("auto", (torch.zeros(1, 1, 28, 28),)) == 2674
    two = (torch.zeros(1, 3, 32, 32), torch.zeros(1, 5))
    assert examples_per_pass("auto", two) == AUTO_BATCH_ELEMENTS // (3072 + 5)
    assert examples_per_pass("auto", (torch.zeros(1, 2**22),)) == 1
    assert examples_per_pass(None, img) is None
    assert examples_per_pass(5, img) == 5
    for bad in (0, -1, 2.0, "all", True):
        with pytest.raises(ValueError, match="max_examples_per_batch"):
            check_batch_size(bad)


def test_forward_args_follow_captum_rule() -> None:
    w = torch.ones(3, 2)
    assert check_forward_args(None, 3) is None
    afa = check_forward_args(w, 3)
    assert isinstance(afa, tuple) and afa[0] is w
    assert check_forward_args((torch.tensor(2.0), "x", 4), 3)[1:] == ("x", 4)
    with pytest.raises(ValueError, match=r"additional_forward_args\[1\]"):
        check_forward_args((w, torch.ones(5)), 3)


def test_blur_sigma_and_fill_vocabulary() -> None:
    for ok in (0.5, 3, 5.0):
        check_blur_sigma(ok)
    check_blur_sigma(None, allow_none=True)
    for bad, err in (
        (0.0, ValueError),
        (-1.0, ValueError),
        (math.nan, ValueError),
        (math.inf, ValueError),
        ("5", TypeError),
        (True, TypeError),
        (None, TypeError),
    ):
        with pytest.raises(err, match="blur_sigma"):
            check_blur_sigma(bad)
    x = torch.randn(2, 3, 4, 4)
    rm, n = patch_region_map(4, 4, 2)
    (pm,) = resolve_fills("patch_mean", (x,), 1.0, regions=[(rm, n)])
    torch.testing.assert_close(pm[1, 2, :2, 2:], x[1, 2, :2, 2:].mean().expand(2, 2))
    (flip,) = resolve_fills(lambda t: t.flip(-1), (x,), 1.0)
    torch.testing.assert_close(flip, x.flip(-1))
    cases = [
        ("patch_mean", ValueError),  # patches only in image_degradation
        ("grey", ValueError),
        (math.nan, ValueError),
        (torch.tensor([math.inf]), ValueError),
        (torch.zeros(3, 1, 1, dtype=torch.bool), TypeError),
        ([0.0], TypeError),
        (True, TypeError),
        ((0.0, 1.0), ValueError),
    ]
    for fill, err in cases:
        with pytest.raises(err, match="fill"):
            check_fill(fill, (x,))
    with pytest.raises(TypeError, match="callable"):
        resolve_fills(lambda t: 1.0, (x,), 1.0)
    with pytest.raises(ValueError, match="NaN"):
        resolve_fills(lambda t: t * math.nan, (x,), 1.0)
    with pytest.raises(ValueError, match="blur"):
        check_fill("blur", (torch.zeros(2, 5),))


def test_progress_bar_counts_perturbed_inputs(
    capsys: pytest.CaptureFixture[str],
) -> None:
    model = _model()
    x = torch.randn(2, 2, 6, 6)
    ranks = region_ranks(torch.randn(2, 36)).view(2, 1, 6, 6)
    perturbation_curve(
        model,
        (x,),
        (torch.zeros(1),),
        (ranks,),
        torch.arange(5),
        "delete",
        0,
        None,
        3,
        show_progress=True,
        desc="my curve",
    )
    err = capsys.readouterr().err
    assert "my curve" in err and "10/10" in err


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

    from captum_ext.metrics._curves import gaussian_blur

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
    with pytest.raises(ValueError, match="blur_sigma"):
        gaussian_blur(x, 0.0)
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
    ks = [0, 2, 2, 5, 0, 9]
    got = curve_at_points(
        model, (x,), (torch.zeros(1),), (ranks,), torch.tensor(ks), "delete", 1
    )
    # naive: pixel 1 of the flattened image, zeroed once its rank is below k
    want = torch.zeros(2, len(ks))
    for b in range(2):
        flat, r = x[b].flatten().tolist(), ranks[b].flatten().tolist()
        for p, k in enumerate(ks):
            vals = [0.0 if r[i] < k else flat[i] for i in range(3)]
            e = [math.exp(v) for v in vals]
            want[b, p] = e[1] / sum(e)
    torch.testing.assert_close(got, want)
    assert calls == [2 * 4]  # four distinct counts, one pass
