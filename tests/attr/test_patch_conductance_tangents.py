"""PatchConductance's forward-mode pass: the cheaper tangent rules and attention.

``TangentRules`` replaces PyTorch's generic forward-mode formulas for
convolution / linear layers, inference BatchNorm and ReLU, computes the
tangents of the first affine layers once per distinct row, and lets forward AD
go through attention. The references here are independent of it: PyTorch's own
forward AD (``torch.func.jvp``), central finite differences in float64, a
brute-force Jacobian, and Captum's IntegratedGradients.
"""

from __future__ import annotations

import pytest
import torch
import torch.autograd.forward_ad as fwAD
import torch.nn.functional as F
from captum.attr import IntegratedGradients
from captum.attr._utils.approximation_methods import approximation_parameters
from torch import Tensor, nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from captum_ext.attr import PatchConductance
from captum_ext.attr._utils.layer_passes import TangentRules
from tests.attr.test_patch_conductance import _brute_force
from tests.helpers import assert_model_unchanged, snapshot


def _randomise_batch_norms(model: nn.Module) -> nn.Module:
    """Running statistics and affine parameters away from the identity."""
    gen = torch.Generator().manual_seed(5)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.running_var is not None:
            n = m.running_var.numel()
            m.running_mean.copy_(torch.rand(n, generator=gen) - 0.5)
            m.running_var.copy_(0.5 + torch.rand(n, generator=gen))
            if m.weight is not None:
                m.weight.data.copy_(0.5 + torch.rand(n, generator=gen))
                m.bias.data.copy_(torch.rand(n, generator=gen) - 0.5)
    return model


class _Functional(nn.Module):
    """ReLU in every spelling, in place and not."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(5, 6)
        self.fc2 = nn.Linear(6, 6, bias=False)
        self.fc3 = nn.Linear(6, 3)

    def forward(self, x: Tensor) -> Tensor:
        h = F.relu(self.fc1(x), inplace=True)
        h = torch.relu(self.fc2(h)) + self.fc2(h).relu()
        h = self.fc2(h)
        torch.relu_(h)
        h = self.fc2(h).relu_()
        return self.fc3(F.relu(h))


class _Attention(nn.Module):
    """Scaled dot-product attention called directly."""

    def __init__(self) -> None:
        super().__init__()
        self.qkv = nn.Linear(4, 12)
        self.out = nn.Linear(4, 2)

    def forward(self, x: Tensor) -> Tensor:
        q, k, v = self.qkv(x).chunk(3, dim=-1)
        return self.out(F.scaled_dot_product_attention(q, k, v)).flatten(1)


class _Unbatched(nn.Module):
    """A convolution that reads its 2-D input as one unbatched (C, L) signal."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(3, 4, 2))

    def forward(self, x: Tensor) -> Tensor:
        return F.conv1d(x, self.weight)


def _net(name: str) -> tuple[nn.Module, tuple[int, ...]]:
    torch.manual_seed(0)
    net: nn.Module
    if name == "conv1d":
        net = nn.Sequential(
            nn.Conv1d(3, 4, 3, padding=1),
            nn.BatchNorm1d(4),
            nn.ReLU(inplace=True),
            nn.Conv1d(4, 2, 3, bias=False),
        )
        shape: tuple[int, ...] = (3, 10)
    elif name == "conv2d":
        net = nn.Sequential(
            nn.Conv2d(3, 4, 3, stride=2, padding=1),
            nn.BatchNorm2d(4),
            nn.ReLU(),
            nn.Conv2d(4, 4, 3, padding=1, groups=2, padding_mode="reflect"),
            nn.BatchNorm2d(4, affine=False),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(16, 3),
        )
        shape = (3, 8, 8)
    elif name == "conv3d":
        net = nn.Sequential(
            nn.Conv3d(2, 3, 3, padding=1), nn.BatchNorm3d(3), nn.ReLU(inplace=True)
        )
        shape = (2, 4, 4, 4)
    elif name == "batch_statistics":
        # BatchNorm without running statistics normalises with the batch's own
        # statistics even in eval mode: rows are coupled, the generic rule runs
        net = nn.Sequential(
            nn.Conv2d(2, 3, 3), nn.BatchNorm2d(3, track_running_stats=False)
        )
        shape = (2, 5, 5)
    elif name == "linear_tokens":
        net = nn.Sequential(nn.Linear(5, 6), nn.BatchNorm1d(4), nn.Linear(6, 3))
        shape = (4, 5)  # (tokens, features): BatchNorm1d over 4 channels
    elif name == "functional_relu":
        net = _Functional()
        shape = (5,)
    elif name == "unbatched_conv":
        net = _Unbatched()  # the rows are its channels: no per-row tangent
        shape = (6,)
    elif name == "attention":
        net = _Attention()
        shape = (3, 4)
    else:
        raise AssertionError(name)
    return _randomise_batch_norms(net).double().eval(), shape


