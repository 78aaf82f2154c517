"""Scores of the generative models on held-out scans, written into their run folders.

- :func:`evaluate_reconstructions` (``pretrain vqgan``): every session of each evaluated split through the kept
  VQ-GAN; MAE, PSNR and 3D SSIM of the reconstruction against the prepared volume, per modality, on the
  downsampled grid without the padding (``evaluation/<split>/reconstruction.tsv`` and ``.json`` with bootstrap
  95 % intervals, ``reconstruction.png``).
- :func:`evaluate_samples` (``pretrain diffusion``): as many samples as asked, conditioned like the real sessions
  of the split (their diagnoses and ages, in turn), next to those real sessions: mean MS-SSIM between samples
  (diversity; the real sessions' own value beside it) and, with ``evaluate.features`` (a ``train brain-age`` or
  ``train classify`` run with a backbone), the Fréchet distance, precision and recall in that backbone's
  feature space — with the same scores between the real training and real held-out sessions as the reference a
  perfect generator would reach (``evaluation/<split>/samples.json``, ``samples.png``). Real and generated volumes
  take the same path to the feature network: the training cache's grid in relative intensity, then the feature
  run's own preparation.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

from brainlearn.errors import BrainlearnError

log = logging.getLogger("brainlearn")


def evaluate_reconstructions(checkpoint: Path, cache, config: dict[str, Any], root: Path) -> dict[str, Any]:
    """Score the kept VQ-GAN's reconstructions of every split in ``config['evaluate']['splits']``."""
    import pandas as pd

    from brainlearn.checkpoints import load_module_weights
    from brainlearn.generation import build_vqgan

    vqgan = build_vqgan(len(config["modalities"]), config["model_options"])
    load_module_weights(vqgan, checkpoint, "vqgan", hint="Rerun pretrain vqgan.")
    vqgan.eval()
    metrics: dict[str, Any] = {}
    for split in config["evaluate"]["splits"]:
        if not _has_split(cache, split):
            continue
        rows, panels = _reconstruct_split(vqgan, cache, config, split)
        folder = root / "evaluation" / split
        metrics |= _reconstruction_report(pd.DataFrame(rows), panels, folder, split, config)
    return metrics


def _reconstruct_split(vqgan, cache, config: dict[str, Any], split: str):
    from brainlearn.generation import volumes
    from brainlearn.metrics_synthesis import synthesis_metrics

    dataset, rows, panels = volumes(cache, config, split), [], []
    for k in range(len(dataset)):
        item = dataset[k]
        crop = _crop(cache, dataset.rows[k], config)
        with torch.no_grad():
            reconstruction = vqgan(item["image"][None])["reconstruction"][0].clamp(-1, 1)
        real, fake = item["image"][crop].numpy(), reconstruction[crop].numpy()
        ids = {"participant_id": item["participant_id"], "session_id": item["session_id"]}
        for c, modality in enumerate(config["modalities"]):
            rows.append(ids | {"modality": modality, **synthesis_metrics(fake[c], real[c])})
        if len(panels) < config["evaluate"]["figure_rows"]:
            columns = [
                (f"{m} {kind}", v[c]) for c, m in enumerate(config["modalities"]) for kind, v in _pair(real, fake)
            ]
            panels.append((item["participant_id"], columns))
    return rows, panels


def _pair(real: np.ndarray, fake: np.ndarray):
    return (("real", real), ("reconstructed", fake))


def _reconstruction_report(table, panels, folder: Path, split: str, config: dict[str, Any]) -> dict[str, Any]:
    from brainlearn.atomic import write_json
    from brainlearn.data.tables import write_table
    from brainlearn.metrics_synthesis import synthesis_table_metrics
    from brainlearn.report.figures import save_montage

    folder.mkdir(parents=True, exist_ok=True)
    write_table(table, folder / "reconstruction.tsv")
    summary, metrics = {}, {}
    for modality, scores in table.groupby("modality", sort=False):
        intervals = synthesis_table_metrics(scores, n_bootstrap=config["evaluate"]["n_bootstrap"])
        summary[modality] = {name: [round(float(v), 4) for v in interval] for name, interval in intervals.items()}
        metrics |= {f"{split}/{modality}/{name}": summary[modality][name][0] for name in intervals}
        log.info("%s %s reconstruction: %s", split, modality, _line(summary[modality]))
    write_json(folder / "reconstruction.json", summary)
    save_montage(panels, folder / "reconstruction.png")
    return metrics


def evaluate_samples(module, checkpoint: Path, vqgan, cache, settings: dict[str, Any], config: dict[str, Any], root):
    """Sample the kept diffusion checkpoint and score the samples against the real sessions of the split."""
    from brainlearn.atomic import write_json
    from brainlearn.commands_train import _load_weights
    from brainlearn.metrics_generation import ms_ssim_diversity

    options, split = config["evaluate"], config["evaluate"]["split"]
    if not _has_split(cache, split):
        return {}
    _load_weights(module, checkpoint)
    real, rows, conditions = _real_volumes(cache, settings, split)
    fake = _samples(module, vqgan, settings, conditions, options)
    crop = (slice(None), *_crop(cache, rows[0], settings))  # (N, C, X, Y, Z) without the padding
    scores = {
        "samples": len(fake),
        "steps": options["steps"],
        "diversity_ms_ssim": ms_ssim_diversity(fake[crop]),
        "real_diversity_ms_ssim": ms_ssim_diversity(real[crop]),
    }
    if options["features"]:
        scores |= _feature_scores(options["features"], cache, settings, real, fake, options)
    folder = root / "evaluation" / split
    folder.mkdir(parents=True, exist_ok=True)
    write_json(folder / "samples.json", scores)
    _sample_montage(real[crop], fake[crop], settings, folder / "samples.png")
    log.info("%s samples: %s", split, _line(scores))
    return {f"{split}/samples/{name}": value for name, value in scores.items()}


