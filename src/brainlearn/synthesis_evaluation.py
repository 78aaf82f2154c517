"""Scoring a ShareGAN or joint run on its held-out splits: synthesis quality and, for joint runs, diagnosis.

For each paired session (MRI and PET of the same visit): the PET synthesized from the MRI against the real one
(SSIM in 3D with data range 2, PSNR and MAE inside the brain; :mod:`brainlearn.metrics_synthesis`). For a joint
run also the diagnosis from the MRI, from the synthesized PET and from both (mean of the probabilities), each
with its decision threshold fitted on the validation split (``selection.json``), never on test.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader

from brainlearn.errors import BrainlearnError
from brainlearn.fast import inference_autocast

log = logging.getLogger("brainlearn")

INPUTS = ("mri", "synthesized", "both")


def evaluate_synthesis_run(module, cache, config: dict[str, Any], root: Path) -> dict[str, Any]:
    """Load the kept checkpoint into ``module``, fit thresholds on validation (joint), score every held-out split."""
    from brainlearn.atomic import write_json
    from brainlearn.commands_train import _kept_checkpoint, _load_weights, _scalar_or_interval

    checkpoint = _kept_checkpoint(root)
    _load_weights(module, checkpoint)
    classes = tuple(config["classes"]) if hasattr(module, "classifier") else None
    reference = mean_training_pet(cache, config)
    selection: dict[str, Any] = {"checkpoint": checkpoint.name}
    if classes:
        val, _ = predict_pairs(module, cache, config, "val", classes, None)
        selection["thresholds"] = {name: _threshold(val, name, classes) for name in INPUTS}
    write_json(root / "selection.json", selection)
    metrics: dict[str, Any] = {"selection/checkpoint": checkpoint.name}
    for split in config["evaluate"]["splits"]:
        if split not in set(cache.index["split"].dropna()):
            continue
        try:
            table, examples = predict_pairs(module, cache, config, split, classes, reference)
        except BrainlearnError as error:  # e.g. no session of the classifier's classes in this split
            log.warning("not evaluated on %s: %s", split, error)
            continue
        folder = root / "evaluation" / split
        metrics |= {f"{split}/{k}": v for k, v in _synthesis_report(table, examples, folder, config).items()}
        if classes:
            for name in INPUTS:
                report = _diagnosis_report(table, name, classes, folder / name, selection, config)
                metrics |= {f"{split}/{name}/{k}": v for k, v in report.items() if _scalar_or_interval(v)}
        log.info("look at: %s", folder)
    return metrics


def mean_training_pet(cache, config: dict[str, Any]):
    """The voxel-wise mean of the training split's PET, prepared as the model's inputs (None on mixed grids).

    It is the reference every synthesis is reported next to: a "synthesized" PET that knows nothing of the
    participant. A generator that does not beat it has learned the population, not the person.
    """
    from brainlearn.data.loaders import paired_evaluation_dataset

    dataset = paired_evaluation_dataset(
        cache, mri=config["mri"], pet=config["pet"], classes=None, split="train", downsample=config["downsample"]
    )
    total = None
    for i in range(len(dataset)):
        pet = dataset[i]["pet"][0].numpy().astype(np.float64)
        if total is not None and pet.shape != total.shape:
            log.info("training PET on several grids: no mean-PET reference")
            return None
        total = pet if total is None else total + pet
    return (total / len(dataset)).astype(np.float32)


@torch.no_grad()
def predict_pairs(
    module, cache, config: dict[str, Any], split: str, classes, reference=None
) -> tuple[pd.DataFrame, list]:
    """One row per paired session of ``split``: ids, diagnosis, label, synthesis scores (and probabilities).

    With a ``reference`` volume (the mean training PET), its scores against each real PET too (``reference_*``).
    Returns the table and the first ``evaluate.figure_rows`` (title, MRI, synthesized PET, real PET) for a figure.
    """
    from brainlearn.data.loaders import paired_evaluation_dataset
    from brainlearn.metrics_synthesis import synthesis_metrics
    from brainlearn.models.sharesynnet import MRI_TO_PET

    dataset = paired_evaluation_dataset(
        cache, mri=config["mri"], pet=config["pet"], classes=classes, split=split, downsample=config["downsample"]
    )
    module.eval()
    rows, examples = [], []
    for item in DataLoader(dataset, batch_size=1, shuffle=False):
        mri = item["mri"].to(module.device)
        with inference_autocast(module.device):
            out = module(mri) if classes else {"pet": module.generator(mri, MRI_TO_PET)}
        fake, real = out["pet"][0, 0].float().cpu().numpy(), item["pet"][0, 0].numpy()
        row = {key: item[key][0] for key in ("participant_id", "session_id")} | {"label": int(item["label"][0])}
        row |= synthesis_metrics(fake, real)
        if reference is not None and reference.shape == real.shape:
            row |= {f"reference_{k}": v for k, v in synthesis_metrics(reference, real).items()}
        for name in INPUTS if classes else ():
            row |= {f"p_{c}_{name}": float(p) for c, p in zip(classes, out[f"p_{name}"][0].tolist(), strict=True)}
        rows.append(row)
        if len(examples) < config["evaluate"]["figure_rows"]:
            examples.append((row["participant_id"], item["mri"][0, 0].numpy(), fake, real))
    table = pd.DataFrame(rows)
    table.insert(2, "diagnosis", cache.index.iloc[dataset.rows]["diagnosis"].to_numpy())
    return table, examples


def _threshold(val: pd.DataFrame, name: str, classes) -> float:
    from brainlearn.metrics import choose_threshold

    if len(classes) != 2 or val["label"].nunique() < 2:
        return 0.5
    return choose_threshold(val["label"], val[f"p_{classes[1]}_{name}"])


def _synthesis_report(table: pd.DataFrame, examples: list, folder: Path, config: dict[str, Any]) -> dict[str, Any]:
    from brainlearn.atomic import write_json
    from brainlearn.evaluation import write_tsv
    from brainlearn.metrics_synthesis import synthesis_table_metrics
    from brainlearn.report.figures import save_synthesis_figure

    write_tsv(table, folder / "synthesis.tsv")
    n = config["evaluate"]["n_bootstrap"]
    scores = _rounded(synthesis_table_metrics(table, n_bootstrap=n))
    if "reference_ssim" in table:  # the mean training PET, scored the same way
        reference = table[[f"reference_{k}" for k in ("mae", "psnr", "ssim")]]
        reference = reference.rename(columns=lambda name: name.removeprefix("reference_"))
        scores |= {f"reference/{k}": v for k, v in _rounded(synthesis_table_metrics(reference, n_bootstrap=n)).items()}
    write_json(folder / "synthesis.json", scores | {"n": len(table)})
    save_synthesis_figure(examples, folder / "synthesis.png")
    return scores


def _rounded(intervals: dict) -> dict[str, list[float]]:
    return {name: [round(float(v), 4) for v in interval] for name, interval in intervals.items()}


def _diagnosis_report(table, name: str, classes, folder: Path, selection: dict, config: dict) -> dict[str, Any]:
    """The diagnosis report of input ``name`` (mri, synthesized, both) with its validation threshold."""
    from brainlearn.evaluation import write_classifier_report

    columns = {f"p_{c}_{name}": f"p_{c}" for c in classes}
    predictions = table[["participant_id", "session_id", "diagnosis", "label", *columns]].rename(columns=columns)
    threshold = selection["thresholds"][name]
    return write_classifier_report(
        predictions, classes, folder, threshold=threshold, n_bootstrap=config["evaluate"]["n_bootstrap"]
    )


def evaluate_joint_run(config: dict[str, Any], run, selection: dict[str, Any]) -> dict[str, Any]:
    """``brainlearn evaluate`` of a joint run on any table: diagnosis from MRI, synthesized PET and both; MRI only.

    ``selection`` is the run's selection.json (its thresholds), as the caller read it.
    """
    from brainlearn.commands_synthesis import read_generator_run
    from brainlearn.commands_train import _load_weights, _scalar_or_interval, open_cache

    checkpoint, settings = read_generator_run(config["checkpoint"])
    module = build_joint_module(settings)
    _load_weights(module, checkpoint)
    classes = tuple(settings["classifier"]["classes"])
    cache = open_cache(config, run.root, [settings["mri"]])
    split = None if config["split"] in (None, "all") else config["split"]
    table = predict_mri(module, cache, settings, split, classes)
    metrics: dict[str, Any] = {}
    for name in INPUTS:
        report = _diagnosis_report(table, name, classes, run.root / name, selection, {"evaluate": config})
        metrics |= {f"{name}/{key}": value for key, value in report.items() if _scalar_or_interval(value)}
    log.info("look at: %s (from MRI, synthesized PET and both)", run.root)
    return metrics


def build_joint_module(settings: dict[str, Any]):
    """A JointModule with the architecture ``inference.json`` records (weights not loaded)."""
    from brainlearn.commands_synthesis import build_gan
    from brainlearn.methods.joint import JointModule
    from brainlearn.models.networks import build_network

    spec = settings["classifier"]
    classifier = build_network(
        spec["model"],
        in_channels=1,
        outputs=len(spec["classes"]),
        options=spec["model_options"],
        dropout=spec["dropout"],
    )
    return JointModule(*build_gan(settings["model_options"]), classifier, spec["classes"])


@torch.no_grad()
def predict_mri(module, cache, settings: dict[str, Any], split: str | None, classes) -> pd.DataFrame:
    """One row per session of ``split`` (MRI alone): ids, diagnosis, label and the three inputs' probabilities."""
    from brainlearn.data.datasets import VolumeDataset
    from brainlearn.data.loaders import VolumeTransform, pad_to_multiple

    prepare = VolumeTransform(downsample=settings["downsample"], intensity="range")

    def transform(item: dict) -> dict:
        item = prepare(item)
        return {**item, "image": pad_to_multiple(item["image"], module.generator.multiple)[0]}

    dataset = VolumeDataset(cache, modalities=(settings["mri"],), classes=classes, split=split, transform=transform)
    module.eval()
    rows = []
    for item in DataLoader(dataset, batch_size=1, shuffle=False):
        with inference_autocast(module.device):
            out = module(item["image"].to(module.device))
        row = {key: item[key][0] for key in ("participant_id", "session_id")} | {"label": int(item["label"][0])}
        for name in INPUTS:
            row |= {f"p_{c}_{name}": float(p) for c, p in zip(classes, out[f"p_{name}"][0].tolist(), strict=True)}
        rows.append(row)
    table = pd.DataFrame(rows)
    table.insert(2, "diagnosis", cache.index.iloc[dataset.rows]["diagnosis"].to_numpy())
    return table
