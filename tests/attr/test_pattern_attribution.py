"""PatternNet / PatternAttribution: the pattern backward against hand-written ones."""

from __future__ import annotations

import copy
import math
import warnings
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from captum.attr import Saliency
from torch import Tensor, nn

from captum_ext.attr import PatternAttribution, PatternNet, PatternSet, fit_patterns
from tests.helpers import assert_model_unchanged, snapshot


def _ones_like_weights(model: nn.Module) -> PatternSet:
    return PatternSet(
        {
            n: torch.ones_like(m.weight)
            for n, m in model.named_modules()
            if isinstance(m, (nn.Linear, nn.Conv2d))
        }
    )


def _cnn() -> nn.Sequential:
    torch.manual_seed(0)
    return (
        nn.Sequential(
            nn.Conv2d(1, 4, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(4, 6, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(6 * 4 * 4, 8),
            nn.ReLU(),
            nn.Linear(8, 3),
        )
        .double()
        .eval()
    )


def _fit(model: nn.Module, shape: tuple[int, ...], seed: int = 1) -> PatternSet:
    gen = torch.Generator().manual_seed(seed)
    data = [torch.randn(shape, generator=gen, dtype=torch.float64) for _ in range(4)]
    return fit_patterns(model, data)


def test_single_linear_layer_closed_form() -> None:
    torch.manual_seed(0)
    layer = nn.Linear(4, 3).double()
    patterns = _fit(layer, (20, 4))
    a, w = patterns[""], layer.weight.detach()
    x = torch.randn(5, 4, dtype=torch.float64)
    target = [0, 2, 1, 1, 0]
    y_c = layer(x).detach()[torch.arange(5), target]
    pa = PatternAttribution(layer, patterns).attribute(x, target=target)
    pn = PatternNet(layer, patterns).attribute(x, target=target)
    # backward from the logit's value y_c: PA = y_c (w * a)_c, PatternNet = y_c a_c
    torch.testing.assert_close(pa, y_c[:, None] * (w * a)[target])
    torch.testing.assert_close(pn, y_c[:, None] * a[target])


def _manual_backward(
    model: nn.Sequential, x: Tensor, target: list[int], b: dict[str, Tensor]
) -> Tensor:
    """The pattern backward of ``_cnn`` written out op by op.

    Gates (ReLU masks, max-pool indices) come from the forward pass with the
    model's weights; each layer maps the gradient back with ``b[name]``.
    """
    h1 = model[0](x)
    h2 = model[2](torch.relu(h1))
    r2 = torch.relu(h2)
    pooled, idx = F.max_pool2d(r2, 2, return_indices=True)
    h3 = model[6](pooled.flatten(1))
    out = model[8](torch.relu(h3))
    y_c = out[torch.arange(x.shape[0]), target]
    g = torch.zeros_like(out)
    g[torch.arange(x.shape[0]), target] = y_c  # start signal: the logit's value
    g = (g @ b["8"]) * (h3 > 0)
    g = (g @ b["6"]).view_as(pooled)
    g = F.max_unpool2d(g, idx, 2, output_size=r2.shape[2:]) * (h2 > 0)
    g = F.conv_transpose2d(g, b["2"], padding=1) * (h1 > 0)
    return F.conv_transpose2d(g, b["0"], padding=1).detach()


def test_cnn_pattern_backward_equals_manual_backward() -> None:
    model = _cnn()
    patterns = _fit(model, (16, 1, 8, 8))
    x = torch.randn(3, 1, 8, 8, dtype=torch.float64)
    target = [2, 0, 1]
    weights = {n: m.weight.detach() for n, m in model.named_modules() if n in patterns}
    pa_ref = _manual_backward(
        model, x, target, {n: weights[n] * patterns[n] for n in patterns}
    )
    pn_ref = _manual_backward(model, x, target, dict(patterns))
    pa = PatternAttribution(model, patterns).attribute(x, target=target)
    pn = PatternNet(model, patterns).attribute(x, target=target)
    torch.testing.assert_close(pa, pa_ref)
    torch.testing.assert_close(pn, pn_ref)
    assert pa.abs().sum() > 0 and not torch.allclose(pa, pn)


def test_unit_patterns_give_output_times_gradient() -> None:
    # A = 1: W * A = W, so PatternAttribution is y_c times Captum's gradient
    model = _cnn()
    x = torch.randn(4, 1, 8, 8, dtype=torch.float64)
    target = torch.tensor([0, 1, 2, 1])
    pa = PatternAttribution(model, _ones_like_weights(model)).attribute(
        x, target=target
    )
    grad = Saliency(model).attribute(x, target=target, abs=False)
    y_c = model(x).detach().gather(1, target[:, None])
    torch.testing.assert_close(pa, y_c[:, :, None, None] * grad)


class _Functional(nn.Module):
    """Functional ReLU / max-pool, in-place ReLU, and a layer used twice."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 3, 3, padding=1)
        self.shared = nn.Linear(12, 12)
        self.head = nn.Linear(12, 2)

    def forward(self, x: Tensor) -> Tensor:
        h = F.relu(self.conv(x), inplace=True)
        h = F.max_pool2d(h, 2).flatten(1)
        h = torch.relu(self.shared(h))
        h = torch.relu(self.shared(h))  # weight sharing: the rule applies twice
        return self.head(h)


def test_arbitrary_modules_with_functional_ops() -> None:
    torch.manual_seed(0)
    model = _Functional().double().eval()
    x = torch.randn(3, 2, 4, 4, dtype=torch.float64)
    grad = Saliency(model).attribute(x, target=1, abs=False)
    y_c = model(x).detach()[:, 1]
    pa = PatternAttribution(model, _ones_like_weights(model)).attribute(x, target=1)
    torch.testing.assert_close(pa, y_c[:, None, None, None] * grad)
    patterns = _fit(model, (10, 2, 4, 4))
    state = snapshot(model)
    out = PatternAttribution(model, patterns).attribute(x, target=1)
    assert_model_unchanged(state, model)
    assert out.shape == x.shape and torch.isfinite(out).all()


def test_implementation_invariance_counter_example() -> None:
    """The pgig camera-ready notebook: two functionally equal nets, different PA.

    f'(x) = ReLU(1 * ReLU(w^T x) - 1) and f''(x) = ReLU(w^T x - 1), w = (1, 2),
    patterns fitted on x1 ~ N(0, 0.7), x2 = +-x1 (5000 samples, numpy seed 42),
    explained at x = (3, 3): PA [1.634, 6.366] vs [2.092, 5.908].
    """
    rs = np.random.RandomState(42)
    x1 = rs.normal(size=5000, loc=0.0, scale=0.7)
    flip = rs.choice(a=[False, True], size=5000, p=[0.5, 0.5])
    data = torch.from_numpy(np.stack([x1, np.where(flip, x1, -x1)], axis=1))

    first = nn.Linear(2, 1, bias=False).double()
    second = nn.Linear(1, 1).double()
    single = nn.Linear(2, 1).double()
    with torch.no_grad():
        first.weight.copy_(torch.tensor([[1.0, 2.0]]))
        second.weight.fill_(1.0)
        second.bias.fill_(-1.0)
        single.weight.copy_(torch.tensor([[1.0, 2.0]]))
        single.bias.fill_(-1.0)
    net1 = nn.Sequential(first, nn.ReLU(), second, nn.ReLU()).eval()
    net2 = nn.Sequential(single, nn.ReLU()).eval()
    x = torch.tensor([[3.0, 3.0]], dtype=torch.float64)
    assert torch.equal(net1(x), net2(x))
    pa1 = PatternAttribution(net1, fit_patterns(net1, [data])).attribute(x, target=0)
    pa2 = PatternAttribution(net2, fit_patterns(net2, [data])).attribute(x, target=0)
    torch.testing.assert_close(
        pa1, torch.tensor([[1.6343, 6.3657]], dtype=torch.float64), atol=1e-4, rtol=0
    )
    torch.testing.assert_close(
        pa2, torch.tensor([[2.0919, 5.9081]], dtype=torch.float64), atol=1e-4, rtol=0
    )


def test_tuple_inputs_and_additional_forward_args() -> None:
    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b, self.out = nn.Linear(3, 4), nn.Linear(2, 4), nn.Linear(4, 2)

        def forward(self, x1: Tensor, x2: Tensor, scale: Tensor) -> Tensor:
            return self.out(torch.relu(self.a(x1) + self.b(x2))) * scale

    torch.manual_seed(0)
    net = Net().double().eval()
    x1, x2 = torch.randn(5, 3).double(), torch.randn(5, 2).double()
    scale = torch.rand(5, 1).double() + 0.5
    patterns = fit_patterns(net, [(x1, x2, scale)], unpack_batch=lambda b: b)
    got = PatternAttribution(net, patterns).attribute(
        (x1, x2), target=1, additional_forward_args=(scale,)
    )
    assert (
        isinstance(got, tuple) and got[0].shape == x1.shape and got[1].shape == x2.shape
    )
    # by hand: the ReLU gate on a(x1) + b(x2), start signal y_1
    h = net.a(x1) + net.b(x2)
    y1 = net(x1, x2, scale)[:, 1].detach()
    g = (y1[:, None] * scale * (net.out.weight * patterns["out"])[1]) * (h > 0)
    torch.testing.assert_close(got[0], (g @ (net.a.weight * patterns["a"])).detach())
    torch.testing.assert_close(got[1], (g @ (net.b.weight * patterns["b"])).detach())


def test_softmax_warnings() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 4), nn.Softmax(dim=1)).eval()
    patterns = fit_patterns(net, [torch.randn(8, 3)])
    with pytest.warns(UserWarning, match="softmax"):
        PatternAttribution(net, patterns)

    class Functional(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(3, 4)

        def forward(self, x: Tensor) -> Tensor:
            return torch.softmax(self.fc(x), dim=1)

    fnet = Functional().eval()
    method = PatternNet(fnet, fit_patterns(fnet, [torch.randn(8, 3)]))
    with pytest.warns(UserWarning, match="softmax"):
        method.attribute(torch.randn(2, 3), target=0)
    logits = nn.Sequential(nn.Linear(3, 4)).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        PatternNet(logits, fit_patterns(logits, [torch.randn(8, 3)])).attribute(
            torch.randn(2, 3), target=0
        )


def test_mismatched_patterns_are_refused() -> None:
    model = _cnn()
    patterns = _fit(model, (8, 1, 8, 8))
    with pytest.raises(TypeError, match="PatternSet"):
        PatternAttribution(model, dict(patterns))  # type: ignore[arg-type]
    other = nn.Sequential(
        nn.Conv2d(1, 5, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(320, 3)
    )
    with pytest.raises(ValueError, match="shape"):
        PatternAttribution(other, PatternSet({"0": patterns["0"]}))
    with pytest.raises(ValueError, match="'9'"):
        PatternNet(model, PatternSet({**patterns, "9": torch.ones(1)}))
    with pytest.raises(ValueError, match=r"'1' .GroupNorm"):
        PatternAttribution(
            nn.Sequential(nn.Conv2d(1, 2, 3), nn.GroupNorm(1, 2)), PatternSet({})
        )


def test_called_layer_without_pattern_raises_and_leaves_model_unchanged() -> None:
    model = _cnn()
    patterns = _fit(model, (8, 1, 8, 8))
    partial = PatternSet({n: p for n, p in patterns.items() if n != "6"})
    method = PatternAttribution(model, partial)
    state = snapshot(model)
    with pytest.raises(ValueError, match="'6'"):
        method.attribute(torch.randn(2, 1, 8, 8, dtype=torch.float64), target=0)
    assert_model_unchanged(state, model)


def test_weights_never_swapped_and_no_grad_left() -> None:
    model = _cnn()
    for p in model.parameters():
        p.grad = None
    patterns = _fit(model, (8, 1, 8, 8))
    state = snapshot(model)
    x = torch.randn(2, 1, 8, 8, dtype=torch.float64, requires_grad=True)
    with torch.no_grad():
        out = PatternAttribution(model, patterns).attribute(x, target=1)
    assert not out.requires_grad and x.grad is None
    assert_model_unchanged(state, model)


@pytest.mark.parametrize("cls", [PatternNet, PatternAttribution])
def test_bad_target_type_refused(cls: Any) -> None:
    model = _cnn()
    method = cls(model, _fit(model, (8, 1, 8, 8)))
    with pytest.raises(TypeError, match="target"):
        method.attribute(torch.randn(2, 1, 8, 8, dtype=torch.float64), target=0.5)
    with pytest.raises(AssertionError):
        method.attribute(torch.randn(2, 1, 8, 8, dtype=torch.float64))  # no target
    assert method.multiplies_by_inputs is False


# ---------------------------------------------------------------------------
# real architectures: rules of gated activations, gates, refusals, finiteness
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("act", [nn.SiLU(), nn.Hardswish(inplace=True), nn.GELU()])
def test_gated_activation_rule_multiplies_by_the_gate(act: nn.Module) -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 4), act, nn.Linear(4, 1)).double().eval()
    patterns = _fit(net, (64, 3))
    x = torch.randn(5, 3, dtype=torch.float64)
    got = PatternAttribution(net, patterns).attribute(x)
    b1 = net[0].weight.detach() * patterns["0"]
    b2 = net[2].weight.detach() * patterns["2"]
    z = x @ net[0].weight.detach().T + net[0].bias.detach()
    # the gate g(z) = f(z) / z of x * g(x), written out per activation
    if isinstance(act, nn.SiLU):
        gate = torch.sigmoid(z)
    elif isinstance(act, nn.Hardswish):
        gate = torch.clamp(z + 3.0, 0.0, 6.0) / 6.0
    else:
        gate = 0.5 * (1.0 + torch.erf(z / math.sqrt(2.0)))
    y = net(x).detach()
    expected = y * ((b2 * gate) @ b1)
    torch.testing.assert_close(got, expected)


def test_squeeze_excitation_scale_is_a_constant_gate() -> None:
    ops = pytest.importorskip("torchvision.ops")
    torch.manual_seed(0)
    net = (
        nn.Sequential(
            nn.Conv2d(2, 4, 1),
            nn.ReLU(),
            ops.SqueezeExcitation(4, 2),
            nn.Flatten(),
            nn.Linear(4 * 3 * 3, 1),
        )
        .double()
        .eval()
    )
    patterns = _fit(net, (32, 2, 3, 3))
    # the layers computing the scale get no pattern (no gradient reaches them)
    assert set(patterns) == {"0", "4"}
    x = torch.randn(3, 2, 3, 3, dtype=torch.float64)
    got = PatternAttribution(net, patterns).attribute(x)
    with torch.no_grad():
        h = torch.relu(net[0](x))
        scale = net[2]._scale(h)  # (N, 4, 1, 1), a constant gate
        y = net(x)
    b_lin = (net[4].weight * patterns["4"]).detach().reshape(4, 3, 3)
    g_h = y[:, :, None, None] * b_lin[None] * scale * (h > 0)
    b_conv = (net[0].weight * patterns["0"]).detach()[:, :, 0, 0]  # (4, 2)
    expected = torch.einsum("nohw,oi->nihw", g_h, b_conv)
    torch.testing.assert_close(got, expected)


class _Attention(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(4, 4)
        self.attn = nn.MultiheadAttention(4, 1, batch_first=True)

    def forward(self, x: Tensor) -> Tensor:
        h = self.proj(x)
        return self.attn(h, h, h)[0].sum(dim=(1, 2))


def _count_forwards(model: nn.Module) -> list[int]:
    calls = [0]
    model.register_forward_pre_hook(lambda m, a: calls.__setitem__(0, calls[0] + 1))
    return calls


def test_transformers_and_layernorm_refused_before_any_forward() -> None:
    torchvision = pytest.importorskip("torchvision")
    vit = torchvision.models.VisionTransformer(
        image_size=32, patch_size=8, num_layers=1, num_heads=2, hidden_dim=8, mlp_dim=8
    ).eval()
    calls = _count_forwards(vit)
    msg = r"'encoder\.layers\.encoder_layer_0\.ln_1' \(LayerNorm\).*not a fixed linear"
    with pytest.raises(ValueError, match=msg):
        fit_patterns(vit, [torch.randn(2, 3, 32, 32)])
    with pytest.raises(ValueError, match=msg):
        PatternAttribution(vit, PatternSet({}))
    assert calls[0] == 0
    attention = _Attention()
    calls = _count_forwards(attention)
    with pytest.raises(ValueError, match=r"'attn' \(MultiheadAttention\).*attention"):
        fit_patterns(attention, [torch.randn(2, 3, 4)])
    with pytest.raises(ValueError, match=r"'attn' \(MultiheadAttention\)"):
        PatternNet(attention, PatternSet({}))
    assert calls[0] == 0


@pytest.mark.parametrize(
    "arch", ["resnet18", "vgg11_bn", "mobilenet_v3_small", "efficientnet_b0"]
)
def test_finite_attributions_on_torchvision_models(arch: str) -> None:
    torchvision = pytest.importorskip("torchvision")
    from captum_ext.attr import PatternGuidedIG

    torch.manual_seed(0)
    model = getattr(torchvision.models, arch)(weights=None, num_classes=10).eval()
    state = snapshot(model)
    data = [torch.randn(4, 3, 32, 32)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # ill-conditioned layers
        patterns = fit_patterns(model, data)
    x = data[0][:2]
    target = model(x).argmax(1)
    pa = PatternAttribution(model, patterns).attribute(x, target=target)
    pgig = PatternGuidedIG(model, patterns).attribute(x, target=target, n_steps=2)
    for attr in (pa, pgig):
        assert attr.shape == x.shape and bool(torch.isfinite(attr).all())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        signal = PatternNet(model, patterns).attribute(x, target=target)
    # PatternNet multiplies the patterns over the layers: either finite, or
    # a warning says it is not -- never a silent non-finite map
    if not bool(torch.isfinite(signal).all()):
        assert any("non-finite" in str(w.message) for w in caught)
    assert_model_unchanged(state, model)


def test_patternnet_compute_dtype_float64_is_the_manual_backward() -> None:
    model64 = _cnn()
    patterns = _fit(model64, (16, 1, 8, 8))
    model = _cnn().float()
    state = snapshot(model)
    x = torch.randn(3, 1, 8, 8, generator=torch.Generator().manual_seed(4)).float()
    target = [2, 0, 1]
    pn = PatternNet(model, patterns, compute_dtype=torch.float64)
    out = pn.attribute(x, target=target)
    assert out.dtype == torch.float64
    # the float32 model's weights and the patterns as the float32 model uses
    # them, every operation in float64
    ref = _manual_backward(
        copy.deepcopy(model).double(),
        x.double(),
        target,
        {n: p.float().double() for n, p in patterns.items()},
    )
    torch.testing.assert_close(out, ref)
    # float32 computation: the same signal up to float32 rounding
    pn32 = PatternNet(model, patterns).attribute(x, target=target)
    assert pn32.dtype == torch.float32
    torch.testing.assert_close(pn32.double(), ref, rtol=1e-4, atol=1e-5)
    assert_model_unchanged(state, model)
    assert all(p.dtype == torch.float32 for p in model.parameters())


def test_patternnet_overflow_warns_and_float64_keeps_it_finite() -> None:
    # ten identity layers whose patterns inflate the signal 1e5-fold each:
    # PatternNet = y_c * 1e50 e_c, beyond float32's 3.4e38
    layers = [nn.Linear(3, 3) for _ in range(10)]
    for layer in layers:
        nn.init.eye_(layer.weight)
        nn.init.zeros_(layer.bias)
    model = nn.Sequential(*layers).eval()
    patterns = PatternSet({str(i): 1e5 * torch.eye(3) for i in range(10)})
    x = torch.tensor([[1.0, 2.0, 3.0]])
    with pytest.warns(RuntimeWarning, match=r"compute_dtype=torch\.float64"):
        signal = PatternNet(model, patterns).attribute(x, target=1)
    assert not bool(torch.isfinite(signal).all())
    signal = PatternNet(model, patterns, compute_dtype=torch.float64).attribute(
        x, target=1
    )
    expected = torch.tensor([[0.0, 2.0 * 1e50, 0.0]], dtype=torch.float64)
    torch.testing.assert_close(signal, expected, rtol=1e-12, atol=0.0)


@pytest.mark.parametrize("bad", [torch.int64, "float64", torch.bool])
def test_patternnet_bad_compute_dtype_refused(bad: Any) -> None:
    model = _cnn()
    with pytest.raises(TypeError, match="`compute_dtype`"):
        PatternNet(model, _ones_like_weights(model), compute_dtype=bad)
