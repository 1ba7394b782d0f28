"""evaluate_attributions: data-set loop, metric plug-in, and 2-process sharding."""

from __future__ import annotations

import os
import socket
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from captum.attr import InputXGradient, IntegratedGradients, Saliency
from captum.metrics import infidelity, sensitivity_max
from torch import Tensor, nn
from torch.utils.data import DataLoader, IterableDataset, TensorDataset

from captum_ext.metrics import (
    EvaluationResult,
    aopc,
    evaluate_attributions,
    image_degradation,
)
from captum_ext.metrics._evaluate import _local_batches
from tests.helpers import assert_model_unchanged, snapshot


def _model() -> nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return nn.Sequential(
            nn.Conv2d(1, 4, 3, padding=1),
            nn.ReLU(),
            nn.Flatten(),
            nn.Linear(4 * 36, 5),
        ).eval()


def _data(n: int = 18) -> tuple[Tensor, Tensor]:
    gen = torch.Generator().manual_seed(0)
    return torch.randn(n, 1, 6, 6, generator=gen), torch.randint(
        0, 5, (n,), generator=gen
    )


def _noise(inputs: Tensor) -> tuple[Tensor, Tensor]:
    noise = 0.1 * torch.randn_like(inputs)
    return noise, inputs - noise


def masked_accuracy(
    forward_func: Any, inputs: Tensor, masks: Tensor, labels: Tensor
) -> Tensor:
    """A metric with the (forward_func, inputs, masks, labels) signature."""
    with torch.no_grad():
        return forward_func(inputs * (masks > 0)).argmax(1) == labels


DEGRADE = partial(image_degradation, patch_size=2, n_steps=None)


def _degradation_reference(
    model: nn.Module, x: Tensor, attr: Tensor, y: Tensor, patch: int
) -> Tensor:
    """MoRF degradation written out with loops: rank the patches by summed
    attribution (ties by index), replace them one by one with the original
    patch's per-channel mean, record the target's softmax probability."""
    n, _, h, w = x.shape
    cells = [(i, j) for i in range(0, h, patch) for j in range(0, w, patch)]
    curves = torch.zeros(n, len(cells) + 1)
    for e in range(n):
        scores = [
            float(attr[e, :, i : i + patch, j : j + patch].sum()) for i, j in cells
        ]
        order = sorted(range(len(cells)), key=lambda c: (-scores[c], c))
        img = x[e].clone()
        for k in range(len(cells) + 1):
            if k > 0:
                i, j = cells[order[k - 1]]
                block = x[e, :, i : i + patch, j : j + patch]
                img[:, i : i + patch, j : j + patch] = block.mean((1, 2), keepdim=True)
            with torch.no_grad():
                curves[e, k] = torch.softmax(model(img[None]), 1)[0, y[e]]
    return curves


def test_equals_independent_computation_in_data_order() -> None:
    model = _model()
    x, y = _data()
    loader = DataLoader(TensorDataset(x, y), batch_size=4)  # 5 batches, last has 2
    before = snapshot(model)
    res = evaluate_attributions(
        InputXGradient(model),
        loader,
        {"degradation": DEGRADE, "masked": masked_accuracy},
    )
    assert isinstance(res, EvaluationResult) and res.n_examples == 18
    # Gradient * Input by autograd, the curves and the masked accuracy by hand
    leaf = x.clone().requires_grad_()
    (grad,) = torch.autograd.grad(model(leaf).gather(1, y[:, None]).sum(), leaf)
    attr = x * grad
    want = _degradation_reference(model, x, attr, y, 2)
    torch.testing.assert_close(res.scores["degradation"], want)
    with torch.no_grad():
        masked = model(x * (attr > 0)).argmax(1) == y
    assert torch.equal(res.scores["masked"], masked)
    assert torch.equal(res.targets, y) and torch.equal(res.labels, y)  # type: ignore[arg-type]
    mean = want.double().sum(0) / 18
    torch.testing.assert_close(res.mean["degradation"], mean)
    sem = ((want.double() - mean) ** 2).sum(0).div(17).sqrt() / 18**0.5
    torch.testing.assert_close(res.sem["degradation"], sem)
    assert_model_unchanged(before, model)


