"""Segmentation metrics against MONAI, hand-computed lesion counts and volumes, summaries, thresholds and errors."""

import warnings

import numpy as np
import pandas as pd
import pytest
import torch
from monai.metrics import compute_dice, compute_hausdorff_distance
from scipy import ndimage

from brainlearn.errors import BrainlearnError
from brainlearn.metrics import Interval
from brainlearn.metrics_segmentation import best_threshold, segmentation_metrics, segmentation_table, summarize

SHAPE = (24, 32, 20)
SPACING = (1.0, 1.2, 2.0)


def _blobs(rng, shape=SHAPE, level=0.2):
    """Random smooth blobs, several connected components."""
    return ndimage.gaussian_filter(rng.normal(size=shape), 2) > level


def _pair(seed, shape=SHAPE):
    """A truth mask and a prediction that overlaps it partly (perturbed edges, some missed and extra blobs)."""
    rng = np.random.default_rng(seed)
    truth = _blobs(rng, shape)
    prediction = (truth & (rng.random(shape) > 0.2)) | _blobs(rng, shape, level=0.35)
    return prediction, truth


def _monai(fn, prediction, truth, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # MONAI warns about empty masks
        return fn(torch.tensor(prediction)[None, None].float(), torch.tensor(truth)[None, None].float(), **kwargs)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("shape", [SHAPE, (40, 28)])
def test_dice_equals_monai(seed, shape):
    prediction, truth = _pair(seed, shape)
    expected = _monai(compute_dice, prediction, truth).item()
    assert 0.2 < expected < 0.95
    assert segmentation_metrics(prediction, truth)["dice"] == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("spacing", [SPACING, None])
def test_hd95_equals_monai_with_anisotropic_spacing(seed, spacing):
    prediction, truth = _pair(seed)
    kwargs = {} if spacing is None else {"spacing": spacing}
    expected = _monai(compute_hausdorff_distance, prediction, truth, percentile=95, **kwargs).item()
    assert segmentation_metrics(prediction, truth, spacing)["hd95"] == pytest.approx(expected, rel=1e-5)


def test_hd95_equals_monai_in_2d_and_for_masks_touching_the_grid_border():
    prediction, truth = _pair(7, (40, 28))
    prediction[0, :] = truth[:, -1] = True
    expected = _monai(compute_hausdorff_distance, prediction, truth, percentile=95, spacing=(0.8, 1.5)).item()
    assert segmentation_metrics(prediction, truth, (0.8, 1.5))["hd95"] == pytest.approx(expected, rel=1e-5)


def test_hd95_of_single_voxels_by_hand():
    truth, prediction = np.zeros(SHAPE, bool), np.zeros(SHAPE, bool)
    truth[5, 5, 5] = prediction[5, 5, 8] = True
    assert segmentation_metrics(prediction, truth, SPACING)["hd95"] == pytest.approx(3 * 2.0)


def test_both_masks_empty():
    empty = np.zeros(SHAPE, bool)
    result = segmentation_metrics(empty, empty, SPACING)
    assert result["dice"] == 1.0 == _monai(compute_dice, empty, empty, ignore_empty=False).item()
    assert np.isnan(result["hd95"]) and np.isnan(result["avd"]) and np.isnan(result["lesion_tpr"])
    assert result["lesion_f1"] == 1.0
    assert (result["lesion_fp"], result["n_true_lesions"], result["n_pred_lesions"]) == (0, 0, 0)
    assert result["volume_true_ml"] == result["volume_pred_ml"] == result["volume_difference_ml"] == 0.0


def test_only_truth_empty():
    prediction, _ = _pair(0)
    result = segmentation_metrics(prediction, np.zeros(SHAPE, bool))
    assert result["dice"] == 0.0 == _monai(compute_dice, prediction, np.zeros(SHAPE), ignore_empty=False).item()
    assert np.isnan(result["hd95"]) and np.isnan(result["avd"]) and np.isnan(result["lesion_tpr"])
    assert result["lesion_precision"] == 0.0 and result["lesion_f1"] == 0.0
    assert result["lesion_fp"] == result["n_pred_lesions"] > 0


def test_only_prediction_empty():
    _, truth = _pair(0)
    result = segmentation_metrics(np.zeros(SHAPE, bool), truth)
    assert result["dice"] == 0.0 and np.isnan(result["hd95"]) and np.isnan(result["lesion_precision"])
    assert result["avd"] == pytest.approx(100.0)
    assert result["lesion_tpr"] == 0.0 and result["lesion_f1"] == 0.0 and result["lesion_fp"] == 0


def _three_lesions_two_predictions():
    truth, prediction = np.zeros(SHAPE, bool), np.zeros(SHAPE, bool)
    truth[2:5, 2:5, 2:5] = True
    truth[10:13, 20:24, 8:10] = True
    truth[18:20, 5:7, 15:18] = True
    prediction[3:6, 3:6, 3:4] = True  # hits the first lesion
    prediction[15:17, 27:30, 1:3] = True  # overlaps nothing
    return prediction, truth


def test_lesion_counts_by_hand():
    result = segmentation_metrics(*_three_lesions_two_predictions())
    assert (result["n_true_lesions"], result["n_pred_lesions"], result["lesion_fp"]) == (3, 2, 1)
    assert result["lesion_tpr"] == pytest.approx(1 / 3)
    assert result["lesion_precision"] == pytest.approx(1 / 2)
    assert result["lesion_f1"] == pytest.approx(2 * (1 / 3) * (1 / 2) / (1 / 3 + 1 / 2))  # 0.4


def test_diagonally_touching_voxels_form_one_lesion():
    truth = np.zeros(SHAPE, bool)
    truth[4, 4, 4] = truth[5, 5, 5] = truth[6, 6, 6] = True  # corner neighbours only: one 26-connected lesion
    prediction = np.zeros(SHAPE, bool)
    prediction[6, 6, 6] = True
    result = segmentation_metrics(prediction, truth)
    assert result["n_true_lesions"] == 1 and result["lesion_tpr"] == 1.0
    flat = np.zeros((20, 30), bool)
    flat[3, 3] = flat[4, 4] = True  # 8-connected in 2D
    assert segmentation_metrics(flat, flat)["n_true_lesions"] == 1


def test_min_lesion_voxels_ignores_small_components():
    prediction, truth = _three_lesions_two_predictions()
    prediction[20, 30, 18] = True  # a one-voxel false positive
    assert segmentation_metrics(prediction, truth)["lesion_fp"] == 2
    result = segmentation_metrics(prediction, truth, min_lesion_voxels=2)
    assert (result["lesion_fp"], result["n_pred_lesions"]) == (1, 2)
    result = segmentation_metrics(prediction, truth, min_lesion_voxels=13)  # the 9- and 12-voxel lesions go
    assert (result["n_true_lesions"], result["n_pred_lesions"], result["lesion_tpr"]) == (2, 0, 0.0)


def test_volumes_and_avd_by_hand():
    truth, prediction = np.zeros(SHAPE, bool), np.zeros(SHAPE, bool)
    truth[0:2, 0:5, 0] = True  # 10 voxels of 1 × 1.2 × 2 = 2.4 mm³
    prediction[0:3, 0:5, 0] = True  # 15 voxels
    result = segmentation_metrics(prediction, truth, SPACING)
    assert result["volume_true_ml"] == pytest.approx(0.024)
    assert result["volume_pred_ml"] == pytest.approx(0.036)
    assert result["volume_difference_ml"] == pytest.approx(0.012)
    assert result["avd"] == pytest.approx(50.0)
    assert result["dice"] == pytest.approx(2 * 10 / 25)


def test_segmentation_table_accepts_a_dict_or_tuples():
    pairs = {f"sub-{i:02d}": _pair(i) for i in range(3)}
    table = segmentation_table({pid: (*pair, SPACING) for pid, pair in pairs.items()})
    assert list(table["participant_id"]) == list(pairs)
    assert table.columns[0] == "participant_id" and "hd95" in table and "lesion_f1" in table
    assert table.loc[1, "dice"] == segmentation_metrics(*pairs["sub-01"], SPACING)["dice"]
    same = segmentation_table([(pid, *pair) for pid, pair in pairs.items()], spacing=SPACING)
    pd.testing.assert_frame_equal(table, same)


def test_segmentation_table_errors_name_the_participant():
    prediction, truth = _pair(0)
    with pytest.raises(BrainlearnError, match=r"participant sub-02: .*\(24, 32, 20\).*\(24, 32, 19\)"):
        segmentation_table({"sub-01": (prediction, truth), "sub-02": (prediction, truth[..., 1:])})
    with pytest.raises(BrainlearnError, match="more than once"):
        segmentation_table([("sub-01", prediction, truth), ("sub-01", prediction, truth)])
    with pytest.raises(BrainlearnError, match=r"participant_id, prediction, truth\[, spacing\].*length 2"):
        segmentation_table([("sub-01", prediction)])


def test_summarize_gives_intervals_around_the_mean_and_leaves_nan_out():
    table = segmentation_table({f"sub-{i:02d}": _pair(i) for i in range(8)})
    table.loc[0, "hd95"] = np.nan  # as for a subject with an empty mask
    summary = summarize(table, n_resamples=300, seed=1)
    assert set(summary) == set(table.columns) - {"participant_id"}
    for name, interval in summary.items():
        assert isinstance(interval, Interval)
        estimate, lower, upper = interval
        assert lower <= estimate <= upper, name
        assert estimate == pytest.approx(table[name].mean(skipna=True)), name
    assert summary["hd95"].n_subjects == 7 and summary["dice"].n_subjects == 8
    assert summary["dice"][1] < summary["dice"][2]
    assert summarize(table, n_resamples=300, seed=1)["dice"] == summary["dice"]


def test_summarize_a_metric_without_values_is_nan():
    empty = np.zeros(SHAPE, bool)
    summary = summarize(segmentation_table({"sub-01": (empty, empty), "sub-02": (empty, empty)}), n_resamples=50)
    assert np.isnan(summary["hd95"]).all() and summary["hd95"].n_subjects == 0
    assert tuple(summary["dice"]) == (1.0, 1.0, 1.0)


def test_best_threshold_picks_the_threshold_the_map_implies():
    truth = np.zeros(SHAPE, bool)
    truth[8:14, 10:18, 6:12] = True
    probability = np.full(SHAPE, 0.1)
    probability[7:15, 9:19, 5:13] = 0.58  # a rim just below the lesion's probability: excluded only from 0.60
    probability[truth] = 0.62  # above 0.62 nothing is predicted
    assert best_threshold([probability, probability], [truth, truth]) == pytest.approx(0.60)
    assert best_threshold([probability], [truth], thresholds=[0.7, 0.5, 0.55]) == pytest.approx(0.5)


def test_best_threshold_prefers_the_lowest_of_equally_good_thresholds():
    truth = np.zeros((20, 30), bool)
    truth[5:9, 5:9] = True
    assert best_threshold([truth * 0.9], [truth]) == pytest.approx(0.05)
    assert best_threshold([np.zeros((20, 30))], [np.zeros((20, 30))]) == pytest.approx(0.05)  # Dice 1 everywhere


def test_mask_errors_say_what_to_do():
    prediction, truth = _pair(0)
    with pytest.raises(BrainlearnError, match=r"prediction has shape \(24, 32, 20\) but truth has shape \(24, 32\)"):
        segmentation_metrics(prediction, truth[..., 0])
    with pytest.raises(BrainlearnError, match=r"binary mask.*0\.3.*Threshold probabilities first"):
        segmentation_metrics(prediction * 0.3, truth)
    with pytest.raises(BrainlearnError, match=r"2D or 3D mask, got shape \(1, 1, 24, 32, 20\)"):
        segmentation_metrics(prediction[None, None], truth[None, None])
    with pytest.raises(BrainlearnError, match=r"spacing with 3 values.*\(1\.0, 2\.0\)"):
        segmentation_metrics(prediction, truth, (1.0, 2.0))
    with pytest.raises(BrainlearnError, match="positive voxel sizes"):
        segmentation_metrics(prediction, truth, (1.0, 0.0, 1.0))
    with pytest.raises(BrainlearnError, match="min_lesion_voxels of at least 1"):
        segmentation_metrics(prediction, truth, min_lesion_voxels=0)
    as_floats = segmentation_metrics(prediction.astype(np.float32), truth.astype(np.uint8))
    assert as_floats == pytest.approx(segmentation_metrics(prediction, truth), nan_ok=True)


def test_best_threshold_errors():
    truth = np.zeros((20, 30), bool)
    with pytest.raises(BrainlearnError, match=r"probabilities in \[0, 1\].*sigmoid"):
        best_threshold([np.full((20, 30), 3.0)], [truth])
    with pytest.raises(BrainlearnError, match="2 probability maps and 1 truths"):
        best_threshold([truth * 0.5, truth * 0.5], [truth])
    with pytest.raises(BrainlearnError, match=r"shape \(20, 29\) but its truth has shape \(20, 30\)"):
        best_threshold([np.zeros((20, 29))], [truth])
