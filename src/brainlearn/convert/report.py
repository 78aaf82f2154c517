"""``series.tsv`` (what became of every series and file) and the participants table built from it."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pandas as pd

from brainlearn.atomic import write_text
from brainlearn.convert.anonymity import Redactor
from brainlearn.convert.naming import PlannedSeries
from brainlearn.convert.outputs import CONVERTED

log = logging.getLogger(__name__)

_IMAGE_COLUMNS = ("t1", "t2", "flair", "pet")

SERIES_COLUMNS = (
    "source",  # folder of the series (or the file), relative to the input
    "participant_id",
    "session_id",
    "series_number",
    "modality",  # DICOM Modality, or the file format
    "description",  # SeriesDescription and ProtocolName, identifying words redacted
    "files",
    "column",  # the table column it goes to: t1, t2, flair, pet
    "status",  # converted, skipped or failed
    "reason",
    "output",  # relative to the output folder
    "frames",  # frame times of 4D PET
)


def series_row(item: PlannedSeries, src: Path, redactor: Redactor, **fields) -> dict:
    """The ``series.tsv`` row of a DICOM series; ``fields`` gives status, reason, output and frames."""
    header = item.series.first
    return {
        "source": redactor(source_name(item.series.files, src)),
        "participant_id": item.participant_id,
        "session_id": item.session_id,
        "series_number": "" if header.series_number is None else header.series_number,
        "modality": header.modality,
        "description": redactor(header.description),
        "files": len(item.series.files),
        "column": item.column or "",
        **fields,
    }


def source_name(files: list[Path], src: Path) -> str:
    """The single file, or the folder holding all ``files``, relative to ``src`` (``.`` for ``src`` itself)."""
    common = files[0] if len(files) == 1 else Path(os.path.commonpath([path.parent for path in files]))
    if common == src and src.is_file():
        return src.name
    try:
        return str(common.relative_to(src)) or "."
    except ValueError:
        return str(common)


def write_series_table(rows: list[dict], path: Path) -> pd.DataFrame:
    """Write ``series.tsv`` (atomically) and return it as a frame with absolute ``output`` paths."""
    records = [
        {column: "" if row.get(column) is None else row.get(column) for column in SERIES_COLUMNS} for row in rows
    ]
    frame = pd.DataFrame(records, columns=list(SERIES_COLUMNS))
    frame["output"] = [str(value) for value in frame["output"]]
    frame = frame.sort_values(["participant_id", "session_id", "source"], kind="stable").reset_index(drop=True)
    text = frame.copy()
    text["output"] = [_relative(value, path.parent) for value in text["output"]]
    for column in text.columns:
        text[column] = [" ".join(str(value).split()) for value in text[column]]  # no tabs or line breaks
    write_text(path, text.to_csv(sep="\t", index=False, lineterminator="\n"))
    return frame


def build_table(series: pd.DataFrame, out: Path) -> pd.DataFrame:
    """One row per (participant, session) with one converted image per column.

    When a session holds several converted images of one kind (``run-1``, ``run-2``), the cell is left empty:
    which one to analyse is the user's choice, and a warning says so.
    """
    converted = series[(series["status"] == CONVERTED) & (series["participant_id"] != "") & (series["column"] != "")]
    records = []
    for (participant, session), group in converted.groupby(["participant_id", "session_id"], sort=True):
        record = {"participant_id": participant, "session_id": session}
        for column, images in group.groupby("column"):
            if len(images) == 1:
                record[column] = str(images["output"].iloc[0])
                continue
            names = ", ".join(Path(path).name for path in images["output"])
            log.warning(
                "%s %s: %d %s images (%s); the table leaves %s empty. Put the one to analyse in the table.",
                participant,
                session,
                len(images),
                column,
                names,
                column,
            )
        if len(record) > 2:
            records.append(record)
    if not records:
        log.warning("%s: no series was converted into a table column, so table.tsv lists no session.", out)
    return pd.DataFrame(records, columns=["participant_id", "session_id", *_IMAGE_COLUMNS])


def _relative(value, folder: Path) -> str:
    if not value:
        return ""
    try:
        return str(Path(value).relative_to(folder))
    except ValueError:
        return str(value)
