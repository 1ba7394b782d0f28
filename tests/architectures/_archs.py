"""The five torchvision architectures of the real-architecture tests.

Random weights (``weights=None``, ``num_classes=10``), seeded, eval mode,
3x32x32 input. The ViT is small (patch 8: 16 tokens, 2 layers, 2 heads).
"""

from __future__ import annotations

import functools

import pytest
import torch
from torch import nn

torchvision = pytest.importorskip("torchvision")
tvm = torchvision.models

ARCHS = ("resnet18", "vgg11_bn", "mobilenet_v3_small", "efficientnet_b0", "vit")

#: A layer of each architecture for PatchConductance (a residual stage where
#: there is one) and its name, as a refusal message would spell it.
LAYERS = {
    "resnet18": "layer2",
    "vgg11_bn": "features.8",
    "mobilenet_v3_small": "features.4",
    "efficientnet_b0": "features.3",
    "vit": "encoder.layers.encoder_layer_0",
}


def build(arch: str) -> nn.Module:
    """A fresh, seeded, eval-mode model with random weights."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        if arch == "vit":
            model = tvm.VisionTransformer(
                image_size=32,
                patch_size=8,
                num_layers=2,
                num_heads=2,
                hidden_dim=32,
                mlp_dim=64,
                num_classes=10,
            )
        else:
            model = getattr(tvm, arch)(weights=None, num_classes=10)
        if arch == "vit":
            # torchvision zero-initialises the ViT head (for fine-tuning), which
            # makes every gradient zero: give it random weights
            nn.init.normal_(model.heads.head.weight, std=0.2)
        # torchvision initialises BatchNorm to the identity with zero running
        # mean; give the statistics realistic values so BN is not a no-op.
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.data.uniform_(0.5, 1.5)
                m.bias.data.uniform_(-0.1, 0.1)
    return model.eval()


@functools.cache
def _cached(arch: str) -> nn.Module:
    return build(arch)


def model(arch: str) -> nn.Module:
    """The session's shared model of ``arch`` (tests check it stays untouched)."""
    return _cached(arch)


def layer(arch: str) -> nn.Module:
    return model(arch).get_submodule(LAYERS[arch])


def images(n: int = 2, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, 3, 32, 32, generator=torch.Generator().manual_seed(seed))
