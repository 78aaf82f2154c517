"""Classification metrics, bootstrap confidence intervals and threshold choice.

Conventions (docs/anchors.md, "Lessons"):

- labels are 1 for the positive class (e.g. AD) and 0 for the negative class (e.g. CN);
- sensitivity is the recall of the positive class and specificity the recall of the negative class, never a
  weighted recall (which equals accuracy);
- a decision threshold is chosen on validation data with :func:`choose_threshold`, never on test data.

Brain-age metrics (MAE, bias correction, brain-age gap) live in :mod:`brainlearn.metrics_brain_age`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence

import numpy as np
from scipy.stats import rankdata

from brainlearn.errors import BrainlearnError

logger = logging.getLogger(__name__)

_MAX_STRATA = 20  # more distinct values than this in the first array means it is not a label array


def as_vector(values: object, name: str, *, where: str) -> np.ndarray:
    """``values`` as a finite 1D float array (one value per participant); raise a readable error otherwise."""
    try:
        array = np.asarray(values, dtype=float)
    except (TypeError, ValueError) as error:
        raise BrainlearnError(
            f"{where}: expected numbers for {name}, got {_preview(values)}. Map them to numbers."
        ) from error
    if array.ndim != 1:
        raise BrainlearnError(
            f"{where}: expected {name} as a 1D array (one value per participant), got shape {array.shape}. "
            "Pass one column."
        )
    if array.size == 0:
        raise BrainlearnError(f"{where}: {name} is empty; pass at least one participant.")
    bad = np.flatnonzero(~np.isfinite(array))
    if bad.size:
        raise BrainlearnError(
            f"{where}: {name} has {bad.size} NaN or infinite value(s) (first at row {bad[0]}). "
            "Drop those participants or fix the predictions."
        )
    return array


def as_labels(values: object, where: str, *, n_classes: int = 2, name: str = "labels") -> np.ndarray:
    """``values`` as a 1D integer array of classes 0 … ``n_classes`` − 1; raise a readable error otherwise."""
    array = as_vector(values, name, where=where)
    wrong = ~np.isin(array, np.arange(n_classes))
    if wrong.any():
        expected = "0 (negative) or 1 (positive)" if n_classes == 2 else f"integers 0 to {n_classes - 1}"
        raise BrainlearnError(
            f"{where}: expected {name} {expected}, got {np.unique(array[wrong])[:5].tolist()}. "
            "Map the class names to these integers first."
        )
    return array.astype(int)


def check_same_length(where: str, **arrays: np.ndarray) -> None:
    """Raise unless every array has one row per participant for the same participants."""
    lengths = {name: len(array) for name, array in arrays.items()}
    if len(set(lengths.values())) > 1:
        listed = ", ".join(f"{name} has {n}" for name, n in lengths.items())
        raise BrainlearnError(
            f"{where}: expected one row per participant in every array, but {listed}. "
            "Pass the arrays for the same participants in the same order."
        )


def binary_metrics(labels: Sequence[int], scores: Sequence[float], threshold: float = 0.5) -> dict[str, float]:
    """Threshold-dependent and ranking metrics of a binary classifier.

    Args:
        labels: (N,) true classes, 1 = positive (e.g. AD), 0 = negative (e.g. CN).
        scores: (N,) probability (or any score) of the positive class.
        threshold: a participant is predicted positive when its score is ``>= threshold``. Choose it on validation
            data (:func:`choose_threshold`), never on test data.

    Returns:
        accuracy, balanced_accuracy, sensitivity (recall of class 1), specificity (recall of class 0), precision,
        f1, mcc and roc_auc. A recall (and so balanced accuracy) and roc_auc are NaN when their class is absent,
        as can happen in a bootstrap resample; precision, f1 and mcc follow scikit-learn and are 0 when undefined.
    """
    labels = as_labels(labels, "binary_metrics")
    scores = as_vector(scores, "scores", where="binary_metrics")
    check_same_length("binary_metrics", labels=labels, scores=scores)
    positive = labels.astype(bool)
    predicted = scores >= threshold
    tp = float(np.count_nonzero(predicted & positive))
    fp = float(np.count_nonzero(predicted & ~positive))
    fn = positive.sum() - tp
    tn = (~positive).sum() - fp
    sensitivity = tp / (tp + fn) if tp + fn else np.nan
    specificity = tn / (tn + fp) if tn + fp else np.nan
    mcc_denominator = np.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    return {
        "accuracy": (tp + tn) / len(labels),
        "balanced_accuracy": (sensitivity + specificity) / 2,
        "sensitivity": sensitivity,
        "specificity": specificity,
        "precision": tp / (tp + fp) if tp + fp else 0.0,
        "f1": 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0,
        "mcc": (tp * tn - fp * fn) / mcc_denominator if mcc_denominator else 0.0,
        "roc_auc": roc_auc(positive, scores),
    }


def roc_auc(positive: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve (Mann–Whitney U with mid-ranks for ties); NaN when a class is absent.

    Args:
        positive: (N,) boolean, True for the positive class.
        scores: (N,) scores, higher meaning more likely positive.
    """
    n_pos = int(np.count_nonzero(positive))
    n_neg = len(positive) - n_pos
    if n_pos == 0 or n_neg == 0:
        return np.nan
    ranks = rankdata(scores)
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def multiclass_metrics(
    labels: Sequence[int], probabilities: np.ndarray, *, classes: Sequence[str] | None = None
) -> dict[str, float]:
    """Metrics of a K-class classifier that predicts the most probable class.

    Args:
        labels: (N,) true classes 0 … K − 1.
        probabilities: (N, K) probability of each class.
        classes: K class names used in the per-class keys; default ``0`` … ``K − 1``.

    Returns:
        accuracy, balanced_accuracy, f1_macro, mcc, roc_auc_macro (mean of the one-vs-rest AUCs; NaN unless every
        class is present) and ``sensitivity_<class>`` (recall of each class; NaN for a class absent from labels).
    """
    where = "multiclass_metrics"
    probabilities = np.asarray(probabilities, dtype=float)
    if probabilities.ndim != 2 or probabilities.shape[1] < 2:
        raise BrainlearnError(
            f"{where}: expected probabilities of shape (participants, classes) with at least 2 classes, got shape "
            f"{probabilities.shape}. For one positive-class score per participant use binary_metrics."
        )
    if not np.isfinite(probabilities).all():
        raise BrainlearnError(f"{where}: probabilities contain NaN or infinite values; fix the predictions.")
    n_classes = probabilities.shape[1]
    labels = as_labels(labels, where, n_classes=n_classes)
    check_same_length(where, labels=labels, probabilities=probabilities)
    names = [str(k) for k in range(n_classes)] if classes is None else [str(name) for name in classes]
    if len(names) != n_classes:
        raise BrainlearnError(f"{where}: got {len(names)} class names for {n_classes} probability columns.")
    predicted = probabilities.argmax(axis=1)
    confusion = np.bincount(labels * n_classes + predicted, minlength=n_classes**2).reshape(n_classes, n_classes)
    true_counts, predicted_counts, hits = confusion.sum(axis=1), confusion.sum(axis=0), np.diag(confusion)
    with np.errstate(divide="ignore", invalid="ignore"):
        recall = hits / true_counts
        f1 = 2 * hits / (true_counts + predicted_counts)
    aucs = [roc_auc(labels == k, probabilities[:, k]) for k in range(n_classes)]
    result = {
        "accuracy": hits.sum() / len(labels),
        "balanced_accuracy": float(np.nanmean(recall)),
        "f1_macro": float(np.nanmean(f1)),
        "mcc": _multiclass_mcc(confusion),
        "roc_auc_macro": float(np.mean(aucs)),
    }
    result.update({f"sensitivity_{name}": float(value) for name, value in zip(names, recall, strict=True)})
    return result


