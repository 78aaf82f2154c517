"""Converting the scanner-format images a participants table points to, before preprocessing.

A table cell may name a DICOM folder (or a single DICOM file), an MGZ, MINC, NRRD, Analyze or ECAT file instead
of a NIfTI. :func:`convert_table_inputs` converts each into ``OUT/<participant_id>/<session_id>/<column>.nii.gz``
and returns the table pointing to the NIfTI files. The column says what the image is, so the DICOM rules that
keep series out of ``brainlearn convert`` (derived, unknown contrast) do not apply; the folder must hold
exactly one series, and it must give one 3D volume (4D PET is averaged only with ``average_frames``).
A conversion is redone only when its source files change (their paths, sizes and times are hashed).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from pathlib import Path

import pandas as pd

from brainlearn.atomic import write_json
from brainlearn.convert.anonymity import Redactor
from brainlearn.convert.dicom import Series, group_series, read_header
from brainlearn.convert.formats import image_format, read_volume
from brainlearn.convert.outputs import CONVERTED, convert_dicom_series, write_volume
from brainlearn.data.tables import DEFAULT_SESSION, IMAGE_COLUMNS
from brainlearn.errors import BrainlearnError

_READY = (".nii", ".nii.gz", ".npy")  # read_image reads these directly
_SAFE = re.compile(r"[^A-Za-z0-9._-]")


def convert_table_inputs(
    table: pd.DataFrame,
    out: str | os.PathLike,
    *,
    average_frames: bool = False,
    failures: list[tuple[str, str, str]] | None = None,
) -> pd.DataFrame:
    """A copy of ``table`` whose non-NIfTI image paths are replaced by NIfTI conversions written under ``out``.

    Args:
        table: a participants table (``participant_id``, optional ``session_id``, image columns t1, t2, flair,
            pet, mask); empty cells and NIfTI / ``.npy`` paths are kept as they are.
        out: the folder for the converted images.
        average_frames: average the frames of a 4D PET into one static image instead of refusing it.
        failures: None raises for any cell that cannot be converted; a list instead receives one
            (participant_id, session_id, reason) per failed session, whose rows are left out of the result (the
            others go on: one bad session must not stop a batch).

    Returns:
        The table with absolute paths to the converted NIfTI files.

    Raises:
        BrainlearnError: without ``failures``, listing every cell that could not be converted (not found, several
            series in one folder, 4D, unreadable), one per line.
    """
    out = Path(out).absolute()
    table = table.copy()
    problems: dict = {}  # table index -> (participant_id, session_id, reasons)
    for column in [column for column in IMAGE_COLUMNS if column in table.columns]:
        for index, cell in table[column].items():
            if not _needs_conversion(cell):
                continue
            row = table.loc[index]
            session = row.get("session_id") if isinstance(row.get("session_id"), str) else DEFAULT_SESSION
            target = out / _safe(row["participant_id"]) / _safe(session) / f"{column}.nii.gz"
            try:
                table.at[index, column] = str(_convert_cell(Path(cell), target, column, average_frames))
            except BrainlearnError as error:
                problems.setdefault(index, (row["participant_id"], session, []))[2].append(f"{column}: {error}")
    if problems and failures is None:
        lines = [f"participant_id {p} {s}, column {r}" for p, s, reasons in problems.values() for r in reasons]
        raise BrainlearnError("could not convert the table's images:\n" + "\n".join(lines))
    for participant, session, reasons in problems.values():
        failures.append((participant, session, "conversion failed: " + "; ".join(reasons)))
    return table.drop(index=list(problems))


def _needs_conversion(cell) -> bool:
    if not isinstance(cell, str | os.PathLike) or not str(cell).strip():
        return False
    return not str(cell).lower().endswith(_READY)


def _convert_cell(source: Path, target: Path, column: str, average: bool) -> Path:
    if not source.exists():
        raise BrainlearnError(f"{source}: not found.")
    files = sorted(p for p in source.rglob("*") if p.is_file()) if source.is_dir() else [source]
    stamp = target.with_name(f".{column}.source.json")
    signature = _signature(files, average)
    if target.exists() and stamp.exists() and json.loads(stamp.read_text(encoding="utf-8")) == signature:
        return target
    pet = column == "pet"
    if source.is_file() and image_format(source) is not None:
        outcome = write_volume(read_volume(source), target, sidecar=None, pet=pet, average=average)
        if outcome.status != CONVERTED:
            raise BrainlearnError(f"{source}: {outcome.reason}")
    else:
        _convert_dicom(source, files, target, pet=pet, average=average)
    write_json(stamp, signature)
    return target


def _convert_dicom(source: Path, files: list[Path], target: Path, *, pet: bool, average: bool) -> None:
    headers = [header for header in map(read_header, files) if header is not None]
    series = group_series(headers)
    if not series:
        raise BrainlearnError(f"{source}: no DICOM file found, and not a NIfTI, MGZ, MINC, NRRD, Analyze or ECAT file.")
    redactor = Redactor(value for header in headers for value in header.identifying)
    if len(series) > 1:
        raise BrainlearnError(
            f"{redactor(str(source))}: holds {len(series)} DICOM series ({_list(series, redactor)}); point the cell "
            "at one series' folder, or run brainlearn convert on the folder and use its table."
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".convert-", dir=target.parent) as work:
        outcome = convert_dicom_series(series[0].files, target, Path(work), redactor=redactor, pet=pet, average=average)
    if outcome.status != CONVERTED:
        raise BrainlearnError(f"{redactor(str(source))}: {outcome.reason}")


def _list(series: list[Series], redactor: Redactor) -> str:
    return "; ".join(f"series {item.first.series_number} {redactor(item.first.description)!r}" for item in series)


def _signature(files: list[Path], average: bool) -> dict:
    digest = hashlib.sha256(str(average).encode())
    for path in files:
        stat = path.stat()
        digest.update(f"{path.absolute()}|{stat.st_size}|{stat.st_mtime_ns}\n".encode())
    return {"sha256": digest.hexdigest()}


def _safe(label) -> str:
    return _SAFE.sub("_", str(label)) or "unknown"
