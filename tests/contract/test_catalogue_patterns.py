"""Catalogue of bad inputs to the pattern methods: each is refused or warned
about clearly, naming the argument (no silent NaN, no anonymous error)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from captum_ext.attr import PatternAttribution, PatternSet, fit_patterns


def _net() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 5), nn.ReLU(), nn.Linear(5, 3)).eval()


def _count_forwards(model: nn.Module) -> list[int]:
    calls = [0]
    model.register_forward_pre_hook(lambda m, a: calls.__setitem__(0, calls[0] + 1))
    return calls


def test_nan_in_a_fit_batch_names_the_batch() -> None:
    bad = torch.randn(6, 4)
    bad[2, 1] = float("nan")
    with pytest.raises(ValueError, match=r"`data`: batch 1 holds non-finite"):
        fit_patterns(_net(), [torch.randn(6, 4), bad, torch.randn(6, 4)])


def test_overflow_inside_the_model_names_batch_and_layer() -> None:
    net = _net()
    with torch.no_grad():
        net[0].weight.fill_(1e38)
    with pytest.raises(ValueError, match=r"`data`: batch 0 .*layer '0'"):
        fit_patterns(net, [torch.ones(6, 4)])


def test_non_finite_pattern_set_is_not_saved_nor_used(tmp_path: Path) -> None:
    net = _net()
    patterns = PatternSet(
        {"0": torch.full((5, 4), float("nan")), "2": torch.ones(3, 5)}
    )
    path = tmp_path / "p.pt"
    with pytest.raises(ValueError, match=r"PatternSet\.save: .*\['0'\].*p\.pt"):
        patterns.save(path)
    assert not path.exists()
    with pytest.raises(ValueError, match=r"`patterns` of \['0'\]"):
        PatternAttribution(net, patterns)


def test_truncated_pattern_file_names_the_file(tmp_path: Path) -> None:
    net = _net()
    path = tmp_path / "patterns.pt"
    fit_patterns(net, [torch.randn(8, 4)]).save(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=r"cannot read '.*patterns\.pt'"):
        PatternSet.load(path)
    not_patterns = tmp_path / "other.pt"
    torch.save({"a": torch.ones(1)}, not_patterns)
    with pytest.raises(ValueError, match=r"PatternSet\.load\('.*other\.pt'\)"):
        PatternSet.load(not_patterns)


def test_dropout_in_training_mode_warns_for_attribution() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 5), nn.ReLU(), nn.Dropout(0.5), nn.Linear(5, 3))
    patterns = fit_patterns(net.eval(), [torch.randn(16, 4)])
    net.train()
    msg = r"`model` is in training mode: dropout layers in training mode \(2\)"
    with pytest.warns(UserWarning, match=msg):
        PatternAttribution(net, patterns).attribute(torch.randn(2, 4), target=0)
    assert net.training  # the flag is left as the user set it


def test_layer_not_in_the_model_refused_before_any_forward() -> None:
    net = _net()
    calls = _count_forwards(net)
    with pytest.raises(ValueError, match=r"`layers`: the Linear module given is not"):
        fit_patterns(net, [torch.randn(6, 4)], layers=[nn.Linear(4, 5)])
    with pytest.raises(ValueError, match=r"`layers`: the model has no submodule 'x'"):
        fit_patterns(net, [torch.randn(6, 4)], layers=["x"])
    with pytest.raises(ValueError, match=r"`layers`: '1' is a ReLU"):
        fit_patterns(net, [torch.randn(6, 4)], layers=["1"])
    assert calls[0] == 0


def test_bad_stabiliser_is_refused_naming_it() -> None:
    for eps in (-1e-3, 1.0, float("nan"), "0.1"):
        with pytest.raises(ValueError, match="`eps`"):
            fit_patterns(_net(), [torch.randn(6, 4)], eps=eps)  # type: ignore[arg-type]


def test_overflowing_attribution_warns_naming_the_stabiliser() -> None:
    from captum_ext.attr import PatternNet

    net = _net()
    huge = PatternSet({"0": torch.full((5, 4), 1e30), "2": torch.full((3, 5), 1e30)})
    x = torch.ones(2, 4)
    with pytest.warns(RuntimeWarning, match=r"non-finite values.*eps"):
        out = PatternNet(net, huge).attribute(x, target=0)
    assert not bool(torch.isfinite(out).all())
