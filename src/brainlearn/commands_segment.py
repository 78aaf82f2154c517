"""``brainlearn train segment`` and ``brainlearn segment``: lesion segmentation from training to a mask on disk.

A training run folder holds, besides the trainer's files: ``selection.json`` (the kept checkpoint and the
probability threshold chosen on whole validation volumes) and ``evaluation/<split>/`` with one mask per
participant (NIfTI on the cached grid), ``subjects.tsv`` (Dice, HD95, lesion-wise TPR / FP / F1, volume
difference per participant) and ``metrics.json`` / ``metrics.md`` (means with bootstrap 95 % intervals).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from brainlearn.cli import Command
from brainlearn.errors import BrainlearnError
from brainlearn.trainer import TRAINER_DEFAULTS

log = logging.getLogger("brainlearn")


def run_train_segment(config: dict[str, Any], run) -> dict[str, Any]:
    """Train a lesion segmenter, choose its checkpoint and threshold on validation, score the held-out splits."""
    from brainlearn.commands_train import open_cache
    from brainlearn.trainer import fit

    modalities = list(config["modalities"])
    cache = open_cache(config, run.root, [*modalities, "mask"])
    module = build_segment_module(config)
    train, val = _loaders(cache, config)
    log.info("training on %d %s, validating on %d", len(train.sampler), _unit(config), len(val.dataset))
    fit(module, run.root, config["trainer"], train_dataloaders=train, val_dataloaders=val)
    return _select_and_evaluate(module, cache, config, run)


def build_segment_module(config: dict[str, Any]):
    """The SegmentModule a config describes, its encoder initialized from ``init_from`` when given."""
    from brainlearn.methods.segmentation import SegmentModule
    from brainlearn.models.segmenters import build_segmenter

    network = build_segmenter(config["model"], in_channels=len(config["modalities"]), options=config["model_options"])
    if config["init_from"]:
        load_encoder(network, Path(config["init_from"]))
    opt = config["optimizer"]
    return SegmentModule(
        network,
        loss=config["loss"],
        pos_weight=config["pos_weight"],
        lr=opt["lr"],
        weight_decay=opt["weight_decay"],
        freeze_encoder=config["freeze_encoder"],
    )


def load_encoder(network, path: Path) -> None:
    """Copy every encoder tensor of a checkpoint into ``network``'s encoder, or stop and say why not.

    The encoder's keys hold ``"<encoder name>."`` (``generator.network.encoder.*`` from the context encoder,
    ``network.network.swinViT.*`` from inpainting); see :func:`brainlearn.checkpoints.load_module_weights`.
    """
    from brainlearn.checkpoints import load_module_weights
    from brainlearn.models.segmenters import encoder_name, encoder_of

    hint = "Build the segmenter with the same model, model_options and modalities as the pretraining run."
    count = load_module_weights(encoder_of(network), path, encoder_name(network), hint=hint)
    log.info("encoder initialized from %s (%d tensors)", path, count)


def check_swin_patch(patch: int) -> None:
    """Refuse a Swin UNETR patch (voxels per axis) that its five halvings cannot take."""
    if isinstance(patch, bool) or not isinstance(patch, int) or patch < 64 or patch % 32:
        raise BrainlearnError(
            f"patch must be a multiple of 32 and at least 64 for swin_unetr (its deepest stage needs 2 voxels per "
            f"axis after five halvings), not {patch!r}."
        )


def _loaders(cache, config: dict[str, Any]):
    from torch.utils.data import RandomSampler

    from brainlearn.data.lesions import LesionPatchDataset, LesionSliceDataset, every_nth, lesion_sampler
    from brainlearn.data.loaders import make_loader

    seed, batch = config["trainer"]["seed"], config["batch_size"]
    common = {"batch_size": batch, "num_workers": config["num_workers"]}
    augment = _augmentation(config)
    if _dims(config) == 2:
        train = LesionSliceDataset(cache, modalities=config["modalities"], split="train", transform=augment)
        sampler = lesion_sampler(
            train, lesion_fraction=config["lesion_fraction"], samples=config["samples_per_epoch"], seed=seed
        )
        val = LesionSliceDataset(cache, modalities=config["modalities"], split="val")
        val = every_nth(val, config["val_samples"])
    else:
        patch = config["patch"]
        check_swin_patch(patch)
        train = LesionPatchDataset(
            cache,
            modalities=config["modalities"],
            split="train",
            patch=patch,
            lesion_fraction=config["lesion_fraction"],
            seed=seed,
            transform=augment,
        )
        sampler = RandomSampler(train, num_samples=config["samples_per_epoch"], replacement=True)
        val = LesionPatchDataset(cache, modalities=config["modalities"], split="val", patch=patch, seed=seed + 1)
        val = every_nth(val, config["val_samples"], fixed=True)  # cropped once: comparable val/loss per epoch
    return make_loader(train, sampler=sampler, **common), make_loader(val, **common)


def _augmentation(config: dict[str, Any]):
    if not config["augment"]:
        return None
    from brainlearn.data.augment import preset

    return preset("2d" if _dims(config) == 2 else "3d", seed=config["trainer"]["seed"])


def _select_and_evaluate(module, cache, config: dict[str, Any], run) -> dict[str, Any]:
    from brainlearn.atomic import write_json
    from brainlearn.commands_train import _kept_checkpoint, _load_weights
    from brainlearn.metrics_segmentation import best_threshold

    checkpoint = _kept_checkpoint(run.root)
    _load_weights(module, checkpoint)
    val = _predict_split(module, cache, config, "val")
    threshold = best_threshold([p for _, p, _ in val], [t for _, _, t in val]) if val else 0.5
    write_json(run.root / "selection.json", {"checkpoint": checkpoint.name, "threshold": threshold})
    log.info("threshold %.2f chosen on %d validation volumes", threshold, len(val))
    metrics: dict[str, Any] = {"selection/threshold": threshold}
    for split in config["evaluate"]["splits"]:
        if split not in set(cache.index["split"].dropna()) or split == "val":
            continue
        subjects = _predict_split(module, cache, config, split)
        if subjects:
            report = write_segmentation_report(
                subjects,
                cache,
                threshold,
                run.root / "evaluation" / split,
                n_bootstrap=config["evaluate"]["n_bootstrap"],
            )
            metrics |= {f"{split}/{key}": value for key, value in report.items()}
    return metrics


def _predict_split(module, cache, config: dict[str, Any], split: str) -> list[tuple[int, np.ndarray, np.ndarray]]:
    """(cache row, probabilities, true mask) of every session of ``split`` that has a mask."""
    from brainlearn.data.lesions import standardized_volume
    from brainlearn.methods.segmentation import predict_volume

    rows = np.flatnonzero((cache.index["split"] == split).to_numpy(dtype=bool, na_value=False))
    out = []
    for row in rows:
        image = standardized_volume(cache, int(row), config["modalities"])
        probabilities = predict_volume(module, image, spatial_dims=_dims(config), patch=config["patch"])
        out.append((int(row), probabilities, cache.read(int(row), "mask") > 0))
    return out


def write_segmentation_report(subjects, cache, threshold: float, folder: Path, *, n_bootstrap: int) -> dict:
    """Masks (NIfTI on the cached grid), per-participant metrics and their summary with 95 % intervals."""
    from brainlearn.atomic import write_json
    from brainlearn.evaluation import write_tsv
    from brainlearn.io import write_image
    from brainlearn.metrics_segmentation import segmentation_table, summarize
    from brainlearn.report.evaluation import metrics_table

    rows = []
    for row, probabilities, truth in subjects:
        participant_id, session_id = cache.index.iloc[row][["participant_id", "session_id"]]
        affine = cache.affine(row, "mask")
        predicted = probabilities >= threshold
        write_image(
            folder / "masks" / f"{participant_id}_{session_id}_lesions.nii.gz", predicted.astype(np.uint8), affine
        )
        spacing = tuple(float(s) for s in np.linalg.norm(affine[:3, :3], axis=0))
        rows.append((f"{participant_id}/{session_id}", predicted, truth, spacing))
    table = segmentation_table(rows)
    write_tsv(table, folder / "subjects.tsv")
    summary = summarize(table, n_resamples=n_bootstrap)
    result = {name: [round(float(v), 4) for v in interval] for name, interval in summary.items()}
    write_json(folder / "metrics.json", {**result, "threshold": threshold, "n": len(rows)})
    (folder / "metrics.md").write_text(metrics_table(summary) + "\n", encoding="utf-8")
    log.info("look at: %s", folder)
    return result


def run_segment(config: dict[str, Any], run) -> dict[str, Any]:
    """Segment lesions in new images with a trained run; the mask is written on the first image's grid."""

    from brainlearn.commands_train import _load_weights, read_finished_run
    from brainlearn.data.lesions import standardize_volume
    from brainlearn.io import check_same_grid, from_canonical, read_image, write_image
    from brainlearn.methods.segmentation import predict_volume

    run_dir, saved, selection = read_finished_run(config["checkpoint"], ("train segment",))
    paths = [Path(p) for p in config["inputs"]]
    if len(paths) != len(saved["modalities"]):
        raise BrainlearnError(
            f"the model takes {len(saved['modalities'])} images ({', '.join(saved['modalities'])}), "
            f"in that order; --in got {len(paths)}."
        )
    images = [read_image(p, canonical=True) for p in paths]
    for image in images[1:]:
        check_same_grid(images[0], image)
    module = build_segment_module({**saved, "init_from": None})
    _load_weights(module, run_dir / "checkpoints" / selection["checkpoint"])
    volume = standardize_volume(np.stack([image.array for image in images]))
    probabilities = predict_volume(module, volume, spatial_dims=_dims(saved), patch=saved["patch"])
    affine = read_image(paths[0]).affine  # the file's own (a .npy of document 000 gets its 1 mm identity)
    mask = from_canonical((probabilities >= selection["threshold"]).astype(np.uint8), affine)
    stem = paths[0].name.split(".")[0]
    out = write_image(run.root / f"{stem}_lesions.nii.gz", mask, affine)
    log.info("look at: %s (%d lesion voxels, threshold %.2f)", out, int(mask.sum()), selection["threshold"])
    return {"segment/lesion_voxels": int(mask.sum()), "segment/output": str(out)}