def _multiclass_mcc(confusion: np.ndarray) -> float:
    """Gorodkin's K-class Matthews correlation (as scikit-learn), 0 when undefined."""
    confusion = confusion.astype(float)
    true_counts, predicted_counts, n = confusion.sum(axis=1), confusion.sum(axis=0), confusion.sum()
    covariance = np.trace(confusion) * n - true_counts @ predicted_counts
    denominator = np.sqrt((n**2 - true_counts @ true_counts) * (n**2 - predicted_counts @ predicted_counts))
    return float(covariance / denominator) if denominator else 0.0


class Interval(tuple):
    """A metric's point estimate and bootstrap percentile interval; unpacks as ``(estimate, lower, upper)``.

    Attributes:
        n_valid: resamples that gave a finite value (the others, e.g. an undefined AUC, were left out).
        n_resamples: resamples drawn.
    """

    def __new__(cls, estimate: float, lower: float, upper: float, *, n_valid: int, n_resamples: int) -> Interval:
        interval = super().__new__(cls, (float(estimate), float(lower), float(upper)))
        interval.n_valid, interval.n_resamples = n_valid, n_resamples
        return interval

    def __repr__(self) -> str:
        return f"Interval({self[0]!r}, {self[1]!r}, {self[2]!r}, n_valid={self.n_valid}/{self.n_resamples})"


