"""Catalogue of bad inputs: closed-form regressions, cutout, pruning, recursive mask.

Each case is an input that once gave a silent, meaningless result (or a
refusal of a valid value). It must now give a clear error or warning, of the
stated type, whose message names the argument at fault, or be accepted where
it is valid. The message check is a regular expression on the argument's name
in backticks.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from captum_ext.attr import GradientSignInput, RecursiveMaskAttribution, pruning_mask
from captum_ext.transforms import MeanCutout
from captum_ext.transforms.linear import ccp_regression, modified_l2_regression


def _regression_data() -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(40, 3, generator=g, dtype=torch.float64)
    y = x @ torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
    return x, y


def _duplicate_column() -> Tensor:
    x, _ = _regression_data()
    return torch.cat([x, x[:, :1]], dim=1)


def _dependent_column() -> Tensor:
    x, _ = _regression_data()
    return torch.cat([x, 0.3 * x[:, :1] - 1.7 * x[:, 1:2]], dim=1)


class _OtherModel(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        return x.flatten(1)[:, :2]


class _SoftmaxSum(nn.Module):
    """Output 1 whatever the input: its gradient is rounding noise."""

    def __init__(self) -> None:
        super().__init__()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            self.lin = nn.Linear(12, 7)

    def forward(self, x: Tensor) -> Tensor:
        return torch.softmax(self.lin(x.flatten(1)), 1).sum(1, keepdim=True)


# (case id, call, exception type, the argument its message must name)
ERRORS: list[tuple[str, Callable[[], Any], type[Exception], str]] = [
    (
        "ccp_regression-lam0-duplicate-column",
        lambda: ccp_regression(_duplicate_column(), _regression_data()[1], 0.0),
        ValueError,
        "X",
    ),
    (
        "ccp_regression-lam0-dependent-column",
        lambda: ccp_regression(_dependent_column(), _regression_data()[1], 0.0),
        ValueError,
        "lam",
    ),
    (
        "modified_l2_regression-lam0-duplicate-column",
        lambda: modified_l2_regression(
            _duplicate_column().numpy(), _regression_data()[1].numpy(), 0.0
        ),
        ValueError,
        "X",
    ),
    (
        "modified_l2_regression-lam0-dependent-column",
        lambda: modified_l2_regression(_dependent_column(), _regression_data()[1], 0.0),
        ValueError,
        "lam",
    ),
    (
        "MeanCutout-size-larger-than-image-full-mean",
        lambda: MeanCutout(20, torch.zeros(1, 8, 8)),
        ValueError,
        "size",
    ),
    (
        "MeanCutout-size-larger-than-image-channel-mean",
        lambda: MeanCutout(20, torch.zeros(1, 1, 1))(torch.rand(4, 1, 8, 8)),
        ValueError,
        "size",
    ),
    (
        "MeanCutout-height-larger-than-image",
        lambda: MeanCutout((9, 2), torch.zeros(3, 1, 1))(torch.rand(3, 8, 8)),
        ValueError,
        "size",
    ),
    (
        "MeanCutout-window-longer-than-row",
        lambda: MeanCutout(6, torch.zeros(5)),
        ValueError,
        "size",
    ),
    (
        "RecursiveMaskAttribution-instance-on-another-model",
        lambda: RecursiveMaskAttribution(
            nn.Linear(4, 2), GradientSignInput(_OtherModel())
        ),
        ValueError,
        "attribution_method",
    ),
    (
        "pruning_mask-numpy-bool-amount",
        lambda: pruning_mask(torch.arange(4.0), np.bool_(True)),
        TypeError,
        "amount",
    ),
    (
        "pruning_mask-numpy-int-too-large",
        lambda: pruning_mask(torch.arange(4.0), np.int64(5)),
        ValueError,
        "amount",
    ),
]


@pytest.mark.parametrize(
    ("call", "error", "argument"),
    [pytest.param(c, e, a, id=i) for i, c, e, a in ERRORS],
)
def test_refused_with_the_argument_named(
    call: Callable[[], Any], error: type[Exception], argument: str
) -> None:
    with pytest.raises(error, match=f"`{argument}`") as info:
        call()
    assert type(info.value) is error


def test_regressions_still_solve_with_a_penalty_or_independent_columns() -> None:
    """The refusal is for rank deficiency at lam = 0 only."""
    x, y = _regression_data()
    fit = ccp_regression(x, y, 0.0)  # independent columns: ordinary least squares
    torch.testing.assert_close(fit.coef, torch.tensor([1.0, -2.0, 0.5]).double())
    # with a penalty the duplicate columns share the weight equally (symmetry)
    dup = ccp_regression(_duplicate_column(), y, 0.3).coef
    torch.testing.assert_close(dup[0], dup[3], rtol=1e-10, atol=1e-12)
    dup = modified_l2_regression(_duplicate_column(), y, 0.2).coef
    torch.testing.assert_close(dup[0], dup[3], rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize(
    "amount", [np.int64(2), np.int32(2), 2, np.float64(0.5), np.float32(0.5), 0.5]
)
def test_pruning_mask_takes_numpy_scalars(amount: Any) -> None:
    scores = torch.tensor([0.1, 3.0, -2.0, 2.0])
    assert pruning_mask(scores, amount).tolist() == [False, True, False, True]


def test_cutout_size_equal_to_the_image_is_accepted() -> None:
    cut = MeanCutout(
        8, torch.zeros(1, 8, 8), generator=torch.Generator().manual_seed(0)
    )
    out = cut(torch.ones(5, 1, 8, 8))
    # an 8-wide window centred anywhere but the middle is clipped at the border
    assert out.shape == (5, 1, 8, 8) and bool((out == 1).any())


def test_recursive_mask_noise_floor_warns_and_gives_one() -> None:
    x = torch.randn(3, 3, 2, 2, generator=torch.Generator().manual_seed(1))
    model = _SoftmaxSum()
    with pytest.warns(UserWarning, match="`attribution_method`") as record:
        mask = RecursiveMaskAttribution(model).attribute(x, target=0)
    assert len(record) == 1 and "rounding level" in str(record[0].message)
    assert torch.equal(mask, torch.ones_like(x))
