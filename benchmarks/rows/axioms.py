"""The axiom report on the digits CNN vs the same checks as per-example loops.

Ours: :func:`captum_ext.metrics.axioms.axiom_report` (every check stacks its
variants along the batch: one method call per check and method). Theirs: the
same checks written the way one writes them by hand, one attribution per
(example, variant) -- the pairs of sensitivity(a), the three models of
linearity, the path points of NDP, the sampled points of the Lipschitz
estimate -- with the same random draws, so the numbers are equal.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from captum.attr import InputXGradient, IntegratedGradients, Saliency
from torch import Tensor

from benchmarks.harness import BenchRow
from captum_ext.metrics._axioms._report import CHECKS
from captum_ext.metrics.axioms import AxiomReport, axiom_report, equivalent_model
from captum_ext.models import digits_cnn

_K_SENS = 4  # sensitivity_violation's default n_features
_N_CHECK = 16  # ndp_violation's default n_check
_LIP = {"radius": 0.05, "n_samples": 8, "n_ascent_steps": 2, "n_directions": 2}


def _naive_report(
    classes: dict[str, tuple[type, dict[str, Any]]],
    model: torch.nn.Module,
    x: Tensor,
    target: Tensor,
) -> dict[str, dict[str, float]]:
    """Every check, one attribution per example and variant (seed 0 draws)."""
    n, d = x.shape[0], x[0].numel()
    shape = x.shape[1:]
    gen = torch.Generator().manual_seed(0)
    perm = torch.randperm(d, generator=gen)
    dummy_mask = torch.zeros(d, dtype=torch.bool)
    dummy_mask[perm[: d // 2]] = True
    pairs = torch.randperm(d, generator=torch.Generator().manual_seed(0))[:4].view(2, 2)
    twin = equivalent_model(model, "permute_hidden", torch.Generator().manual_seed(0))
    out: dict[str, dict[str, float]] = {}

    def fwd(f: Any, y: Tensor, t: int) -> float:
        with torch.no_grad():
            return float(f(y).reshape(1, -1)[0, t])

    for name, (cls, kw) in classes.items():
        takes_b = cls is IntegratedGradients

        def attr(
            f: Any,
            xi: Tensor,
            bi: Tensor,
            t: int,
            cls: Any = cls,
            kw: Any = kw,
            takes_b: bool = takes_b,
        ) -> Tensor:
            extra = {"baselines": bi} if takes_b else {}
            return (
                cls(f)
                .attribute(xi, target=t, **extra, **kw)
                .detach()
                .reshape(-1)
                .double()
            )

        cols: dict[str, list[float]] = {c: [] for c in CHECKS}
        lip_gen = torch.Generator().manual_seed(0)
        ball_u = torch.randn(
            (n, _LIP["n_samples"], d), generator=lip_gen, dtype=torch.float64
        )
        ball_r = torch.rand(
            (n, _LIP["n_samples"], 1), generator=lip_gen, dtype=torch.float64
        )
        dirs = [
            torch.randn(
                (n, _LIP["n_directions"], d), generator=lip_gen, dtype=torch.float64
            )
            for _ in range(_LIP["n_ascent_steps"])
        ]
        for i in range(n):
            xi, t = x[i : i + 1], int(target[i])
            bi = torch.zeros_like(xi)
            # completeness
            a = attr(model, xi, bi, t)
            cols["completeness"].append(
                abs(float(a.sum()) - (fwd(model, xi, t) - fwd(model, bi, t)))
            )
            # sensitivity(a): one pair per feature, one call each
            flat = xi.reshape(-1)
            feats = torch.sort(flat.abs(), descending=True, stable=True).indices[
                :_K_SENS
            ]
            worst = 0.0
            for j in feats.tolist():
                bj = flat.clone()
                bj[j] = 0.0
                bj = bj.view(1, *shape)
                aj = attr(model, xi, bj, t)
                diff = fwd(model, xi, t) - fwd(model, bj, t)
                worst = max(worst, max(0.0, abs(diff) - abs(float(aj[j]))))
            cols["sensitivity(a)"].append(worst)
            # dummy
            fill = xi.detach().clone().reshape(1, -1)  # not the leaf Saliency marks

            def dummy(y: Tensor, fill: Tensor = fill) -> Tensor:
                fy = torch.where(dummy_mask, fill, y.reshape(y.shape[0], -1))
                return model(fy.view(y.shape))

            cols["dummy"].append(float(attr(dummy, xi, bi, t)[dummy_mask].abs().sum()))
            # linearity: three models
            t2 = (t + 1) % 10

            def comb(cf: float, cg: float) -> Any:
                return lambda y: (cf * model(y)[:, t] + cg * model(y)[:, t2])[:, None]  # noqa: B023 (called within the iteration)

            a0 = attr(comb(1.5, -0.5), xi, bi, 0)
            a1 = attr(comb(1.0, 0.0), xi, bi, 0)
            a2 = attr(comb(0.0, 1.0), xi, bi, 0)
            cols["linearity"].append(float((a0 - 1.5 * a1 + 0.5 * a2).abs().sum()))
            # symmetry
            ii, jj = pairs[:, 0], pairs[:, 1]

            def sym(y: Tensor) -> Tensor:
                f = y.reshape(y.shape[0], -1)
                o = f.clone()
                o[:, ii] = torch.maximum(f[:, ii], f[:, jj])  # noqa: B023 (called within the iteration)
                o[:, jj] = torch.minimum(f[:, ii], f[:, jj])  # noqa: B023 (called within the iteration)
                return model(o.view(y.shape))

            xs = flat.clone()
            m = (xs[ii] + xs[jj]) / 2
            xs[ii], xs[jj] = m, m
            asym = attr(sym, xs.view(1, *shape), bi, t)
            cols["symmetry"].append(float((asym[ii] - asym[jj]).abs().max()))
            # implementation invariance
            cols["implementation invariance"].append(
                float((attr(model, xi, bi, t) - attr(twin, xi, bi, t)).abs().sum())
            )
            # NDP: the shift from one gradient per path point
            grads = []
            for s in torch.linspace(0, 1, _N_CHECK, dtype=x.dtype).tolist():
                p = (s * xi).detach().requires_grad_(True)
                grads.append(
                    float(torch.autograd.grad(model(p)[0, t], p)[0].abs().max())
                )
            c = 2.0 * max(grads)
            w_shift = c * torch.sign(xi - bi).reshape(1, -1)  # the linear shift

            def mono(y: Tensor, w_shift: Tensor = w_shift) -> Tensor:
                shift = (y.reshape(y.shape[0], -1) * w_shift).sum(1, keepdim=True)
                return model(y) + shift

            cols["NDP"].append(float((-attr(mono, xi, bi, t)).clamp_min(0).sum()))

            # local Lipschitz: one call per point
            def ratio(y: Tensor, a_x: Tensor, xi: Tensor = xi, t: int = t) -> float:
                ay = attr(model, y.to(x.dtype).view(1, *shape), bi, t)  # noqa: B023 (called within the iteration)
                dx = float((y.double() - xi.reshape(-1).double()).norm())
                return float((ay - a_x).norm()) / dx if dx > 0 else 0.0

            a_x = attr(model, xi, bi, t)
            r = _LIP["radius"]
            x0 = xi.reshape(-1).double()
            u = ball_u[i] / ball_u[i].norm(dim=-1, keepdim=True).clamp_min(1e-30)
            pts = (x0 + (u * ball_r[i] ** (1.0 / d) * r).to(x.dtype).double()).to(
                x.dtype
            )
            rs = [ratio(p, a_x) for p in pts]
            best = max(rs)
            cur = pts[rs.index(best)]
            delta = 0.1 * r

            def project(y: Tensor) -> Tensor:
                dd = y - xi.reshape(-1)  # noqa: B023 (called within the iteration)
                return xi.reshape(-1) + dd * (r / dd.norm().clamp_min(r)).clamp(max=1.0)  # noqa: B023 (called within the iteration)

            for k, u_k in enumerate(dirs):
                uk = (u_k[i] / u_k[i].norm(dim=-1, keepdim=True).clamp_min(1e-30)).to(
                    x.dtype
                )
                plus = [ratio(project(cur + delta * v), a_x) for v in uk]
                minus = [ratio(project(cur - delta * v), a_x) for v in uk]
                best = max([best, *plus, *minus])
                g = sum(
                    ((p - q) / (2 * delta)) * v.double()
                    for p, q, v in zip(plus, minus, uk)
                )
                g = g / g.norm().clamp_min(1e-30)
                cur = project(cur + (r / 2 ** (k + 1)) * g.to(x.dtype))
            best = max(best, ratio(cur, a_x))
            cols["local Lipschitz"].append(best)
        out[name] = {c: sum(v) / n for c, v in cols.items()}
    return out


def _row(device: torch.device, quick: bool) -> BenchRow:
    n, steps = (8, 8) if quick else (64, 16)
    gen = torch.Generator().manual_seed(0)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = digits_cnn().eval().to(device)
    x = torch.randn(n, 1, 8, 8, generator=gen).to(device)
    target = torch.randint(0, 10, (n,), generator=gen).to(device)
    classes: dict[str, tuple[type, dict[str, Any]]] = {
        "IG": (IntegratedGradients, {"n_steps": steps}),
        "Saliency": (Saliency, {"abs": False}),
        "InputXGradient": (InputXGradient, {}),
    }
    methods = {k: (cls(model), kw) for k, (cls, kw) in classes.items()}

    def ours() -> AxiomReport:
        return axiom_report(
            methods, model, x, 0.0, target, check_kwargs={"local Lipschitz": _LIP}
        )

    def naive() -> dict[str, dict[str, float]]:
        return _naive_report(classes, model, x, target)

    def check(a: AxiomReport, b: dict[str, dict[str, float]]) -> None:
        for name, row in b.items():
            for c, v in row.items():
                got = a.table[name][c]
                assert got is not None, (name, c, a.errors[name].get(c))
                tol = 1e-2 if c == "local Lipschitz" else 1e-3
                assert math.isclose(got, v, rel_tol=tol, abs_tol=1e-4), (
                    name,
                    c,
                    got,
                    v,
                )

    return BenchRow(
        name="axiom_report (8 checks x 3 methods)",
        counterpart="per-example loops, one attribution per variant",
        kind="naive",
        ours=ours,
        theirs=naive,
        goal=("speedup>=", 5.0),
        check=check,
        note=f"digits CNN (random init), {n} examples 1x8x8, IG {steps} steps; "
        "Saliency, InputXGradient",
    )


def rows(device: torch.device, quick: bool) -> list[BenchRow]:
    return [_row(device, quick)]
