"""``brainlearn report RUN_DIR [RUN_DIR ...]``: the HTML report of one or several run folders.

See :mod:`brainlearn.report.page` for what the page holds. The report is a run folder of its own (``config.yaml``,
``log.txt``) with ``index.html`` beside ``assets/`` (figures), ``viewer/`` (volumes) and NiiVue's script; move or
zip the whole folder to share it. Without ``--out`` it goes into the first RUN_DIR's ``report/`` folder.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from brainlearn.cli import Command

log = logging.getLogger("brainlearn")


def run_report(config: dict[str, Any], run) -> dict[str, Any]:
    from brainlearn.report.page import write_report

    written = write_report(
        config["runs"],
        run.root,
        viewer_sessions=config["viewer_sessions"],
        max_size=config["max_size"],
        title=config["title"],
    )
    if written.problems:
        log.warning("%d problem(s) with the runs' files are listed on the page", written.problems)
    log.info(
        "report of %d run(s): %d figures, %d volumes in the viewer; open in a browser: %s",
        written.runs,
        written.figures,
        written.volumes,
        written.index.resolve(),
    )
    return {"report/runs": written.runs, "report/figures": written.figures, "report/volumes": written.volumes}


def report_folder(config: dict[str, Any]) -> str:
    """``--out``, or ``report/`` inside the first RUN_DIR."""
    if config["out"]:
        return config["out"]
    if not config["runs"]:
        from brainlearn.errors import BrainlearnError

        raise BrainlearnError("no run folder given: brainlearn report RUN_DIR [RUN_DIR ...]")
    return str(Path(config["runs"][0]) / "report")


REPORT_COMMAND = Command(
    name="report",
    help="write an HTML report (metrics, curves, figures, 3D viewer) of one or several run folders",
    defaults={"runs": [], "viewer_sessions": 3, "max_size": 128, "title": None, "out": None},
    path_keys=("runs", "out"),
    options=(("runs", "runs", {"nargs": "+", "metavar": "RUN_DIR", "help": "run folders to report on"}),),
    run=run_report,
    run_folder=report_folder,
)
