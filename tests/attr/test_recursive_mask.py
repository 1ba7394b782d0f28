"""RecursiveMaskAttribution equals a hand-written loop of Algorithm 1 (GxSI paper)."""

from __future__ import annotations

import warnings
from typing import Any

import pytest
import torch
from captum.attr import (
    Attribution,
    DeepLift,
    GuidedBackprop,
    InputXGradient,
    IntegratedGradients,
    LayerGradCam,
    NoiseTunnel,
    Saliency,
)
from torch import Tensor, nn

from captum_ext.attr import GradientSignInput, RecursiveMaskAttribution
from captum_ext.models import nib_vgg
from tests.helpers import assert_model_unchanged, snapshot

# Captum announces the hooks GuidedBackprop / DeepLift set (and remove).
pytestmark = pytest.mark.filterwarnings("ignore:Setting .*hooks:UserWarning")


def _minmax_reference(a: Tensor) -> Tensor:
    """Eq. 11 with explicit loops: per example, per channel (images) or per
    example (2-D inputs); a map whose spread is within 16 ulps of its
    magnitude gives 1 (the neutral mask factor)."""
    out = torch.zeros_like(a)
    for n in range(a.shape[0]):
        channels = range(a.shape[1]) if a.dim() >= 3 else [None]
        for c in channels:
            block = a[n] if c is None else a[n, c]
            lo, hi = float(block.min()), float(block.max())
            noise = 16 * torch.finfo(a.dtype).eps * max(abs(lo), abs(hi))
            informative = hi - lo > noise
            value = (block - lo) / (hi - lo) if informative else torch.ones_like(block)
            if c is None:
                out[n] = value
            else:
                out[n, c] = value
    return out


def _algorithm_1(
    method: Attribution, x: Tensor, target: Any, iterations: int, **kw: Any
) -> list[Tensor]:
    """Algorithm 1 written out: m* = 1; A = Expl(x * m*); m* *= MinMax(A)."""
    m_star = torch.ones_like(x)
    history = []
    for _ in range(iterations):
        a = method.attribute(x * m_star, target=target, **kw)
        m_star = m_star * _minmax_reference(a.detach())
        history.append(m_star)
    return history


@pytest.fixture(scope="module")
def cnn() -> nn.Module:
    torch.manual_seed(0)
    model = nib_vgg("vgg13-6", in_channels=3, width=1 / 16, image_size=8)
    model.train()(torch.randn(16, 3, 8, 8))
    return model.eval()


@pytest.fixture
def images() -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(5)
    return torch.randn(5, 3, 8, 8, generator=g), torch.tensor([0, 3, 9, 3, 1])


