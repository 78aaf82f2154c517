"""VQ-GAN training, the first stage of Medical Diffusion (document 003, Khader et al., Scientific Reports 2023).

Each step reconstructs a batch of volumes with a :class:`~brainlearn.models.vqgan.VQGAN3D` and updates it with

- autoencoder loss = ``l1_weight`` · |x̂ − x| + the codebook's commitment loss, and, once ``gan_start``
  autoencoder steps are done, + ``gan_weight`` · (−mean D₂(x̂ slices) − mean D₃(x̂)) (hinge generator loss)
  + ``feature_weight`` · feature matching (the L1 between the discriminators' intermediate outputs for the real and
  the reconstructed input, averaged over layers and summed over the two discriminators);

then, after ``gan_start`` too, the discriminators with the hinge loss mean(relu(1 − D(x))) + mean(relu(1 + D(x̂)))
of each, summed. D₂ judges one random axial slice (last axis) per volume, the same slice of x and x̂; D₃ judges the
whole volume. The weights, the start and the optimizer settings default to document 003's public code.

Validation reconstructs whole volumes and reports ``val/l1`` (mean absolute error over all voxels, the checkpoint
monitor, mode min), ``val/psnr`` and ``val/ssim`` (:func:`~brainlearn.metrics_synthesis.synthesis_metrics`) and
``val/perplexity``.
"""

from __future__ import annotations

import lightning
import numpy as np
import torch
from torch import Tensor, nn
from torch.nn import functional as F

from brainlearn.errors import BrainlearnError
from brainlearn.fast import adam


def hinge_discriminator_loss(real_logits: Tensor, fake_logits: Tensor) -> Tensor:
    """Hinge loss of a discriminator (Lim & Ye 2017): mean(relu(1 − D(real))) + mean(relu(1 + D(fake)))."""
    return F.relu(1 - real_logits.float()).mean() + F.relu(1 + fake_logits.float()).mean()


def hinge_generator_loss(fake_logits: Tensor) -> Tensor:
    """Hinge loss of the generator: −mean(D(fake))."""
    return -fake_logits.float().mean()


def feature_matching_loss(real_outputs: list[Tensor], fake_outputs: list[Tensor]) -> Tensor:
    """Mean over the intermediate layers (all but the logits) of L1(D(fake) layer, D(real) layer, detached)."""
    pairs = list(zip(real_outputs[:-1], fake_outputs[:-1], strict=True))
    return sum(F.l1_loss(fake.float(), real.detach().float()) for real, fake in pairs) / len(pairs)


