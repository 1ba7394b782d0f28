"""fit_patterns: eq. 2 against brute-force loops, check values, streaming, errors."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

from captum_ext.attr import PatternSet, fit_patterns
from captum_ext.data import signal_distractor_data
from tests.helpers import CallCounter, assert_model_unchanged, snapshot

# ---------------------------------------------------------------------------
# brute-force reference: explicit loops over samples, positions and features
# ---------------------------------------------------------------------------


def _linear_samples(layer: nn.Linear, xs: list[Tensor]) -> list[tuple[Any, Any]]:
    """(input vector, output vector) per sample, as Python floats."""
    out = []
    w = layer.weight.detach().double().tolist()
    b = layer.bias.detach().double().tolist() if layer.bias is not None else None
    for x in xs:
        y_layer = layer(x).detach()
        for n in range(x.shape[0]):
            xv = x[n].double().tolist()
            yv = y_layer[n].double().tolist()
            for j in range(len(yv)):  # the layer output is w_j . x + b_j
                ref = sum(wk * xk for wk, xk in zip(w[j], xv)) + (b[j] if b else 0.0)
                assert abs(ref - yv[j]) <= 1e-4 * (1 + abs(ref))
            out.append((xv, yv))
    return out


def _conv_samples(conv: nn.Conv2d, xs: list[Tensor]) -> list[tuple[Any, Any]]:
    """(patch per output channel, output value per channel) per image position.

    Patches are built index by index with the layer's stride, padding,
    dilation and groups; padded positions contribute zeros.
    """
    c_in = conv.in_channels
    c_out = conv.out_channels
    g = conv.groups
    kh, kw = conv.kernel_size
    sh, sw = conv.stride
    dh, dw = conv.dilation
    if conv.padding == "same":
        th, tw = dh * (kh - 1), dw * (kw - 1)
        ph, pw = th // 2, tw // 2
    else:
        ph, pw = conv.padding
    w = conv.weight.detach().double()
    b = conv.bias.detach().double() if conv.bias is not None else None
    out = []
    for x in xs:
        y = conv(x).detach().double()
        xd = x.double()
        n_img, _, h, wd = xd.shape
        for n in range(n_img):
            for i in range(y.shape[2]):
                for j in range(y.shape[3]):
                    patches, values = [], []
                    for o in range(c_out):
                        grp = o // (c_out // g)
                        patch = []
                        for c in range(grp * c_in // g, (grp + 1) * c_in // g):
                            for a in range(kh):
                                for bb in range(kw):
                                    r = i * sh - ph + a * dh
                                    s = j * sw - pw + bb * dw
                                    inside = 0 <= r < h and 0 <= s < wd
                                    patch.append(
                                        float(xd[n, c, r, s]) if inside else 0.0
                                    )
                        value = float(y[n, o, i, j])
                        w_o = w[o].reshape(-1).tolist()
                        ref = sum(wk * pk for wk, pk in zip(w_o, patch))
                        ref += float(b[o]) if b is not None else 0.0
                        assert abs(ref - value) <= 1e-4 * (1 + abs(ref))
                        patches.append(patch)
                        values.append(value)
                    out.append((patches, values))
    return out


def _brute_force_pattern(
    samples: list[tuple[Any, Any]], weight: Tensor, kind: str
) -> Tensor:
    """Eq. 2 with plain Python sums over the samples."""
    d_out = weight.shape[0]
    w = weight.detach().double().reshape(d_out, -1).tolist()
    rows = []
    for j in range(d_out):
        k_len = len(w[j])
        count, n_all, sum_y = 0, 0, 0.0
        sum_x = [0.0] * k_len
        sum_xy = [0.0] * k_len
        for xv, yv in samples:
            x_j = xv[j] if isinstance(xv[0], list) else xv  # conv: patch per channel
            y_j = yv[j]
            n_all += 1
            sum_y += y_j
            if kind == "linear" or y_j > 0:
                count += 1
                for k in range(k_len):
                    sum_x[k] += x_j[k]
                    sum_xy[k] += x_j[k] * y_j
        count = count or 1
        mean_y = sum_y / n_all
        num = [sum_xy[k] / count - sum_x[k] / count * mean_y for k in range(k_len)]
        den = sum(w[j][k] * num[k] for k in range(k_len)) or 1.0
        rows.append([v / den for v in num])
    return torch.tensor(rows, dtype=torch.float64).reshape(weight.shape)


def _assert_rel(got: Tensor, ref: Tensor, rtol: float) -> None:
    got = got.double()
    scale = float(ref.abs().max())
    err = float((got - ref).abs().max())
    assert err <= rtol * scale, f"max error {err:.3g} > {rtol:g} x {scale:.3g}"


def _batches(
    shape: tuple[int, ...], n_batches: int, seed: int, dtype: torch.dtype
) -> list[Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return [
        torch.randn(shape, generator=gen, dtype=dtype) + 0.3 for _ in range(n_batches)
    ]


@pytest.mark.parametrize("kind", ["relu", "linear"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_linear_equals_brute_force(kind: str, dtype: torch.dtype) -> None:
    torch.manual_seed(0)
    layer = nn.Linear(5, 4).to(dtype)
    xs = _batches((13, 5), 3, seed=1, dtype=dtype)
    ref = _brute_force_pattern(_linear_samples(layer, xs), layer.weight, kind)
    # float64 products (the default for float64 layers, opt-in for float32)
    got = fit_patterns(layer, xs, kind=kind, compute_dtype=torch.float64)[""]
    assert got.shape == layer.weight.shape and got.dtype == dtype
    _assert_rel(got, ref, 1e-6)
    if dtype == torch.float32:  # the default float32 kernels
        _assert_rel(fit_patterns(layer, xs, kind=kind)[""], ref, 1e-5)


CONV_CASES = {
    "strided-padded": dict(kernel_size=3, stride=2, padding=1),
    "dilated-padded": dict(kernel_size=3, stride=1, padding=2, dilation=2),
    "rect-stride": dict(kernel_size=(2, 3), stride=(2, 1), padding=(1, 0)),
    "same-even-kernel": dict(kernel_size=2, padding="same"),
    "groups": dict(kernel_size=3, stride=2, padding=1, groups=2),
}


@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel")
@pytest.mark.parametrize("kind", ["relu", "linear"])
@pytest.mark.parametrize("case", list(CONV_CASES), ids=list(CONV_CASES))
def test_conv2d_equals_brute_force(kind: str, case: str) -> None:
    torch.manual_seed(0)
    conv = nn.Conv2d(2, 4, **CONV_CASES[case]).double()  # type: ignore[arg-type]
    xs = _batches((2, 2, 6, 5), 2, seed=2, dtype=torch.float64)
    ref = _brute_force_pattern(_conv_samples(conv, xs), conv.weight, kind)
    got = fit_patterns(conv, xs, kind=kind)[""]
    assert got.shape == conv.weight.shape
    _assert_rel(got, ref, 1e-6)


def test_conv2d_float32_default_and_float64_products() -> None:
    torch.manual_seed(0)
    conv = nn.Conv2d(2, 3, 3, stride=2, padding=1)
    xs = _batches((3, 2, 7, 7), 2, seed=3, dtype=torch.float32)
    ref = _brute_force_pattern(_conv_samples(conv, xs), conv.weight, "relu")
    _assert_rel(fit_patterns(conv, xs, compute_dtype=torch.float64)[""], ref, 1e-6)
    _assert_rel(fit_patterns(conv, xs)[""], ref, 1e-5)


def test_float32_products_are_well_conditioned_for_offset_data() -> None:
    # inputs far from zero mean: the per-batch centring keeps float32 accurate
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(6 * 36, 4)
    ).eval()
    data = [torch.randn(16, 3, 6, 6) + 1000.0 for _ in range(4)]
    p32 = fit_patterns(model, data)
    p64 = fit_patterns(model, data, compute_dtype=torch.float64)
    for name in p64:
        _assert_rel(p32[name], p64[name].double(), 1e-4)


# ---------------------------------------------------------------------------
# check values of the PGIG reference notebook (numpy seed 42)
# ---------------------------------------------------------------------------


def _reference_noise(n: int = 400) -> Tensor:
    # np.random.seed(42); np.random.normal(0, 0.3, 400) of the notebook
    return torch.from_numpy(np.random.RandomState(42).normal(0.0, 0.3, n))


def test_linear_pattern_check_value() -> None:
    data = signal_distractor_data(
        endpoint=False, eps=_reference_noise(), dtype=torch.float64
    )
    model = nn.Linear(2, 1, bias=False).double()
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[1.0, -1.0]]))
    linear = fit_patterns(model, [data.x], kind="linear")[""]
    # REFERENCE_NOTES: linear pattern of the synthetic data ~ [1.018, 0.018]
    torch.testing.assert_close(
        linear, torch.tensor([[1.018, 0.018]], dtype=torch.float64), atol=5e-4, rtol=0
    )
    # for w = (1, -1): a = (1 + r, r), the pattern points along the signal (1, 0)
    assert abs(linear[0, 0] - linear[0, 1] - 1.0) < 1e-12
    # the notebook's printed value uses the positive regime of the same model
    relu = fit_patterns(model, [data.x], kind="relu")[""]
    torch.testing.assert_close(
        relu,
        torch.tensor([[1.01835493, 0.01835493]], dtype=torch.float64),
        atol=1e-5,
        rtol=0,
    )


def test_saturating_net_patterns_and_the_references_value() -> None:
    data = signal_distractor_data(
        endpoint=False, eps=_reference_noise(), dtype=torch.float64
    )
    net = nn.Sequential(nn.Linear(2, 1), nn.ReLU(), nn.Linear(1, 1)).double()
    with torch.no_grad():
        net[0].weight.copy_(torch.tensor([[-1.0, 1.0]]))
        net[0].bias.fill_(1.0)
        net[2].weight.fill_(-1.0)
        net[2].bias.fill_(1.0)
    patterns = fit_patterns(net.eval(), [data.x])
    # layer 2: h = ReLU(1 - z), y = 1 - h, so cov(h, y) = -var(h): a = -1 exactly
    torch.testing.assert_close(
        patterns["2"], torch.tensor([[-1.0]], dtype=torch.float64)
    )
    # layer 1, eq. 2 over the positive regime 1 - z > 0, by hand in float64
    x = data.x
    w = torch.tensor([-1.0, 1.0], dtype=torch.float64)
    y = x @ w + 1.0
    pos = y > 0
    num = (x[pos] * y[pos, None]).mean(0) - x[pos].mean(0) * y.mean()
    expected = num / (w @ num)
    torch.testing.assert_close(patterns["0"][0], expected)
    torch.testing.assert_close(
        patterns["0"],
        torch.tensor([[-1.0162, -0.0162]], dtype=torch.float64),
        atol=1e-4,
        rtol=0,
    )
    # REFERENCE_NOTES quote [-1.003, -0.003] from the pgig notebook: there
    # np.mean(x_plus * y_plus) broadcasts a (n,) by an (n, 1) array, so
    # E+[xy] becomes E+[x] E+[y] and the pattern E+[x] / w^T E+[x]. Our data
    # reproduce that number with that formula; the correct estimator differs.
    buggy = x[pos].mean(0) / (w @ x[pos].mean(0))
    torch.testing.assert_close(
        buggy, torch.tensor([-1.0033, -0.0033], dtype=torch.float64), atol=1e-4, rtol=0
    )


# ---------------------------------------------------------------------------
# streaming, data formats, max_batches, multi-input models
# ---------------------------------------------------------------------------


def _small_cnn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 3, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(3 * 4 * 4, 5),
    ).eval()


def test_batching_does_not_change_patterns() -> None:
    model = _small_cnn().double()
    x = torch.randn(60, 1, 8, 8, dtype=torch.float64)
    one = fit_patterns(model, [x])
    loader = DataLoader(TensorDataset(x, torch.zeros(60)), batch_size=7)
    many = fit_patterns(model, loader)
    as_list = fit_patterns(model, [x[i : i + 11] for i in range(0, 60, 11)])
    assert one.num_examples == many.num_examples == 60
    for name in one:
        torch.testing.assert_close(many[name], one[name], rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(as_list[name], one[name], rtol=1e-10, atol=1e-12)


def test_max_batches_and_progress(capsys: pytest.CaptureFixture[str]) -> None:
    model = _small_cnn()
    xs = [torch.randn(8, 1, 8, 8) for _ in range(5)]
    first_two = fit_patterns(model, xs[:2])
    limited = fit_patterns(model, iter(xs), max_batches=2, show_progress=True)
    assert limited.num_examples == 16
    for name in first_two:
        torch.testing.assert_close(limited[name], first_two[name])
    assert "fit patterns" in capsys.readouterr().err


def test_tuple_items_use_their_first_element() -> None:
    model = _small_cnn()
    xs = [torch.randn(8, 1, 8, 8) for _ in range(3)]
    plain = fit_patterns(model, xs)
    tuples = fit_patterns(model, [(x, torch.arange(8), "meta") for x in xs])
    for name in plain:
        torch.testing.assert_close(tuples[name], plain[name])


class _TwoInputs(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(3, 4)
        self.b = nn.Linear(2, 4)
        self.out = nn.Linear(4, 2)

    def forward(self, x1: Tensor, x2: Tensor, scale: float) -> Tensor:
        return self.out(torch.relu(self.a(x1) + self.b(x2))) * scale


def test_unpack_batch_for_multi_input_models() -> None:
    torch.manual_seed(0)
    model = _TwoInputs().double()
    data = [(torch.randn(9, 3).double(), torch.randn(9, 2).double()) for _ in range(3)]
    patterns = fit_patterns(model, data, unpack_batch=lambda b: (b[0], b[1], 2.0))
    assert set(patterns) == {"a", "b", "out"}
    # layer "a" alone, from its own inputs and outputs
    xs = [b[0] for b in data]
    ref = _brute_force_pattern(_linear_samples(model.a, xs), model.a.weight, "relu")
    _assert_rel(patterns["a"], ref, 1e-6)


def test_only_selected_layers_and_unused_layers() -> None:
    model = _small_cnn()
    xs = [torch.randn(8, 1, 8, 8)]
    by_name = fit_patterns(model, xs, layers=["4"])
    by_module = fit_patterns(model, xs, layers=[model[4]])
    assert list(by_name) == list(by_module) == ["4"]
    torch.testing.assert_close(by_name["4"], fit_patterns(model, xs)["4"])

    class WithUnused(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.used = nn.Linear(3, 2)
            self.unused = nn.Linear(3, 2)

        def forward(self, x: Tensor) -> Tensor:
            return self.used(x)

    net = WithUnused()
    assert list(fit_patterns(net, [torch.randn(4, 3)])) == ["used"]
    with pytest.raises(ValueError, match="unused"):
        fit_patterns(net, [torch.randn(4, 3)], layers=["unused"])


def test_zero_count_gives_zero_pattern() -> None:
    # an output unit that is never positive: zero count -> pattern 0 (no NaN)
    layer = nn.Linear(3, 2).double()
    with torch.no_grad():
        layer.bias.copy_(torch.tensor([0.0, -1e6]))
    got = fit_patterns(layer, [torch.randn(10, 3, dtype=torch.float64)])[""]
    assert torch.isfinite(got).all()
    assert torch.equal(got[1], torch.zeros(3, dtype=torch.float64))


# ---------------------------------------------------------------------------
# model left alone, bad input refused before work
# ---------------------------------------------------------------------------


def _counting_mlp() -> CallCounter:
    return CallCounter(nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2)))


def test_model_unchanged_also_after_an_error_mid_way() -> None:
    model = _counting_mlp().eval()
    state = snapshot(model)
    fit_patterns(model, [torch.randn(5, 4) for _ in range(3)])
    assert_model_unchanged(state, model)
    # the third item is malformed: TypeError after two forward passes
    with pytest.raises(TypeError, match="data"):
        fit_patterns(model, [torch.randn(5, 4), torch.randn(5, 4), {"x": 1}])
    assert_model_unchanged(state, model)


@pytest.mark.parametrize(
    "kwargs,error,match",
    [
        (dict(kind="tanh"), ValueError, "kind"),
        (dict(max_batches=0), ValueError, "max_batches"),
        (dict(layers=["nope"]), ValueError, "layers"),
        (dict(layers="model.0"), TypeError, "layers"),
        (dict(layers=["model.1"]), ValueError, "ReLU"),
        (dict(process_group="world"), ValueError, "process_group"),
        (dict(process_group=object()), ValueError, "not initialised"),
        (dict(unpack_batch=3), TypeError, "unpack_batch"),
        (dict(compute_dtype=torch.float16), ValueError, "compute_dtype"),
    ],
)
def test_bad_arguments_refused_before_any_forward(
    kwargs: dict[str, Any], error: type, match: str
) -> None:
    model = _counting_mlp()
    with pytest.raises(error, match=match):
        fit_patterns(model, [torch.randn(5, 4)], **kwargs)
    assert model.calls == 0


def test_bad_data_refused() -> None:
    model = _counting_mlp()
    with pytest.raises(TypeError, match="data"):
        fit_patterns(model, torch.randn(5, 4))  # a tensor is not a list of batches
    with pytest.raises(TypeError, match="data"):
        fit_patterns(model, 3)  # type: ignore[arg-type]
    assert model.calls == 0
    with pytest.raises(ValueError, match="no batches"):
        fit_patterns(model, [])
    with pytest.raises(TypeError, match="first"):
        fit_patterns(model, [("not a tensor", torch.randn(5, 4))])


def test_unsupported_layers_refused() -> None:
    with pytest.raises(ValueError, match=r"'1' .LayerNorm.*not a fixed linear map"):
        fit_patterns(
            nn.Sequential(nn.Linear(3, 3), nn.LayerNorm(3)), [torch.randn(4, 3)]
        )
    with pytest.raises(ValueError, match=r"'0' .ConvTranspose1d"):
        fit_patterns(nn.Sequential(nn.ConvTranspose1d(1, 1, 3)), [torch.randn(4, 1, 9)])
    with pytest.raises(ValueError, match="track_running_stats"):
        fit_patterns(
            nn.Sequential(
                nn.Linear(3, 3), nn.BatchNorm1d(3, track_running_stats=False)
            ),
            [torch.randn(4, 3)],
        )
    with pytest.raises(ValueError, match="padding_mode"):
        fit_patterns(
            nn.Conv2d(1, 1, 3, padding=1, padding_mode="reflect"),
            [torch.randn(2, 1, 5, 5)],
        )
    with pytest.raises(TypeError, match="Module"):
        fit_patterns(lambda x: x, [torch.randn(2, 3)])  # type: ignore[arg-type]


def test_dropout_in_training_mode_warns() -> None:
    model = nn.Sequential(nn.Linear(3, 3), nn.Dropout(0.5), nn.Linear(3, 2))
    with pytest.warns(UserWarning, match="eval"):
        fit_patterns(model, [torch.randn(6, 3)])
    assert model.training  # not switched by us


# ---------------------------------------------------------------------------
# PatternSet
# ---------------------------------------------------------------------------


def test_pattern_set_round_trip(tmp_path: Any) -> None:
    model = _small_cnn()
    patterns = fit_patterns(model, [torch.randn(8, 1, 8, 8)], kind="linear")
    path = tmp_path / "patterns.pt"
    patterns.save(path)
    # plain torch.load with weights_only=True reads it
    raw = torch.load(path, weights_only=True)
    assert raw["format_version"] == PatternSet.FORMAT_VERSION
    loaded = PatternSet.load(path)
    assert loaded.kind == "linear" and loaded.num_examples == 8
    assert list(loaded) == list(patterns)
    for name in patterns:
        assert torch.equal(loaded[name], patterns[name])
    other = PatternSet({})
    other.load_state_dict(patterns.state_dict())
    assert set(other) == set(patterns)
    assert "PatternSet(kind='linear'" in repr(loaded)


def test_pattern_set_refuses_bad_states(tmp_path: Any) -> None:
    state = PatternSet({"a": torch.ones(2, 2)}).state_dict()
    with pytest.raises(ValueError, match="newer"):
        PatternSet({}).load_state_dict({**state, "format_version": 99})
    with pytest.raises(ValueError, match="not a PatternSet"):
        PatternSet({}).load_state_dict({"a": torch.ones(2)})
    missing = {k: v for k, v in state.items() if k != "patterns"}
    with pytest.raises(ValueError, match="patterns"):
        PatternSet({}).load_state_dict(missing)
    with pytest.raises(TypeError, match="patterns"):
        PatternSet({"a": [1.0, 2.0]})  # type: ignore[dict-item]
    with pytest.raises(ValueError, match="kind"):
        PatternSet({}, kind="sigmoid")
    # a file that is not a tensor-only pickle is refused by weights_only
    path = tmp_path / "evil.pt"
    torch.save({"format": "captum_ext.PatternSet", "obj": object()}, path)
    with pytest.raises(Exception, match=r"[Ww]eights.only"):
        PatternSet.load(path)


def test_pattern_set_check_names_and_shapes() -> None:
    model = _small_cnn()
    patterns = fit_patterns(model, [torch.randn(8, 1, 8, 8)])
    assert list(patterns.check(model)) == ["0", "4"]
    wider = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(64, 5),
    )
    with pytest.raises(ValueError, match="shape"):
        patterns.check(wider)
    renamed = nn.Sequential()
    renamed.add_module("conv", nn.Conv2d(1, 3, 3, padding=1))
    with pytest.raises(ValueError, match="'0'"):
        patterns.check(renamed)
    assert math.isfinite(float(patterns["0"].sum()))
