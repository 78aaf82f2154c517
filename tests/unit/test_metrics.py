"""Classification metrics against scikit-learn, bootstrap intervals, threshold choice and input errors."""

import time
from functools import partial

import numpy as np
import pytest
from sklearn import metrics as sk

from brainlearn.errors import BrainlearnError
from brainlearn.metrics import Interval, binary_metrics, bootstrap, choose_threshold, multiclass_metrics


def _binary_data(seed, n=150, signal=1.0):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, n)
    scores = 1 / (1 + np.exp(-(signal * (2 * labels - 1) + rng.normal(size=n))))
    return labels, np.round(scores, 2)  # rounding makes ties, which the AUC must handle like scikit-learn


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("threshold", [0.3, 0.5, 0.7])
def test_binary_metrics_equal_scikit_learn(seed, threshold):
    labels, scores = _binary_data(seed)
    predicted = (scores >= threshold).astype(int)
    result = binary_metrics(labels, scores, threshold)
    expected = {
        "accuracy": sk.accuracy_score(labels, predicted),
        "balanced_accuracy": sk.balanced_accuracy_score(labels, predicted),
        "sensitivity": sk.recall_score(labels, predicted, pos_label=1),
        "specificity": sk.recall_score(labels, predicted, pos_label=0),
        "precision": sk.precision_score(labels, predicted, zero_division=0),
        "f1": sk.f1_score(labels, predicted),
        "mcc": sk.matthews_corrcoef(labels, predicted),
        "roc_auc": sk.roc_auc_score(labels, scores),
    }
    assert result.keys() == expected.keys()
    for name, value in expected.items():
        assert result[name] == pytest.approx(value, abs=1e-12), name


def test_sensitivity_is_recall_of_the_positive_class_not_weighted_recall():
    labels = np.array([1] * 10 + [0] * 90)
    scores = np.array([0.9] * 2 + [0.1] * 8 + [0.1] * 90)  # 2 of 10 positives found, all negatives right
    result = binary_metrics(labels, scores)
    assert result["sensitivity"] == pytest.approx(0.2)
    assert result["specificity"] == pytest.approx(1.0)
    assert result["accuracy"] == pytest.approx(0.92)


def test_single_class_gives_nan_auc_and_recall_not_an_error():
    result = binary_metrics([1, 1, 1], [0.2, 0.7, 0.9])
    assert np.isnan(result["roc_auc"]) and np.isnan(result["specificity"])
    assert result["sensitivity"] == pytest.approx(2 / 3)


@pytest.mark.parametrize("seed", range(3))
def test_multiclass_metrics_equal_scikit_learn_macro(seed):
    rng = np.random.default_rng(seed)
    labels = np.tile(np.arange(4), 30)
    logits = rng.normal(size=(120, 4)) + 1.5 * np.eye(4)[labels]
    probabilities = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    predicted = probabilities.argmax(axis=1)
    result = multiclass_metrics(labels, probabilities, classes=["CN", "EMCI", "LMCI", "AD"])
    assert result["accuracy"] == pytest.approx(sk.accuracy_score(labels, predicted))
    assert result["balanced_accuracy"] == pytest.approx(sk.balanced_accuracy_score(labels, predicted))
    assert result["f1_macro"] == pytest.approx(sk.f1_score(labels, predicted, average="macro"))
    assert result["mcc"] == pytest.approx(sk.matthews_corrcoef(labels, predicted))
    expected_auc = sk.roc_auc_score(labels, probabilities, multi_class="ovr", average="macro")
    assert result["roc_auc_macro"] == pytest.approx(expected_auc)
    recalls = sk.recall_score(labels, predicted, average=None)
    for name, recall in zip(["CN", "EMCI", "LMCI", "AD"], recalls, strict=True):
        assert result[f"sensitivity_{name}"] == pytest.approx(recall)


def test_multiclass_default_class_names_are_indices():
    result = multiclass_metrics([0, 1, 2], np.eye(3))
    assert result["sensitivity_0"] == result["sensitivity_2"] == 1.0 and result["accuracy"] == 1.0


def test_bootstrap_interval_contains_estimate_and_is_reproducible():
    labels, scores = _binary_data(0, n=200)
    first = bootstrap(binary_metrics, labels, scores, n_resamples=500, seed=3)
    again = bootstrap(binary_metrics, labels, scores, n_resamples=500, seed=3)
    other = bootstrap(binary_metrics, labels, scores, n_resamples=500, seed=4)
    assert first == again and first != other
    for name, (estimate, lower, upper) in first.items():
        assert lower <= estimate <= upper, name
        assert estimate == pytest.approx(binary_metrics(labels, scores)[name])


