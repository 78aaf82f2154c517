"""Reading a BIDS folder into a participants table, with the same columns and checks as :func:`read_table`.

The part of the layout read (https://bids-specification.readthedocs.io)::

    root/participants.tsv                                 optional: diagnosis, age, sex, site, split
    root/sub-<label>/[ses-<label>/]anat/*_T1w.nii[.gz]    -> t1
                                   anat/*_T2w.nii[.gz]    -> t2
                                   anat/*_FLAIR.nii[.gz]  -> flair
                                   anat/*_mask.nii[.gz]   -> mask (e.g. sub-01_label-lesion_mask.nii.gz)
                                   pet/*_pet.nii[.gz]     -> pet

Everything else (other modalities, ``derivatives/``, JSON sidecars) is ignored.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from brainlearn.data.tables import DEFAULT_SESSION, DIAGNOSES, read_cells, validate_table
from brainlearn.errors import BrainlearnError

logger = logging.getLogger(__name__)

# table column -> (BIDS datatype folder, file name suffix before .nii[.gz])
MODALITIES = {
    "t1": ("anat", "_T1w"),
    "t2": ("anat", "_T2w"),
    "flair": ("anat", "_FLAIR"),
    "mask": ("anat", "_mask"),
    "pet": ("pet", "_pet"),
}
METADATA_COLUMNS = ("diagnosis", "age", "sex", "site", "split")
_LABEL = re.compile(r"[A-Za-z0-9]+")  # BIDS: a label is alphanumeric


def read_bids(root: str | os.PathLike, *, labels: Sequence[str] | None = DIAGNOSES) -> pd.DataFrame:
    """Read the images and clinical values of a BIDS folder as a participants table.

    One row per (participant, session) that holds at least one image. Without ``ses-*`` folders the session
    is ``"ses-01"``. Where several files match one modality (``run-01``, ``run-02``), the first in sorted
    order is used and the others are named in a logged warning. A participant of ``participants.tsv`` without
    images is left out with a warning; images of a participant missing from ``participants.tsv`` are kept
    with empty clinical values.

    Args:
        root: the dataset's top folder (the one holding ``sub-*`` folders).
        labels: the allowed diagnosis labels; ``None`` accepts any text.

    Returns:
        The table as :func:`brainlearn.data.tables.read_table` returns it, image paths absolute.

    Raises:
        BrainlearnError: if ``root`` is missing or not a BIDS folder, ``participants.tsv`` is malformed, or
            a clinical value is wrong (all such problems in one message, naming participant, session, column).
    """
    root = Path(root).absolute()
    subjects = _subjects(root)
    _check_labels(root, subjects)
    metadata = _read_participants(root)
    records = []
    for subject in subjects:
        found = [_images(subject.name, session, folder) for session, folder in _sessions(subject)]
        found = [record for record in found if record]
        if not found:
            logger.warning("%s: no T1w, T2w, FLAIR, mask or PET image found; the participant is left out.", subject)
        records += found
    _warn_without_images(root, metadata, {record["participant_id"] for record in records})
    if not records:
        raise BrainlearnError(
            f"{root}: no images found in any sub-*/[ses-*/]anat or pet folder (expected names ending in "
            "_T1w, _T2w, _FLAIR, _mask or _pet with .nii or .nii.gz)."
        )
    for record in records:
        record.update(metadata.get(record["participant_id"], {}))
    names = [f"participant {record['participant_id']} session {record['session_id']}" for record in records]
    source = f"{root} (BIDS folder; clinical values come from participants.tsv)"
    return validate_table(pd.DataFrame(records), source=source, labels=labels, row_names=names)


def _subjects(root: Path) -> list[Path]:
    if not root.exists():
        raise BrainlearnError(f"{root}: BIDS folder not found. Check the path.")
    if not root.is_dir():
        raise BrainlearnError(f"{root}: is a file, expected a BIDS folder. Read participants tables with read_table.")
    subjects = sorted(path for path in root.glob("sub-*") if path.is_dir())
    if not subjects:
        raise BrainlearnError(
            f"{root}: not a BIDS folder: it holds no sub-<label> folders. Point to the dataset's top folder "
            "(root/sub-01/[ses-01/]anat/sub-01_T1w.nii.gz), or list the images in a participants table."
        )
    return subjects


def _check_labels(root: Path, subjects: list[Path]) -> None:
    """Refuse sub-/ses- folders whose label is not letters and digits: the folder name is the participant_id, and
    one such as 'sub-01 ' would otherwise read as 'sub-01' (table cells are stripped)."""
    folders = subjects + [session for subject in subjects for session in _session_folders(subject)]
    bad = [folder.relative_to(root).as_posix() for folder in folders if not _LABEL.fullmatch(folder.name[4:])]
    if bad:
        shown = ", ".join(repr(name) for name in bad[:5]) + (f" and {len(bad) - 5} more" if len(bad) > 5 else "")
        raise BrainlearnError(
            f"{root}: folder(s) {shown} are not BIDS names: sub-<label> and ses-<label> take a label of letters and "
            "digits only. Rename or move them."
        )


def _session_folders(subject: Path) -> list[Path]:
    return sorted(path for path in subject.glob("ses-*") if path.is_dir())


def _sessions(subject: Path) -> list[tuple[str, Path]]:
    sessions = _session_folders(subject)
    return [(session.name, session) for session in sessions] or [(DEFAULT_SESSION, subject)]


def _images(participant_id: str, session_id: str, folder: Path) -> dict[str, str] | None:
    """The image paths of one session by table column, or None when it holds none."""
    record = {"participant_id": participant_id, "session_id": session_id}
    for column, (datatype, suffix) in MODALITIES.items():
        endings = (f"{suffix}.nii", f"{suffix}.nii.gz")
        matches = sorted(
            path
            for path in (folder / datatype).glob(f"*{suffix}.nii*")
            if path.name.endswith(endings) and not path.name.startswith(".")  # hidden: e.g. an unfinished write
        )
        if len(matches) > 1:
            logger.warning(
                "%s: %d %s images; using %s and ignoring %s.",
                folder / datatype,
                len(matches),
                column,
                matches[0].name,
                ", ".join(path.name for path in matches[1:]),
            )
        if matches:
            record[column] = str(matches[0])
    return record if len(record) > 2 else None


def _read_participants(root: Path) -> dict[str, dict[str, str]]:
    """participant_id -> the clinical values of ``participants.tsv`` (empty when the file is absent)."""
    path = root / "participants.tsv"
    if not path.is_file():
        logger.info("%s: no participants.tsv; clinical values are left empty.", root)
        return {}
    cells = read_cells(path)
    if "participant_id" not in cells.columns:
        raise BrainlearnError(
            f"{path}: no participant_id column (found: {', '.join(cells.columns)}). "
            "A BIDS participants.tsv starts with a participant_id column of sub-<label> values."
        )
    columns = [column for column in METADATA_COLUMNS if column in cells.columns]
    metadata: dict[str, dict[str, str]] = {}
    rows: dict[str, int] = {}
    for row, record in enumerate(cells.to_dict("records"), start=1):
        participant_id = record["participant_id"]
        if participant_id in metadata:
            raise BrainlearnError(
                f"{path}: row {row} (participant_id {participant_id}) repeats row {rows[participant_id]}; "
                "keep one row per participant (rows are data rows counted from 1 below the header)."
            )
        metadata[participant_id] = {column: record[column] for column in columns}
        rows[participant_id] = row
    return metadata


def _warn_without_images(root: Path, metadata: dict[str, dict[str, str]], with_images: set[str]) -> None:
    for participant_id in metadata:
        if participant_id not in with_images:
            hint = "" if participant_id.startswith("sub-") else " (BIDS participant ids start with 'sub-')"
            logger.warning(
                "%s: participant %s of participants.tsv has no images; it is left out%s.",
                root,
                participant_id,
                hint,
            )
