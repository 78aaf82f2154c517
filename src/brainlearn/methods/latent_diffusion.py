"""Latent diffusion (document 003, Medical Diffusion): a denoiser learns DDPM on VQ-GAN latents, samples by DDIM.

Training follows document 003's public code: the noise-prediction L1 loss at a uniform random step of a cosine
schedule with T = 300 (:class:`~brainlearn.methods.diffusion_process.GaussianDiffusion`), Adam at 1e-4, and an
exponential moving average (EMA, decay 0.995) of the weights that validation and sampling use. New here: the
denoiser may be conditioned on diagnosis and age, each dropped at random (``condition_dropout``) so the same
network gives classifier-free guidance.

A batch is a dict with ``latent`` (B, E, x, y, z) normalized to [-1, 1], and optionally ``label`` (B,) long
(−1: unknown) and ``age`` (B,) float years (NaN: unknown); a condition the denoiser was not built for is ignored.
Validation measures the EMA network's loss at steps and noise drawn from a generator seeded by ``seed`` and the
batch index, the same every epoch, so ``val/loss`` (the checkpoint monitor, mode min) compares epochs fairly.
"""

from __future__ import annotations

import copy

import lightning
import torch
from torch import Tensor, nn

from brainlearn.errors import BrainlearnError
from brainlearn.fast import adam
from brainlearn.methods.diffusion_process import GaussianDiffusion


class LatentDiffusionModule(lightning.LightningModule):
    """Train ``denoiser`` as a latent diffusion model; keep and sample with its EMA copy.

    Args:
        denoiser: a noise-predicting network (:class:`~brainlearn.models.denoiser.Denoiser3D`).
        timesteps: diffusion steps T (300).
        loss: ``"l1"`` (document 003) or ``"l2"`` on the noise.
        lr: Adam learning rate (1e-4).
        ema_decay: d in ema ← d·ema + (1 − d)·w after each optimizer step (0.995).
        ema_start: optimizer steps during which the EMA copy just copies the weights.
        condition_dropout: probability of training a sample without its label and age (0.1).
        seed: seeds the validation steps and noise.

    Attributes:
        diffusion: the process around the trained denoiser.
        ema: the same process around the EMA copy of the denoiser (``ema.denoiser``), saved in checkpoints.
    """

    def __init__(
        self,
        denoiser: nn.Module,
        *,
        timesteps: int = 300,
        loss: str = "l1",
        lr: float = 1e-4,
        ema_decay: float = 0.995,
        ema_start: int = 0,
        condition_dropout: float = 0.1,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if not 0 <= ema_decay <= 1:
            raise BrainlearnError(f"ema_decay must lie in [0, 1] (document 003: 0.995), not {ema_decay!r}.")
        self.diffusion = GaussianDiffusion(
            denoiser, timesteps=timesteps, loss=loss, condition_dropout=condition_dropout
        )
        # The EMA copy wraps its own process (buffers only, derived from T) so that validation and sampling read
        # the same as training; its weights are ``ema.denoiser.*`` in the state_dict.
        self.ema = copy.deepcopy(self.diffusion).requires_grad_(False)
        self.lr, self.ema_decay, self.ema_start, self.seed = lr, ema_decay, ema_start, seed
        self._ema_step = -1

    def forward(self, x: Tensor, t: Tensor, label: Tensor | None = None, age: Tensor | None = None) -> Tensor:
        """The trained denoiser's noise prediction for noisy latents ``x`` (B, E, x, y, z) at steps ``t`` (B,)."""
        return self.diffusion.denoiser(x, t, label, age)

    def _conditions(self, batch: dict) -> tuple[Tensor | None, Tensor | None]:
        """The batch's label and age, each only if the denoiser takes it."""
        denoiser = self.diffusion.denoiser
        label = batch.get("label") if getattr(denoiser, "num_classes", 0) else None
        age = batch.get("age") if getattr(denoiser, "age", False) else None
        return label, None if age is None else age.float()

    def training_step(self, batch: dict, batch_index: int) -> Tensor:
        loss = self.diffusion.loss(batch["latent"], *self._conditions(batch))
        self.log("train/loss", loss.detach(), on_step=True, on_epoch=True, batch_size=len(batch["latent"]))
        return loss

    def on_train_batch_end(self, outputs, batch: dict, batch_index: int) -> None:
        # global_step counts optimizer steps: with gradient accumulation some batches end without one
        if self.global_step == self._ema_step:
            return
        self._ema_step = self.global_step
        update_ema(self.ema, self.diffusion, 0.0 if self.global_step <= self.ema_start else self.ema_decay)

    def validation_step(self, batch: dict, batch_index: int) -> None:
        latent = batch["latent"]
        generator = torch.Generator().manual_seed(self.seed + batch_index)
        t = torch.randint(0, self.diffusion.timesteps, (len(latent),), generator=generator).to(latent.device)
        noise = torch.randn(latent.shape, generator=generator).to(device=latent.device, dtype=latent.dtype)
        loss = self.ema.loss_at(latent, t, noise, *self._conditions(batch))
        self.log("val/loss", loss, on_epoch=True, prog_bar=True, batch_size=len(latent))

    def sample(
        self,
        n: int,
        latent_shape: tuple[int, ...],
        *,
        steps: int = 50,
        eta: float = 0.0,
        generator: torch.Generator | None = None,
        label: Tensor | int | None = None,
        age: Tensor | float | None = None,
        guidance: float = 1.0,
        clip: float | None = 1.0,
    ) -> Tensor:
        """``n`` latents (n, *latent_shape) from the EMA network by DDIM; see :meth:`GaussianDiffusion.sample`."""
        training = self.ema.training
        self.ema.eval()
        try:
            return self.ema.sample(
                (n, *latent_shape),
                steps=steps,
                eta=eta,
                generator=generator,
                label=label,
                age=age,
                guidance=guidance,
                clip=clip,
            )
        finally:
            self.ema.train(training)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return adam(self.diffusion.parameters(), lr=self.lr)


@torch.no_grad()
def update_ema(ema: nn.Module, model: nn.Module, decay: float) -> None:
    """ema ← decay·ema + (1 − decay)·model for every parameter (decay 0: an exact copy); buffers are copied."""
    for average, current in zip(ema.parameters(), model.parameters(), strict=True):
        if decay == 0:
            average.copy_(current)
        else:
            average.lerp_(current, 1 - decay)
    for average, current in zip(ema.buffers(), model.buffers(), strict=True):
        average.copy_(current)
