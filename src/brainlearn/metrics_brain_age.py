"""Brain-age metrics: prediction error, linear bias correction, the brain-age gap and what the gap separates.

A brain-age model regresses towards the mean age of its training set: it over-estimates young and under-estimates
old participants, so the raw gap (predicted − age) correlates negatively with age. The gap is therefore always
reported after a linear bias correction fitted on validation data, together with its correlation to age
(docs/anchors.md, "Lessons")::

    correction = fit_bias_correction(val_age, val_predicted)
    gap = brain_age_gap(test_age, test_predicted, correction)
    gap_age_correlation(test_age, gap)  # should be close to 0
    gap_classification(gap, test_labels)  # e.g. AD vs CN from the gap
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

from brainlearn.errors import BrainlearnError
from brainlearn.metrics import as_labels, as_vector, check_same_length, roc_auc

logger = logging.getLogger(__name__)


def regression_metrics(age: Sequence[float], predicted: Sequence[float]) -> dict[str, float]:
    """Error of predicted ages.

    Args:
        age: (N,) chronological ages in years.
        predicted: (N,) predicted (brain) ages in years.

    Returns:
        mae and rmse (years), pearson_r between age and prediction, and r2 (coefficient of determination of the
        predictions, as scikit-learn's ``r2_score``; negative when worse than predicting the mean age).
    """
    age, predicted = _age_pair(age, predicted, "regression_metrics", minimum=2)
    error = predicted - age
    total = np.sum((age - age.mean()) ** 2)
    return {
        "mae": float(np.mean(np.abs(error))),
        "rmse": float(np.sqrt(np.mean(error**2))),
        "pearson_r": _pearson(age, predicted)[0],
        "r2": float(1 - np.sum(error**2) / total) if total else np.nan,
    }


@dataclass(frozen=True)
class BiasCorrection:
    """Linear age-bias correction of predicted brain ages (Beheshti et al. 2019; de Lange & Cole 2020).

    ``slope`` and ``intercept`` come from regressing predicted age on chronological age in validation data,
    ``predicted ≈ slope · age + intercept``. The correction adds back the offset this line predicts:

        corrected = predicted + (age − (slope · age + intercept))

    so the corrected gap is the residual ``predicted − (slope · age + intercept)``, uncorrelated with age in the
    data it was fitted on. This is the form of Beheshti et al., "Bias-adjustment in neuroimaging-based brain age
    frameworks: a robust scheme", NeuroImage: Clinical 24:102063 (2019) (regressing the gap on age gives the same
    line), as compared in de Lange & Cole, "Commentary: Correction procedures in brain-age prediction", NeuroImage:
    Clinical 26:102229 (2020). It was chosen over the other common form, ``(predicted − intercept) / slope``
    (Cole et al. 2018), because that one divides by the slope and inflates the gap (and its noise) by
    ``1 / slope`` when the model regresses strongly to the mean. Smith et al., NeuroImage 200:528 (2019) extend
    the residual form with non-linear age terms, not used here.

    Attributes:
        slope: change of predicted age per year of age.
        intercept: predicted age at age 0, in years.
    """

    slope: float
    intercept: float

    def apply(self, age: Sequence[float], predicted: Sequence[float]) -> np.ndarray:
        """(N,) bias-corrected predicted ages in years; the correction needs each participant's true age."""
        age, predicted = _age_pair(age, predicted, "BiasCorrection.apply")
        return predicted + (age - (self.slope * age + self.intercept))


def fit_bias_correction(age: Sequence[float], predicted: Sequence[float]) -> BiasCorrection:
    """Fit the :class:`BiasCorrection` line on VALIDATION data (never on the test participants it will correct).

    Args:
        age: (N,) chronological ages of the validation participants, in years; N >= 3 with different ages.
        predicted: (N,) their predicted ages, in years.
    """
    age, predicted = _age_pair(age, predicted, "fit_bias_correction", minimum=3)
    if np.ptp(age) == 0:
        raise BrainlearnError(
            f"fit_bias_correction: all {len(age)} participants are {age[0]:g} years old, so no age trend can be "
            "fitted. Fit the correction on a validation set that spans the age range."
        )
    fit = stats.linregress(age, predicted)
    return BiasCorrection(slope=float(fit.slope), intercept=float(fit.intercept))


def brain_age_gap(
    age: Sequence[float], predicted: Sequence[float], correction: BiasCorrection | None = None
) -> np.ndarray:
    """(N,) brain-age gap (predicted − chronological age) in years, after ``correction`` when given.

    Report the gap with a correction fitted on validation data; without one it correlates with age.
    """
    age, predicted = _age_pair(age, predicted, "brain_age_gap")
    if correction is not None:
        predicted = correction.apply(age, predicted)
    return predicted - age


