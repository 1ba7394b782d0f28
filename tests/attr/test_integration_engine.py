"""Unit tests of the shared private helpers: quadrature, chunking, expansion,
validation and the gradient function every IG-style method relies on."""

from __future__ import annotations

import warnings

import pytest
import torch
from captum._utils.common import _expand_additional_forward_args, _expand_target
from captum._utils.gradient import compute_gradients
from captum.attr._utils.approximation_methods import approximation_parameters
from torch import Tensor, nn

from captum_ext._utils.batching import forward_args_for_paths
from captum_ext._utils.gradient import check_grad_mode, target_gradients
from captum_ext._utils.validation import (
    check_target_in_range,
    format_inputs,
    validate_target,
)
from captum_ext.attr._utils.integration import (
    METHODS,
    check_quadrature,
    integrate_gradients,
    path_chunks,
    quadrature,
    slice_paths,
    step_chunks,
    sum_steps,
    times_directions,
)

CAPTUM_METHODS = [m for m in METHODS if m != "trapezoid"]


# --- quadrature ---------------------------------------------------------------


@pytest.mark.parametrize("method", CAPTUM_METHODS)
@pytest.mark.parametrize("n_steps", [2, 7, 40])
def test_quadrature_is_captums_for_captum_names(method: str, n_steps: int) -> None:
    weights, alphas = quadrature(method, n_steps, torch.float64, torch.device("cpu"))
    steps_func, alphas_func = approximation_parameters(method)
    assert weights.tolist() == pytest.approx(list(steps_func(n_steps)), abs=1e-15)
    assert alphas.tolist() == pytest.approx(list(alphas_func(n_steps)), abs=1e-15)


@pytest.mark.parametrize("n_steps", [2, 3, 7, 40])
def test_trapezoid_is_the_trapezoid_rule(n_steps: int) -> None:
    weights, alphas = quadrature(
        "trapezoid", n_steps, torch.float64, torch.device("cpu")
    )
    h = 1.0 / (n_steps - 1)
    assert alphas.tolist() == pytest.approx([k * h for k in range(n_steps)])
    expected = [h] * n_steps
    expected[0] = expected[-1] = h / 2
    assert weights.tolist() == pytest.approx(expected)
    # exact for linear integrands: int_0^1 (3a + 1) da = 2.5
    assert float((weights * (3 * alphas + 1)).sum()) == pytest.approx(2.5)
    # Captum's riemann_trapezoid weights sum to (n - 1) / n instead
    captum = quadrature(
        "riemann_trapezoid", n_steps, torch.float64, torch.device("cpu")
    )
    assert float(captum[0].sum()) == pytest.approx((n_steps - 1) / n_steps)


def test_quadrature_returns_fresh_tensors() -> None:
    a, _ = quadrature("gausslegendre", 5, torch.float64, torch.device("cpu"))
    a.zero_()
    b, _ = quadrature("gausslegendre", 5, torch.float64, torch.device("cpu"))
    assert float(b.sum()) == pytest.approx(1.0)


@pytest.mark.parametrize(
    "method,n_steps,error",
    [
        ("simpson", 5, AssertionError),
        (None, 5, AssertionError),
        ("riemann_right", 1, AssertionError),
        ("trapezoid", 1, AssertionError),
        ("gausslegendre", 0, ValueError),
        ("gausslegendre", 2.0, ValueError),
        ("gausslegendre", True, ValueError),
    ],
)
def test_check_quadrature_refuses(method: object, n_steps: object, error: type) -> None:
    with pytest.raises(error, match=r"steps|method"):
        check_quadrature(method, n_steps)


def test_check_quadrature_accepts_one_gauss_legendre_step() -> None:
    check_quadrature("gausslegendre", 1)
    check_quadrature("trapezoid", 2)


# --- chunking -----------------------------------------------------------------


def test_step_chunks_is_captums_rule() -> None:
    # None: one pass
    assert step_chunks(10, 3, None) == [(0, 10, 0, 3)]
    # Captum: max(1, ibs // n) whole steps per pass
    assert step_chunks(10, 3, 9) == [
        (0, 3, 0, 3),
        (3, 6, 0, 3),
        (6, 9, 0, 3),
        (9, 10, 0, 3),
    ]
    assert step_chunks(5, 2, 100) == [(0, 5, 0, 2)]
    assert step_chunks(5, 2, 5) == [(k, min(k + 2, 5), 0, 2) for k in (0, 2, 4)]


def test_step_chunks_warns_like_captum_below_the_batch_size() -> None:
    with pytest.warns(UserWarning, match="Internal batch size cannot be less"):
        rects = step_chunks(4, 3, 2)
    assert rects == [(k, k + 1, 0, 3) for k in range(4)]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        step_chunks(4, 3, 3)


