"""``brainlearn sample``: new volumes from a trained latent diffusion model, written as a cohort.

A :class:`Sampler` holds a ``pretrain diffusion`` run's denoiser (its EMA weights) and the VQ-GAN it was trained on.
:func:`write_samples` draws latents with DDIM, decodes them and writes every volume on the training cache's grid
(relative intensity [0, 1], as ``synthesize``), one NIfTI per modality, plus ``participants.tsv`` (participant,
session, one column per modality, the requested diagnosis and age, a train / val split) that ``pretrain inpaint
--table`` reads as it reads any cohort, and ``figures/samples.png``. Batch ``b`` draws its noise from a generator
seeded with (seed, b): a rerun skips the batches whose files exist and gives the same volumes for the others.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from brainlearn.errors import BrainlearnError
from brainlearn.fast import autocast, compile_networks, native_bf16

log = logging.getLogger("brainlearn")

MONTAGE_ROWS = 4


@dataclass
class Sampler:
    """A trained latent diffusion module with its VQ-GAN and the settings of both (inference.json)."""

    module: torch.nn.Module
    vqgan: torch.nn.Module
    settings: dict[str, Any]
    bf16: bool = False  # denoise and decode under bf16 autocast (the volumes come back float32)

    @property
    def device(self) -> torch.device:
        return next(self.module.parameters()).device

    def conditions(self, n: int, diagnosis: str | None, age: float | None) -> dict[str, torch.Tensor | None]:
        """``label`` and ``age`` tensors (n,) for the denoiser; None where the model has no such condition."""
        conditions, classes = self.settings["conditions"], self.settings["classes"]
        for name, value in (("diagnosis", diagnosis), ("age", age)):
            if value is not None and name not in conditions:
                raise BrainlearnError(
                    f"--{name} {value}: this diffusion model was trained with conditions {conditions}; "
                    f"leave --{name} out or train with conditions including {name}."
                )
        if diagnosis is not None and diagnosis not in classes:
            raise BrainlearnError(f"--diagnosis {diagnosis!r}: the model knows {classes}; pick one of them.")
        if age is not None and not (isinstance(age, int | float) and math.isfinite(age) and 0 <= age <= 130):
            raise BrainlearnError(f"--age must be a number of years between 0 and 130, not {age!r}.")
        label = classes.index(diagnosis) if diagnosis is not None else -1
        return {
            "label": torch.full((n,), label, device=self.device) if "diagnosis" in conditions else None,
            "age": torch.full((n,), math.nan if age is None else float(age), device=self.device)
            if "age" in conditions
            else None,
        }

    def volumes(self, n: int, *, steps: int, eta: float, guidance: float, generator, label=None, age=None):
        """``n`` decoded volumes (n, C, X', Y', Z') in [-1, 1] on the padded grid."""
        from brainlearn.generation import decode_latents

        shape, scale = tuple(self.settings["latent_shape"]), self.settings["latent_scale"]
        clip = scale.get("bound", 1.0)  # the latents' range in the model's space: predicted clean latents stay in it
        with autocast(self.device, self.bf16):
            latents = self.module.sample(
                n, shape, steps=steps, eta=eta, generator=generator, label=label, age=age, guidance=guidance, clip=clip
            )
            return decode_latents(self.vqgan, latents.float(), scale).float()


def load_sampler(source, *, precision: str = "fp32", compile: bool | str | None = None) -> Sampler:
    """The :class:`Sampler` of a finished ``pretrain diffusion`` run, on the GPU when there is one.

    Args:
        precision: ``"bf16"`` samples under bf16 autocast, ``"auto"`` does so on a GPU with bf16, ``"fp32"`` never.
        compile: ``torch.compile`` mode of the denoiser (``"reduce-overhead"``: CUDA graphs for its fixed-shape
            calls, the fast choice for hundreds of DDIM steps on a GPU); None or False: none.
    """
    from brainlearn.commands_generation import build_diffusion_module
    from brainlearn.commands_train import _load_weights
    from brainlearn.generation import load_vqgan, read_diffusion_run

    checkpoint, settings, saved = read_diffusion_run(source)
    vqgan, _ = load_vqgan(settings["vqgan"])
    classes = settings["classes"]
    module = build_diffusion_module(saved, classes, embedding_dim=settings["latent_shape"][0], settings=settings)
    _load_weights(module, checkpoint)
    if precision not in ("auto", "fp32", "bf16"):
        raise BrainlearnError(f"precision: expected auto, fp32 or bf16, not {precision!r}.")
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    bf16 = precision == "bf16" or (precision == "auto" and native_bf16(device))
    module = module.eval().to(device)
    compile_networks(module.ema, compile)
    return Sampler(module, vqgan.to(device), settings, bf16=bf16)


def write_samples(sampler: Sampler, config: dict[str, Any], run) -> dict[str, Any]:
    """Sample ``config['n']`` volumes into the run folder (see the module docstring); returns the run's metrics."""
    from brainlearn.data.tables import write_table

    _check_request(config)
    n, size = config["n"], config["batch_size"]
    names = [f"sub-sample{k + 1:0{max(4, len(str(n)))}d}" for k in range(n)]
    start, drawn = time.perf_counter(), 0
    for b, first in enumerate(range(0, n, size)):
        batch = names[first : first + size]
        if all(path.exists() for name in batch for path in _paths(run.root, name, sampler.settings).values()):
            continue  # written by an earlier, interrupted run
        generator = torch.Generator(sampler.device).manual_seed(config["seed"] * 1_000_003 + b)
        conditions = sampler.conditions(len(batch), config["diagnosis"], config["age"])
        volumes = sampler.volumes(
            len(batch),
            steps=config["steps"],
            eta=config["eta"],
            guidance=config["guidance"],
            generator=generator,
            **conditions,
        )
        for name, volume in zip(batch, volumes, strict=True):
            _write_volume(run.root, name, volume, sampler.settings)
        drawn += len(batch)
        log.info("sampled %d of %d volumes", first + len(batch), n)
    seconds = time.perf_counter() - start
    table = write_table(_table(run.root, names, config, sampler.settings), run.root / "participants.tsv")
    montage = _montage(run.root, names[:MONTAGE_ROWS], sampler.settings, run.figures / "samples.png")
    log.info("look at: %s and %s (pretrain inpaint --table reads it)", montage, table)
    return {"sample/n": n, "sample/seconds_per_volume": round(seconds / max(drawn, 1), 3)}


def _check_request(config: dict[str, Any]) -> None:
    for key in ("n", "steps", "batch_size"):
        value = config[key]
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise BrainlearnError(f"{key} must be a positive integer, not {value!r}.")
    if not (isinstance(config["eta"], int | float) and 0 <= config["eta"] <= 1):
        raise BrainlearnError(f"eta must be in [0, 1] (0: DDIM, 1: DDPM-like), not {config['eta']!r}.")
    if not (isinstance(config["guidance"], int | float) and config["guidance"] >= 0):
        raise BrainlearnError(
            f"guidance must be a scale >= 0 (1: plain conditional sampling), not {config['guidance']!r}."
        )
    if not (isinstance(config["val_fraction"], int | float) and 0 <= config["val_fraction"] < 1):
        raise BrainlearnError(f"val_fraction must be in [0, 1), not {config['val_fraction']!r}.")


def _paths(root, name: str, settings: dict[str, Any]) -> dict[str, Any]:
    return {modality: root / f"{name}_{modality}.nii.gz" for modality in settings["modalities"]}


def _write_volume(root, name: str, volume: torch.Tensor, settings: dict[str, Any]) -> None:
    from brainlearn.generation import on_cache_grid
    from brainlearn.io import write_image

    arrays = on_cache_grid(volume, settings)  # (C, X, Y, Z) in [0, 1]
    affine = np.asarray(settings["affine"], dtype=np.float64)
    for array, path in zip(arrays, _paths(root, name, settings).values(), strict=True):
        write_image(path, array, affine)


def _table(root, names: list[str], config: dict[str, Any], settings: dict[str, Any]):
    import pandas as pd

    n_val = round(len(names) * config["val_fraction"])
    every = len(names) / n_val if n_val else math.inf
    val = {int(k * every) for k in range(n_val)}  # spread over the list, the same for every rerun
    rows = []
    for k, name in enumerate(names):
        images = {m: str(path.absolute()) for m, path in _paths(root, name, settings).items()}
        split = "val" if k in val else "train"
        rows.append({"participant_id": name, "session_id": "ses-01", **images, "split": split})
        rows[-1] |= {"diagnosis": config["diagnosis"], "age": config["age"]}
    return pd.DataFrame(rows)


def _montage(root, names: list[str], settings: dict[str, Any], path):
    from brainlearn.io import read_image
    from brainlearn.report.figures import save_montage

    rows = []
    for name in names:
        images = {m: read_image(p, canonical=True, allow_empty=True) for m, p in _paths(root, name, settings).items()}
        rows.append((name, [(m, image.array, image.spacing) for m, image in images.items()]))
    return save_montage(rows, path)