@pytest.mark.parametrize(
    "method_cls,kwargs",
    [
        (GradientSignInput, {}),
        (InputXGradient, {}),
        (Saliency, {"abs": False}),
        (GuidedBackprop, {}),
        (DeepLift, {}),
        (IntegratedGradients, {"n_steps": 8}),
    ],
    ids=["GxSI", "InputXGradient", "Saliency", "GuidedBackprop", "DeepLift", "IG"],
)
def test_equals_hand_written_algorithm_1(
    cnn: nn.Module, images: tuple[Tensor, Tensor], method_cls: type, kwargs: dict
) -> None:
    x, y = images
    expected = _algorithm_1(method_cls(cnn), x, y, 4, **kwargs)
    rma = RecursiveMaskAttribution(cnn, method_cls)
    got = rma.attribute(x, target=y, n_iterations=4, **kwargs)
    torch.testing.assert_close(got, expected[-1], rtol=1e-5, atol=1e-6)
    every = rma.attribute(x, target=y, n_iterations=4, return_all_masks=True, **kwargs)
    assert every.shape == (4, *x.shape)
    torch.testing.assert_close(every, torch.stack(expected), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(every[-1], got)
    # values in [0, 1]; the running mask can only shrink
    assert every.min() >= 0 and every.max() <= 1
    assert (every[1:] <= every[:-1]).all()


def test_first_iteration_is_minmax_of_the_method(
    cnn: nn.Module, images: tuple[Tensor, Tensor]
) -> None:
    x, y = images
    gxsi = GradientSignInput(cnn).attribute(x, target=y)
    m1 = RecursiveMaskAttribution(cnn).attribute(x, target=y, n_iterations=1)
    for n in range(x.shape[0]):
        for c in range(3):
            a = gxsi[n, c]
            torch.testing.assert_close(m1[n, c], (a - a.min()) / (a.max() - a.min()))
            # each channel reaches both ends of [0, 1]
            assert m1[n, c].min() == 0 and m1[n, c].max() == 1


def test_instances_and_forwarded_kwargs(
    cnn: nn.Module, images: tuple[Tensor, Tensor]
) -> None:
    x, y = images
    # a ready instance is used as given: NoiseTunnel with zero noise = the method
    nt = NoiseTunnel(InputXGradient(cnn))
    got = RecursiveMaskAttribution(cnn, nt).attribute(
        x, target=y, n_iterations=3, nt_type="smoothgrad", nt_samples=3, stdevs=0.0
    )
    plain = RecursiveMaskAttribution(cnn, InputXGradient).attribute(
        x, target=y, n_iterations=3
    )
    torch.testing.assert_close(got, plain, rtol=1e-5, atol=1e-6)
    # kwargs reach the wrapped method: Saliency abs=True differs from abs=False
    sal = RecursiveMaskAttribution(cnn, Saliency)
    m_abs = sal.attribute(x, target=y, n_iterations=2)
    m_signed = sal.attribute(x, target=y, n_iterations=2, abs=False)
    assert not torch.allclose(m_abs, m_signed)
    torch.testing.assert_close(m_abs, _algorithm_1(Saliency(cnn), x, y, 2)[-1])
    # baselines are forwarded unchanged (not masked)
    base = torch.full_like(x, 0.3)
    ig = RecursiveMaskAttribution(cnn, IntegratedGradients).attribute(
        x, target=y, n_iterations=2, baselines=base, n_steps=6
    )
    expected = _algorithm_1(
        IntegratedGradients(cnn), x, y, 2, baselines=base, n_steps=6
    )[-1]
    torch.testing.assert_close(ig, expected, rtol=1e-5, atol=1e-6)


class _Fixed(Attribution):
    """Returns preset maps (to test the normalisation exactly)."""

    def __init__(self, maps: Any, forward_func: Any = None) -> None:
        Attribution.__init__(self, forward_func or (lambda *a: a[0].flatten(1)[:, :2]))
        self.maps = maps
        self.seen: list[Any] = []

    def attribute(self, inputs: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        self.seen.append((inputs, kwargs))
        return self.maps


def _on_fixed(fixed: _Fixed) -> RecursiveMaskAttribution:
    return RecursiveMaskAttribution(fixed.forward_func, fixed)


def test_constant_maps_give_one_and_normalisation_axes() -> None:
    a = torch.randn(3, 2, 4, 4)
    a[0, 1] = 7.0  # a constant channel
    a[1] = -2.0  # a constant example
    a[2, 0, 0, 0] = 1e6  # one dominant value
    x = torch.randn(3, 2, 4, 4)
    with pytest.warns(UserWarning, match=r"examples \[0, 1\]"):
        m = _on_fixed(_Fixed(a)).attribute(x, n_iterations=1)
    torch.testing.assert_close(m, _minmax_reference(a))
    assert torch.equal(m[0, 1], torch.ones(4, 4))
    assert torch.equal(m[1], torch.ones(2, 4, 4))
    assert m[0, 0].min() == 0 and m[0, 0].max() == 1
    assert m[2, 0, 0, 0] == 1 and m[2, 0].flatten()[1:].max() < 1e-4
    # a spread at float rounding level is constant too
    a_round = torch.full((1, 1, 3, 3), 1000.0)
    a_round[0, 0, 1, 1] = torch.nextafter(torch.tensor(1000.0), torch.tensor(2e3))
    with pytest.warns(UserWarning, match="rounding level"):
        m = _on_fixed(_Fixed(a_round)).attribute(torch.ones(1, 1, 3, 3))
    assert torch.equal(m, torch.ones(1, 1, 3, 3))
    # per_channel=False: one min-max per example over all channels
    with pytest.warns(UserWarning, match=r"examples \[1\]"):
        m = _on_fixed(_Fixed(a)).attribute(x, n_iterations=1, per_channel=False)
    whole = _minmax_reference(a.flatten(1)).view_as(a)
    torch.testing.assert_close(m, whole)


def test_tabular_inputs_are_one_channel() -> None:
    a = torch.tensor([[1.0, 3.0, 2.0, 5.0], [4.0, 4.0, 4.0, 4.0]])
    with pytest.warns(UserWarning, match=r"examples \[1\]"):
        m = _on_fixed(_Fixed(a)).attribute(torch.ones(2, 4), n_iterations=2)
    # two iterations of the same map: the square of its normalisation; the
    # constant second example keeps mask 1
    expected = torch.tensor([[0.0, 0.5, 0.25, 1.0], [1.0, 1.0, 1.0, 1.0]]) ** 2
    torch.testing.assert_close(m, expected)


def test_masked_input_is_what_the_method_sees() -> None:
    a = torch.tensor([[[[1.0, 2.0], [3.0, 5.0]]]])
    fixed = _Fixed(a)
    x = torch.full((1, 1, 2, 2), 2.0)
    _on_fixed(fixed).attribute(x, target=0, n_iterations=3, extra="knob")
    seen = [s[0] for s in fixed.seen]
    m = torch.tensor([[[[0.0, 0.25], [0.5, 1.0]]]])
    torch.testing.assert_close(seen[0], x)
    torch.testing.assert_close(seen[1], x * m)
    torch.testing.assert_close(seen[2], x * m * m)
    assert all(
        s[1] == {"target": 0, "additional_forward_args": None, "extra": "knob"}
        for s in fixed.seen
    )


# dead ReLUs give some examples an all-zero map (mask factor 1, warned)
@pytest.mark.filterwarnings("ignore:RecursiveMaskAttribution. the map:UserWarning")
def test_tuple_inputs_masks_per_tensor() -> None:
    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = nn.Linear(4, 3)
            self.b = nn.Conv2d(2, 3, 3, padding=1)

        def forward(self, x1: Tensor, x2: Tensor, scale: Tensor) -> Tensor:
            return torch.relu(self.a(x1) + self.b(x2).mean((2, 3))) * scale

    torch.manual_seed(0)
    net = Net()
    x = (torch.randn(3, 4), torch.randn(3, 2, 5, 5))
    scale = torch.rand(3, 1) + 0.5
    got = RecursiveMaskAttribution(net).attribute(
        x, target=[0, 2, 1], additional_forward_args=(scale,), n_iterations=3
    )
    assert isinstance(got, tuple) and len(got) == 2
    gxsi = GradientSignInput(net)
    m = (torch.ones(3, 4), torch.ones(3, 2, 5, 5))
    for _ in range(3):
        a = gxsi.attribute(
            (x[0] * m[0], x[1] * m[1]),
            target=[0, 2, 1],
            additional_forward_args=(scale,),
        )
        m = (m[0] * _minmax_reference(a[0]), m[1] * _minmax_reference(a[1]))
    for g, e, xi in zip(got, m, x):
        torch.testing.assert_close(g, e)
        assert g.shape == xi.shape
    every = RecursiveMaskAttribution(net).attribute(
        x, target=[0, 2, 1], additional_forward_args=(scale,), return_all_masks=True
    )
    assert every[0].shape == (3, 3, 4) and every[1].shape == (3, 3, 2, 5, 5)


def test_model_unchanged_and_no_grad(
    cnn: nn.Module, images: tuple[Tensor, Tensor]
) -> None:
    x, y = images
    leaf = x.clone().requires_grad_(True)
    state = snapshot(cnn)
    rma = RecursiveMaskAttribution(cnn, InputXGradient)
    got = rma.attribute(leaf, target=y)
    with torch.no_grad():
        again = rma.attribute(leaf, target=y)
    assert_model_unchanged(state, cnn)
    assert not got.requires_grad and leaf.grad is None and leaf.requires_grad
    torch.testing.assert_close(got, again)
    assert got.dtype == x.dtype


# dead ReLUs give some examples an all-zero map (mask factor 1, warned)
@pytest.mark.filterwarnings("ignore:RecursiveMaskAttribution. the map:UserWarning")
def test_float64_inputs_keep_their_dtype() -> None:
    model = nn.Sequential(nn.Linear(5, 3, bias=False), nn.ReLU(), nn.Linear(3, 2))
    model = model.double()
    m = RecursiveMaskAttribution(model).attribute(
        torch.randn(4, 5, dtype=torch.float64), target=1
    )
    assert m.dtype == torch.float64


def test_bad_arguments_refused_before_work(cnn: nn.Module) -> None:
    calls = []
    cnn_hook = cnn.register_forward_pre_hook(lambda *a: calls.append(1))
    try:
        rma = RecursiveMaskAttribution(cnn)
        x = torch.randn(2, 3, 8, 8)
        with pytest.raises(ValueError, match="n_iterations"):
            rma.attribute(x, target=0, n_iterations=0)
        with pytest.raises(TypeError, match="return_all_masks"):
            rma.attribute(x, target=0, return_all_masks=1)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="return_convergence_delta"):
            RecursiveMaskAttribution(cnn, IntegratedGradients).attribute(
                x, target=0, return_convergence_delta=True
            )
        with pytest.raises(TypeError, match="inputs"):
            rma.attribute([1.0, 2.0], target=0)  # type: ignore[arg-type]
        with pytest.raises(AssertionError):
            rma.attribute(x, target=[0, 1, 2])
        with pytest.raises(TypeError, match="target"):
            rma.attribute(x, target=1.5)  # type: ignore[arg-type]
        assert calls == []
    finally:
        cnn_hook.remove()
    with pytest.raises(ValueError, match="feature dimension"):
        RecursiveMaskAttribution(lambda t: t[:, None]).attribute(torch.randn(3))


def test_bad_attribution_methods(cnn: nn.Module) -> None:
    with pytest.raises(TypeError, match="attribution_method"):
        RecursiveMaskAttribution(cnn, nn.Linear)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="attribution_method"):
        RecursiveMaskAttribution(cnn, "gxsi")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="NoiseTunnel"):
        RecursiveMaskAttribution(cnn, NoiseTunnel)
    with pytest.raises(TypeError, match="layer"):
        RecursiveMaskAttribution(cnn, LayerGradCam(cnn, cnn.features[0]))
    with pytest.raises(TypeError, match="layer"):
        RecursiveMaskAttribution(cnn, LayerGradCam)
    wrong = _Fixed(torch.randn(2, 3, 4, 4), forward_func=cnn)
    with pytest.raises(ValueError, match="shaped like"):
        RecursiveMaskAttribution(cnn, wrong).attribute(torch.randn(2, 3, 8, 8))
    with pytest.raises(NotImplementedError):
        RecursiveMaskAttribution(cnn).attribute_future()


