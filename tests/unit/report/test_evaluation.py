"""Evaluation figures are complete PNGs written atomically; the metrics table reads as Markdown."""

import numpy as np
import pytest

from brainlearn.errors import BrainlearnError
from brainlearn.metrics import Interval
from brainlearn.report.evaluation import metrics_table, save_brain_age_scatter, save_confusion_matrix, save_roc

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _assert_png_and_no_partial_files(path):
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    assert [p.name for p in path.parent.iterdir() if p.name.startswith(".partial-")] == []


def test_figures_are_written_as_png(tmp_path):
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, 60)
    predicted = np.where(rng.random(60) < 0.7, labels, rng.integers(0, 3, 60))
    written = save_confusion_matrix(labels, predicted, ["CN", "MCI", "AD"], tmp_path / "figures" / "confusion.png")
    assert written == tmp_path / "figures" / "confusion.png"
    _assert_png_and_no_partial_files(written)

    binary = labels == 2
    scores = binary + rng.normal(0, 0.7, 60)
    _assert_png_and_no_partial_files(save_roc(binary, scores, tmp_path / "roc.png", auc=0.81, ci=(0.7, 0.9)))
    _assert_png_and_no_partial_files(save_roc(binary, scores, tmp_path / "roc_plain.png"))

    age = rng.uniform(50, 85, 60)
    _assert_png_and_no_partial_files(save_brain_age_scatter(age, age + rng.normal(0, 4, 60), tmp_path / "age.png"))


def test_failed_figure_leaves_no_partial_file(tmp_path):
    with pytest.raises(BrainlearnError, match=r"save_roc: the labels hold only class 0; a ROC curve needs both"):
        save_roc([0, 0, 0], [0.1, 0.2, 0.3], tmp_path / "roc.png")
    with pytest.raises(BrainlearnError, match=r"expected predicted integers 0 to 2, got \[3\.0\]"):
        save_confusion_matrix([0, 1], [0, 3], ["CN", "MCI", "AD"], tmp_path / "confusion.png")
    with pytest.raises(BrainlearnError, match=r"expected ci as \(lower, upper\)"):
        save_roc([0, 1], [0.1, 0.2], tmp_path / "roc.png", ci=(0.5, 0.4, 0.6))
    assert list(tmp_path.iterdir()) == []


def test_metrics_table_is_markdown_with_intervals():
    table = metrics_table(
        {
            "accuracy": (0.8125, 0.75, 0.875),
            "roc_auc": Interval(0.9, 0.8, 0.95, n_valid=1990, n_resamples=2000),
            "specificity": (float("nan"), float("nan"), float("nan")),
        }
    )
    assert table.splitlines() == [
        "| metric | value | 95 % CI |",
        "|---|---|---|",
        "| accuracy | 0.812 | 0.750 – 0.875 |",
        "| roc_auc | 0.900 | 0.800 – 0.950 (1990/2000 resamples valid) |",
        "| specificity | n/a | n/a |",
    ]
    with pytest.raises(BrainlearnError, match=r"expected \(estimate, lower, upper\) for 'mae', got \(1\.0, 2\.0\)"):
        metrics_table({"mae": (1.0, 2.0)})
