"""No-implicit-bias models: NIBBatchNorm2d formulas, NIB VGG shapes, homogeneity,
and the paper's identities IG (zero baseline) = Gradient*Input = DeepLift."""

from __future__ import annotations

import pytest
import torch
from captum.attr import DeepLift, InputXGradient, IntegratedGradients
from torch import nn

from captum_ext.models import NIBBatchNorm2d, is_positively_homogeneous, nib_vgg

pytestmark = pytest.mark.filterwarnings("ignore:Setting .*hooks:UserWarning")

CONFIGS = ("vgg13-6", "vgg13-4", "vgg13-2", "vgg13", "vgg16")
# table 1 / table 3: number of convolutional + linear layers
N_LAYERS = {"vgg13-6": 7, "vgg13-4": 9, "vgg13-2": 11, "vgg13": 13, "vgg16": 16}
# table 1: convolution widths at width=1.0
CONV_WIDTHS = {
    "vgg13-6": [64, 64, 128, 128],
    "vgg13-4": [64, 64, 128, 128, 256, 256],
    "vgg13-2": [64, 64, 128, 128, 256, 256, 512, 512],
    "vgg13": [64, 64, 128, 128, 256, 256, 512, 512, 512, 512],
    "vgg16": [64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512],
}


# --------------------------------------------------------------- NIBBatchNorm2d


def test_nib_batchnorm_train_formula() -> None:
    bn = NIBBatchNorm2d(3)
    with torch.no_grad():
        bn.weight.copy_(torch.tensor([0.5, 2.0, -1.0]))
    x = torch.randn(4, 3, 5, 6) * 3 + 1.5  # non-zero mean: must NOT be removed
    y = bn.train()(x)
    for c in range(3):
        v = x[:, c].flatten()
        var = ((v - v.mean()) ** 2).mean()  # biased batch variance
        expected = bn.weight[c] * x[:, c] / torch.sqrt(var + bn.eps)
        torch.testing.assert_close(y[:, c], expected.detach())
    # no mean subtraction: the output keeps the sign of the input per channel
    assert torch.equal(torch.sign(y[:, 0]), torch.sign(x[:, 0]))


def test_nib_batchnorm_running_var_updates_like_batchnorm() -> None:
    torch.manual_seed(0)
    nib, ref = NIBBatchNorm2d(4, momentum=0.3), nn.BatchNorm2d(4, momentum=0.3)
    for _ in range(3):
        x = torch.randn(6, 4, 3, 3) * 2 + 0.7
        nib.train()(x)
        ref.train()(x)
        # hand-written: unbiased batch variance, exponential average
    torch.testing.assert_close(nib.running_var, ref.running_var)
    assert int(nib.num_batches_tracked) == 3
    expected = torch.ones(4)
    torch.manual_seed(0)
    for _ in range(3):
        x = torch.randn(6, 4, 3, 3) * 2 + 0.7
        v = x.transpose(0, 1).reshape(4, -1)
        expected = 0.7 * expected + 0.3 * v.var(dim=1, unbiased=True)
    torch.testing.assert_close(nib.running_var, expected)


def test_nib_batchnorm_cumulative_average() -> None:
    bn = NIBBatchNorm2d(2, momentum=None)
    batches = [torch.randn(5, 2, 2, 2) for _ in range(4)]
    for x in batches:
        bn.train()(x)
    variances = [x.transpose(0, 1).reshape(2, -1).var(dim=1) for x in batches]
    # cumulative moving average starting from the initial ones, as BatchNorm
    torch.testing.assert_close(bn.running_var, torch.stack(variances).mean(0))


def test_nib_batchnorm_eval_formula_and_homogeneity() -> None:
    bn = NIBBatchNorm2d(3)
    with torch.no_grad():
        bn.weight.copy_(torch.tensor([1.5, -0.5, 3.0]))
        bn.running_var.copy_(torch.tensor([4.0, 0.25, 9.0]))
    bn.eval()
    x = torch.randn(2, 3, 4, 4) + 2.0
    expected = x * (bn.weight / torch.sqrt(bn.running_var + bn.eps)).view(1, 3, 1, 1)
    torch.testing.assert_close(bn(x), expected.detach())
    torch.testing.assert_close(bn(3.7 * x), 3.7 * bn(x))
    torch.testing.assert_close(bn(torch.zeros_like(x)), torch.zeros_like(x))
    # eval mode does not touch the statistics
    before = bn.running_var.clone()
    bn(x)
    assert torch.equal(bn.running_var, before) and int(bn.num_batches_tracked) == 0