class VQGANModule(lightning.LightningModule):
    """Train ``vqgan`` against ``slice_discriminator`` (2D) and ``volume_discriminator`` (3D) on ``image`` batches.

    A batch is a dict with ``image`` (B, C, X, Y, Z) in [-1, 1]; its other keys are ignored.

    Args:
        vqgan: a VQGAN3D (or any network returning its ``forward`` dict).
        slice_discriminator, volume_discriminator: networks returning the list of their layers' outputs, logits
            last (:func:`~brainlearn.models.vqgan.build_discriminators`).
        l1_weight: weight of the reconstruction L1 (4).
        gan_weight: weight of the generator's hinge loss, both discriminators (1).
        feature_weight: weight of the feature-matching loss (4).
        gan_start: autoencoder steps before the adversarial losses and the discriminators start (10,000).
        lr, betas: Adam settings of the autoencoder and of the discriminators (3e-4, (0.5, 0.9)).
        seed: seeds the choice of slices.
    """

    def __init__(
        self,
        vqgan: nn.Module,
        slice_discriminator: nn.Module,
        volume_discriminator: nn.Module,
        *,
        # Document 003's public code: image and video GAN weights 1, feature matching 4, L1 4, discriminator
        # from step 10,000, Adam 3e-4 with β (0.5, 0.9).
        l1_weight: float = 4.0,
        gan_weight: float = 1.0,
        feature_weight: float = 4.0,
        gan_start: int = 10000,
        lr: float = 3e-4,
        betas: tuple[float, float] = (0.5, 0.9),
        seed: int = 0,
    ):
        super().__init__()
        if not isinstance(gan_start, int) or gan_start < 0:
            raise BrainlearnError(f"VQGANModule: gan_start must be a non-negative integer (10000), not {gan_start!r}.")
        self.automatic_optimization = False
        self.vqgan = vqgan
        self.slice_discriminator, self.volume_discriminator = slice_discriminator, volume_discriminator
        self.l1_weight, self.gan_weight, self.feature_weight = l1_weight, gan_weight, feature_weight
        self.gan_start, self.lr, self.betas = gan_start, lr, tuple(betas)
        # Autoencoder steps taken; a buffer, so a resumed run knows whether the GAN has started (Lightning's
        # global_step counts the steps of both optimizers under manual optimization).
        self.register_buffer("steps_done", torch.zeros((), dtype=torch.long))
        self._steps: int | None = None  # steps_done on the host; None until read (after a resume too)
        self._rng = torch.Generator().manual_seed(seed)
        self._val: list[dict[str, float]] = []

    def forward(self, image: Tensor) -> dict[str, Tensor]:
        """Reconstruct (B, C, X, Y, Z): the VQ-GAN's dict (``reconstruction``, ``commitment_loss``, …)."""
        return self.vqgan(image)

    def views(self, real: Tensor, fake: Tensor) -> tuple[list[Tensor], list[Tensor]]:
        """``[slices, volumes]`` of ``real`` and of ``fake`` (B, C, X, Y, Z): one random axial slice (B, C, X, Y) per
        volume, at the same index in both, and the volumes themselves."""
        index = torch.randint(real.shape[-1], (len(real),), generator=self._rng).to(real.device)
        volume = torch.arange(len(real), device=real.device)
        # Advanced indices around slices put their dimension first: (B, C, X, Y).
        return [real[volume, ..., index], real], [fake[volume, ..., index], fake]

    def discriminate(self, views: list[Tensor]) -> list[list[Tensor]]:
        """Every layer's output of the slice discriminator on ``views[0]`` and of the volume one on ``views[1]``."""
        return [self.slice_discriminator(views[0]), self.volume_discriminator(views[1])]

    def adversarial_losses(self, real_outputs: list[list[Tensor]], fake_views: list[Tensor]) -> dict[str, Tensor]:
        """Hinge generator loss and feature matching of ``fake_views``; the discriminators' parameters get no
        gradient from them."""
        discriminators = (self.slice_discriminator, self.volume_discriminator)
        for discriminator in discriminators:
            discriminator.requires_grad_(False)
        fake_outputs = self.discriminate(fake_views)
        for discriminator in discriminators:
            discriminator.requires_grad_(True)
        pairs = list(zip(real_outputs, fake_outputs, strict=True))
        return {
            "gan": sum(hinge_generator_loss(fake[-1]) for _, fake in pairs),
            "feature": sum(feature_matching_loss(real, fake) for real, fake in pairs),
        }

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self._steps = None  # read steps_done again once the checkpoint's buffers are in

    def training_step(self, batch: dict, batch_index: int) -> None:
        optimizer_ae, optimizer_d = self.optimizers()
        real = _image(batch)
        out = self.vqgan(real)
        losses = {"l1": F.l1_loss(out["reconstruction"].float(), real.float()), "commitment": out["commitment_loss"]}
        losses["loss_ae"] = self.l1_weight * losses["l1"] + losses["commitment"]
        if self._steps is None:  # the checkpointed counter, read once (a host sync), then counted on the host
            self._steps = int(self.steps_done)
        gan_started = self._steps >= self.gan_start
        if gan_started:
            real_views, fake_views = self.views(real, out["reconstruction"])
            real_outputs = self.discriminate(real_views)  # with the discriminators' graph, for their step below
            losses |= self.adversarial_losses(real_outputs, fake_views)
            adversarial = self.gan_weight * losses["gan"] + self.feature_weight * losses["feature"]
            losses["loss_ae"] = losses["loss_ae"] + adversarial
        self._step(optimizer_ae, losses["loss_ae"])
        self.steps_done.add_(1)
        self._steps += 1
        if gan_started:
            fake_outputs = self.discriminate([view.detach() for view in fake_views])
            pairs = zip(real_outputs, fake_outputs, strict=True)
            losses["loss_d"] = sum(hinge_discriminator_loss(real[-1], fake[-1]) for real, fake in pairs)
            self._step(optimizer_d, losses["loss_d"])
        logged = {f"train/{name}": value.detach() for name, value in losses.items()}
        logged["train/perplexity"] = out["perplexity"].detach()
        self.log_dict(logged, on_step=True, on_epoch=True, batch_size=len(real))

    def _step(self, optimizer, loss: Tensor) -> None:
        optimizer.zero_grad(set_to_none=True)
        self.manual_backward(loss)
        optimizer.step()

    def validation_step(self, batch: dict, batch_index: int) -> None:
        from brainlearn.metrics_synthesis import synthesis_metrics

        real = _image(batch)
        out = self.vqgan(real)
        fake, real = out["reconstruction"].float().cpu().numpy(), real.float().cpu().numpy()
        perplexity = float(out["perplexity"])
        for fake_volume, real_volume in zip(fake, real, strict=True):
            scores = [synthesis_metrics(f, r) for f, r in zip(fake_volume, real_volume, strict=True)]  # per channel
            self._val.append(
                {
                    "l1": float(np.abs(fake_volume - real_volume).mean()),
                    "psnr": float(np.mean([s["psnr"] for s in scores])),
                    "ssim": float(np.mean([s["ssim"] for s in scores])),
                    "perplexity": perplexity,
                }
            )

    def on_validation_epoch_end(self) -> None:
        if not self._val:
            return
        for name in ("l1", "psnr", "ssim", "perplexity"):
            self.log(f"val/{name}", float(np.mean([scores[name] for scores in self._val])), prog_bar=name == "l1")
        self._val.clear()

    def configure_optimizers(self):
        discriminators = [*self.slice_discriminator.parameters(), *self.volume_discriminator.parameters()]
        optimizer_ae = adam(self.vqgan.parameters(), lr=self.lr, betas=self.betas)
        optimizer_d = adam(discriminators, lr=self.lr, betas=self.betas)
        return [optimizer_ae, optimizer_d]


def _image(batch: dict) -> Tensor:
    """The batch's ``image`` (B, C, X, Y, Z), or a BrainlearnError saying what came instead."""
    image = batch.get("image") if isinstance(batch, dict) else None
    if not isinstance(image, Tensor) or image.dim() != 5:
        got = f"keys {sorted(batch)}" if isinstance(batch, dict) else type(batch).__name__
        shape = f", image of shape {tuple(image.shape)}" if isinstance(image, Tensor) else ""
        raise BrainlearnError(
            f"VQGANModule takes batches with an 'image' tensor (B, C, X, Y, Z) in [-1, 1], got {got}{shape}; "
            "load the data with a dataset that yields {'image': ...}."
        )
    return image
