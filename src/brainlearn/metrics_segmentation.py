"""Lesion-segmentation metrics: overlap, boundary distance, volume and lesion-wise detection, per subject and summary.

Conventions (each documented where it applies):

- masks are boolean (or 0/1) arrays of shape (D, H, W) or (H, W) on one voxel grid; ``spacing`` is the voxel size
  in mm along each axis, in the array's axis order;
- Dice is 1 when prediction and truth are both empty and 0 when exactly one is (as ISLES'22 and MONAI's
  ``compute_dice(ignore_empty=False)``);
- HD95 follows MONAI's ``compute_hausdorff_distance(percentile=95)`` and is NaN when either mask is empty;
- lesions are connected components with full connectivity (26 neighbours in 3D, 8 in 2D);
- a threshold for probability maps is chosen on validation subjects with :func:`best_threshold`, never on test.

Typical use::

    threshold = best_threshold(val_probabilities, val_truths)
    table = segmentation_table({pid: (probability >= threshold, truth, spacing) for ...})
    summary = summarize(table)  # {metric: Interval(mean, lower, upper)} over subjects
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd
from scipy import ndimage

from brainlearn.errors import BrainlearnError
from brainlearn.metrics import Interval, bootstrap

logger = logging.getLogger(__name__)

_MM3_PER_ML = 1000.0


def segmentation_metrics(
    prediction: np.ndarray,
    truth: np.ndarray,
    spacing: Sequence[float] | None = None,
    *,
    min_lesion_voxels: int = 1,
) -> dict[str, float]:
    """Overlap, boundary, volume and lesion-wise metrics of one subject's predicted lesion mask.

    Args:
        prediction: (D, H, W) or (H, W) predicted mask, bool or 0/1; threshold probabilities first.
        truth: reference mask of the same shape, on the same grid.
        spacing: voxel size in mm per axis, in the array's axis order; default 1 mm along every axis. A 2D mask is
            treated as one slice 1 mm thick for its volumes.
        min_lesion_voxels: connected components with fewer voxels are left out of the lesion-wise metrics (in
            prediction and truth alike; Dice, HD95 and volumes use every voxel). The default, 1, keeps every
            component.

    Returns:
        - ``dice``: 2|P∩T| / (|P| + |T|); 1.0 when both masks are empty, 0.0 when exactly one is.
        - ``hd95`` (mm): 95th-percentile symmetric Hausdorff distance between the mask surfaces, as MONAI's
          ``compute_hausdorff_distance(percentile=95, spacing=spacing)``: surface voxels are mask voxels with a
          face-neighbour outside the mask (or outside the grid); the larger of the two directed 95th percentiles
          of Euclidean distances from each surface voxel to the nearest surface voxel of the other mask. NaN when
          either mask is empty.
        - ``volume_true_ml``, ``volume_pred_ml``: mask volumes in ml; ``volume_difference_ml``: predicted − true.
        - ``avd`` (%): absolute volume difference |V_pred − V_true| / V_true · 100; NaN when the truth is empty.
        - lesion-wise (MSSEG / ISBI style, a lesion is detected when one voxel overlaps): ``lesion_tpr`` (true
          lesions hit by a predicted voxel / true lesions; NaN without true lesions), ``lesion_precision``
          (predicted components hitting a true lesion / predicted components; NaN without predicted ones),
          ``lesion_f1`` (2 · precision · tpr / (precision + tpr), an undefined factor counting as 0; 1.0 when
          neither mask has a lesion), ``lesion_fp`` (predicted components overlapping no true lesion),
          ``n_true_lesions`` and ``n_pred_lesions``.
    """
    prediction, truth = _check_mask_pair(prediction, truth, "segmentation_metrics")
    spacing = _check_spacing(spacing, truth.ndim, "segmentation_metrics")
    if min_lesion_voxels < 1:
        raise BrainlearnError(
            f"segmentation_metrics: expected min_lesion_voxels of at least 1 (1 keeps every lesion), got "
            f"{min_lesion_voxels}."
        )
    return {
        "dice": _dice(prediction, truth),
        "hd95": _hausdorff_distance_95(prediction, truth, spacing),
        **_volume_metrics(prediction, truth, spacing),
        **_lesion_metrics(prediction, truth, min_lesion_voxels),
    }


def _dice(prediction: np.ndarray, truth: np.ndarray) -> float:
    """Dice overlap of two boolean masks of one shape: 1.0 when both are empty, 0.0 when exactly one is."""
    total = int(np.count_nonzero(prediction)) + int(np.count_nonzero(truth))
    if total == 0:
        return 1.0
    return 2.0 * int(np.count_nonzero(prediction & truth)) / total


def _hausdorff_distance_95(prediction: np.ndarray, truth: np.ndarray, spacing: Sequence[float]) -> float:
    """95th-percentile symmetric surface distance in mm of two boolean masks; NaN when either is empty.

    Matches MONAI's ``compute_hausdorff_distance(percentile=95)``: the maximum of the two directed percentiles, not
    the percentile of the pooled distances (see :func:`segmentation_metrics`).
    """
    if not prediction.any() or not truth.any():
        return np.nan
    # Surface voxels and their distances all lie inside the bounding box of the union, so cropping to it is exact:
    # a mask voxel on the box's border has its outside neighbours outside the union too.
    box = ndimage.find_objects((prediction | truth).astype(np.uint8))[0]
    surface_pred, surface_true = _surface(prediction[box]), _surface(truth[box])
    pred_to_true = ndimage.distance_transform_edt(~surface_true, sampling=spacing)[surface_pred]
    true_to_pred = ndimage.distance_transform_edt(~surface_pred, sampling=spacing)[surface_true]
    return float(max(np.percentile(pred_to_true, 95), np.percentile(true_to_pred, 95)))


def _surface(mask: np.ndarray) -> np.ndarray:
    """Mask voxels with a face-neighbour outside the mask; voxels on the grid's border count (as in MONAI)."""
    return mask & ~ndimage.binary_erosion(mask, border_value=0)


