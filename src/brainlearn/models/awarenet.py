"""AwareNet: slice-aware diagnosis of a 3D volume with 2D convolutions (document 000, MedIA 2024).

Every axial slice (the last array axis, Z, of a RAS (B, C, X, Y, Z) batch) goes through a shared 2D ResNet stem
(7×7 stride-2 conv to 64, BN, ReLU, 3×3 stride-2 max-pool, 2 basic blocks at 64, 2 at 128 with stride 2). A
slice-aware attention then weighs the slices, a fusion stage mixes neighbouring slices with temporal shifts
(TSM, Lin et al. 2019) between 2D residual stages at 256 and 512 channels, and a per-slice MLP's logits are
averaged over the slices.

Choices where the paper's description leaves room (written down so they can be checked against its code):

- Local attention ``A = sigmoid(conv1x1(F))`` (one map per slice) gates the stem features residually,
  ``G = F · (1 + A)``: where the map is 0 the features pass unchanged, so the map only adds emphasis. It is
  also what :func:`local_attention_volume` turns into an explanation map.
- Keys: the depthwise 3×3 convolution runs in-plane on each slice along the slice axis (the same weights for
  every slice) over ``G``, then a plane average gives one key per slice, (B, Z, 128).
- Query: one per volume, from the 1×1 convolution of the slice-averaged ``G`` followed by a plane average,
  (B, 128).
- Slice weights ``w = softmax_Z(32 · cos(key_z, query))``; the features become ``G · (1 + w_z)``.
- Temporal shift: "forward" means towards higher slice indices: slice z receives the first 1/8 of the channels
  from slice z − 1 and the next 1/8 from slice z + 1; the end slices are zero-filled; the other 3/4 stay.
- The slice mean is taken over logits, not probabilities.
- Convolutions are initialized Kaiming-normal (fan_out, ReLU), BN with weight 1 and bias 0, except the local
  attention's 1-output conv (fan_in, unit gain: fan_out would saturate its sigmoid from the start); the MLP keeps
  PyTorch's default initialization (Kaiming fan_out on a 2-output layer gives very large initial logits).

``checkpointing=True`` recomputes the stem's first convolution and each residual stage (the stem's two, the
fusion stage's two with their temporal shifts) in the backward pass instead of keeping their activations
(:func:`torch.utils.checkpoint.checkpoint`); BatchNorm's running statistics are updated once, as without it.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from functools import partial
from typing import NamedTuple

import torch
import torch.nn.functional as F
from monai.networks.nets import ResNetBlock
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from brainlearn.errors import BrainlearnError
from brainlearn.models.backbones import init_kaiming

SIMILARITY_SCALE = 32.0  # the paper's temperature: cosine similarity × 32 before the softmax over slices


class AwareNetOutput(NamedTuple):
    """What :class:`AwareNet` returns.

    Attributes:
        logits: class scores (B, num_classes), averaged over slices.
        slice_attention: slice weights (B, Z), non-negative, summing to 1 over the slices.
        local_attention: per-slice maps in [0, 1] at the stem's resolution (B, Z, h, w), h ≈ X/8, w ≈ Y/8.
    """

    logits: Tensor
    slice_attention: Tensor
    local_attention: Tensor


def temporal_shift(x: Tensor, fraction: float = 0.125) -> Tensor:
    """Shift a fraction of the channels one slice forward and as many one slice backward, zero-filled.

    Args:
        x: features (B, S, C, H, W) with slices along dim 1.
        fraction: share of the channels moved each way; ``int(C · fraction)`` channels.

    Returns:
        Tensor (B, S, C, H, W): channels ``[0, f)`` come from slice s − 1, ``[f, 2f)`` from slice s + 1, the rest
        are unchanged; the slices without a neighbour get zeros.
    """
    fold = int(x.shape[2] * fraction)
    out = torch.zeros_like(x)
    out[:, 1:, :fold] = x[:, :-1, :fold]  # forward: slice s gets slice s - 1
    out[:, :-1, fold : 2 * fold] = x[:, 1:, fold : 2 * fold]  # backward: slice s gets slice s + 1
    out[:, :, 2 * fold :] = x[:, :, 2 * fold :]
    return out


def local_attention_volume(output: AwareNetOutput, shape: Sequence[int]) -> Tensor:
    """Local attention × slice weight, upsampled (trilinear) to the input's spatial shape, for explanation maps.

    Args:
        output: the network's output for a batch.
        shape: the input's spatial shape (X, Y, Z).

    Returns:
        Tensor (B, X, Y, Z) with values in [0, 1].
    """
    if len(shape) != 3:
        raise BrainlearnError(f"local_attention_volume: expected a spatial shape (X, Y, Z), got {tuple(shape)}.")
    maps = output.local_attention * output.slice_attention[:, :, None, None]  # (B, Z, h, w)
    maps = maps.permute(0, 2, 3, 1)[:, None]  # (B, 1, h, w, Z)
    return F.interpolate(maps, size=tuple(shape), mode="trilinear", align_corners=False)[:, 0]


def _stage(in_channels: int, out_channels: int, blocks: int, stride: int) -> nn.Sequential:
    """``blocks`` 2D basic residual blocks; the first one changes width and stride (1×1 conv + BN shortcut)."""
    shortcut = None
    if stride != 1 or in_channels != out_channels:
        shortcut = nn.Sequential(
            nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False), nn.BatchNorm2d(out_channels)
        )
    layers = [ResNetBlock(in_channels, out_channels, spatial_dims=2, stride=stride, downsample=shortcut)]
    layers += [ResNetBlock(out_channels, out_channels, spatial_dims=2) for _ in range(blocks - 1)]
    return nn.Sequential(*layers)


def _per_slice(layer: nn.Module, x: Tensor) -> Tensor:
    """Apply a 2D ``layer`` to every slice of (B, S, C, H, W)."""
    b, s = x.shape[:2]
    y = layer(x.flatten(0, 1))  # (B·S, C', H', W')
    return y.view(b, s, *y.shape[1:])


class SliceAttention(nn.Module):
    """Local (in-plane) and slice attention over stem features (B, S, C, h, w); see the module docstring."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.local = nn.Conv2d(channels, 1, 1)
        self.key = nn.Conv2d(channels, channels, 3, padding=1, groups=channels)
        self.query = nn.Conv2d(channels, channels, 1)

    def forward(self, features: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Return weighted features (B, S, C, h, w), slice weights (B, S) and local maps (B, S, h, w)."""
        local = torch.sigmoid(_per_slice(self.local, features))  # (B, S, 1, h, w)
        gated = features * (1 + local)
        keys = _per_slice(self.key, gated).mean(dim=(-2, -1))  # (B, S, C)
        query = self.query(gated.mean(dim=1)).mean(dim=(-2, -1))  # (B, C)
        similarity = F.cosine_similarity(keys, query[:, None], dim=-1)  # (B, S)
        weights = torch.softmax(SIMILARITY_SCALE * similarity, dim=1)
        return gated * (1 + weights[:, :, None, None, None]), weights, local[:, :, 0]


class AwareNet(nn.Module):
    """Slice-aware classifier of 3D volumes built from 2D convolutions (document 000).

    Args:
        in_channels: channels of the input volume (1 for T1 or PET alone).
        num_classes: number of classes (2 for AD vs NC).
        dropout: dropout in the per-slice MLP (paper: 0.5).
        width: channels of the first stage (paper: 64); the stages have width × 1, 2, 4, 8 channels and the MLP
            width × 2 hidden units. 16 gives a network with 1/16 of the work for CPU runs.
        checkpointing: in training, recompute the stem and fusion stages in the backward pass instead of storing
            their activations (less memory for large volumes); the same result, more time.

    Any number of slices and any in-plane size works (≥ 32 voxels keeps every stage above 1×1).
    """

    def __init__(
        self,
        in_channels: int = 1,
        num_classes: int = 2,
        *,
        dropout: float = 0.5,
        width: int = 64,
        checkpointing: bool = False,
    ) -> None:
        super().__init__()
        if in_channels < 1 or num_classes < 1:
            raise BrainlearnError(
                f"AwareNet: in_channels and num_classes must be at least 1, got {in_channels} and {num_classes}."
            )
        if not 0.0 <= dropout < 1.0:
            raise BrainlearnError(f"AwareNet: dropout must be in [0, 1), got {dropout}.")
        if not isinstance(width, int) or width < 8 or width % 8:
            raise BrainlearnError(
                f"AwareNet: width must be a multiple of 8 (the temporal shift moves 1/8), not {width}."
            )
        if not isinstance(checkpointing, bool):
            raise BrainlearnError(f"AwareNet: checkpointing must be true or false, not {checkpointing!r}.")
        self.in_channels, self.checkpointing = in_channels, checkpointing
        w = width
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, w, 7, stride=2, padding=3, bias=False),
            nn.BatchNorm2d(w),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(3, stride=2, padding=1),
            _stage(w, w, blocks=2, stride=1),
            _stage(w, 2 * w, blocks=2, stride=2),
        )
        self.attention = SliceAttention(2 * w)
        self.layer3 = _stage(2 * w, 4 * w, blocks=2, stride=2)
        self.layer4 = _stage(4 * w, 8 * w, blocks=3, stride=2)
        for part in (self.stem, self.attention, self.layer3, self.layer4):
            init_kaiming(part)
        # Kaiming fan_out on a 1-output conv gives weights of std √2 and a sigmoid saturated at 0 or 1 with no
        # gradient; fan_in with unit gain starts the local maps spread around 0.5.
        nn.init.kaiming_normal_(self.attention.local.weight, mode="fan_in", nonlinearity="linear")
        self.classifier = nn.Sequential(
            nn.Linear(8 * w, 2 * w), nn.ReLU(inplace=True), nn.Dropout(dropout), nn.Linear(2 * w, num_classes)
        )

    def forward(self, x: Tensor) -> AwareNetOutput:
        """Classify volumes x (B, C, X, Y, Z) from their axial slices (along Z)."""
        if x.ndim != 5 or x.shape[1] != self.in_channels:
            raise BrainlearnError(
                f"AwareNet: expected a batch (B, {self.in_channels}, X, Y, Z), got shape {tuple(x.shape)}. "
                "Pass volumes with a channel axis, slices along the last axis."
            )
        b, c, nx, ny, nz = x.shape
        slices = x.permute(0, 4, 1, 2, 3).reshape(b * nz, c, nx, ny)  # (B·Z, C, X, Y)
        features = self._stem(slices)
        features = features.view(b, nz, *features.shape[1:])  # (B, Z, 2w, h, w); w = width, 64 in the paper
        features, slice_weights, local = self.attention(features)
        features = self._segment(self.layer3, features, fusion=True)  # (B, Z, 4w, h/2, w/2)
        features = self._segment(self.layer4, features, fusion=True)  # (B, Z, 8w, h/4, w/4)
        logits = self.classifier(features.mean(dim=(-2, -1)))  # (B, Z, num_classes)
        return AwareNetOutput(logits.mean(dim=1), slice_weights, local)

    def _checkpointing_now(self) -> bool:
        return self.checkpointing and self.training and torch.is_grad_enabled()

    def _stem(self, slices: Tensor) -> Tensor:
        """The stem on (B·Z, C, X, Y); checkpointed in three parts, as it holds most of the activations."""
        if not self._checkpointing_now():
            return self.stem(slices)  # one call of the module, which Grad-CAM's hooks on "stem" see
        for part in (self.stem[:4], self.stem[4], self.stem[5]):  # first convolution and pooling, two stages
            slices = self._segment(part, slices)
        return slices

    def _segment(self, stage: nn.Module, features: Tensor, *, fusion: bool = False) -> Tensor:
        """``stage`` on ``features``, with ``fusion`` as a fusion stage (:func:`_fuse`); when checkpointing a
        training step, recomputed in the backward pass rather than stored."""
        function = partial(_fuse, stage) if fusion else stage
        if self._checkpointing_now():
            contexts = partial(_recomputation_contexts, stage)
            return checkpoint(function, features, use_reentrant=False, context_fn=contexts)
        return function(features)


def _fuse(stage: nn.Module, features: Tensor) -> Tensor:
    """A fusion stage on (B, S, C, H, W): neighbouring slices exchange channels, then ``stage`` runs per slice."""
    return _per_slice(stage, temporal_shift(features))


def _recomputation_contexts(stage: nn.Module) -> tuple[AbstractContextManager, AbstractContextManager]:
    """Checkpoint's contexts for the forward pass (none) and for its recomputation (BatchNorm statistics kept)."""
    return nullcontext(), _batch_norm_statistics_kept(stage)


@contextmanager
def _batch_norm_statistics_kept(module: nn.Module) -> Iterator[None]:
    """Restore the BatchNorm buffers of ``module`` afterwards: a recomputation must not count a batch twice."""
    buffers = [
        buffer
        for layer in module.modules()
        if isinstance(layer, nn.modules.batchnorm._BatchNorm)
        for buffer in layer.buffers()
    ]
    saved = [buffer.clone() for buffer in buffers]
    try:
        yield
    finally:  # also when checkpoint stops the recomputation early, with an exception, once it has what it needs
        with torch.no_grad():
            for buffer, value in zip(buffers, saved, strict=True):
                buffer.copy_(value)
