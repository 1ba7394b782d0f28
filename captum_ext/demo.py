"""The end-to-end demo: ``python -m captum_ext.demo [--out DIR] [--quick]``.

Trains a small CNN on scikit-learn's bundled digits (seconds on a CPU),
explains a batch of test digits with every captum-ext attribution method and a
few Captum baselines, scores every map with captum-ext's metrics (image
degradation AOPC, deletion / insertion AUC, masked input accuracy), and writes
a figure grid and the degradation curves (PNG) and a metrics table (markdown +
JSON). It prints the table and the paths of the files. Nothing is downloaded.
"""

from __future__ import annotations

import argparse
import json
import math
import time
import warnings
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, cast

import torch
from captum.attr import (
    GuidedBackprop,
    InputXGradient,
    IntegratedGradients,
    NoiseTunnel,
    Saliency,
)
from torch import Tensor, nn

from captum_ext.attr import (
    DistributionalIG,
    GradientSignInput,
    LearnedMask,
    PatchConductance,
    PatternAttribution,
    PatternGuidedIG,
    PatternNet,
    PatternSet,
    RecursiveMaskAttribution,
    fit_patterns,
)
from captum_ext.attr._core.recursive_mask import _minmax_mask
from captum_ext.data import DataSplit, accuracy, load_digits, train_model
from captum_ext.metrics import (
    aopc,
    deletion_auc,
    image_degradation,
    insertion_auc,
    masked_input_accuracy,
)
from captum_ext.models import digits_cnn

AttributeFn = Callable[[Tensor, Tensor], Tensor]

#: Side of the square patches of the image degradation benchmark (16 per digit).
PATCH_SIZE = 2


@dataclass(frozen=True)
class DemoMethod:
    """A method shown by the demo.

    ``build(model, data, quick)`` returns a function ``(inputs, target) ->
    attributions`` shaped like ``inputs``; ``source`` says where the method
    comes from; ``mask`` marks methods whose output is already a mask in
    [0, 1] (the masked input accuracy uses it as it is; other maps are min-max
    normalised first, eq. 11 of the GxSI paper).
    """

    name: str
    source: str
    build: Callable[[nn.Module, DataSplit, bool], AttributeFn]
    mask: bool = False


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


def _training_references(data: DataSplit, k: int) -> Tensor:
    """``k`` training images drawn with a fixed seed: the baseline distribution."""
    generator = torch.Generator().manual_seed(0)
    index = torch.randperm(data.x_train.shape[0], generator=generator)[:k]
    return data.x_train[index]


def _noise_sigma(data: DataSplit) -> float:
    """SmoothGrad noise at the PGIG paper's level: sigma^2 = 0.15 on [-1, 1].

    That is 19% of the input range; the same fraction of the standardised
    digits' range.
    """
    value_range = float(data.x_train.max() - data.x_train.min())
    return math.sqrt(0.15) * value_range / 2


