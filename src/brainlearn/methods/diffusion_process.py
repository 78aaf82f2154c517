"""The Gaussian diffusion process around a noise-predicting network: DDPM training, DDIM sampling (document 003).

Forward process (Ho et al. 2020): ``x_t = √ᾱ_t·x0 + √(1 − ᾱ_t)·ε`` with the cosine schedule of Nichol & Dhariwal
2021 (``ᾱ_t = f(t + 1)/f(0)``, ``f(u) = cos²((u/T + s)/(1 + s)·π/2)``, s = 0.008, each β_t clipped at 0.999);
document 003 trains with T = 300 and an L1 loss on the predicted noise. Sampling is DDIM (Song et al. 2021, eqs.
12 and 16) on ``steps`` evenly spaced timesteps: η = 0 is deterministic given the initial noise, η = 1 with
steps = T is DDPM's ancestral sampling. Classifier-free guidance (Ho & Salimans 2021): the network also learns the
unconditional model from conditions dropped at random, and ``ε = ε_uncond + w·(ε_cond − ε_uncond)``.

The schedule and the steps are written here rather than taken from MONAI's DDPM/DDIM schedulers, whose cosine
schedule is the same (to float32 precision): MONAI's DDIM step goes to ``t − T // steps`` while its timesteps are
rounded from a linspace, so the two disagree unless ``steps`` divides T (7 steps of T = 300: a step from 299 lands
on 257, the next call is at 249), and its ``add_noise`` casts the stored ᾱ to the latents' dtype in place (bf16
would spoil the schedule). Here ᾱ is kept in float64 and each step goes to the next listed timestep.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from brainlearn.errors import BrainlearnError

LOSSES = {"l1": F.l1_loss, "l2": F.mse_loss}


def cosine_alphas_cumprod(timesteps: int, s: float = 0.008, max_beta: float = 0.999) -> Tensor:
    """ᾱ_t for t = 0 … T − 1 (float64) of the cosine schedule, from β_t = 1 − ᾱ_t/ᾱ_{t−1} clipped at ``max_beta``."""
    u = torch.arange(timesteps + 1, dtype=torch.float64) / timesteps
    f = torch.cos((u + s) / (1 + s) * math.pi / 2) ** 2
    betas = (1 - f[1:] / f[:-1]).clamp(max=max_beta)
    return torch.cumprod(1 - betas, dim=0)


def _expand(values: Tensor, like: Tensor) -> Tensor:
    """Per-sample ``values`` (B,) as (B, 1, …, 1) in ``like``'s dtype, to scale a batch like ``like``."""
    return values.to(like.dtype).view(-1, *([1] * (like.dim() - 1)))


def _cat(first: Tensor | None, second: Tensor | None) -> Tensor | None:
    return None if first is None or second is None else torch.cat([first, second])


def _randn(shape: tuple[int, ...], generator: torch.Generator | None, device: torch.device) -> Tensor:
    """Standard normal noise drawn on the generator's own device, then moved (a CPU generator: same noise anywhere)."""
    if generator is None:
        return torch.randn(shape, device=device)
    return torch.randn(shape, generator=generator, device=generator.device).to(device)


def _as_condition(value: Tensor | float | None, n: int, dtype: torch.dtype, device: torch.device) -> Tensor | None:
    """A (n,) tensor from one number for all samples or from one value per sample; None stays None."""
    if value is None:
        return None
    if isinstance(value, Tensor):
        return value.to(device=device, dtype=dtype)
    return torch.full((n,), value, dtype=dtype, device=device)


