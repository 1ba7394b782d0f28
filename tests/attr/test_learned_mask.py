"""LearnedMask: eq. 6 of the complete-and-sound saliency paper, checked against a
naive per-example loop with torch.optim.Adam, on models with a known answer."""

from __future__ import annotations

from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from captum_ext.attr import LearnedMask
from tests.helpers import assert_model_unchanged, snapshot


@pytest.fixture(autouse=True)
def _one_thread() -> Any:
    """Hundreds of tiny forward/backward passes: threads only add overhead."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


class RegionNet(nn.Module):
    """Class 0 iff the mean of the top-left 3x3 block is positive."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(6.0))
        self.calls = 0

    def forward(self, x: Tensor) -> Tensor:
        self.calls += 1
        s = self.scale * x[:, :, :3, :3].mean(dim=(1, 2, 3))
        return torch.stack([s, -s], dim=1)


def _small_cnn(dtype: torch.dtype = torch.float32) -> nn.Module:
    torch.manual_seed(3)
    return (
        nn.Sequential(
            nn.Conv2d(1, 4, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(4, 4, 3, padding=1),
            nn.ReLU(),
            nn.Flatten(),
            nn.Linear(4 * 8 * 8, 3),
        )
        .eval()
        .to(dtype)
    )


def _tv(m: Tensor, power: int = 2) -> Tensor:
    """Total variation per example, summed with explicit loops."""
    out = torch.zeros(m.shape[0], dtype=m.dtype)
    h, w = m.shape[-2:]
    for b in range(m.shape[0]):
        for i in range(h):
            for j in range(w):
                if i + 1 < h:
                    out[b] += (m[b, 0, i + 1, j] - m[b, 0, i, j]).abs() ** power
                if j + 1 < w:
                    out[b] += (m[b, 0, i, j + 1] - m[b, 0, i, j]).abs() ** power
    return out


def _reference_masks(
    model: nn.Module,
    x: Tensor,
    targets: list[int],
    pool: Tensor,
    n_iter: int,
    lr: float,
    l1: float,
    tv: float,
    power: int,
    s: int,
) -> tuple[Tensor, Tensor]:
    """Eq. 6 one example and one distractor at a time, with torch.optim.Adam."""
    masks, histories = [], []
    h, w = x.shape[-2:]
    for b in range(x.shape[0]):
        weight = torch.zeros(
            1, 1, -(-h // s), -(-w // s), dtype=x.dtype, requires_grad=True
        )
        opt = torch.optim.Adam([weight], lr=lr)
        history = []
        for _ in range(n_iter):
            m = torch.sigmoid(weight)
            m = F.interpolate(m, size=(h, w), mode="bilinear", align_corners=False)
            probs = []
            for d in pool:
                mixed = m * x[b : b + 1] + (1 - m) * d[None]
                probs.append(torch.softmax(model(mixed), dim=1)[0, targets[b]])
            loss = -torch.log(torch.stack(probs).mean())
            diff_h = (m[..., 1:, :] - m[..., :-1, :]).abs() ** power
            diff_w = (m[..., :, 1:] - m[..., :, :-1]).abs() ** power
            loss = loss + tv * (diff_h.sum() + diff_w.sum()) + l1 * m.sum()
            opt.zero_grad()
            loss.backward()
            opt.step()
            history.append(loss.detach())
        with torch.no_grad():
            m = torch.sigmoid(weight)
            m = F.interpolate(m, size=(h, w), mode="bilinear", align_corners=False)
            masks.append(m)
        histories.append(torch.stack(history))
    return torch.cat(masks).expand_as(x), torch.stack(histories, dim=1)


@pytest.mark.parametrize("power,s", [(2, 1), (1, 2), (2, 3)])
def test_equals_naive_adam_loop(power: int, s: int) -> None:
    model = _small_cnn(torch.float64)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(3, 1, 8, 8, generator=gen, dtype=torch.float64)
    pool = torch.randn(4, 1, 8, 8, generator=gen, dtype=torch.float64)
    targets = [0, 2, 1]
    kw: dict[str, Any] = dict(n_iter=12, lr=0.1, l1=0.02, tv=0.3, power=power, s=s)
    ref, ref_hist = _reference_masks(model, x, targets, pool, **kw)
    got, hist = LearnedMask(model).attribute(
        x,
        target=targets,
        distractors=pool,
        n_distractors=None,
        n_iter=12,
        lr=0.1,
        l1_coeff=0.02,
        tv_coeff=0.3,
        tv_power=power,
        upsample=s,
        return_loss_history=True,
    )
    assert got.shape == x.shape and got.dtype == torch.float64
    torch.testing.assert_close(got, ref, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(hist, ref_hist, rtol=1e-9, atol=1e-9)
    assert hist.shape == (12, 3)


def test_mask_finds_the_region_the_model_uses() -> None:
    model = RegionNet()
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(4, 1, 8, 8, generator=gen)
    x[:, :, :3, :3] = 1.0  # class 0, decided by the top-left block only
    pool = torch.randn(64, 1, 8, 8, generator=gen)
    masks = LearnedMask(model).attribute(
        x,
        target=0,
        distractors=pool,
        n_distractors=8,
        n_iter=150,
        lr=0.1,
        l1_coeff=0.01,
        tv_coeff=0.0,
        generator=torch.Generator().manual_seed(1),
    )
    region = torch.zeros(8, 8, dtype=torch.bool)
    region[:3, :3] = True
    for m in masks[:, 0]:
        top9 = m.flatten().topk(9).indices
        assert region.flatten()[top9].all()
        assert m[region].min() > m[~region].max()


def test_tv_lowers_total_variation_and_l1_shrinks() -> None:
    model = _small_cnn()
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(4, 1, 8, 8, generator=gen)
    pool = torch.randn(16, 1, 8, 8, generator=gen)
    lm = LearnedMask(model)

    def run(**kw: Any) -> Tensor:
        return lm.attribute(
            x,
            target=[0, 1, 2, 0],
            distractors=pool,
            n_distractors=4,
            n_iter=60,
            lr=0.1,
            generator=torch.Generator().manual_seed(2),
            **kw,
        )

    plain = run(tv_coeff=0.0, l1_coeff=0.0)
    smooth = run(tv_coeff=1.0, l1_coeff=0.0)
    assert (_tv(smooth) < 0.5 * _tv(plain)).all()
    smooth_abs = run(tv_coeff=0.3, tv_power=1, l1_coeff=0.0)
    assert (_tv(smooth_abs, 1) < _tv(plain, 1)).all()
    sparse = run(tv_coeff=0.0, l1_coeff=0.05)
    assert (sparse.flatten(1).mean(1) < plain.flatten(1).mean(1) - 0.1).all()
    for m in (plain, smooth, sparse):
        assert m.min() >= 0 and m.max() <= 1


def test_generator_reproducibility_and_model_untouched() -> None:
    model = _small_cnn()
    model.train()  # the caller's mode must survive
    model[0].weight.requires_grad_(False)  # and partially frozen parameters
    state = snapshot(model)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(3, 1, 8, 8, generator=gen)
    pool = torch.randn(10, 1, 8, 8, generator=gen)
    lm = LearnedMask(model)

    def run(seed: int) -> Tensor:
        return lm.attribute(
            x,
            target=1,
            distractors=pool,
            n_distractors=3,
            n_iter=15,
            lr=0.1,
            generator=torch.Generator().manual_seed(seed),
        )

    a, b, c = run(5), run(5), run(6)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    assert_model_unchanged(state, model)
    assert model.training
    for name, p in model.named_parameters():
        assert p.grad is None, name
        assert p.requires_grad == (name != "0.weight"), name


def test_callable_pool_and_constant_fill() -> None:
    model = _small_cnn()
    x = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    calls: list[tuple[int, Any]] = []

    def zeros(n: int, generator: torch.Generator | None) -> Tensor:
        calls.append((n, generator))
        return torch.zeros(n, 1, 8, 8)

    gen = torch.Generator().manual_seed(0)
    lm = LearnedMask(model)
    got = lm.attribute(
        x, target=0, distractors=zeros, n_distractors=3, n_iter=5, generator=gen
    )
    # one draw of n_distractors per step, shared by both examples
    assert calls == [(3, gen)] * 5
    grey = lm.attribute(
        x,
        target=0,
        distractors=torch.zeros(1, 1, 8, 8),
        n_distractors=None,
        n_iter=5,
    )
    torch.testing.assert_close(got, grey)


def test_upsampled_mask_is_bilinear_image_of_low_resolution_mask() -> None:
    model = _small_cnn(torch.float64)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 1, 8, 8, generator=gen, dtype=torch.float64)
    pool = torch.randn(5, 1, 8, 8, generator=gen, dtype=torch.float64)
    masks = LearnedMask(model).attribute(
        x, target=0, distractors=pool, n_distractors=None, n_iter=10, upsample=4
    )
    # The bilinear upsampling operator from 2x2 to 8x8 as a 64 x 4 matrix.
    basis = torch.eye(4, dtype=torch.float64).view(4, 1, 2, 2)
    op = F.interpolate(basis, size=(8, 8), mode="bilinear", align_corners=False)
    op = op.reshape(4, 64).t()
    for m in masks[:, 0]:
        low = torch.linalg.lstsq(op, m.reshape(64, 1)).solution
        torch.testing.assert_close(op @ low, m.reshape(64, 1), atol=1e-10, rtol=0)
        assert m.unique().numel() > 4  # really interpolated, not blocky
    whole = LearnedMask(model).attribute(
        x, target=0, distractors=pool, n_distractors=None, n_iter=3, upsample=8
    )
    # one value per image
    torch.testing.assert_close(whole, whole[:, :, :1, :1].expand_as(whole))


def test_tuple_inputs_and_forward_args() -> None:
    class TwoImages(nn.Module):
        def forward(self, a: Tensor, b: Tensor, scale: Tensor) -> Tensor:
            s = a[:, 0, :2, :2].mean((1, 2)) - b[:, 0, -2:, -2:].mean((1, 2))
            s = s * scale
            return torch.stack([s, -s], dim=1)

    # float64: Adam's normalised steps would carry float32's last-bit
    # differences between batched and single-example reductions along
    gen = torch.Generator().manual_seed(0)
    f64 = torch.float64
    a = torch.randn(3, 1, 6, 6, generator=gen, dtype=f64)
    b = torch.randn(3, 2, 4, 4, generator=gen, dtype=f64)
    scale = torch.tensor([3.0, 4.0, 5.0], dtype=f64)
    pool = (
        torch.randn(5, 1, 6, 6, generator=gen, dtype=f64),
        torch.randn(5, 2, 4, 4, generator=gen, dtype=f64),
    )
    lm = LearnedMask(TwoImages())
    kw: dict[str, Any] = dict(distractors=pool, n_distractors=None, n_iter=30)
    ma, mb = lm.attribute((a, b), target=0, additional_forward_args=(scale,), **kw)
    assert ma.shape == a.shape and mb.shape == b.shape
    assert torch.equal(mb[:, 0], mb[:, 1])  # one mask per pixel, all channels
    for i in range(3):
        one = lm.attribute(
            (a[i : i + 1], b[i : i + 1]),
            target=0,
            additional_forward_args=(scale[i : i + 1],),
            **kw,
        )
        torch.testing.assert_close(one[0], ma[i : i + 1], atol=1e-9, rtol=1e-9)
        torch.testing.assert_close(one[1], mb[i : i + 1], atol=1e-9, rtol=1e-9)


def test_early_stopping_per_example() -> None:
    model = _small_cnn(torch.float64)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(3, 1, 8, 8, generator=gen, dtype=torch.float64)
    pool = torch.randn(4, 1, 8, 8, generator=gen, dtype=torch.float64)
    lm = LearnedMask(model)
    kw: dict[str, Any] = dict(distractors=pool, n_distractors=None, lr=0.2)
    masks, hist = lm.attribute(
        x,
        target=[0, 1, 2],
        n_iter=400,
        early_stop_patience=5,
        early_stop_tol=1e-3,
        return_loss_history=True,
        **kw,
    )
    ran = (~hist.isnan()).sum(0)
    assert (ran < 400).all()  # every example stopped early ...
    assert (ran > 5 + 5).all()  # ... but only after improving for a while
    for i in range(3):
        # it stopped when its loss had not improved on its best by a relative
        # 1e-3 for 5 steps, and not before
        h = hist[: ran[i], i].tolist()
        best, since, stop = float("inf"), 0, None
        for step, value in enumerate(h):
            if best == float("inf") or value < best - 1e-3 * abs(best):
                best, since = value, 0
            else:
                since += 1
            if since >= 5:
                stop = step + 1
                break
        assert stop == ran[i]
    for i in range(3):
        # the history is a prefix: NaN only after the example stopped
        assert not hist[: ran[i], i].isnan().any()
        alone = lm.attribute(x[i : i + 1], target=[i], n_iter=int(ran[i]), **kw)
        torch.testing.assert_close(alone, masks[i : i + 1])


def test_probability_fn_and_progress(capsys: pytest.CaptureFixture[str]) -> None:
    model = _small_cnn(torch.float64)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 1, 8, 8, generator=gen, dtype=torch.float64)
    pool = torch.randn(4, 1, 8, 8, generator=gen, dtype=torch.float64)
    lm = LearnedMask(model)
    kw: dict[str, Any] = dict(distractors=pool, n_distractors=None, n_iter=10)
    default = lm.attribute(x, target=1, **kw)
    explicit = lm.attribute(
        x,
        target=1,
        probability_fn=lambda out: torch.softmax(out, dim=1),
        show_progress=True,
        **kw,
    )
    torch.testing.assert_close(default, explicit)
    err = capsys.readouterr().err
    assert "LearnedMask" in err and "loss=" in err

    # a model that already returns probabilities of one class per example
    def prob_model(inp: Tensor) -> Tensor:
        return torch.sigmoid(model(inp)[:, 1] - model(inp)[:, 0])

    with pytest.raises(ValueError, match="one probability per example"):
        lm.attribute(x, target=None, probability_fn=lambda p: p, **kw)
    masks = LearnedMask(prob_model).attribute(
        x, target=None, probability_fn=lambda p: p, **{**kw, "n_iter": 3}
    )
    assert masks.shape == x.shape


def test_bad_arguments_refused_before_any_forward() -> None:
    model = RegionNet()
    x = torch.randn(2, 1, 8, 8)
    pool = torch.randn(5, 1, 8, 8)
    lm = LearnedMask(model)
    cases: list[tuple[dict[str, Any], type[Exception], str | None]] = [
        ({"distractors": torch.randn(5, 1, 7, 8)}, ValueError, "distractors"),
        ({"distractors": torch.randn(0, 1, 8, 8)}, ValueError, "empty"),
        ({"distractors": [pool]}, TypeError, "distractors"),
        ({"distractors": (pool, pool)}, ValueError, "distractors"),
        ({"distractors": lambda n, g: None, "n_distractors": None}, ValueError, "pool"),
        ({"n_distractors": 0}, ValueError, "n_distractors"),
        ({"n_iter": 0}, ValueError, "n_iter"),
        ({"lr": 0.0}, ValueError, "lr"),
        ({"l1_coeff": -1.0}, ValueError, "l1_coeff"),
        ({"tv_coeff": float("nan")}, ValueError, "tv_coeff"),
        ({"tv_power": 3}, ValueError, "tv_power"),
        ({"upsample": 0}, ValueError, "upsample"),
        ({"internal_batch_size": 0}, ValueError, "internal_batch_size"),
        ({"early_stop_patience": -2}, ValueError, "early_stop_patience"),
        ({"generator": 3}, TypeError, "generator"),
        ({"probability_fn": 3}, TypeError, "probability_fn"),
        ({"target": [0, 1, 1]}, AssertionError, None),
        ({"inputs": torch.randn(2, 64)}, ValueError, "images"),
    ]
    for over, exc, match in cases:
        kw: dict[str, Any] = {"target": 0, "distractors": pool, "n_iter": 2}
        kw.update(over)
        inputs = kw.pop("inputs", x)
        with pytest.raises(exc, match=match):
            lm.attribute(inputs, **kw)
    assert model.calls == 0
    # a callable pool returning the wrong shape is refused before its forward
    with pytest.raises(ValueError, match="callable"):
        lm.attribute(
            x, target=0, distractors=lambda n, g: torch.zeros(n, 1, 4, 4), n_iter=2
        )
    assert model.calls == 0
    # the user's inputs are untouched
    before = x.clone()
    lm.attribute(x, target=0, distractors=pool, n_iter=2)
    assert torch.equal(x, before) and not x.requires_grad


@pytest.mark.slow
def test_reproduction_tv_trades_completeness_for_soundness_on_digits() -> None:
    """Table 2's trend on digits: more TV, lower completeness, higher soundness.

    Gupta et al. (CIFAR-10, TV 0 -> 0.1): completeness 0.99 -> 0.80, worst-case
    soundness 0.10 -> 0.19, with the base metric over 20-60% of the pixels kept.
    8x8 digits have ~18x fewer neighbour pairs than 32x32 images, so the TV
    grid reaches 1.0. Measured here (16 test digits, fixed seeds):
    TV 0 / 0.1 / 1: completeness 0.99 / 0.92 / 0.82, worst soundness
    0.12 / 0.16 / 0.26.
    """
    from captum_ext.data import load_digits, train_model
    from captum_ext.metrics import worst_case_completeness_soundness
    from captum_ext.models import digits_cnn

    data = load_digits(seed=0)
    torch.manual_seed(0)
    model = digits_cnn()
    train_model(model, data.x_train, data.y_train, epochs=8, seed=0)
    x = data.x_test[:16]
    lm = LearnedMask(model)
    table = {}
    for tv in (0.0, 0.1, 1.0):
        res = worst_case_completeness_soundness(
            model,
            x,
            lm.attribute,
            fraction_range=(0.2, 0.6),
            n_points=9,
            distractors=data.x_train,
            n_distractors=4,
            n_iter=150,
            lr=0.1,
            l1_coeff=1e-3,
            tv_coeff=tv,
            generator=torch.Generator().manual_seed(0),
        )
        table[tv] = (
            float(res.completeness[:, 0].mean()),
            float(res.worst_soundness.mean()),
        )
    print(table)
    comp0, sound0 = table[0.0]
    comp1, sound1 = table[1.0]
    assert comp0 > 0.95 and sound0 < 0.2  # no TV: complete but unsound
    assert comp1 < comp0 - 0.08  # completeness falls ...
    assert sound1 > sound0 + 0.08  # ... and soundness rises


def test_mean_log_loss_is_the_papers_expectation_outside_the_log() -> None:
    """loss="mean_log" = E[-log p] (eq. 5-6); "log_mean" = -log E[p] (the
    average probability of appendix A under footnote 11's negative log)."""
    torch.manual_seed(0)
    model = _small_cnn(torch.float64)
    x = torch.randn(2, 1, 8, 8, dtype=torch.float64)
    pool = torch.randn(3, 1, 8, 8, dtype=torch.float64)
    kwargs = dict(
        target=[1, 2],
        distractors=pool,
        n_distractors=None,
        n_iter=1,
        l1_coeff=0.0,
        tv_coeff=0.0,
        return_loss_history=True,
    )
    lm = LearnedMask(model)
    _, h_log_mean = lm.attribute(x, **kwargs)
    _, h_mean_log = lm.attribute(x, loss="mean_log", **kwargs)
    # step 0: the mask is 0.5 everywhere, so the inputs are (x + d) / 2
    mixed = 0.5 * (x[:, None] + pool[None])  # (2, 3, 1, 8, 8)
    probs = torch.softmax(model(mixed.flatten(0, 1)), 1).view(2, 3, -1)
    p = probs[torch.arange(2), :, torch.tensor([1, 2])]  # (2, 3)
    torch.testing.assert_close(h_log_mean[0], -p.mean(1).log())
    torch.testing.assert_close(h_mean_log[0], (-p.log()).mean(1))
    assert (h_mean_log[0] > h_log_mean[0]).all()  # Jensen's gap, strict here
    with pytest.raises(ValueError, match="loss"):
        lm.attribute(x, loss="cross_entropy", **kwargs)  # type: ignore[arg-type]
