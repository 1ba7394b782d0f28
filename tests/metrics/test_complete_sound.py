"""saliency_auc, completeness, soundness: hand-made numbers and naive loops."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
from torch import Tensor, nn

from captum_ext.metrics import (
    completeness,
    saliency_auc,
    soundness,
    worst_case_completeness_soundness,
)


@pytest.fixture(autouse=True)
def _one_thread() -> Any:
    """Many tiny forward passes: threads only add overhead."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_completeness_on_hand_made_numbers() -> None:
    g = torch.tensor([0.45, 0.9, 0.0, 0.005, 0.3])
    p = torch.tensor([0.9, 0.6, 0.5, 0.2, 0.0])
    # min(max(eps1, g) / min(alpha, p), 1)
    expected = torch.tensor([0.5, 1.0, 0.01 / 0.5, 0.01 / 0.2, 1.0])
    torch.testing.assert_close(completeness(g, p), expected)
    # alpha caps the probability the explanation must recover
    expected_alpha = torch.tensor([0.45 / 0.5, 1.0, 0.02, 0.05, 1.0])
    torch.testing.assert_close(completeness(g, p, alpha=0.5), expected_alpha)
    torch.testing.assert_close(
        completeness(g, p, epsilon1=0.1),
        torch.tensor([0.5, 1.0, 0.2, 0.5, 1.0]),
    )
    assert completeness(0.3, 0.6).item() == pytest.approx(0.5)


def test_soundness_on_hand_made_numbers() -> None:
    g = torch.tensor([0.5, 0.05, 0.0, 0.8, 0.4])
    p = torch.tensor([0.01, 0.02, 0.3, 0.6, 0.2])
    # min(max(eps2, p) / g, 1)
    expected = torch.tensor([0.2, 1.0, 1.0, 0.75, 0.5])
    torch.testing.assert_close(soundness(g, p), expected)
    torch.testing.assert_close(
        soundness(g, p, epsilon2=0.3), torch.tensor([0.6, 1.0, 1.0, 0.75, 0.75])
    )
    assert soundness(0.5, 0.0, epsilon2=0.0).item() == 0.0
    for bad in (-0.1, 1.5, float("nan")):
        with pytest.raises(ValueError, match="epsilon2"):
            soundness(g, p, epsilon2=bad)
    with pytest.raises(ValueError, match="alpha"):
        completeness(g, p, alpha=0.0)
    with pytest.raises(TypeError, match="g"):
        completeness("high", p)  # type: ignore[arg-type]


class SmallCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(
            nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(80, 5)
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


def _naive_saliency_auc(
    model: nn.Module,
    x: Tensor,
    masks: Tensor,
    target: list[int],
    fill: float,
    fractions: list[float],
) -> Tensor:
    bsz, _, h, w = x.shape
    n = h * w
    out = torch.zeros(bsz)
    for b in range(bsz):
        scores = masks[b].expand_as(x[b]).sum(0).flatten().tolist()
        order = sorted(range(n), key=lambda i: (-scores[i], i))
        total = 0.0
        for f in fractions:
            k = math.floor(f * n + 0.5)
            img = torch.full_like(x[b], fill)
            for idx in order[:k]:
                i, j = divmod(idx, w)
                img[:, i, j] = x[b, :, i, j]
            with torch.no_grad():
                total += float(torch.softmax(model(img[None]), 1)[0, target[b]])
        out[b] = total / len(fractions)
    return out


@pytest.mark.parametrize(
    "n_points,fraction_range", [(21, (0.0, 1.0)), (5, (0.2, 0.6)), (1, (0.3, 0.3))]
)
def test_saliency_auc_equals_naive_loop(
    n_points: int, fraction_range: tuple[float, float]
) -> None:
    model = SmallCNN().eval()
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(3, 3, 4, 5, generator=gen)
    masks = torch.rand(3, 1, 4, 5, generator=gen)
    target = [4, 0, 2]
    lo, hi = fraction_range
    fractions = [lo + (hi - lo) * j / max(1, n_points - 1) for j in range(n_points)]
    ref = _naive_saliency_auc(model, x, masks, target, -0.5, fractions)
    g, curves = saliency_auc(
        model,
        x,
        masks.expand_as(x),
        target=target,
        fill=-0.5,
        n_points=n_points,
        fraction_range=fraction_range,
        return_curves=True,
    )
    torch.testing.assert_close(g, ref)
    assert curves.shape == (3, n_points)
    for chunk in (1, 7):
        chunked = saliency_auc(
            model,
            x,
            masks,
            target=target,
            fill=-0.5,
            n_points=n_points,
            fraction_range=fraction_range,
            max_examples_per_batch=chunk,
        )
        torch.testing.assert_close(chunked, g)


def test_saliency_auc_ranks_the_right_mask_above_its_reverse() -> None:
    """Class 0 is decided by one 2x2 block: a mask on it keeps p_0 high."""

    def model(x: Tensor) -> Tensor:
        s = 8 * x[:, :, :2, :2].mean(dim=(1, 2, 3))
        return torch.stack([s, -s], 1)

    x = torch.randn(6, 1, 6, 6)
    x[:, :, :2, :2] = 1.0
    right = torch.zeros(6, 1, 6, 6)
    right[:, :, :2, :2] = 1.0
    right += 0.01 * torch.rand(6, 1, 6, 6)
    good = saliency_auc(model, x, right, target=0, fraction_range=(0.1, 0.5))
    bad = saliency_auc(model, x, -right, target=0, fraction_range=(0.1, 0.5))
    assert (good > 0.99).all() and (bad < good).all()
    assert (bad < 0.7).all()


def test_worst_case_convenience() -> None:
    model = SmallCNN().eval()
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(4, 3, 4, 5, generator=gen)
    calls: list[dict[str, Any]] = []

    def explain(inputs: Tensor, target: Tensor, **kwargs: Any) -> Tensor:
        calls.append({"inputs": inputs, "target": target, **kwargs})
        # a fixed "explanation": larger where the input is larger
        return inputs.abs() * (1 + target.view(-1, 1, 1, 1))

    res = worst_case_completeness_soundness(
        model, x, explain, n_points=6, fraction_range=(0.2, 0.6), marker=7
    )
    assert len(calls) == 1 and calls[0]["marker"] == 7
    assert calls[0]["inputs"].shape == (8, 3, 4, 5)
    probs = torch.softmax(model(x), 1).detach()
    top2 = probs.topk(2, 1)
    torch.testing.assert_close(res.labels, top2.indices)
    torch.testing.assert_close(res.probability, top2.values)
    torch.testing.assert_close(
        calls[0]["target"], torch.cat([top2.indices[:, 0], top2.indices[:, 1]])
    )
    fractions = [0.2 + 0.4 * j / 5 for j in range(6)]
    for col in range(2):
        t = top2.indices[:, col]
        masks = x.abs() * (1 + t.view(-1, 1, 1, 1))
        # independent references: the naive loop and eq. 1 written out
        g = _naive_saliency_auc(model, x, masks, t.tolist(), 0.0, fractions)
        torch.testing.assert_close(res.saliency_auc[:, col], g)
        for i in range(4):
            gi, pi = float(g[i]), float(top2.values[i, col])
            comp = min(max(0.01, gi) / min(1.0, pi), 1.0)
            sound = min(max(0.1, pi) / gi, 1.0) if gi > 0 else 1.0
            assert float(res.completeness[i, col]) == pytest.approx(comp, rel=1e-5)
            assert float(res.soundness[i, col]) == pytest.approx(sound, rel=1e-5)
        torch.testing.assert_close(res.masks[col], masks)
    torch.testing.assert_close(res.worst_completeness, res.completeness.min(1).values)
    torch.testing.assert_close(res.worst_soundness, res.soundness.min(1).values)


def test_bad_arguments() -> None:
    model = SmallCNN().eval()
    x = torch.randn(2, 3, 4, 5)
    m = torch.rand(2, 1, 4, 5)
    with pytest.raises(ValueError, match="fraction_range"):
        saliency_auc(model, x, m, target=0, fraction_range=(0.6, 0.2))
    with pytest.raises(ValueError, match="n_points"):
        saliency_auc(model, x, m, target=0, n_points=0)
    with pytest.raises(ValueError, match="masks"):
        saliency_auc(model, x, torch.rand(2, 4, 5), target=0)
    with pytest.raises(TypeError, match="explanation_func"):
        worst_case_completeness_soundness(model, x, "lm")  # type: ignore[arg-type]

    def explain(inputs: Tensor, target: Tensor) -> Tensor:
        raise AssertionError("must not be called with a bad fill")

    with pytest.raises(ValueError, match="fill"):
        worst_case_completeness_soundness(model, x, explain, fill="grey")


def test_worst_case_repeats_per_example_forward_args() -> None:
    """Per-example forward arguments are doubled with the inputs for the two
    labels: the batched result equals one example at a time."""

    class Scaled(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = SmallCNN()

        def forward(self, x: Tensor, w: Tensor) -> Tensor:
            return self.net(x) * w

    model = Scaled().eval()
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(4, 3, 4, 5, generator=gen)
    w = torch.tensor([[1.0], [-1.0], [2.0], [-0.5]])

    def explain(inputs: Tensor, target: Tensor, additional_forward_args: Any) -> Tensor:
        (scale,) = additional_forward_args
        assert scale.shape[0] == inputs.shape[0]
        return inputs.abs() * (1 + target.view(-1, 1, 1, 1)) * scale.view(-1, 1, 1, 1)

    def run(xs: Tensor, ws: Tensor) -> Any:
        return worst_case_completeness_soundness(
            model, xs, explain, additional_forward_args=(ws,), n_points=5
        )

    batched = run(x, w)
    for i in range(4):
        one = run(x[i : i + 1], w[i : i + 1])
        torch.testing.assert_close(batched.labels[i], one.labels[0])
        torch.testing.assert_close(batched.saliency_auc[i], one.saliency_auc[0])
        torch.testing.assert_close(batched.completeness[i], one.completeness[0])
        torch.testing.assert_close(batched.soundness[i], one.soundness[0])
