"""Evaluation figures (confusion matrix, ROC curve, brain-age scatter) and the Markdown metrics table.

Figures are drawn with matplotlib's Agg backend (no screen needed) and written atomically, so an interrupted run
leaves no half-written PNG.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from brainlearn.atomic import atomic_path
from brainlearn.errors import BrainlearnError
from brainlearn.metrics import as_labels, as_vector, check_same_length, roc_auc


def save_confusion_matrix(
    labels: Sequence[int], predicted: Sequence[int], classes: Sequence[str], path: str | os.PathLike, *, dpi: int = 110
) -> Path:
    """Save the confusion matrix: counts, with cells coloured by the fraction of each true class.

    Args:
        labels: (N,) true classes 0 … K − 1.
        predicted: (N,) predicted classes 0 … K − 1.
        classes: the K class names, in class order.
        path: the PNG to write.
    """
    where = "save_confusion_matrix"
    n_classes = len(classes)
    if n_classes < 2:
        raise BrainlearnError(f"{where}: expected at least 2 class names, got {list(classes)}.")
    labels = as_labels(labels, where, n_classes=n_classes)
    predicted = as_labels(predicted, where, n_classes=n_classes, name="predicted")
    check_same_length(where, labels=labels, predicted=predicted)
    counts = np.bincount(labels * n_classes + predicted, minlength=n_classes**2).reshape(n_classes, n_classes)
    fractions = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)  # rows of absent classes stay 0
    plt = _pyplot()
    size = 1.2 + 0.9 * n_classes
    fig, axis = plt.subplots(figsize=(size, size))
    axis.imshow(fractions, cmap="Blues", vmin=0, vmax=1)
    for (row, column), count in np.ndenumerate(counts):
        colour = "white" if fractions[row, column] > 0.6 else "black"
        text = f"{count}\n({fractions[row, column]:.0%})"
        axis.text(column, row, text, ha="center", va="center", color=colour, fontsize=8)
    ticks = np.arange(n_classes)
    axis.set_xticks(ticks, [str(name) for name in classes])
    axis.set_yticks(ticks, [str(name) for name in classes])
    axis.set_xlabel("predicted")
    axis.set_ylabel("true")
    return save_figure(fig, path, dpi)


def save_roc(
    labels: Sequence[int],
    scores: Sequence[float],
    path: str | os.PathLike,
    *,
    auc: float | None = None,
    ci: tuple[float, float] | None = None,
    dpi: int = 110,
) -> Path:
    """Save the ROC curve with its AUC (and confidence interval, e.g. from :func:`brainlearn.metrics.bootstrap`).

    Args:
        labels: (N,) 1 = positive, 0 = negative; both must be present.
        scores: (N,) scores of the positive class.
        path: the PNG to write.
        auc: the AUC to print; computed from ``labels`` and ``scores`` when not given.
        ci: ``(lower, upper)`` of the AUC, e.g. ``intervals["roc_auc"][1:]``.
    """
    from sklearn.metrics import roc_curve

    where = "save_roc"
    labels = as_labels(labels, where)
    scores = as_vector(scores, "scores", where=where)
    check_same_length(where, labels=labels, scores=scores)
    if labels.min() == labels.max():
        raise BrainlearnError(f"{where}: the labels hold only class {labels[0]}; a ROC curve needs both classes.")
    if ci is not None and len(ci) != 2:
        raise BrainlearnError(
            f"{where}: expected ci as (lower, upper), got {ci!r}. Pass e.g. intervals['roc_auc'][1:]."
        )
    auc = roc_auc(labels == 1, scores) if auc is None else auc
    legend = f"AUC {auc:.3f}" + (f" (95 % CI {ci[0]:.3f}–{ci[1]:.3f})" if ci is not None else "")
    fpr, tpr, _ = roc_curve(labels, scores)
    plt = _pyplot()
    fig, axis = plt.subplots(figsize=(4.2, 4.2))
    axis.plot(fpr, tpr, lw=1.8, label=legend)
    axis.plot([0, 1], [0, 1], ls="--", lw=0.8, color="grey", label="chance")
    axis.set(xlim=(0, 1), ylim=(0, 1.01), xlabel="1 − specificity", ylabel="sensitivity", aspect="equal")
    axis.legend(loc="lower right", fontsize=8)
    return save_figure(fig, path, dpi)


def save_brain_age_scatter(
    age: Sequence[float], predicted: Sequence[float], path: str | os.PathLike, *, dpi: int = 110
) -> Path:
    """Save predicted against chronological age with the identity line; the title gives the MAE.

    Args:
        age: (N,) chronological ages in years.
        predicted: (N,) predicted ages in years.
        path: the PNG to write.
    """
    where = "save_brain_age_scatter"
    age = as_vector(age, "age", where=where)
    predicted = as_vector(predicted, "predicted", where=where)
    check_same_length(where, age=age, predicted=predicted)
    mae = float(np.mean(np.abs(predicted - age)))
    low, high = min(age.min(), predicted.min()), max(age.max(), predicted.max())
    plt = _pyplot()
    fig, axis = plt.subplots(figsize=(4.2, 4.2))
    axis.scatter(age, predicted, s=10, alpha=0.7)
    axis.plot([low, high], [low, high], ls="--", lw=1, color="grey", label="predicted = age")
    axis.set(xlabel="age (years)", ylabel="predicted age (years)", title=f"MAE {mae:.2f} years (n = {len(age)})")
    axis.set_aspect("equal", adjustable="datalim")
    axis.legend(loc="upper left", fontsize=8)
    return save_figure(fig, path, dpi)


def metrics_table(results: Mapping[str, Sequence[float]], *, confidence: float = 0.95) -> str:
    """A Markdown table ``metric | value | 95 % CI`` of ``{metric: (estimate, lower, upper)}``.

    Values are shown with three decimals and NaN as ``n/a``. For a bootstrap :class:`~brainlearn.metrics.Interval`
    that left out resamples, the CI cell says how many were valid.
    """
    rows = [f"| metric | value | {confidence * 100:g} % CI |", "|---|---|---|"]
    for name, interval in results.items():
        if len(interval) != 3:
            raise BrainlearnError(
                f"metrics_table: expected (estimate, lower, upper) for {name!r}, got {interval!r}. "
                "Pass the result of brainlearn.metrics.bootstrap."
            )
        estimate, lower, upper = (float(value) for value in interval)
        ci = "n/a" if math.isnan(lower) or math.isnan(upper) else f"{lower:.3f} – {upper:.3f}"
        n_valid, n_resamples = getattr(interval, "n_valid", None), getattr(interval, "n_resamples", None)
        if n_valid is not None and n_valid < n_resamples:
            ci += f" ({n_valid}/{n_resamples} resamples valid)"
        rows.append(f"| {name} | {'n/a' if math.isnan(estimate) else f'{estimate:.3f}'} | {ci} |")
    return "\n".join(rows) + "\n"


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: str | os.PathLike, dpi: int) -> Path:
    """Write ``fig`` as a PNG to ``path`` atomically and close it."""
    plt = _pyplot()
    path = Path(path)
    try:
        fig.tight_layout()
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=dpi, format="png")
    finally:
        plt.close(fig)
    return path
