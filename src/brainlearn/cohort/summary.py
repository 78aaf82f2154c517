"""What a generated cohort shows: the montage and the effect sizes measured on its own output."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from brainlearn.io import read_image
from brainlearn.report.figures import save_montage

MODALITIES = (("T1w", "anat"), ("T2w", "anat"), ("FLAIR", "anat"), ("pet", "pet"))


def save_cohort_montage(root: Path, table: pd.DataFrame, path: Path, *, n: int = 4) -> Path:
    """Three orthogonal slices per modality for the first ``n`` participants (one per diagnosis first)."""
    chosen = table.drop_duplicates("diagnosis").head(n)
    chosen = pd.concat([chosen, table.drop(chosen.index)]).head(n)
    rows = []
    for row in chosen.itertuples():
        pid = row.participant_id
        columns = []
        for suffix, folder in MODALITIES:
            image = read_image(root / pid / folder / f"{pid}_{suffix}.nii.gz")
            columns.append((suffix, image.array, image.spacing))
        title = f"{pid}\n{row.diagnosis if isinstance(row.diagnosis, str) else ''} {row.age:.0f} y {row.site}"
        rows.append((title, columns))
    return save_montage(rows, path)


def measured_effects(truths: list[dict]) -> dict[str, float]:
    """Group means of the achieved effects, per diagnosis: what the cohort really contains."""
    frame = pd.DataFrame(
        {
            "diagnosis": [t["diagnosis"] or "none" for t in truths],
            "hippocampus": [t["hippocampus"]["achieved_factor"] / _age_and_natural(t) for t in truths],
            "ventricles": [t["ventricles"]["achieved_factor"] for t in truths],
            "jacobian_min": [t["jacobian_min"] for t in truths],
            "lesion_ml": [t["lesions"]["volume_mm3"] / 1000 for t in truths],
        }
    )
    metrics: dict[str, float] = {"cohort/jacobian_min": float(frame["jacobian_min"].min())}
    for diagnosis, group in frame.groupby("diagnosis"):
        metrics[f"cohort/{diagnosis}/n"] = len(group)
        metrics[f"cohort/{diagnosis}/hippocampus_disease_factor"] = float(group["hippocampus"].mean())
        metrics[f"cohort/{diagnosis}/ventricle_factor"] = float(group["ventricles"].mean())
        metrics[f"cohort/{diagnosis}/lesion_ml"] = float(group["lesion_ml"].mean())
    return metrics


def _age_and_natural(truth: dict) -> float:
    """The part of the hippocampal target that is not the diagnosis (ageing and natural variability)."""
    hippocampus = truth["hippocampus"]
    return hippocampus["target_factor"] / hippocampus["disease_factor"]


def subjects_per_second(n_generated: int, seconds: float) -> float:
    return float(n_generated / seconds) if seconds > 0 and n_generated else float("nan")


def read_truths(root: Path, table: pd.DataFrame) -> list[dict]:
    import json

    return [
        json.loads((root / "derivatives" / "truth" / pid / f"{pid}_truth.json").read_text(encoding="utf-8"))
        for pid in table["participant_id"]
    ]