def test_bootstrap_narrows_with_more_participants():
    labels, scores = _binary_data(1, n=1600)
    small = bootstrap(binary_metrics, labels[:100], scores[:100], n_resamples=400)
    large = bootstrap(binary_metrics, labels, scores, n_resamples=400)
    for name in ("accuracy", "sensitivity", "roc_auc"):
        # about 1 / sqrt(n): 4 times narrower in theory, 2 leaves room for chance
        assert large[name][2] - large[name][1] < (small[name][2] - small[name][1]) / 2, name


def test_bootstrap_width_matches_normal_approximation():
    n, p = 400, 0.8
    correct = np.random.default_rng(0).random(n) < p

    def accuracy(hits):
        return {"accuracy": hits.mean()}

    _, lower, upper = bootstrap(accuracy, correct, n_resamples=2000, stratify=False)["accuracy"]
    assert upper - lower == pytest.approx(2 * 1.96 * np.sqrt(p * (1 - p) / n), rel=0.2)


def test_bootstrap_keeps_both_classes_and_is_fast():
    labels, scores = _binary_data(2, n=200)
    start = time.perf_counter()
    result = bootstrap(partial(binary_metrics, threshold=0.4), labels, scores)
    assert time.perf_counter() - start < 5
    assert all(interval.n_valid == interval.n_resamples == 2000 for interval in result.values())


def test_bootstrap_leaves_out_nan_resamples_and_counts_them(caplog):
    labels, scores = np.array([0, 0, 0, 0, 0, 1]), np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.9])
    result = bootstrap(binary_metrics, labels, scores, n_resamples=300, stratify=False)
    auc = result["roc_auc"]
    assert isinstance(auc, Interval) and 0 < auc.n_valid < 300
    assert auc == (1.0, 1.0, 1.0)
    assert "roc_auc: " in caplog.text and "of 300 resamples gave a finite value" in caplog.text


def test_choose_threshold_maximizes_youden_like_roc_curve():
    labels, scores = _binary_data(5, n=300)
    fpr, tpr, thresholds = sk.roc_curve(labels, scores, drop_intermediate=False)
    threshold = choose_threshold(labels, scores)
    assert threshold == pytest.approx(thresholds[np.argmax(tpr - fpr)])
    result = binary_metrics(labels, scores, threshold)
    assert result["sensitivity"] + result["specificity"] - 1 == pytest.approx(np.max(tpr - fpr))


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: binary_metrics([0, 1, 1], [0.1, 0.2]), r"one row per participant.*labels has 3, scores has 2"),
        (lambda: binary_metrics([0, 1], [0.1, np.nan]), r"scores has 1 NaN or infinite value\(s\) \(first at row 1\)"),
        (lambda: binary_metrics([0, 2], [0.1, 0.2]), r"expected labels 0 \(negative\) or 1 \(positive\), got \[2\.0\]"),
        (lambda: binary_metrics(["AD", "CN"], [0.1, 0.2]), r"expected numbers for labels.*Map them to numbers"),
        (lambda: binary_metrics([0, 1], [[0.1, 0.9], [0.2, 0.8]]), r"scores as a 1D array.*got shape \(2, 2\)"),
        (lambda: multiclass_metrics([0, 1], [0.1, 0.2]), r"probabilities of shape \(participants, classes\)"),
        (lambda: multiclass_metrics([0, 1, 3], np.eye(3)), r"expected labels integers 0 to 2, got \[3\.0\]"),
        (lambda: multiclass_metrics([0, 1], np.eye(2), classes=["a"]), r"got 1 class names for 2 probability"),
        (lambda: choose_threshold([1, 1], [0.1, 0.2]), r"only class 1; Youden's J needs both classes"),
        (lambda: choose_threshold([0, 1], [0.1, 0.2], "f1"), r"unknown criterion 'f1'; the only one.*'youden'"),
        (lambda: bootstrap(binary_metrics, [0, 1], [0.3]), r"array 1 has 2, array 2 has 1"),
        (lambda: bootstrap(binary_metrics, [0, 1], [0.3, 0.4], confidence=95), r"between 0 and 1.*got 95"),
        (lambda: bootstrap(lambda a: {"n": len(a)}, np.linspace(40, 80, 30)), r"30 distinct values.*stratify=False"),
    ],
)
def test_bad_input_says_what_was_wrong(call, message):
    with pytest.raises(BrainlearnError, match=message):
        call()


@pytest.mark.parametrize(("metrics", "message"), [(["auc"], r"\(auc unknown\)"), ([], "non-empty list")])
def test_label_efficiency_refuses_unknown_metrics_before_training(metrics, message):
    from brainlearn.experiments import check_metrics

    with pytest.raises(BrainlearnError, match=message):
        check_metrics(metrics)
    check_metrics(["roc_auc", "balanced_accuracy"])
