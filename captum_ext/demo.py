"""The end-to-end demo: ``python -m captum_ext.demo [--out DIR] [--quick]``.

Trains a small CNN on scikit-learn's bundled digits, explains a batch of test
digits with every captum-ext attribution method and a few Captum baselines,
scores every map with captum-ext's metrics (image degradation AOPC, deletion /
insertion AUC, masked input accuracy), and writes a figure grid and the
degradation curves (PNG) and a metrics table (markdown + JSON). While it runs
it reports each step on stderr (one line per method, as it finishes); at the
end it prints the table, the paths of the files and its own wall-clock and CPU
time on stdout. Nothing is downloaded. ``--tiny`` is a smoke-test size (the
test suite runs it); its numbers are not meaningful.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
import warnings
import weakref
from collections.abc import Callable
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Any, TextIO, cast

#: When this module started importing (torch and Captum included): the start of
#: ``python -m captum_ext.demo`` as far as its printed wall-clock time goes.
_IMPORT_STARTED = time.perf_counter()

import torch  # noqa: E402
from captum.attr import (  # noqa: E402
    GuidedBackprop,
    InputXGradient,
    IntegratedGradients,
    NoiseTunnel,
    Saliency,
)
from torch import Tensor, nn  # noqa: E402

from captum_ext.attr import (  # noqa: E402
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
from captum_ext.attr._core.recursive_mask import _minmax_mask  # noqa: E402
from captum_ext.data import DataSplit, accuracy, load_digits, train_model  # noqa: E402
from captum_ext.metrics import (  # noqa: E402
    aopc,
    deletion_auc,
    image_degradation,
    insertion_auc,
    masked_input_accuracy,
)
from captum_ext.models import digits_cnn  # noqa: E402

AttributeFn = Callable[[Tensor, Tensor], Tensor]

#: Side of the square patches of the image degradation benchmark (16 per digit).
PATCH_SIZE = 2


@dataclass(frozen=True)
class DemoSize:
    """How much the demo computes.

    ``epochs`` of training, ``batch`` test digits explained, up to ``repeats``
    extra timed calls per method, ``n_show`` digits in the figure; IG and PGIG
    take ``ig_steps``, distributional IG and PatchConductance ``path_steps``,
    SmoothGrad² ``nt_samples``, LearnedMask ``mask_iter`` Adam steps with
    ``mask_distractors`` distractors.
    """

    name: str
    epochs: int
    batch: int
    repeats: int
    n_show: int
    ig_steps: int
    path_steps: int
    nt_samples: int
    mask_iter: int
    mask_distractors: int


#: The demo's sizes: the default, ``--quick`` and ``--tiny`` (a smoke test for
#: the test suite, whose numbers mean little).
SIZES = {
    "full": DemoSize("full", 15, 256, 5, 6, 25, 16, 25, 100, 4),
    "quick": DemoSize("quick", 6, 64, 2, 4, 25, 16, 25, 50, 2),
    "tiny": DemoSize("tiny", 4, 16, 0, 2, 8, 4, 8, 10, 2),
}


@dataclass(frozen=True)
class DemoMethod:
    """A method shown by the demo.

    ``build(model, data, size)`` returns a function ``(inputs, target) ->
    attributions`` shaped like ``inputs``; ``source`` says where the method
    comes from; ``mask`` marks methods whose output is already a mask in
    [0, 1] (the masked input accuracy uses it as it is; other maps are min-max
    normalised first, eq. 11 of the GxSI paper).
    """

    name: str
    source: str
    build: Callable[[nn.Module, DataSplit, DemoSize], AttributeFn]
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


def _patch_conductance_map(model: nn.Module, n_steps: int) -> AttributeFn:
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
        per_patch = method.attribute(x, ids[None, None], target=t, n_steps=n_steps)
        per_patch = cast(Tensor, per_patch).flatten(2).sum(-1)  # (bsz, n_patches)
        return per_patch[:, ids].unsqueeze(1) / PATCH_SIZE**2

    return fn


def _demo_methods() -> list[DemoMethod]:
    """Methods in the order they appear in the figure (captum-ext first)."""
    return [
        DemoMethod("GxSI", "captum-ext", lambda m, d, s: _wrap(GradientSignInput(m))),
        DemoMethod(
            "GxSI mask (3 it.)",
            "captum-ext",
            lambda m, d, s: _wrap(RecursiveMaskAttribution(m), n_iterations=3),
            mask=True,
        ),
        DemoMethod(
            "PatternNet",
            "captum-ext",
            lambda m, d, s: _wrap(PatternNet(m, _digits_patterns(m, d))),
        ),
        DemoMethod(
            "PatternAttribution",
            "captum-ext",
            lambda m, d, s: _wrap(PatternAttribution(m, _digits_patterns(m, d))),
        ),
        DemoMethod(
            "Pattern-Guided IG",
            "captum-ext",
            lambda m, d, s: _wrap(
                PatternGuidedIG(m, _digits_patterns(m, d)), n_steps=s.ig_steps
            ),
        ),
        DemoMethod(
            "Distributional IG",
            "captum-ext",
            lambda m, d, s: _wrap(
                DistributionalIG(m),
                baselines=_training_references(d, 8),
                n_steps=s.path_steps,
                internal_batch_size=4096,
            ),
        ),
        DemoMethod(
            "PatchConductance",
            "captum-ext",
            lambda m, d, s: _patch_conductance_map(m, s.path_steps),
        ),
        DemoMethod(
            "LearnedMask",
            "captum-ext",
            lambda m, d, s: _wrap(
                LearnedMask(m),
                distractors=d.x_train,
                n_distractors=s.mask_distractors,
                n_iter=s.mask_iter,
                lr=0.1,
                l1_coeff=1e-2,
                tv_coeff=0.01,
                generator=torch.Generator().manual_seed(0),
            ),
            mask=True,
        ),
        DemoMethod("Saliency", "Captum", lambda m, d, s: _wrap(Saliency(m))),
        DemoMethod(
            "Gradient*Input", "Captum", lambda m, d, s: _wrap(InputXGradient(m))
        ),
        DemoMethod(
            "Integrated Gradients",
            "Captum",
            lambda m, d, s: _wrap(IntegratedGradients(m), n_steps=s.ig_steps),
        ),
        DemoMethod(
            "SmoothGrad²",
            "Captum",
            lambda m, d, s: _wrap(
                NoiseTunnel(Saliency(m)),
                nt_type="smoothgrad_sq",
                nt_samples=s.nt_samples,
                stdevs=_noise_sigma(d),
            ),
        ),
        DemoMethod(
            "Guided Backprop", "Captum", lambda m, d, s: _wrap(GuidedBackprop(m))
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
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize
    from matplotlib.figure import Figure

    n = images.shape[0]
    cols = 1 + len(results)
    fig = Figure(figsize=(1.45 * cols + 1.0, 1.45 * n + 1.2), layout="constrained")
    axes = fig.subplots(n, cols, squeeze=False)
    for i in range(n):
        axes[i, 0].imshow(images[i, 0].numpy(), cmap="gray_r")
        axes[i, 0].set_ylabel(f"class {int(labels[i])}", fontsize=10)
        for j, (name, attr) in enumerate(results.items(), start=1):
            a = attr[i].sum(0).numpy()
            lim = float(abs(a).max()) or 1.0
            axes[i, j].imshow(a, cmap="bwr", vmin=-lim, vmax=lim)
            if i == 0:
                axes[i, j].set_title(name.replace(" ", "\n", 1), fontsize=10)
        axes[0, 0].set_title("digit", fontsize=10)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    bar = fig.colorbar(
        ScalarMappable(norm=Normalize(-1.0, 1.0), cmap="bwr"),
        ax=axes,
        ticks=[-1.0, 0.0, 1.0],
        shrink=min(1.0, 3.0 / n),
        aspect=15,
    )
    bar.ax.set_yticklabels(["-max", "0", "+max"], fontsize=10)
    fig.suptitle(
        "Attributions for the predicted class (red +, blue -); each map is "
        "scaled to its own largest |value|",
        fontsize=12,
    )
    fig.savefig(path, dpi=110)


def _save_curves(path: Path, curves: dict[str, Tensor], reference: str) -> None:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 5), layout="constrained")
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
    ax.legend(fontsize=9, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.savefig(path, dpi=110)


#: The metrics of the table, their column titles and whether larger is better.
METRICS = {
    "aopc_morf": ("AOPC (MoRF)", True),
    "deletion_auc": ("deletion AUC", False),
    "insertion_auc": ("insertion AUC", True),
    "masked_input_accuracy": ("masked input accuracy", True),
}

#: Why a method can score below a random order here (shown only when it does).
_WHY_BELOW_RANDOM = {
    "Guided Backprop": "its maps are signed with large negative values on the "
    "strokes of the digit, and the benchmarks rank the signed values, so those "
    "pixels are removed last and put back last",
    "PatternNet": "PatternNet shows the signal direction the model detects "
    "(patterns, not contributions: nothing multiplies it by the input), so its "
    "sign and size do not say how much a pixel raises the class score",
    "Pattern-Guided IG": "PGIG multiplies a pattern backward that is mostly "
    "non-negative by x - x̄ (eq. 4), so every background pixel darker than the "
    "mean digit gets a negative score and is removed last, while zero filling "
    "(the mean digit) turns that background grey",
    "PatternAttribution": "its map is non-negative almost everywhere: it ranks "
    "where the signal is, not whether removing a pixel lowers the class score",
    "Saliency": "it ranks pixels by the gradient's magnitude, whatever the "
    "sign of the effect of removing them",
    "SmoothGrad²": "it ranks pixels by the mean squared gradient, whatever "
    "the sign of the effect of removing them",
    "GxSI mask (3 it.)": "a mask keeps what is sufficient for the class; its "
    "order among the kept pixels is coarse",
    "LearnedMask": "the mask keeps what is sufficient for the class against "
    "other digits, not what is necessary; many pixels share the same value",
}


def _below_random(rows: list[dict[str, Any]], reference: str) -> list[dict[str, Any]]:
    """Every (method, metric) whose mean is worse than the random order's."""
    rand = next(r for r in rows if r["method"] == reference)
    found = []
    for r in rows:
        if r["method"] == reference:
            continue
        for key, (_, higher_better) in METRICS.items():
            worse = r[key] < rand[key] if higher_better else r[key] > rand[key]
            if worse:
                found.append(
                    {
                        "method": r["method"],
                        "metric": key,
                        "value": r[key],
                        "random": rand[key],
                    }
                )
    return found


