"""The trained torchvision ResNet-18 on the digits: cache, accuracy, and the
pattern methods against random order on image degradation.

The first run trains the model (about a minute and a half on a 2-core CPU)
and caches it in ``captum_ext.models.model_cache_dir()``; later runs load it.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

import captum_ext.models._vision as vision
from captum_ext.attr import (
    GradientSignInput,
    PatternAttribution,
    PatternGuidedIG,
    PatternNet,
    fit_patterns,
)
from captum_ext.data import accuracy
from captum_ext.metrics import aopc, image_degradation
from captum_ext.models import (
    TrainedVisionModel,
    digits_rgb,
    digits_vision_model,
    model_cache_dir,
)
from tests.helpers import assert_model_unchanged, snapshot

pytest.importorskip("torchvision")


@pytest.fixture(scope="module")
def trained() -> TrainedVisionModel:
    return digits_vision_model("resnet18")


@pytest.fixture(scope="module")
def data():  # type: ignore[no-untyped-def]
    return digits_rgb()


def test_digits_rgb_is_the_upsampled_digits(data) -> None:  # type: ignore[no-untyped-def]
    assert data.x_train.shape == (1347, 3, 32, 32)
    assert data.x_test.shape == (450, 3, 32, 32)
    # three equal channels; averaging each 4x4 block of a bilinear x4
    # upsampling does not give back the 8x8 image exactly, but its
    # nearest-centre samples are close to it: check the coarse structure
    assert torch.equal(data.x_test[:, 0], data.x_test[:, 2])
    from captum_ext.data import load_digits

    small = load_digits()
    pooled = torch.nn.functional.avg_pool2d(data.x_test[:, :1], 4)
    corr = torch.corrcoef(torch.stack([pooled.flatten(), small.x_test.flatten()]))
    assert corr[0, 1] > 0.95
    assert torch.equal(data.y_test, small.y_test)


@pytest.mark.slow
def test_trained_resnet18_accuracy(trained: TrainedVisionModel, data) -> None:  # type: ignore[no-untyped-def]
    assert trained.arch == "resnet18"
    assert not trained.model.training
    assert trained.test_accuracy > 0.9
    # the recorded accuracy is the loaded model's
    assert accuracy(trained.model, data.x_test, data.y_test) == pytest.approx(
        trained.test_accuracy, abs=1e-12
    )
    assert trained.path.parent == model_cache_dir()
    assert trained.path.is_file()


def test_cache_dir_env_override(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("CAPTUM_EXT_CACHE", str(tmp_path / "c"))
    assert model_cache_dir() == tmp_path / "c"
    monkeypatch.setenv("CAPTUM_EXT_CACHE", "")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert model_cache_dir() == tmp_path / "xdg" / "captum-ext"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert model_cache_dir() == tmp_path / "home" / ".cache" / "captum-ext"


@pytest.mark.slow
def test_cached_state_is_loaded_not_retrained(
    trained: TrainedVisionModel,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    shutil.copy(trained.path, tmp_path / trained.path.name)
    monkeypatch.setenv("CAPTUM_EXT_CACHE", str(tmp_path))

    def no_training(*args: object, **kwargs: object) -> None:
        raise AssertionError("retrained although a cached state exists")

    monkeypatch.setattr(vision, "train_model", no_training)
    loaded = digits_vision_model("resnet18")
    assert loaded.from_cache and loaded.path == tmp_path / trained.path.name
    assert loaded.test_accuracy == trained.test_accuracy
    for (k, a), (k2, b) in zip(
        trained.model.state_dict().items(), loaded.model.state_dict().items()
    ):
        assert k == k2 and torch.equal(a, b), k


@pytest.mark.slow
def test_corrupt_cache_is_retrained_and_rewritten_atomically(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("CAPTUM_EXT_CACHE", str(tmp_path))
    calls = []

    def fake_training(model, x, y, **kwargs):  # type: ignore[no-untyped-def]
        calls.append(kwargs["epochs"])
        model.eval()
        return []

    monkeypatch.setattr(vision, "train_model", fake_training)
    path = tmp_path / "digits_mobilenet_v3_small_e1_s0_v1.pt"
    path.write_bytes(b"truncated")
    out = digits_vision_model("mobilenet_v3_small", epochs=1)
    assert calls == [1] and not out.from_cache and out.path == path
    record = torch.load(path, weights_only=True)
    assert record["arch"] == "mobilenet_v3_small"
    assert record["test_accuracy"] == out.test_accuracy
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]  # no temp left
    # cache=False: trained again, nothing written
    path.unlink()
    out = digits_vision_model("mobilenet_v3_small", epochs=1, cache=False)
    assert calls == [1, 1] and not path.exists()


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="`arch`"):
        digits_vision_model("resnet50")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="`epochs`"):
        digits_vision_model("resnet18", epochs=0)
    with pytest.raises(ValueError, match="`size`"):
        digits_rgb(size=4)


# -- pattern methods vs random order on image degradation (AOPC, MoRF) --------

N_IMAGES = 64
PATCH = 4  # one pixel of the original 8x8 digit
N_STEPS = 16  # the top quarter of the image
N_RANDOM = 4


def _aopc(model, x, t, attributions, order="morf", seed=0):  # type: ignore[no-untyped-def]
    curves = image_degradation(
        model,
        x,
        attributions,
        target=t,
        patch_size=PATCH,
        n_steps=N_STEPS,
        order=order,
        # zero = the data mean (standardised images); the patch's own mean
        # barely changes an image upsampled from 8x8
        fill="zero",
        generator=torch.Generator().manual_seed(seed),
    )
    return float(aopc(curves).mean())


@pytest.fixture(scope="module")
def degradation_setup(trained: TrainedVisionModel, data):  # type: ignore[no-untyped-def]
    model = trained.model
    x, t = data.x_test[:N_IMAGES], data.y_test[:N_IMAGES]
    # random order: the best of 4 seeded permutations, a bar above their mean
    random_aopc = max(
        _aopc(model, x, t, torch.zeros_like(x), "random", seed)
        for seed in range(N_RANDOM)
    )
    return model, x, t, random_aopc


@pytest.fixture(scope="module")
def patterns(trained: TrainedVisionModel, data):  # type: ignore[no-untyped-def]
    batches = [data.x_train[i : i + 128] for i in range(0, 512, 128)]
    return fit_patterns(trained.model, batches)  # kind="auto"


@pytest.mark.slow
def test_gxsi_beats_random_order(degradation_setup) -> None:  # type: ignore[no-untyped-def]
    model, x, t, random_aopc = degradation_setup
    attr = GradientSignInput(model).attribute(x, target=t)
    assert _aopc(model, x, t, attr) > random_aopc


def _attribute(method, model, patterns, x, t):  # type: ignore[no-untyped-def]
    if method == "PatternAttribution":
        return PatternAttribution(model, patterns).attribute(x, target=t)
    if method == "PatternNet":
        # the signal is a product of per-layer inflations over 21 layers: up
        # to ~5e32 here, ~2e39 with kind="relu" patterns (docs/patterns.md)
        explainer = PatternNet(model, patterns, compute_dtype=torch.float64)
        attr = explainer.attribute(x, target=t)
        assert attr.dtype == torch.float64
        # PatternNet estimates the signal, whose sign is not a relevance:
        # rank patches by its magnitude, scaled per image into float32
        scale = attr.abs().flatten(1).amax(1).view(-1, 1, 1, 1)
        return (attr / scale).abs().float()
    return PatternGuidedIG(model, patterns).attribute(x, target=t, n_steps=16)


@pytest.mark.slow
@pytest.mark.parametrize(
    "method", ["PatternAttribution", "PatternGuidedIG", "PatternNet"]
)
def test_pattern_methods_beat_random_order(degradation_setup, patterns, method) -> None:  # type: ignore[no-untyped-def]
    """The logit is explained, with the default estimator choice ("auto")."""
    model, x, t, random_aopc = degradation_setup
    before = snapshot(model)
    attr = _attribute(method, model, patterns, x, t)
    assert torch.isfinite(attr).all()
    assert _aopc(model, x, t, attr) > random_aopc
    assert_model_unchanged(before, model)


@pytest.mark.slow
def test_relu_estimator_everywhere_is_what_fails_on_resnet(  # type: ignore[no-untyped-def]
    trained: TrainedVisionModel, data, degradation_setup, patterns
) -> None:
    """The references' choice, the two-component estimator on every layer,
    ranks patches no better than random order for PatternAttribution here: the
    residual branches end in a sum, not a ReLU. "auto" differs from it only on
    those layers."""
    model, x, t, random_aopc = degradation_setup
    batches = [data.x_train[i : i + 128] for i in range(0, 512, 128)]
    relu = fit_patterns(model, batches, kind="relu")
    for name in relu:
        ends_branch = name.endswith((".conv2", ".downsample.0"))
        assert torch.equal(relu[name], patterns[name]) != ends_branch, name
    attr = _attribute("PatternAttribution", model, relu, x, t)
    relu_aopc = _aopc(model, x, t, attr)
    auto_aopc = _aopc(
        model, x, t, _attribute("PatternAttribution", model, patterns, x, t)
    )
    assert relu_aopc < random_aopc < auto_aopc