class _SoftmaxSum(nn.Module):
    """Sum of a softmax: 1 whatever the input, so its gradient is rounding noise."""

    def __init__(self) -> None:
        super().__init__()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            self.lin = nn.Linear(12, 7)

    def forward(self, x: Tensor) -> Tensor:
        return torch.softmax(self.lin(x.flatten(1)), 1).sum(1, keepdim=True)


def test_noise_floor_maps_give_one_batched_as_alone() -> None:
    model = _SoftmaxSum()
    x = torch.randn(4, 3, 2, 2, generator=torch.Generator().manual_seed(0))
    gxsi = GradientSignInput(model).attribute(x, target=0)
    # the map is pure rounding noise, far below the output's ulps...
    assert 0 < float(gxsi.abs().max()) < 16 * torch.finfo(x.dtype).eps
    # ...whose plain min-max normalisation would stretch it to [0, 1]
    assert float(_minmax_reference(gxsi).min()) == 0.0
    rma = RecursiveMaskAttribution(model)
    with pytest.warns(UserWarning, match=r"examples \[0, 1, 2, 3\]"):
        batched = rma.attribute(x, target=0)
    assert torch.equal(batched, torch.ones_like(x))
    for i in range(4):
        with pytest.warns(UserWarning, match="rounding level"):
            alone = rma.attribute(x[i : i + 1], target=0)
        assert torch.equal(alone, batched[i : i + 1])