def _volume_metrics(prediction: np.ndarray, truth: np.ndarray, spacing: Sequence[float]) -> dict[str, float]:
    voxel_ml = float(np.prod(spacing)) / _MM3_PER_ML
    volume_true = int(np.count_nonzero(truth)) * voxel_ml
    volume_pred = int(np.count_nonzero(prediction)) * voxel_ml
    return {
        "volume_true_ml": volume_true,
        "volume_pred_ml": volume_pred,
        "volume_difference_ml": volume_pred - volume_true,
        "avd": abs(volume_pred - volume_true) / volume_true * 100 if volume_true else np.nan,
    }


def _lesion_metrics(prediction: np.ndarray, truth: np.ndarray, min_lesion_voxels: int) -> dict[str, float]:
    true_labels, n_true = _lesions(truth, min_lesion_voxels)
    pred_labels, n_pred = _lesions(prediction, min_lesion_voxels)
    true_hit = np.unique(true_labels[(pred_labels > 0) & (true_labels > 0)]).size
    pred_hit = np.unique(pred_labels[(true_labels > 0) & (pred_labels > 0)]).size
    tpr = true_hit / n_true if n_true else np.nan
    precision = pred_hit / n_pred if n_pred else np.nan
    if n_true == 0 and n_pred == 0:
        f1 = 1.0
    else:
        tpr_or_0, precision_or_0 = np.nan_to_num(tpr), np.nan_to_num(precision)
        total = tpr_or_0 + precision_or_0
        f1 = 2 * tpr_or_0 * precision_or_0 / total if total else 0.0
    return {
        "lesion_tpr": tpr,
        "lesion_precision": precision,
        "lesion_f1": float(f1),
        "lesion_fp": int(n_pred - pred_hit),
        "n_true_lesions": n_true,
        "n_pred_lesions": n_pred,
    }


def _lesions(mask: np.ndarray, min_voxels: int) -> tuple[np.ndarray, int]:
    """Connected components with full connectivity (26 in 3D), numbered 1 … n, those under ``min_voxels`` dropped."""
    labels, n = ndimage.label(mask, structure=ndimage.generate_binary_structure(mask.ndim, mask.ndim))
    if min_voxels <= 1 or n == 0:
        return labels, int(n)
    kept = np.bincount(labels.ravel(), minlength=n + 1) >= min_voxels
    kept[0] = False
    renumber = np.zeros(n + 1, dtype=labels.dtype)
    renumber[kept] = np.arange(1, np.count_nonzero(kept) + 1)
    return renumber[labels], int(np.count_nonzero(kept))


def _check_mask_pair(prediction: object, truth: object, where: str) -> tuple[np.ndarray, np.ndarray]:
    """Both masks as boolean arrays of one 2D or 3D shape; raise a readable error otherwise."""
    prediction, truth = _as_mask(prediction, "prediction", where), _as_mask(truth, "truth", where)
    if prediction.shape != truth.shape:
        raise BrainlearnError(
            f"{where}: prediction has shape {prediction.shape} but truth has shape {truth.shape}; expected the same "
            "voxel grid. Resample the prediction onto the truth's grid (nearest neighbour) first."
        )
    return prediction, truth


