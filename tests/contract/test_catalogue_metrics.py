"""Catalogue of bad inputs to the metrics: each is refused clearly, before work.

Every case asserts the exception type and that the message names the argument
(in backticks, as every message of the package does), and that the model was
not called. Non-finite results the inputs cannot predict (a model returning
NaN) give a warning naming ``forward_func``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch import Tensor, nn

from captum_ext.metrics import (
    aopc,
    completeness,
    deletion_auc,
    image_degradation,
    insertion_auc,
    masked_input_accuracy,
    masked_input_accuracy_curve,
    saliency_auc,
    soundness,
    worst_case_completeness_soundness,
)


class Counted(nn.Module):
    """A small CNN on (N, 2, 6, 6) images that counts its forward calls."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(
            nn.Conv2d(2, 3, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(108, 4)
        )
        self.calls = 0

    def forward(self, x: Tensor, *args: Any) -> Tensor:
        self.calls += 1
        return self.net(x)


X = torch.randn(2, 2, 6, 6, generator=torch.Generator().manual_seed(0))
A = torch.randn(2, 2, 6, 6, generator=torch.Generator().manual_seed(1))
NAN_A = A.clone()
NAN_A[1, 0, 2, 3] = math.nan
EMPTY = torch.zeros(0, 2, 6, 6)


def _explain(inputs: Tensor, target: Tensor, **kwargs: Any) -> Tensor:
    return inputs.abs()


Call = Callable[[nn.Module], Any]

CASES: list[tuple[str, Call, type[Exception], str]] = [
    # blur_sigma <= 0 used to give a constant curve (the fill was the input)
    *[
        (
            f"{fn.__name__}-blur_sigma={s}",
            lambda m, fn=fn, s=s: fn(m, X, A, 0, fill="blur", blur_sigma=s),
            ValueError,
            "blur_sigma",
        )
        for fn in (deletion_auc, insertion_auc)
        for s in (0.0, -1.0, math.nan)
    ],
    (
        "saliency_auc-blur_sigma=0",
        lambda m: saliency_auc(m, X, A, 0, fill="blur", blur_sigma=0.0),
        ValueError,
        "blur_sigma",
    ),
    (
        "image_degradation-blur_sigma=0",
        lambda m: image_degradation(m, X, A, 0, 3, 2, "blur", blur_sigma=0.0),
        ValueError,
        "blur_sigma",
    ),
    (
        "worst_case-blur_sigma=-2",
        lambda m: worst_case_completeness_soundness(
            m, X, _explain, fill="blur", blur_sigma=-2.0
        ),
        ValueError,
        "blur_sigma",
    ),
    # NaN scores cannot be ranked (used to give a plausible AUC)
    (
        "deletion_auc-NaN",
        lambda m: deletion_auc(m, X, NAN_A, 0),
        ValueError,
        "attributions",
    ),
    (
        "insertion_auc-NaN",
        lambda m: insertion_auc(m, X, NAN_A, 0),
        ValueError,
        "attributions",
    ),
    (
        "deletion_auc-inf",
        lambda m: deletion_auc(m, X, A.masked_fill(A > 1, math.inf), 0),
        ValueError,
        "attributions",
    ),
    ("saliency_auc-NaN", lambda m: saliency_auc(m, X, NAN_A, 0), ValueError, "masks"),
    (
        "image_degradation-NaN",
        lambda m: image_degradation(m, X, NAN_A, 0, 3, 2),
        ValueError,
        "attributions",
    ),
    (
        "masked_input_accuracy-NaN",
        lambda m: masked_input_accuracy(m, X, NAN_A, [0, 1]),
        ValueError,
        "masks",
    ),
    # the empty-batch contract: a ValueError naming `inputs`, in every metric
    *[
        (f"{name}-empty", call, ValueError, "inputs")
        for name, call in (
            ("deletion_auc", lambda m: deletion_auc(m, EMPTY, EMPTY, 0)),
            ("insertion_auc", lambda m: insertion_auc(m, EMPTY, EMPTY, 0)),
            ("saliency_auc", lambda m: saliency_auc(m, EMPTY, EMPTY, 0)),
            (
                "image_degradation",
                lambda m: image_degradation(m, EMPTY, EMPTY, 0, 3, 2),
            ),
            (
                "masked_input_accuracy",
                lambda m: masked_input_accuracy(m, EMPTY, EMPTY, []),
            ),
            (
                "masked_input_accuracy_curve",
                lambda m: masked_input_accuracy_curve(m, EMPTY, []),
            ),
            (
                "worst_case_completeness_soundness",
                lambda m: worst_case_completeness_soundness(m, EMPTY, _explain),
            ),
            (
                "tuple inputs",
                lambda m: deletion_auc(m, (EMPTY, EMPTY), (EMPTY, EMPTY), 0),
            ),
        )
    ],
    # completeness / soundness take probabilities and AUCs in [0, 1]
    *[
        (f"{fn.__name__}-{arg}={value}", call, ValueError, arg)
        for fn in (completeness, soundness)
        for arg, value, call in (
            ("g", 1.5, lambda m, fn=fn: fn(1.5, 0.5)),
            ("p", -0.5, lambda m, fn=fn: fn(0.5, -0.5)),
            ("g", math.nan, lambda m, fn=fn: fn(torch.tensor([0.2, math.nan]), 0.5)),
            ("p", math.inf, lambda m, fn=fn: fn(0.5, torch.tensor([math.inf]))),
        )
    ],
    # target=None is Captum's "the output as it is": the default softmax has
    # one score per class, so it is refused before any forward pass
    *[
        (f"{name}-target=None", call, ValueError, "target")
        for name, call in (
            ("deletion_auc", lambda m: deletion_auc(m, X, A)),
            ("insertion_auc", lambda m: insertion_auc(m, X, A)),
            ("saliency_auc", lambda m: saliency_auc(m, X, A)),
            ("image_degradation", lambda m: image_degradation(m, X, A, None, 3, 2)),
        )
    ],
    # a non-finite fill would be silent garbage
    (
        "deletion_auc-fill=nan",
        lambda m: deletion_auc(m, X, A, 0, fill=math.nan),
        ValueError,
        "fill",
    ),
    (
        "image_degradation-fill=inf-tensor",
        lambda m: image_degradation(m, X, A, 0, 3, 2, torch.full((1,), math.inf)),
        ValueError,
        "fill",
    ),
    (
        "saliency_auc-fill=patch_mean",
        lambda m: saliency_auc(m, X, A, 0, fill="patch_mean"),
        ValueError,
        "fill",
    ),
    # Captum's rule: every tensor forward argument is per-example
    (
        "deletion_auc-non-batch forward arg",
        lambda m: deletion_auc(m, X, A, 0, additional_forward_args=torch.ones(5)),
        ValueError,
        "additional_forward_args",
    ),
    (
        "masked_input_accuracy-non-batch forward arg",
        lambda m: masked_input_accuracy(m, X, A, [0, 1], torch.ones(3, 1)),
        ValueError,
        "additional_forward_args",
    ),
    (
        "image_degradation-probability_fn",
        lambda m: image_degradation(m, X, A, 0, 3, 2, probability_fn="softmax"),
        TypeError,
        "probability_fn",
    ),
    (
        "insertion_auc-max_examples_per_batch=0",
        lambda m: insertion_auc(m, X, A, 0, max_examples_per_batch=0),
        ValueError,
        "max_examples_per_batch",
    ),
    (
        "image_degradation-max_examples_per_batch='all'",
        lambda m: image_degradation(m, X, A, 0, 3, 2, max_examples_per_batch="all"),
        ValueError,
        "max_examples_per_batch",
    ),
    (
        "aopc-NaN curves",
        lambda m: aopc(torch.tensor([[1.0, math.nan]])),
        ValueError,
        "curves",
    ),
]