def _patch_conductance_map(model: nn.Module) -> AttributeFn:
    """Patch IG of every 2x2 patch, through the hidden layer, spread on its pixels.

    One :class:`PatchConductance` call attributes all 16 patches to the 64
    neurons of the hidden linear layer; summed over the neurons this is each
    patch's integrated gradient (every path crosses the layer), shown as an
    input map with each patch's value shared equally by its pixels.
    """
    hidden = [m for m in model.modules() if isinstance(m, nn.Linear)][-2]
    method = PatchConductance(model, hidden)

    def fn(x: Tensor, t: Tensor) -> Tensor:
        height, width = x.shape[-2:]
        rows = torch.arange(height) // PATCH_SIZE
        cols = torch.arange(width) // PATCH_SIZE
        ids = rows[:, None] * (width // PATCH_SIZE) + cols[None, :]
        per_patch = method.attribute(x, ids[None, None], target=t, n_steps=16)
        per_patch = cast(Tensor, per_patch).flatten(2).sum(-1)  # (bsz, n_patches)
        return per_patch[:, ids].unsqueeze(1) / PATCH_SIZE**2

    return fn


def _demo_methods() -> list[DemoMethod]:
    """Methods in the order they appear in the figure (captum-ext first)."""
    return [
        DemoMethod("GxSI", "captum-ext", lambda m, d, q: _wrap(GradientSignInput(m))),
        DemoMethod(
            "GxSI mask (3 it.)",
            "captum-ext",
            lambda m, d, q: _wrap(RecursiveMaskAttribution(m), n_iterations=3),
            mask=True,
        ),
        DemoMethod(
            "PatternNet",
            "captum-ext",
            lambda m, d, q: _wrap(PatternNet(m, _digits_patterns(m, d))),
        ),
        DemoMethod(
            "PatternAttribution",
            "captum-ext",
            lambda m, d, q: _wrap(PatternAttribution(m, _digits_patterns(m, d))),
        ),
        DemoMethod(
            "Pattern-Guided IG",
            "captum-ext",
            lambda m, d, q: _wrap(
                PatternGuidedIG(m, _digits_patterns(m, d)), n_steps=25
            ),
        ),
        DemoMethod(
            "Distributional IG",
            "captum-ext",
            lambda m, d, q: _wrap(
                DistributionalIG(m),
                baselines=_training_references(d, 8),
                n_steps=16,
                internal_batch_size=4096,
            ),
        ),
        DemoMethod(
            "PatchConductance",
            "captum-ext",
            lambda m, d, q: _patch_conductance_map(m),
        ),
        DemoMethod(
            "LearnedMask",
            "captum-ext",
            lambda m, d, q: _wrap(
                LearnedMask(m),
                distractors=d.x_train,
                n_distractors=2 if q else 4,
                n_iter=50 if q else 100,
                lr=0.1,
                l1_coeff=1e-2,
                tv_coeff=0.01,
                generator=torch.Generator().manual_seed(0),
            ),
            mask=True,
        ),
        DemoMethod("Saliency", "Captum", lambda m, d, q: _wrap(Saliency(m))),
        DemoMethod(
            "Gradient*Input", "Captum", lambda m, d, q: _wrap(InputXGradient(m))
        ),
        DemoMethod(
            "Integrated Gradients",
            "Captum",
            lambda m, d, q: _wrap(IntegratedGradients(m), n_steps=25),
        ),
        DemoMethod(
            "SmoothGrad²",
            "Captum",
            lambda m, d, q: _wrap(
                NoiseTunnel(Saliency(m)),
                nt_type="smoothgrad_sq",
                nt_samples=25,
                stdevs=_noise_sigma(d),
            ),
        ),
        DemoMethod(
            "Guided Backprop", "Captum", lambda m, d, q: _wrap(GuidedBackprop(m))
        ),
    ]


def _random_scores(x: Tensor, t: Tensor) -> Tensor:
    """The reference every method should beat: a uniformly random ranking."""
    return torch.rand(x.shape, generator=torch.Generator().manual_seed(0))


def _timed(
    fn: Callable[[], Tensor], repeats: int, budget_s: float = 1.0
) -> tuple[Tensor, float]:
    """The first call's result, and the best time of up to ``1 + repeats`` calls.

    Repeats stop once ``budget_s`` seconds are spent, so slow methods run once
    (the first call doubles as the warm-up of fast ones).
    """
    start = time.perf_counter()
    out = fn()
    times = [time.perf_counter() - start]
    while len(times) <= repeats and sum(times) < budget_s:
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return out, min(times)


def _scores(
    model: nn.Module,
    x: Tensor,
    target: Tensor,
    labels: Tensor,
    attributions: Tensor,
    is_mask: bool,
) -> tuple[dict[str, float], Tensor]:
    """Mean metrics of one method's maps, and its mean MoRF degradation curve."""
    curves = image_degradation(
        model, x, attributions, target=target, patch_size=PATCH_SIZE, n_steps=None
    )
    masks = attributions if is_mask else _minmax_mask(attributions)
    metrics = {
        "aopc_morf": aopc(curves),
        "deletion_auc": deletion_auc(
            model, x, attributions, target=target, fill="zero", n_steps=64
        ),
        "insertion_auc": insertion_auc(
            model,
            x,
            attributions,
            target=target,
            fill="blur",
            blur_sigma=2.0,
            n_steps=64,
        ),
        "masked_input_accuracy": masked_input_accuracy(model, x, masks, labels),
    }
    means = {
        k: round(float(cast(Tensor, v).double().mean()), 4) for k, v in metrics.items()
    }
    return means, curves.mean(0)


def _save_grid(
    path: Path,
    images: Tensor,
    labels: Tensor,
    results: dict[str, Tensor],
) -> None:
    from matplotlib.figure import Figure

    n = images.shape[0]
    cols = 1 + len(results)
    fig = Figure(figsize=(1.3 * cols, 1.4 * n))
    axes = fig.subplots(n, cols, squeeze=False)
    for i in range(n):
        axes[i, 0].imshow(images[i, 0].numpy(), cmap="gray_r")
        axes[i, 0].set_ylabel(f"class {int(labels[i])}", fontsize=8)
        for j, (name, attr) in enumerate(results.items(), start=1):
            a = attr[i].sum(0).numpy()
            lim = float(abs(a).max()) or 1.0
            axes[i, j].imshow(a, cmap="bwr", vmin=-lim, vmax=lim)
            if i == 0:
                axes[i, j].set_title(name.replace(" ", "\n", 1), fontsize=7)
        axes[0, 0].set_title("digit", fontsize=7)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle("Attributions for the predicted class (red +, blue -)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def _save_curves(path: Path, curves: dict[str, Tensor], reference: str) -> None:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9, 4.5))
    ax = fig.subplots()
    for i, (name, curve) in enumerate(curves.items()):
        if name == reference:
            ax.plot(curve.numpy(), "k:", lw=2, label=name)
        else:
            style = "-" if i < 10 else "--"
            ax.plot(curve.numpy(), style, color=f"C{i % 10}", label=name)
    ax.set_xlabel(f"{PATCH_SIZE}x{PATCH_SIZE} patches replaced by their mean")
    ax.set_ylabel("mean probability of the class")
    ax.set_title("Image degradation, most relevant first (lower is better)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def _markdown(rows: list[dict[str, Any]], batch: int, acc: float, quick: bool) -> str:
    lines = [
        f"Digits CNN (test accuracy {acc:.3f}); {batch} test digits, each "
        "explained and scored for the predicted class.",
        "",
        f"| method | from | ms / batch of {batch} | AOPC (MoRF) ↑ | deletion AUC ↓ "
        "| insertion AUC ↑ | masked input accuracy ↑ |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['method']} | {r['source']} | {r['ms_per_batch']:.1f} "
            f"| {r['aopc_morf']:.3f} | {r['deletion_auc']:.3f} "
            f"| {r['insertion_auc']:.3f} | {r['masked_input_accuracy']:.3f} |"
        )
    lines += [
        "",
        f"AOPC: {PATCH_SIZE}x{PATCH_SIZE} patches replaced by their mean, most "
        "relevant first (PGIG paper, section 5). Deletion: pixels set to zero (the "
        "mean digit); insertion: pixels restored into a blurred digit; 64 steps. "
        "Masked input accuracy: accuracy on x * mask (GxSI paper, eq. 12), the "
        "map min-max normalised unless it is a mask. Settings: IG and PGIG 25 "
        "steps; distributional IG 8 training references x 16 steps; "
        "PatchConductance 16 patches x 16 steps through the hidden layer; "
        "SmoothGrad² 25 samples; LearnedMask "
        f"{'50 Adam steps x 2' if quick else '100 Adam steps x 4'} distractors.",
    ]
    return "\n".join(lines) + "\n"


def run(out_dir: Path, quick: bool = False, seed: int = 0) -> dict[str, Any]:
    """Run the demo, write its files into ``out_dir`` and return the summary.

    Args:
        out_dir (Path): Folder for ``attributions.png``, ``degradation.png``,
            ``metrics.md`` and ``metrics.json`` (created if missing).
        quick (bool): Fewer epochs, a smaller batch, fewer optimisation steps
            and timing repeats.
        seed (int): Seed for model initialisation and training.

    Returns:
        dict: test accuracy, the batch size, and per method its time per batch
        (milliseconds) and mean metrics; also each method's mean MoRF curve.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    data = load_digits(seed=seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = digits_cnn().eval()
    train_model(model, data.x_train, data.y_train, epochs=6 if quick else 15, seed=seed)
    acc = accuracy(model, data.x_test, data.y_test)

    batch = 64 if quick else 256
    x, labels = data.x_test[:batch], data.y_test[:batch]
    with torch.no_grad():
        target = model(x).argmax(1)
    repeats = 2 if quick else 5
    n_show = 4 if quick else 6

    reference = DemoMethod("random order", "reference", lambda m, d, q: _random_scores)
    maps: dict[str, Tensor] = {}
    curves: dict[str, Tensor] = {}
    rows = []
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)  # NoiseTunnel draws from the global RNG
        for method in [*_demo_methods(), reference]:
            fn = method.build(model, data, quick)
            attributions, seconds = _timed(partial(fn, x, target), repeats)
            attributions = attributions.detach()
            scores, curves[method.name] = _scores(
                model, x, target, labels, attributions, method.mask
            )
            if method is not reference:
                maps[method.name] = attributions[:n_show]
            rows.append(
                {
                    "method": method.name,
                    "source": method.source,
                    "ms_per_batch": round(1000 * seconds, 2),
                    **scores,
                }
            )

    _save_grid(
        out_dir / "attributions.png",
        data.unstandardize(x[:n_show]),
        target[:n_show],
        maps,
    )
    _save_curves(out_dir / "degradation.png", curves, reference.name)
    (out_dir / "metrics.md").write_text(_markdown(rows, batch, acc, quick))
    summary = {
        "test_accuracy": acc,
        "quick": quick,
        "batch_size": batch,
        "methods": rows,
        "degradation_curves": {
            k: [round(float(p), 5) for p in v] for k, v in curves.items()
        },
    }
    (out_dir / "metrics.json").write_text(json.dumps(summary, indent=2))
    return summary


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(
        prog="python -m captum_ext.demo",
        description="Train a digits CNN, compare attribution methods and score them.",
    )
    parser.add_argument("--out", type=Path, default=Path("demo_output"))
    parser.add_argument("--quick", action="store_true", help="finish in seconds")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    # Captum's Saliency / InputXGradient warn about inputs without requires_grad,
    # GuidedBackprop about backward hooks on ReLU modules; torch's forward-mode
    # AD (PatchConductance) scripts its decompositions on first use.
    warnings.filterwarnings("ignore", message="Input Tensor .* did not already require")
    warnings.filterwarnings("ignore", message="Setting backward hooks on ReLU")
    warnings.filterwarnings("ignore", message="`torch.jit.script` is deprecated")
    torch.set_num_threads(min(4, torch.get_num_threads()))
    run(args.out, quick=args.quick, seed=args.seed)
    print((args.out / "metrics.md").read_text())
    for name in ("attributions.png", "degradation.png", "metrics.md", "metrics.json"):
        print(args.out / name)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