def _linear() -> nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(1)
        return nn.Sequential(nn.Flatten(), nn.Linear(36, 5)).eval()


def test_captum_metrics_plug_in() -> None:
    """infidelity via partial, sensitivity_max directly (target and the
    attribute kwargs through **kwargs), against closed forms on a linear model."""
    lin = _linear()
    weight = lin[1].weight.detach()
    x, y = _data(8)
    loader = DataLoader(TensorDataset(x, y), batch_size=4)

    def shifted(inputs: Tensor) -> tuple[Tensor, Tensor]:
        shift = torch.full_like(inputs, 0.1)
        return shift, inputs - shift

    def doubled(inputs: Tensor, target: Tensor, abs: bool) -> Tensor:
        return 2 * Saliency(lin).attribute(inputs, target=target, abs=abs)

    res = evaluate_attributions(
        doubled,
        loader,
        {"infid": partial(infidelity, perturb_func=shifted, n_perturb_samples=2)},
        forward_func=lin,
        attribute_kwargs={"abs": False},
    )
    # attributions 2 w_y for f = w.x + b: infidelity (I.2w_y - I.w_y)^2, I = 0.1
    want = (0.1 * weight[y].sum(1)) ** 2
    torch.testing.assert_close(res.scores["infid"], want, rtol=1e-4, atol=1e-7)

    def nudge(inputs: Tensor, perturb_radius: float) -> Tensor:
        return inputs + 0.01

    res = evaluate_attributions(
        InputXGradient(lin),
        loader,
        {"sens": partial(sensitivity_max, perturb_func=nudge, n_perturb_samples=2)},
    )
    # Gradient * Input x * w_y moves by 0.01 w_y: relative change |0.01 w_y| / |x w_y|
    w_y = weight[y].view_as(x)
    want = (0.01 * w_y).flatten(1).norm(dim=1) / (x * w_y).flatten(1).norm(dim=1)
    torch.testing.assert_close(res.scores["sens"], want, rtol=1e-4, atol=1e-7)


def test_targets_predicted_int_and_callable() -> None:
    model = _model()
    x, y = _data(6)
    loader = DataLoader(TensorDataset(x, y), batch_size=4)
    pred = model(x).argmax(1)
    metric = {"p": DEGRADE}
    res = evaluate_attributions(Saliency(model), loader, metric, target="predicted")
    assert torch.equal(res.targets, pred)
    # image_degradation's own target=None also means the predicted class
    torch.testing.assert_close(
        res.scores["p"][:, 0], torch.softmax(model(x), 1).max(1).values.detach()
    )
    res3 = evaluate_attributions(Saliency(model), loader, metric, target=3)
    assert torch.equal(res3.targets, torch.full((6,), 3))
    res_c = evaluate_attributions(
        Saliency(model), loader, metric, target=lambda inp, lab: (lab + 1) % 5
    )
    assert torch.equal(res_c.targets, (y + 1) % 5)
    # unlabelled data: plain tensors, or (inputs,) tuples
    res_u = evaluate_attributions(
        Saliency(model), [x[:4], (x[4:],)], metric, target="predicted"
    )
    assert res_u.labels is None and torch.equal(res_u.targets, pred)
    with pytest.raises(ValueError, match="no labels"):
        evaluate_attributions(Saliency(model), [x[:4]], metric)


