"""The harness must catch broken methods: each check is run on a faulty class."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from captum.attr import GradientAttribution, InputXGradient

from tests.contract import test_invariants as inv
from tests.contract.registry import ContractCase


class _LeaksHook(InputXGradient):
    def attribute(
        self, inputs: Any, target: Any = None, additional_forward_args: Any = None
    ) -> Any:
        list(self.forward_func.modules())[1].register_forward_hook(lambda *a: None)
        return super().attribute(inputs, target, additional_forward_args)


class _FlipsTraining(InputXGradient):
    def attribute(
        self, inputs: Any, target: Any = None, additional_forward_args: Any = None
    ) -> Any:
        self.forward_func.train()
        return super().attribute(inputs, target, additional_forward_args)


class _TouchesWeights(InputXGradient):
    def attribute(
        self, inputs: Any, target: Any = None, additional_forward_args: Any = None
    ) -> Any:
        p = next(self.forward_func.parameters())
        with torch.no_grad():
            p.mul_(2.0).div_(2.0)  # "restored", but written in place
        return super().attribute(inputs, target, additional_forward_args)


class _BatchCoupled(InputXGradient):
    def attribute(
        self, inputs: Any, target: Any = None, additional_forward_args: Any = None
    ) -> Any:
        out = super().attribute(inputs, target, additional_forward_args)
        if isinstance(out, tuple):
            return tuple(o / o.abs().max() for o in out)
        return out / out.abs().max()


class _HookNotRemovedOnError(GradientAttribution):
    def __init__(self, forward_func: Any) -> None:
        GradientAttribution.__init__(self, forward_func)

    def attribute(
        self, inputs: Any, target: Any = None, additional_forward_args: Any = None
    ) -> Any:
        handle = self.forward_func.register_forward_hook(lambda *a: None)
        out = InputXGradient(self.forward_func).attribute(
            inputs, target, additional_forward_args
        )
        handle.remove()
        return out


@pytest.mark.parametrize(
    "cls,check",
    [
        (_LeaksHook, inv.test_structure_and_model_unchanged),
        (_FlipsTraining, inv.test_structure_and_model_unchanged),
        (_TouchesWeights, inv.test_structure_and_model_unchanged),
        (_BatchCoupled, inv.test_batched_equals_per_example),
        (InputXGradient, inv.test_bad_inputs_refused_before_work),
    ],
)
def test_harness_catches(cls: type, check: Any) -> None:
    case = ContractCase(cls)
    with pytest.raises((AssertionError, pytest.fail.Exception)):
        check(case, "mlp")


def test_harness_catches_hook_left_after_error() -> None:
    case = ContractCase(_HookNotRemovedOnError)
    with pytest.raises(AssertionError):
        inv.test_forward_error_leaves_model_unchanged(case, "mlp", "first")
