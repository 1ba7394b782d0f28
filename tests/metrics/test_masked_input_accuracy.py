"""masked_input_accuracy (eq. 12) and its curve, against brute-force loops."""

from __future__ import annotations

import pytest
import torch
from captum.attr import InputXGradient, IntegratedGradients
from torch import Tensor, nn

from captum_ext.attr import GradientSignInput, RecursiveMaskAttribution
from captum_ext.metrics import masked_input_accuracy, masked_input_accuracy_curve
from captum_ext.models import nib_vgg
from tests.helpers import assert_model_unchanged, snapshot


@pytest.fixture(scope="module")
def cnn() -> nn.Module:
    torch.manual_seed(0)
    model = nib_vgg("vgg13-6", in_channels=2, width=1 / 16, image_size=6)
    with torch.no_grad():
        model.train()(torch.randn(32, 2, 6, 6))
        for m in model.modules():
            if isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0.0, 0.2)
    return model.eval()


@pytest.fixture
def data(cnn: nn.Module) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(23, 2, 6, 6, generator=g)
    with torch.no_grad():
        pred = cnn(x).argmax(1)
    y = pred.clone()
    y[::3] = (y[::3] + 1) % 10  # some wrong labels
    return x, y


def test_equals_per_example_loop(cnn: nn.Module, data: tuple[Tensor, Tensor]) -> None:
    x, y = data
    g = torch.Generator().manual_seed(2)
    masks = torch.rand(x.shape, generator=g)
    got = masked_input_accuracy(cnn, x, masks, y)
    assert got.dtype == torch.bool and got.shape == (23,)
    with torch.no_grad():
        expected = torch.tensor(
            [
                int(cnn(x[i : i + 1] * masks[i : i + 1]).argmax()) == int(y[i])
                for i in range(23)
            ]
        )
    assert torch.equal(got, expected)
    for chunk in (1, 5, 100):
        assert torch.equal(
            masked_input_accuracy(cnn, x, masks, y, max_examples_per_batch=chunk), got
        )
    # list labels; masks shared over channels broadcast
    shared = masks[:, :1]
    assert torch.equal(
        masked_input_accuracy(cnn, x, shared, y.tolist()),
        masked_input_accuracy(cnn, x, shared.expand_as(x).clone(), y),
    )
    # a mask of ones is the clean accuracy
    ones = masked_input_accuracy(cnn, x, torch.ones_like(x), y)
    with torch.no_grad():
        assert torch.equal(ones, cnn(x).argmax(1) == y)
    assert not ones.all() and ones.any()


def test_tuple_inputs_and_forward_args() -> None:
    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = nn.Linear(3, 4)
            self.b = nn.Linear(2, 4)

        def forward(self, x1: Tensor, x2: Tensor, w: Tensor) -> Tensor:
            return self.a(x1) * w + self.b(x2)

    torch.manual_seed(0)
    net = Net()
    x = (torch.randn(9, 3), torch.randn(9, 2))
    w = torch.rand(9, 1) + 0.5
    m = (torch.rand(9, 3), torch.rand(9, 2))
    y = torch.randint(0, 4, (9,))
    got = masked_input_accuracy(net, x, m, y, additional_forward_args=(w,))
    with torch.no_grad():
        expected = net(x[0] * m[0], x[1] * m[1], w).argmax(1) == y
    assert torch.equal(got, expected)
    chunked = masked_input_accuracy(
        net, x, m, y, additional_forward_args=(w,), max_examples_per_batch=2
    )
    assert torch.equal(chunked, got)


def test_bad_arguments(cnn: nn.Module, data: tuple[Tensor, Tensor]) -> None:
    x, y = data
    m = torch.ones_like(x)
    with pytest.raises(ValueError, match="labels"):
        masked_input_accuracy(cnn, x, m, y[:-1])
    with pytest.raises(TypeError, match="labels"):
        masked_input_accuracy(cnn, x, m, y.float())
    with pytest.raises(ValueError, match="labels"):
        masked_input_accuracy(cnn, x, m, y - 20)
    with pytest.raises(ValueError, match="labels"):
        masked_input_accuracy(cnn, x, m, y + 10)  # class 10+ of a 10-class model
    with pytest.raises(ValueError, match="masks"):
        masked_input_accuracy(cnn, x, m[:, :, :3], y)
    with pytest.raises(TypeError, match="masks"):
        masked_input_accuracy(cnn, x, (m,), y)
    with pytest.raises(ValueError, match="max_examples_per_batch"):
        masked_input_accuracy(cnn, x, m, y, max_examples_per_batch=0)
    with pytest.raises(ValueError, match="class scores"):
        masked_input_accuracy(lambda t: t.sum((1, 2, 3)), x, m, y)


def test_curve_equals_masks_then_metric(
    cnn: nn.Module, data: tuple[Tensor, Tensor]
) -> None:
    x, y = data
    state = snapshot(cnn)
    curve = masked_input_accuracy_curve(cnn, x, y, GradientSignInput, n_iterations=4)
    assert curve.shape == (23, 5) and curve.dtype == torch.bool
    masks = RecursiveMaskAttribution(cnn).attribute(
        x, target=y, n_iterations=4, return_all_masks=True
    )
    with torch.no_grad():
        assert torch.equal(curve[:, 0], cnn(x).argmax(1) == y)
    for i in range(4):
        with torch.no_grad():
            want = cnn(x * masks[i]).argmax(1) == y  # eq. 12, written out
        assert torch.equal(curve[:, i + 1], want)
    for chunk in (4, 50):
        chunked = masked_input_accuracy_curve(
            cnn, x, y, GradientSignInput, n_iterations=4, max_examples_per_batch=chunk
        )
        assert torch.equal(chunked, curve)
    assert_model_unchanged(state, cnn)