def test_random_metric_is_reproducible_with_seed() -> None:
    model = _model()
    x, y = _data(8)
    rand = partial(image_degradation, patch_size=2, n_steps=None, order="random")
    loader = DataLoader(TensorDataset(x, y), batch_size=4)

    def run(seed: int | None) -> Tensor:
        return evaluate_attributions(
            Saliency(model), loader, {"r": rand}, seed=seed
        ).scores["r"]

    torch.manual_seed(1)
    r1 = run(3)
    torch.manual_seed(2)  # whatever the global RNG's state
    r2 = run(3)
    assert torch.equal(r1, r2) and not torch.equal(r1, run(4))
    torch.manual_seed(1)
    u1 = run(None)
    torch.manual_seed(2)
    assert not torch.equal(u1, run(None))  # unseeded: the global RNG decides


def test_tuple_inputs_and_plain_callable_method() -> None:
    class Two(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            torch.manual_seed(0)
            self.lin = nn.Linear(2 * 16, 3)

        def forward(self, a: Tensor, b: Tensor) -> Tensor:
            return self.lin(torch.cat([a, b], 1).flatten(1))

    net = Two().eval()
    a, b = torch.randn(5, 1, 4, 4), torch.randn(5, 1, 4, 4)
    y = torch.tensor([0, 1, 2, 0, 1])
    data = [((a[:3], b[:3]), y[:3]), ([a[3:], b[3:]], y[3:])]

    def explain(inputs: tuple[Tensor, Tensor], target: Tensor) -> tuple[Tensor, ...]:
        return tuple(t.abs() for t in inputs)

    res = evaluate_attributions(explain, data, {"d": DEGRADE}, forward_func=net)
    want = image_degradation(net, (a, b), (a.abs(), b.abs()), y, 2, None)
    torch.testing.assert_close(res.scores["d"], want)


def test_progress_bar(capsys: pytest.CaptureFixture[str]) -> None:
    model = _model()
    x, y = _data(8)
    loader = DataLoader(TensorDataset(x, y), batch_size=4)
    evaluate_attributions(Saliency(model), loader, {"d": DEGRADE}, show_progress=True)
    assert "evaluate_attributions" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"attribution_method": 3}, TypeError, "attribution_method"),
        ({"attribution_method": lambda x, target: x}, ValueError, "forward_func"),
        ({"metrics": {}}, ValueError, "empty"),
        ({"metrics": [DEGRADE]}, TypeError, "mapping"),
        ({"metrics": {"m": 3}}, TypeError, "callable"),
        ({"metrics": {"m": lambda inputs, radius: inputs}}, ValueError, "radius"),
        ({"target": "true"}, ValueError, "target"),
        ({"target": True}, ValueError, "target"),
        ({"target": torch.tensor([1])}, ValueError, "target"),
        ({"target": -1}, ValueError, "target"),
        ({"target": lambda inp, lab: lab.float()}, ValueError, "integer class"),
        ({"attribute_kwargs": [("n", 1)]}, TypeError, "attribute_kwargs"),
        ({"attribute_kwargs": {"target": 1}}, ValueError, "target"),
        ({"seed": 1.5}, TypeError, "seed"),
        ({"process_group": "world"}, ValueError, "process_group"),
        ({"process_group": object()}, ValueError, "not initialised"),
        ({"data": [(torch.randn(2, 1, 6, 6), 0, 1)]}, ValueError, "batch 0"),
        ({"data": []}, ValueError, "no batches"),
        ({"metrics": {"m": lambda inputs: inputs.sum()}}, ValueError, "one row"),
    ],
)
def test_argument_validation(kwargs: dict[str, Any], error: type, match: str) -> None:
    model = _model()
    x, y = _data(4)
    args: dict[str, Any] = {
        "attribution_method": Saliency(model),
        "data": [(x, y)],
        "metrics": {"d": DEGRADE},
    }
    args.update(kwargs)
    with pytest.raises(error, match=match):
        evaluate_attributions(**args)


