"""CPU time of ``fit_patterns`` per ``kind`` on torchvision's ResNet-18 at 224x224.

``python -m benchmarks.fit_patterns_kinds``: random weights (``weights=None``,
``num_classes=10``, eval mode), 2 batches of 4 random 3x224x224 images, one
torch thread, process CPU time, medians of 5 runs after one warm-up; each
kind's time in plain forward passes over the same batches.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import torch

from benchmarks.harness import TIMERS, _once
from captum_ext.attr import fit_patterns


def _median_cpu(fn: Callable[[], object], repeats: int = 5) -> float:
    times = sorted(_once(fn, TIMERS["cpu"]) for _ in range(repeats))
    return times[repeats // 2]


def main() -> None:
    import torchvision.models as tvm  # type: ignore[import-untyped]

    warnings.filterwarnings("ignore", message="fit_patterns: ")  # random weights
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = tvm.resnet18(weights=None, num_classes=10).eval()
    gen = torch.Generator().manual_seed(0)
    data = [torch.randn(4, 3, 224, 224, generator=gen) for _ in range(2)]

    def forward() -> None:
        with torch.no_grad():
            for x in data:
                model(x)

    forward()
    base = _median_cpu(forward)
    line = [f"forward {base * 1e3:.0f} ms"]
    for kind in ("auto", "relu", "linear"):
        fit_patterns(model, data, kind=kind)  # warm-up
        t = _median_cpu(lambda k=kind: fit_patterns(model, data, kind=k))
        line.append(f"{kind} {t * 1e3:.0f} ms = {t / base:.2f} forward passes")
    print("; ".join(line))


if __name__ == "__main__":
    main()
