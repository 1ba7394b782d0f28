"""deletion_auc / insertion_auc equal a naive per-example, per-step loop."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter
from torch import Tensor, nn

from captum_ext.metrics import deletion_auc, insertion_auc


@pytest.fixture(autouse=True)
def _one_thread() -> Any:
    """Many tiny forward passes: threads only add overhead."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


class CountingCNN(nn.Module):
    def __init__(self, channels: int = 2) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(
            nn.Conv2d(channels, 3, 3, padding=1),
            nn.ReLU(),
            nn.Flatten(),
            nn.Linear(3 * 6 * 5, 4),
        )
        self.calls = 0
        self.rows = 0

    def forward(self, x: Tensor) -> Tensor:
        self.calls += 1
        self.rows += x.shape[0]
        return self.net(x)


def _naive_fill(x: Tensor, fill: Any, sigma: float) -> Tensor:
    """The fill of one example ``(C, H, W)``, computed independently."""
    if fill == "zero":
        return torch.zeros_like(x)
    if fill == "mean":
        return x.mean(dim=(1, 2), keepdim=True).expand_as(x).clone()
    if fill == "blur":
        out = np.stack(
            [
                gaussian_filter(c.double().numpy(), sigma, mode="nearest", truncate=3)
                for c in x
            ]
        )
        return torch.from_numpy(out).to(x.dtype)
    return fill.expand_as(x).clone()


def _naive_curve(
    model: nn.Module,
    x: Tensor,
    attr: Tensor,
    target: list[int],
    fill: Any,
    n_steps: int,
    mode: str,
    sigma: float = 1.0,
) -> tuple[Tensor, Tensor]:
    """One example, one step at a time; pixel order by sorted() on Python floats."""
    bsz, _, h, w = x.shape
    n = h * w
    curves = torch.zeros(bsz, n_steps + 1)
    aucs = torch.zeros(bsz)
    for b in range(bsz):
        scores = attr[b].expand_as(x[b]).sum(0).flatten().tolist()
        order = sorted(range(n), key=lambda i: (-scores[i], i))
        f = _naive_fill(x[b], fill if not isinstance(fill, Tensor) else fill[b], sigma)
        xs = []
        for j in range(n_steps + 1):
            k = int(np.floor(j * n / n_steps + 0.5))
            xs.append(k / n)
            chosen = torch.zeros(n, dtype=torch.bool)
            chosen[order[:k]] = True
            chosen = chosen.view(1, h, w)
            if mode == "delete":
                img = torch.where(chosen, f, x[b])
            else:
                img = torch.where(chosen, x[b], f)
            with torch.no_grad():
                curves[b, j] = torch.softmax(model(img[None]), 1)[0, target[b]]
        area = 0.0
        for j in range(n_steps):
            area += (xs[j + 1] - xs[j]) * (curves[b, j] + curves[b, j + 1]) / 2
        aucs[b] = area
    return aucs, curves


@pytest.mark.parametrize("fill", ["zero", "mean", "blur", "tensor"])
@pytest.mark.parametrize("mode", ["delete", "insert"])
def test_equals_naive_loop(fill: str, mode: str) -> None:
    model = CountingCNN().eval()
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(3, 2, 6, 5, generator=gen)
    attr = torch.randn(3, 1, 6, 5, generator=gen)  # a mask broadcast over channels
    attr[0, 0, 0, :3] = 0.5  # ties are broken by pixel index
    target = [0, 3, 1]
    fill_arg: Any = fill
    if fill == "tensor":
        fill_arg = torch.randn(3, 2, 6, 5, generator=gen)
    fn = deletion_auc if mode == "delete" else insertion_auc
    for n_steps in (30, 7):
        auc, curves = fn(
            model,
            x,
            attr,
            target=target,
            fill=fill_arg,
            n_steps=n_steps,
            blur_sigma=1.0,
            return_curves=True,
        )
        ref_auc, ref_curves = _naive_curve(
            model, x, attr, target, fill_arg, n_steps, mode
        )
        torch.testing.assert_close(curves, ref_curves)
        torch.testing.assert_close(auc, ref_auc)
        assert auc.shape == (3,)
        # chunked forward passes give the same numbers
        for chunk in (4, 13):
            chunked = fn(
                model,
                x,
                attr,
                target=torch.tensor(target),
                fill=fill_arg,
                n_steps=n_steps,
                blur_sigma=1.0,
                max_examples_per_batch=chunk,
            )
            torch.testing.assert_close(chunked, auc)


