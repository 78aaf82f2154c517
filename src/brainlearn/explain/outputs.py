"""What an explain run writes: per-session maps on the input's grid, their scores, population maps and regions.

:func:`explain_sessions` is the loop of ``brainlearn explain`` (see :mod:`brainlearn.commands_explain` for the
folder layout). A session whose maps an earlier, interrupted run already wrote is read back, not recomputed.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from brainlearn.explain.regions import check_in_template_space, rank_of, region_table, to_template
from brainlearn.explain.truth import find_truth_folder, map_auc, read_truth

log = logging.getLogger("brainlearn")
_MR = ("t1", "t2", "flair")


class Population:
    """Running sums of template-space maps per (map name, group); groups are ``all`` and each diagnosis."""

    def __init__(self, anatomy):
        self.anatomy = anatomy
        self.sums: dict[tuple[str, str], np.ndarray] = {}
        self.counts: dict[tuple[str, str], int] = defaultdict(int)

    def add(self, name: str, volume: np.ndarray, diagnosis: str | None) -> None:
        for group in ("all", diagnosis) if diagnosis else ("all",):
            key = (name, group)
            self.sums[key] = self.sums.get(key, 0) + volume
            self.counts[key] += 1

    def means(self) -> dict[str, np.ndarray]:
        """``<name>_<group>`` → mean map, on the template grid."""
        return {f"{name}_{group}": total / self.counts[name, group] for (name, group), total in self.sums.items()}


def explain_sessions(explain, module, dataset, *, task: str, target: int, saved, config, run) -> dict[str, Any]:
    """Explain each session of ``dataset`` (an evaluation dataset of the run's cache); write and score the maps.

    Args:
        explain: (image (B, C, X, Y, Z), target) → {map name: (B, X, Y, Z) in [0, 1]} on the model's grid.
        module: the trained LightningModule (its forward gives probabilities or ages in years).
        dataset: sessions, prepared as at evaluation.
        task: ``classify`` or ``brain-age``; target: the output index explained.
        saved: the training run's config; config: the explain command's; run: its run folder.

    Returns:
        The metrics: per map and truth the mean ROC-AUC over sessions with a bootstrap interval, per map and group
        the hippocampus' rank among the atlas structures.
    """
    from brainlearn.cohort.anatomy import load_anatomy

    cache, modality = dataset.cache, saved["modalities"][0]
    background = -1.0 if dataset.transform.intensity == "range" else 0.0
    population = Population(load_anatomy(config["template_spacing"]))
    kinds = _truth_kinds(task, saved["modalities"])
    rows, figures = [], 0
    loader = torch.utils.data.DataLoader(dataset, batch_size=config["batch_size"], shuffle=False)
    positions = iter(dataset.rows)
    for batch in loader:
        indices = [next(positions) for _ in batch["participant_id"]]
        maps = _read_back(run.root, cache, indices, modality)
        if maps is None:
            head = (batch["image"] != background).any(1)  # (B, x, y, z): importance outside the head means nothing
            maps = {
                name: _on_cache_grid(_within(m, head), cache, indices, modality, saved["downsample"])
                for name, m in explain(batch["image"], target).items()
            }
        outputs = _outputs(module, batch["image"], task, saved)
        for k, index in enumerate(indices):
            session = {name: volume[k] for name, volume in maps.items()}
            row = _session(session, cache, index, modality, population, kinds, config, run)
            rows.append({**row, **{key: value[k] for key, value in outputs.items()}})
            if figures < config["figures"]:
                _session_figures(session, cache, index, modality, run, row["stem"])
                figures += 1
    return _summarize(rows, population, task, target, saved, config, run)


def _session(session: dict[str, np.ndarray], cache, index: int, modality: str, population, kinds, config, run):
    """Write one session's maps, score them against the truth, add them to the population; its table row."""
    record = cache.index.iloc[index]
    pid, stem = record["participant_id"], _stem(record)
    source, affine = Path(record[f"{modality}_source"]), cache.affine(index, modality)
    if not population.sums:
        ones = to_template(np.ones(cache.shape(index, modality), np.float32), affine, population.anatomy)
        check_in_template_space(ones, population.anatomy, str(source))
    row = {key: record[key] for key in ("participant_id", "session_id", "diagnosis", "age", "split")}
    row["stem"] = stem
    folder = find_truth_folder(source, pid, config["truth"]) if kinds else None
    brain, truths = read_truth(folder, pid, kinds, canonical=cache.canonical) if folder else (None, {})
    for name, volume in session.items():
        path = run.root / "maps" / f"{stem}_desc-{name}_importance.nii.gz"
        if not path.exists():
            _write_map(path, volume, source, cache, affine)
        row[f"map_{name}"] = str(path.relative_to(run.root))
        for kind, truth in truths.items():
            row[f"auc_{name}_{kind}"] = map_auc(volume, truth, brain)
        population.add(name, to_template(volume, affine, population.anatomy), record["diagnosis"])
    return row


def _truth_kinds(task: str, modalities) -> tuple[str, ...]:
    """What a model can see: shrunk and enlarged structures on MR images, hypometabolism on PET; brain age: the
    structures that change most with age."""
    if task == "brain-age":
        return ("ageing",)
    kinds = ("atrophy", "disease") if set(modalities) & set(_MR) else ()
    return (*kinds, "hypometabolism") if "pet" in modalities else kinds


def _stem(record) -> str:
    """``<participant>_<session>``, or the participant alone for a table without sessions."""
    return f"{record['participant_id']}_{record['session_id']}" if record["session_id"] else record["participant_id"]


def _within(maps: torch.Tensor, head: torch.Tensor) -> torch.Tensor:
    """``maps`` (B, x, y, z) stretched to [0, 1] inside ``head`` (min-max per volume), 0 outside it.

    Min-max rather than a division by the maximum: a noise-model map whose least important voxel still scores 0.4
    would otherwise show little contrast; ranks, and so every ROC-AUC, are the same either way.
    """
    maps, head = maps.detach().float().cpu(), head.bool()
    low = torch.where(head, maps, torch.inf).amin(dim=(1, 2, 3), keepdim=True)
    high = torch.where(head, maps, -torch.inf).amax(dim=(1, 2, 3), keepdim=True)
    return torch.where(head, (maps - low) / (high - low).clamp_min(1e-12), 0.0)


def _on_cache_grid(maps: torch.Tensor, cache, indices, modality: str, downsample: int) -> np.ndarray:
    """Maps (B, x, y, z) on the model's grid → (B, X, Y, Z) on the cache's: ×downsample (trilinear), cut, [0, 1]."""
    maps = maps.detach().float().cpu()
    shape = cache.shape(indices[0], modality)
    if downsample > 1:  # ×d exactly: voxel centres stay where avg_pool put them; the ceil_mode overhang is cut
        maps = F.interpolate(maps[:, None], scale_factor=downsample, mode="trilinear", align_corners=False)[:, 0]
    return maps[:, : shape[0], : shape[1], : shape[2]].clamp(0, 1).numpy()


def _read_back(root: Path, cache, indices, modality: str) -> dict[str, np.ndarray] | None:
    """The maps an earlier run wrote for every session of a batch, on the cache's grid; None if any is missing."""
    from brainlearn.io import read_image

    found: dict[str, list[np.ndarray]] = defaultdict(list)
    for index in indices:
        record = cache.index.iloc[index]
        stem = _stem(record)
        paths = sorted((root / "maps").glob(f"{stem}_desc-*_importance.nii.gz"))
        if not paths:
            return None
        for path in paths:
            name = path.name[len(stem) + len("_desc-") : -len("_importance.nii.gz")]
            found[name].append(read_image(path, canonical=cache.canonical, allow_empty=True).array)
    if any(len(volumes) != len(indices) for volumes in found.values()):
        return None
    return {name: np.stack(volumes) for name, volumes in found.items()}


def _write_map(path: Path, volume: np.ndarray, source: Path, cache, affine: np.ndarray) -> None:
    from brainlearn.io import write_image, write_like

    if cache.canonical:
        write_like(path, volume, source, description="brainlearn explain: importance 0-1")
    else:
        write_image(path, volume, affine)


def _outputs(module, image: torch.Tensor, task: str, saved) -> dict[str, np.ndarray]:
    """The model's output per volume: class probabilities, or the predicted age in years."""
    with torch.no_grad():
        output = module.eval()(image).float().cpu().numpy()
    if task == "brain-age":
        return {"predicted_age": output}
    return {f"p_{name}": output[:, k] for k, name in enumerate(saved["classes"])}


def _session_figures(session: dict[str, np.ndarray], cache, index: int, modality: str, run, stem: str) -> None:
    from brainlearn.explain.figures import save_overlay

    anatomy, affine = cache.read(index, modality), cache.affine(index, modality)
    for name, volume in session.items():
        save_overlay(volume, anatomy, affine, run.figures / f"{stem}_{name}.png", title=f"{stem} {name}")


def _summarize(rows: list[dict], population, task: str, target: int, saved, config, run) -> dict[str, Any]:
    """sessions.tsv, the population maps, regions.tsv, their figures and the metrics."""
    from brainlearn.evaluation import write_tsv
    from brainlearn.explain.figures import save_overlay
    from brainlearn.io import write_image

    sessions = pd.DataFrame(rows).drop(columns="stem")
    write_tsv(sessions, run.root / "sessions.tsv")
    means, anatomy = population.means(), population.anatomy
    for key, volume in means.items():
        name, group = key.rsplit("_", 1)
        write_image(run.root / "population" / f"desc-{name}_group-{group}_importance.nii.gz", volume, anatomy.affine)
        save_overlay(
            _stretched(volume, anatomy.brain),
            anatomy.t1,
            anatomy.affine,
            run.figures / f"population_{name}_{group}.png",
            title=f"{name}: mean of {group}",
        )
    regions = region_table(means, anatomy)
    write_tsv(regions, run.root / "regions.tsv")
    metrics = _auc_metrics(sessions, config)
    focus = saved["classes"][target] if task == "classify" else "all"
    for key in means:
        name, group = key.rsplit("_", 1)
        metrics[f"explain/{name}/hippocampus_rank/{group}"] = rank_of(regions, key)
        if group == (focus if f"{name}_{focus}" in means else "all"):
            log.info(
                "%s: hippocampus ranks %s of %d structures (%s); top 5: %s",
                name,
                rank_of(regions, key),
                len(regions),
                group,
                ", ".join(regions.sort_values(f"rank_{key}")["region"].head(5)),
            )
    metrics["explain/regions"] = len(regions)
    metrics["explain/sessions"] = len(sessions)
    log.info(
        "look at: %s (maps), %s (population and overlays), %s, %s",
        run.root / "maps",
        run.figures,
        run.root / "regions.tsv",
        run.root / "sessions.tsv",
    )
    return metrics


def _auc_metrics(sessions: pd.DataFrame, config) -> dict[str, Any]:
    """Mean ROC-AUC of each map against each truth over the sessions with affected voxels, bootstrapped."""
    from brainlearn.metrics import bootstrap

    metrics: dict[str, Any] = {}
    for column in [c for c in sessions.columns if c.startswith("auc_")]:
        values = sessions[column].to_numpy(dtype=float)
        values = values[np.isfinite(values)]
        if values.size == 0:
            continue
        _, name, kind = column.split("_", 2)
        estimate, lower, upper = bootstrap(
            _mean_auc, values, n_resamples=config["n_bootstrap"], seed=config["seed"], stratify=False
        )["auc"]
        metrics[f"explain/{name}/auc/{kind}"] = [estimate, lower, upper]
        metrics[f"explain/{name}/auc/{kind}/n"] = int(values.size)
        log.info(
            "%s against the %s truth: ROC-AUC %.3f (95 %% CI %.3f–%.3f, %d sessions)",
            name,
            kind,
            estimate,
            lower,
            upper,
            values.size,
        )
    return metrics


def _mean_auc(values: np.ndarray) -> dict[str, float]:
    return {"auc": float(np.mean(values))}


def _stretched(volume: np.ndarray, brain: np.ndarray) -> np.ndarray:
    """``volume`` min-max scaled to [0, 1] inside the template's ``brain``, 0 outside: the population figure."""
    inside = volume[brain]
    low, high = float(inside.min()), float(inside.max())
    return np.where(brain, (volume - low) / max(high - low, 1e-12), 0.0).astype(np.float32)
