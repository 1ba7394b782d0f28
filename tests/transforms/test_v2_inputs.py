"""The transforms behave like torchvision v2 transforms: integer (uint8)
tensors, PIL images, tv_tensors and (image, label, ...) samples."""

from __future__ import annotations

import pytest
import torch

from captum_ext.transforms import InvertedInputDropout, MeanAblation, MeanCutout

v2 = pytest.importorskip("torchvision.transforms.v2")
tv_tensors = pytest.importorskip("torchvision.tv_tensors")
Image = pytest.importorskip("PIL.Image")


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _u8(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 256, shape, dtype=torch.uint8, generator=_gen(seed))


MEAN = torch.tensor([100.4, 20.6, 250.5]).view(3, 1, 1)


def _transforms(seed: int) -> dict[str, torch.nn.Module]:
    return {
        "MeanAblation": MeanAblation(0.4, MEAN, generator=_gen(seed)),
        "InvertedInputDropout": InvertedInputDropout(0.3, generator=_gen(seed)),
        "MeanCutout": MeanCutout(3, MEAN, generator=_gen(seed)),
    }


@pytest.mark.parametrize("name", ["MeanAblation", "InvertedInputDropout", "MeanCutout"])
def test_uint8_is_the_float_result_rounded_and_clamped(name: str) -> None:
    x = _u8(2, 3, 8, 8)
    out = _transforms(1)[name](x)
    ref = _transforms(1)[name](x.float())  # the same draws on the float image
    assert out.dtype == torch.uint8 and out.shape == x.shape
    assert torch.equal(out, ref.round().clamp(0, 255).to(torch.uint8))
    assert not torch.equal(out, x)


