"""The run folder: resolved config, log, merged metrics, resume and refusal of a different config."""

import json
import logging

import pytest
import yaml

from brainlearn.errors import BrainlearnError
from brainlearn.runs import Run


def test_run_folder_layout_and_log(tmp_path):
    config = {"out": str(tmp_path / "run"), "lr": 1e-4, "modalities": ("t1", "pet")}
    with Run(tmp_path / "run", "cache", config) as run:
        logging.getLogger("brainlearn.test").info("hello from the run")
        run.write_metrics({"a": 1})
        run.write_metrics({"b": 2.5})
        assert run.checkpoints.is_dir() and run.figures.is_dir()
    saved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert saved == {
        "command": "cache",
        "out": str(tmp_path / "run"),
        "lr": 1e-4,
        "modalities": ["t1", "pet"],
    }
    assert json.loads((tmp_path / "run" / "metrics.json").read_text()) == {"a": 1, "b": 2.5}
    assert "hello from the run" in (tmp_path / "run" / "log.txt").read_text()


def test_same_config_resumes_different_config_is_refused(tmp_path):
    Run(tmp_path, "cache", {"lr": 1e-4})
    assert Run(tmp_path, "cache", {"lr": 1e-4}).resumed
    with pytest.raises(
        BrainlearnError, match=r"holds a run with another config:\n  lr: 0.0001 -> 0.001\n.*--overwrite"
    ):
        Run(tmp_path, "cache", {"lr": 1e-3})
    run = Run(tmp_path, "cache", {"lr": 1e-3}, overwrite=True)
    assert yaml.safe_load(run.config_path.read_text())["lr"] == 1e-3


def test_unwritable_folder_gives_a_clear_message(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(BrainlearnError, match="could not write"):
        Run(blocker / "run", "cache", {})
