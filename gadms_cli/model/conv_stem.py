"""A convolutional stem for the ViT image tower: small stride-2 convolutions instead of one patch projection.

A ViT cuts the image into 16x16 patches and projects each linearly (``conv1``: a 16x16 kernel
with stride 16). Trained from scratch on little data it learns colours quickly and shapes
slowly: on SketchPedes the quickstart's ViT, trained directly on the labels for 1500 steps,
tells women from men with balanced accuracy 0.65 and sees bags not at all, where a small
convolutional net reaches 0.91 (docs/results/attribute-learnability.json). A stem of 3x3
convolutions with stride 2 (batch norm, ReLU) and a 1x1 projection to the ViT's width gives
the same token grid (total stride = patch size) with a convolutional inductive bias, the
"early convolutions" design of Xiao et al. (NeurIPS 2021).

Chosen with ``"conv_stem": [32, 64, 128, 128]`` in an architecture's ``vision_cfg`` (the
shipped ``gadms-small-conv``): one entry per stride-2 convolution, its output channels;
``2 ** len(conv_stem)`` must equal ``patch_size``. open_clip itself cannot build such a config,
so ``gadms export --format open_clip`` refuses it (``--format hf`` works).
"""

from __future__ import annotations

from torch import nn


class ConvStem(nn.Sequential):
    """[B, 3, H, W] -> [B, width, H / 2**n, W / 2**n]: n (conv 3x3 stride 2, batch norm, ReLU) blocks and a 1x1 projection."""

    def __init__(self, channels: list[int], width: int) -> None:
        layers: list[nn.Module] = []
        previous = 3
        for out in channels:
            layers += [nn.Conv2d(previous, out, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(out), nn.ReLU(inplace=True)]
            previous = out
        layers.append(nn.Conv2d(previous, width, 1))
        super().__init__(*layers)


def check_conv_stem(channels: object, patch_size: int) -> list[int]:
    """``channels`` as a list of positive ints whose stride product is ``patch_size``; ValueError otherwise."""
    if not isinstance(channels, list) or not channels or not all(isinstance(c, int) and c > 0 for c in channels):
        raise ValueError(f"vision_cfg.conv_stem must be a list of positive channel counts, got {channels!r}")
    if 2 ** len(channels) != patch_size:
        raise ValueError(f"vision_cfg.conv_stem has {len(channels)} stride-2 layers (stride {2 ** len(channels)}) but patch_size is {patch_size}")
    return channels