def _markdown(
    rows: list[dict[str, Any]],
    acc: float,
    size: DemoSize,
    below: list[dict[str, Any]],
) -> str:
    batch = size.batch
    arrows = " | ".join(
        f"{title} {'↑' if up else '↓'}" for title, up in METRICS.values()
    )
    lines = [
        f"Digits CNN (test accuracy {acc:.3f}); {batch} test digits, each "
        "explained and scored for the predicted class.",
        "",
        f"| method | from | ms / batch of {batch} | {arrows} |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['method']} | {r['source']} | {r['ms_per_batch']:.1f} | "
            + " | ".join(f"{r[k]:.3f}" for k in METRICS)
            + " |"
        )
    lines += [
        "",
        f"AOPC: {PATCH_SIZE}x{PATCH_SIZE} patches replaced by their mean, most "
        "relevant first (PGIG paper, section 5). Deletion: pixels set to zero (the "
        "mean digit); insertion: pixels restored into a blurred digit; 64 steps. "
        "Masked input accuracy: accuracy on x * mask (GxSI paper, eq. 12), the "
        "map min-max normalised unless it is a mask. Settings: IG and PGIG "
        f"{size.ig_steps} steps; distributional IG 8 training references x "
        f"{size.path_steps} steps; PatchConductance 16 patches x {size.path_steps} "
        f"steps through the hidden layer; SmoothGrad² {size.nt_samples} samples; "
        f"LearnedMask {size.mask_iter} Adam steps x {size.mask_distractors} "
        "distractors. ms / batch: wall-clock time of the fastest call.",
        "",
    ]
    if not below:
        lines.append("Every method scores better than a random order on every metric.")
    else:
        lines.append(
            "Below a random order (worse than its score on the same digits; means "
            "over one batch, so small gaps are within noise):"
        )
        lines.append("")
        by_method: dict[str, list[dict[str, Any]]] = {}
        for item in below:
            by_method.setdefault(item["method"], []).append(item)
        for method, items in by_method.items():
            what = "; ".join(
                f"{METRICS[i['metric']][0]} {i['value']:.3f} vs {i['random']:.3f}"
                for i in items
            )
            why = _WHY_BELOW_RANDOM.get(
                method,
                "its ranking does not follow what the class score depends on for "
                "these metrics",
            )
            lines.append(f"- {method}: {what}. Likely reason: {why}.")
    return "\n".join(lines) + "\n"