def test_nib_batchnorm_state_dict_and_options() -> None:
    bn = NIBBatchNorm2d(3)
    assert set(bn.state_dict()) == {"weight", "running_var", "num_batches_tracked"}
    bn.train()(torch.randn(4, 3, 2, 2) * 5)
    other = NIBBatchNorm2d(3)
    other.load_state_dict(bn.state_dict())
    x = torch.randn(2, 3, 2, 2)
    torch.testing.assert_close(other.eval()(x), bn.eval()(x))
    assert int(other.num_batches_tracked) == 1
    bn.reset_running_stats()
    assert (
        torch.equal(bn.running_var, torch.ones(3)) and int(bn.num_batches_tracked) == 0
    )

    plain = NIBBatchNorm2d(3, affine=False, track_running_stats=False)
    assert plain.weight is None and plain.running_var is None
    assert set(plain.state_dict()) == set()
    x = torch.randn(4, 3, 2, 2) + 1
    var = x.transpose(0, 1).reshape(3, -1).var(dim=1, unbiased=False)
    # no running statistics: batch variance in eval mode too
    torch.testing.assert_close(
        plain.eval()(x), x / torch.sqrt(var + plain.eps).view(1, 3, 1, 1)
    )
    assert "affine=False" in repr(plain)


def test_nib_batchnorm_errors() -> None:
    with pytest.raises(ValueError, match="num_features"):
        NIBBatchNorm2d(0)
    with pytest.raises(ValueError, match="momentum"):
        NIBBatchNorm2d(2, momentum=1.5)
    bn = NIBBatchNorm2d(2)
    with pytest.raises(ValueError, match="4-D"):
        bn(torch.randn(3, 2))
    with pytest.raises(ValueError, match="channels"):
        bn(torch.randn(3, 5, 2, 2))
    with pytest.raises(ValueError, match="more than 1 value"):
        bn.train()(torch.randn(1, 2, 1, 1))


# ----------------------------------------------------------------------- nib_vgg


@pytest.mark.parametrize("config", CONFIGS)
def test_nib_vgg_architecture_matches_table_1(config: str) -> None:
    model = nib_vgg(config, num_classes=100, in_channels=3)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert [c.out_channels for c in convs] == CONV_WIDTHS[config]
    assert len(convs) + len(linears) == N_LAYERS[config]
    assert [lin.out_features for lin in linears] == [4096, 4096, 100]
    assert all(c.kernel_size == (3, 3) and c.padding == (1, 1) for c in convs)
    # no implicit bias: no biases, no ordinary BatchNorm, one NIB BN per conv
    assert all(m.bias is None for m in convs + linears)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    assert sum(isinstance(m, NIBBatchNorm2d) for m in model.modules()) == len(convs)
    n_pools = sum(isinstance(m, nn.MaxPool2d) for m in model.modules())
    assert n_pools == {"vgg13-6": 2, "vgg13-4": 3, "vgg13-2": 4}.get(config, 5)


@pytest.mark.parametrize("config", CONFIGS)
@pytest.mark.parametrize("size,channels", [(32, 3), (8, 1)])
def test_nib_vgg_is_positively_homogeneous(
    config: str, size: int, channels: int
) -> None:
    torch.manual_seed(0)
    model = nib_vgg(config, in_channels=channels, width=1 / 16, image_size=size)
    x = torch.randn(6, channels, size, size)
    model.train()(x)  # non-trivial running variances
    model.eval()
    with torch.no_grad():
        y = model(x)
        assert y.shape == (6, 10)
        for a in (0.3, 2.0, 11.0):
            torch.testing.assert_close(model(a * x), a * y, rtol=1e-4, atol=1e-7)
    assert is_positively_homogeneous(model, x)


def test_nib_vgg_small_inputs_skip_pools() -> None:
    model = nib_vgg("vgg16", in_channels=1, width=0.125, image_size=8)
    # 8 -> 4 -> 2 -> 1: three of the five pools fit
    assert sum(isinstance(m, nn.MaxPool2d) for m in model.modules()) == 3
    assert model.classifier[0].in_features == 64 * 1 * 1
    digits = nib_vgg("vgg13-6", in_channels=1, width=0.125, image_size=(8, 6))
    assert digits.classifier[0].in_features == 16 * 2 * 1
    assert digits.eval()(torch.randn(2, 1, 8, 6)).shape == (2, 10)
    # width scales channels and the hidden width
    assert digits.classifier[0].out_features == 512
    assert nib_vgg("vgg13-6", width=0.25, dropout=0.0).classifier[2].out_features == (
        1024
    )


