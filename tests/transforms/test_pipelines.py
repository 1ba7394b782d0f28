"""The transforms inside torchvision Compose, Dataset transforms, DataLoader workers
and train_model."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from captum_ext.data import load_breast_cancer, train_model
from captum_ext.models import tabular_mlp
from captum_ext.transforms import InvertedInputDropout, MeanAblation, MeanCutout

v2 = pytest.importorskip("torchvision.transforms.v2")
tv_tensors = pytest.importorskip("torchvision.tv_tensors")


def test_inside_torchvision_compose() -> None:
    images = torch.randint(0, 256, (3, 8, 8), dtype=torch.uint8)
    mean = torch.full((3, 1, 1), 0.5)
    pipeline = v2.Compose(
        [
            v2.ToDtype(torch.float32, scale=True),
            MeanAblation(0.3, mean, generator=torch.Generator().manual_seed(0)),
            MeanCutout(3, mean, generator=torch.Generator().manual_seed(1)),
            InvertedInputDropout(0.1, generator=torch.Generator().manual_seed(2)),
        ]
    )
    out = pipeline(images)
    assert out.shape == (3, 8, 8) and out.dtype == torch.float32
    # tv_tensors keep their type through the transforms
    wrapped = pipeline(tv_tensors.Image(images))
    assert isinstance(wrapped, tv_tensors.Image)
    # a whole batch goes through the same pipeline
    batch = pipeline(torch.randint(0, 256, (5, 3, 8, 8), dtype=torch.uint8))
    assert batch.shape == (5, 3, 8, 8)


class _RowDataset(Dataset[torch.Tensor]):
    """Identical rows: any difference between outputs comes from the masks."""

    def __init__(self, n: int, k: int, transform: torch.nn.Module) -> None:
        self.x = torch.ones(n, k)
        self.transform = transform

    def __len__(self) -> int:
        return self.x.shape[0]

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.transform(self.x[i])


def _epoch(dataset: Dataset[torch.Tensor], seed: int, workers: int) -> torch.Tensor:
    loader = DataLoader(
        dataset,
        batch_size=4,
        num_workers=workers,
        generator=torch.Generator().manual_seed(seed),
    )
    return torch.cat(list(loader))


@pytest.mark.parametrize("with_generator", [True, False])
def test_dataloader_workers_are_reproducible_and_independent(
    with_generator: bool,
) -> None:
    def make() -> _RowDataset:
        gen = torch.Generator().manual_seed(123) if with_generator else None
        return _RowDataset(16, 40, MeanAblation(0.5, torch.zeros(40), generator=gen))

    a = _epoch(make(), seed=0, workers=2)
    b = _epoch(make(), seed=0, workers=2)
    assert torch.equal(a, b)  # same DataLoader seed: same masks
    c = _epoch(make(), seed=1, workers=2)
    assert not torch.equal(a, c)
    # batches of 4 alternate between the two workers: worker 0 makes rows 0-3,
    # worker 1 rows 4-7. With the generator copied as-is into both workers they
    # would be identical; they must differ.
    assert not torch.equal(a[0:4], a[4:8])
    # and all 16 masks are distinct from one another
    assert len({tuple(row.tolist()) for row in a}) == 16


def test_generator_is_used_as_given_in_the_main_process() -> None:
    def make() -> _RowDataset:
        gen = torch.Generator().manual_seed(9)
        return _RowDataset(8, 6, InvertedInputDropout(0.5, generator=gen))

    assert torch.equal(_epoch(make(), 0, 0), _epoch(make(), 1, 0))
    expected = InvertedInputDropout(0.5, generator=torch.Generator().manual_seed(9))
    rows = torch.stack([expected(torch.ones(6)) for _ in range(8)])
    assert torch.equal(_epoch(make(), 0, 0), rows)


def test_train_model_with_a_transform_is_reproducible() -> None:
    data = load_breast_cancer()
    ablate = MeanAblation.from_data(data.x_train, 0.3)

    def run() -> torch.Tensor:
        torch.manual_seed(0)
        model = tabular_mlp(30, 2, hidden_layers=1, width=16)
        train_model(model, data.x_train, data.y_train, epochs=2, transform=ablate)
        return torch.cat([p.detach().flatten() for p in model.parameters()])

    assert torch.equal(run(), run())
