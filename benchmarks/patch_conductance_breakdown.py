"""Where PatchConductance's time goes on resnet18 ``layer2`` at 3x224x224.

``OMP_NUM_THREADS=1 PYTHONPATH=. python -m benchmarks.patch_conductance_breakdown``

Times (minimum of 5 runs of process CPU time, 1 thread, 8 path points) of the
parts of PatchConductance's one pass (``directional="jvp"``, one patch): the
first half of the model (stem, ``layer1``, ``layer2``) without and with
tangents, and the second half forward and backward to the layer; then Captum's
LayerConductance pass over its 9 points and the two methods end to end.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import torch
import torch.autograd.forward_ad as fwAD
from captum.attr import LayerConductance
from torch import nn

from benchmarks.harness import TIMERS, _once
from captum_ext.attr import PatchConductance
from captum_ext.attr._utils.layer_passes import TangentRules


def _min_cpu_ms(fn: Callable[[], object], n: int = 5) -> float:
    fn()
    return 1000 * min(_once(fn, TIMERS["cpu"]) for _ in range(n))


def main() -> None:
    import torchvision.models as tvm  # type: ignore[import-untyped]

    warnings.filterwarnings("ignore")
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = tvm.resnet18(weights=None, num_classes=10).eval()
    x = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    first = nn.Sequential(
        model.conv1, model.bn1, model.relu, model.maxpool, model.layer1, model.layer2
    )
    second = nn.Sequential(
        model.layer3, model.layer4, model.avgpool, nn.Flatten(), model.fc
    )
    alphas = torch.linspace(0.05, 0.95, 8).view(-1, 1, 1, 1)
    points = alphas * x  # 8 points of the path from a zero baseline
    with torch.no_grad():
        h = first(points)

    def first_half() -> None:
        with torch.no_grad():
            first(points)

    def first_half_tangents(rules: bool) -> None:
        with torch.no_grad(), fwAD.dual_level():
            if rules:
                with TangentRules() as r:
                    first(r.periodic(points, x, 8))
            else:
                first(fwAD.make_dual(points, x.expand_as(points).contiguous()))

    def second_half() -> None:
        leaf = h.clone().requires_grad_()
        torch.autograd.grad(second(leaf)[:, 1].sum(), leaf)

    nine = (torch.linspace(0, 1, 9).view(-1, 1, 1, 1) * x).requires_grad_()

    def captum_pass_grad() -> None:
        seen: list[torch.Tensor] = []
        handle = model.layer2.register_forward_hook(lambda m, a, o: seen.append(o))
        try:
            out = model(nine)[:, 1].sum()
        finally:
            handle.remove()
        torch.autograd.grad(out, seen[0])

    everything = torch.ones(1, 1, 224, 224, dtype=torch.bool)
    target = torch.tensor([1])
    pc = PatchConductance(model, model.layer2)
    lc = LayerConductance(model, model.layer2)
    rows = {
        "first half, forward (8 points)": first_half,
        "first half, forward + tangents (rules)": lambda: first_half_tangents(True),
        "first half, forward + tangents (PyTorch's formulas)": (
            lambda: first_half_tangents(False)
        ),
        "second half, forward + backward to the layer": second_half,
        "Captum's pass (9 points, backward to the layer)": captum_pass_grad,
        "PatchConductance, jvp": lambda: pc.attribute(
            x, everything, target=target, n_steps=8
        ),
        "PatchConductance, finite_difference": lambda: pc.attribute(
            x, everything, target=target, n_steps=8, directional="finite_difference"
        ),
        "LayerConductance": lambda: lc.attribute(
            x, target=target, n_steps=8, method="riemann_trapezoid"
        ),
    }
    for name, fn in rows.items():
        print(f"{name:55s} {_min_cpu_ms(fn):8.1f} ms", flush=True)


if __name__ == "__main__":
    main()