def test_curve_predicted_label_masks(
    cnn: nn.Module, data: tuple[Tensor, Tensor]
) -> None:
    x, y = data
    with torch.no_grad():
        pred = cnn(x).argmax(1)
    got = masked_input_accuracy_curve(
        cnn, x, y, InputXGradient, n_iterations=3, mask_target="predicted"
    )
    masks = RecursiveMaskAttribution(cnn, InputXGradient).attribute(
        x, target=pred, n_iterations=3, return_all_masks=True
    )
    for i in range(3):
        # masks explain the prediction, accuracy is still scored on the label
        assert torch.equal(got[:, i + 1], masked_input_accuracy(cnn, x, masks[i], y))


def test_curve_forwards_attribution_kwargs_and_checks_them(
    cnn: nn.Module, data: tuple[Tensor, Tensor]
) -> None:
    x, y = data
    from captum.attr import Saliency

    a = masked_input_accuracy_curve(
        cnn, x, y, Saliency, n_iterations=2, attribution_kwargs={"abs": False}
    )
    masks = RecursiveMaskAttribution(cnn, Saliency).attribute(
        x, target=y, n_iterations=2, abs=False
    )
    assert torch.equal(a[:, 2], masked_input_accuracy(cnn, x, masks, y))
    with pytest.raises(ValueError, match="mask_target"):
        masked_input_accuracy_curve(cnn, x, y, mask_target="true")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="attribution_kwargs"):
        masked_input_accuracy_curve(cnn, x, y, attribution_kwargs={"target": 0})
    with pytest.raises(ValueError, match="n_iterations"):
        masked_input_accuracy_curve(cnn, x, y, n_iterations=0)
    with pytest.raises(ValueError, match="labels"):
        masked_input_accuracy_curve(cnn, x, y[:3])


def test_curve_chunks_per_example_attribution_kwargs() -> None:
    """Per-example tensors in attribution_kwargs follow the chunks (review fix)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 5)).eval()
    x = torch.randn(10, 1, 4, 4)
    y = torch.randint(0, 5, (10,))
    kwargs = {"baselines": 0.1 * torch.randn(10, 1, 4, 4), "n_steps": 4}
    full = masked_input_accuracy_curve(
        model, x, y, IntegratedGradients, n_iterations=3, attribution_kwargs=kwargs
    )
    chunked = masked_input_accuracy_curve(
        model,
        x,
        y,
        IntegratedGradients,
        n_iterations=3,
        attribution_kwargs=kwargs,
        max_examples_per_batch=4,
    )
    assert torch.equal(full, chunked)


def test_curve_repeats_per_example_forward_args_for_each_iteration() -> None:
    """A per-example forward argument follows its example through the chunks
    and the stacked iterations: batched equals one example at a time."""

    class Scaled(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = nn.Linear(6, 4, bias=False)

        def forward(self, x: Tensor, w: Tensor) -> Tensor:
            return self.a(x) * w

    torch.manual_seed(0)
    net = Scaled().eval()
    x = torch.randn(7, 6)
    w = torch.tensor([1.0, -1.0, 2.0, -0.5, 1.0, -2.0, 0.5]).view(7, 1)
    y = torch.randint(0, 4, (7,))
    single = torch.cat(
        [
            masked_input_accuracy_curve(
                net,
                x[i : i + 1],
                y[i : i + 1],
                additional_forward_args=(w[i : i + 1],),
                n_iterations=3,
            )
            for i in range(7)
        ]
    )
    # the sign of w flips the class order: ignoring w would change the curve
    assert not torch.equal(
        single,
        masked_input_accuracy_curve(
            net, x, y, additional_forward_args=(w.abs(),), n_iterations=3
        ),
    )
    for chunk in (None, 3):
        got = masked_input_accuracy_curve(
            net,
            x,
            y,
            additional_forward_args=(w,),
            n_iterations=3,
            max_examples_per_batch=chunk,
        )
        assert torch.equal(got, single)


def test_auto_batch_default_equals_one_pass(monkeypatch: pytest.MonkeyPatch) -> None:
    """The default ``"auto"`` cap splits the passes, not the result."""
    from captum_ext.metrics import _curves

    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 5)).eval()
    x, y = torch.randn(9, 1, 4, 4), torch.randint(0, 5, (9,))
    m = torch.rand(9, 1, 4, 4)
    rows: list[int] = []
    hook = model.register_forward_pre_hook(lambda mod, inp: rows.append(len(inp[0])))
    try:
        whole = masked_input_accuracy(model, x, m, y, max_examples_per_batch=None)
        curve = masked_input_accuracy_curve(
            model, x, y, n_iterations=2, max_examples_per_batch=None
        )
        assert rows[0] == 9
        monkeypatch.setattr(_curves, "AUTO_BATCH_ELEMENTS", 4 * 16)  # 4 per pass
        rows.clear()
        assert torch.equal(masked_input_accuracy(model, x, m, y), whole)
        assert rows == [4, 4, 1]
        assert torch.equal(
            masked_input_accuracy_curve(model, x, y, n_iterations=2), curve
        )
    finally:
        hook.remove()
    with torch.no_grad():
        assert torch.equal(whole, model(x * m).argmax(1) == y)
