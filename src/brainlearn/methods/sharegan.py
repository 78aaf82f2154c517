"""ShareGAN: unpaired MRI↔PET synthesis with one generator and two discriminators (document 000, stages 1 and 2).

Each training step translates a batch of MRI and a batch of PET from other participants (unpaired) both ways with
the one :class:`~brainlearn.models.sharesynnet.ShareSynNet` (α 0: MRI→PET, α 1: PET→MRI) and back again:

- generator loss = least-squares GAN loss of both translations against their discriminators
  + ``cycle_weight`` · (|G(G(mri, 0), 1) − mri| + |G(G(pet, 1), 0) − pet|)  (L1, ×10 in the paper)
  + ``cycle_weight`` · ``identity_weight`` · (|G(pet, 0) − pet| + |G(mri, 1) − mri|);
  the identity weight is relative to the cycle weight, as in the CycleGAN code document 000 builds on (0.3);
- discriminator loss = ½ · LSGAN of real against a fake drawn from an image pool of the last 10 fakes, each way.

The six generator passes of a step run as two batched calls (per-sample α), which InstanceNorm makes identical to
six separate calls. Gradients are accumulated over ``accumulate`` batches (2 in the paper) before each optimizer
step; Adam (lr 2e-4, β (0.5, 0.999)) keeps its rate for ``decay_start`` epochs, then multiplies it by ``lr_decay``
after every epoch. Validation synthesizes the PET of paired validation sessions from their MRI and scores it
against the real PET (SSIM in 3D with data range 2, PSNR and MAE inside the brain): checkpoint selection and early
stopping watch that, not a stale training loss as the reference did.
"""

from __future__ import annotations

import lightning
import numpy as np
import torch
from torch import Tensor, nn
from torch.nn import functional as F

from brainlearn.fast import adam
from brainlearn.models.sharesynnet import MRI_TO_PET, PET_TO_MRI


class ImagePool:
    """The last ``size`` generated volumes; half of the queries swap the new fake for a stored one (Shrivastava 2017).

    Args:
        size: volumes kept (10 in document 000); 0 returns every fake unchanged.
        seed: seeds the draws.
    """

    def __init__(self, size: int = 10, seed: int = 0):
        self.size, self.images = size, []
        self._rng = np.random.default_rng(seed)

    def query(self, fakes: Tensor) -> Tensor:
        """A batch like ``fakes`` (B, ...), each volume either itself or a stored older fake (then stored instead)."""
        if self.size == 0:
            return fakes
        out = []
        for fake in fakes.detach():
            if len(self.images) < self.size:
                self.images.append(fake)
                out.append(fake)
            elif self._rng.random() < 0.5:
                k = int(self._rng.integers(self.size))
                out.append(self.images[k])
                self.images[k] = fake
            else:
                out.append(fake)
        return torch.stack(out)


def lsgan_loss(scores: Tensor, real: bool) -> Tensor:
    """Least-squares GAN loss (Mao et al. 2017): mean of (score − 1)² for real targets, score² for fake ones."""
    return F.mse_loss(scores.float(), torch.full_like(scores.float(), 1.0 if real else 0.0))


def decay_after(decay_start: int, lr_decay: float):
    """The factor of the learning rate at an epoch: 1 for ``decay_start`` epochs, then ×``lr_decay`` per epoch."""
    return lambda epoch: lr_decay ** max(0, epoch + 1 - decay_start)


def _alphas(like: Tensor, values: list[float], repeat: int) -> Tensor:
    """Each of ``values`` ``repeat`` times, as a tensor made on ``like``'s device (no host-to-device copy)."""
    out = like.new_empty(len(values) * repeat)
    for k, value in enumerate(values):
        out[k * repeat : (k + 1) * repeat] = value
    return out


