"""Predictions of a trained model on any set of sessions, and the metrics with confidence intervals.

Rules kept here (document 000/001/004 broke them): the decision threshold of a binary classifier and the brain-age
bias correction are fitted on the validation split of the training run and stored in the run folder
(``selection.json``); test data only ever gets scored. Sensitivity is the recall of the positive class (the last
class, e.g. AD). Intervals are percentile bootstraps over participants.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader

from brainlearn.atomic import atomic_path, write_json
from brainlearn.errors import BrainlearnError
from brainlearn.fast import inference_autocast
from brainlearn.metrics import binary_metrics, bootstrap, multiclass_metrics

log = logging.getLogger(__name__)


@torch.no_grad()
def predict(module: torch.nn.Module, dataset, *, batch_size: int = 2) -> pd.DataFrame:
    """One row per session: ids, diagnosis, age, label and the model's output.

    A classifier's output becomes ``p_<class>`` columns (probabilities); a brain-age model's ``predicted_age``.
    """
    module.eval()
    rows, outputs = [], []
    for batch in DataLoader(dataset, batch_size=batch_size, shuffle=False):
        with inference_autocast(module.device):
            outputs.append(module(batch["image"].to(module.device)).float().cpu())
        for i in range(len(batch["label"])):
            rows.append(
                {
                    "participant_id": batch["participant_id"][i],
                    "session_id": batch["session_id"][i],
                    "label": int(batch["label"][i]),
                    "age": float(batch["age"][i]),
                }
            )
    table = pd.DataFrame(rows)
    index = dataset.cache.index.iloc[dataset.rows]
    table["diagnosis"] = index["diagnosis"].to_numpy()
    output = torch.cat(outputs).numpy()
    if output.ndim == 1:
        table["predicted_age"] = output
    else:
        for k, name in enumerate(getattr(module, "classes", range(output.shape[1]))):
            table[f"p_{name}"] = output[:, k]
    return table


def classifier_metrics(
    predictions: pd.DataFrame, classes: Sequence[str], *, threshold: float = 0.5, n_bootstrap: int = 2000, seed=0
) -> dict[str, Any]:
    """Point estimates and bootstrap 95 % intervals: ``{metric: [estimate, lower, upper]}`` plus counts."""
    labels = predictions["label"].to_numpy()
    if (labels < 0).any():
        unknown = sorted(set(predictions.loc[labels < 0, "diagnosis"].astype(str)))
        raise BrainlearnError(f"sessions with diagnoses {unknown} are not among the model's classes {list(classes)}.")
    probabilities = predictions[[f"p_{name}" for name in classes]].to_numpy()
    if len(classes) == 2:
        intervals = bootstrap(
            lambda y, s: binary_metrics(y, s, threshold),
            labels,
            probabilities[:, 1],
            n_resamples=n_bootstrap,
            seed=seed,
        )
    else:
        intervals = bootstrap(
            lambda y, p: multiclass_metrics(y, p, classes=classes),
            labels,
            probabilities,
            n_resamples=n_bootstrap,
            seed=seed,
        )
    result: dict[str, Any] = {name: [round(v, 4) for v in interval] for name, interval in intervals.items()}
    result["n"] = {name: int((labels == k).sum()) for k, name in enumerate(classes)}
    result["threshold"] = threshold if len(classes) == 2 else None
    return result


def predicted_classes(predictions: pd.DataFrame, classes: Sequence[str], threshold: float = 0.5) -> np.ndarray:
    """The class each session is given: the positive class above ``threshold`` (binary), else the most probable."""
    probabilities = predictions[[f"p_{name}" for name in classes]].to_numpy()
    if len(classes) == 2:
        return (probabilities[:, 1] >= threshold).astype(int)
    return probabilities.argmax(1)


def write_classifier_report(
    predictions: pd.DataFrame, classes: Sequence[str], folder: Path, *, threshold: float, n_bootstrap: int
) -> dict[str, Any]:
    """Metrics (JSON and Markdown), predictions (TSV), confusion matrix and ROC figures into ``folder``."""
    from brainlearn.report.evaluation import metrics_table, save_confusion_matrix, save_roc

    metrics = classifier_metrics(predictions, classes, threshold=threshold, n_bootstrap=n_bootstrap)
    write_tsv(predictions, folder / "predictions.tsv")
    write_json(folder / "metrics.json", metrics)
    table = metrics_table({k: v for k, v in metrics.items() if isinstance(v, list)})
    (folder / "metrics.md").write_text(table + "\n", encoding="utf-8")
    labels = predictions["label"].to_numpy()
    save_confusion_matrix(labels, predicted_classes(predictions, classes, threshold), classes, folder / "confusion.png")
    if len(classes) == 2 and len(np.unique(labels)) == 2:
        auc = metrics["roc_auc"]
        save_roc(labels, predictions[f"p_{classes[1]}"], folder / "roc.png", auc=auc[0], ci=(auc[1], auc[2]))
    return metrics


def brain_age_report(
    predictions: pd.DataFrame, folder: Path, *, correction: dict | None, n_bootstrap: int = 2000, folds: int = 5
) -> dict[str, Any]:
    """MAE, RMSE, r, R² (CN sessions), the bias-corrected gap, its age correlation and gap-based classification."""
    from brainlearn.metrics_brain_age import (
        BiasCorrection,
        brain_age_gap,
        gap_age_correlation,
        gap_classification,
        regression_metrics,
    )
    from brainlearn.report.evaluation import save_brain_age_scatter

    age, predicted = predictions["age"].to_numpy(), predictions["predicted_age"].to_numpy()
    fitted = BiasCorrection(correction["slope"], correction["intercept"]) if correction else None
    predictions = predictions.assign(gap=brain_age_gap(age, predicted, fitted))
    healthy = predictions[predictions["diagnosis"].astype(str) == "CN"]
    if len(healthy) < 3:
        healthy = predictions  # a table without CN sessions: report on every session
    intervals = bootstrap(
        regression_metrics,
        healthy["age"].to_numpy(),
        healthy["predicted_age"].to_numpy(),
        n_resamples=n_bootstrap,
        stratify=False,
    )
    metrics: dict[str, Any] = {name: [round(v, 4) for v in interval] for name, interval in intervals.items()}
    metrics["n_cn"] = len(healthy)
    metrics["bias_correction"] = correction
    if len(healthy) >= 3:
        metrics["gap_age_r_corrected"] = gap_age_correlation(healthy["age"], healthy["gap"])["pearson_r"]
        raw_gap = healthy["predicted_age"] - healthy["age"]
        metrics["gap_age_r_raw"] = gap_age_correlation(healthy["age"], raw_gap)["pearson_r"]
    metrics["mean_gap"] = {str(d): float(g.mean()) for d, g in predictions.groupby("diagnosis")["gap"]}
    for patients in ("AD", "MCI"):
        pair = predictions[predictions["diagnosis"].isin(["CN", patients])]
        counts = pair["diagnosis"].value_counts()
        if counts.get("CN", 0) >= 2 and counts.get(patients, 0) >= 2:
            labels = (pair["diagnosis"] == patients).astype(int).to_numpy()
            result = gap_classification(pair["gap"].to_numpy(), labels, folds=folds)
            metrics[f"gap_svm_auc_{patients.lower()}_vs_cn"] = round(float(result["auc"]), 4)
    write_tsv(predictions, folder / "predictions.tsv")
    write_json(folder / "metrics.json", metrics)
    save_brain_age_scatter(healthy["age"], healthy["predicted_age"], folder / "brain_age.png")
    return metrics


def write_tsv(table: pd.DataFrame, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        table.to_csv(tmp, sep="\t", index=False, float_format="%.5g")
