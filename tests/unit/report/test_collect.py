"""Reading run folders for the report: which runs, in which order, and what of each (tiny hand-made folders)."""

import json

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from brainlearn.errors import BrainlearnError
from brainlearn.report.collect import find_runs, summarize_run
from brainlearn.report.curves import curve_panels, save_training_curves
from brainlearn.report.html import format_metric, run_section
from brainlearn.report.volumes import viewer_items

PNG = bytes.fromhex("89504e470d0a1a0a0000000d4948445200000001000000010806000000") + bytes(20)


def make_run(root, command, *, started="2026-12-01 10:00:00", metrics=None, figures=()):
    root.mkdir(parents=True, exist_ok=True)
    (root / "config.yaml").write_text(f"command: {command}\nseed: 0\nnote: <script>alert(1)</script>\n")
    (root / "log.txt").write_text(f"{started},000 INFO brainlearn.runs: brainlearn {command} started\n")
    if metrics is not None:
        (root / "metrics.json").write_text(json.dumps(metrics))
    for name in figures:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(PNG)
    return root


def test_runs_below_a_folder_come_in_the_order_they_started_and_reports_are_left_out(tmp_path):
    make_run(tmp_path, "demo", started="2026-12-01 09:00:00")
    make_run(tmp_path / "b-second", "train classify", started="2026-12-01 11:00:00")
    make_run(tmp_path / "a-third", "train brain-age", started="2026-12-01 12:00:00")
    make_run(tmp_path / "explain" / "first", "explain gradcam", started="2026-12-01 10:00:00")
    make_run(tmp_path / "report", "report")
    names = [root.relative_to(tmp_path).as_posix() for root in find_runs(tmp_path)]
    assert names == [".", "explain/first", "b-second", "a-third"]


def test_a_folder_without_runs_or_missing_is_refused_with_what_to_pass(tmp_path):
    with pytest.raises(BrainlearnError, match="no such folder"):
        find_runs(tmp_path / "absent")
    (tmp_path / "empty").mkdir()
    with pytest.raises(BrainlearnError, match="holds no run .no config.yaml"):
        find_runs(tmp_path / "empty")


def test_a_run_summary_holds_metrics_figures_tables_and_not_the_nested_runs(tmp_path):
    metrics = {"test/roc_auc": [0.8, 0.6, 0.95], "epoch": 3}
    figures = ("figures/a.png", "evaluation/test/roc.png", "evaluation/test/confusion.png")
    make_run(tmp_path, "experiment label-efficiency", metrics=metrics, figures=figures)
    make_run(tmp_path / "nested", "train classify", figures=("figures/nested.png",))
    regions = pd.DataFrame({"region": [f"r{i}" for i in range(30)], "rank": range(1, 31)})
    regions.to_csv(tmp_path / "regions.tsv", sep="\t", index=False)
    summary = summarize_run(tmp_path, tmp_path, viewer_sessions=3)
    assert summary.command == "experiment label-efficiency" and summary.name == "."
    assert summary.metrics == metrics and summary.problems == []
    assert list(summary.figures) == ["evaluation/test", "figures"]
    assert sorted(p.name for p in summary.figures["evaluation/test"]) == ["confusion.png", "roc.png"]
    (table,) = summary.tables
    assert table.title == "regions.tsv" and table.total == 30 and len(table.rows) == 15 and table.rows[0] == ["r0", "1"]


def test_unreadable_files_become_problems_on_the_page_not_a_failed_report(tmp_path):
    make_run(tmp_path, "train classify")
    (tmp_path / "metrics.json").write_text('{"test/roc_auc": [0.8, ')
    (tmp_path / "config.yaml").write_text("command: [unclosed\n")
    summary = summarize_run(tmp_path, tmp_path, viewer_sessions=3)
    assert summary.metrics == {} and "metrics.json: unreadable" in summary.problems[0]
    assert "# unreadable" in summary.config_text
    section = run_section(summary, "demo", "r0", lambda path: path.name, None, [])
    assert "Problems" in section.html and "metrics.json: unreadable" in section.html


def test_page_text_is_escaped(tmp_path):
    make_run(tmp_path, "train classify", metrics={"note<b>": "<img src=x onerror=alert(1)>"})
    summary = summarize_run(tmp_path, tmp_path, viewer_sessions=3)
    html = run_section(summary, "x", "r0", lambda path: path.name, None, []).html
    assert "<script>" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "<img src=x" not in html and "note&lt;b&gt;" in html


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        ([0.8123456, 0.61, 0.95], ("0.8123", "0.61–0.95")),
        (3, ("3", "")),
        (float("nan"), ("n/a", "")),
        ([float("nan"), float("nan"), float("nan")], ("n/a", "n/a–n/a")),
        ("best.ckpt", ("best.ckpt", "")),
        (True, ("True", "")),
        ([1, 2], ("[1, 2]", "")),
    ],
)
def test_metrics_are_shown_with_their_bootstrap_interval(value, shown):
    assert format_metric(value) == shown