class ShareGANModule(lightning.LightningModule):
    """Train ``generator`` with ``discriminator_pet`` and ``discriminator_mri`` on unpaired ``mri`` / ``pet`` batches.

    Args:
        generator: a ShareSynNet (or any ``(x, alpha) → x`` network).
        discriminator_pet, discriminator_mri: score real against synthesized PET and MRI.
        cycle_weight: weight of each cycle L1 loss (10).
        identity_weight: identity loss weight, relative to ``cycle_weight`` (0.3).
        pool_size: fakes kept by each image pool (10).
        lr, betas: Adam settings of the generator and of the discriminators.
        accumulate: batches whose gradients are summed before an optimizer step (2).
        decay_start: epochs at the full learning rate (15); then ``lr_decay`` (0.95) per epoch.
        seed: seeds the image pools.
    """

    def __init__(
        self,
        generator: nn.Module,
        discriminator_pet: nn.Module,
        discriminator_mri: nn.Module,
        *,
        cycle_weight: float = 10.0,
        identity_weight: float = 0.3,
        pool_size: int = 10,
        lr: float = 2e-4,
        betas: tuple[float, float] = (0.5, 0.999),
        accumulate: int = 2,
        decay_start: int = 15,
        lr_decay: float = 0.95,
        seed: int = 0,
    ):
        super().__init__()
        self.automatic_optimization = False
        self.generator, self.discriminator_pet, self.discriminator_mri = generator, discriminator_pet, discriminator_mri
        self.cycle_weight, self.identity_weight = cycle_weight, identity_weight
        self.lr, self.betas, self.accumulate = lr, tuple(betas), accumulate
        self.decay_start, self.lr_decay = decay_start, lr_decay
        self.pools = {"pet": ImagePool(pool_size, seed), "mri": ImagePool(pool_size, seed + 1)}
        self._val: list[dict[str, float]] = []

    def forward(self, image: Tensor, alpha: float = MRI_TO_PET) -> Tensor:
        """Translate (B, 1, X, Y, Z): α 0 MRI→PET, α 1 PET→MRI."""
        return self.generator(image, alpha)

    def translate_both_ways(self, mri: Tensor, pet: Tensor) -> dict[str, Tensor]:
        """Translations, identities and cycles of one unpaired batch, in two batched generator calls."""
        b = len(mri)
        alphas = _alphas(mri, [MRI_TO_PET, MRI_TO_PET, PET_TO_MRI, PET_TO_MRI], b)
        fake_pet, same_pet, fake_mri, same_mri = self.generator(torch.cat([mri, pet, pet, mri]), alphas).split(b)
        alphas = _alphas(mri, [PET_TO_MRI, MRI_TO_PET], b)
        cycled_mri, cycled_pet = self.generator(torch.cat([fake_pet, fake_mri]), alphas).split(b)
        return {
            "fake_pet": fake_pet,
            "fake_mri": fake_mri,
            "same_pet": same_pet,
            "same_mri": same_mri,
            "cycled_mri": cycled_mri,
            "cycled_pet": cycled_pet,
        }

    def generator_losses(self, mri: Tensor, pet: Tensor, out: dict[str, Tensor]) -> dict[str, Tensor]:
        """GAN, cycle and identity losses of the generator (the discriminators' parameters get no gradient)."""
        for discriminator in (self.discriminator_pet, self.discriminator_mri):
            discriminator.requires_grad_(False)
        gan = lsgan_loss(self.discriminator_pet(out["fake_pet"]), True)
        gan = gan + lsgan_loss(self.discriminator_mri(out["fake_mri"]), True)
        for discriminator in (self.discriminator_pet, self.discriminator_mri):
            discriminator.requires_grad_(True)
        cycle = F.l1_loss(out["cycled_mri"].float(), mri.float()) + F.l1_loss(out["cycled_pet"].float(), pet.float())
        identity = F.l1_loss(out["same_pet"].float(), pet.float()) + F.l1_loss(out["same_mri"].float(), mri.float())
        total = gan + self.cycle_weight * cycle + self.cycle_weight * self.identity_weight * identity
        return {"loss_g": total, "gan": gan, "cycle": cycle, "identity": identity}

    def discriminator_loss(self, mri: Tensor, pet: Tensor, out: dict[str, Tensor]) -> Tensor:
        """½ LSGAN of each discriminator: its real volumes against pooled fakes."""
        loss = torch.zeros((), device=mri.device)
        for name, real, discriminator in (("pet", pet, self.discriminator_pet), ("mri", mri, self.discriminator_mri)):
            fake = self.pools[name].query(out[f"fake_{name}"])
            loss = loss + 0.5 * (lsgan_loss(discriminator(real), True) + lsgan_loss(discriminator(fake), False))
        return loss

    def on_train_epoch_start(self) -> None:
        dataset = getattr(self.trainer.train_dataloader, "dataset", None)
        if hasattr(dataset, "set_epoch"):  # unpaired partners drawn anew each epoch
            dataset.set_epoch(self.current_epoch)

    def training_step(self, batch: dict, batch_index: int) -> None:
        optimizer_g, optimizer_d = self.optimizers()
        mri, pet = batch["mri"], batch["pet"]
        out = self.translate_both_ways(mri, pet)
        losses = self.generator_losses(mri, pet, out)
        self.manual_backward(losses["loss_g"] / self.accumulate)
        loss_d = self.discriminator_loss(mri, pet, out)
        self.manual_backward(loss_d / self.accumulate)
        if self._stepping(batch_index):
            for optimizer in (optimizer_g, optimizer_d):
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
        logged = {f"train/{name}": value.detach() for name, value in losses.items()} | {"train/loss_d": loss_d.detach()}
        self.log_dict(logged, on_step=True, on_epoch=True, batch_size=len(mri), prog_bar=False)

    def _stepping(self, batch_index: int) -> bool:
        """Step after every ``accumulate`` batches and after the epoch's last batch."""
        last = batch_index + 1 == self.trainer.num_training_batches
        return (batch_index + 1) % self.accumulate == 0 or last

    def on_train_epoch_end(self) -> None:
        for schedule in self.lr_schedulers():
            schedule.step()

    def validation_step(self, batch: dict, batch_index: int) -> None:
        from brainlearn.metrics_synthesis import synthesis_metrics

        fake_pet = self.generator(batch["mri"], MRI_TO_PET).float().cpu().numpy()
        real_pet = batch["pet"].float().cpu().numpy()
        for fake, real in zip(fake_pet[:, 0], real_pet[:, 0], strict=True):
            self._val.append(synthesis_metrics(fake, real))

    def on_validation_epoch_end(self) -> None:
        if not self._val:
            return
        for name in ("ssim", "psnr", "mae"):
            self.log(f"val/{name}", float(np.mean([scores[name] for scores in self._val])), prog_bar=name == "ssim")
        self._val.clear()

    def configure_optimizers(self):
        discriminators = [*self.discriminator_pet.parameters(), *self.discriminator_mri.parameters()]
        optimizer_g = adam(self.generator.parameters(), lr=self.lr, betas=self.betas)
        optimizer_d = adam(discriminators, lr=self.lr, betas=self.betas)
        factor = decay_after(self.decay_start, self.lr_decay)
        schedules = [torch.optim.lr_scheduler.LambdaLR(optimizer, factor) for optimizer in (optimizer_g, optimizer_d)]
        return [optimizer_g, optimizer_d], schedules