@pytest.mark.parametrize(
    ("call", "error", "argument"),
    [pytest.param(c, e, a, id=i) for i, c, e, a in CASES],
)
def test_refused_before_any_work(call: Call, error: type, argument: str) -> None:
    model = Counted().eval()
    with pytest.raises(error) as info:
        call(model)
    assert f"`{argument}" in str(info.value), str(info.value)
    assert model.calls == 0


@pytest.mark.parametrize("metric", ["deletion", "degradation", "saliency"])
def test_non_finite_model_output_warns(metric: str) -> None:
    def nan_model(x: Tensor) -> Tensor:
        out = x.flatten(1)[:, :3].clone()
        out[0] = math.nan
        return out

    with pytest.warns(RuntimeWarning, match="`forward_func`"):
        if metric == "deletion":
            deletion_auc(nan_model, X, A, 0, n_steps=4)
        elif metric == "degradation":
            image_degradation(nan_model, X, A, 0, 3, 2)
        else:
            saliency_auc(nan_model, X, A, 0, n_points=3)


def test_worst_case_refuses_scores_that_are_not_probabilities() -> None:
    model = Counted().eval()
    with pytest.raises(ValueError, match="`probability_fn`"):
        worst_case_completeness_soundness(
            model, X, _explain, probability_fn=lambda out: out * 10
        )


def test_every_public_metric_logs_usage() -> None:
    """Each public metric is wrapped by ``captum.log.log_usage`` (which keeps
    the signature through ``functools.wraps``)."""
    import inspect

    import captum_ext.metrics as metrics

    names = [
        "aopc",
        "completeness",
        "deletion_auc",
        "image_degradation",
        "insertion_auc",
        "masked_input_accuracy",
        "masked_input_accuracy_curve",
        "saliency_auc",
        "soundness",
        "worst_case_completeness_soundness",
    ]
    for name in names:
        fn = getattr(metrics, name)
        assert hasattr(fn, "__wrapped__"), name
        assert inspect.signature(fn) == inspect.signature(fn.__wrapped__), name
