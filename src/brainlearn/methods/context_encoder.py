"""Context-encoder pretraining (document 002): fill checkerboard-masked slices, then reuse the encoder.

A pix2pix-style pair learns to inpaint: the generator (our segmentation U-Net with C output channels and a linear
output, since inputs are z-scored) fills the masked cells of a slice; a conditional PatchGAN discriminator tells
(masked, real) pairs from (masked, filled) pairs. The generator minimizes BCE + 100 × L1 on the masked region
(document 002). Its encoder then sits under ``generator.network.encoder.*`` in the checkpoint, which is what
:func:`brainlearn.commands_segment.load_encoder` copies into a segmenter built with the same ``options``.

Document 002 masked a fixed 16-px checkerboard; here each image draws its cell size (8–24 px) and phase, so the
encoder cannot learn one grid.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import lightning
import numpy as np
import torch
from torch import Tensor, nn
from torch.nn import functional as F

from brainlearn.errors import BrainlearnError
from brainlearn.fast import adam
from brainlearn.methods.gather import gather_rows
from brainlearn.models.segmenters import build_segmenter

# Ordered-dither (Bayer) matrix: thresholding it at 16·f masks a fraction f of the cells, spread evenly; at f = 0.5
# it is exactly the checkerboard (cells with an even i + j).
_BAYER = torch.tensor([[0, 8, 2, 10], [12, 4, 14, 6], [3, 11, 1, 9], [15, 7, 13, 5]])


def checkerboard_mask(
    shape: tuple[int, int], cell: int, phase: tuple[int, int] = (0, 0), *, fraction: float = 0.5
) -> Tensor:
    """The masked pixels (True) of a checkerboard of ``cell``-px squares shifted by ``phase`` = (dy, dx) px.

    At ``fraction`` 0.5 alternate cells are masked; other multiples of 1/16 mask that share of the cells in an
    ordered-dither pattern. The share of pixels is exact when H or W is a multiple of 2·cell (0.5), or both are
    multiples of 4·cell (any fraction).

    Returns:
        A bool tensor (H, W).
    """
    if cell < 1:
        raise BrainlearnError(f"checkerboard cell must be a positive number of pixels, not {cell!r}.")
    level = _level(fraction)
    rows = (torch.arange(shape[0]) + phase[0]) // cell % 4  # (H,) cell row, modulo the dither period
    columns = (torch.arange(shape[1]) + phase[1]) // cell % 4  # (W,)
    return _BAYER[rows[:, None], columns[None, :]] < level  # (H, W)


def _level(fraction: float) -> int:
    level = round(fraction * 16)
    if not 0 < level < 16 or abs(level - fraction * 16) > 1e-6:
        raise BrainlearnError(
            f"checkerboard fraction must be a multiple of 1/16 in (0, 1) (e.g. 0.5), not {fraction!r}."
        )
    return level


class RandomCheckerboard:
    """Draws a checkerboard mask per image: cell size uniform in ``cells`` (px, inclusive), phase uniform.

    Args:
        cells: (smallest, largest) cell size in pixels (document 002: a fixed 16, i.e. ``(16, 16)``).
        fraction: share of the cells masked (0.5: alternate cells).
    """

    def __init__(self, cells: Sequence[int] = (8, 24), fraction: float = 0.5):
        cells = tuple(cells)
        if len(cells) != 2 or not all(isinstance(c, int) and c > 0 for c in cells) or cells[0] > cells[1]:
            raise BrainlearnError(
                f"checkerboard cells must be (smallest, largest) positive pixel sizes, not {cells!r}."
            )
        _level(fraction)
        self.cells, self.fraction = cells, fraction

    def __call__(self, shape: tuple[int, int], generator: torch.Generator | None = None) -> Tensor:
        """A bool mask (H, W), True where the image is hidden."""
        cell = int(torch.randint(self.cells[0], self.cells[1] + 1, (1,), generator=generator))
        dy, dx = (int(v) for v in torch.randint(0, 4 * cell, (2,), generator=generator))  # one dither period
        return checkerboard_mask(shape, cell, (dy, dx), fraction=self.fraction)


def build_generator(in_channels: int, options: dict[str, Any] | None = None) -> nn.Module:
    """The inpainting generator: the ``unet2d`` segmenter's architecture with ``in_channels`` linear outputs.

    Pass the same ``options`` (e.g. ``decoder_channels``) as to ``build_segmenter("unet2d", ...)``; the encoder is
    then identical, name for name and shape for shape. Maps (B, C, H, W) → (B, C, H, W), any H and W.
    """
    return build_segmenter("unet2d", in_channels=in_channels, out_channels=in_channels, options=options)


class PatchDiscriminator(nn.Module):
    """pix2pix's conditional PatchGAN (70 × 70 receptive field with the defaults): one logit per patch.

    Args:
        in_channels: channels of the (condition, image) pair together, e.g. 2·C.
        channels: width of the first layer, doubled at each further layer (capped at 8×).
        layers: hidden layers after the first (3: the 70 × 70 PatchGAN, for inputs of at least 32 px).

    Maps (B, in_channels, H, W) → logits (B, 1, H', W').
    """

    def __init__(self, in_channels: int, *, channels: int = 64, layers: int = 3):
        super().__init__()
        widths = [channels * min(2**i, 8) for i in range(layers + 1)]
        blocks: list[nn.Module] = [nn.Conv2d(in_channels, widths[0], 4, 2, 1), nn.LeakyReLU(0.2)]
        for i in range(1, layers + 1):
            stride = 2 if i < layers else 1  # the last hidden layer keeps the grid (pix2pix)
            blocks += [nn.Conv2d(widths[i - 1], widths[i], 4, stride, 1), nn.InstanceNorm2d(widths[i])]
            blocks.append(nn.LeakyReLU(0.2))
        blocks.append(nn.Conv2d(widths[-1], 1, 4, 1, 1))
        self.layers = nn.Sequential(*blocks)

    def forward(self, condition: Tensor, image: Tensor) -> Tensor:
        """Patch logits (B, 1, H', W') for ``image`` (B, C, H, W) given ``condition`` (B, C, H, W)."""
        return self.layers(torch.cat([condition, image], dim=1))


class ContextEncoderModule(lightning.LightningModule):
    """Train ``generator`` to fill checkerboard-masked ``batch["image"]`` (B, C, H, W) against ``discriminator``.

    Masks are drawn inside the module from its own generator seeded by (``seed``, epoch), so masks repeat across
    resumes; validation always uses the same masks, so ``val/l1`` (L1 on the masked pixels) compares epochs.

    Args:
        generator: (B, C, H, W) → (B, C, H, W), e.g. :func:`build_generator`.
        discriminator: (condition, image) → patch logits, e.g. :class:`PatchDiscriminator` with 2·C channels.
        l1_weight: weight of the L1 term (document 002: 100).
        adversarial_weight: weight of the generator's BCE term (document 002: 1).
        lr, betas: Adam settings of both networks (pix2pix: 2e-4, (0.5, 0.999)).
        cells, fraction: the :class:`RandomCheckerboard` settings.
        seed: seed of the masks.
    """

    def __init__(
        self,
        generator: nn.Module,
        discriminator: nn.Module,
        *,
        l1_weight: float = 100.0,
        adversarial_weight: float = 1.0,
        lr: float = 2e-4,
        betas: tuple[float, float] = (0.5, 0.999),
        cells: Sequence[int] = (8, 24),
        fraction: float = 0.5,
        seed: int = 0,
    ):
        super().__init__()
        self.automatic_optimization = False  # two optimizers, alternating steps
        self.generator, self.discriminator = generator, discriminator
        self.l1_weight, self.adversarial_weight = l1_weight, adversarial_weight
        self.lr, self.betas, self.seed = lr, tuple(betas), seed
        self.masking = RandomCheckerboard(cells, fraction)
        self._train_rng, self._val_rng = torch.Generator(), torch.Generator()
        self._val: list[tuple[float, float]] = []

    def forward(self, image: Tensor, mask: Tensor) -> Tensor:
        """``image`` (B, C, H, W) with its ``mask``-ed pixels (B, 1, H, W), True = hidden, filled in."""
        masked = image.masked_fill(mask, 0.0)  # 0 is the mean of a z-scored image
        return torch.where(mask, self.generator(masked).float(), image)

    def on_train_epoch_start(self) -> None:
        self._train_rng.manual_seed(mask_seed(self.seed, self.current_epoch + 1))

    def on_validation_epoch_start(self) -> None:
        self._val_rng.manual_seed(mask_seed(self.seed, 0))

    def training_step(self, batch: dict, batch_index: int) -> None:
        image = batch["image"]
        mask = self._masks(image, self._train_rng)
        masked = image.masked_fill(mask, 0.0)
        filled = torch.where(mask, self.generator(masked).float(), image)
        loss_d = self._discriminator_step(masked, image, filled.detach())
        loss_g, l1 = self._generator_step(masked, image, filled, mask)
        for name, value in (("loss_g", loss_g), ("loss_d", loss_d), ("l1", l1)):
            self.log(f"train/{name}", value, on_step=True, on_epoch=True, batch_size=len(image), prog_bar=True)

    def _discriminator_step(self, masked: Tensor, real: Tensor, fake: Tensor) -> Tensor:
        optimizer = self.optimizers()[1]
        with self.toggled_optimizer(optimizer):
            real_logits = self.discriminator(masked, real).float()
            fake_logits = self.discriminator(masked, fake).float()
            loss = 0.5 * (_bce(real_logits, True) + _bce(fake_logits, False))  # pix2pix halves D's loss
            optimizer.zero_grad()
            self.manual_backward(loss)
            optimizer.step()
        return loss.detach()

    def _generator_step(self, masked: Tensor, real: Tensor, fake: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        optimizer = self.optimizers()[0]
        with self.toggled_optimizer(optimizer):
            l1 = masked_l1(fake, real, mask)
            loss = self.adversarial_weight * _bce(self.discriminator(masked, fake).float(), True) + self.l1_weight * l1
            optimizer.zero_grad()
            self.manual_backward(loss)
            optimizer.step()
        return loss.detach(), l1.detach()

    def validation_step(self, batch: dict, batch_index: int) -> None:
        image = batch["image"]
        mask = self._masks(image, self._val_rng)
        filled = self(image, mask)
        error = ((filled - image).abs() * mask).sum()
        self._val.append((float(error), float(mask.sum()) * image.shape[1]))

    def on_validation_epoch_end(self) -> None:
        if not self._val:
            return
        error, count = gather_rows(self, np.asarray(self._val)).numpy().sum(axis=0)
        self._val.clear()
        self.log("val/l1", error / max(count, 1.0), prog_bar=True)

    def configure_optimizers(self):
        settings = {"lr": self.lr, "betas": self.betas}
        return [
            adam(self.generator.parameters(), **settings),
            adam(self.discriminator.parameters(), **settings),
        ]

    def _masks(self, image: Tensor, rng: torch.Generator) -> Tensor:
        """One checkerboard per image: bool (B, 1, H, W)."""
        shape = tuple(image.shape[-2:])
        masks = torch.stack([self.masking(shape, rng) for _ in range(len(image))])  # (B, H, W)
        return masks[:, None].to(image.device)


def masked_l1(prediction: Tensor, target: Tensor, mask: Tensor) -> Tensor:
    """Mean absolute error over the masked pixels (True in ``mask`` (B, 1, H, W)) of all channels of (B, C, H, W)."""
    count = mask.sum() * prediction.shape[1]
    return ((prediction - target).abs() * mask).sum() / count.clamp(min=1)


def _bce(logits: Tensor, real: bool) -> Tensor:
    target = torch.ones_like(logits) if real else torch.zeros_like(logits)
    return F.binary_cross_entropy_with_logits(logits, target)


def mask_seed(*values: int) -> int:
    """One 32-bit seed from several integers (a run's seed and an epoch): masks that repeat across resumes."""
    return int(np.random.SeedSequence([v % 2**32 for v in values]).generate_state(1)[0])
