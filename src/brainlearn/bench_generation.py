"""``brainlearn bench --method vqgan | diffusion | sampling``: document 003's generative models, step by step.

Each times the method's step at ``--precision`` against the same step in plain float32 without autocast, on the
same networks and inputs in one run (with ``fp32`` the two are the same step, timed once: ratio 1). The networks
have document 003's architecture with random weights: a step costs the same whatever the weights.

Reference figures (document 003, H100): VQ-GAN step at 64³, batch 2, fp16 mixed precision, 97 ms / 14.4 GiB;
denoiser training step on 8×32³ latents, batch 10, fp32, 165 ms; one 64³ sample by 250 DDIM steps ≈ 8.2 s.
"""

from __future__ import annotations

import logging
import platform
import time
from collections.abc import Callable
from typing import Any

from brainlearn.atomic import write_text
from brainlearn.errors import BrainlearnError

log = logging.getLogger(__name__)

COMPRESSION = 2  # VQ-GAN size reduction per axis: a 64³ volume is an 8×32³ latent
EMBEDDING_DIM = 8
N_CODES = 16384
TIMESTEPS = 300

# What an unset (None) --size, --batch, width and steps mean: document 003's sizes on a GPU (the reference figures
# were measured with them), sizes a CPU times in seconds. --size is the volume's edge; width is the VQ-GAN's first
# channels (vqgan; the discriminators get 4×) or the denoiser's (diffusion, sampling; the decoding VQ-GAN gets ¼).
DEFAULTS = {
    "vqgan": ({"size": 64, "batch": 2, "width": 16}, {"size": 32, "batch": 1, "width": 4}),
    "diffusion": ({"size": 64, "batch": 10, "width": 64}, {"size": 32, "batch": 2, "width": 8}),
    "sampling": (
        {"size": 64, "batch": 1, "width": 64, "steps": 250},
        {"size": 32, "batch": 1, "width": 8, "steps": 10},
    ),
}


def method_defaults(method: str) -> dict[str, Any]:
    """The settings of ``method`` that an unset config key stands for, on this machine's device ({} if none)."""
    import torch

    if method not in DEFAULTS:
        return {}
    on_gpu, on_cpu = DEFAULTS[method]
    return on_gpu if torch.cuda.is_available() else on_cpu


