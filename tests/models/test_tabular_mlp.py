"""tabular_mlp: the architecture of the ablated-augmentation paper (section 4.1)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from captum_ext.models import tabular_mlp


def test_depths_and_shapes() -> None:
    linear = tabular_mlp(30, 2, hidden_layers=0)
    assert len(linear) == 1 and isinstance(linear[0], nn.Linear)
    deep = tabular_mlp(10, 1, hidden_layers=3, width=7)
    linears = [m for m in deep if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [
        (10, 7),
        (7, 7),
        (7, 7),
        (7, 1),
    ]
    assert sum(isinstance(m, nn.ReLU) for m in deep) == 3
    assert deep(torch.randn(5, 10)).shape == (5, 1)
    assert all(
        m.bias is None
        for m in tabular_mlp(4, 2, 1, bias=False)
        if isinstance(m, nn.Linear)
    )


@pytest.mark.parametrize(
    "kwargs",
    [
        {"in_features": 0},
        {"out_features": 0},
        {"hidden_layers": -1},
        {"hidden_layers": 1.5},
        {"width": True},
    ],
)
def test_bad_arguments(kwargs: dict[str, object]) -> None:
    args: dict[str, object] = {"in_features": 4, "out_features": 2} | kwargs
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        tabular_mlp(**args)  # type: ignore[arg-type]
