"""``brainlearn report`` on hand-made run folders: several runs side by side, bad input, reruns."""

import json

import pytest

from brainlearn.cli import main

PNG_1PX = bytes.fromhex(
    "89504e470d0a1a0a0000000d49484452000000010000000108060000001f15c4890000000d49444154789c6360f8cfc0f01f0005000201"
    "e527d4b40000000049454e44ae426082"
)


def _run_folder(root, auc, *, started):
    root.mkdir(parents=True)
    (root / "config.yaml").write_text("command: train classify\nmodel: awarenet\n")
    (root / "log.txt").write_text(f"{started},000 INFO brainlearn.runs: brainlearn train classify started\n")
    (root / "metrics.json").write_text(json.dumps({"test/roc_auc": [auc, auc - 0.1, auc + 0.05], "epoch": 2}))
    (root / "evaluation" / "test").mkdir(parents=True)
    (root / "evaluation" / "test" / "roc.png").write_bytes(PNG_1PX)
    (root / "logs").mkdir()
    (root / "logs" / "metrics.csv").write_text("epoch,step,train/loss_epoch,val/loss\n0,1,0.9,\n0,1,,0.8\n1,2,0.7,\n")
    return root


def test_two_runs_side_by_side_with_overrides_after_the_run_folders(tmp_path, capsys):
    first = _run_folder(tmp_path / "a" / "cls", 0.81, started="2026-12-01 10:00:00")
    second = _run_folder(tmp_path / "b" / "cls", 0.64, started="2026-12-01 11:00:00")
    out = tmp_path / "report"
    assert main(["report", str(first), str(second), "viewer_sessions=1", "title=Two runs", "--out", str(out)]) == 0
    html = (out / "index.html").read_text()
    assert "<title>Two runs</title>" in html and 'id="side-by-side"' in html
    assert "<th>a/cls</th><th>b/cls</th>" in html  # same folder name: told apart by their parents
    assert "0.81 0.71–0.86" in html and "0.64 0.54–0.69" in html
    assert html.count('data-name="roc"') == 4  # side by side, then in each run's section
    assert html.count('data-name="curves"') == 2 and len(list((out / "assets").glob("*curves.png"))) == 2
    assert (out / "viewer.js").exists()
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["report/runs"] == 2 and metrics["report/figures"] == 2
    assert "open in a browser" in capsys.readouterr().err + (out / "log.txt").read_text()
    curves = sorted((out / "assets").glob("*curves.png"))
    drawn = [path.stat().st_mtime_ns for path in curves]
    assert main(["report", str(first), str(second), "viewer_sessions=1", "title=Two runs", "--out", str(out)]) == 0
    assert [path.stat().st_mtime_ns for path in curves] == drawn  # the same logs: curves kept, not drawn again
    assert (out / "index.html").read_text().count('data-name="curves"') == 2


def test_the_default_folder_is_inside_the_first_run_and_is_not_reported_again(tmp_path):
    run = _run_folder(tmp_path / "cls", 0.7, started="2026-12-01 10:00:00")
    assert main(["report", str(run)]) == 0
    assert main(["report", str(run), "--overwrite"]) == 0
    html = (run / "report" / "index.html").read_text()
    assert html.count('<section class="run"') == 1


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["report", "{tmp}/absent"], "absent: no such folder"),
        (["report", "{tmp}/empty"], "holds no run (no config.yaml in it or below)"),
        (["report", "{tmp}/x", "{tmp}/x"], "the same run folder is given twice"),
    ],
)
def test_bad_run_folders_are_named_with_what_to_do(tmp_path, capsys, args, message):
    (tmp_path / "x").mkdir()
    (tmp_path / "empty").mkdir()
    (tmp_path / "x" / "config.yaml").write_text("command: cache\n")
    assert main([arg.format(tmp=tmp_path) for arg in args] + ["--out", str(tmp_path / "out")]) == 2
    assert message in capsys.readouterr().err.replace("\n", " ")
