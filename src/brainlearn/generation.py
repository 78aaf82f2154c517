"""From cached volumes to latents and back: what ``pretrain vqgan``, ``pretrain diffusion`` and ``sample`` share.

Volumes enter the generative models as document 003 prepares them: every channel scaled to [-1, 1]
(:func:`~brainlearn.data.loaders.scale_to_range`, background -1), average-pooled by ``downsample`` and padded with
the background to a multiple of ``multiple`` voxels per axis (the VQ-GAN's compression times the denoiser's in-plane
halvings must divide it). The VQ-GAN's continuous latents are min-max normalized with its codebook's range to
[-1, 1] (document 003) or standardized per channel (:func:`latent_scale`): the space the diffusion model learns. A
VQ-GAN run records the grid its volumes came from (``inference.json``: the cache's shape and affine), so that a
generated volume is written back on that grid: the padding cut away, upsampled to the cache's resolution and mapped
to relative intensity [0, 1], like ``synthesize``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

from brainlearn.errors import BrainlearnError

log = logging.getLogger("brainlearn")

LATENT_SCALES = ("codebook", "standardize")
# what a VQ-GAN run records for the runs and commands that use it
GRID_KEYS = ("modalities", "downsample", "multiple", "model_options", "compression", "shape", "affine")


def volume_transform(settings: dict[str, Any], *, augment: bool = False, seed: int = 0):
    """The preparation of every volume a generative model sees: [-1, 1], downsampled, padded (left-right flips)."""
    from brainlearn.data.loaders import VolumeTransform

    return VolumeTransform(
        downsample=settings["downsample"],
        augment=augment,
        shift=0,  # a generative model learns the heads' real positions
        intensity="range",
        multiple=settings["multiple"],
        seed=seed,
    )


def volumes(cache, settings: dict[str, Any], split: str | None, *, classes=None, augment=False, seed=0):
    """The sessions of ``split`` as prepared volumes (a VolumeDataset; ``image`` (C, X', Y', Z') in [-1, 1])."""
    from brainlearn.data.datasets import VolumeDataset

    transform = volume_transform(settings, augment=augment, seed=seed)
    dataset = VolumeDataset(cache, modalities=settings["modalities"], classes=classes, split=split, transform=transform)
    shapes = {cache.shape(row, settings["modalities"][0]) for row in dataset.rows}
    if len(shapes) > 1:
        raise BrainlearnError(
            f"{cache.path}: the {split} sessions come in {len(shapes)} shapes ({sorted(shapes)[:3]} ...); a generative "
            "model learns one grid. Bring the scans onto one grid first (brainlearn preprocess registers them to MNI)."
        )
    return dataset


def grid_of(cache, settings: dict[str, Any]) -> dict[str, Any]:
    """The cache grid of the training volumes: shape (X, Y, Z) and the (4, 4) affine of the first training session."""
    rows = volumes(cache, settings, "train").rows
    modality = settings["modalities"][0]
    return {"shape": list(cache.shape(rows[0], modality)), "affine": cache.affine(rows[0], modality).tolist()}


def padding_slices(settings: dict[str, Any]) -> tuple[slice, slice, slice]:
    """The slices that cut the downsampled volume out of its padded grid."""
    from brainlearn.data.loaders import pad_to_multiple

    factor = settings["downsample"]
    shape = [-(-n // factor) for n in settings["shape"]]  # avg_pool with ceil_mode
    return pad_to_multiple(torch.zeros(1, *shape), settings["multiple"])[1]


def read_vqgan_run(source) -> tuple[Path, dict[str, Any], dict[str, Any]]:
    """The kept checkpoint, inference.json settings and config of a finished ``pretrain vqgan`` run."""
    return _read_generative_run(source, ("pretrain vqgan",))


def read_diffusion_run(source) -> tuple[Path, dict[str, Any], dict[str, Any]]:
    """The same for a ``pretrain diffusion`` run (its inference.json includes its VQ-GAN's settings)."""
    return _read_generative_run(source, ("pretrain diffusion",))


def _read_generative_run(source, commands: tuple[str, ...]) -> tuple[Path, dict[str, Any], dict[str, Any]]:
    from brainlearn.commands_train import read_inference_run

    return read_inference_run(source, commands, GRID_KEYS)


def build_vqgan(channels: int, options: dict[str, Any]):
    """A VQGAN3D from ``model_options`` (channels, downsample, embedding_dim, n_codes, decay, commitment, ...)."""
    from brainlearn.models.vqgan import VQGAN3D

    return VQGAN3D(channels, **options)


def load_vqgan(source) -> tuple[torch.nn.Module, dict[str, Any]]:
    """The trained VQ-GAN of a ``pretrain vqgan`` run (eval mode, frozen) and the run's inference settings."""
    from brainlearn.checkpoints import load_module_weights

    checkpoint, settings, _ = read_vqgan_run(source)
    vqgan = build_vqgan(len(settings["modalities"]), settings["model_options"])
    load_module_weights(vqgan, checkpoint, "vqgan", hint="Use the pretrain vqgan run this run was trained with.")
    return vqgan.eval().requires_grad_(False), settings


@torch.no_grad()
def encode_latents(vqgan, dataset, *, flips: bool = False, batch_size: int = 4) -> list[dict[str, Any]]:
    """The VQ-GAN's continuous latents of every volume of ``dataset`` (and of its mirror image with ``flips``).

    Returns:
        One dict per latent: ``latent`` (E, x, y, z) float32, not yet scaled (see :func:`latent_scale`), ``label``
        (int, -1 unknown), ``age`` (float, NaN unknown) — the batch contract of the latent diffusion module.
    """
    from torch.utils.data import DataLoader

    device = next(vqgan.parameters()).device
    out = []
    for batch in DataLoader(dataset, batch_size=batch_size):
        images = batch["image"].to(device)
        views = (images, images.flip(2)) if flips else (images,)  # (B, C, X, Y, Z): X is left-right
        for view in views:
            for latent, label, age in zip(vqgan.encode(view).float().cpu(), batch["label"], batch["age"], strict=True):
                out.append({"latent": latent, "label": int(label), "age": float(age)})
    return out


def latent_scale(kind: str, items: list[dict[str, Any]]) -> dict[str, Any]:
    """How latents map into the diffusion model's space, fitted on the training latents ``items``.

    ``"codebook"`` (document 003): min-max normalization with the codebook's range, so every code lies in [-1, 1]
    (the latents of real scans may fill only a small part of it). ``"standardize"``: per channel, zero mean and unit
    SD over the training latents, the scaling of Rombach et al. (2022), which gives the denoiser signals of the same
    size as its noise; ``bound``, the largest absolute standardized value, is where sampling clips its predicted
    clean latents (1 for the codebook scaling).
    """
    if kind not in LATENT_SCALES:
        raise BrainlearnError(f"latent_scale must be one of {', '.join(LATENT_SCALES)}, not {kind!r}.")
    if kind == "codebook":
        return {"kind": kind}
    latents = torch.stack([item["latent"] for item in items])  # (N, E, x, y, z)
    mean, std = latents.mean(dim=(0, 2, 3, 4)), latents.std(dim=(0, 2, 3, 4)).clamp_min(1e-6)
    bound = ((latents - mean.view(1, -1, 1, 1, 1)) / std.view(1, -1, 1, 1, 1)).abs().max()
    return {"kind": kind, "mean": mean.tolist(), "std": std.tolist(), "bound": float(bound)}


def to_model_space(vqgan, latent: torch.Tensor, scale: dict[str, Any]) -> torch.Tensor:
    """Continuous latents (B, E, x, y, z) → the diffusion model's space (:func:`latent_scale`)."""
    if scale["kind"] == "codebook":
        return vqgan.normalize_latent(latent)
    mean, std = _channel_vectors(scale, latent)
    return (latent - mean) / std


def from_model_space(vqgan, latent: torch.Tensor, scale: dict[str, Any]) -> torch.Tensor:
    """The inverse of :func:`to_model_space`."""
    if scale["kind"] == "codebook":
        return vqgan.denormalize_latent(latent)
    mean, std = _channel_vectors(scale, latent)
    return latent * std + mean


def _channel_vectors(scale: dict[str, Any], like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    shape = (1, -1, 1, 1, 1)
    return tuple(like.new_tensor(scale[key]).view(shape) for key in ("mean", "std"))


@torch.no_grad()
def decode_latents(vqgan, latents: torch.Tensor, scale: dict[str, Any], *, batch_size: int = 4) -> torch.Tensor:
    """Volumes (B, C, X', Y', Z') in [-1, 1] on the padded grid from latents (B, E, x, y, z) in the model's space.

    Each latent vector is replaced by its nearest codebook entry, then decoded.
    """
    device = next(vqgan.parameters()).device
    parts = []
    for chunk in latents.split(batch_size):
        normalized = vqgan.normalize_latent(from_model_space(vqgan, chunk.to(device), scale))
        parts.append(vqgan.decode_latent(normalized).float().cpu())
    return torch.cat(parts).clamp(-1, 1)


def on_cache_grid(volume: torch.Tensor, settings: dict[str, Any]) -> np.ndarray:
    """A generated (C, X', Y', Z') volume in [-1, 1] → (C, X, Y, Z) in [0, 1] on the training cache's grid."""
    from brainlearn.commands_synthesize import restore_grid

    shape = tuple(settings["shape"])
    return restore_grid(volume, padding_slices(settings), settings["downsample"], shape)


def check_volume_size(vqgan_settings: dict[str, Any], denoiser_levels: int) -> None:
    """Refuse a padding multiple the VQ-GAN's compression and the denoiser's in-plane halvings do not divide."""
    compression, multiple = vqgan_settings["compression"], vqgan_settings["multiple"]
    need = compression * 2 ** (denoiser_levels - 1)
    if multiple % need:
        raise BrainlearnError(
            f"the VQ-GAN run pads volumes to a multiple of {multiple} voxels, but its compression ×{compression} and "
            f"the denoiser's {denoiser_levels - 1} in-plane halvings need a multiple of {need}. Use fewer "
            f"denoiser multipliers or retrain the VQ-GAN with multiple={need}."
        )