NETS = (
    "conv1d",
    "conv2d",
    "conv3d",
    "batch_statistics",
    "linear_tokens",
    "functional_relu",
    "unbatched_conv",
    "attention",
)


def _with_rules(net: nn.Module, x: Tensor, rows: Tensor) -> tuple[Tensor, Tensor]:
    """Primal and tangent of ``net`` at ``x`` (``rows`` repeated) under the rules."""
    repeats = x.shape[0] // rows.shape[0]
    with torch.no_grad(), fwAD.dual_level(), TangentRules() as rules:
        out = net(rules.periodic(x.clone(), rows.clone(), repeats))
        primal, tangent = fwAD.unpack_dual(out)
        return primal.clone(), tangent.clone()


def _pytorch_jvp(net: nn.Module, x: Tensor, tangent: Tensor) -> tuple[Tensor, Tensor]:
    """PyTorch's own forward-mode AD (attention on its math backend)."""
    with torch.no_grad(), sdpa_kernel(SDPBackend.MATH):
        return torch.func.jvp(net, (x.clone(),), (tangent.clone(),))


@pytest.mark.parametrize("repeats", [1, 2])
@pytest.mark.parametrize("name", NETS)
def test_rules_equal_pytorch_forward_ad(name: str, repeats: int) -> None:
    net, shape = _net(name)
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(2 * repeats, *shape, generator=gen, dtype=torch.float64)
    rows = torch.randn(2, *shape, generator=gen, dtype=torch.float64)
    if name == "unbatched_conv" and repeats == 1:
        x, rows = x.repeat(2, 1), rows.repeat(2, 1)  # its 4 input channels
    state = snapshot(net)
    primal, tangent = _with_rules(net, x, rows)
    ref_primal, ref_tangent = _pytorch_jvp(
        net, x, rows.repeat(repeats, *[1] * len(shape))
    )
    torch.testing.assert_close(primal, ref_primal, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(tangent, ref_tangent, rtol=1e-10, atol=1e-12)
    assert tangent.abs().max() > 0
    assert_model_unchanged(state, net)


class _InPlaceAfterConv(nn.Module):
    """Changes a conv output (and so its tangent) in place before the next layer."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(2, 3, 3, padding=1)
        self.conv2 = nn.Conv2d(3, 2, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv1(x)
        h.mul_(h.detach().sign() + 2.0)  # a row-dependent factor
        return self.conv2(h)


def test_row_periodic_tangent_not_used_after_in_place_change() -> None:
    """After an in-place change the tangent is no longer one row repeated."""
    torch.manual_seed(3)
    net = _InPlaceAfterConv().double().eval()
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(6, 2, 5, 5, generator=gen, dtype=torch.float64)
    rows = torch.randn(2, 2, 5, 5, generator=gen, dtype=torch.float64)
    _, tangent = _with_rules(net, x, rows)
    _, ref = _pytorch_jvp(net, x, rows.repeat(3, 1, 1, 1))
    torch.testing.assert_close(tangent, ref, rtol=1e-10, atol=1e-12)


def _convolutions(run: object) -> list[int]:
    """Batch sizes of the convolutions a call runs (profiler, CPU)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        run()  # type: ignore[operator]
    return [
        e.input_shapes[0][0] for e in prof.events() if e.name == "aten::_convolution"
    ]


def test_each_convolution_runs_twice_and_the_stem_once_per_distinct_row() -> None:
    """PyTorch's generic rule runs three convolutions per layer (the third with
    the parameters' zero tangent); the rules run two, and the first layer's
    tangent only on the distinct rows (2 here, not 2 x 4)."""
    net, shape = _net("conv2d")
    x = torch.randn(8, *shape, dtype=torch.float64)
    rows = torch.randn(2, *shape, dtype=torch.float64)
    generic = _convolutions(lambda: _pytorch_jvp(net, x, rows.repeat(4, 1, 1, 1)))
    assert sorted(generic) == [8] * 6
    ours = _convolutions(lambda: _with_rules(net, x, rows))
    assert sorted(ours) == [2, 8, 8, 8]


# -- attention: forward AD through torchvision's VisionTransformer


def _vit() -> nn.Module:
    tvm = pytest.importorskip("torchvision.models")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = tvm.VisionTransformer(
            image_size=16,
            patch_size=8,
            num_layers=2,
            num_heads=2,
            hidden_dim=16,
            mlp_dim=32,
            num_classes=4,
        )
        nn.init.normal_(model.heads.head.weight, std=0.3)  # zero in torchvision
    return model.double().eval()


def _patch() -> Tensor:
    mask = torch.zeros(1, 3, 16, 16, dtype=torch.bool)
    mask[..., 4:12, 2:10] = True
    return mask


def test_vit_plain_forward_ad_fails_in_eval() -> None:
    """The case the rules fix: in eval mode without gradients,
    nn.MultiheadAttention takes its fused kernel, which has no forward-mode
    formula (nor has the fused scaled dot-product attention)."""
    model = _vit()
    x = torch.randn(2, 3, 16, 16, dtype=torch.float64)
    with torch.no_grad(), fwAD.dual_level():
        with pytest.raises(NotImplementedError, match="forward AD"):
            model(fwAD.make_dual(x, torch.ones_like(x)))


def test_vit_jvp_equals_central_differences() -> None:
    """IG_{S,j} on encoder layer 0 with directional="jvp" against sum_k w_k
    dF/dH_j(z_k) [H_j(z_k + eps d_S) - H_j(z_k - eps d_S)] / (2 eps), float64."""
    model = _vit()
    layer = model.encoder.layers.encoder_layer_0
    gen = torch.Generator().manual_seed(4)
    x = torch.randn(2, 3, 16, 16, generator=gen, dtype=torch.float64)
    base = 0.1 * torch.randn(2, 3, 16, 16, generator=gen, dtype=torch.float64)
    target = torch.tensor([1, 3])
    n_steps, mask = 5, _patch()
    state = snapshot(model)
    ours = PatchConductance(model, layer).attribute(
        x, mask, base, target=target, n_steps=n_steps
    )
    assert_model_unchanged(state, model)

    seen: list[Tensor] = []
    handle = layer.register_forward_hook(lambda m, a, out: seen.append(out))
    try:
        steps, alphas = approximation_parameters("gausslegendre")
        d_s = (x - base) * mask
        eps = 1e-5
        ref = torch.zeros_like(ours)
        for w, a in zip(steps(n_steps), alphas(n_steps)):
            z = base + a * (x - base)
            seen.clear()
            out = model(z).gather(1, target[:, None]).sum()
            (grad,) = torch.autograd.grad(out, seen[0])
            with torch.no_grad():
                seen.clear()
                model(z + eps * d_s)
                model(z - eps * d_s)
            ref += w * grad * (seen[0] - seen[1]) / (2 * eps)
    finally:
        handle.remove()
    assert ours.shape == (2, 5, 16)
    torch.testing.assert_close(ours, ref, rtol=1e-6, atol=1e-8 * float(ref.abs().max()))


def test_vit_patch_completeness_equals_captum_ig() -> None:
    """Every path from the image to the output crosses encoder layer 0, so
    sum_j IG_{S,j} is Captum's IG summed over the patch at the same points, and
    the completeness delta (our own input IG at those points) is rounding."""
    model = _vit()
    x = torch.randn(3, 3, 16, 16, generator=torch.Generator().manual_seed(6))
    x = x.double()
    target = torch.tensor([0, 2, 3])
    pc = PatchConductance(model, model.encoder.layers.encoder_layer_0)
    attr, delta = pc.attribute(
        x, _patch(), target=target, n_steps=6, return_convergence_delta=True
    )
    ig = IntegratedGradients(model).attribute(x, target=target, n_steps=6)
    patch_ig = (ig * _patch()).flatten(1).sum(1)
    # Captum multiplies by its quadrature weights in float32: 1e-8 relative
    torch.testing.assert_close(attr.flatten(1).sum(1), patch_ig, rtol=1e-7, atol=0.0)
    assert float(delta.abs().max()) < 1e-10 * float(patch_ig.abs().max())


# -- PatchConductance with the rules against a brute-force Jacobian


def test_conv_batchnorm_relu_net_equals_brute_force_jacobian() -> None:
    """A conv-BN-ReLU (in place) network, several steps per pass: every rule
    and the row-periodic first layer are on the path."""
    torch.manual_seed(7)
    model = _randomise_batch_norms(
        nn.Sequential(
            nn.Conv2d(2, 3, 3, padding=1),
            nn.BatchNorm2d(3),
            nn.ReLU(inplace=True),
            nn.Conv2d(3, 4, 3, stride=2, padding=1),
            nn.BatchNorm2d(4),
            nn.ReLU(inplace=True),
            nn.Flatten(),
            nn.Linear(36, 3),
        )
    )
    model = model.double().eval()
    x = torch.randn(2, 2, 6, 6, dtype=torch.float64)
    base = torch.randn(2, 2, 6, 6, dtype=torch.float64)
    mask = torch.zeros(2, 6, 6, dtype=torch.float64)
    mask[:, 1:5, 0:3] = 1
    ours = PatchConductance(model, model[5]).attribute(
        x, mask.bool(), base, target=[0, 2], n_steps=6, method="riemann_middle"
    )
    ref = _brute_force(model, 5, x, base, mask, [0, 2], 6, "riemann_middle")
    assert ref.abs().max() > 0
    torch.testing.assert_close(ours, ref, rtol=1e-9, atol=1e-12)
