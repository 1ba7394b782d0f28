"""Captum's generic hook-removal and target tests, run on captum-ext classes.

Captum generates these tests (``tests/attr/test_hook_removal.py`` and
``tests/attr/test_targets.py`` in its repository) from the config list shipped
in ``captum.testing.attr.helpers.test_config``. We reproduce that logic here:
for every registered class, every upstream config that lists one of its
``captum_analogs`` is rerun with the class swapped in.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest
import torch
from captum.attr import NoiseTunnel
from captum.testing.attr.helpers.test_config import config as CAPTUM_CONFIG
from torch import Tensor, nn

from tests.contract.registry import CASES, ContractCase, Ctx


class _ErrorModule(nn.Module):
    """Replaces a layer and raises when executed (upstream's invalid_module)."""

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        raise AssertionError("Raising error on execution")


def _configs_for(case: ContractCase) -> list[dict[str, Any]]:
    out = []
    for cfg in CAPTUM_CONFIG:
        if not any(a in cfg["algorithms"] for a in case.captum_analogs):
            continue
        if isinstance(cfg.get("layer"), list):
            continue  # multi-layer configs do not apply to single-layer classes
        if case.is_layer != ("layer" in cfg):
            continue
        out.append(cfg)
    return out


def _prepare(case: ContractCase, cfg: dict[str, Any]):
    """Deep-copy the config's model and args, build the method (maybe in NT)."""
    model = copy.deepcopy(cfg["model"])
    args = copy.deepcopy(cfg["attribute_args"])
    for name in case.drop_args:
        args.pop(name, None)
    layer = model.get_submodule(cfg["layer"]) if "layer" in cfg else None
    ctx = Ctx(model, layer, args["inputs"], args.get("additional_forward_args"), None)
    args.update(case.attr_kwargs(ctx))
    return model, args, ctx


def _hook_params():
    for case in CASES:
        seen = set()
        for cfg in _configs_for(case):
            modes = ["normal", "incorrect_target"]
            if "layer" in cfg:
                modes.append("invalid_module")
            for mode in modes:
                if mode in seen:
                    continue  # upstream: one test per algorithm and mode
                seen.add(mode)
                yield pytest.param(
                    case, cfg, mode, id=f"{case.id}-{cfg['name']}-{mode}"
                )


def _check_no_hooks(model: nn.Module) -> None:
    for m in model.modules():
        assert len(m._forward_hooks) == 0
        assert len(m._backward_hooks) == 0
        assert len(m._forward_pre_hooks) == 0
        assert len(m._backward_pre_hooks) == 0


@pytest.mark.parametrize("case,cfg,mode", list(_hook_params()))
def test_hook_removal(case: ContractCase, cfg: dict[str, Any], mode: str) -> None:
    model, args, ctx = _prepare(case, cfg)
    expect_error = False
    if mode == "invalid_module":
        parent_name, _, child = cfg["layer"].rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, _ErrorModule())
        ctx = Ctx(
            model,
            model.get_submodule(cfg["layer"]),
            ctx.inputs,
            ctx.additional_forward_args,
            None,
        )
        expect_error = True
    method = case.build(ctx)
    if cfg.get("noise_tunnel", False):
        method = NoiseTunnel(method)
    if mode == "incorrect_target" and "target" in args:
        args["target"] = (9999,) * 20
        expect_error = True
    if expect_error:
        with pytest.raises(AssertionError):
            method.attribute(**args)
    else:
        method.attribute(**args)
    _check_no_hooks(model)


def _target_params():
    for case in CASES:
        for cfg in _configs_for(case):
            target = cfg["attribute_args"].get("target")
            if isinstance(target, (list, Tensor)):
                yield pytest.param(case, cfg, id=f"{case.id}-{cfg['name']}")


def _slice_example(
    args: dict[str, Any], i: int, n: int, baseline_distr: bool
) -> dict[str, Any]:
    out = dict(args)
    inputs = args["inputs"]
    out["inputs"] = (
        inputs[i : i + 1]
        if isinstance(inputs, Tensor)
        else tuple(x[i : i + 1] for x in inputs)
    )
    target = args["target"]
    out["target"] = target[i] if len(target) == n else target
    afa = args.get("additional_forward_args")
    if afa is not None:
        afa = afa if isinstance(afa, tuple) else (afa,)
        out["additional_forward_args"] = tuple(
            a[i : i + 1] if isinstance(a, Tensor) else a for a in afa
        )
    if "baselines" in args and not baseline_distr:
        b = args["baselines"]
        if isinstance(b, Tensor):
            out["baselines"] = b[i : i + 1]
        elif isinstance(b, tuple):
            out["baselines"] = tuple(
                x[i : i + 1] if isinstance(x, Tensor) else x for x in b
            )
    return out


@pytest.mark.parametrize("case,cfg", list(_target_params()))
def test_targets(case: ContractCase, cfg: dict[str, Any]) -> None:
    """Batched attribution with per-example targets equals one-at-a-time."""
    _, args, ctx = _prepare(case, cfg)
    method = case.build(ctx)
    if cfg.get("noise_tunnel", False):
        method = NoiseTunnel(method)
    delta = cfg.get("target_delta", 1e-4)
    baseline_distr = cfg.get("baseline_distr", False)
    inputs = args["inputs"]
    n = len(inputs) if isinstance(inputs, Tensor) else len(inputs[0])
    torch.manual_seed(0)
    batched = method.attribute(**args)
    batched = (batched,) if isinstance(batched, Tensor) else batched
    targets = args["target"]
    for i in range(n):
        single_args = _slice_example(args, i, n, baseline_distr)
        variants = [single_args]
        if len(targets) == n:
            variants.append({**single_args, "target": targets[i : i + 1]})
        for v in variants:
            torch.manual_seed(0)
            single = method.attribute(**v)
            single = (single,) if isinstance(single, Tensor) else single
            for b, s in zip(batched, single):
                assert (b[i : i + 1] - s).abs().max().item() <= delta