def bootstrap(
    metric_fn: Callable[..., Mapping[str, float]],
    *arrays: Sequence | np.ndarray,
    n_resamples: int = 2000,
    seed: int = 0,
    confidence: float = 0.95,
    stratify: bool = True,
) -> dict[str, Interval]:
    """Percentile bootstrap intervals of every metric that ``metric_fn`` returns, resampling participants.

    Args:
        metric_fn: maps the arrays (e.g. ``labels, scores``) to ``{metric: value}``, e.g. :func:`binary_metrics`.
        *arrays: one row per participant each; the first holds the labels.
        n_resamples: resamples of the participants, drawn with replacement.
        seed: seed of the resampling; the same seed gives the same intervals.
        confidence: coverage of the interval, e.g. 0.95 for the 2.5th to 97.5th percentile.
        stratify: resample within each class of the first array, so that every resample keeps each class at its
            original count. Pass False when the first array is continuous (e.g. age for regression metrics).

    Returns:
        ``{metric: Interval(estimate on all participants, lower, upper)}``. NaN resample values are left out; a
        metric whose ``n_valid`` is below ``n_resamples`` is also logged as a warning.
    """
    where = "bootstrap"
    if not arrays:
        raise BrainlearnError(f"{where}: got no arrays; pass e.g. bootstrap(binary_metrics, labels, scores).")
    if not 0 < confidence < 1:
        raise BrainlearnError(f"{where}: expected confidence between 0 and 1 (e.g. 0.95), got {confidence}.")
    if n_resamples < 1:
        raise BrainlearnError(f"{where}: expected n_resamples of at least 1 (e.g. 2000), got {n_resamples}.")
    arrays = tuple(np.asarray(array) for array in arrays)
    check_same_length(where, **{f"array {i + 1}": array for i, array in enumerate(arrays)})
    estimate = metric_fn(*arrays)
    samples = {name: np.empty(n_resamples) for name in estimate}
    for r, rows in enumerate(_resample_rows(arrays[0], n_resamples, seed, stratify)):
        resampled = metric_fn(*(array[rows] for array in arrays))
        for name, values in samples.items():
            values[r] = resampled[name]
    tail = (1 - confidence) / 2 * 100
    intervals = {}
    for name, values in samples.items():
        valid = values[np.isfinite(values)]
        lower, upper = np.percentile(valid, [tail, 100 - tail]) if valid.size else (np.nan, np.nan)
        if valid.size < n_resamples:
            logger.warning(
                "%s: %d of %d resamples gave a finite value; the others were left out", name, valid.size, n_resamples
            )
        intervals[name] = Interval(estimate[name], lower, upper, n_valid=valid.size, n_resamples=n_resamples)
    return intervals


def _resample_rows(labels: np.ndarray, n_resamples: int, seed: int, stratify: bool) -> np.ndarray:
    """(n_resamples, N) row indices drawn with replacement, within each class of ``labels`` when stratified."""
    rng = np.random.default_rng(seed)
    if not stratify:
        return rng.integers(0, len(labels), size=(n_resamples, len(labels)))
    strata = np.unique(labels)
    if len(strata) > _MAX_STRATA:
        raise BrainlearnError(
            f"bootstrap: stratify=True resamples within each class of the first array (the labels), but it has "
            f"{len(strata)} distinct values. Put the labels first, or pass stratify=False for a continuous target "
            "such as age."
        )
    groups = [np.flatnonzero(labels == stratum) for stratum in strata]
    return np.hstack([group[rng.integers(0, len(group), size=(n_resamples, len(group)))] for group in groups])


def choose_threshold(labels: Sequence[int], scores: Sequence[float], criterion: str = "youden") -> float:
    """The decision threshold that maximizes Youden's J = sensitivity + specificity − 1.

    Give it VALIDATION data only, never test data: a threshold tuned on the test set makes every test metric that
    depends on it optimistic (docs/anchors.md, "Lessons"). Apply the result to test scores with
    ``binary_metrics(test_labels, test_scores, threshold)``.

    Args:
        labels: (N,) validation classes, 1 = positive, 0 = negative; both must be present.
        scores: (N,) validation scores of the positive class.
        criterion: only ``"youden"``.

    Returns:
        One of the validation scores; participants with a score ``>= threshold`` are called positive. Of equally
        good thresholds the highest (most specific) is returned.
    """
    where = "choose_threshold"
    if criterion != "youden":
        raise BrainlearnError(f"{where}: unknown criterion {criterion!r}; the only one available is 'youden'.")
    labels = as_labels(labels, where)
    scores = as_vector(scores, "scores", where=where)
    check_same_length(where, labels=labels, scores=scores)
    n_pos = np.count_nonzero(labels)
    if n_pos in (0, len(labels)):
        raise BrainlearnError(
            f"{where}: the validation labels hold only class {labels[0]}; Youden's J needs both classes. "
            "Use a validation split with positive and negative participants."
        )
    order = np.argsort(-scores, kind="stable")
    ordered, positive = scores[order], labels[order].astype(bool)
    last_of_each_score = np.r_[np.flatnonzero(np.diff(ordered)), len(ordered) - 1]
    tpr = np.cumsum(positive)[last_of_each_score] / n_pos
    fpr = np.cumsum(~positive)[last_of_each_score] / (len(labels) - n_pos)
    return float(ordered[last_of_each_score[np.argmax(tpr - fpr)]])


def _preview(values: object) -> str:
    text = repr(values)
    return text if len(text) <= 60 else text[:57] + "..."
