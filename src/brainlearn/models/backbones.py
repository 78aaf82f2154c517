"""Backbones: networks that map a volume (B, C, X, Y, Z) to one feature vector per image (B, F).

Every backbone exposes ``forward_features(x)`` and ``num_features``; ``forward`` is the same as
``forward_features``. Heads are separate modules (:class:`LinearHead`), so a method can put any head on any backbone.
Build one by name with :func:`create_backbone`; the names are the keys of :data:`BACKBONES`.
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Sequence

from monai.networks.nets import DenseNet, ResNet
from torch import Tensor, nn

from brainlearn.errors import BrainlearnError

_NORMS = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm)


def init_kaiming(module: nn.Module) -> nn.Module:
    """Initialize ``module`` in place: Kaiming-normal (fan_out, ReLU) convolutions and linear layers, zero biases.

    Normalization layers with affine parameters get weight 1 and bias 0. Returns ``module`` for chaining.
    """
    for layer in module.modules():
        if isinstance(layer, nn.modules.conv._ConvNd | nn.Linear):
            nn.init.kaiming_normal_(layer.weight, mode="fan_out", nonlinearity="relu")
            if layer.bias is not None:
                nn.init.zeros_(layer.bias)
        elif isinstance(layer, _NORMS) and getattr(layer, "weight", None) is not None:
            nn.init.ones_(layer.weight)
            nn.init.zeros_(layer.bias)
    return module


class LinearHead(nn.Module):
    """Dropout then one linear layer: features (B, F) → outputs (B, out_features).

    The linear layer keeps PyTorch's default initialization: Kaiming fan_out on a layer with one or two outputs
    gives unit-variance weights and very large initial logits.
    """

    def __init__(self, num_features: int, out_features: int, dropout: float = 0.0) -> None:
        super().__init__()
        if not 0.0 <= dropout < 1.0:
            raise BrainlearnError(f"LinearHead: dropout must be in [0, 1), got {dropout}.")
        self.dropout = nn.Dropout(dropout)
        self.linear = nn.Linear(num_features, out_features)

    def forward(self, features: Tensor) -> Tensor:
        """Map features (B, F) to outputs (B, out_features)."""
        return self.linear(self.dropout(features))


class _Backbone(nn.Module):
    """The contract: ``forward`` is ``forward_features``; subclasses set ``num_features``."""

    num_features: int

    def forward(self, x: Tensor) -> Tensor:
        """Map a volume (B, C, X, Y, Z) to features (B, num_features)."""
        return self.forward_features(x)


class ResNet3d(_Backbone):
    """3D ResNet-18 (MONAI ``ResNet``, basic blocks, layers 2-2-2-2, 7³ stride-2 stem); features (B, 512·widen)."""

    def __init__(self, in_channels: int, *, widen_factor: float = 1.0) -> None:
        super().__init__()
        self.net = ResNet(
            "basic", [2, 2, 2, 2], [64, 128, 256, 512], spatial_dims=3, n_input_channels=in_channels,
            conv1_t_size=7, conv1_t_stride=2, widen_factor=widen_factor, feed_forward=False,
        )  # fmt: skip
        self.num_features = int(512 * widen_factor)
        init_kaiming(self)

    def forward_features(self, x: Tensor) -> Tensor:
        """Pooled features (B, 512·widen_factor) of a volume (B, C, X, Y, Z)."""
        return self.net(x)


class DenseNet3d(_Backbone):
    """3D DenseNet (MONAI ``DenseNet``; defaults are DenseNet-121), features are the pooled maps before the classifier.

    The transitions' average pools use ``ceil_mode`` so that volumes with a short axis (24 voxels) still pass all
    three transitions; for even sizes this changes nothing.
    """

    def __init__(
        self,
        in_channels: int,
        *,
        init_features: int = 64,
        growth_rate: int = 32,
        block_config: Sequence[int] = (6, 12, 24, 16),
        bn_size: int = 4,
    ) -> None:
        super().__init__()
        self.net = DenseNet(3, in_channels, 1, init_features, growth_rate, tuple(block_config), bn_size)
        self.num_features = self.net.class_layers.out.in_features
        self.net.class_layers.out = nn.Identity()  # keep relu → pool → flatten
        for layer in self.net.modules():
            if isinstance(layer, nn.AvgPool3d):
                layer.ceil_mode = True
        init_kaiming(self)

    def forward_features(self, x: Tensor) -> Tensor:
        """Pooled features (B, num_features) of a volume (B, C, X, Y, Z)."""
        return self.net(x)


class ResNet50Slices(_Backbone):
    """Document 001's 2D ResNet-50 (MONAI ``ResNet``, bottleneck, 3-4-6-3) run on every axial slice; features (B, 2048).

    Axial slices lie along the last axis (Z). They are folded into the batch, and the per-slice features are
    averaged. ``slices`` keeps only that many consecutive slices centred in the volume (as many on each side of
    the middle), to save memory; ``None`` or a number at least Z uses them all.
    """

    def __init__(self, in_channels: int, *, slices: int | None = None) -> None:
        super().__init__()
        if slices is not None and slices < 1:
            raise BrainlearnError(f"resnet50_slices: slices must be a positive number or None, got {slices}.")
        self.slices = slices
        self.net = ResNet(
            "bottleneck", [3, 4, 6, 3], [64, 128, 256, 512], spatial_dims=2, n_input_channels=in_channels,
            conv1_t_size=7, conv1_t_stride=2, feed_forward=False,
        )  # fmt: skip
        self.num_features = 2048
        init_kaiming(self)

    def forward_features(self, x: Tensor) -> Tensor:
        """Slice-averaged features (B, 2048) of a volume (B, C, X, Y, Z)."""
        depth = x.shape[-1]
        if self.slices is not None and self.slices < depth:
            start = (depth - self.slices) // 2
            x = x[..., start : start + self.slices]
        b, c, nx, ny, nz = x.shape
        slices = x.permute(0, 4, 1, 2, 3).reshape(b * nz, c, nx, ny)  # (B·Z, C, X, Y)
        return self.net(slices).view(b, nz, -1).mean(dim=1)


class SFCN(_Backbone):
    """SFCN-style brain-age CNN (Peng et al. 2021, Medical Image Analysis 68:101871); features (B, channels[-1]).

    Five blocks of 3³ convolution, batch norm, 2³ max-pool and ReLU, then a 1³ convolution, batch norm and ReLU,
    and a global average pool. The default ``channels`` (32, 64, 128, 256, 256, 64) are the paper's; narrower
    tuples make tiny CPU runs. Max-pools use ``ceil_mode`` so axes shorter than 32 voxels still work.
    """

    def __init__(self, in_channels: int, *, channels: Sequence[int] = (32, 64, 128, 256, 256, 64)) -> None:
        super().__init__()
        if len(channels) < 2 or min(channels) < 1:
            raise BrainlearnError(
                f"sfcn: channels must list at least two positive widths (the conv blocks, then the 1x1x1 conv), "
                f"got {tuple(channels)}. The paper uses (32, 64, 128, 256, 256, 64)."
            )
        layers: list[nn.Module] = []
        widths = [in_channels, *channels[:-1]]
        for c_in, c_out in zip(widths[:-1], widths[1:], strict=True):
            layers += [nn.Conv3d(c_in, c_out, 3, padding=1), nn.BatchNorm3d(c_out)]
            layers += [nn.MaxPool3d(2, ceil_mode=True), nn.ReLU(inplace=True)]
        layers += [nn.Conv3d(widths[-1], channels[-1], 1), nn.BatchNorm3d(channels[-1]), nn.ReLU(inplace=True)]
        self.features = nn.Sequential(*layers)
        self.num_features = channels[-1]
        init_kaiming(self)

    def forward_features(self, x: Tensor) -> Tensor:
        """Pooled features (B, channels[-1]) of a volume (B, C, X, Y, Z)."""
        return self.features(x).mean(dim=(2, 3, 4))


BACKBONES: dict[str, type[_Backbone]] = {
    "resnet3d": ResNet3d,
    "densenet3d": DenseNet3d,
    "resnet50_slices": ResNet50Slices,
    "sfcn": SFCN,
}


def create_backbone(name: str, in_channels: int, **kwargs: object) -> nn.Module:
    """Build the backbone registered as ``name`` (a key of :data:`BACKBONES`).

    Args:
        name: registry name, e.g. ``"resnet3d"``.
        in_channels: channels of the input volume (1 for T1 alone).
        **kwargs: the backbone's own keyword options (``widen_factor``, ``block_config``, ``slices``, ``channels``).

    Returns:
        A module mapping (B, in_channels, X, Y, Z) to (B, num_features).

    Raises:
        BrainlearnError: the name or an option is unknown, or ``in_channels`` is not positive.
    """
    if name not in BACKBONES:
        raise BrainlearnError(f"Unknown backbone {name!r}{_suggest(name, BACKBONES)}. Known: {', '.join(BACKBONES)}.")
    if in_channels < 1:
        raise BrainlearnError(f"Backbone {name!r}: in_channels must be at least 1, got {in_channels}.")
    cls = BACKBONES[name]
    options = [p for p in inspect.signature(cls).parameters if p != "in_channels"]
    for key in kwargs:
        if key not in options:
            raise BrainlearnError(
                f"Backbone {name!r} has no option {key!r}{_suggest(key, options)}. Its options: {', '.join(options)}."
            )
    return cls(in_channels, **kwargs)


def _suggest(word: str, choices: Sequence[str] | dict) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.5)
    return f" (did you mean {close[0]!r}?)" if close else ""
