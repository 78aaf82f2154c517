"""``brainlearn convert``: scanner formats (DICOM series, MGZ, MINC, NRRD, Analyze, ECAT) to NIfTI in a run folder."""

from __future__ import annotations

import argparse
import logging
from typing import Any

from brainlearn.cli import Command
from brainlearn.errors import BrainlearnError

log = logging.getLogger(__name__)


def run_convert(config: dict[str, Any], run) -> dict[str, Any]:
    """Convert ``config['in']`` into the run folder; return counts of converted, skipped and failed series."""
    from brainlearn.convert.pipeline import convert_folder

    if not config["in"]:
        raise BrainlearnError("convert needs --in DIR_OR_FILE: a folder of DICOM files or images, or one file.")
    report = convert_folder(config["in"], run.root, average_frames=config["average_frames"])
    log.info("look at: %s (every series and why), %s (the table for preprocess)", report.series_path, report.table_path)
    return {
        "convert/series": len(report.series),
        "convert/converted": report.n_converted,
        "convert/skipped": report.n_skipped,
        "convert/failed": report.n_failed,
        "convert/sessions": len(report.table),
        "convert/ignored_files": report.n_ignored,
    }


def _yes_no(text: str) -> bool:
    if text.lower() in ("true", "yes", "y", "1"):
        return True
    if text.lower() in ("false", "no", "n", "0"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


CONVERT_COMMAND = Command(
    name="convert",
    help="DICOM series, MGZ, MINC, NRRD, Analyze and ECAT to NIfTI in a BIDS-like tree, with a table for preprocess",
    defaults={"in": None, "average_frames": False, "out": "runs/convert"},
    path_keys=("in", "out"),
    run=run_convert,
    options=(
        ("--in", "in", {"metavar": "DIR_OR_FILE", "help": "a folder of DICOM files or images, or one file"}),
        (
            "--average-frames",
            "average_frames",
            {"type": _yes_no, "metavar": "BOOL", "help": "average the frames of 4D PET into one static image (false)"},
        ),
    ),
)