def _real_volumes(cache, settings: dict[str, Any], split: str):
    """The prepared volumes (N, C, X', Y', Z') of ``split``, their cache rows and their (label, age) conditions."""
    from brainlearn.generation import volumes

    classes = tuple(settings["classes"]) if settings["classes"] else None
    dataset = volumes(cache, settings, split, classes=classes)
    items = [dataset[k] for k in range(len(dataset))]
    conditions = {"label": [item["label"] for item in items], "age": [item["age"] for item in items]}
    return torch.stack([item["image"] for item in items]), dataset.rows, conditions


def _samples(module, vqgan, settings: dict[str, Any], conditions: dict[str, list], options: dict[str, Any]):
    """``options['samples']`` decoded samples conditioned like the real sessions, in turn; seeded."""
    from brainlearn.sampling import Sampler

    n = options["samples"]
    sampler = Sampler(module.eval(), vqgan, settings)
    repeat = [k % len(conditions["label"]) for k in range(n)]
    label = torch.tensor([conditions["label"][k] for k in repeat]) if "diagnosis" in settings["conditions"] else None
    age = torch.tensor([conditions["age"][k] for k in repeat]) if "age" in settings["conditions"] else None
    generator = torch.Generator(sampler.device).manual_seed(0)
    move = {"label": label, "age": age}
    move = {key: value.to(sampler.device) if value is not None else None for key, value in move.items()}
    out = sampler.volumes(
        n, steps=options["steps"], eta=options["eta"], guidance=options["guidance"], generator=generator, **move
    )
    return out.cpu()


def _feature_scores(source, cache, settings, real, fake, options) -> dict[str, float]:
    """Fréchet distance, precision and recall of samples vs real held-out volumes, and of real train vs held-out."""
    from brainlearn.generation import volumes
    from brainlearn.metrics_generation import generation_scores, volume_features

    backbone, prepare = _feature_network(source, settings)
    train = volumes(cache, settings, "train")
    train = torch.stack([train[k]["image"] for k in range(min(len(train), max(len(real), len(fake))))])
    features = {
        name: volume_features(backbone, prepare(v)) for name, v in (("real", real), ("fake", fake), ("train", train))
    }
    k = min(3, *(len(f) - 1 for f in features.values()))  # k-NN radii need more than k samples per set
    samples = generation_scores(features["real"], features["fake"], k=k)
    reference = generation_scores(features["real"], features["train"], k=k)
    return {f"features_{name}": value for name, value in samples.items()} | {
        f"real_train_{name}": value for name, value in reference.items()
    }


def _feature_network(source, settings: dict[str, Any]):
    """The backbone of a trained brain-age / classify run and the function that prepares volumes for it."""
    from brainlearn.commands_train import _load_weights, build_module, read_finished_run
    from brainlearn.data.loaders import VolumeTransform
    from brainlearn.generation import on_cache_grid

    run_dir, saved, selection = read_finished_run(source, ("train brain-age", "train classify"))
    missing = [m for m in saved["modalities"] if m not in settings["modalities"]]
    if missing:
        raise BrainlearnError(
            f"evaluate.features: {run_dir} takes {saved['modalities']}, the generator makes "
            f"{settings['modalities']}; use a run trained on generated modalities only."
        )
    task = "classify" if saved["command"] == "train classify" else "brain-age"
    module = build_module(task, {**saved, "init_from": None, "freeze_encoder": False})
    _load_weights(module, run_dir / "checkpoints" / selection["checkpoint"])
    if not hasattr(module.network, "backbone"):
        raise BrainlearnError(f"evaluate.features: {run_dir} ({saved['model']}) has no backbone; use sfcn or resnet3d.")
    channels = [settings["modalities"].index(m) for m in saved["modalities"]]
    transform = VolumeTransform(downsample=saved["downsample"], intensity=saved.get("intensity", "zscore"))

    def prepare(batch: torch.Tensor) -> torch.Tensor:
        grid = [torch.from_numpy(on_cache_grid(volume, settings)[channels]) for volume in batch]
        return torch.stack([transform({"image": image})["image"] for image in grid])

    return module.network.backbone, prepare


def _sample_montage(real: torch.Tensor, fake: torch.Tensor, settings: dict[str, Any], path: Path) -> None:
    from brainlearn.report.figures import save_montage

    rows = []
    for k in range(min(4, len(fake))):
        columns = [(f"{m} sample", fake[k, c].numpy()) for c, m in enumerate(settings["modalities"])]
        if k < len(real):
            columns += [(f"{m} real", real[k, c].numpy()) for c, m in enumerate(settings["modalities"])]
        rows.append((f"sample {k + 1}", columns))
    save_montage(rows, path)


def _crop(cache, row: int, settings: dict[str, Any]) -> tuple[slice, ...]:
    """(channel, *spatial) slices that cut the downsampled volume of cache ``row`` out of its padded grid."""
    from brainlearn.generation import padding_slices

    shape = cache.shape(row, settings["modalities"][0])
    return (slice(None), *padding_slices({**settings, "shape": shape}))


def _has_split(cache, split: str) -> bool:
    present = (cache.index["split"] == split).any()
    if not present:
        log.info("no %s sessions in the cache; not evaluated", split)
    return bool(present)


def _line(scores: dict[str, Any]) -> str:
    return ", ".join(f"{name} {value[0] if isinstance(value, list) else value:.3g}" for name, value in scores.items())