def test_uint8_values_by_hand() -> None:
    x = torch.full((3, 4, 4), 200, dtype=torch.uint8)
    # mean ablation with p close to 1: every entry becomes round(mean) per channel
    out = MeanAblation(0.999999, MEAN, generator=_gen())(x)
    want = torch.tensor([100, 21, 250], dtype=torch.uint8).view(3, 1, 1)
    kept = out == 200
    assert torch.equal(torch.where(kept, want.expand_as(x), out), want.expand_as(x))
    # inverted dropout, p = 0.5: survivors 200 / 0.5 = 400 saturate at 255
    out = InvertedInputDropout(0.5, generator=_gen())(x)
    assert set(out.unique().tolist()) == {0, 255}
    out = InvertedInputDropout(0.5, generator=_gen())(x // 2)
    assert set(out.unique().tolist()) == {0, 200}
    # cutout: the region is round(mean), the rest untouched
    out = MeanCutout(2, MEAN, generator=_gen())(x)
    changed = (out != 200).any(0)
    assert changed.sum() in (1, 2, 4)  # a 2x2 square, clipped at the border
    assert torch.equal(out[:, changed], want[:, 0].expand(-1, int(changed.sum())))


@pytest.mark.parametrize("mode", ["RGB", "L"])
@pytest.mark.parametrize("name", ["MeanAblation", "InvertedInputDropout", "MeanCutout"])
def test_pil_images_round_trip(name: str, mode: str) -> None:
    channels = 3 if mode == "RGB" else 1
    x = _u8(channels, 6, 7)
    array = x.permute(1, 2, 0).numpy()
    image = Image.fromarray(array[..., 0] if mode == "L" else array)
    t = _transforms(2)[name]
    if channels == 1 and name != "InvertedInputDropout":
        t = type(t)(*((3,) if name == "MeanCutout" else ()), **_kw(name))
    out = t(image)
    assert isinstance(out, Image.Image) and out.mode == mode and out.size == (7, 6)
    ref = (
        _transforms(2)[name]
        if channels == 3
        else type(t)(*((3,) if name == "MeanCutout" else ()), **_kw(name))
    )(x)
    got = torch.from_numpy(__import__("numpy").asarray(out).copy())
    got = got[None] if got.dim() == 2 else got.permute(2, 0, 1)
    assert torch.equal(got, ref)


def _kw(name: str) -> dict:
    kw: dict = {"generator": _gen(2)}
    if name == "MeanAblation":
        kw.update(p=0.4, mean=torch.full((1, 1, 1), 99.6))
    elif name == "MeanCutout":
        kw.update(mean=torch.full((1, 1, 1), 99.6))
    else:
        kw.update(p=0.3)
    return kw


def test_pil_mode_outside_l_rgb_rgba_is_refused() -> None:
    image = Image.new("F", (4, 4))
    with pytest.raises(TypeError, match="mode 'F'"):
        InvertedInputDropout(0.2)(image)


def test_image_label_samples_pass_the_label_through() -> None:
    x = torch.rand(3, 8, 8)
    label = torch.tensor(4)
    t = MeanAblation(0.5, torch.zeros(3, 1, 1), generator=_gen(3))
    ref = MeanAblation(0.5, torch.zeros(3, 1, 1), generator=_gen(3))(x)
    # one tuple argument, or several arguments (as v2.Compose passes them)
    out = t((x, label))
    assert isinstance(out, tuple) and out[1] is label
    assert torch.equal(out[0], ref)
    t = MeanAblation(0.5, torch.zeros(3, 1, 1), generator=_gen(3))
    out_x, out_label, out_int = t(x, label, 7)
    assert torch.equal(out_x, ref) and out_label is label and out_int == 7


def test_tv_tensors_images_transformed_the_rest_passed_through() -> None:
    image = tv_tensors.Image(_u8(3, 8, 8))
    boxes = tv_tensors.BoundingBoxes(
        torch.tensor([[1, 1, 5, 5]]), format="XYXY", canvas_size=(8, 8)
    )
    mask = tv_tensors.Mask(torch.ones(8, 8, dtype=torch.uint8))
    sample = {"image": image, "boxes": boxes, "mask": mask, "label": 3}
    out = MeanCutout(4, MEAN, generator=_gen(4))(sample)
    assert isinstance(out["image"], tv_tensors.Image)
    assert out["image"].dtype == torch.uint8
    assert torch.equal(out["image"], MeanCutout(4, MEAN, generator=_gen(4))(image))
    assert not torch.equal(out["image"], image)
    assert out["boxes"] is boxes and out["mask"] is mask and out["label"] == 3
    # with a tv_tensors Image present, plain tensors are not images
    plain = torch.rand(3, 8, 8)
    out = InvertedInputDropout(0.5, generator=_gen())((plain, image))
    assert out[0] is plain and not torch.equal(out[1], image)


def test_inside_v2_compose_with_pil_and_labels() -> None:
    x = _u8(3, 8, 8)
    pil = Image.fromarray(x.permute(1, 2, 0).numpy())
    pipeline = v2.Compose(
        [
            MeanAblation(0.3, MEAN, generator=_gen(5)),  # on the PIL image
            v2.ToImage(),
            MeanCutout(3, MEAN, generator=_gen(6)),  # on the uint8 tensor
            v2.ToDtype(torch.float32, scale=True),
            InvertedInputDropout(0.1, generator=_gen(7)),
        ]
    )
    image, label = pipeline(pil, 5)
    assert label == 5
    assert isinstance(image, tv_tensors.Image) and image.dtype == torch.float32
    assert image.shape == (3, 8, 8)


def test_nothing_to_transform_is_refused() -> None:
    with pytest.raises(TypeError, match="nothing to transform"):
        MeanAblation(0.1, torch.zeros(3))(("a", 3))
    with pytest.raises(TypeError, match="nothing to transform"):
        InvertedInputDropout(0.1)([1.0, 2.0])


class _PILDataset(torch.utils.data.Dataset):  # type: ignore[type-arg]
    def __init__(self, images: torch.Tensor) -> None:
        self.images = images

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, i: int) -> tuple:
        array = self.images[i].permute(1, 2, 0).numpy()
        return Image.fromarray(array), i % 3


def test_from_data_reads_pil_image_label_datasets() -> None:
    images = _u8(7, 3, 5, 6, seed=9)
    ablate = MeanAblation.from_data(
        _PILDataset(images), p=0.2, reduce_dims=(1, 2), batch_size=3
    )
    want = images.double().mean(dim=(0, 2, 3)).view(3, 1, 1)
    torch.testing.assert_close(ablate.mean.double(), want)
    # the transform then applies to the dataset's PIL images (0-255 scale)
    out = ablate(_PILDataset(images)[0])
    assert isinstance(out[0], Image.Image) and out[1] == 0
