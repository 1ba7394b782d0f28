"""fold_batchnorm: same function, names kept, original untouched, clear errors."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from captum_ext.attr import PatternAttribution, fit_patterns
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


def test_patterns_need_folding() -> None:
    net = _with_batchnorm().eval()
    data = [torch.randn(8, 2, 8, 8)]
    with pytest.raises(ValueError, match="fold_batchnorm"):
        fit_patterns(net, data)
    folded = fold_batchnorm(net)
    patterns = fit_patterns(folded, data)
    assert set(patterns) == {"0", "3.0", "5", "8"}
    out = PatternAttribution(folded, patterns).attribute(data[0][:2], target=1)
    assert out.shape == (2, 2, 8, 8) and torch.isfinite(out).all()


class _Branchy(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3)
        self.bn = nn.BatchNorm2d(2)

    def forward(self, x: Tensor) -> Tensor:
        return self.bn(self.conv(x))


def test_unfoldable_batchnorm_is_refused() -> None:
    with pytest.raises(ValueError, match="bn"):
        fold_batchnorm(_Branchy())
    with pytest.raises(ValueError, match="running statistics"):
        fold_batchnorm(
            nn.Sequential(nn.Linear(3, 3), nn.BatchNorm1d(3, track_running_stats=False))
        )
    with pytest.raises(TypeError, match="Module"):
        fold_batchnorm(lambda x: x)  # type: ignore[arg-type]


def test_folds_nib_batchnorm_and_pattern_methods_refuse_it_unfolded() -> None:
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
    with pytest.raises(ValueError, match="fold_batchnorm"):
        fit_patterns(model, [x])
    folded = fold_batchnorm(model)
    assert not any(isinstance(m, NIBBatchNorm2d) for m in folded.modules())
    torch.testing.assert_close(folded(x), model(x), rtol=1e-4, atol=1e-5)
    # the folded model is still bias-free (positively homogeneous)
    torch.testing.assert_close(folded(2.0 * x), 2.0 * folded(x), rtol=1e-4, atol=1e-5)
    patterns = fit_patterns(folded, [x])
    attr = PatternAttribution(folded, patterns).attribute(x[:4], target=1)
    assert attr.shape == (4, 1, 8, 8) and torch.isfinite(attr).all()