def bench_vqgan(config: dict[str, Any], run) -> dict[str, Any]:
    """One VQ-GAN training step with the GAN on (autoencoder and discriminator updates): ``VQGANModule``'s own
    ``training_step``, with Lightning's hooks replaced by the plain calls they make."""

    from brainlearn.methods.vqgan import VQGANModule
    from brainlearn.models.vqgan import VQGAN3D, build_discriminators

    size, batch, width = config["size"], config["batch"], config["width"]
    if size % COMPRESSION or size < 8:
        raise BrainlearnError(f"bench vqgan: --size must be even and at least 8, not {size}.")
    device = _device()
    vqgan = VQGAN3D(1, channels=width, downsample=COMPRESSION, embedding_dim=EMBEDDING_DIM, n_codes=N_CODES)
    layers = min(3, (size // 3).bit_length() - 1)  # each discriminator needs 3·2^layers voxels per axis
    discriminators = build_discriminators(1, channels=4 * width, layers=layers)
    module = VQGANModule(vqgan, *discriminators, gan_start=0).to(device)
    optimizers = module.configure_optimizers()
    module.optimizers = lambda: optimizers
    module.manual_backward = lambda loss: loss.backward()
    module.log_dict = lambda *args, **kwargs: None
    images = {"image": _uniform((batch, 1, size, size, size), device)}

    def step(dtype) -> None:
        with _autocast(device, dtype):
            module.training_step(images, 0)

    rows = _time_arms(step, config, device)
    latent = f"{EMBEDDING_DIM}×{size // COMPRESSION}³"
    title = f"VQ-GAN step: {size}³, batch {batch}, channels {width}, latent {latent}, {N_CODES:,} codes"
    _write_training_table(run, "vqgan", title, config, rows, device)
    return _training_results("vqgan", rows)


def bench_diffusion(config: dict[str, Any], run) -> dict[str, Any]:
    """One latent denoiser training step: DDPM loss at random steps, backward, Adam, EMA update."""

    from brainlearn.methods.latent_diffusion import update_ema

    size, batch, width = config["size"], config["batch"], config["width"]
    module, device = _diffusion_module(config, "diffusion")
    optimizer = module.configure_optimizers()
    latents = _uniform((batch, EMBEDDING_DIM, *[size // COMPRESSION] * 3), device)

    def step(dtype) -> None:
        with _autocast(device, dtype):
            loss = module.diffusion.loss(latents)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        update_ema(module.ema, module.diffusion, module.ema_decay)

    rows = _time_arms(step, config, device)
    title = f"latent denoiser step: {EMBEDDING_DIM}×{size // COMPRESSION}³ latents, batch {batch}, channels {width}"
    _write_training_table(run, "diffusion", title, config, rows, device)
    return _training_results("diffusion", rows)


def bench_sampling(config: dict[str, Any], run) -> dict[str, Any]:
    """``batch`` volumes of ``size``³ drawn by ``steps`` DDIM steps of the EMA denoiser, then decoded by the VQ-GAN."""

    from brainlearn.bench import time_step
    from brainlearn.models.vqgan import VQGAN3D

    size, batch, steps = config["size"], config["batch"], config["steps"]
    if not 1 <= steps <= TIMESTEPS:
        raise BrainlearnError(f"bench sampling: steps must lie in 1 … {TIMESTEPS}, not {steps}.")
    module, device = _diffusion_module(config, "sampling")
    vqgan = VQGAN3D(1, channels=max(1, config["width"] // 4), downsample=COMPRESSION, embedding_dim=EMBEDDING_DIM)
    vqgan = vqgan.to(device).eval()
    latent_shape = (EMBEDDING_DIM, *[size // COMPRESSION] * 3)
    latents = _uniform((batch, *latent_shape), device)  # decoding costs the same for any latent

    def sample(dtype) -> None:
        with _autocast(device, dtype):
            module.sample(batch, latent_shape, steps=steps)

    def decode(dtype) -> None:
        with _autocast(device, dtype):
            vqgan.decode_latent(latents)

    rows = []
    for name, dtype in _arms(config["precision"]):
        sampled, peak = time_step(lambda d=dtype: sample(d), config["repeats"], device)
        decoded, decode_peak = time_step(lambda d=dtype: decode(d), config["repeats"], device)
        rows.append((name, (sampled + decoded) / batch, sampled / steps, decoded, max(peak, decode_peak)))
    _write_sampling_table(run, config, rows, device)
    (_, reference, reference_call, _, _), (_, volume, call, decoded, peak) = rows[0], rows[-1]
    return {
        "bench/sampling/ms_volume_reference": 1000 * reference,
        "bench/sampling/ms_volume": 1000 * volume,
        "bench/sampling/volumes_per_s": 1 / volume,
        "bench/sampling/ms_call_reference": 1000 * reference_call,
        "bench/sampling/ms_call": 1000 * call,
        "bench/sampling/ms_decode": 1000 * decoded,
        "bench/sampling/ratio": reference / volume,
        "bench/sampling/peak_gib": peak,
    }


def _diffusion_module(config: dict[str, Any], method: str):
    """Document 003's unconditional latent diffusion module (denoiser multipliers 1, 2, 4, 8) on the device."""
    import math

    from brainlearn.methods.latent_diffusion import LatentDiffusionModule
    from brainlearn.models.denoiser import Denoiser3D

    size, width = config["size"], config["width"]
    if size % (8 * COMPRESSION) or size < 8 * COMPRESSION:
        raise BrainlearnError(
            f"bench {method}: --size must be a multiple of {8 * COMPRESSION} (a latent the denoiser's four levels "
            f"halve three times), not {size}."
        )
    if width % 2 or width < 2:
        raise BrainlearnError(
            f"bench {method}: width must be a positive even number (64 in document 003), not {width}."
        )
    denoiser = Denoiser3D(EMBEDDING_DIM, channels=width, groups=math.gcd(8, width))
    device = _device()
    return LatentDiffusionModule(denoiser, timesteps=TIMESTEPS).to(device), device


def _device():
    import torch

    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _autocast(device, dtype):
    """Autocast to ``dtype`` on ``device``; off for None, the float32 reference."""
    import torch

    return torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None)


def _uniform(shape: tuple[int, ...], device):
    """Seeded values uniform in [-1, 1], the range of normalized images and latents."""
    import torch

    generator = torch.Generator(device=device).manual_seed(0)
    return torch.rand(shape, device=device, generator=generator) * 2 - 1


def _arms(precision: str) -> list[tuple[str, Any]]:
    """(name, autocast dtype or None): the float32 reference first, then ``precision``'s arm unless it is fp32."""
    import torch

    arms = [("fp32, no autocast (reference)", None)]
    return arms + [("bf16 autocast", torch.bfloat16)] if precision == "bf16" else arms


def _time_arms(step: Callable[[Any], None], config: dict[str, Any], device) -> list[tuple[str, float, float]]:
    """(name, median seconds, peak GiB) of ``step(dtype)`` for each arm of ``config['precision']``."""
    from brainlearn.bench import time_step

    rows = []
    for name, dtype in _arms(config["precision"]):
        seconds, peak = time_step(lambda d=dtype: step(d), config["repeats"], device)
        rows.append((name, seconds, peak))
    return rows


def _training_results(method: str, rows: list[tuple[str, float, float]]) -> dict[str, float]:
    (_, reference, _), (_, seconds, peak) = rows[0], rows[-1]
    return {
        f"bench/{method}/ms_reference": 1000 * reference,
        f"bench/{method}/ms": 1000 * seconds,
        f"bench/{method}/steps_per_s": 1 / seconds,
        f"bench/{method}/ratio": reference / seconds,
        f"bench/{method}/peak_gib": peak,
    }


def _header(method: str, title: str, config: dict[str, Any], device) -> list[str]:
    import torch

    where = f"{device.type} ({torch.cuda.get_device_name() if device.type == 'cuda' else platform.machine()})"
    steps = f" steps={config['steps']}" if method == "sampling" else ""
    return [
        f"# {title}, {config['precision']}, {where}",
        "",
        f"{time.strftime('%Y-%m-%d')}, `brainlearn bench --method {method} --size {config['size']} "
        f"--batch {config['batch']} width={config['width']}{steps} precision={config['precision']}`, "
        f"median of {config['repeats']} after one warm-up",
        "",
    ]


def _write_training_table(run, method, title, config, rows, device) -> None:
    lines = [
        *_header(method, title, config, device),
        "| precision | ms/step | steps/s | peak GPU memory (GiB) | speed-up |",
        "|---|---|---|---|---|",
        *[f"| {n} | {1000 * t:.0f} | {1 / t:.2f} | {p:.2f} | {rows[0][1] / t:.2f}× |" for n, t, p in rows],
    ]
    _write(run, lines)


def _write_sampling_table(run, config, rows, device) -> None:
    size, batch, steps = config["size"], config["batch"], config["steps"]
    title = (
        f"sampling: {batch} volume(s) of {size}³ ({EMBEDDING_DIM}×{size // COMPRESSION}³ latents), {steps} DDIM steps"
    )
    lines = [
        *_header("sampling", title, config, device),
        "| precision | ms/volume | ms/denoiser call | ms VQ-GAN decode | peak GPU memory (GiB) | speed-up |",
        "|---|---|---|---|---|---|",
        *[
            f"| {n} | {1000 * v:.0f} | {1000 * c:.1f} | {1000 * d:.0f} | {p:.2f} | {rows[0][1] / v:.2f}× |"
            for n, v, c, d, p in rows
        ],
    ]
    _write(run, lines)


def _write(run, lines: list[str]) -> None:
    write_text(run.root / "bench.md", "\n".join(lines) + "\n")
    log.info("\n%s", "\n".join(lines))
