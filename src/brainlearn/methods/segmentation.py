"""Lesion segmentation (document 002): a U-Net trained on image + mask with BCE, Dice or both.

The encoder can start from a pretrained checkpoint and be frozen (document 002's three arms: random,
pretrained-frozen, pretrained-fine-tuned). Validation reports the loss and the Dice of all validation slices
together at 0.5; the decision threshold is chosen afterwards on whole validation volumes.
"""

from __future__ import annotations

import lightning
import numpy as np
import torch
from torch import Tensor, nn

from brainlearn.fast import adam
from brainlearn.losses import segmentation_loss
from brainlearn.methods.gather import gather_rows
from brainlearn.models.segmenters import encoder_of


class SegmentModule(lightning.LightningModule):
    """Train ``network`` (image (B, C, *spatial) → logits (B, 1, *spatial)) against ``batch["mask"]``.

    Args:
        network: a segmenter from :func:`brainlearn.models.segmenters.build_segmenter`.
        loss: ``"bce"``, ``"dice"`` or ``"combo"``.
        pos_weight: weight of lesion voxels in the BCE term.
        lr, weight_decay: Adam settings (document 002: Adam 2e-5).
        freeze_encoder: keep the encoder's weights fixed (and its batch norms in eval mode).
    """

    def __init__(
        self,
        network: nn.Module,
        *,
        loss: str = "combo",
        pos_weight: float = 1.0,
        lr: float = 2e-5,
        weight_decay: float = 0.0,
        freeze_encoder: bool = False,
    ):
        super().__init__()
        self.network, self.loss_name, self.pos_weight = network, loss, pos_weight
        self.lr, self.weight_decay, self.freeze_encoder = lr, weight_decay, freeze_encoder
        segmentation_loss(loss, torch.zeros(1, 1, 2), torch.zeros(1, 1, 2))  # an unknown name fails now
        if freeze_encoder:
            encoder_of(network).requires_grad_(False)
        self._val: list[tuple[float, float, float, int]] = []

    def forward(self, image: Tensor) -> Tensor:
        """Lesion probabilities (B, 1, *spatial)."""
        return torch.sigmoid(self.network(image).float())

    def on_train_epoch_start(self) -> None:
        if self.freeze_encoder:
            encoder_of(self.network).eval()  # frozen means frozen: batch-norm statistics too

    def training_step(self, batch: dict, batch_index: int) -> Tensor:
        logits = self.network(batch["image"]).float()
        loss = segmentation_loss(self.loss_name, logits, batch["mask"], pos_weight=self.pos_weight)
        self.log("train/loss", loss, on_step=True, on_epoch=True, batch_size=len(batch["image"]), prog_bar=True)
        return loss

    def validation_step(self, batch: dict, batch_index: int) -> None:
        logits = self.network(batch["image"]).float()
        loss = segmentation_loss(self.loss_name, logits, batch["mask"], pos_weight=self.pos_weight)
        predicted, truth = logits > 0, batch["mask"] > 0.5
        self._val.append(
            (
                float(loss) * len(logits),
                float((predicted & truth).sum()),
                float(predicted.sum() + truth.sum()),
                len(logits),
            )
        )

    def on_validation_epoch_end(self) -> None:
        if not self._val:
            return
        values = gather_rows(self, np.asarray(self._val)).numpy()
        self._val.clear()
        self.log("val/loss", values[:, 0].sum() / max(values[:, 3].sum(), 1), prog_bar=True)  # mean per image
        total = values[:, 2].sum()
        self.log("val/dice", 2 * values[:, 1].sum() / total if total else 1.0, prog_bar=True)

    def configure_optimizers(self):
        parameters = [p for p in self.parameters() if p.requires_grad]
        return adam(parameters, lr=self.lr, weight_decay=self.weight_decay)


@torch.no_grad()
def predict_volume(
    module: SegmentModule, image: np.ndarray, *, spatial_dims: int, batch_size: int = 16, patch: int = 64
) -> np.ndarray:
    """Lesion probabilities (X, Y, Z) of a standardized volume (C, X, Y, Z).

    2D: the axial slices (last axis) in batches, stacked back. 3D: MONAI's sliding window over ``patch``³ patches
    with 50 % overlap and Gaussian weighting.
    """
    module.eval()
    volume = torch.from_numpy(image).to(module.device)
    if spatial_dims == 2:
        slices = volume.permute(3, 0, 1, 2)  # (Z, C, X, Y)
        out = [module(slices[i : i + batch_size])[:, 0] for i in range(0, len(slices), batch_size)]
        return torch.cat(out).permute(1, 2, 0).cpu().numpy()  # (X, Y, Z)
    from monai.inferers import sliding_window_inference

    probabilities = sliding_window_inference(volume[None], (patch,) * 3, 2, module, overlap=0.5, mode="gaussian")
    return probabilities[0, 0].cpu().numpy()