def _as_mask(values: object, name: str, where: str) -> np.ndarray:
    """``values`` as a boolean 2D or 3D array; raise unless it is bool or holds only 0 and 1."""
    array = np.asarray(values)
    if array.ndim not in (2, 3):
        raise BrainlearnError(
            f"{where}: expected {name} as a 2D or 3D mask, got shape {array.shape}. Drop batch and channel axes "
            "(e.g. mask[0, 0]) first."
        )
    if array.dtype == bool:
        return array
    if not np.issubdtype(array.dtype, np.number):
        raise BrainlearnError(f"{where}: expected {name} as a numeric or boolean mask, got dtype {array.dtype}.")
    other = array[(array != 0) & (array != 1)]
    if other.size:
        raise BrainlearnError(
            f"{where}: expected {name} as a binary mask (bool or 0/1), got other values such as "
            f"{np.unique(other)[:3].tolist()}. Threshold probabilities first (mask = probability >= threshold, with "
            "the threshold from best_threshold on validation subjects), or pick one label (mask = labels == k)."
        )
    return array.astype(bool)


def _check_spacing(spacing: Sequence[float] | None, ndim: int, where: str) -> tuple[float, ...]:
    """Voxel size in mm per axis (default 1 mm each); raise unless one positive finite value per axis."""
    if spacing is None:
        return (1.0,) * ndim
    values = np.asarray(spacing, dtype=float).ravel()
    if values.size != ndim:
        raise BrainlearnError(
            f"{where}: expected spacing with {ndim} values (mm per axis of the {ndim}D mask), got {spacing!r}. "
            "Pass the voxel size of the image, e.g. its header's zooms."
        )
    if not (np.isfinite(values).all() and (values > 0).all()):
        raise BrainlearnError(f"{where}: expected positive voxel sizes in mm, got spacing {spacing!r}.")
    return tuple(float(value) for value in values)


def segmentation_table(
    subjects: Mapping[str, Sequence] | Iterable[Sequence],
    *,
    spacing: Sequence[float] | None = None,
    min_lesion_voxels: int = 1,
) -> pd.DataFrame:
    """:func:`segmentation_metrics` of every subject, one row each.

    Args:
        subjects: either ``{participant_id: (prediction, truth[, spacing])}`` or an iterable of
            ``(participant_id, prediction, truth[, spacing])``; masks as in :func:`segmentation_metrics`.
        spacing: voxel size in mm per axis for subjects that do not give their own; default 1 mm.
        min_lesion_voxels: see :func:`segmentation_metrics`.

    Returns:
        A table with a ``participant_id`` column and one column per metric, in the order given.
    """
    rows = []
    for participant_id, prediction, truth, own_spacing in _subject_entries(subjects):
        try:
            metrics = segmentation_metrics(
                prediction, truth, spacing if own_spacing is None else own_spacing, min_lesion_voxels=min_lesion_voxels
            )
        except BrainlearnError as error:
            raise BrainlearnError(f"participant {participant_id}: {error}") from error
        rows.append({"participant_id": participant_id, **metrics})
    if not rows:
        raise BrainlearnError("segmentation_table: got no subjects; pass at least one (prediction, truth) pair.")
    table = pd.DataFrame(rows)
    duplicated = table["participant_id"][table["participant_id"].duplicated()].unique().tolist()
    if duplicated:
        raise BrainlearnError(
            f"segmentation_table: participants {duplicated[:5]} appear more than once; pass one mask pair each."
        )
    return table


def _subject_entries(subjects: Mapping[str, Sequence] | Iterable[Sequence]) -> Iterable[tuple]:
    """(participant_id, prediction, truth, spacing or None) of each subject."""
    if isinstance(subjects, Mapping):
        subjects = (
            (key, *value) if isinstance(value, tuple | list) else (key, value) for key, value in subjects.items()
        )
    for entry in subjects:
        if not isinstance(entry, Sequence) or len(entry) not in (3, 4):
            length = len(entry) if isinstance(entry, Sequence) else type(entry).__name__
            raise BrainlearnError(
                "segmentation_table: expected (participant_id, prediction, truth[, spacing]) for each subject (or "
                f"participant_id: (prediction, truth[, spacing]) in a dict), got an entry of length {length}."
            )
        yield (*entry, None) if len(entry) == 3 else tuple(entry)


