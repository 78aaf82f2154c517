"""Brain age (document 004): a 3D CNN regresses chronological age from a T1 of a healthy participant.

Ages are standardized with the training set's mean and standard deviation (kept in the checkpoint as buffers),
so the network's output is near 0 at the start whatever the age range. The loss is MSE or L1, optionally plus
TSAN's pairwise ranking loss (:func:`brainlearn.losses.brain_age_loss`).
"""

from __future__ import annotations

import lightning
import torch
from torch import Tensor, nn

from brainlearn.fast import adam
from brainlearn.losses import brain_age_loss
from brainlearn.methods.gather import gather_rows
from brainlearn.models.networks import logits_of


class BrainAgeModule(lightning.LightningModule):
    """Train ``network`` (output (B, 1)) to predict ``batch["age"]`` in years.

    Args:
        network: maps (B, C, X, Y, Z) to (B, 1).
        age_mean, age_std: of the training ages (years); targets are standardized with them.
        loss: ``"mse"``, ``"l1"``, ``"mse+ranking"`` or ``"l1+ranking"``.
        ranking_weight: weight of the ranking term.
        lr, weight_decay: AdamW settings; ``lr_decay`` multiplies the learning rate after each epoch.
    """

    def __init__(
        self,
        network: nn.Module,
        *,
        age_mean: float,
        age_std: float,
        loss: str = "mse",
        ranking_weight: float = 1.0,
        lr: float = 1e-3,
        weight_decay: float = 1e-4,
        lr_decay: float = 0.97,
    ):
        super().__init__()
        self.network = network
        self.register_buffer("age_mean", torch.tensor(float(age_mean)))
        self.register_buffer("age_std", torch.tensor(max(float(age_std), 1e-3)))
        brain_age_loss(loss, torch.zeros(2), torch.zeros(2))  # an unknown loss name fails now, not mid-training
        self.loss_name, self.ranking_weight = loss, ranking_weight
        self.lr, self.weight_decay, self.lr_decay = lr, weight_decay, lr_decay
        self._val: list[tuple[Tensor, Tensor]] = []

    def forward(self, image: Tensor) -> Tensor:
        """Predicted ages in years (B,)."""
        return logits_of(self.network(image)).float()[:, 0] * self.age_std + self.age_mean

    def _loss(self, batch: dict) -> tuple[Tensor, Tensor]:
        standardized = logits_of(self.network(batch["image"])).float()[:, 0]
        target = (batch["age"].float() - self.age_mean) / self.age_std
        loss = brain_age_loss(self.loss_name, standardized, target, ranking_weight=self.ranking_weight)
        return loss, standardized * self.age_std + self.age_mean

    def training_step(self, batch: dict, batch_index: int) -> Tensor:
        loss, _ = self._loss(batch)
        self.log("train/loss", loss, on_step=True, on_epoch=True, batch_size=len(batch["age"]), prog_bar=True)
        return loss

    def validation_step(self, batch: dict, batch_index: int) -> None:
        _, predicted = self._loss(batch)
        self._val.append((predicted.detach().cpu(), batch["age"].detach().cpu().float()))

    def on_validation_epoch_end(self) -> None:
        if not self._val:
            return
        predicted = gather_rows(self, torch.cat([item[0] for item in self._val]))
        age = gather_rows(self, torch.cat([item[1] for item in self._val]))
        self._val.clear()
        self.log("val/mae", (predicted - age).abs().mean(), prog_bar=True)
        self.log("val/loss", ((predicted - age) / self.age_std.cpu()).pow(2).mean())

    def configure_optimizers(self):
        optimizer = adam(self.parameters(), decoupled=True, lr=self.lr, weight_decay=self.weight_decay)
        schedule = torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=self.lr_decay)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "epoch"}}
