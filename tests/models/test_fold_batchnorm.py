"""fold_batchnorm: same function, names kept, original untouched, clear errors."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from captum_ext.attr import (
    PatternAttribution,
    PatternGuidedIG,
    PatternNet,
    fit_patterns,
)
from captum_ext.models import NIBBatchNorm2d, fold_batchnorm, nib_vgg
from tests.helpers import assert_model_unchanged, snapshot


def _with_batchnorm() -> nn.Sequential:
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(2, 4, 3, padding=1, bias=False),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.Sequential(nn.Conv2d(4, 4, 3, stride=2), nn.BatchNorm2d(4), nn.ReLU()),
        nn.Flatten(),
        nn.Linear(4 * 3 * 3, 6),
        nn.BatchNorm1d(6),
        nn.ReLU(),
        nn.Linear(6, 3),
    )
    # non-trivial running statistics and affine parameters
    net.train()
    with torch.no_grad():
        for _ in range(5):
            net(torch.randn(16, 2, 8, 8) * 2 + 1)
        for m in net.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.weight.uniform_(0.5, 2.0)
                m.bias.uniform_(-1.0, 1.0)
    return net


def test_folded_model_is_functionally_equal() -> None:
    net = _with_batchnorm()
    state = snapshot(net)
    folded = fold_batchnorm(net)
    assert_model_unchanged(state, net)  # training flag, weights: untouched
    assert not folded.training
    x = torch.randn(5, 2, 8, 8)
    with torch.no_grad():
        expected = net.eval()(x)
        torch.testing.assert_close(folded(x), expected, atol=1e-5, rtol=1e-5)
    # layer names are kept; each BatchNorm became an Identity
    names = dict(folded.named_modules())
    assert isinstance(names["1"], nn.Identity) and isinstance(names["3.1"], nn.Identity)
    assert isinstance(names["6"], nn.Identity)
    assert isinstance(names["0"], nn.Conv2d) and names["0"].bias is not None
    assert not any(
        isinstance(m, nn.modules.batchnorm._BatchNorm) for m in folded.modules()
    )


def _scale(bn: nn.Module) -> Tensor:
    # y = s x + t of an eval-mode BatchNorm, written out independently
    s = 1.0 / torch.sqrt(bn.running_var + bn.eps)
    return s * bn.weight.detach() if bn.weight is not None else s


def _assert_same_attributions(
    net: nn.Module, folded: nn.Module, data: list[Tensor], target: int
) -> None:
    p_net, p_folded = fit_patterns(net, data), fit_patterns(folded, data)
    x = data[0][:3]
    for cls in (PatternNet, PatternAttribution, PatternGuidedIG):
        kwargs = {"n_steps": 4} if cls is PatternGuidedIG else {}
        inside = cls(net, p_net).attribute(x, target=target, **kwargs)
        outside = cls(folded, p_folded).attribute(x, target=target, **kwargs)
        torch.testing.assert_close(inside, outside, rtol=2e-3, atol=1e-5)


def test_batchnorm_is_handled_inside_as_if_folded() -> None:
    net = _with_batchnorm().eval()
    state = snapshot(net)
    data = [torch.randn(16, 2, 8, 8) * 2 + 1 for _ in range(2)]
    folded = fold_batchnorm(net)
    p_net, p_folded = fit_patterns(net, data), fit_patterns(folded, data)
    assert set(p_net) == set(p_folded) == {"0", "3.0", "5", "8"}
    # a layer followed by a BatchNorm: the same mask (the BatchNorm's output),
    # each pattern normalised to its own weight, W' = s W: a = s a'
    for layer, bn in (("0", "1"), ("3.0", "3.1"), ("5", "6")):
        s = _scale(dict(net.named_modules())[bn]).double()
        shape = (-1,) + (1,) * (p_net[layer].dim() - 1)
        torch.testing.assert_close(
            p_net[layer].double(),
            p_folded[layer].double() * s.view(shape),
            rtol=1e-3,
            atol=1e-6,
        )
    torch.testing.assert_close(p_net["8"], p_folded["8"], rtol=1e-4, atol=1e-6)
    _assert_same_attributions(net, folded, data, target=1)
    assert_model_unchanged(state, net)


class _Branchy(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3)
        self.bn = nn.BatchNorm2d(2)

    def forward(self, x: Tensor) -> Tensor:
        return self.bn(self.conv(x))


class _Residual(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 2, 3, padding=1)
        self.bn = nn.BatchNorm2d(2)

    def forward(self, x: Tensor) -> Tensor:
        return self.bn(x + self.conv(x))  # after an addition: nothing to fold into


def test_batchnorm_as_a_block_attribute_is_folded() -> None:
    torch.manual_seed(0)
    branchy = _Branchy()
    branchy.bn.running_mean.uniform_(-1, 1)
    branchy.bn.running_var.uniform_(0.5, 2)
    folded = fold_batchnorm(branchy)
    assert isinstance(folded.bn, nn.Identity)
    x = torch.randn(3, 1, 6, 6)
    torch.testing.assert_close(folded(x), branchy.eval()(x))
    torchvision = pytest.importorskip("torchvision")
    resnet = torchvision.models.resnet18(weights=None, num_classes=5)
    resnet.train()
    with torch.no_grad():
        resnet(torch.randn(8, 3, 32, 32))  # non-trivial running statistics
    resnet.eval()
    state = snapshot(resnet)
    folded = fold_batchnorm(resnet)
    assert_model_unchanged(state, resnet)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    assert isinstance(folded.layer1[0].bn1, nn.Identity)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(folded(x), resnet(x), rtol=1e-4, atol=1e-4)


def test_unfoldable_batchnorm_is_refused() -> None:
    with pytest.raises(ValueError, match=r"\['bn'\].*handle BatchNorm themselves"):
        fold_batchnorm(_Residual())
    with pytest.raises(ValueError, match="running statistics"):
        fold_batchnorm(
            nn.Sequential(nn.Linear(3, 3), nn.BatchNorm1d(3, track_running_stats=False))
        )
    with pytest.raises(TypeError, match="Module"):
        fold_batchnorm(lambda x: x)  # type: ignore[arg-type]


def test_folds_nib_batchnorm_and_pattern_methods_handle_it_unfolded() -> None:
    torch.manual_seed(0)
    model = nib_vgg("vgg13-6", num_classes=10, in_channels=1, width=0.125, image_size=8)
    x = torch.randn(16, 1, 8, 8)
    model.train()
    for _ in range(3):  # give the running variances non-trivial values
        model(x)
    for m in model.modules():
        if isinstance(m, NIBBatchNorm2d) and m.weight is not None:
            with torch.no_grad():
                m.weight.uniform_(-2.0, 2.0)  # negative scales flip signs too
    model.eval()
    folded = fold_batchnorm(model)
    assert not any(isinstance(m, NIBBatchNorm2d) for m in folded.modules())
    torch.testing.assert_close(folded(x), model(x), rtol=1e-4, atol=1e-5)
    # the folded model is still bias-free (positively homogeneous)
    torch.testing.assert_close(folded(2.0 * x), 2.0 * folded(x), rtol=1e-4, atol=1e-5)
    patterns = fit_patterns(folded, [x])
    attr = PatternAttribution(folded, patterns).attribute(x[:4], target=1)
    assert attr.shape == (4, 1, 8, 8) and torch.isfinite(attr).all()
    # the unfolded model gives the same attributions (negative scales included)
    _assert_same_attributions(model, folded, [x], target=1)