def test_local_batches_cover_everything_once() -> None:
    x, y = _data(18)
    loader = DataLoader(TensorDataset(x, y), batch_size=4)
    seen: dict[int, Tensor] = {}
    for world in (2, 3):
        got: list[int] = []
        for rank in range(world):
            pairs, total = _local_batches(loader, rank, world)
            pairs = list(pairs)
            assert total == len(pairs)
            for index, (xb, _) in pairs:
                got.append(index)
                seen.setdefault(index, xb)
                assert torch.equal(seen[index], x[4 * index : 4 * index + 4])
        assert sorted(got) == [0, 1, 2, 3, 4]  # uneven: no padding, no duplicates
    shuffled = DataLoader(TensorDataset(x, y), batch_size=4, shuffle=True)
    with pytest.raises(ValueError, match="shuffle"):
        _local_batches(shuffled, 0, 2)


class _Stream(IterableDataset):
    """Examples as a stream: its DataLoader has no length."""

    def __init__(self, x: Tensor, y: Tensor) -> None:
        self.x, self.y = x, y

    def __iter__(self) -> Any:
        return iter(zip(self.x, self.y))


def test_iterable_dataset_without_length() -> None:
    model = _model()
    x, y = _data(10)
    stream = DataLoader(_Stream(x, y), batch_size=4)
    with pytest.raises(TypeError):
        len(stream)
    res = evaluate_attributions(Saliency(model), stream, {"d": DEGRADE})
    ref = evaluate_attributions(
        Saliency(model), DataLoader(TensorDataset(x, y), batch_size=4), {"d": DEGRADE}
    )
    assert torch.equal(res.scores["d"], ref.scores["d"])
    pairs, total = _local_batches(stream, 1, 2)
    assert total is None and [i for i, _ in pairs] == [1]


# --- two processes -------------------------------------------------------------


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _run_all(model: nn.Module, loader: Any, process_group: Any) -> EvaluationResult:
    metrics = {
        "morf": DEGRADE,
        "random": partial(
            image_degradation, patch_size=2, n_steps=None, order="random"
        ),
        "infid": partial(infidelity, perturb_func=_noise, n_perturb_samples=3),
        "aopc": lambda forward_func, inputs, attributions, target: aopc(
            DEGRADE(forward_func, inputs, attributions, target)
        ),
    }
    return evaluate_attributions(
        IntegratedGradients(model),
        loader,
        metrics,
        attribute_kwargs={"n_steps": 8},
        seed=11,
        process_group=process_group,
    )


def _worker(rank: int, world: int, port: int, out_dir: str) -> None:
    os.environ["GLOO_SOCKET_IFNAME"] = "lo"
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world
    )
    try:
        model = _model()
        x, y = _data(18)
        loader = DataLoader(TensorDataset(x, y), batch_size=4)  # 5 batches: 3 + 2
        batches = [(x[i : i + 4], y[i : i + 4]) for i in range(0, 18, 4)]
        sharded = _run_all(model, loader, "auto")
        sharded_iter = _run_all(model, batches, dist.group.WORLD)
        single = _run_all(model, loader, None)  # the same process, unsharded
        torch.save(
            {
                "sharded": sharded.scores,
                "sharded_iter": sharded_iter.scores,
                "single": single.scores,
                "targets": sharded.targets,
            },
            Path(out_dir) / f"rank{rank}.pt",
        )
    finally:
        dist.destroy_process_group()


@pytest.mark.distributed
def test_two_processes_equal_one_process(tmp_path: Path) -> None:
    mp.spawn(_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    results = [
        torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)
    ]
    for res in results:
        assert res["single"].keys() == res["sharded"].keys()
        for name, single in res["single"].items():
            assert single.shape[0] == 18
            assert torch.equal(res["sharded"][name], single), name  # exactly
            assert torch.equal(res["sharded_iter"][name], single), name
            # and every rank got everything
            assert torch.equal(results[0]["sharded"][name], results[1]["sharded"][name])
    # the same numbers as this (differently threaded) process computes unsharded
    here = _run_all(_model(), DataLoader(TensorDataset(*_data(18)), batch_size=4), None)
    for name, value in here.scores.items():
        torch.testing.assert_close(results[0]["sharded"][name], value)
