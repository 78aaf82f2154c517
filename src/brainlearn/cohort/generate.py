"""``brainlearn cohort``: write a BIDS-like cohort with known ground truth.

::

    OUT/
      participants.tsv                      participant_id, diagnosis, age, sex, site, split
      cohort.json                           the settings (a rerun with other settings is refused)
      sub-001/anat/sub-001_T1w.nii.gz       also _T2w, _FLAIR, and _label-lesion_mask (presets ms and all)
      sub-001/pet/sub-001_pet.nii.gz        FDG-PET, SUVR
      derivatives/truth/sub-001/            sub-001_dseg.nii.gz (atlas labels in subject space),
                                            sub-001_label-hippocampus_probseg.nii.gz (partial volume),
                                            sub-001_desc-atrophy_map.nii.gz, sub-001_desc-hypometabolism_map.nii.gz,
                                            sub-001_truth.json (written last: the subject is complete)
      figures/montage.png
      pairs/train.pkl, val.pkl, ...         with pair_lists: document 000's lists, unpaired for training

Every subject depends only on (seed, its number): the same seed gives the same bytes, more subjects extend a
cohort without changing the first ones, and an interrupted run completes only the subjects that are missing.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from brainlearn.atomic import write_json
from brainlearn.cohort.anatomy import load_anatomy
from brainlearn.cohort.effects import draw_subject
from brainlearn.cohort.mri import EXTERNAL_SITE, SITES
from brainlearn.cohort.subject import COARSE_SPACING_MM, SubjectImages, generate_subject
from brainlearn.errors import BrainlearnError
from brainlearn.io import write_image

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
PRESETS = ("ad", "ms", "aging", "all")
INTERNAL_SITES = tuple(name for name in SITES if name != EXTERNAL_SITE)


@dataclass
class CohortReport:
    """What :func:`generate_cohort` did."""

    n_subjects: int
    n_generated: int
    seconds: float
    table: pd.DataFrame


def generate_cohort(
    out: str | Path,
    *,
    subjects: int = 20,
    spacing: float = 2.0,
    seed: int = 0,
    preset: str = "all",
    difficulty: float = 1.0,
    external: float = 0.15,
    val: float = 0.15,
    test: float = 0.15,
    pair_lists: bool = False,
    jobs: int | None = None,
    progress: bool = True,
) -> CohortReport:
    """Generate (or complete) a cohort of ``subjects`` participants in ``out``.

    Args:
        subjects: number of participants.
        spacing: isotropic voxel size in mm (1 gives the 197×233×189 MNI grid of the template).
        seed: the cohort's seed.
        preset: ``ad`` (CN / MCI / AD), ``ms`` (white-matter lesions), ``aging`` (healthy, 55–90 years) or ``all``.
        difficulty: multiplies every disease effect (0: none, 1: published sizes, 2: twice as strong).
        external: share of participants scanned at the held-out site (``split`` = ``external``).
        val, test: shares of the other participants for validation and testing (split by participant).
        pair_lists: also write document 000's pickled pair lists (``pairs/<split>.pkl``): training MRI with the
            PET of another participant (unpaired), validation and test paired, external MRI only; CN and AD only.
        jobs: worker processes (default: one per CPU core); the output does not depend on it.
    """
    _check(subjects, preset, difficulty, external)
    out = Path(out)
    settings = {
        "format_version": FORMAT_VERSION,
        "spacing": float(spacing),
        "seed": seed,
        "preset": preset,
        "difficulty": float(difficulty),
        "external": float(external),
    }
    _claim(out, settings)
    load_anatomy(spacing), load_anatomy(max(COARSE_SPACING_MM, spacing))  # loaded once, shared by the workers
    start = time.perf_counter()
    results = _run_subjects(out, subjects, settings, jobs=jobs or os.cpu_count() or 1, progress=progress)
    rows, generated = [truth for truth, _ in results], sum(made for _, made in results)
    table = _participants(rows, seed=seed, val=val, test=test)
    _write_participants(table, out / "participants.tsv")
    if pair_lists:
        from brainlearn.cohort.pairlists import write_pair_lists

        write_pair_lists(out, table, seed=seed)
    report = CohortReport(subjects, generated, time.perf_counter() - start, table)
    log.info("%s: %d subjects (%d generated now) in %.1f s", out, subjects, generated, report.seconds)
    return report


def _check(subjects: int, preset: str, difficulty: float, external: float) -> None:
    if subjects < 1:
        raise BrainlearnError(f"cohort: subjects must be at least 1, not {subjects}.")
    if preset not in PRESETS:
        raise BrainlearnError(f"cohort: unknown preset {preset!r}; choose one of {', '.join(PRESETS)}.")
    if not 0 <= difficulty <= 5:
        raise BrainlearnError(f"cohort: difficulty must be between 0 and 5, not {difficulty}.")
    if not 0 <= external < 1:
        raise BrainlearnError(f"cohort: external must be a share in [0, 1), not {external}.")


def _claim(out: Path, settings: dict) -> None:
    path = out / "cohort.json"
    if path.exists():
        saved = json.loads(path.read_text(encoding="utf-8"))
        if saved != settings:
            changed = ", ".join(f"{k}: {saved.get(k)!r} -> {v!r}" for k, v in settings.items() if saved.get(k) != v)
            raise BrainlearnError(
                f"{out}: holds a cohort generated with other settings ({changed}). Choose another --out folder."
            )
    write_json(path, settings)


def _run_subjects(out: Path, n: int, settings: dict, *, jobs: int, progress: bool) -> list[tuple[dict, int]]:
    """Generate the missing subjects, in ``jobs`` forked workers (each with one torch thread)."""
    from rich.progress import Progress

    results: list = [None] * n
    with Progress(disable=not progress) as bar:
        task = bar.add_task("generating subjects", total=n)
        if jobs <= 1 or n == 1:
            for index in range(n):
                results[index] = _subject(out, index, settings)
                bar.advance(task)
            return results
        context = multiprocessing.get_context("fork")
        with ProcessPoolExecutor(max_workers=jobs, mp_context=context, initializer=_one_thread) as pool:
            futures = {pool.submit(_subject, out, index, settings): index for index in range(n)}
            for future in as_completed(futures):
                results[futures[future]] = future.result()
                bar.advance(task)
    return results


def _one_thread() -> None:
    import torch

    torch.set_num_threads(1)


def _subject(out: Path, index: int, settings: dict) -> tuple[dict, int]:
    participant_id = f"sub-{index + 1:03d}"
    truth_path = out / "derivatives" / "truth" / participant_id / f"{participant_id}_truth.json"
    if truth_path.exists():
        return json.loads(truth_path.read_text(encoding="utf-8")), 0
    rng = np.random.default_rng([settings["seed"], index])
    site = EXTERNAL_SITE if rng.uniform() < settings["external"] else INTERNAL_SITES[index % len(INTERNAL_SITES)]
    subject = draw_subject(participant_id, rng, preset=settings["preset"], site=site, difficulty=settings["difficulty"])
    anatomy = load_anatomy(settings["spacing"])
    images = generate_subject(subject, anatomy, rng, difficulty=settings["difficulty"])
    _write_subject(out, participant_id, images, anatomy.affine, lesions=settings["preset"] in ("ms", "all"))
    write_json(truth_path, images.truth)  # last: its presence marks the subject complete
    return images.truth, 1


def _write_subject(out: Path, pid: str, images: SubjectImages, affine: np.ndarray, *, lesions: bool) -> None:
    anat, pet, truth = out / pid / "anat", out / pid / "pet", out / "derivatives" / "truth" / pid
    for contrast, suffix in (("t1", "T1w"), ("t2", "T2w"), ("flair", "FLAIR")):
        write_image(anat / f"{pid}_{suffix}.nii.gz", images.mri[contrast], affine)
    if lesions:
        write_image(anat / f"{pid}_label-lesion_mask.nii.gz", images.lesion_mask, affine)
    write_image(pet / f"{pid}_pet.nii.gz", images.pet, affine)
    write_image(truth / f"{pid}_dseg.nii.gz", images.labels, affine)
    write_image(truth / f"{pid}_label-hippocampus_probseg.nii.gz", images.hippocampus, affine)
    write_image(truth / f"{pid}_desc-atrophy_map.nii.gz", images.atrophy, affine)
    write_image(truth / f"{pid}_desc-hypometabolism_map.nii.gz", images.hypometabolism, affine)


def _participants(rows: list[dict], *, seed: int, val: float, test: float) -> pd.DataFrame:
    """participants.tsv: subject-level splits for the internal sites, ``external`` for the held-out site.

    Splits are stratified by diagnosis and age (quantile bins, up to terciles: one bin per 30 participants), so
    that the diagnoses have alike ages in every split: ageing moves the same structures as AD here, and a
    validation split whose AD participants are older than its CN would reward a model for telling age.
    """
    from brainlearn.data.splits import assign_splits, stratum_column

    table = pd.DataFrame([{k: row[k] for k in ("participant_id", "diagnosis", "age", "sex", "site")} for row in rows])
    table["session_id"] = "ses-01"
    internal = table[table["site"] != EXTERNAL_SITE]
    columns = ["diagnosis", "age"] if internal["diagnosis"].notna().any() else ["age"]
    table["split"] = "external"
    if len(internal):
        internal = internal.assign(stratum=stratum_column(internal, columns, bins=max(1, min(3, len(internal) // 30))))
        splits = assign_splits(internal, val=val, test=test, stratify="stratum", seed=seed)
        table.loc[internal.index, "split"] = splits["split"].to_numpy()
    return table[["participant_id", "diagnosis", "age", "sex", "site", "split"]]


def _write_participants(table: pd.DataFrame, path: Path) -> None:
    from brainlearn.atomic import atomic_path

    with atomic_path(path) as tmp:
        table.to_csv(tmp, sep="\t", index=False, na_rep="n/a")
