"""Figs. 1-3 of the ablated-augmentation paper on small real data.

MLPs (width 100, as section 4.1) with 0 and 1 hidden layers are trained with
``train_model``'s defaults (Adam, lr 1e-2, 20 epochs, batch 64) on breast
cancer (classification; penalties of the class-1 logit) and diabetes
(regression, target standardised), with mean ablation (MADA) or inverted
input dropout (IID) of strength lambda, two seeds averaged. Penalties are
computed on the test split with IG (100 steps, zero baseline = the feature
means) and average gradients. Deeper nets are reported by the tutorial.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import pytest
import torch

from captum_ext.data import load_breast_cancer, load_diabetes, train_model
from captum_ext.metrics import ablation_penalties
from captum_ext.models import tabular_mlp
from captum_ext.transforms import InvertedInputDropout, MeanAblation

LAMBDAS = (0.0, 0.25, 0.5, 0.75)
SEEDS = (0, 1)
DEPTHS = (0, 1)


@dataclass
class Cell:
    ccp: float
    ml2p: float
    logit_std: float
    train_loss: float


Table = dict[tuple[str, int, str, float], Cell]


def _run() -> Table:
    bc = load_breast_cancer(seed=0)
    db = load_diabetes(seed=0)
    y_mean, y_std = db.y_train.mean(), db.y_train.std()
    tasks = {
        "breast_cancer": (bc.x_train, bc.y_train, bc.x_test, "classification", 2, 1),
        "diabetes": (
            db.x_train,
            (db.y_train - y_mean) / y_std,
            db.x_test,
            "regression",
            1,
            None,
        ),
    }
    table: Table = {}
    for name, (x, y, x_test, task, n_out, target) in tasks.items():
        for depth in DEPTHS:
            for aug in ("mada", "iid"):
                for lam in LAMBDAS:
                    if lam == 0.0 and aug == "iid":  # the same model
                        table[name, depth, aug, lam] = table[name, depth, "mada", lam]
                        continue
                    cells = []
                    for seed in SEEDS:
                        torch.manual_seed(seed)
                        model = tabular_mlp(x.shape[1], n_out, depth, width=100)
                        transform: torch.nn.Module = (
                            MeanAblation.from_data(x, lam)
                            if aug == "mada"
                            else InvertedInputDropout(lam)
                        )
                        losses = train_model(
                            model, x, y, task=task, seed=seed, transform=transform
                        )
                        result = ablation_penalties(model, x_test, target=target)
                        with torch.no_grad():
                            out = model(x_test)[:, 1 if target == 1 else 0]
                        cells.append(
                            (
                                float(result.ccp),
                                float(result.ml2p),
                                float(out.std()),
                                losses[-1],
                            )
                        )
                    means = [sum(c[i] for c in cells) / len(cells) for i in range(4)]
                    table[name, depth, aug, lam] = Cell(*means)
    return table


@pytest.fixture(scope="module")
def table() -> Table:
    # tiny networks: one thread avoids synchronisation overhead on busy CPUs
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _run()
    finally:
        torch.set_num_threads(threads)


def _series(table: Table, name: str, depth: int, aug: str, field: str) -> list[float]:
    return [getattr(table[name, depth, aug, lam], field) for lam in LAMBDAS]


def _falls(values: list[float]) -> bool:
    return all(a > b for a, b in itertools.pairwise(values))


@pytest.mark.slow
@pytest.mark.parametrize("name", ["breast_cancer", "diabetes"])
@pytest.mark.parametrize("depth", DEPTHS)
def test_inverted_dropout_lowers_modified_l2(
    table: Table, name: str, depth: int
) -> None:
    ml2p = _series(table, name, depth, "iid", "ml2p")
    assert _falls(ml2p), ml2p


@pytest.mark.slow
@pytest.mark.parametrize(
    ("name", "depth"), [("diabetes", 0), ("diabetes", 1), ("breast_cancer", 0)]
)
def test_mean_ablation_lowers_ccp(table: Table, name: str, depth: int) -> None:
    ccp = _series(table, name, depth, "mada", "ccp")
    assert _falls(ccp), ccp


@pytest.mark.slow
def test_breast_cancer_hidden_layer_ccp_follows_the_logit_scale(table: Table) -> None:
    """Where the trend does NOT appear, and why (measured, not tuned away).

    With a hidden layer, the unaugmented classifier interpolates the nearly
    separable training set (training loss near 0) and cross-entropy keeps
    growing its logits, so its raw CCP, quadratic in the logit scale, is the
    most negative of all: the first step of the lambda grid goes against the
    trend. Among augmented models (bounded logits) CCP does fall at large
    lambda. See the tutorial for the numbers at every depth.
    """
    ccp = _series(table, "breast_cancer", 1, "mada", "ccp")
    std = _series(table, "breast_cancer", 1, "mada", "logit_std")
    loss = _series(table, "breast_cancer", 1, "mada", "train_loss")
    assert ccp[0] < ccp[1], ccp  # the paper's trend fails at lambda 0 -> 0.25
    assert std[0] > 1.2 * std[1], std  # ... because the lambda = 0 logits are larger
    assert loss[0] < loss[1] / 3, loss  # ... as that model fits the training set
    assert ccp[3] < ccp[1], ccp  # among augmented models CCP falls at large lambda


@pytest.mark.slow
@pytest.mark.parametrize("name", ["breast_cancer", "diabetes"])
@pytest.mark.parametrize("depth", DEPTHS)
def test_the_reverse_does_not_hold(table: Table, name: str, depth: int) -> None:
    # mean ablation does not lower the Modified L2 penalty: it rises at large lambda
    ml2p = _series(table, name, depth, "mada", "ml2p")
    assert ml2p[3] > ml2p[1], ml2p
    # inverted dropout pushes CCP towards 0 (coefficients shrink), not down
    ccp = _series(table, name, depth, "iid", "ccp")
    assert abs(ccp[3]) < abs(ccp[0]) and ccp[3] > ccp[0], ccp