def gap_age_correlation(age: Sequence[float], gap: Sequence[float]) -> dict[str, float]:
    """Pearson correlation between the brain-age gap and age: ``{"pearson_r", "p_value"}``; NaN for constant input.

    After a good bias correction ``pearson_r`` is close to 0; a clearly negative value means residual bias.
    """
    age, gap = _age_pair(age, gap, "gap_age_correlation", minimum=3, second="gap")
    r, p = _pearson(age, gap)
    return {"pearson_r": r, "p_value": p}


def gap_classification(
    gap: Sequence[float],
    labels: Sequence[int],
    *,
    age: Sequence[float] | None = None,
    folds: int = 5,
    seed: int = 0,
    kernel: str = "linear",
) -> dict:
    """How well the brain-age gap separates two groups (e.g. AD = 1 vs CN = 0), by cross-validated ROC-AUC.

    A support vector machine (scikit-learn ``SVC`` after ``StandardScaler``) is trained on the (bias-corrected)
    gap, plus age as a second feature when ``age`` is given, in stratified k-fold cross-validation over
    participants (one row each). Every participant is scored once, by the model that did not see it.

    Args:
        gap: (N,) brain-age gaps in years.
        labels: (N,) 1 for the group expected to look older (e.g. AD), 0 for the reference group (e.g. CN).
        age: (N,) chronological ages in years, to add as a second feature.
        folds: folds of the cross-validation; lowered to the size of the smallest class when that is smaller.
        seed: seed of the fold assignment.
        kernel: ``"linear"`` or ``"rbf"``.

    Returns:
        ``auc`` (ROC-AUC of all out-of-fold decision values together), ``fold_aucs`` (one per fold),
        ``mean_fold_auc``, ``folds`` (used), ``decision`` ((N,) out-of-fold decision values) and, when the folds
        were lowered, ``note`` saying so.
    """
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC

    where = "gap_classification"
    if kernel not in ("linear", "rbf"):
        raise BrainlearnError(f"{where}: unknown kernel {kernel!r}; choose 'linear' or 'rbf'.")
    gap = as_vector(gap, "gap", where=where)
    labels = as_labels(labels, where)
    check_same_length(where, gap=gap, labels=labels)
    features = gap[:, None]  # (N, 1)
    if age is not None:
        age = as_vector(age, "age", where=where)
        check_same_length(where, gap=gap, age=age)
        features = np.column_stack([gap, age])  # (N, 2)
    used, note = _fold_count(labels, folds, where)
    splitter = StratifiedKFold(n_splits=used, shuffle=True, random_state=seed)
    model = make_pipeline(StandardScaler(), SVC(kernel=kernel))
    decision = cross_val_predict(model, features, labels, cv=splitter, method="decision_function")
    fold_aucs = [roc_auc(labels[test] == 1, decision[test]) for _, test in splitter.split(features, labels)]
    result = {
        "auc": roc_auc(labels == 1, decision),
        "fold_aucs": fold_aucs,
        "mean_fold_auc": float(np.mean(fold_aucs)),
        "folds": used,
        "decision": decision,
    }
    if note:
        result["note"] = note
    return result


def _fold_count(labels: np.ndarray, folds: int, where: str) -> tuple[int, str]:
    """The folds to use and, when fewer than asked, a note explaining why."""
    if folds < 2:
        raise BrainlearnError(f"{where}: expected at least 2 folds, got {folds}.")
    counts = np.bincount(labels, minlength=2)
    smallest = int(counts.argmin())
    if counts[smallest] < 2:
        raise BrainlearnError(
            f"{where}: class {smallest} has {counts[smallest]} participant(s), but cross-validation needs at least "
            f"2 per class (and {folds} for {folds} folds). Add participants of class {smallest}."
        )
    if counts[smallest] >= folds:
        return folds, ""
    note = (
        f"folds lowered from {folds} to {counts[smallest]}: class {smallest} has only {counts[smallest]} "
        "participants, and each fold needs one of each class"
    )
    logger.warning("%s: %s", where, note)
    return int(counts[smallest]), note


def _age_pair(
    age: Sequence[float], other: Sequence[float], where: str, *, minimum: int = 1, second: str = "predicted"
) -> tuple[np.ndarray, np.ndarray]:
    """``age`` and ``other`` as finite 1D arrays of the same length with at least ``minimum`` participants."""
    age = as_vector(age, "age", where=where)
    other = as_vector(other, second, where=where)
    check_same_length(where, age=age, **{second: other})
    if len(age) < minimum:
        raise BrainlearnError(f"{where}: expected at least {minimum} participants, got {len(age)}.")
    return age, other


def _pearson(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Pearson r and its two-sided p-value; NaN when either variable is constant or N < 3 for p."""
    if np.ptp(x) == 0 or np.ptp(y) == 0:
        return np.nan, np.nan
    if len(x) < 3:
        return float(np.corrcoef(x, y)[0, 1]), np.nan
    r, p = stats.pearsonr(x, y)
    return float(r), float(p)
