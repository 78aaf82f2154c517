"""Brain-age metrics against scikit-learn and SciPy, bias correction and classification from the gap."""

import numpy as np
import pytest
from scipy import stats
from sklearn import metrics as sk

from brainlearn.errors import BrainlearnError
from brainlearn.metrics_brain_age import (
    BiasCorrection,
    brain_age_gap,
    fit_bias_correction,
    gap_age_correlation,
    gap_classification,
    regression_metrics,
)


def _regressed_to_the_mean(seed, n):
    """Ages 45–85 and predictions that regress to the mean: predicted = 0.6 · age + 28 + noise."""
    rng = np.random.default_rng(seed)
    age = rng.uniform(45, 85, n)
    return age, 0.6 * age + 28 + rng.normal(0, 3, n)


def test_regression_metrics_equal_scikit_learn_and_scipy():
    age, predicted = _regressed_to_the_mean(0, 300)
    result = regression_metrics(age, predicted)
    assert result["mae"] == pytest.approx(sk.mean_absolute_error(age, predicted))
    assert result["rmse"] == pytest.approx(np.sqrt(sk.mean_squared_error(age, predicted)))
    assert result["pearson_r"] == pytest.approx(stats.pearsonr(age, predicted)[0])
    assert result["r2"] == pytest.approx(sk.r2_score(age, predicted))


def test_bias_correction_removes_the_age_trend_of_the_gap():
    # r of a corrected gap on new data varies by about 1 / sqrt(n) per set: 20,000 participants keep it near 0.01
    validation_age, validation_predicted = _regressed_to_the_mean(1, 20_000)
    age, predicted = _regressed_to_the_mean(2, 20_000)
    correction = fit_bias_correction(validation_age, validation_predicted)
    assert correction.slope == pytest.approx(0.6, abs=0.01) and correction.intercept == pytest.approx(28, abs=1)
    raw = gap_age_correlation(age, brain_age_gap(age, predicted))
    corrected = gap_age_correlation(age, brain_age_gap(age, predicted, correction))
    assert raw["pearson_r"] < -0.8 and raw["p_value"] < 1e-10
    assert abs(corrected["pearson_r"]) < 0.05


def test_bias_correction_formula_and_exact_on_its_fitting_data():
    correction = BiasCorrection(slope=0.5, intercept=30.0)
    assert correction.apply([60.0], [62.0]) == pytest.approx([62.0 + 60.0 - 60.0])
    assert correction.apply([80.0], [75.0]) == pytest.approx([75.0 + 80.0 - 70.0])
    age, predicted = _regressed_to_the_mean(3, 200)
    gap = brain_age_gap(age, predicted, fit_bias_correction(age, predicted))
    assert abs(gap_age_correlation(age, gap)["pearson_r"]) < 1e-10
    with pytest.raises(AttributeError):
        correction.slope = 1.0  # frozen


def _gaps(seed, shift, n=100):
    rng = np.random.default_rng(seed)
    labels = np.repeat([0, 1], n)
    return rng.normal(0, 2, 2 * n) + shift * labels, labels, rng.uniform(55, 85, 2 * n)


@pytest.mark.parametrize("kernel", ["linear", "rbf"])
def test_gap_classification_separates_shifted_groups(kernel):
    gap, labels, _ = _gaps(0, shift=5)
    result = gap_classification(gap, labels, kernel=kernel)
    assert result["auc"] > 0.9 and len(result["fold_aucs"]) == result["folds"] == 5
    assert result["decision"].shape == (200,) and "note" not in result


def test_gap_classification_is_at_chance_without_a_shift():
    gap, labels, age = _gaps(1, shift=0)
    assert 0.3 < gap_classification(gap, labels)["auc"] < 0.7
    assert 0.3 < gap_classification(gap, labels, age=age, seed=1)["auc"] < 0.7


def test_gap_classification_lowers_folds_to_the_smallest_class():
    gap = np.r_[np.zeros(10), np.full(3, 5.0)] + np.random.default_rng(0).normal(0, 1, 13)
    labels = np.r_[np.zeros(10), np.ones(3)]
    result = gap_classification(gap, labels, folds=5)
    assert result["folds"] == 3 and len(result["fold_aucs"]) == 3
    assert result["note"].startswith("folds lowered from 5 to 3: class 1 has only 3 participants")


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: regression_metrics([60, 70], [61, 72, 80]), r"one row per participant.*age has 2, predicted has 3"),
        (lambda: regression_metrics([60, np.inf], [61, 70]), r"age has 1 NaN or infinite value\(s\)"),
        (lambda: fit_bias_correction([70, 70, 70], [68, 71, 72]), r"all 3 participants are 70 years old"),
        (lambda: fit_bias_correction([60, 70], [61, 72]), r"expected at least 3 participants, got 2"),
        (lambda: gap_age_correlation([60, 70, 80], [1, 2]), r"age has 3, gap has 2"),
        (lambda: gap_classification([1.0, 2.0, 3.0], [0, 0, 1]), r"class 1 has 1 participant\(s\).*at least 2 per"),
        (lambda: gap_classification([1.0, 2.0], [0, 5]), r"expected labels 0 \(negative\) or 1 \(positive\)"),
        (lambda: gap_classification([1.0] * 4, [0, 1] * 2, kernel="poly"), r"unknown kernel 'poly'"),
        (lambda: gap_classification([1.0] * 4, [0, 1] * 2, age=[60.0]), r"gap has 4, age has 1"),
    ],
)
def test_bad_input_says_what_was_wrong(call, message):
    with pytest.raises(BrainlearnError, match=message):
        call()