def test_one_pass_per_distinct_point_and_batching() -> None:
    model = CountingCNN().eval()
    x = torch.randn(4, 2, 6, 5)
    attr = torch.randn(4, 2, 6, 5)
    # 30 pixels, 60 steps: every count repeats twice, evaluated once
    model.calls = model.rows = 0
    deletion_auc(model, x, attr, target=0, n_steps=60)
    assert model.calls == 1 and model.rows == 4 * 31
    model.calls = model.rows = 0
    deletion_auc(model, x, attr, target=0, n_steps=60, max_examples_per_batch=50)
    assert model.calls == 3 and model.rows == 4 * 31


def test_correct_attribution_beats_its_reverse() -> None:
    """A linear model: Gradient * Input is the exact relevance of each pixel."""
    torch.manual_seed(0)
    w = torch.randn(2, 1, 8, 8)

    def model(x: Tensor) -> Tensor:
        return (x[:, None] * w[None]).flatten(2).sum(2)

    gen = torch.Generator().manual_seed(3)
    x = torch.randn(16, 1, 8, 8, generator=gen)
    target = model(x).argmax(1)
    relevance = x * (w[target] - w[1 - target])  # logit margin's Gradient * Input
    good_del = deletion_auc(model, x, relevance, target=target, n_steps=64)
    bad_del = deletion_auc(model, x, -relevance, target=target, n_steps=64)
    good_ins = insertion_auc(model, x, relevance, target=target, n_steps=64)
    bad_ins = insertion_auc(model, x, -relevance, target=target, n_steps=64)
    assert (good_del < bad_del).all()
    assert (good_ins > bad_ins).all()
    assert good_del.mean() < 0.2 and good_ins.mean() > 0.8


def test_tuple_inputs_forward_args_and_probability_fn() -> None:
    class Net(nn.Module):
        def forward(self, a: Tensor, b: Tensor, scale: Tensor) -> Tensor:
            s = a.sum(1) * scale - b.flatten(1).sum(1)
            return torch.stack([s, -s], 1)

    gen = torch.Generator().manual_seed(0)
    a, b = torch.randn(3, 5, generator=gen), torch.randn(3, 1, 2, 2, generator=gen)
    scale = torch.tensor([1.0, 2.0, 3.0])
    attr = (torch.randn(3, 5, generator=gen), torch.randn(3, 1, 2, 2, generator=gen))
    net = Net()
    auc, curves = deletion_auc(
        net,
        (a, b),
        attr,
        target=0,
        n_steps=9,
        additional_forward_args=(scale,),
        probability_fn=lambda out: torch.sigmoid(out),
        return_curves=True,
    )
    # naive: 9 regions (5 features of a, 4 pixels of b), ranked jointly
    scores = torch.cat([attr[0], attr[1].flatten(1)], 1)
    for i in range(3):
        order = scores[i].argsort(descending=True, stable=True).tolist()
        for k in range(10):
            fa, fb = a[i].clone(), b[i].flatten().clone()
            for r in order[:k]:
                if r < 5:
                    fa[r] = 0.0
                else:
                    fb[r - 5] = 0.0
            out = net(fa[None], fb.view(1, 1, 2, 2), scale[i : i + 1])
            torch.testing.assert_close(curves[i, k], torch.sigmoid(out)[0, 0])
    ref = torch.trapezoid(curves, torch.arange(10) / 9, dim=1)
    torch.testing.assert_close(auc, ref)


