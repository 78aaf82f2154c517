"""Inpainting pretraining of a 3D Swin UNETR (document 003): reconstruct masked cubes, then reuse the encoder.

Each training patch is flipped at random in the axial plane, cubes of ``mask_patch`` voxels covering
``mask_fraction`` of a randomly shifted grid are hidden (set to 0, the mean of a z-scored image), and the network
(the ``swin_unetr`` segmenter's architecture with one linear output per input channel) reconstructs the patch. The
loss is L1 on the hidden voxels plus ``ssim_weight`` × (1 − MS-SSIM) on the whole patch, minimized with AdamW
(lr 1e-3, weight decay 0.01; document 003). The encoder then sits under ``network.network.swinViT.*`` in the
checkpoint, which is what :func:`brainlearn.commands_segment.load_encoder` copies into a segmenter built with the
same ``options``.

Document 003 masks, then flips; we flip, then mask. Masks are drawn independently of the image and a flipped mask
is another mask of the same distribution, so both orders give the same training pairs.
"""

from __future__ import annotations

from typing import Any

import lightning
import numpy as np
import torch
from torch import Tensor, nn

from brainlearn.errors import BrainlearnError
from brainlearn.fast import adam
from brainlearn.methods.context_encoder import mask_seed, masked_l1
from brainlearn.methods.gather import gather_rows
from brainlearn.metrics_generation import MS_SSIM_WEIGHTS
from brainlearn.models.segmenters import build_segmenter

# A 64³ patch holds three scales for a 5-voxel window: ms_ssim keeps the first three of Wang et al. (2003)'s
# weights (MS_SSIM_WEIGHTS), renormalized to sum to 1.


