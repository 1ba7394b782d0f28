"""Bundled real data: shapes, standardisation, seeded splits, no network."""

from __future__ import annotations

import socket

import pytest
import torch

from captum_ext.data import (
    accuracy,
    load_breast_cancer,
    load_diabetes,
    load_digits,
    train_model,
)
from captum_ext.models import digits_cnn


@pytest.fixture(autouse=True)
def _no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("captum_ext.data must not reach the network")

    monkeypatch.setattr(socket.socket, "connect", refuse)


def test_digits_shapes_and_standardisation() -> None:
    d = load_digits()
    assert d.x_train.shape == (1347, 1, 8, 8) and d.x_test.shape == (450, 1, 8, 8)
    assert d.x_train.dtype == torch.float32 and d.y_train.dtype == torch.int64
    assert abs(float(d.x_train.mean())) < 1e-5
    assert abs(float(d.x_train.std()) - 1.0) < 1e-4
    # stratified: every class in both splits in about the same proportion
    counts = torch.bincount(d.y_test, minlength=10)
    assert counts.min() >= 40
    # unstandardize restores the original 0..16 pixel range
    raw = d.unstandardize(d.x_test)
    assert float(raw.min()) > -1e-4 and float(raw.max()) < 16 + 1e-4


def test_splits_are_seeded_and_disjoint() -> None:
    a, b, c = load_digits(seed=3), load_digits(seed=3), load_digits(seed=4)
    assert torch.equal(a.x_train, b.x_train) and torch.equal(a.y_test, b.y_test)
    assert not torch.equal(a.y_test, c.y_test)
    raw = load_digits(standardize=False)
    rows = {tuple(r.flatten().tolist()) for r in raw.x_train}
    overlap = sum(tuple(r.flatten().tolist()) in rows for r in raw.x_test)
    # digits has a handful of exact duplicate images; a leaky split would share all
    assert overlap < 10


def test_breast_cancer() -> None:
    d = load_breast_cancer(test_size=0.2, seed=1)
    assert d.x_train.shape[1] == 30 and len(d.feature_names or ()) == 30
    assert set(d.y_train.unique().tolist()) == {0, 1}
    torch.testing.assert_close(d.x_train.mean(0), torch.zeros(30), atol=1e-5, rtol=0)
    torch.testing.assert_close(d.x_train.std(0), torch.ones(30), atol=1e-4, rtol=0)


def test_diabetes_raw_scale() -> None:
    d = load_diabetes(standardize=False, raw_scale=True)
    assert d.x_train.shape[1] == 10 and d.y_train.dtype == torch.float32
    assert float(d.x_train[:, 0].mean()) > 30  # age in years
    s = load_diabetes(raw_scale=True)
    torch.testing.assert_close(s.x_train.mean(0), torch.zeros(10), atol=1e-4, rtol=0)


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="test_size"):
        load_digits(test_size=1.5)
    with pytest.raises(ValueError, match="x` and `y"):
        train_model(digits_cnn(), torch.zeros(4, 1, 8, 8), torch.zeros(3).long())
    with pytest.raises(ValueError, match="epochs"):
        train_model(
            digits_cnn(), torch.zeros(4, 1, 8, 8), torch.zeros(4).long(), epochs=0
        )


def test_training_is_fast_reproducible_and_accurate() -> None:
    d = load_digits()
    rng_before = torch.get_rng_state()
    torch.manual_seed(0)
    m1 = digits_cnn()
    torch.manual_seed(0)
    m2 = digits_cnn()
    h1 = train_model(m1, d.x_train, d.y_train, epochs=8, seed=5)
    h2 = train_model(m2, d.x_train, d.y_train, epochs=8, seed=5)
    assert h1 == h2
    assert h1[-1] < h1[0]
    assert not m1.training
    assert all(p.grad is None for p in m1.parameters())
    assert accuracy(m1, d.x_test, d.y_test) > 0.95
    del rng_before


def test_regression_training() -> None:
    d = load_diabetes()
    torch.manual_seed(0)
    model = torch.nn.Linear(10, 1)
    hist = train_model(
        model,
        d.x_train,
        (d.y_train - d.y_train.mean()) / d.y_train.std(),
        task="regression",
        epochs=60,
        lr=0.05,
    )
    assert hist[-1] < 0.6  # a linear model explains about half the variance
