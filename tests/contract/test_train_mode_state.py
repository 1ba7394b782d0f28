"""Every public class and metric leaves a train-mode model bit-identical.

The model has BatchNorm (whose running statistics and batch counter a forward
pass in training mode updates) and Dropout, and is left in training mode. After
each call (successful or interrupted), every parameter and every buffer must be
bit-identical, the training flags unchanged, and one warning must say that the
model is in training mode.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch import Tensor, nn

from captum_ext.attr import GradientSignInput, fit_patterns
from captum_ext.metrics import (
    ablation_penalties,
    deletion_auc,
    evaluate_attributions,
    image_degradation,
    insertion_auc,
    masked_input_accuracy,
    masked_input_accuracy_curve,
    saliency_auc,
    worst_case_completeness_soundness,
)
from tests.contract.registry import CASES, Ctx


class _Interrupt(RuntimeError):
    pass


def _train_mode_model(seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    model = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.Conv2d(4, 6, 3, padding=1),
        nn.BatchNorm2d(6),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Dropout(0.3),
        nn.Linear(6 * 4 * 4, 5),
    )
    with torch.no_grad():  # non-trivial running statistics
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.num_batches_tracked.fill_(7)
    return model.train()


def _state(model: nn.Module) -> dict[str, Any]:
    return {
        "tensors": {k: v.detach().clone() for k, v in model.state_dict().items()},
        "training": [m.training for m in model.modules()],
        "requires_grad": [p.requires_grad for p in model.parameters()],
    }


def _assert_same(model: nn.Module, before: dict[str, Any]) -> None:
    after = _state(model)
    assert after["training"] == before["training"]
    assert after["requires_grad"] == before["requires_grad"]
    assert after["tensors"].keys() == before["tensors"].keys()
    for k, v in before["tensors"].items():
        assert torch.equal(after["tensors"][k], v), f"{k} changed"


INPUTS = torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(3))
TARGET = [0, 4, 2, 1]


def _run_checked(model: nn.Module, call: Callable[[], Any]) -> None:
    before = _state(model)
    with pytest.warns(UserWarning, match="training mode"):
        call()
    _assert_same(model, before)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_attribution_leaves_train_mode_model_identical(case: Any) -> None:
    model = _train_mode_model()
    layer = model[3]
    ctx = Ctx(model, layer, INPUTS, None, "cnn")
    method = case.build(ctx)
    kwargs = case.attr_kwargs(ctx)
    _run_checked(model, lambda: method.attribute(INPUTS, target=TARGET, **kwargs))


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_attribution_restores_buffers_after_an_interruption(case: Any) -> None:
    model = _train_mode_model()
    ctx = Ctx(model, model[3], INPUTS, None, "cnn")
    method = case.build(ctx)
    kwargs = case.attr_kwargs(ctx)
    calls = {"n": 0}

    def interrupt_on_second_forward(*_: Any) -> None:
        calls["n"] += 1
        if calls["n"] >= 2:
            raise _Interrupt("interrupted mid-way")

    before = _state(model)
    handle = model[-1].register_forward_hook(interrupt_on_second_forward)
    try:
        with pytest.warns(UserWarning, match="training mode"):
            try:
                method.attribute(INPUTS, target=TARGET, **kwargs)
            except _Interrupt:
                pass
    finally:
        handle.remove()
    _assert_same(model, before)


def _metric_calls() -> dict[str, Callable[[nn.Module], Any]]:
    attributions = torch.randn(INPUTS.shape, generator=torch.Generator().manual_seed(5))
    masks = torch.rand(INPUTS.shape, generator=torch.Generator().manual_seed(6))
    labels = torch.tensor(TARGET)
    return {
        "image_degradation": lambda m: image_degradation(
            m, INPUTS, attributions, target=TARGET, patch_size=2, n_steps=4
        ),
        "deletion_auc": lambda m: deletion_auc(
            m, INPUTS, attributions, target=TARGET, n_steps=4
        ),
        "insertion_auc": lambda m: insertion_auc(
            m, INPUTS, attributions, target=TARGET, n_steps=4
        ),
        "saliency_auc": lambda m: saliency_auc(
            m, INPUTS, masks, target=TARGET, n_points=4
        ),
        "masked_input_accuracy": lambda m: masked_input_accuracy(
            m, INPUTS, masks, labels
        ),
        "masked_input_accuracy_curve": lambda m: masked_input_accuracy_curve(
            m, INPUTS, labels, n_iterations=2
        ),
        "worst_case_completeness_soundness": lambda m: (
            worst_case_completeness_soundness(
                m,
                INPUTS,
                lambda x, target: torch.rand_like(x),
                n_points=4,
            )
        ),
        "ablation_penalties": lambda m: ablation_penalties(
            m, INPUTS, target=TARGET, n_steps=4
        ),
        "evaluate_attributions": lambda m: evaluate_attributions(
            GradientSignInput(m),
            [(INPUTS[:2], labels[:2]), (INPUTS[2:], labels[2:])],
            {"deletion": functools.partial(deletion_auc, n_steps=4)},
            forward_func=m,
            process_group=None,
        ),
        "fit_patterns": lambda m: fit_patterns(m, [INPUTS, INPUTS + 0.1]),
    }


METRICS = _metric_calls()


@pytest.mark.parametrize("name", sorted(METRICS))
def test_metric_leaves_train_mode_model_identical(name: str) -> None:
    model = _train_mode_model()
    _run_checked(model, lambda: METRICS[name](model))


def test_eval_mode_model_gives_no_training_warning() -> None:
    import warnings

    model = _train_mode_model().eval()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        GradientSignInput(model).attribute(INPUTS, target=TARGET)


def test_guard_finds_the_model_behind_bound_methods_and_partials() -> None:
    from captum_ext._utils.model_state import modules_behind

    model = _train_mode_model()
    assert modules_behind(model.forward)[0] is model
    assert modules_behind(functools.partial(model))[0] is model
    assert modules_behind(GradientSignInput(model))[0] is model


def test_nested_calls_warn_once() -> None:
    import warnings

    model = _train_mode_model()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        METRICS["evaluate_attributions"](model)
    messages = [str(w.message) for w in caught if "training mode" in str(w.message)]
    assert len(messages) == 1, messages


def test_non_finite_result_is_never_silent() -> None:
    class NaNNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(6, 3)

        def forward(self, x: Tensor) -> Tensor:
            out = self.fc(x)
            return out * torch.where(x[:, :1] > 0, torch.nan, 1.0)

    x = torch.randn(4, 6, generator=torch.Generator().manual_seed(0))
    x[0, 0] = 1.0
    with pytest.warns(
        RuntimeWarning, match="GradientSignInput.attribute returned"
    ) as record:
        GradientSignInput(NaNNet().eval()).attribute(x, target=0)
    # the warning points at the caller's line, not into the decorators
    assert {w.filename for w in record} == {__file__}


@pytest.mark.parametrize("how", ["-c", "stdin"])
def test_warnings_from_scripts_without_a_source_file(how: str) -> None:
    """A warning re-issued at the caller's line must not fail when the caller
    has no source file (``python -c``, ``python -`` reading standard input)."""
    import subprocess
    import sys
    from pathlib import Path

    # fit_patterns warns from inside the decorated function (output unit 1
    # is never positive), so the warning is re-issued at the script's line
    code = (
        "import torch\n"
        "from captum_ext.attr import fit_patterns\n"
        "m = torch.nn.Linear(4, 2).eval()\n"
        "m.bias.data[1] = -100.0\n"
        "p = fit_patterns(m, [torch.randn(8, 4)])\n"
        "print('done', tuple(p[''].shape))\n"
    )
    args = [sys.executable, "-c", code] if how == "-c" else [sys.executable, "-"]
    proc = subprocess.run(
        args,
        input=None if how == "-c" else code,
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parents[2],
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "done (2, 4)" in proc.stdout
    assert "never positive" in proc.stderr  # the warning itself is shown


def test_count_nonfinite_looks_into_results() -> None:
    from captum_ext._utils.model_state import count_nonfinite

    t = torch.tensor([1.0, float("nan"), float("inf")])
    assert count_nonfinite(t) == 2
    assert count_nonfinite((t, {"a": t}, [torch.ones(2)])) == 4
    assert count_nonfinite(torch.tensor([1, 2])) == 0
