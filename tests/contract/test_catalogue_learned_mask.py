"""Catalogue of bad inputs and faults for LearnedMask.

Each case must raise the stated exception with a message that names the
argument at fault (in backticks), leave the model unchanged, and, where the
fault is visible in the arguments, do so before any forward pass. None of them
may return a mask: a NaN in the model's outputs or gradients must never turn
into a silently NaN mask.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
import torch
from torch import Tensor, nn

from captum_ext.attr import LearnedMask
from tests.helpers import CallCounter, assert_model_unchanged, snapshot


def _cnn() -> nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return nn.Sequential(
            nn.Conv2d(1, 3, 3, padding=1),
            nn.ReLU(),
            nn.Flatten(),
            nn.Linear(3 * 8 * 8, 4),
        ).eval()


class _NaNGradient(nn.Module):
    """Finite outputs whose gradient with respect to the input is NaN."""

    def __init__(self) -> None:
        super().__init__()
        self.net = _cnn()

    def forward(self, x: Tensor) -> Tensor:
        bad = torch.sqrt(x.flatten(1)[:, :1] - 1e3)  # NaN in the forward pass
        hidden = torch.where(torch.isnan(bad), torch.zeros_like(bad), bad)
        return self.net(x) + hidden  # finite; d/dx is 0 * NaN = NaN


class _NaNOutput(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = _cnn()

    def forward(self, x: Tensor) -> Tensor:
        out = self.net(x)
        return out + torch.tensor(float("nan"))


_X = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(0))
_POOL = torch.randn(5, 1, 8, 8, generator=torch.Generator().manual_seed(1))


def _with(x: Tensor, index: tuple[int, ...], value: float) -> Tensor:
    x = x.clone()
    x[index] = value
    return x


@dataclass
class Case:
    id: str
    exc: type[Exception]
    names: str  # the argument the message must name
    kwargs: dict[str, Any] = field(default_factory=dict)
    inputs: Any = None
    model: Callable[[], nn.Module] = _cnn
    before_work: bool = True


CATALOGUE = [
    Case("empty batch", ValueError, "inputs", inputs=torch.empty(0, 1, 8, 8)),
    Case(
        "empty batch, tuple inputs",
        ValueError,
        "inputs",
        inputs=(torch.empty(0, 1, 8, 8),),
        kwargs={"distractors": (_POOL,)},
    ),
    Case(
        "NaN in inputs", ValueError, "inputs", inputs=_with(_X, (1, 0, 2, 3), 1e999 * 0)
    ),
    Case("inf in inputs", ValueError, "inputs", inputs=_with(_X, (0, 0, 0, 0), 1e999)),
    Case(
        "inf in the second input tensor",
        ValueError,
        "inputs[1]",
        inputs=(_X, _with(_X, (0, 0, 5, 5), -1e999)),
        kwargs={"distractors": (_POOL, _POOL)},
        model=lambda: _TwoInputs(),
    ),
    Case(
        "NaN in the distractor pool",
        ValueError,
        "distractors",
        kwargs={"distractors": _with(_POOL, (3, 0, 1, 1), float("nan"))},
    ),
    Case(
        "inf in a tuple pool",
        ValueError,
        "distractors[0]",
        inputs=(_X, _X),
        kwargs={"distractors": (_with(_POOL, (0, 0, 0, 0), 1e999), _POOL)},
        model=lambda: _TwoInputs(),
    ),
    Case(
        "callable pool returns NaN images",
        ValueError,
        "distractors",
        kwargs={"distractors": lambda n, g: torch.full((n, 1, 8, 8), float("nan"))},
    ),
    Case(
        "callable pool returns integer images",
        TypeError,
        "distractors",
        kwargs={"distractors": lambda n, g: torch.zeros(n, 1, 8, 8, dtype=torch.long)},
    ),
    Case("unknown tv_variant", ValueError, "tv_variant", kwargs={"tv_variant": "x"}),
    Case(
        "probability_fn returns a list",
        TypeError,
        "probability_fn",
        kwargs={"probability_fn": lambda out: out.tolist()},
        before_work=False,
    ),
    Case(
        "probability_fn returns logits (negative values)",
        ValueError,
        "probability_fn",
        kwargs={"probability_fn": lambda out: out - out.max() - 1.0},
        before_work=False,
    ),
    Case(
        "probability_fn returns values above 1",
        ValueError,
        "probability_fn",
        kwargs={"probability_fn": lambda out: 2.0 * torch.softmax(out, 1) + 0.5},
        before_work=False,
    ),
    Case(
        "probability_fn returns NaN",
        ValueError,
        "probability_fn",
        kwargs={"probability_fn": lambda out: torch.softmax(out, 1) * float("nan")},
        before_work=False,
    ),
    Case(
        "probability_fn drops rows",
        ValueError,
        "probability_fn",
        kwargs={"probability_fn": lambda out: torch.softmax(out[:1], 1)},
        before_work=False,
    ),
    Case(
        "model returns NaN",
        ValueError,
        "forward_func",
        model=_NaNOutput,
        before_work=False,
    ),
    Case(
        "model's gradient is NaN (outputs finite)",
        ValueError,
        "forward_func",
        model=_NaNGradient,
        before_work=False,
    ),
]


class _TwoInputs(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = _cnn()

    def forward(self, a: Tensor, b: Tensor) -> Tensor:
        return self.net(a + b)


@pytest.mark.parametrize("case", CATALOGUE, ids=[c.id for c in CATALOGUE])
def test_refused_with_a_message_naming_the_argument(case: Case) -> None:
    model = case.model()
    state = snapshot(model)
    counted = CallCounter(model)
    kwargs: dict[str, Any] = {"target": 1, "distractors": _POOL, "n_iter": 3}
    kwargs.update(case.kwargs)
    inputs = _X if case.inputs is None else case.inputs
    with pytest.raises(case.exc, match=re.escape(f"`{case.names}`")):
        LearnedMask(counted).attribute(inputs, **kwargs)
    if case.before_work:
        assert counted.calls == 0
    else:
        assert counted.calls == 1  # caught at the first forward pass
    assert_model_unchanged(state, model)


def test_the_same_faults_are_caught_in_chunked_passes() -> None:
    """With internal_batch_size the first chunk already raises."""
    for model in (_NaNOutput(), _NaNGradient()):
        counted = CallCounter(model)
        with pytest.raises(ValueError, match="`forward_func`"):
            LearnedMask(counted).attribute(
                _X,
                target=1,
                distractors=_POOL,
                n_distractors=4,
                internal_batch_size=4,
                n_iter=3,
            )
        assert counted.calls == 2  # 4 // 2 = 2 draws per pass: one step