def summarize(
    table: pd.DataFrame, n_resamples: int = 2000, seed: int = 0, confidence: float = 0.95
) -> dict[str, Interval]:
    """Mean of each metric over subjects with a percentile-bootstrap interval, resampling subjects.

    Args:
        table: one row per subject, e.g. from :func:`segmentation_table`; every numeric column is summarized.
        n_resamples: bootstrap resamples of the subjects.
        seed: seed of the resampling; the same seed gives the same intervals.
        confidence: coverage of the interval, e.g. 0.95.

    Returns:
        ``{metric: Interval(mean, lower, upper)}``. Subjects with NaN for a metric (e.g. HD95 with an empty mask)
        are left out of that metric only; ``interval.n_subjects`` says how many were used (0 gives NaN).
    """
    columns = [
        name for name in table.columns if name != "participant_id" and pd.api.types.is_numeric_dtype(table[name])
    ]
    if table.empty or not columns:
        raise BrainlearnError(
            f"summarize: expected a table with one row per subject and numeric metric columns, got {len(table)} "
            f"rows and columns {list(table.columns)}. Build it with segmentation_table."
        )
    return {name: _mean_interval(name, table[name].to_numpy(float), n_resamples, seed, confidence) for name in columns}


def _mean_interval(name: str, values: np.ndarray, n_resamples: int, seed: int, confidence: float) -> Interval:
    finite = values[np.isfinite(values)]
    if finite.size < values.size:
        logger.info("%s: %d of %d subjects have a value; the others are left out", name, finite.size, values.size)
    if finite.size == 0:
        interval = Interval(np.nan, np.nan, np.nan, n_valid=0, n_resamples=n_resamples)
    else:
        intervals = bootstrap(_mean, finite, n_resamples=n_resamples, seed=seed, confidence=confidence, stratify=False)
        interval = intervals["mean"]
    interval.n_subjects = int(finite.size)
    return interval


def _mean(values: np.ndarray) -> dict[str, float]:
    return {"mean": float(np.mean(values))}


def best_threshold(
    probabilities: Sequence[np.ndarray], truths: Sequence[np.ndarray], thresholds: Sequence[float] | None = None
) -> float:
    """The probability threshold that maximizes the mean Dice over VALIDATION subjects.

    Never give it test subjects: a threshold tuned on the test set makes every test metric optimistic. Apply the
    result to test probability maps as ``prediction = probability >= threshold``.

    Args:
        probabilities: one (D, H, W) or (H, W) lesion-probability map in [0, 1] per validation subject.
        truths: the matching reference masks (bool or 0/1), same shapes.
        thresholds: candidates; default 0.05, 0.10, …, 0.95.

    Returns:
        The candidate with the highest mean Dice (Dice 1 for a subject whose truth and prediction are both empty);
        of equally good candidates, the lowest.
    """
    where = "best_threshold"
    candidates = np.sort(np.asarray(np.linspace(0.05, 0.95, 19) if thresholds is None else thresholds, dtype=float))
    if candidates.ndim != 1 or candidates.size == 0 or not np.isfinite(candidates).all():
        raise BrainlearnError(f"{where}: expected a 1D list of finite thresholds, got {thresholds!r}.")
    if len(probabilities) != len(truths) or len(truths) == 0:
        raise BrainlearnError(
            f"{where}: expected one probability map per truth mask (at least one), got {len(probabilities)} "
            f"probability maps and {len(truths)} truths. Pass the validation subjects in the same order."
        )
    dices = np.array([_dice_per_threshold(p, t, candidates, where) for p, t in zip(probabilities, truths, strict=True)])
    mean_dice = dices.mean(axis=0)
    best = int(np.argmax(mean_dice))
    logger.info("best_threshold: %.3f gives mean validation Dice %.3f", candidates[best], mean_dice[best])
    return float(candidates[best])


def _dice_per_threshold(probability: object, truth: object, thresholds: np.ndarray, where: str) -> np.ndarray:
    """(T,) Dice of ``probability >= t`` against ``truth`` for each threshold t."""
    probability = np.asarray(probability, dtype=float)
    truth = _as_mask(truth, "truth", where)
    if probability.shape != truth.shape:
        raise BrainlearnError(
            f"{where}: a probability map has shape {probability.shape} but its truth has shape {truth.shape}; "
            "expected the same voxel grid."
        )
    if not (np.isfinite(probability).all() and probability.min() >= 0 and probability.max() <= 1):
        raise BrainlearnError(
            f"{where}: expected probabilities in [0, 1], got values from {np.nanmin(probability):.3g} to "
            f"{np.nanmax(probability):.3g}. Apply a sigmoid or softmax to the network's output first."
        )
    inside, outside = np.sort(probability[truth]), np.sort(probability[~truth])
    tp = inside.size - np.searchsorted(inside, thresholds, side="left")  # voxels >= t
    fp = outside.size - np.searchsorted(outside, thresholds, side="left")
    total = inside.size + tp + fp  # |T| + |P|
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(total > 0, 2 * tp / total, 1.0)
