"""Test helpers shared across the suite: exact model-state snapshots and a
forward-call counter."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

_HOOK_DICTS = (
    "_forward_hooks",
    "_forward_hooks_with_kwargs",
    "_forward_hooks_always_called",
    "_forward_pre_hooks",
    "_forward_pre_hooks_with_kwargs",
    "_backward_hooks",
    "_backward_pre_hooks",
    "_state_dict_hooks",
    "_state_dict_pre_hooks",
    "_load_state_dict_pre_hooks",
    "_load_state_dict_post_hooks",
)

_GLOBAL_HOOKS = (
    "_global_forward_hooks",
    "_global_forward_pre_hooks",
    "_global_backward_hooks",
    "_global_backward_pre_hooks",
)


@dataclass
class ModelState:
    """Everything about a model that an attribution method must leave alone."""

    tensors: dict[str, tuple[torch.Tensor, int, int, torch.dtype, Any]]
    requires_grad: dict[str, bool]
    grads: dict[str, torch.Tensor | None]
    training: dict[str, bool]
    hooks: dict[str, tuple[int, ...]]
    tensor_hooks: dict[str, int]
    module_types: dict[str, type]
    patched_forward: dict[str, bool]
    global_hooks: tuple[int, ...]
    grad_enabled: bool


def snapshot(model: nn.Module) -> ModelState:
    """Record parameters/buffers (values, storage, version), flags and hooks."""
    tensors = {}
    requires_grad = {}
    grads = {}
    tensor_hooks = {}
    for name, p in model.named_parameters(remove_duplicate=False):
        tensors["param:" + name] = (
            p.detach().clone(),
            p.data_ptr(),
            p._version,
            p.dtype,
            p.device,
        )
        requires_grad[name] = p.requires_grad
        grads[name] = None if p.grad is None else p.grad.detach().clone()
        tensor_hooks[name] = len(p._backward_hooks or {})
    for name, b in model.named_buffers(remove_duplicate=False):
        tensors["buffer:" + name] = (
            b.detach().clone(),
            b.data_ptr(),
            b._version,
            b.dtype,
            b.device,
        )
    training = {name: m.training for name, m in model.named_modules()}
    hooks = {
        name: tuple(len(getattr(m, d, {}) or {}) for d in _HOOK_DICTS)
        for name, m in model.named_modules()
    }
    module_types = {name: type(m) for name, m in model.named_modules()}
    patched = {name: "forward" in vars(m) for name, m in model.named_modules()}
    import torch.nn.modules.module as module_mod

    global_hooks = tuple(len(getattr(module_mod, g, {}) or {}) for g in _GLOBAL_HOOKS)
    return ModelState(
        tensors,
        requires_grad,
        grads,
        training,
        hooks,
        tensor_hooks,
        module_types,
        patched,
        global_hooks,
        torch.is_grad_enabled(),
    )


def assert_model_unchanged(before: ModelState, model: nn.Module) -> None:
    """Assert the model is bit-identical to ``before`` in every recorded respect."""
    after = snapshot(model)
    assert after.module_types == before.module_types, "modules were replaced"
    assert before.tensors.keys() == after.tensors.keys(), "parameters/buffers changed"
    for key, (value, ptr, version, dtype, device) in before.tensors.items():
        a_value, a_ptr, a_version, a_dtype, a_device = after.tensors[key]
        assert a_dtype == dtype and a_device == device, f"{key}: dtype/device changed"
        assert a_ptr == ptr, f"{key}: storage was replaced"
        assert a_version == version, f"{key}: modified in place"
        assert torch.equal(a_value, value), f"{key}: values changed"
    assert after.requires_grad == before.requires_grad, "requires_grad flags changed"
    for name, g in before.grads.items():
        a = after.grads[name]
        if g is None:
            assert a is None, f"{name}: .grad was populated"
        else:
            assert a is not None and torch.equal(a, g), f"{name}: .grad changed"
    assert after.training == before.training, "training flags changed"
    assert after.hooks == before.hooks, "module hooks were left behind"
    assert after.tensor_hooks == before.tensor_hooks, "parameter hooks left behind"
    assert after.patched_forward == before.patched_forward, "forward was patched"
    assert after.global_hooks == before.global_hooks, "global module hooks left"
    assert after.grad_enabled == before.grad_enabled, "grad mode changed"


class CallCounter(nn.Module):
    """Wraps a model and counts its forward calls (``calls``)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.calls = 0

    def forward(self, *args: Any) -> Any:
        self.calls += 1
        return self.model(*args)