def test_step_chunks_splits_paths_when_a_step_is_too_large() -> None:
    # 10 paths of 3 examples: ibs 4 -> groups of 4 paths, one step at a time
    rects = step_chunks(2, 3, 4, n_paths=10)
    assert rects == [
        (0, 1, 0, 4),
        (0, 1, 4, 8),
        (0, 1, 8, 10),
        (1, 2, 0, 4),
        (1, 2, 4, 8),
        (1, 2, 8, 10),
    ]
    assert step_chunks(6, 3, 25, n_paths=10) == [
        (0, 2, 0, 10),
        (2, 4, 0, 10),
        (4, 6, 0, 10),
    ]


def _covered(
    rects: list[tuple[int, int, int, int]], n_steps: int, n_paths: int
) -> Tensor:
    seen = torch.zeros(n_steps, n_paths, dtype=torch.long)
    for k0, k1, p0, p1 in rects:
        seen[k0:k1, p0:p1] += 1
    return seen


@pytest.mark.parametrize("ibs", [None, 1, 3, 4, 7, 29, 30, 31, 1000])
def test_step_chunks_cover_every_point_once(ibs: int | None) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for n_paths in (3, 10):
            rects = step_chunks(7, 3, ibs, n_paths=n_paths)
            assert bool((_covered(rects, 7, n_paths) == 1).all())
            if ibs is not None:
                assert all(
                    (k1 - k0) * (p1 - p0) <= max(ibs, 3) for k0, k1, p0, p1 in rects
                )


# --- expansion ----------------------------------------------------------------


def test_path_chunks_are_captums_points_and_expansions() -> None:
    """Each chunk holds Captum's ``cat([b + a (x - b) for a in alphas])`` and
    Captum's expanded target and forward args for its steps."""
    torch.manual_seed(0)
    x = torch.randn(3, 4, dtype=torch.float64)
    b = torch.randn(1, 4, dtype=torch.float64)
    target = torch.tensor([0, 2, 1])
    afa = (torch.randn(3, 2), torch.randn(5), torch.tensor(2.0), "text")
    d = x - b
    _, alphas = approximation_parameters("riemann_middle")
    all_alphas = alphas(6)
    chunks = list(path_chunks((b,), (d,), 6, "riemann_middle", 7, 3, target, afa))
    assert [(c.k0, c.k1) for c in chunks] == [(0, 2), (2, 4), (4, 6)]
    for c in chunks:
        expected = torch.cat([b + a * (x - b) for a in all_alphas[c.k0 : c.k1]])
        torch.testing.assert_close(c.points[0], expected)
        torch.testing.assert_close(c.target, _expand_target(target, 2))
        want = _expand_additional_forward_args(afa, 2)
        assert want is not None
        for got, exp in zip(c.additional_forward_args, want):
            if isinstance(exp, Tensor):
                torch.testing.assert_close(got, exp)
            else:
                assert got == exp
    # the 0-d tensor is left as is, the (5,) one repeated, as Captum does
    assert chunks[0].additional_forward_args[1].shape == (10,)
    assert chunks[0].additional_forward_args[2].shape == ()


def test_path_chunks_slice_paths_and_list_targets() -> None:
    x = torch.arange(10.0).reshape(10, 1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        chunks = list(
            path_chunks(
                (torch.zeros(()),),
                (x,),
                2,
                "riemann_right",
                4,
                2,
                list(range(10)),
                (torch.arange(10),),
            )
        )
    assert [(c.k0, c.p0, c.p1) for c in chunks][:3] == [
        (0, 0, 4),
        (0, 4, 8),
        (0, 8, 10),
    ]
    third = chunks[2]
    assert third.target == [8, 9]
    assert third.additional_forward_args[0].tolist() == [8, 9]
    torch.testing.assert_close(third.points[0], 0.5 * x[8:10])


def test_slice_paths_leaves_shared_values() -> None:
    assert slice_paths(3, 1, 2, 5) == 3
    assert slice_paths((1, 2), 1, 2, 5) == (1, 2)
    t0 = torch.tensor(4)
    assert slice_paths(t0, 1, 2, 5) is t0
    assert slice_paths([0, 1, 2, 3, 4], 1, 3, 5) == [1, 2]
    assert slice_paths(torch.arange(5), 1, 3, 5).tolist() == [1, 2]
    full = [0, 1]
    assert slice_paths(full, 0, 2, 2) is full


def test_forward_args_for_paths() -> None:
    afa = (torch.tensor([[1.0], [2.0], [3.0]]), torch.tensor(5.0), 7)
    assert forward_args_for_paths(afa, None, 3) is afa
    ex = torch.tensor([0, 0, 2, 1])
    got = forward_args_for_paths(afa, ex, 3)
    assert got[0].flatten().tolist() == [1.0, 1.0, 3.0, 2.0]
    assert got[1] is afa[1] and got[2] == 7
    with pytest.raises(ValueError, match=r"additional_forward_args\[0\]"):
        forward_args_for_paths((torch.ones(2, 1),), ex, 3)


def test_sum_steps_and_times_directions() -> None:
    x = torch.randn(2, 3, dtype=torch.float64)
    d = torch.randn(2, 3, dtype=torch.float64)
    (chunk,) = list(
        path_chunks((torch.zeros(()),), (d,), 4, "riemann_left", None, 2, None, None)
    )
    values = torch.randn(8, 3, dtype=torch.float64)
    w = chunk.weights
    expected = sum(w[j] * values[2 * j : 2 * j + 2] for j in range(4))
    torch.testing.assert_close(sum_steps(values, chunk), expected)
    (out,) = times_directions((x,), (d,))
    torch.testing.assert_close(out, x * d)


def test_integrate_gradients_matches_captum_ig_and_calls_gradient_func() -> None:
    from captum.attr import IntegratedGradients

    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, 3)).double()
    x = torch.randn(3, 4, dtype=torch.float64)
    calls: list[int] = []

    def grad_func(**kw: object) -> tuple[Tensor, ...]:
        calls.append(1)
        return compute_gradients(**kw)  # type: ignore[arg-type]

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ours = integrate_gradients(
            grad_func,
            model,
            (torch.zeros(()),),
            (x,),
            9,
            "gausslegendre",
            7,
            3,
            [0, 2, 1],
            None,
            True,
        )
        theirs = IntegratedGradients(model).attribute(
            x, target=[0, 2, 1], n_steps=9, internal_batch_size=7
        )
    torch.testing.assert_close(ours[0], theirs, rtol=1e-6, atol=1e-9)
    assert len(calls) == 5  # 7 // 3 = 2 whole steps per pass, 9 steps


