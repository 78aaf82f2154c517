"""Joint learning of synthesis and diagnosis (document 000, stage 3): ShareGAN and a classifier trained together.

Every step is a ShareGAN step (:class:`~brainlearn.methods.sharegan.ShareGANModule`) plus a classification loss
(cross-entropy, × ``classification_weight``) on either the real MRI or the PET synthesized from it, chosen at
random each step: when it is the synthesized PET, the classifier's loss also trains the generator to put the
diagnostic signal into the PET it makes. The classifier has its own optimizer and learning rate (1e-5; 1e-6 for
the generator and discriminators), all decayed ×0.7 per epoch.

Validation runs the inference of the paper on the paired validation sessions: the MRI, the PET synthesized from
it, and the classifier on each; the probabilities of both are averaged. ``val/auroc`` (of the average) drives
checkpoint selection and early stopping; ``val/auroc_mri`` and ``val/auroc_synthesized`` and the synthesis scores
against the real PET are logged beside it.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn import functional as F

from brainlearn.fast import adam
from brainlearn.methods.sharegan import ShareGANModule, decay_after
from brainlearn.methods.supervised import _auroc
from brainlearn.models.networks import logits_of
from brainlearn.models.sharesynnet import MRI_TO_PET


class JointModule(ShareGANModule):
    """ShareGAN plus ``classifier`` on real or synthesized PET; ``classes`` in label order (the last positive).

    Args:
        generator, discriminator_pet, discriminator_mri: as for :class:`ShareGANModule` (usually pretrained).
        classifier: maps (B, 1, X, Y, Z) in [-1, 1] to logits (B, K), e.g. AwareNet trained on MRI (stage 2).
        classes: class names in label order.
        classification_weight: weight of the cross-entropy (1).
        lr_classifier: Adam learning rate of the classifier (1e-5).
        lr: Adam learning rate of the generator and discriminators (1e-6).
        lr_decay: factor per epoch for all three (0.7).
        decay_start: epochs at the full learning rates (1: the decay starts with the second epoch).
        seed: seeds the image pools and the real-or-synthesized draw.
        **gan: the other ShareGAN settings (cycle_weight, identity_weight, pool_size, betas, accumulate).
    """

    def __init__(
        self,
        generator: nn.Module,
        discriminator_pet: nn.Module,
        discriminator_mri: nn.Module,
        classifier: nn.Module,
        classes: Sequence[str],
        *,
        classification_weight: float = 1.0,
        lr_classifier: float = 1e-5,
        lr: float = 1e-6,
        lr_decay: float = 0.7,
        decay_start: int = 1,
        seed: int = 0,
        **gan,
    ):
        super().__init__(
            generator,
            discriminator_pet,
            discriminator_mri,
            lr=lr,
            lr_decay=lr_decay,
            decay_start=decay_start,
            seed=seed,
            **gan,
        )
        self.classifier, self.classes = classifier, tuple(classes)
        self.classification_weight, self.lr_classifier = classification_weight, lr_classifier
        self._draws = np.random.default_rng([seed, 1])
        self._predictions: list[dict[str, Tensor]] = []

    def forward(self, mri: Tensor) -> dict[str, Tensor]:
        """The paper's inference on (B, 1, X, Y, Z) MRI: synthesized PET and class probabilities from each input."""
        pet = self.generator(mri, MRI_TO_PET)
        p_mri = logits_of(self.classifier(mri)).float().softmax(dim=1)
        p_synthesized = logits_of(self.classifier(pet)).float().softmax(dim=1)
        return {"pet": pet, "p_mri": p_mri, "p_synthesized": p_synthesized, "p_both": (p_mri + p_synthesized) / 2}

    def training_step(self, batch: dict, batch_index: int) -> None:
        optimizer_g, optimizer_d, optimizer_c = self.optimizers()
        mri, pet, labels = batch["mri"], batch["pet"], batch["label"]
        out = self.translate_both_ways(mri, pet)
        losses = self.generator_losses(mri, pet, out)
        synthesized = bool(self._draws.random() < 0.5)
        logits = logits_of(self.classifier(out["fake_pet"] if synthesized else mri)).float()
        classification = F.cross_entropy(logits, labels)
        self.manual_backward((losses["loss_g"] + self.classification_weight * classification) / self.accumulate)
        loss_d = self.discriminator_loss(mri, pet, out)
        self.manual_backward(loss_d / self.accumulate)
        if self._stepping(batch_index):
            for optimizer in (optimizer_g, optimizer_d, optimizer_c):
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
        logged = {f"train/{name}": value.detach() for name, value in losses.items()}
        logged |= {"train/loss_d": loss_d.detach(), "train/loss_c": classification.detach()}
        self.log_dict(logged, on_step=True, on_epoch=True, batch_size=len(mri))

    def validation_step(self, batch: dict, batch_index: int) -> None:
        from brainlearn.metrics_synthesis import synthesis_metrics

        out = self(batch["mri"])
        self._predictions.append(
            {key: out[key].cpu() for key in ("p_mri", "p_synthesized", "p_both")} | {"label": batch["label"].cpu()}
        )
        fakes, reals = out["pet"].float().cpu().numpy()[:, 0], batch["pet"].float().cpu().numpy()[:, 0]
        self._val.extend(synthesis_metrics(fake, real) for fake, real in zip(fakes, reals, strict=True))

    def on_validation_epoch_end(self) -> None:
        if self._predictions:
            labels = torch.cat([p["label"] for p in self._predictions]).numpy()
            for key, name in (("p_both", "auroc"), ("p_mri", "auroc_mri"), ("p_synthesized", "auroc_synthesized")):
                probabilities = torch.cat([p[key] for p in self._predictions]).numpy()
                self.log(f"val/{name}", _auroc(labels, probabilities), prog_bar=name == "auroc")
            self._predictions.clear()
        super().on_validation_epoch_end()

    def configure_optimizers(self):
        optimizers, schedules = super().configure_optimizers()
        optimizer_c = adam(self.classifier.parameters(), lr=self.lr_classifier, betas=self.betas)
        schedule_c = torch.optim.lr_scheduler.LambdaLR(optimizer_c, decay_after(self.decay_start, self.lr_decay))
        return [*optimizers, optimizer_c], [*schedules, schedule_c]
