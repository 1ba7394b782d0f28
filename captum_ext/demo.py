"""The end-to-end demo: ``python -m captum_ext.demo [--out DIR] [--quick]``.

Trains a small CNN on scikit-learn's bundled digits (seconds on a CPU), explains
a few test digits with captum-ext and Captum methods side by side, writes a
figure grid (PNG) and a timing table (markdown + JSON), and prints the table.
Nothing is downloaded.
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, cast

import torch
from captum.attr import InputXGradient, IntegratedGradients, Saliency
from torch import Tensor, nn

from captum_ext.attr import (
    DistributionalIG,
    GradientSignInput,
    LearnedMask,
    PatternAttribution,
    PatternGuidedIG,
    PatternSet,
    RecursiveMaskAttribution,
    fit_patterns,
)
from captum_ext.data import DataSplit, accuracy, load_digits, train_model
from captum_ext.models import digits_cnn

AttributeFn = Callable[[Tensor, Tensor], Tensor]


@dataclass(frozen=True)
class DemoMethod:
    """A method shown by the demo.

    ``build(model, data)`` returns a function ``(inputs, target) -> attributions``
    shaped like ``inputs``; ``source`` says where the method comes from.
    """

    name: str
    source: str
    build: Callable[[nn.Module, DataSplit], AttributeFn]


def _wrap(method: Any, **kwargs: Any) -> AttributeFn:
    """``(inputs, target) -> attributions`` for a constructed attribution method."""

    def fn(x: Tensor, t: Tensor) -> Tensor:
        return cast(Tensor, method.attribute(x, target=t, **kwargs))

    return fn


_PATTERNS: weakref.WeakKeyDictionary[nn.Module, PatternSet] = (
    weakref.WeakKeyDictionary()
)


def _digits_patterns(model: nn.Module, data: DataSplit) -> PatternSet:
    """Patterns of ``model`` fitted once on the digits training split."""
    if model not in _PATTERNS:
        loader = data.train_loader(batch_size=512, shuffle=False)
        _PATTERNS[model] = fit_patterns(model, loader)
    return _PATTERNS[model]


def _demo_methods() -> list[DemoMethod]:
    """Methods in the order they appear in the figure (captum-ext first)."""
    return [
        DemoMethod("GxSI", "captum-ext", lambda m, d: _wrap(GradientSignInput(m))),
        DemoMethod(
            "GxSI mask (3 it.)",
            "captum-ext",
            lambda m, d: _wrap(RecursiveMaskAttribution(m), n_iterations=3),
        ),
        DemoMethod("Saliency", "Captum", lambda m, d: _wrap(Saliency(m), abs=False)),
        DemoMethod("Gradient*Input", "Captum", lambda m, d: _wrap(InputXGradient(m))),
        DemoMethod(
            "Integrated Gradients",
            "Captum",
            lambda m, d: _wrap(IntegratedGradients(m), n_steps=32),
        ),
        DemoMethod(
            "PatternAttribution",
            "captum-ext",
            lambda m, d: _wrap(PatternAttribution(m, _digits_patterns(m, d))),
        ),
        DemoMethod(
            "Pattern-Guided IG",
            "captum-ext",
            lambda m, d: _wrap(PatternGuidedIG(m, _digits_patterns(m, d)), n_steps=32),
        ),
        DemoMethod(
            "Distributional IG",
            "captum-ext",
            lambda m, d: _wrap(
                DistributionalIG(m),
                baselines=_training_references(d, 8),
                n_steps=16,
                internal_batch_size=4096,
            ),
        ),
        DemoMethod(
            "LearnedMask",
            "captum-ext",
            lambda m, d: _wrap(
                LearnedMask(m),
                distractors=d.x_train,
                n_distractors=2,
                n_iter=50,
                lr=0.1,
                l1_coeff=1e-2,
                tv_coeff=0.01,
                generator=torch.Generator().manual_seed(0),
            ),
        ),
    ]


def _training_references(data: DataSplit, k: int) -> Tensor:
    """``k`` training images drawn with a fixed seed: the baseline distribution."""
    generator = torch.Generator().manual_seed(0)
    index = torch.randperm(data.x_train.shape[0], generator=generator)[:k]
    return data.x_train[index]


def _time(fn: Callable[[], Any], repeats: int) -> tuple[Any, float]:
    out = fn()  # warm-up, and the result we keep
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return out, best


def _save_grid(
    path: Path,
    images: Tensor,
    labels: Tensor,
    results: dict[str, Tensor],
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = images.shape[0]
    cols = 1 + len(results)
    fig, axes = plt.subplots(n, cols, figsize=(1.6 * cols, 1.6 * n), squeeze=False)
    for i in range(n):
        axes[i, 0].imshow(images[i, 0].numpy(), cmap="gray_r")
        axes[i, 0].set_ylabel(f"label {int(labels[i])}", fontsize=8)
        for j, (name, attr) in enumerate(results.items(), start=1):
            a = attr[i].sum(0).numpy()
            lim = float(abs(a).max()) or 1.0
            axes[i, j].imshow(a, cmap="bwr", vmin=-lim, vmax=lim)
            if i == 0:
                axes[i, j].set_title(name, fontsize=8)
        axes[0, 0].set_title("digit", fontsize=8)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle("Attributions for the true label (red +, blue -)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def run(out_dir: Path, quick: bool = False, seed: int = 0) -> dict[str, Any]:
    """Run the demo, write its files into ``out_dir`` and return the summary.

    Args:
        out_dir (Path): Folder for ``attributions.png``, ``timings.md`` and
            ``summary.json`` (created if missing).
        quick (bool): Fewer epochs, examples and timing repeats.
        seed (int): Seed for model initialisation and training.

    Returns:
        dict: accuracy, and per-method timings in milliseconds.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    data = load_digits(seed=seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = digits_cnn()
    train_model(model, data.x_train, data.y_train, epochs=6 if quick else 15, seed=seed)
    acc = accuracy(model, data.x_test, data.y_test)

    n_show = 4 if quick else 6
    images, labels = data.x_test[:n_show], data.y_test[:n_show]
    batch_x, batch_y = data.x_test[:128], data.y_test[:128]
    repeats = 2 if quick else 5

    results: dict[str, Tensor] = {}
    rows = []
    for method in _demo_methods():
        fn = method.build(model, data)
        attr = fn(images, labels).detach()
        results[method.name] = attr
        _, seconds = _time(partial(fn, batch_x, batch_y), repeats)
        rows.append(
            {
                "method": method.name,
                "source": method.source,
                "ms_per_batch_128": round(1000 * seconds, 2),
            }
        )

    _save_grid(
        out_dir / "attributions.png", data.unstandardize(images), labels, results
    )
    table = ["| method | from | ms / batch of 128 |", "|---|---|---:|"]
    table += [
        f"| {r['method']} | {r['source']} | {r['ms_per_batch_128']:.2f} |" for r in rows
    ]
    (out_dir / "timings.md").write_text("\n".join(table) + "\n")
    summary = {"test_accuracy": acc, "timings": rows, "quick": quick}
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(
        prog="python -m captum_ext.demo",
        description="Train a digits CNN and compare attribution methods.",
    )
    parser.add_argument("--out", type=Path, default=Path("demo_output"))
    parser.add_argument("--quick", action="store_true", help="finish in seconds")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    # Captum's Saliency / InputXGradient warn about inputs without requires_grad.
    warnings.filterwarnings("ignore", message="Input Tensor .* did not already require")
    torch.set_num_threads(min(4, torch.get_num_threads()))
    start = time.perf_counter()
    summary = run(args.out, quick=args.quick, seed=args.seed)
    print(f"digits CNN test accuracy: {summary['test_accuracy']:.3f}")
    print((args.out / "timings.md").read_text())
    print(f"figure: {args.out / 'attributions.png'}")
    print(f"done in {time.perf_counter() - start:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