def _machine() -> str:
    """The CPU model and core count, for the recorded timings."""
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{os.cpu_count()}-core {model}"


def run(
    out_dir: Path,
    quick: bool = False,
    seed: int = 0,
    *,
    tiny: bool = False,
    log: TextIO | None = None,
) -> dict[str, Any]:
    """Run the demo, write its files into ``out_dir`` and return the summary.

    Args:
        out_dir (Path): Folder for ``attributions.png``, ``degradation.png``,
            ``metrics.md`` and ``metrics.json`` (created if missing).
        quick (bool): Fewer epochs, a smaller batch, fewer optimisation steps
            and timing repeats.
        seed (int): Seed for model initialisation and training.
        tiny (bool): A smoke-test size, smaller than ``quick`` (the test
            suite's); its numbers are not meaningful.
        log (TextIO, optional): Where to report progress, one line per step as
            it finishes (``main`` passes ``sys.stderr``). Default: None (quiet).

    Returns:
        dict: test accuracy, the batch size, and per method its time per batch
        (milliseconds) and mean metrics; each method's mean MoRF curve; where
        a method scores below the random order; the demo's own wall-clock and
        CPU seconds and the machine.
    """
    wall0, cpu0 = time.perf_counter(), time.process_time()
    size = SIZES["tiny" if tiny else "quick" if quick else "full"]

    def say(message: str) -> None:
        if log is not None:
            print(message, file=log, flush=True)

    out_dir.mkdir(parents=True, exist_ok=True)
    data = load_digits(seed=seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = digits_cnn().eval()
    train_model(model, data.x_train, data.y_train, epochs=size.epochs, seed=seed)
    acc = accuracy(model, data.x_test, data.y_test)
    say(
        f"trained the digits CNN ({size.epochs} epochs, test accuracy {acc:.3f}) "
        f"after {time.perf_counter() - wall0:.1f} s"
    )

    x, labels = data.x_test[: size.batch], data.y_test[: size.batch]
    with torch.no_grad():
        target = model(x).argmax(1)

    reference = DemoMethod("random order", "reference", lambda m, d, s: _random_scores)
    methods = [*_demo_methods(), reference]
    maps: dict[str, Tensor] = {}
    curves: dict[str, Tensor] = {}
    rows = []
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)  # NoiseTunnel draws from the global RNG
        for k, method in enumerate(methods, start=1):
            started = time.perf_counter()
            fn = method.build(model, data, size)
            attributions, seconds = _timed(partial(fn, x, target), size.repeats)
            attributions = attributions.detach()
            scores, curves[method.name] = _scores(
                model, x, target, labels, attributions, method.mask
            )
            if method is not reference:
                maps[method.name] = attributions[: size.n_show]
            rows.append(
                {
                    "method": method.name,
                    "source": method.source,
                    "ms_per_batch": round(1000 * seconds, 2),
                    **scores,
                }
            )
            say(
                f"[{k:2d}/{len(methods)}] {method.name:<22} "
                f"{1000 * seconds:9.1f} ms per batch of {size.batch}, "
                f"AOPC {scores['aopc_morf']:.3f}  "
                f"({time.perf_counter() - started:.1f} s with the metrics)"
            )

    _save_grid(
        out_dir / "attributions.png",
        data.unstandardize(x[: size.n_show]),
        target[: size.n_show],
        maps,
    )
    _save_curves(out_dir / "degradation.png", curves, reference.name)
    below = _below_random(rows, reference.name)
    (out_dir / "metrics.md").write_text(_markdown(rows, acc, size, below))
    summary = {
        "test_accuracy": acc,
        "quick": quick and not tiny,
        "size": asdict(size),
        "batch_size": size.batch,
        "methods": rows,
        "below_random": below,
        "degradation_curves": {
            k: [round(float(p), 5) for p in v] for k, v in curves.items()
        },
        "machine": _machine(),
        "torch_threads": torch.get_num_threads(),
        "wall_seconds": round(time.perf_counter() - wall0, 1),
        "cpu_seconds": round(time.process_time() - cpu0, 1),
    }
    (out_dir / "metrics.json").write_text(json.dumps(summary, indent=2))
    say(f"wrote {out_dir}")
    return summary