def test_bad_arguments() -> None:
    model = CountingCNN().eval()
    x = torch.randn(2, 2, 6, 5)
    a = torch.randn(2, 1, 6, 5)
    cases: list[tuple[dict[str, Any], type[Exception], str]] = [
        ({"attributions": torch.randn(2, 1, 5, 5)}, ValueError, "attributions"),
        ({"attributions": torch.randn(1, 1, 6, 5)}, ValueError, "attributions"),
        ({"attributions": (a,)}, TypeError, "attributions"),
        ({"fill": "grey"}, ValueError, "fill"),
        ({"fill": torch.zeros(3, 2, 6, 5)}, ValueError, "fill"),
        ({"fill": [0.0]}, TypeError, "fill"),
        ({"n_steps": 0}, ValueError, "n_steps"),
        ({"max_examples_per_batch": 0}, ValueError, "max_examples_per_batch"),
        ({"target": [0, 1, 2]}, AssertionError, ""),
        ({"probability_fn": "softmax"}, TypeError, "probability_fn"),
        ({"inputs": [x]}, TypeError, "inputs"),
    ]
    for over, exc, match in cases:
        kw: dict[str, Any] = {"inputs": x, "attributions": a, "target": 0}
        kw.update(over)
        with pytest.raises(exc, match=match or None):
            deletion_auc(model, kw.pop("inputs"), kw.pop("attributions"), **kw)
    assert model.calls == 0
    with pytest.raises(ValueError, match="blur"):
        insertion_auc(lambda v: v, torch.randn(2, 6), torch.randn(2, 6), 0, fill="blur")
    with pytest.raises(ValueError, match="out of range"):
        insertion_auc(model, x, a, target=9)


def test_callable_fill_target_none_and_negative_target() -> None:
    """The shared fill vocabulary (a callable) and Captum's target semantics:
    None takes a one-score-per-example ``probability_fn`` output whole, a
    negative int class indexes from the end, and negative per-example entries
    are refused clearly (Captum would fail inside ``gather``)."""
    model = CountingCNN().eval()
    gen = torch.Generator().manual_seed(4)
    x = torch.randn(2, 2, 6, 5, generator=gen)
    attr = torch.randn(2, 1, 6, 5, generator=gen)
    flipped = x.flip(-1)
    _, want = _naive_curve(model, x, attr, [3, 3], flipped, 10, "delete")
    _, got = deletion_auc(
        model,
        x,
        attr,
        target=-1,
        fill=lambda t: t.flip(-1),
        n_steps=10,
        return_curves=True,
    )
    torch.testing.assert_close(got, want)
    _, got_none = deletion_auc(
        model,
        x,
        attr,
        fill=flipped,
        n_steps=10,
        return_curves=True,
        probability_fn=lambda out: out.softmax(1)[:, 3:],
    )
    torch.testing.assert_close(got_none, want)
    _, got_tensor = deletion_auc(
        model, x, attr, torch.tensor([3, 3]), flipped, 10, return_curves=True
    )
    torch.testing.assert_close(got_tensor, want)
    with pytest.raises(ValueError, match="`target`"):
        deletion_auc(model, x, attr, torch.tensor([-1, 3]), flipped, 10)


def test_auto_batch_default_equals_one_pass(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from captum_ext.metrics import _curves

    model = CountingCNN().eval()
    x, attr = torch.randn(3, 2, 6, 5), torch.randn(3, 2, 6, 5)
    whole = insertion_auc(
        model, x, attr, target=1, n_steps=10, max_examples_per_batch=None
    )
    assert model.calls == 1  # None: all 33 inputs at once, as in Captum
    model.calls = model.rows = 0
    monkeypatch.setattr(_curves, "AUTO_BATCH_ELEMENTS", 4 * 60)  # 4 inputs a pass
    auto = insertion_auc(model, x, attr, target=1, n_steps=10, show_progress=True)
    assert model.calls == 9 and model.rows == 33  # ceil(33 / 4)
    torch.testing.assert_close(auto, whole, rtol=1e-6, atol=1e-7)
    assert "insertion" in capsys.readouterr().err
