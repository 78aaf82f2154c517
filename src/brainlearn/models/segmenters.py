"""Segmentation networks by name (MONAI): document 002's 2D U-Net with a ResNet-34 encoder, and a 3D Swin UNETR.

Every segmenter maps an image (B, C, *spatial) to lesion logits (B, 1, *spatial) and exposes its encoder through
:func:`encoder_of`, so that it can be initialized from a pretrained checkpoint and frozen.
"""

from __future__ import annotations

import difflib
from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn

from brainlearn.errors import BrainlearnError

SEGMENTERS = {"unet2d": 2, "swin_unetr": 3}  # name -> spatial dims


def build_segmenter(
    name: str, *, in_channels: int, out_channels: int = 1, options: dict[str, Any] | None = None
) -> nn.Module:
    """The segmenter ``name`` (one of :data:`SEGMENTERS`) for ``in_channels`` channels (e.g. T1, T2, FLAIR).

    ``out_channels`` is 1 (lesion logits) for segmentation; pretraining builds the same network with one linear
    output per input channel, so that its encoder is this one, name for name and shape for shape.

    ``unet2d``: MONAI ``FlexibleUNet`` with a randomly initialized ResNet-34 encoder (ImageNet weights cannot be
    fetched offline; the pretrained arm uses our own checkpoints), ``decoder_channels`` configurable.
    ``swin_unetr``: MONAI ``SwinUNETR``, ``feature_size`` (24) configurable; patches must be divisible by 32.
    """
    from monai.networks.nets import FlexibleUNet, SwinUNETR

    options = dict(options or {})
    if name not in SEGMENTERS:
        close = difflib.get_close_matches(name, SEGMENTERS, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise BrainlearnError(f"model: unknown segmenter {name!r}.{hint} Known: {', '.join(SEGMENTERS)}.")
    try:
        if name == "unet2d":
            options.setdefault("backbone", "resnet34")
            return Padded(FlexibleUNet(in_channels, out_channels, pretrained=False, spatial_dims=2, **options))
        return Padded(SwinUNETR(in_channels=in_channels, out_channels=out_channels, spatial_dims=3, **options))
    except TypeError as error:
        raise BrainlearnError(f"model_options: {name} does not take these options {options} ({error}).") from error


class Padded(nn.Module):
    """Zero-pads the spatial axes to a multiple of ``multiple`` (both U-Nets halve the grid five times), then crops
    the output back, so any slice or patch size works: (B, C, *spatial) → (B, out_channels, *spatial)."""

    def __init__(self, network: nn.Module, multiple: int = 32):
        super().__init__()
        self.network, self.multiple = network, multiple

    def forward(self, x: Tensor) -> Tensor:
        spatial = x.shape[2:]
        extra = [(-n) % self.multiple for n in spatial]
        padding = [side for n in reversed(extra) for side in (n // 2, n - n // 2)]
        out = self.network(F.pad(x, padding))
        crop = tuple(slice(n // 2, n // 2 + size) for n, size in zip(extra, spatial, strict=True))
        return out[(slice(None), slice(None), *crop)]


def encoder_of(network: nn.Module) -> nn.Module:
    """The part of a segmenter that pretraining initializes and ``freeze_encoder`` freezes."""
    network = network.network if isinstance(network, Padded) else network
    return getattr(network, encoder_name(network))


def encoder_name(network: nn.Module) -> str:
    """The attribute that holds a segmenter's encoder: ``"encoder"`` (U-Net) or ``"swinViT"`` (Swin UNETR).

    Checkpoint keys of the encoder's tensors contain ``"<name>."`` (e.g. ``network.network.swinViT.layers1...``).
    """
    network = network.network if isinstance(network, Padded) else network
    for attribute in ("encoder", "swinViT"):
        if hasattr(network, attribute):
            return attribute
    raise BrainlearnError(f"{type(network).__name__} has no encoder that brainlearn knows how to find.")