LIGHTNING_CSV = """epoch,step,train/loss_epoch,train/loss_step,val/auroc,val/loss
0,3,,0.9,,
0,3,,,0.6,0.8
0,3,0.85,,,
1,7,,0.5,,
1,7,,,0.7,0.6
1,7,0.55,,,
"""


def test_curves_pair_training_epoch_means_with_validation_values(tmp_path):
    (tmp_path / "metrics.csv").write_text(LIGHTNING_CSV)
    x_label, panels = curve_panels(tmp_path / "metrics.csv")
    assert x_label == "epoch" and list(panels) == ["loss", "auroc"]
    assert panels["loss"] == {"train/loss": ([0, 1], [0.85, 0.55]), "val/loss": ([0, 1], [0.8, 0.6])}
    assert panels["auroc"] == {"val/auroc": ([0, 1], [0.6, 0.7])}
    path = save_training_curves(tmp_path / "metrics.csv", tmp_path / "curves.png")
    assert path.read_bytes()[:4] == b"\x89PNG" and path.stat().st_size > 5_000


def test_a_log_without_numbers_draws_nothing_and_a_foreign_csv_is_refused(tmp_path):
    (tmp_path / "empty.csv").write_text("epoch,step,val/loss\n")
    assert save_training_curves(tmp_path / "empty.csv", tmp_path / "c.png") is None
    (tmp_path / "other.csv").write_text("a,b\n1,2\n")
    with pytest.raises(BrainlearnError, match="neither an 'epoch' nor a 'step' column"):
        curve_panels(tmp_path / "other.csv")


def _volume(path, affine, value=1.0):
    data = np.zeros((8, 9, 10), np.float32)
    data[2:5, 3:6, 4:7] = value
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(data, affine), path)
    return path


def test_segmentation_masks_are_shown_over_the_flair_on_their_grid_with_the_truth(tmp_path):
    grid, other = np.diag([2.0, 2.0, 2.0, 1.0]), np.diag([1.0, 1.0, 1.0, 1.0])
    flair = _volume(tmp_path / "data" / "flair.nii.gz", grid)
    t1 = _volume(tmp_path / "data" / "t1.nii.gz", other)  # another grid: not a base for the mask
    truth = _volume(tmp_path / "data" / "mask.nii.gz", grid)
    index = pd.DataFrame(
        {"participant_id": ["sub-01"], "session_id": ["ses-01"], "t1_source": [t1], "flair_source": [flair]}
        | {"mask_source": [truth]}
    )
    (tmp_path / "cache").mkdir()
    index.to_csv(tmp_path / "cache" / "index.tsv", sep="\t", index=False)
    run = make_run(tmp_path / "segment", "train segment")
    (run / "config.yaml").write_text(f"command: train segment\ncache: {tmp_path / 'cache'}\n")
    for i in range(1, 5):
        _volume(run / "evaluation" / "test" / "masks" / f"sub-0{i}_ses-01_lesions.nii.gz", grid)
    items = viewer_items(summarize_run(run, run, viewer_sessions=3), limit=3)
    assert len(items) == 3 and items[0].title.startswith("sub-01 ses-01 (test)")
    assert [(layer.path.name, layer.colormap) for layer in items[0].layers] == [
        ("flair.nii.gz", "gray"),
        ("mask.nii.gz", "green"),
        ("sub-01_ses-01_lesions.nii.gz", "red"),
    ]
    assert [layer.path.name for layer in items[1].layers] == ["sub-02_ses-01_lesions.nii.gz"]  # nothing to put under


def test_importance_maps_are_shown_over_the_image_they_explain(tmp_path):
    grid = np.diag([2.0, 2.0, 2.0, 1.0])
    t1 = _volume(tmp_path / "t1.nii.gz", grid)
    table = tmp_path / "participants.tsv"
    pd.DataFrame({"participant_id": ["sub-01"], "session_id": ["ses-01"], "t1": [t1], "diagnosis": ["AD"]}).to_csv(
        table, sep="\t", index=False
    )
    run = make_run(tmp_path / "explain", "explain gradcam")
    (run / "config.yaml").write_text(f"command: explain gradcam\ntable: {table}\ncache: null\n")
    _volume(run / "maps" / "m.nii.gz", grid, value=0.7)
    pd.DataFrame(
        {"participant_id": ["sub-01"], "session_id": ["ses-01"], "diagnosis": ["AD"], "map_gradcam": ["maps/m.nii.gz"]}
    ).to_csv(run / "sessions.tsv", sep="\t", index=False)
    (item,) = viewer_items(summarize_run(run, run, viewer_sessions=3), limit=3)
    assert "gradcam importance" in item.title
    assert [(layer.path.name, layer.kind) for layer in item.layers] == [("t1.nii.gz", "image"), ("m.nii.gz", "map")]