class GaussianDiffusion(nn.Module):
    """A DDPM-trained, DDIM-sampled diffusion process wrapping ``denoiser(x_t, t, label, age) → ε``.

    Args:
        denoiser: predicts the noise; takes (B, C, ...) latents, (B,) steps and optional (B,) label and age
            (:class:`~brainlearn.models.denoiser.Denoiser3D`).
        timesteps: T, the number of diffusion steps (300 in document 003).
        loss: ``"l1"`` (document 003) or ``"l2"`` between predicted and true noise.
        condition_dropout: probability that a training sample's label and age are both replaced by "unknown"
            (−1 / NaN), so the same network learns the unconditional model for classifier-free guidance.
    """

    def __init__(
        self, denoiser: nn.Module, *, timesteps: int = 300, loss: str = "l1", condition_dropout: float = 0.1
    ) -> None:
        super().__init__()
        if loss not in LOSSES:
            raise BrainlearnError(f"diffusion loss must be one of {sorted(LOSSES)} (document 003: 'l1'), not {loss!r}.")
        if isinstance(timesteps, bool) or not isinstance(timesteps, int) or timesteps < 1:
            raise BrainlearnError(f"timesteps must be a positive integer (document 003: 300), not {timesteps!r}.")
        if not 0 <= condition_dropout <= 1:
            raise BrainlearnError(f"condition_dropout is a probability in [0, 1], not {condition_dropout!r}.")
        self.denoiser, self.timesteps, self.loss_name = denoiser, timesteps, loss
        self.condition_dropout = condition_dropout
        # ᾱ with ᾱ_{−1} = 1 in front: index t + 1 serves t = −1, the clean end of the last DDIM step. Derived from
        # ``timesteps``, so not saved in checkpoints.
        padded = torch.cat([torch.ones(1, dtype=torch.float64), cosine_alphas_cumprod(timesteps)])
        self.register_buffer("padded_alphas_cumprod", padded, persistent=False)

    @property
    def alphas_cumprod(self) -> Tensor:
        """ᾱ_t for t = 0 … T − 1, (T,) float64."""
        return self.padded_alphas_cumprod[1:]

    def alpha_bar(self, t: Tensor | int) -> Tensor:
        """ᾱ_t (float64, the shape of ``t``) for steps in [−1, T); ᾱ_{−1} = 1."""
        return self.padded_alphas_cumprod[t + 1]

    def q_sample(self, x0: Tensor, t: Tensor, noise: Tensor) -> Tensor:
        """``x_t = √ᾱ_t·x0 + √(1 − ᾱ_t)·noise`` for clean latents ``x0`` (B, C, ...) at steps ``t`` (B,)."""
        alpha_bar = self.alpha_bar(t)
        return _expand(alpha_bar.sqrt(), x0) * x0 + _expand((1 - alpha_bar).sqrt(), x0) * noise

    def posterior_mean(self, x_t: Tensor, t: Tensor, x0: Tensor) -> Tensor:
        """Mean of q(x_{t−1} | x_t, x0) (Ho et al. 2020, eq. 7), (B, C, ...) like ``x_t``; ``t`` (B,)."""
        alpha_bar, alpha_bar_prev = self.alpha_bar(t), self.alpha_bar(t - 1)
        alpha = alpha_bar / alpha_bar_prev
        x0_weight = alpha_bar_prev.sqrt() * (1 - alpha) / (1 - alpha_bar)
        x_t_weight = alpha.sqrt() * (1 - alpha_bar_prev) / (1 - alpha_bar)
        return _expand(x0_weight, x_t) * x0 + _expand(x_t_weight, x_t) * x_t

    def posterior_variance(self, t: Tensor) -> Tensor:
        """Variance β̃_t = β_t·(1 − ᾱ_{t−1})/(1 − ᾱ_t) of q(x_{t−1} | x_t, x0), float64 shaped like ``t``."""
        alpha_bar, alpha_bar_prev = self.alpha_bar(t), self.alpha_bar(t - 1)
        return (1 - alpha_bar / alpha_bar_prev) * (1 - alpha_bar_prev) / (1 - alpha_bar)

    def loss(self, x0: Tensor, label: Tensor | None = None, age: Tensor | None = None) -> Tensor:
        """The training loss of clean latents ``x0`` (B, C, ...) at uniform random steps, with condition dropout."""
        t = torch.randint(0, self.timesteps, (len(x0),), device=x0.device)
        label, age = self.drop_conditions(label, age)
        return self.loss_at(x0, t, torch.randn_like(x0), label, age)

    def loss_at(
        self, x0: Tensor, t: Tensor, noise: Tensor, label: Tensor | None = None, age: Tensor | None = None
    ) -> Tensor:
        """The loss between the network's noise prediction at ``q_sample(x0, t, noise)`` and ``noise``."""
        predicted = self.denoiser(self.q_sample(x0, t, noise), t, label, age)
        return LOSSES[self.loss_name](predicted.float(), noise.float())

    def drop_conditions(self, label: Tensor | None, age: Tensor | None) -> tuple[Tensor | None, Tensor | None]:
        """Label → −1 and age → NaN together for a random ``condition_dropout`` share of the samples."""
        given = label if label is not None else age
        if given is None or self.condition_dropout == 0:
            return label, age
        drop = torch.rand(len(given), device=given.device) < self.condition_dropout
        if label is not None:
            label = label.masked_fill(drop, -1)
        if age is not None:
            age = age.float().masked_fill(drop, math.nan)
        return label, age

    def guided_noise(
        self, x: Tensor, t: Tensor, label: Tensor | None = None, age: Tensor | None = None, guidance: float = 1.0
    ) -> Tensor:
        """ε = ε_uncond + ``guidance``·(ε_cond − ε_uncond), both from one batched call; plain ε_cond at 1."""
        if guidance == 1 or (label is None and age is None):
            return self.denoiser(x, t, label, age)
        no_label = None if label is None else torch.full_like(label, -1)
        no_age = None if age is None else torch.full_like(age, math.nan)
        both = self.denoiser(torch.cat([x, x]), torch.cat([t, t]), _cat(label, no_label), _cat(age, no_age))
        conditional, unconditional = both.chunk(2)
        return unconditional + guidance * (conditional - unconditional)

    def ddim_mean_std(
        self, x_t: Tensor, noise: Tensor, t: int, t_next: int, *, eta: float = 0.0, clip: float | None = 1.0
    ) -> tuple[Tensor, Tensor]:
        """Mean and standard deviation of x at step ``t_next`` < ``t`` given x_t and the predicted ``noise``.

        DDIM, Song et al. 2021, eqs. 12 and 16: x0 = (x_t − √(1 − ᾱ_t)·ε)/√ᾱ_t (clipped to [−clip, clip] unless
        ``clip`` is None, ε then re-derived from it), σ² = η²·(1 − ᾱ_next)/(1 − ᾱ_t)·(1 − ᾱ_t/ᾱ_next),
        mean = √ᾱ_next·x0 + √(1 − ᾱ_next − σ²)·ε. ``t_next`` = −1 ends at the clean latent.
        """
        alpha_bar, alpha_bar_next = self.alpha_bar(t), self.alpha_bar(t_next)
        x0 = (x_t - (1 - alpha_bar).sqrt().to(x_t.dtype) * noise) / alpha_bar.sqrt().to(x_t.dtype)
        if clip is not None:
            x0 = x0.clamp(-clip, clip)
            noise = (x_t - alpha_bar.sqrt().to(x_t.dtype) * x0) / (1 - alpha_bar).sqrt().to(x_t.dtype)
        variance = eta**2 * (1 - alpha_bar_next) / (1 - alpha_bar) * (1 - alpha_bar / alpha_bar_next)
        direction = (1 - alpha_bar_next - variance).clamp(min=0).sqrt()
        mean = alpha_bar_next.sqrt().to(x_t.dtype) * x0 + direction.to(x_t.dtype) * noise
        return mean, variance.sqrt().to(x_t.dtype)

    def ddim_timesteps(self, steps: int) -> list[int]:
        """``steps`` evenly spaced steps from T − 1 down to 0 (all of them when ``steps`` = T)."""
        if isinstance(steps, bool) or not isinstance(steps, int) or not 1 <= steps <= self.timesteps:
            raise BrainlearnError(
                f"sampling steps must be an integer from 1 to the {self.timesteps} training timesteps, not {steps!r}."
            )
        return torch.linspace(self.timesteps - 1, 0, steps, dtype=torch.float64).round().long().tolist()

    @torch.no_grad()
    def sample(
        self,
        shape: tuple[int, ...],
        *,
        steps: int,
        eta: float = 0.0,
        generator: torch.Generator | None = None,
        label: Tensor | int | None = None,
        age: Tensor | float | None = None,
        guidance: float = 1.0,
        clip: float | None = 1.0,
    ) -> Tensor:
        """Latents of ``shape`` (n, C, ...) drawn by DDIM from noise; every random draw comes from ``generator``.

        Args:
            shape: (n, C, X, Y, Z) of the latents.
            steps: DDIM steps, 1 to T.
            eta: η; 0 deterministic DDIM, 1 with ``steps`` = T DDPM.
            generator: a seeded generator (on any device): the same seed gives the same latents.
            label: a class index for all samples or (n,) of them; −1 or None: no label.
            age: an age in years for all samples or (n,) of them; NaN or None: no age.
            guidance: classifier-free guidance weight w (1: the conditional model alone; 0: the unconditional one).
            clip: clip each predicted x0 to [−clip, clip], the range of the latents (1 for codebook-normalized
                ones); None leaves it. Near T, x0 = (x_t − √(1 − ᾱ_t)·ε)/√ᾱ_t divides the network's error by
                √ᾱ_t (about 1.6e-4 at the cosine schedule's last step), so unclipped samples can diverge.

        Returns:
            (n, C, X, Y, Z) latents in about [-1, 1].
        """
        if eta < 0:
            raise BrainlearnError(f"eta must be 0 (DDIM) or more (1: DDPM), not {eta!r}.")
        device = self.padded_alphas_cumprod.device
        times = self.ddim_timesteps(steps)
        label = _as_condition(label, shape[0], torch.long, device)
        age = _as_condition(age, shape[0], torch.float32, device)
        x = _randn(tuple(shape), generator, device)
        for t, t_next in zip(times, [*times[1:], -1], strict=True):
            noise = self.guided_noise(x, torch.full((shape[0],), t, device=device), label, age, guidance)
            x, std = self.ddim_mean_std(x, noise, t, t_next, eta=eta, clip=clip)
            if eta > 0 and t_next >= 0:
                x = x + std * _randn(x.shape, generator, device)
        return x
