"""``brainlearn convert`` as the CLI will run it: options, run folder, metrics and log."""

import argparse
import json

import numpy as np
from synthetic_dicom import oblique_affine, write_series

from brainlearn.cli import _add_work_command
from brainlearn.convert.command import CONVERT_COMMAND


def test_convert_command_writes_the_run_folder_and_metrics(tmp_path):
    volume = np.random.default_rng(0).integers(0, 100, (8, 10, 4)).astype(np.int16)
    pet = np.random.default_rng(1).integers(0, 100, (8, 10, 4, 2)).astype(np.int16)
    write_series(tmp_path / "in" / "t1", volume, oblique_affine(), study_uid="1.2.3")
    write_series(tmp_path / "in" / "pet", pet, oblique_affine(), modality="PT", study_uid="1.2.3")
    write_series(tmp_path / "in" / "loc", volume, oblique_affine(), description="localizer", study_uid="1.2.3")
    parser = argparse.ArgumentParser()
    _add_work_command(parser.add_subparsers(), CONVERT_COMMAND)
    run = tmp_path / "run"
    args = parser.parse_args(["convert", "--in", str(tmp_path / "in"), "--out", str(run), "--average-frames", "yes"])
    assert args.handler(args) == 0
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["convert/converted"] == 2 and metrics["convert/skipped"] == 1 and metrics["convert/sessions"] == 1
    assert (run / "series.tsv").exists() and (run / "table.tsv").exists() and (run / "config.yaml").exists()
    log = (run / "log.txt").read_text()
    assert "averaged 2 frames" in log and "localizer" in log
    assert "Jane" not in log and "19420317" not in log


def test_missing_input_is_an_error_that_names_the_option(tmp_path):
    import pytest

    from brainlearn.errors import BrainlearnError
    from brainlearn.runs import Run

    config = {"in": None, "average_frames": False, "out": str(tmp_path)}
    with Run(tmp_path, "convert", config) as run, pytest.raises(BrainlearnError, match="--in DIR_OR_FILE"):
        CONVERT_COMMAND.run(config, run)