def test_informative_maps_do_not_warn(cnn: nn.Module, images: Any) -> None:
    x, y = images
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        m = RecursiveMaskAttribution(cnn).attribute(x, target=y, n_iterations=2)
    assert float(m.min()) == 0.0 and 0.5 < float(m.max()) <= 1.0


def test_instance_on_another_model_is_refused(cnn: nn.Module) -> None:
    other = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 2))
    with pytest.raises(ValueError, match=r"attribution_method.*different"):
        RecursiveMaskAttribution(cnn, GradientSignInput(other))
    with pytest.raises(ValueError, match=r"attribution_method.*different"):
        RecursiveMaskAttribution(cnn, NoiseTunnel(Saliency(other)))
    # the same model, its bound forward, or NoiseTunnel on it are accepted
    RecursiveMaskAttribution(cnn, GradientSignInput(cnn))
    RecursiveMaskAttribution(cnn.forward, GradientSignInput(cnn))
    RecursiveMaskAttribution(cnn, NoiseTunnel(Saliency(cnn.forward)))


def test_progress_bar_over_iterations(
    cnn: nn.Module, images: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    x, y = images
    rma = RecursiveMaskAttribution(cnn)
    rma.attribute(x, target=y, n_iterations=4, show_progress=True)
    err = capsys.readouterr().err
    assert "RecursiveMaskAttribution" in err and "4/4" in err
    rma.attribute(x, target=y, n_iterations=2)
    assert capsys.readouterr().err == ""
    with pytest.raises(TypeError, match="show_progress"):
        rma.attribute(x, target=y, show_progress=1)  # type: ignore[arg-type]


def test_noise_floor_reuses_the_methods_forward_pass(
    cnn: nn.Module, images: Any
) -> None:
    """GxSI runs the model on the unmasked inputs itself: no extra pass."""
    x, y = images
    calls: list[int] = []
    handle = cnn.register_forward_pre_hook(lambda m, a: calls.append(a[0].shape[0]))
    try:
        RecursiveMaskAttribution(cnn).attribute(x, target=y, n_iterations=3)
        assert calls == [5, 5, 5]  # one pass per iteration
        calls.clear()
        # IG never runs the model on the inputs alone: one extra pass
        RecursiveMaskAttribution(cnn, IntegratedGradients).attribute(
            x, target=y, n_iterations=2, n_steps=4
        )
        assert calls == [20, 5, 20]
    finally:
        handle.remove()
    assert not cnn._forward_hooks and not cnn._forward_pre_hooks