_FLAGS = {"full": "", "quick": " --quick", "tiny": " --tiny"}

#: The files the demo writes.
FILES = ("attributions.png", "degradation.png", "metrics.md", "metrics.json")


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(
        prog="python -m captum_ext.demo",
        description="Train a digits CNN, compare attribution methods and score them.",
    )
    parser.add_argument("--out", type=Path, default=Path("demo_output"))
    parser.add_argument(
        "--quick", action="store_true", help="a smaller batch and fewer steps"
    )
    parser.add_argument(
        "--tiny", action="store_true", help="smoke-test size; numbers not meaningful"
    )
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    # Captum's Saliency / InputXGradient warn about inputs without requires_grad,
    # GuidedBackprop about backward hooks on ReLU modules; torch's forward-mode
    # AD (PatchConductance) scripts its decompositions on first use.
    warnings.filterwarnings("ignore", message="Input Tensor .* did not already require")
    warnings.filterwarnings("ignore", message="Setting backward hooks on ReLU")
    warnings.filterwarnings("ignore", message="`torch.jit.script` is deprecated")
    torch.set_num_threads(min(4, torch.get_num_threads()))
    summary = run(
        args.out, quick=args.quick, seed=args.seed, tiny=args.tiny, log=sys.stderr
    )
    # the whole command, imports included (process_time counts from the
    # process's start and every thread of it)
    summary["command_wall_seconds"] = round(time.perf_counter() - _IMPORT_STARTED, 1)
    summary["command_cpu_seconds"] = round(time.process_time(), 1)
    (args.out / "metrics.json").write_text(json.dumps(summary, indent=2))
    print((args.out / "metrics.md").read_text())
    for name in FILES:
        print(args.out / name)
    print(
        f"python -m captum_ext.demo{_FLAGS[summary['size']['name']]} took "
        f"{summary['command_wall_seconds']:.1f} s wall-clock and "
        f"{summary['command_cpu_seconds']:.1f} s CPU on a {summary['machine']} "
        f"({summary['torch_threads']} torch threads)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