def test_nib_vgg_bias_ablation_variants() -> None:
    torch.manual_seed(0)
    lb = nib_vgg("vgg13-6", width=0.125, layer_bias=True)
    assert all(
        m.bias is not None
        for m in lb.modules()
        if isinstance(m, (nn.Conv2d, nn.Linear))
    )
    bnb = nib_vgg("vgg13-6", width=0.125, bn_bias=True)
    assert sum(isinstance(m, nn.BatchNorm2d) for m in bnb.modules()) == 4
    assert not any(isinstance(m, NIBBatchNorm2d) for m in bnb.modules())
    x = torch.randn(4, 3, 32, 32)
    for model in (lb, bnb):
        model.train()(x)
        model.eval()
        for m in model.modules():  # make the biases non-trivial
            if isinstance(m, (nn.Conv2d, nn.Linear, nn.BatchNorm2d)):
                if m.bias is not None:
                    nn.init.normal_(m.bias, 0.0, 0.1)
        assert not is_positively_homogeneous(model, x)
    plain = nib_vgg("vgg13-6", width=0.125, batch_norm=False)
    assert not any(isinstance(m, NIBBatchNorm2d) for m in plain.modules())
    assert is_positively_homogeneous(plain.eval(), x)


def test_nib_vgg_argument_errors() -> None:
    with pytest.raises(ValueError, match="config"):
        nib_vgg("vgg19")
    with pytest.raises(ValueError, match="width"):
        nib_vgg("vgg16", width=0)
    with pytest.raises(ValueError, match="num_classes"):
        nib_vgg("vgg16", num_classes=0)
    with pytest.raises(ValueError, match="dropout"):
        nib_vgg("vgg16", dropout=1.0)
    with pytest.raises(TypeError, match="image_size"):
        nib_vgg("vgg16", image_size=(8, 8, 8))


def test_is_positively_homogeneous_refuses_training_mode() -> None:
    model = nib_vgg("vgg13-6", width=0.125)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError, match="eval"):
        is_positively_homogeneous(model.train(), torch.randn(2, 3, 32, 32))
    for k, v in model.state_dict().items():  # no statistics were updated
        assert torch.equal(v, state[k])
    with pytest.raises(ValueError, match="scales"):
        is_positively_homogeneous(model.eval(), torch.randn(2, 3, 32, 32), scales=[-1])
    # a biased linear model is not homogeneous, a bias-free one is
    assert not is_positively_homogeneous(nn.Linear(3, 2).eval(), torch.randn(4, 3))
    assert is_positively_homogeneous(
        nn.Linear(3, 2, bias=False).eval(), torch.randn(4, 3)
    )


# ------------------------------------------------- identities on a NIB model


@pytest.fixture(scope="module")
def nib_digits_model() -> nn.Module:
    torch.manual_seed(3)
    model = nib_vgg("vgg13-6", in_channels=1, width=0.125, image_size=8)
    with torch.no_grad():
        model.train()(torch.randn(64, 1, 8, 8))
        for m in model.modules():  # non-trivial NIB scales
            if isinstance(m, NIBBatchNorm2d):
                m.weight.uniform_(0.5, 2.0)
            if isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0.0, 0.1)
    return model.eval()


def test_ig_equals_gradient_input_equals_deeplift(nib_digits_model: nn.Module) -> None:
    """Table 2's identical columns: IG(0) = GxI = DeepLift(0) on a NIB model."""
    model = nib_digits_model
    torch.manual_seed(1)
    x = torch.randn(8, 1, 8, 8, dtype=torch.float64)
    model = model.double()
    target = torch.arange(8) % 10
    gxi = InputXGradient(model).attribute(x, target=target)
    ig = IntegratedGradients(model).attribute(
        x, baselines=torch.zeros_like(x), target=target, n_steps=20
    )
    dl = DeepLift(model).attribute(x, baselines=torch.zeros_like(x), target=target)
    # Captum builds its quadrature weights in float32: their sum is 1 to ~1e-8
    torch.testing.assert_close(ig, gxi, rtol=1e-6, atol=1e-9)
    torch.testing.assert_close(dl, gxi, rtol=1e-9, atol=1e-12)
    # completeness: f_k(x) = sum(Gradient * Input), and f(0) = 0
    with torch.no_grad():
        logits = model(x).gather(1, target[:, None]).squeeze(1)
        assert torch.equal(model(torch.zeros_like(x)), torch.zeros(8, 10).double())
    torch.testing.assert_close(gxi.flatten(1).sum(1), logits, rtol=1e-10, atol=1e-12)
    model.float()


def test_identities_fail_with_biases() -> None:
    """The same check on the bias ablation: completeness is lost."""
    torch.manual_seed(0)
    model = nib_vgg("vgg13-6", in_channels=1, width=0.125, image_size=8, bn_bias=True)
    model.train()(torch.randn(32, 1, 8, 8) + 0.5)
    model.eval()
    x = torch.randn(4, 1, 8, 8)
    gxi = InputXGradient(model).attribute(x, target=0)
    with torch.no_grad():
        logits = model(x)[:, 0]
        gap = (gxi.flatten(1).sum(1) - logits).abs().max()
    assert gap > 1e-3 * logits.abs().max()