def random_patch_mask(
    shape: tuple[int, int, int], patch: int, fraction: float, generator: torch.Generator | None = None
) -> Tensor:
    """Hide whole cubes of a grid of ``patch``-voxel cubes shifted by a random phase along each axis.

    Exactly ``round(fraction × cells)`` cells of the grid (at least one) are hidden, drawn without replacement;
    cells cut by the border of the volume are hidden only where they lie inside it.

    Args:
        shape: (X, Y, Z) of the volume, in voxels.
        patch: edge of a cube, in voxels (e.g. 8).
        fraction: share of the grid's cells hidden, in (0, 1).
        generator: the source of the phase and the cells (for reproducible masks).

    Returns:
        A bool tensor (X, Y, Z), True where the image is hidden.
    """
    check_mask_settings(patch, fraction)
    if len(shape) != 3 or not all(isinstance(n, int | np.integer) and n > 0 for n in shape):
        raise BrainlearnError(f"mask shape must be three positive voxel counts (X, Y, Z), not {tuple(shape)!r}.")
    phase = torch.randint(0, patch, (3,), generator=generator).tolist()
    cells = [(int(n) - 1 + p) // patch + 1 for n, p in zip(shape, phase, strict=True)]  # grid cells along each axis
    count = int(np.prod(cells))
    hidden = torch.zeros(count, dtype=torch.bool)
    hidden[torch.randperm(count, generator=generator)[: max(1, round(fraction * count))]] = True
    x, y, z = ((torch.arange(int(n)) + p) // patch for n, p in zip(shape, phase, strict=True))  # cell of each voxel
    return hidden.view(cells)[x[:, None, None], y[None, :, None], z[None, None, :]]  # (X, Y, Z)


def check_mask_settings(patch: int, fraction: float) -> None:
    """Refuse a cube edge that is not a positive number of voxels or a fraction outside (0, 1)."""
    if isinstance(patch, bool) or not isinstance(patch, int) or patch < 1:
        raise BrainlearnError(f"mask_patch must be a positive number of voxels (e.g. 8), not {patch!r}.")
    if isinstance(fraction, bool) or not isinstance(fraction, int | float) or not 0 < fraction < 1:
        raise BrainlearnError(f"mask_fraction must be a share of the cubes in (0, 1) (e.g. 0.4), not {fraction!r}.")


def ms_ssim(prediction: Tensor, target: Tensor, *, kernel_size: int = 5, scales: int = 3) -> Tensor:
    """Multi-scale SSIM (MONAI's) of each image of (B, C, X, Y, Z), with ``target``'s value range.

    A Gaussian window of ``kernel_size`` voxels (σ = 1 voxel) at ``scales`` scales, each half the previous one;
    the default fits 64³ patches (the coarsest scale, 16³, must exceed the window). Differentiable.

    Returns:
        (B,) values in [0, 1], 1 for identical images.
    """
    from monai.metrics.regression import compute_ms_ssim

    weights = torch.tensor(MS_SSIM_WEIGHTS[:scales])
    data_range = max(float(target.max() - target.min()), 1e-6)  # z-scored images have no fixed range
    try:
        value = compute_ms_ssim(
            prediction.float(),
            target.float(),
            spatial_dims=3,
            data_range=data_range,
            kernel_size=kernel_size,
            kernel_sigma=1.0,
            weights=(weights / weights.sum()).tolist(),
        )
    except ValueError as error:
        raise BrainlearnError(
            f"MS-SSIM of images {tuple(target.shape[2:])}: {error} Use larger patches (e.g. 64) or fewer scales."
        ) from error
    return value[:, 0]  # (B,)


def random_flip(image: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Flip each image of (B, C, X, Y, Z) along X or Y, the axes of the axial plane, or leave it: odds 1/3 each."""
    choices = torch.randint(0, 3, (len(image),), generator=generator).tolist()  # 0: keep, 1: flip X, 2: flip Y
    flipped = [one.flip(-4 + axis) if axis else one for one, axis in zip(image, choices, strict=True)]
    return torch.stack(flipped)


def build_inpainter(in_channels: int, options: dict[str, Any] | None = None) -> nn.Module:
    """The ``swin_unetr`` segmenter's network with ``in_channels`` linear outputs: (B, C, X, Y, Z) → same shape.

    Pass the same ``options`` (e.g. ``feature_size``) as to ``build_segmenter("swin_unetr", ...)``; the encoder
    (``swinViT``) is then identical, name for name and shape for shape.
    """
    return build_segmenter("swin_unetr", in_channels=in_channels, out_channels=in_channels, options=options)


class InpaintingModule(lightning.LightningModule):
    """Train ``network`` to reconstruct ``batch["image"]`` (B, C, X, Y, Z) from a copy with cubes hidden.

    Masks (and flips) are drawn inside the module from its own generator seeded by (``seed``, epoch), so they
    repeat across resumes; validation always uses the same masks and no flip, so ``val/l1`` (L1 on the hidden
    voxels) compares epochs.

    Args:
        network: (B, C, X, Y, Z) → (B, C, X, Y, Z), e.g. :func:`build_inpainter`.
        mask_patch: edge of the hidden cubes, in voxels.
        mask_fraction: share of the cubes hidden.
        ssim_weight: weight of 1 − MS-SSIM next to the masked L1 (document 003: both, weight 1).
        lr, weight_decay: AdamW settings (document 003: 1e-3, 0.01).
        seed: seed of the masks and flips.
    """

    def __init__(
        self,
        network: nn.Module,
        *,
        mask_patch: int = 8,
        mask_fraction: float = 0.4,
        ssim_weight: float = 1.0,
        lr: float = 1e-3,
        weight_decay: float = 0.01,
        seed: int = 0,
    ):
        super().__init__()
        check_mask_settings(mask_patch, mask_fraction)
        if ssim_weight < 0:
            raise BrainlearnError(f"ssim_weight must be 0 or more (1: document 003), not {ssim_weight!r}.")
        self.network = network
        self.mask_patch, self.mask_fraction, self.ssim_weight = mask_patch, mask_fraction, ssim_weight
        self.lr, self.weight_decay, self.seed = lr, weight_decay, seed
        self._train_rng, self._val_rng = torch.Generator(), torch.Generator()
        self._val: list[tuple[float, float, float, int]] = []  # (L1 sum, hidden values, MS-SSIM sum, images)

    def forward(self, image: Tensor, mask: Tensor) -> Tensor:
        """The reconstruction (B, C, X, Y, Z) of ``image`` from a copy with the ``mask``-ed voxels (B, 1, X, Y, Z),
        True = hidden, set to 0 (the mean of a z-scored image)."""
        return self.network(image.masked_fill(mask, 0.0)).float()

    def on_train_epoch_start(self) -> None:
        self._train_rng.manual_seed(mask_seed(self.seed, self.current_epoch + 1))

    def on_validation_epoch_start(self) -> None:
        self._val_rng.manual_seed(mask_seed(self.seed, 0))

    def training_step(self, batch: dict, batch_index: int) -> Tensor:
        image = random_flip(batch["image"], self._train_rng)
        mask = self._masks(image, self._train_rng)
        prediction = self(image, mask)
        l1, similarity = masked_l1(prediction, image, mask), ms_ssim(prediction, image).mean()
        loss = l1 + self.ssim_weight * (1 - similarity)
        for name, value in (("loss", loss), ("l1", l1), ("ms_ssim", similarity)):
            self.log(f"train/{name}", value, on_step=True, on_epoch=True, batch_size=len(image), prog_bar=True)
        return loss

    def validation_step(self, batch: dict, batch_index: int) -> None:
        image = batch["image"]
        mask = self._masks(image, self._val_rng)
        prediction = self(image, mask)
        error = ((prediction - image).abs() * mask).sum()
        similarity = ms_ssim(prediction, image).sum()
        self._val.append((float(error), float(mask.sum()) * image.shape[1], float(similarity), len(image)))

    def on_validation_epoch_end(self) -> None:
        if not self._val:
            return
        error, count, similarity, images = gather_rows(self, np.asarray(self._val)).numpy().sum(axis=0)
        self._val.clear()
        self.log("val/l1", error / max(count, 1.0), prog_bar=True)
        self.log("val/ms_ssim", similarity / images)

    def configure_optimizers(self):
        return adam(self.network.parameters(), decoupled=True, lr=self.lr, weight_decay=self.weight_decay)

    def _masks(self, image: Tensor, rng: torch.Generator) -> Tensor:
        """One mask per image: bool (B, 1, X, Y, Z)."""
        shape = tuple(image.shape[-3:])
        masks = [random_patch_mask(shape, self.mask_patch, self.mask_fraction, rng) for _ in range(len(image))]
        return torch.stack(masks)[:, None].to(image.device)