# --- validation -----------------------------------------------------------------


@pytest.mark.parametrize(
    "target",
    [-1, torch.tensor(-1), torch.tensor([-2]), (-1,), [(0, -1), (1, 0), (-1, 1)]],
)
def test_negative_targets_accepted_where_captum_accepts(target: object) -> None:
    validate_target(target, 3)


@pytest.mark.parametrize("target", [[0, -1, 2], torch.tensor([0, -1, 2])])
def test_negative_per_example_targets_refused_clearly(target: object) -> None:
    # Captum fails inside torch.gather on these
    with pytest.raises(ValueError, match=r"`target`.*>= 0"):
        validate_target(target, 3)


@pytest.mark.parametrize(
    "target,error",
    [
        (True, TypeError),
        (1.5, TypeError),
        (torch.tensor([0.0, 1.0, 2.0]), TypeError),
        (torch.zeros(3, 1, dtype=torch.long), ValueError),
        ([0, 1], AssertionError),
        (torch.tensor([0, 1]), AssertionError),
        ([], ValueError),
        ([0, (1,), 2], TypeError),
    ],
)
def test_validate_target_refuses(target: object, error: type) -> None:
    with pytest.raises(error):
        validate_target(target, 3)


def test_check_target_in_range() -> None:
    out = torch.zeros(3, 4)
    check_target_in_range(out, -4)
    check_target_in_range(out, [3, 0, 1])
    with pytest.raises(ValueError, match="target"):
        check_target_in_range(out, 4)
    with pytest.raises(ValueError, match="target"):
        check_target_in_range(out, -5)
    with pytest.raises(ValueError, match="target"):
        check_target_in_range(out, torch.tensor([0, 4, 1]))
    with pytest.raises(ValueError, match="scalar"):
        check_target_in_range(torch.zeros(3), 0)


def test_format_inputs_refuses_an_empty_batch() -> None:
    with pytest.raises(ValueError, match="`inputs` is an empty batch"):
        format_inputs(torch.zeros(0, 3))
    with pytest.raises(ValueError, match="`inputs` is an empty batch"):
        format_inputs((torch.zeros(0, 3), torch.zeros(0, 2)))
    assert format_inputs(torch.zeros(0, 3), allow_empty=True)[1][0].shape == (0, 3)


def test_check_grad_mode() -> None:
    check_grad_mode("X")
    with torch.no_grad():
        check_grad_mode("X")
    with torch.inference_mode(), pytest.raises(RuntimeError, match="inference_mode"):
        check_grad_mode("X")


# --- the default gradient function ------------------------------------------------


def test_target_gradients_equals_captum_compute_gradients() -> None:
    torch.manual_seed(2)
    model = nn.Sequential(nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, 3)).double()
    x = torch.randn(6, 4, dtype=torch.float64)
    for target in (1, -1, [0, 1, 2, 0, 1, 2], torch.tensor([2, 2, 1, 0, 0, 1])):
        ours = target_gradients(model, (x,), target)
        theirs = compute_gradients(model, (x.clone().requires_grad_(),), target)
        torch.testing.assert_close(ours[0], theirs[0])
    assert not x.requires_grad


def test_target_gradients_accepts_inference_tensors_outside_inference_mode() -> None:
    model = nn.Linear(3, 2).double()
    with torch.inference_mode():
        x = torch.randn(2, 3, dtype=torch.float64)
    (g,) = target_gradients(model, (x,), 1)
    torch.testing.assert_close(g, model.weight.detach()[1].expand(2, 3))
