"""Smoke test against the oldest supported Captum: every method and metric runs.

Usage (CI): ``PYTHONPATH=DIR_WITH_CAPTUM_0_8:. python tools/captum_compat_smoke.py``.
The contract tests need ``captum.testing`` (Captum >= 0.9); this script does not.
"""

from __future__ import annotations

import warnings

import captum
import torch
from captum.attr import NoiseTunnel

from captum_ext.attr import (
    DistributionalIG,
    GradientSignInput,
    LearnedMask,
    PatchConductance,
    PatternAttribution,
    PatternGuidedIG,
    PatternNet,
    RecursiveMaskAttribution,
    fit_patterns,
)
from captum_ext.metrics import deletion_auc, image_degradation, masked_input_accuracy
from captum_ext.models import digits_cnn


def main() -> None:
    warnings.filterwarnings("ignore")
    torch.manual_seed(0)
    m = digits_cnn().eval()
    x = torch.randn(4, 1, 8, 8)
    y = torch.tensor([0, 1, 2, 3])
    patterns = fit_patterns(m, [torch.randn(32, 1, 8, 8)])
    patch = torch.ones(1, 1, 8, 8, dtype=torch.bool)
    out = {
        "GradientSignInput": GradientSignInput(m).attribute(x, target=y),
        "NoiseTunnel(GxSI)": NoiseTunnel(GradientSignInput(m)).attribute(
            x, target=y, nt_samples=2
        ),
        "RecursiveMask": RecursiveMaskAttribution(m).attribute(x, target=y),
        "PatternNet": PatternNet(m, patterns).attribute(x, target=y),
        "PatternAttribution": PatternAttribution(m, patterns).attribute(x, target=y),
        "PGIG": PatternGuidedIG(m, patterns).attribute(
            x, target=y, n_steps=8, internal_batch_size=8
        ),
        "DistributionalIG": DistributionalIG(m).attribute(
            x, baselines=torch.randn(5, 1, 8, 8), target=y, n_steps=8
        ),
        "PatchConductance": PatchConductance(m, m[2]).attribute(
            x, patch_mask=patch, target=y, n_steps=8
        ),
        "LearnedMask": LearnedMask(m).attribute(
            x, target=y, distractors=torch.randn(6, 1, 8, 8), n_iter=5
        ),
    }
    gxsi = out["GradientSignInput"]
    out["image_degradation"] = image_degradation(
        m, x, gxsi, target=y, patch_size=2, n_steps=4
    )
    out["deletion_auc"] = deletion_auc(m, x, gxsi, target=y)
    out["masked_input_accuracy"] = masked_input_accuracy(m, x, out["RecursiveMask"], y)
    bad = [k for k, v in out.items() if not torch.isfinite(v.float()).all()]
    assert not bad, f"non-finite results: {bad}"
    print(f"captum {captum.__version__}: {len(out)} methods and metrics ran")


if __name__ == "__main__":
    main()
