"""Latent diffusion: the cosine schedule, DDPM/DDIM arithmetic, seeded sampling, guidance, learning, and the EMA."""

import math

import pytest
import torch
from torch.utils.data import DataLoader

from brainlearn.errors import BrainlearnError
from brainlearn.methods.diffusion_process import GaussianDiffusion
from brainlearn.methods.latent_diffusion import LatentDiffusionModule, update_ema
from brainlearn.models.denoiser import Denoiser3D
from brainlearn.trainer import fit

TINY = {"channels": 8, "multipliers": (1, 2), "heads": 2, "head_channels": 4, "groups": 4}
SHAPE = (2, 4, 8, 8, 3)


def _denoiser(**options) -> Denoiser3D:
    torch.manual_seed(0)
    return Denoiser3D(4, **{**TINY, **options})


def _randn(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _cosine_alphas_cumprod(T: int, s: float = 0.008) -> list[float]:
    """Nichol & Dhariwal 2021, eq. 17, with β_t = 1 − ᾱ_t/ᾱ_{t−1} clipped at 0.999, in plain Python."""
    f = [math.cos((u / T + s) / (1 + s) * math.pi / 2) ** 2 for u in range(T + 1)]
    out, product = [], 1.0
    for t in range(T):
        product *= 1 - min(1 - f[t + 1] / f[t], 0.999)
        out.append(product)
    return out


def test_the_schedule_is_the_cosine_formula():
    process = GaussianDiffusion(_denoiser(), timesteps=300)
    expected = torch.tensor(_cosine_alphas_cumprod(300), dtype=torch.float64)
    torch.testing.assert_close(process.alphas_cumprod, expected, rtol=1e-12, atol=1e-15)
    f = [math.cos((u / 300 + 0.008) / 1.008 * math.pi / 2) ** 2 for u in (0, 1, 150)]
    assert process.alphas_cumprod[0].item() == pytest.approx(f[1] / f[0], rel=1e-12)  # unclipped: f(t + 1)/f(0)
    assert process.alphas_cumprod[149].item() == pytest.approx(f[2] / f[0], rel=1e-12)
    assert process.alphas_cumprod[-1] < 1e-6  # the last β, 1 − f(T)/f(T − 1) = 1, is clipped to 0.999


def test_q_sample_is_the_closed_form():
    process = GaussianDiffusion(_denoiser(), timesteps=300)
    x0, noise, t = _randn(*SHAPE, seed=1), _randn(*SHAPE, seed=2), torch.tensor([0, 217])
    alpha_bar = torch.tensor(_cosine_alphas_cumprod(300), dtype=torch.float64)[t].view(-1, 1, 1, 1, 1)
    torch.testing.assert_close(process.q_sample(x0, t, noise), alpha_bar.sqrt() * x0 + (1 - alpha_bar).sqrt() * noise)


@pytest.mark.parametrize("clip", [None, 1.0])
def test_ddim_with_all_steps_and_eta_one_is_the_ddpm_posterior(clip):
    process = GaussianDiffusion(_denoiser(), timesteps=40)
    assert process.ddim_timesteps(40) == list(range(39, -1, -1))
    x_t, predicted_noise = _randn(*SHAPE, seed=3), _randn(*SHAPE, seed=4)  # a fixed network output
    for t in (39, 20, 1, 0):
        mean, std = process.ddim_mean_std(x_t, predicted_noise, t, t - 1, eta=1.0, clip=clip)
        alpha_bar = process.alphas_cumprod[t]
        x0 = (x_t - (1 - alpha_bar).sqrt() * predicted_noise) / alpha_bar.sqrt()
        x0 = x0.clamp(-1, 1) if clip else x0
        steps = torch.tensor([t, t])
        torch.testing.assert_close(mean, process.posterior_mean(x_t, steps, x0))
        torch.testing.assert_close(std**2, process.posterior_variance(steps)[0])


def test_sampling_is_reproducible_for_a_seed_and_differs_between_seeds():
    process = GaussianDiffusion(_denoiser().eval(), timesteps=20)

    def draw(seed, eta):
        return process.sample(SHAPE, steps=4, eta=eta, generator=torch.Generator().manual_seed(seed))

    for eta in (0.0, 1.0):
        first = draw(0, eta)
        assert first.shape == SHAPE and torch.equal(first, draw(0, eta))
        assert (first - draw(1, eta)).abs().max() > 1e-3
    assert (draw(0, 0.0) - draw(0, 1.0)).abs().max() > 1e-3


def test_guidance_one_is_the_conditional_model_and_other_weights_extrapolate():
    process = GaussianDiffusion(_denoiser(num_classes=2, age=True).eval(), timesteps=20)
    x, t = _randn(*SHAPE, seed=5).float(), torch.tensor([7, 7])
    label, age = torch.tensor([1, 0]), torch.tensor([80.0, 55.0])
    with torch.no_grad():
        conditional = process.denoiser(x, t, label, age)
        unconditional = process.denoiser(x, t)
        assert torch.equal(process.guided_noise(x, t, label, age, guidance=1.0), conditional)
        guided = process.guided_noise(x, t, label, age, guidance=3.0)
    torch.testing.assert_close(guided, unconditional + 3 * (conditional - unconditional), atol=1e-5, rtol=1e-4)

    def draw(guidance):
        generator = torch.Generator().manual_seed(0)
        return process.sample(SHAPE, steps=3, generator=generator, label=1, age=70.0, guidance=guidance)

    # the batched path at w ≈ 1: batch-size rounding (1e-6) grows through 1/√ᾱ at the noisiest step
    assert torch.allclose(draw(1.0), draw(1.0 + 1e-7), atol=1e-3)
    assert (draw(1.0) - draw(3.0)).abs().max() > 1e-3


def test_condition_dropout_replaces_label_and_age_together():
    label, age = torch.arange(1000) % 3, torch.full((1000,), 70.0)
    torch.manual_seed(0)
    dropped_label, dropped_age = GaussianDiffusion(_denoiser(), condition_dropout=0.3).drop_conditions(label, age)
    assert torch.equal(dropped_label == -1, dropped_age.isnan())
    assert 0.25 < (dropped_label == -1).float().mean() < 0.35
    kept = GaussianDiffusion(_denoiser(), condition_dropout=0.0).drop_conditions(label, age)
    assert kept[0] is label and kept[1] is age


def test_bad_settings_are_refused():
    process = GaussianDiffusion(_denoiser(), timesteps=20)
    with pytest.raises(BrainlearnError, match="from 1 to the 20 training timesteps, not 21"):
        process.sample(SHAPE, steps=21)
    with pytest.raises(BrainlearnError, match=r"one of \['l1', 'l2'\].*not 'huber'"):
        GaussianDiffusion(_denoiser(), loss="huber")


def test_the_training_loss_falls_on_a_tiny_latent_set():
    torch.manual_seed(0)
    grid = torch.linspace(-1, 1, 8)
    latents = torch.stack([torch.sin(3 * k * grid)[:, None, None] * grid[None, :, None] for k in (1, 2)])
    latents = latents.expand(2, 8, 8, 3)[:, None].repeat(1, 4, 1, 1, 1).clamp(-1, 1)  # (2, 4, 8, 8, 3)
    process = GaussianDiffusion(_denoiser(), timesteps=50)
    x0 = latents.repeat(4, 1, 1, 1, 1)
    t = torch.arange(0, 50, 50 // len(x0))[: len(x0)]
    noise = _randn(*x0.shape, seed=6).float()

    def fixed_loss():
        with torch.no_grad():
            return process.loss_at(x0, t, noise).item()

    before = fixed_loss()
    optimizer = torch.optim.Adam(process.parameters(), lr=3e-3)
    for _ in range(60):
        optimizer.zero_grad()
        process.loss(x0).backward()
        optimizer.step()
    assert fixed_loss() < 0.7 * before, (before, fixed_loss())


def test_the_ema_update_is_the_weighted_average():
    model, ema = torch.nn.Linear(3, 2), torch.nn.Linear(3, 2)
    expected = [0.9 * a + 0.1 * w for a, w in zip(ema.parameters(), model.parameters(), strict=True)]
    update_ema(ema, model, 0.9)
    for average, value in zip(ema.parameters(), expected, strict=True):
        torch.testing.assert_close(average, value.detach())
    update_ema(ema, model, 0.0)
    assert all(torch.equal(a, w) for a, w in zip(ema.parameters(), model.parameters(), strict=True))


def _batches(n: int) -> list[dict]:
    rng = torch.Generator().manual_seed(n)
    latent = torch.rand(n, 4, 8, 8, 3, generator=rng) * 2 - 1
    return [{"latent": latent[i], "label": i % 2 - (i == 0), "age": 60.0 + i} for i in range(n)]


@pytest.mark.parametrize(("ema_decay", "ema_start", "follows"), [(1.0, 0, "initial"), (0.5, 10, "trained")])
def test_the_module_trains_keeps_an_ema_in_its_checkpoint_and_samples(tmp_path, ema_decay, ema_start, follows):
    module = LatentDiffusionModule(
        _denoiser(num_classes=2, age=True), timesteps=20, lr=1e-3, ema_decay=ema_decay, ema_start=ema_start
    )
    initial = {k: v.clone() for k, v in module.diffusion.denoiser.state_dict().items()}
    loader = DataLoader(_batches(4), batch_size=2)
    settings = {"max_epochs": 1, "monitor": "val/loss", "progress_bar": False, "log_every_n_steps": 1}
    fit(module, tmp_path, settings, train_dataloaders=loader, val_dataloaders=loader)
    reference = initial if follows == "initial" else module.diffusion.denoiser.state_dict()
    assert all(torch.equal(value, reference[k]) for k, value in module.ema.denoiser.state_dict().items())
    saved = torch.load(tmp_path / "checkpoints" / "best.ckpt", weights_only=False)["state_dict"]
    assert any(key.startswith("ema.denoiser.") for key in saved) and "val/loss" in module.trainer.callback_metrics
    samples = module.sample(2, (4, 8, 8, 3), steps=2, generator=torch.Generator().manual_seed(0), label=1, age=70.0)
    assert samples.shape == (2, 4, 8, 8, 3) and not samples.requires_grad


def test_a_batch_condition_the_denoiser_was_not_built_for_is_ignored():
    batch = {"latent": torch.zeros(2, 4, 8, 8, 3), "label": torch.tensor([0, 1]), "age": torch.tensor([60.0, 70.0])}
    assert LatentDiffusionModule(_denoiser())._conditions(batch) == (None, None)
    label, age = LatentDiffusionModule(_denoiser(age=True))._conditions(batch)
    assert label is None and torch.equal(age, batch["age"])
