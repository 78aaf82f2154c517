"""Converting one MGZ, MINC, NRRD, Analyze or ECAT file found in the input folder.

These formats carry no participant or modality, so the converter never guesses them: a file with a BIDS name
(``sub-01_ses-02_T1w.mgz``) goes into the BIDS-like tree and the table; any other file is converted into
``OUT/other/`` under its own path and left out of the table.
"""

from __future__ import annotations

import re
from pathlib import Path

from brainlearn.convert.anonymity import Redactor
from brainlearn.convert.formats import read_volume
from brainlearn.convert.naming import bids_path
from brainlearn.convert.outputs import FAILED, write_volume
from brainlearn.convert.report import source_name
from brainlearn.errors import BrainlearnError

_BIDS_NAME = re.compile(
    r"^(?P<sub>sub-[A-Za-z0-9]+)(?:_(?P<ses>ses-[A-Za-z0-9]+))?(?:_[a-z]+-[A-Za-z0-9]+)*_(?P<suffix>T1w|T2w|FLAIR|pet)$"
)
_SUFFIX_COLUMNS = {"T1w": "t1", "T2w": "t2", "FLAIR": "flair", "pet": "pet"}


def convert_image_file(path: Path, src: Path, out: Path, redactor: Redactor, *, average: bool) -> dict:
    """Convert ``path`` into ``out`` and return its ``series.tsv`` row."""
    relative = source_name([path], src)
    participant, session, column, run = _bids_entities(path)
    if column is not None:
        target = out / bids_path(participant, session, column, run)
        where = "participant, session and modality from the BIDS file name"
    else:
        target = out / "other" / (relative.removesuffix(path.name) + _stem(path.name) + ".nii.gz")
        where = "no participant or modality in this format, so not in the table: add it to a table yourself"
    row = {
        "source": redactor(relative),
        "participant_id": participant,
        "session_id": session,
        "series_number": "",
        "description": "",
        "files": 1,
        "column": column or "",
    }
    try:
        volume = read_volume(path)
    except BrainlearnError as error:
        return row | {"modality": "", "status": FAILED, "reason": redactor(str(error).replace(str(path), relative))}
    outcome = write_volume(
        volume, target, sidecar=None, pet=volume.format == "ECAT" or column == "pet", average=average
    )
    reason = f"{volume.format} read with its orientation; {where}" if outcome.output else outcome.reason
    if outcome.output and outcome.reason:
        reason += f"; {outcome.reason}"
    return row | {
        "modality": volume.format,
        "status": outcome.status,
        "reason": reason,
        "output": outcome.output or "",
        "frames": outcome.frames,
    }


def _bids_entities(path: Path) -> tuple[str, str, str | None, int | None]:
    match = _BIDS_NAME.match(_stem(path.name))
    if not match:
        return "", "", None, None
    run = re.search(r"_run-(\d+)", path.name)
    session = match["ses"] or "ses-01"
    return match["sub"], session, _SUFFIX_COLUMNS[match["suffix"]], int(run[1]) if run else None


def _stem(name: str) -> str:
    """The file name without its format suffix (``T1.mgz`` -> ``T1``)."""
    return name[: name.rfind(".")] if "." in name else name
