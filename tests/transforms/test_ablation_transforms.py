"""MeanAblation, InvertedInputDropout, MeanCutout: statistics, shapes, RNG, errors."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch.utils.data import DataLoader, Dataset, TensorDataset

from captum_ext.transforms import InvertedInputDropout, MeanAblation, MeanCutout


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _within(observed: float, expected: float, sd: float, k: float = 5.0) -> bool:
    return abs(observed - expected) <= k * sd


# --------------------------------------------------------------------- statistics


@pytest.mark.parametrize("p", [0.1, 0.5, 0.9])
def test_mean_ablation_fraction_and_independence(p: float) -> None:
    n, k = 20000, 6
    x = torch.randn(n, k)  # continuous: never equal to the mean by chance
    mean = 100.0 + torch.arange(k, dtype=torch.float32)
    out = MeanAblation(p, mean, generator=_gen(1))(x)
    ablated = out == mean
    # every entry is either untouched or exactly the feature's mean
    assert torch.equal(out[~ablated], x[~ablated])
    frac = ablated.double().mean().item()
    assert _within(frac, p, math.sqrt(p * (1 - p) / (n * k)))
    # each feature ablated at rate p, and pairs independently (rate p^2)
    per_feature = ablated.double().mean(0)
    assert torch.all((per_feature - p).abs() <= 5 * math.sqrt(p * (1 - p) / n))
    both = (ablated[:, 0] & ablated[:, 1]).double().mean().item()
    assert _within(both, p * p, math.sqrt(p * p * (1 - p * p) / n))


@pytest.mark.parametrize("p", [0.2, 0.6])
def test_inverted_dropout_keeps_the_mean(p: float) -> None:
    n, k = 20000, 5
    x = 3.0 + torch.rand(n, k, dtype=torch.float64) * torch.arange(1, k + 1)
    out = InvertedInputDropout(p, generator=_gen(2))(x)
    dropped = out == 0
    assert _within(dropped.double().mean().item(), p, math.sqrt(p * (1 - p) / n / k))
    # survivors are exactly x / (1 - p)
    torch.testing.assert_close(out[~dropped], x[~dropped] / (1 - p))
    # E[x~] = E[x] and E[x~^2] = E[x^2] / (1 - p) (appendix C), per feature
    sd_mean = (out.var(0) / n).sqrt()
    assert torch.all((out.mean(0) - x.mean(0)).abs() <= 5 * sd_mean)
    second = (x**2).mean(0) / (1 - p)
    sd_second = ((out**2).var(0) / n).sqrt()
    assert torch.all(((out**2).mean(0) - second).abs() <= 5 * sd_second)


def _expected_side(extent: int, side: int) -> float:
    """Mean clipped window length over a uniform centre (brute force)."""
    total = 0
    for c in range(extent):
        start = c - side // 2
        total += min(extent, start + side) - max(0, start)
    return total / extent


@pytest.mark.parametrize("size", [3, 4, (2, 5)])
def test_cutout_area_and_shape(size: int | tuple[int, int]) -> None:
    n, c, h, w = 4000, 3, 9, 11
    x = torch.ones(n, c, h, w)
    cutout = MeanCutout(size, torch.zeros(c, 1, 1), generator=_gen(3))
    out = cutout(x)
    region = out == 0
    # the same region in every channel
    assert torch.equal(region, region[:, :1].expand_as(region))
    plane = region[:, 0]
    sh, sw = (size, size) if isinstance(size, int) else size
    rows, cols = plane.any(2), plane.any(1)
    for i in range(50):  # every region is a full rectangle of at most sh x sw
        r_idx, c_idx = rows[i].nonzero().squeeze(1), cols[i].nonzero().squeeze(1)
        assert 1 <= r_idx.numel() <= sh and 1 <= c_idx.numel() <= sw
        assert r_idx.max() - r_idx.min() + 1 == r_idx.numel()
        assert int(plane[i].sum()) == r_idx.numel() * c_idx.numel()
    area = plane.flatten(1).sum(1).double()
    expected = _expected_side(h, sh) * _expected_side(w, sw)
    assert _within(area.mean().item(), expected, area.std().item() / math.sqrt(n))
    # away from the border the region is exactly sh x sw
    assert int(area.max()) == sh * sw


def test_cutout_probability_and_tabular_windows() -> None:
    n, k = 6000, 12
    x = torch.ones(n, k)
    out = MeanCutout(4, torch.zeros(k), p=0.3, generator=_gen(4))(x)
    hit = (out == 0).any(1)
    assert _within(hit.double().mean().item(), 0.3, math.sqrt(0.21 / n))
    width = (out == 0).sum(1)
    assert int(width.max()) == 4
    # contiguous windows
    first = (out == 0).int().argmax(1)
    for i in hit.nonzero().squeeze(1)[:50].tolist():
        start, size = int(first[i]), int(width[i])
        assert torch.all(out[i, start : start + size] == 0)


# ------------------------------------------------------ one sample, batch, dtypes


def test_one_sample_and_batch_are_recognised_from_the_mean() -> None:
    mean_tab = torch.zeros(5)
    ablate = MeanAblation(0.5, mean_tab, generator=_gen(0))
    assert ablate(torch.randn(5)).shape == (5,)
    assert ablate(torch.randn(8, 5)).shape == (8, 5)
    images = torch.randn(4, 3, 6, 6)
    per_channel = MeanAblation(0.5, torch.tensor([1.0, 2.0, 3.0]).view(3, 1, 1))
    out = per_channel(images)
    assert out.shape == images.shape
    assert per_channel(images[0]).shape == (3, 6, 6)
    # replaced values are the channel's mean
    for ch in range(3):
        changed = out[:, ch] != images[:, ch]
        assert torch.all(out[:, ch][changed] == ch + 1.0)
    cut = MeanCutout(2, torch.zeros(3, 1, 1), generator=_gen(0))
    assert cut(images[0]).shape == (3, 6, 6)
    assert cut(images).shape == images.shape


def test_generator_determinism_and_global_rng_untouched() -> None:
    x = torch.randn(64, 10)
    for make in (
        lambda g: MeanAblation(0.3, torch.zeros(10), generator=g),
        lambda g: InvertedInputDropout(0.3, generator=g),
        lambda g: MeanCutout(3, torch.zeros(10), p=0.7, generator=g),
    ):
        state = torch.get_rng_state()
        a, b, c = make(_gen(7))(x), make(_gen(7))(x), make(_gen(8))(x)
        assert torch.equal(torch.get_rng_state(), state)
        assert torch.equal(a, b) and not torch.equal(a, c)
        # without a generator the global RNG is used (and is reproducible)
        torch.manual_seed(5)
        d = make(None)(x)
        torch.manual_seed(5)
        assert torch.equal(d, make(None)(x))


def test_same_draws_for_every_dtype_and_input_left_alone() -> None:
    x = torch.randn(32, 7, dtype=torch.float64)
    x_copy = x.clone()
    a64 = MeanAblation(0.4, torch.zeros(7), generator=_gen(1))(x)
    a32 = MeanAblation(0.4, torch.zeros(7), generator=_gen(1))(x.float())
    assert a64.dtype == torch.float64 and a32.dtype == torch.float32
    assert torch.equal(a64 == 0, a32 == 0)
    assert torch.equal(x, x_copy)
    assert MeanAblation(0.0, torch.zeros(7))(x) is x
    assert InvertedInputDropout(0.0)(x) is x
    # the same generator state gives the same mask for both ablations
    d = InvertedInputDropout(0.4, generator=_gen(1))(x)
    assert torch.equal(d == 0, a64 == 0)


def test_module_behaviour() -> None:
    ablate = MeanAblation(0.25, torch.arange(4.0), generator=_gen(0))
    assert "mean" in ablate.state_dict()
    assert ablate.double().mean.dtype == torch.float64
    clone = copy.deepcopy(ablate)
    x = torch.randn(3, 4)
    assert torch.equal(clone(x), ablate(x))
    assert "p=0.25" in repr(ablate) and "(4,)" in repr(ablate)
    assert "p=0.1" in repr(InvertedInputDropout(0.1))
    assert "size=(3,)" in repr(MeanCutout(3, torch.zeros(4)))
    # gradients flow through the kept features
    x.requires_grad_(True)
    InvertedInputDropout(0.5, generator=_gen(0))(x).sum().backward()
    assert x.grad is not None and set(x.grad.unique().tolist()) <= {0.0, 2.0}


# ---------------------------------------------------------------------- from_data


class _PairDataset(Dataset[tuple[torch.Tensor, int]]):
    def __init__(self, x: torch.Tensor) -> None:
        self.x = x

    def __len__(self) -> int:
        return self.x.shape[0]

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.x[i], i % 2


def test_from_data_streams_tensors_datasets_and_loaders() -> None:
    x = torch.randn(301, 3, 4, 4) * 5 + 2
    expected = x.double().mean(0)
    sources = [
        x,
        TensorDataset(x, torch.zeros(301)),
        _PairDataset(x),
        DataLoader(_PairDataset(x), batch_size=32),
        DataLoader(x, batch_size=None),  # yields single samples
        [x[:100], x[100:]],
    ]
    for source in sources:
        ablate = MeanAblation.from_data(source, 0.1, batch_size=64)
        assert ablate.mean.dtype == torch.float32
        torch.testing.assert_close(ablate.mean.double(), expected, atol=1e-5, rtol=0)
    loader = DataLoader(x, batch_size=50)
    per_channel = MeanAblation.from_data(loader, 0.1, reduce_dims=(1, 2))
    assert per_channel.mean.shape == (3, 1, 1)
    channel_means = x.double().mean((0, 2, 3))
    torch.testing.assert_close(
        per_channel.mean.double().flatten(), channel_means, atol=1e-5, rtol=0
    )
    cut = MeanCutout.from_data(_PairDataset(x), size=2, reduce_dims=(1, 2))
    assert cut.mean.shape == (3, 1, 1)
    with pytest.raises(ValueError, match="no examples"):
        MeanAblation.from_data(DataLoader(x[:0], batch_size=4), 0.1)
    with pytest.raises(ValueError, match="share one shape"):
        MeanAblation.from_data([torch.zeros(2, 3), torch.zeros(2, 4)], 0.1)
    with pytest.raises(ValueError, match="reduce_dims"):
        MeanAblation.from_data(x, 0.1, reduce_dims=(3,))
    with pytest.raises(TypeError, match="data"):
        MeanAblation.from_data(42, 0.1)
    with pytest.raises(TypeError, match="first element"):
        MeanAblation.from_data([{"x": x}], 0.1)


# ------------------------------------------------------------------------- errors


@pytest.mark.parametrize("p", [1.0, -0.1, 1.5, float("nan"), float("inf")])
def test_bad_probability_is_refused(p: float) -> None:
    with pytest.raises(ValueError, match=r"`p` must be in \[0, 1\)"):
        MeanAblation(p, torch.zeros(3))
    with pytest.raises(ValueError, match=r"`p` must be in \[0, 1\)"):
        InvertedInputDropout(p)
    with pytest.raises(ValueError, match=r"`p` must be in \[0, 1\)"):
        MeanAblation.from_data(torch.zeros(4, 3), p)


def test_other_bad_arguments_are_refused() -> None:
    for bad in ("0.5", True, None):
        with pytest.raises(TypeError, match="`p`"):
            InvertedInputDropout(bad)  # type: ignore[arg-type]
    MeanCutout(2, torch.zeros(3), p=1.0)  # cutout allows p == 1
    with pytest.raises(ValueError, match=r"`p` must be in \[0, 1\]"):
        MeanCutout(2, torch.zeros(3), p=1.1)
    for size in (0, (2, 0), (1, 2, 3), 2.5):
        with pytest.raises(ValueError, match="`size`"):
            MeanCutout(size, torch.zeros(1, 4, 4))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="one int for one-dimensional"):
        MeanCutout((2, 3), torch.zeros(5))
    with pytest.raises(ValueError, match="0-d"):
        MeanAblation(0.1, torch.tensor(0.0))
    with pytest.raises(TypeError, match="`mean`"):
        MeanAblation(0.1, [0.0, 1.0])  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="generator"):
        MeanAblation(0.1, torch.zeros(2), generator=0)  # type: ignore[arg-type]


def test_shape_mismatch_with_the_mean_is_refused() -> None:
    ablate = MeanAblation(0.2, torch.zeros(5))
    with pytest.raises(ValueError, match=r"does not match samples of shape \(4,\)"):
        ablate(torch.zeros(8, 4))
    with pytest.raises(ValueError, match="one sample with 1 dimensions or a batch"):
        ablate(torch.zeros(2, 3, 5))
    cut = MeanCutout(2, torch.zeros(3, 1, 1))
    with pytest.raises(ValueError, match="does not match"):
        cut(torch.zeros(2, 4, 5, 5))
    # integer tensors are transformed (tests/transforms/test_v2_inputs.py);
    # booleans and complex numbers are not
    with pytest.raises(TypeError, match="floating-point and integer"):
        ablate(torch.zeros(8, 5, dtype=torch.bool))
    with pytest.raises(TypeError, match="floating-point and integer"):
        InvertedInputDropout(0.2)(torch.zeros(3, dtype=torch.complex64))
