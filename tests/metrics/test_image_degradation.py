"""image_degradation: the paper's benchmark (PGIG, section 5) against references."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import pytest
import torch
from captum.attr import InputXGradient
from torch import Tensor, nn

from captum_ext.metrics import aopc, image_degradation
from captum_ext.metrics._fills import gaussian_blur
from tests.helpers import CallCounter, assert_model_unchanged, snapshot
from tests.metrics.trained_digits import trained_digits_cnn


def _cnn(channels: int = 3, classes: int = 5, side: int = 10) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(channels, 4, 3, padding=1),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(4 * side * side, classes),
    ).eval()


def _patches(height: int, width: int, p: int) -> list[tuple[slice, slice]]:
    """Square patches tiling the image row by row from the top-left corner."""
    return [
        (slice(r, min(r + p, height)), slice(c, min(c + p, width)))
        for r in range(0, height, p)
        for c in range(0, width, p)
    ]


def naive_degradation(
    model: Callable[[Tensor], Tensor],
    x: Tensor,
    a: Tensor,
    target: list[int] | None,
    patch_size: int,
    n_steps: int | None,
    order: str = "morf",
    fill_fn: Callable[[Tensor, tuple[slice, slice]], Tensor] | None = None,
) -> Tensor:
    """The paper's text, one example and one step at a time.

    "A growing number of patches in the input images are replaced with their
    mean channel values and the output [softmax probability] of the model is
    monitored. The order in which patches are perturbed is dictated by the
    accumulated saliencies of their pixels."
    """
    rows = []
    for b in range(x.shape[0]):
        xb, ab = x[b], a[b]
        patches = _patches(x.shape[2], x.shape[3], patch_size)
        score = [float(ab[:, r, c].sum()) for r, c in patches]
        sign = -1.0 if order == "morf" else 1.0
        ranking = sorted(range(len(patches)), key=lambda j: (sign * score[j], j))
        probs = torch.softmax(model(xb[None]), dim=1)[0]
        t = int(probs.argmax()) if target is None else target[b]
        curve = [probs[t]]
        current = xb.clone()
        steps = len(patches) if n_steps is None else n_steps
        for j in ranking[:steps]:
            r, c = patches[j]
            for ch in range(x.shape[1]):  # every channel, whatever its mean
                if fill_fn is None:
                    current[ch, r, c] = xb[ch, r, c].mean()
                else:
                    current[ch, r, c] = fill_fn(xb, (r, c))[ch]
            curve.append(torch.softmax(model(current[None]), dim=1)[0, t])
        rows.append(torch.stack(curve))
    return torch.stack(rows).detach()


@pytest.mark.parametrize(
    ("side", "patch_size", "n_steps", "order"),
    [(10, 3, None, "morf"), (10, 3, 7, "lerf"), (9, 3, 5, "morf"), (10, 4, 9, "morf")],
)
@pytest.mark.parametrize("target", [[0, 4, 2], "predicted"])
def test_equals_naive_paper_reference(
    side: int, patch_size: int, n_steps: int | None, order: str, target: Any
) -> None:
    model = _cnn(side=side).double()
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(3, 3, side, side, generator=gen, dtype=torch.float64)
    a = torch.randn(3, 3, side, side, generator=gen, dtype=torch.float64)
    ours: Any = target
    if target == "predicted":  # the documented recipe for the predicted class
        ours, target = model(x).argmax(1), None
    got = image_degradation(
        model,
        x,
        a,
        ours,
        patch_size,
        n_steps,
        "patch_mean",
        order,  # type: ignore[arg-type]
    )
    want = naive_degradation(model, x, a, target, patch_size, n_steps, order)
    assert got.shape == (3, (n_steps or math.ceil(side / patch_size) ** 2) + 1)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-13)


def test_top_patch_and_every_channel_are_replaced() -> None:
    """The two deviations of the authors' degradation loop (DFKI-NLP/pgig,
    https://github.com/DFKI-NLP/pgig) are absent: the top patch is degraded at
    step 1, and channels with a negative patch mean are replaced too."""
    seen: list[Tensor] = []

    def recording_model(inp: Tensor) -> Tensor:
        seen.append(inp.clone())
        return inp.flatten(1)[:, :3]

    x = torch.rand(1, 2, 4, 4) + 1.0
    x[0, 1] = -x[0, 1]  # channel 1 has a negative patch mean everywhere
    a = torch.zeros(1, 1, 4, 4)
    a[0, 0, 2:, :2] = 5.0  # the bottom-left 2x2 patch is the top patch
    image_degradation(recording_model, x, a, target=0, patch_size=2, n_steps=1)
    assert len(seen) == 1 and seen[0].shape[0] == 2  # one pass: intact, step 1
    torch.testing.assert_close(seen[0][0], x[0])
    step1 = seen[0][1]
    for ch in range(2):
        patch = x[0, ch, 2:, :2]
        torch.testing.assert_close(step1[ch, 2:, :2], patch.mean().expand(2, 2))
    untouched = torch.ones(4, 4, dtype=torch.bool)
    untouched[2:, :2] = False
    assert torch.equal(step1[:, untouched], x[0][:, untouched])


@pytest.mark.parametrize("chunk", [1, 2, 5, 13, 1000])
def test_batched_equals_unbatched(chunk: int) -> None:
    model = _cnn()
    x, a = torch.randn(4, 3, 10, 10), torch.randn(4, 3, 10, 10)
    target = torch.tensor([1, 0, 3, 2])
    full = image_degradation(model, x, a, target, 3, 12)
    chunked = image_degradation(
        model, x, a, target, 3, 12, max_examples_per_batch=chunk
    )
    torch.testing.assert_close(chunked, full, rtol=1e-6, atol=1e-7)
    # and each example alone gives its row of the batch
    for b in range(4):
        alone = image_degradation(
            model, x[b : b + 1], a[b : b + 1], int(target[b]), 3, 12
        )
        torch.testing.assert_close(alone[0], full[b], rtol=1e-6, atol=1e-7)


def _fill_naive(kind: str, patch_size: int) -> Callable[[Tensor, Any], Tensor]:
    if kind == "zero":
        return lambda xb, rc: torch.zeros(xb.shape[0], dtype=xb.dtype)
    if kind == "constant":
        return lambda xb, rc: torch.full((xb.shape[0],), -0.75, dtype=xb.dtype)
    if kind == "tensor":
        return lambda xb, rc: torch.tensor([0.5, -1.0, 2.0], dtype=xb.dtype)
    if kind == "callable":  # the callable below: a horizontally flipped image
        return lambda xb, rc: xb.flip(-1)[:, rc[0], rc[1]]
    raise AssertionError(kind)


@pytest.mark.parametrize("kind", ["zero", "constant", "tensor", "callable"])
def test_replacements_equal_naive(kind: str) -> None:
    model = _cnn().double()
    x = torch.randn(2, 3, 10, 10, dtype=torch.float64)
    a = torch.randn(2, 1, 10, 10, dtype=torch.float64)  # channel-summed map
    replacement: Any = {
        "zero": "zero",
        "constant": -0.75,
        "tensor": torch.tensor([0.5, -1.0, 2.0], dtype=torch.float64).view(1, 3, 1, 1),
        "callable": lambda t: t.flip(-1),
    }[kind]
    got = image_degradation(model, x, a, [1, 2], 3, 8, replacement)
    # the naive fill_fn returns per-channel values; a patch takes them pixelwise
    fill = _fill_naive(kind, 3)

    def pixelwise(xb: Tensor, rc: tuple[slice, slice]) -> Tensor:
        value = fill(xb, rc)
        if value.dim() == 1:
            value = value[:, None, None].expand(
                -1, rc[0].stop - rc[0].start, rc[1].stop - rc[1].start
            )
        return value

    want = naive_degradation(model, x, a, [1, 2], 3, 8, fill_fn=pixelwise)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-13)


def test_blur_replacement_and_blur_helper() -> None:
    x = torch.randn(2, 3, 7, 9, dtype=torch.float64)
    sigma = 1.5
    blurred = gaussian_blur(x, sigma)
    # naive 2-D convolution with the same kernel and replicate borders
    radius = math.ceil(3 * sigma)
    t = torch.arange(-radius, radius + 1, dtype=torch.float64)
    k1 = torch.exp(-0.5 * (t / sigma) ** 2)
    k1 = k1 / k1.sum()
    naive = torch.zeros_like(x)
    for i in range(7):
        for j in range(9):
            for di in range(-radius, radius + 1):
                for dj in range(-radius, radius + 1):
                    ii, jj = min(max(i + di, 0), 6), min(max(j + dj, 0), 8)
                    naive[:, :, i, j] += (
                        k1[di + radius] * k1[dj + radius] * x[:, :, ii, jj]
                    )
    torch.testing.assert_close(blurred, naive)
    const = torch.full((1, 2, 5, 5), 3.0, dtype=torch.float64)
    torch.testing.assert_close(gaussian_blur(const, 4.0), const)
    # fill="blur" with blur_sigma=None uses sigma = patch_size / 2
    model = _cnn().double()
    xx = torch.randn(2, 3, 10, 10, dtype=torch.float64)
    a = torch.randn(2, 3, 10, 10, dtype=torch.float64)
    got = image_degradation(model, xx, a, [0, 1], 4, 5, "blur")
    want = image_degradation(
        model, xx, a, [0, 1], 4, 5, lambda v: gaussian_blur(v, 2.0)
    )
    torch.testing.assert_close(got, want, rtol=0, atol=0)
    # ... and blur_sigma sets it, checked against the naive convolution above
    torch.manual_seed(0)
    flat = nn.Sequential(nn.Flatten(), nn.Linear(3 * 7 * 9, 4)).double()
    got = image_degradation(flat, x, x, [0, 3], 3, 5, "blur", blur_sigma=sigma)

    def naive_blur(xb: Tensor, rc: tuple[slice, slice]) -> Tensor:
        b = 0 if torch.equal(xb, x[0]) else 1
        return naive[b][:, rc[0], rc[1]]

    want = naive_degradation(flat, x, x, [0, 3], 3, 5, fill_fn=naive_blur)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-13)


def test_probability_fn_target_none_and_mean_fill() -> None:
    """A custom ``probability_fn``; ``target=None`` takes its one score per
    example (Captum's meaning); ``fill="mean"`` is the image's channel mean."""
    model = _cnn().double()
    x = torch.randn(2, 3, 10, 10, dtype=torch.float64)
    a = torch.randn(2, 1, 10, 10, dtype=torch.float64)

    def image_mean(xb: Tensor, rc: tuple[slice, slice]) -> Tensor:
        return xb.mean(dim=(1, 2))[:, None, None].expand_as(xb[:, rc[0], rc[1]])

    want = naive_degradation(model, x, a, [2, 4], 3, 6, fill_fn=image_mean)
    got = image_degradation(model, x, a, [2, 4], 3, 6, "mean")
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-13)
    # log-probabilities: the naive curve's log, with the same target
    got_log = image_degradation(
        model, x, a, [2, 4], 3, 6, "mean", probability_fn=lambda o: o.log_softmax(1)
    )
    torch.testing.assert_close(got_log, want.log(), rtol=1e-10, atol=1e-12)
    # target=None: probability_fn returns the tracked score itself
    got_none = image_degradation(
        model,
        x,
        a,
        None,
        3,
        6,
        "mean",
        probability_fn=lambda o: o.softmax(1)[:, 2],
    )
    torch.testing.assert_close(got_none[0], want[0], rtol=1e-12, atol=1e-13)
    with pytest.raises(ValueError, match="target=None"):
        image_degradation(model, x, a, None, 3, 6, probability_fn=lambda o: o)


def test_replacement_is_a_deprecated_alias_of_fill() -> None:
    model = _cnn()
    x, a = torch.randn(2, 3, 10, 10), torch.randn(2, 3, 10, 10)
    want = image_degradation(model, x, a, 1, 3, 5, fill="zero")
    with pytest.warns(DeprecationWarning, match="replacement"):
        got = image_degradation(model, x, a, 1, 3, 5, replacement="zero")
    assert torch.equal(got, want)
    with pytest.raises(TypeError, match="fill"), pytest.warns(DeprecationWarning):
        image_degradation(model, x, a, 1, 3, 5, fill=0.5, replacement="zero")


def test_auto_batch_bounds_each_pass_and_keeps_results(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from captum_ext.metrics import _curves

    model = CallCounter(_cnn())
    x, a = torch.randn(3, 3, 10, 10), torch.randn(3, 3, 10, 10)
    target = torch.tensor([0, 2, 4])
    whole = image_degradation(model, x, a, target, 3, 9, max_examples_per_batch=None)
    assert model.calls == 1  # None: every perturbed image in one pass (Captum)
    # the default cap, lowered to 7 images of 300 elements, splits 30 images
    monkeypatch.setattr(_curves, "AUTO_BATCH_ELEMENTS", 7 * 300)
    model.calls = 0
    auto = image_degradation(model, x, a, target, 3, 9, show_progress=True)
    assert model.calls == 5  # ceil(30 / 7)
    torch.testing.assert_close(auto, whole, rtol=1e-6, atol=1e-7)
    assert "30/30" in capsys.readouterr().err


def test_random_order_uses_generator_only() -> None:
    model = _cnn()
    x = torch.randn(2, 3, 10, 10)
    a1, a2 = torch.randn(2, 3, 10, 10), torch.randn(2, 3, 10, 10)

    def run(a: Tensor, seed: int) -> Tensor:
        g = torch.Generator().manual_seed(seed)
        return image_degradation(model, x, a, 0, 3, None, order="random", generator=g)

    r1 = run(a1, 7)
    assert torch.equal(r1, run(a2, 7))  # attributions are ignored
    assert not torch.equal(r1, run(a1, 8))
    # every patch is degraded by the last step, whatever the order
    morf = image_degradation(model, x, a1, 0, 3, None)
    torch.testing.assert_close(r1[:, -1], morf[:, -1])


def test_tuple_inputs_ranked_jointly_with_forward_args() -> None:
    class TwoImages(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            torch.manual_seed(0)
            self.a = nn.Linear(2 * 16, 4)
            self.b = nn.Linear(1 * 36, 4)

        def forward(self, u: Tensor, v: Tensor, scale: Tensor) -> Tensor:
            return (self.a(u.flatten(1)) + self.b(v.flatten(1))) * scale

    net = TwoImages().double()
    u = torch.randn(3, 2, 4, 4, dtype=torch.float64)
    v = torch.randn(3, 1, 6, 6, dtype=torch.float64)
    au = torch.randn(3, 2, 4, 4, dtype=torch.float64)
    av = torch.randn(3, 1, 6, 6, dtype=torch.float64)
    scale = torch.tensor([[1.0], [2.0], [0.5]], dtype=torch.float64)
    target = [3, 0, 1]
    got = image_degradation(
        net,
        (u, v),
        (au, av),
        target,
        2,
        None,
        additional_forward_args=(scale,),
        max_examples_per_batch=4,
    )
    assert got.shape == (3, 4 + 9 + 1)
    # naive: one list of patches over both images, ranked together
    for b in range(3):
        patches = [(0, rc) for rc in _patches(4, 4, 2)] + [
            (1, rc) for rc in _patches(6, 6, 2)
        ]
        imgs, attrs = [u[b].clone(), v[b].clone()], [au[b], av[b]]
        score = [float(attrs[i][:, r, c].sum()) for i, (r, c) in patches]
        ranking = sorted(range(len(patches)), key=lambda j: (-score[j], j))

        def prob(imgs: list[Tensor], b: int) -> Tensor:
            out = net(imgs[0][None], imgs[1][None], scale[b : b + 1])
            return torch.softmax(out, 1)[0, target[b]]

        curve = [prob(imgs, b)]
        for j in ranking:
            i, (r, c) = patches[j]
            orig = (u, v)[i][b]
            for ch in range(orig.shape[0]):
                imgs[i][ch, r, c] = orig[ch, r, c].mean()
            curve.append(prob(imgs, b))
        torch.testing.assert_close(
            got[b], torch.stack(curve).detach(), rtol=1e-12, atol=1e-13
        )


def test_known_relevant_region_morf_below_lerf() -> None:
    """Class 0's logit reads only the top-left 4x4 region of a 12x12 image."""

    def region_model(x: Tensor) -> Tensor:
        z = 3.0 * x[:, :, :4, :4].clamp(min=0).sum((1, 2, 3))
        return torch.stack([z, torch.zeros_like(z)], 1)

    x = torch.rand(5, 2, 12, 12) * 0.5 + 0.1
    correct = torch.zeros_like(x)
    correct[:, :, :4, :4] = x[:, :, :4, :4]  # Gradient * Input of class 0 (up to 3)
    kw: dict[str, Any] = {
        "target": 0,
        "patch_size": 2,
        "n_steps": None,
        "fill": "zero",
    }
    morf = image_degradation(region_model, x, correct, order="morf", **kw)
    lerf = image_degradation(region_model, x, correct, order="lerf", **kw)
    reverse = image_degradation(region_model, x, -correct, order="morf", **kw)
    # the 4 relevant patches go first under MoRF: class 0 is lost within 4 steps
    assert (morf[:, 4] <= 0.5 + 1e-6).all() and (morf[:, 0] > 0.9).all()
    # ... and last under LeRF or with the reversed map
    assert (lerf[:, : 36 - 4 + 1] == lerf[:, :1]).all()
    torch.testing.assert_close(reverse, lerf)
    assert (morf <= lerf + 1e-7).all() and (morf < lerf).any()
    assert (aopc(morf) > aopc(lerf) + 0.3).all()


@pytest.mark.slow
def test_trained_digits_cnn_morf_below_reverse_and_random() -> None:
    model, x, y = trained_digits_cnn()
    before = snapshot(model)
    attr = (
        InputXGradient(model).attribute(x.clone().requires_grad_(), target=y).detach()
    )
    kw: dict[str, Any] = {"target": y, "patch_size": 2, "n_steps": None}
    morf = image_degradation(model, x, attr, **kw)
    lerf = image_degradation(model, x, attr, order="lerf", **kw)
    rand = image_degradation(
        model, x, attr, order="random", generator=torch.Generator().manual_seed(0), **kw
    )
    mean_morf, mean_lerf, mean_rand = morf.mean(0), lerf.mean(0), rand.mean(0)
    # step 0 and the fully degraded image are the same for every order
    torch.testing.assert_close(mean_morf[[0, -1]], mean_lerf[[0, -1]])
    inner = slice(1, -1)
    assert (mean_morf[inner] < mean_rand[inner]).all()
    assert (mean_morf[inner] < mean_lerf[inner]).all()
    a_morf, a_rand, a_lerf = aopc(morf).mean(), aopc(rand).mean(), aopc(lerf).mean()
    assert a_morf > a_rand + 0.02 and a_rand > a_lerf + 0.01, (a_morf, a_rand, a_lerf)
    assert_model_unchanged(before, model)


def test_aopc_closed_form() -> None:
    curves = torch.tensor([[1.0, 0.5, 0.0], [0.8, 0.8, 0.2]])
    torch.testing.assert_close(aopc(curves), torch.tensor([0.5, 0.2]))
    with pytest.raises(ValueError, match="curves"):
        aopc(torch.ones(3))
    with pytest.raises(TypeError, match="curves"):
        aopc([[1.0, 0.5]])  # type: ignore[arg-type]


def test_inputs_untouched_and_no_grad_context() -> None:
    model = _cnn()
    x = torch.randn(2, 3, 10, 10, requires_grad=True)
    a = torch.randn(2, 3, 10, 10)
    x0, a0 = x.detach().clone(), a.clone()
    before = snapshot(model)
    out = image_degradation(model, x, a, 1, 5, None)
    with torch.no_grad():
        out2 = image_degradation(model, x, a, 1, 5, None)
    assert torch.equal(out, out2) and not out.requires_grad
    assert torch.equal(x.detach(), x0) and torch.equal(a, a0) and x.grad is None
    assert_model_unchanged(before, model)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"inputs": torch.randn(2, 10, 10)}, ValueError, "inputs"),
        ({"inputs": [torch.randn(2, 3, 10, 10)]}, TypeError, "inputs"),
        ({"attributions": torch.randn(2, 2, 10, 10)}, ValueError, "attributions"),
        ({"attributions": torch.randn(2, 3, 10, 9)}, ValueError, "attributions"),
        ({"attributions": (torch.randn(2, 3, 10, 10),)}, TypeError, "attributions"),
        ({"attributions": torch.full((2, 3, 10, 10), math.nan)}, ValueError, "NaN"),
        ({"patch_size": 0}, ValueError, "patch_size"),
        ({"patch_size": 2.0}, ValueError, "patch_size"),
        ({"n_steps": 0}, ValueError, "n_steps"),
        ({"n_steps": 17}, ValueError, "number of patches"),
        ({"fill": "grey"}, ValueError, "fill"),
        ({"fill": True}, TypeError, "fill"),
        ({"fill": torch.zeros(2, 2, 1, 1)}, ValueError, "broadcast"),
        ({"fill": (torch.zeros(1), torch.zeros(1))}, ValueError, "fill"),
        ({"fill": [0.0]}, TypeError, "fill"),
        ({"fill": lambda t: 1.0}, TypeError, "callable"),
        ({"fill": "blur", "blur_sigma": 0.0}, ValueError, "blur_sigma"),
        ({"probability_fn": "softmax"}, TypeError, "probability_fn"),
        ({"target": None}, ValueError, "target=None"),
        ({"order": "best"}, ValueError, "order"),
        ({"generator": 3}, TypeError, "generator"),
        ({"max_examples_per_batch": 0}, ValueError, "max_examples_per_batch"),
        ({"target": torch.tensor([0.0, 1.0])}, TypeError, "target"),
        ({"target": [0, 1, 2]}, AssertionError, None),
        ({"target": 7}, ValueError, "out of range"),
    ],
)
def test_argument_validation(
    kwargs: dict[str, Any], error: type, match: str | None
) -> None:
    model = CallCounter(_cnn())
    args: dict[str, Any] = {
        "forward_func": model,
        "inputs": torch.randn(2, 3, 10, 10),
        "attributions": torch.randn(2, 3, 10, 10),
        "target": 0,
        "patch_size": 3,
        "n_steps": 5,
    }
    args.update(kwargs)
    with pytest.raises(error, match=match):
        image_degradation(**args)
    # nothing but (at most) the intact forward pass ran
    assert model.calls <= 1


def test_model_with_scalar_output_is_refused() -> None:
    with pytest.raises(ValueError, match="n_classes"):
        image_degradation(
            lambda x: x.sum((1, 2, 3)),
            torch.randn(2, 1, 4, 4),
            torch.randn(2, 1, 4, 4),
            target=0,
            patch_size=2,
            n_steps=2,
        )