def _dims(config: dict[str, Any]) -> int:
    from brainlearn.models.segmenters import SEGMENTERS

    return SEGMENTERS.get(config["model"], 2)


def _unit(config: dict[str, Any]) -> str:
    return "slices per epoch" if _dims(config) == 2 else "patches per epoch"


SEGMENT_COMMANDS = (
    Command(
        name="segment",
        group="train",
        help="train a lesion segmenter: 2D U-Net with a ResNet-34 encoder on slices, or 3D Swin UNETR on patches",
        defaults={
            "cache": None,
            "table": None,
            "bids": None,
            "labels": ["CN", "MCI", "AD"],
            "modalities": ["t1", "t2", "flair"],
            "model": "unet2d",
            "model_options": {},
            "init_from": None,  # a checkpoint whose encoder initializes this one (brainlearn pretrain)
            "freeze_encoder": False,
            "loss": "combo",
            "pos_weight": 1.0,
            "augment": True,
            "lesion_fraction": 0.5,  # share of training slices / patches drawn from lesions
            "samples_per_epoch": 512,
            "val_samples": 512,
            "patch": 64,
            "batch_size": 16,
            "num_workers": "auto",  # DataLoader workers: none without a GPU (see make_loader)
            "optimizer": {"lr": 1e-3, "weight_decay": 0.0},
            "trainer": {**TRAINER_DEFAULTS, "max_epochs": 20, "monitor": "val/loss", "mode": "min"},
            "evaluate": {"splits": ["test", "external"], "n_bootstrap": 2000},
            "out": "runs/segment",
        },
        path_keys=("cache", "table", "bids", "init_from", "out"),
        run=run_train_segment,
        options=(
            ("--cache", "cache", {"metavar": "DIR", "help": "a brainlearn cache with the modalities and mask"}),
            ("--table", "table", {"metavar": "FILE", "help": "participants table (cached into the run)"}),
            ("--bids", "bids", {"metavar": "DIR", "help": "BIDS folder"}),
            ("--model", "model", {"help": "unet2d or swin_unetr"}),
            ("--init-from", "init_from", {"metavar": "CKPT", "help": "initialize the encoder from a checkpoint"}),
            ("--freeze-encoder", "freeze_encoder", {"action": "store_const", "const": True, "help": "freeze it"}),
        ),
    ),
    Command(
        name="segment",
        help="segment lesions in new images with a trained run; the mask lands on the input's grid",
        defaults={"checkpoint": None, "inputs": [], "out": "runs/segmented"},
        path_keys=("checkpoint", "out"),
        run=run_segment,
        options=(
            ("--checkpoint", "checkpoint", {"metavar": "RUN", "help": "a brainlearn train segment run folder"}),
            ("--in", "inputs", {"nargs": "+", "metavar": "IMAGE", "help": "the images, in the run's modality order"}),
        ),
    ),
)
