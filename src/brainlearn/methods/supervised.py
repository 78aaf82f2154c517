"""Supervised diagnosis: a network trained with cross-entropy on labelled volumes (document 000's AwareNet stage).

The optimizer follows document 000: Adam (lr 1e-4, β1 0.5) with the learning rate multiplied by ``lr_decay`` after
every epoch. Validation computes the loss, ROC-AUC and balanced accuracy over the whole validation set at each
epoch end, so checkpoint selection and early stopping watch a real validation pass (document 000's code watched a
stale training loss).
"""

from __future__ import annotations

from collections.abc import Sequence

import lightning
import numpy as np
import torch
from torch import Tensor, nn
from torch.nn import functional as F

from brainlearn.fast import adam
from brainlearn.methods.gather import gather_rows
from brainlearn.models.networks import logits_of


class ClassifierModule(lightning.LightningModule):
    """Train ``network`` to tell ``classes`` apart from ``batch["image"]``.

    Args:
        network: maps (B, C, X, Y, Z) to an output whose logits are (B, len(classes)).
        classes: class names in label order; the last is the positive class of a binary task (e.g. AD).
        lr: Adam learning rate.
        betas: Adam betas (document 000: (0.5, 0.999)).
        weight_decay: Adam weight decay.
        lr_decay: learning-rate factor per epoch (exponential decay; 1 keeps it constant).
        freeze_backbone: keep ``network.backbone`` fixed (weights and batch-norm statistics): a linear probe.
    """

    def __init__(
        self,
        network: nn.Module,
        classes: Sequence[str],
        *,
        lr: float = 1e-4,
        betas: tuple[float, float] = (0.5, 0.999),
        weight_decay: float = 0.0,
        lr_decay: float = 0.95,
        freeze_backbone: bool = False,
    ):
        super().__init__()
        self.network, self.classes = network, tuple(classes)
        self.freeze_backbone = freeze_backbone
        if freeze_backbone:
            network.backbone.requires_grad_(False)
        self.lr, self.betas, self.weight_decay, self.lr_decay = lr, tuple(betas), weight_decay, lr_decay
        self._val: list[tuple[Tensor, Tensor]] = []

    def forward(self, image: Tensor) -> Tensor:
        """Class probabilities (B, K)."""
        return logits_of(self.network(image)).float().softmax(dim=1)

    def on_train_epoch_start(self) -> None:
        if self.freeze_backbone:
            self.network.backbone.eval()

    def training_step(self, batch: dict, batch_index: int) -> Tensor:
        loss = F.cross_entropy(logits_of(self.network(batch["image"])).float(), batch["label"])
        self.log("train/loss", loss, on_step=True, on_epoch=True, batch_size=len(batch["label"]), prog_bar=True)
        return loss

    def validation_step(self, batch: dict, batch_index: int) -> None:
        logits = logits_of(self.network(batch["image"])).float()
        self._val.append((logits.detach().cpu(), batch["label"].detach().cpu()))

    def on_validation_epoch_end(self) -> None:
        if not self._val:
            return
        logits = gather_rows(self, torch.cat([item[0] for item in self._val]))
        labels = gather_rows(self, torch.cat([item[1] for item in self._val]))
        self._val.clear()
        self.log("val/loss", F.cross_entropy(logits, labels), prog_bar=True)
        probabilities = logits.softmax(dim=1).numpy()
        self.log("val/auroc", _auroc(labels.numpy(), probabilities), prog_bar=True)
        self.log(
            "val/balanced_accuracy", _balanced_accuracy(labels.numpy(), probabilities.argmax(1), len(self.classes))
        )

    def configure_optimizers(self):
        parameters = [p for p in self.parameters() if p.requires_grad]
        optimizer = adam(parameters, lr=self.lr, betas=self.betas, weight_decay=self.weight_decay)
        schedule = torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=self.lr_decay)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "epoch"}}


def _auroc(labels: np.ndarray, probabilities: np.ndarray) -> float:
    """ROC-AUC (binary: of the last class; more classes: macro one-vs-rest); NaN when a class is missing."""
    from sklearn.metrics import roc_auc_score

    if len(np.unique(labels)) < probabilities.shape[1]:
        return float("nan")
    if probabilities.shape[1] == 2:
        return float(roc_auc_score(labels, probabilities[:, 1]))
    return float(roc_auc_score(labels, probabilities, multi_class="ovr", average="macro"))


def _balanced_accuracy(labels: np.ndarray, predicted: np.ndarray, classes: int) -> float:
    recalls = [np.mean(predicted[labels == k] == k) for k in range(classes) if np.any(labels == k)]
    return float(np.mean(recalls))
