"""Document 000's pickled pair lists, read as a participants table without running any code from the file.

Document 000 keeps each data set as a pickled Python list:

* ``[(mri_path, pet_path, label), ...]``: training lists are unpaired (the PET belongs to another subject),
  validation and test lists are paired (both images of one subject);
* ``[(mri_path, label), ...]``: the external MRI-only sets.

Labels are ints (NC=0, AD=1). File names carry the label too: ``/data/x/lineared/train/0_141_S_0810.npy`` is
label 0 of ADNI subject ``141_S_0810``.

Loading a pickle can run any code it names. The unpickler here refuses every class or function a pickle refers
to (the only way it can run code), so it builds lists, tuples, strings and numbers and nothing else. Before it
runs, the opcodes are walked without running them (:mod:`pickletools`): every length and memo slot the file
declares is checked against its size, so that a damaged 1 kB file cannot make the unpickler allocate gigabytes.
"""

from __future__ import annotations

import io
import logging
import os
import pickle
import pickletools
import re
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

import pandas as pd

from brainlearn.data.tables import SPLITS, validate_table
from brainlearn.errors import BrainlearnError, quoted

logger = logging.getLogger(__name__)

# A pair list is a few hundred kB; refuse anything larger before reading it.
MAX_BYTES = 100 * 1024**2
# "<label>_<participant>": a label has no leading zeros, so ADNI ids such as "002_S_0295" are left whole.
_LABEL_PREFIX = re.compile(r"^(0|[1-9][0-9]*)_(.+)$")
_SHAPES = "a list of (mri_path, pet_path, label) or (mri_path, label) tuples"
# The C unpickler grows its memo to twice the slot these name; a pickler numbers slots from 0, one per opcode.
_MEMO_PUTS = frozenset({"PUT", "BINPUT", "LONG_BINPUT"})


class _PairUnpickler(pickle.Unpickler):
    """Builds lists, tuples, strings and numbers only: every class or function the pickle names is refused."""

    def __init__(self, file: io.BytesIO, path: Path):
        super().__init__(file)
        self.path = path

    def find_class(self, module: str, name: str) -> NoReturn:
        hint = (
            " Labels must be plain ints: pickle int(label), not a numpy scalar." if module.startswith("numpy") else ""
        )
        raise BrainlearnError(
            f"{self.path}: the file contains an object of type {quoted(module, 80)[1:-1]}.{quoted(name, 80)[1:-1]}; "
            f"brainlearn only reads lists, tuples, strings and numbers from pair lists, and never runs code from a "
            f"file.{hint}"
        )

    def persistent_load(self, pid: object) -> NoReturn:
        raise BrainlearnError(
            f"{self.path}: the file refers to an external object ({quoted(pid)}); expected {_SHAPES}."
        )


def read_pairs(
    path: str | os.PathLike, *, split: str | None = None, labels: Sequence[str] = ("CN", "AD")
) -> pd.DataFrame:
    """Read a pickled pair list of document 000 as a participants table, one row per participant.

    ``participant_id`` is the file name without its label prefix and suffix (``0_141_S_0810.npy`` ->
    ``141_S_0810``). The MRI goes to ``t1`` and its diagnosis is ``labels[label]``. The PET goes to ``pet``
    of the participant its file name names: the same row in paired lists, a row of its own in unpaired
    training lists (diagnosis from the PET file's label prefix when it has one). Paths are kept as written;
    whether the files exist is not checked here.

    Args:
        path: the pickle file.
        split: the value of the ``split`` column (``"train"``, ``"val"``, ``"test"`` or None).
        labels: the diagnosis name of each integer label (document 000: NC=0 -> "CN", AD=1 -> "AD").

    Returns:
        The table as :func:`brainlearn.data.tables.read_table` returns it, rows in order of first appearance.

    Raises:
        BrainlearnError: if the file is over 100 MB, not a pickle or truncated, names any class or function,
            is not a list of 2- or 3-tuples of string paths and an int label in ``range(len(labels))``, or
            gives one participant two different files for one modality or two different labels.
    """
    path = Path(path)
    if split is not None and split not in SPLITS:
        raise BrainlearnError(f"split must be one of {', '.join(SPLITS)} or None, not {split!r}.")
    records: dict[str, dict[str, str]] = {}
    for index, pair in enumerate(_load(path)):
        where = f"{path}: element [{index}] of the list"
        for participant_id, column, file, label in _entries(where, pair, labels):
            _merge(where, records.setdefault(participant_id, {"participant_id": participant_id}), column, file)
            if label is not None:
                _merge(where, records[participant_id], "diagnosis", labels[label])
    cells = pd.DataFrame(list(records.values()))
    cells["split"] = split
    names = [f"{path.name} participant {participant_id}" for participant_id in records]
    return validate_table(cells, source=str(path), labels=labels, check_files=False, row_names=names)


def _load(path: Path) -> list:
    if not path.is_file():
        problem = "is a folder, expected a pickle file" if path.is_dir() else "file not found"
        raise BrainlearnError(f"{path}: {problem}. Pass a pickled pair list of document 000.")
    size = path.stat().st_size
    if size > MAX_BYTES:
        raise BrainlearnError(
            f"{path}: {size / 1024**2:.0f} MB, more than the {MAX_BYTES // 1024**2} MB brainlearn reads from "
            "a pair list (a list of paths is far smaller); check that this is the right file."
        )
    data = path.read_bytes()
    _check_opcodes(path, data)
    stream = io.BytesIO(data)
    try:
        pairs = _PairUnpickler(stream, path).load()
    except BrainlearnError:
        raise
    except Exception as error:  # a corrupt pickle makes the unpickler raise almost any built-in exception
        raise BrainlearnError(
            f"{path}: not a pickle, or truncated ({type(error).__name__}: {error}). Expected {_SHAPES}."
        ) from error
    if stream.tell() != len(data):
        raise BrainlearnError(f"{path}: holds more data after the pickled list ends; expected one pickled list.")
    if not isinstance(pairs, list):
        raise BrainlearnError(f"{path}: holds a {type(pairs).__name__}, expected {_SHAPES}.")
    if not pairs:
        raise BrainlearnError(f"{path}: the list is empty; expected {_SHAPES}.")
    return pairs


def _check_opcodes(path: Path, data: bytes) -> None:
    """Walk the opcodes without running them: refuse a length past the end of the file (the C unpickler allocates
    the length a bytes object declares before reading it) and a memo slot no pickler would number so high."""
    try:
        for opcode, argument, _ in pickletools.genops(data):
            if opcode.name in _MEMO_PUTS and int(argument) > len(data):
                raise BrainlearnError(f"{path}: not a pickle, or corrupt (memo slot {argument}). Expected {_SHAPES}.")
    except ValueError as error:  # genops checks every declared length against what the file holds
        raise BrainlearnError(f"{path}: not a pickle, or truncated ({error}). Expected {_SHAPES}.") from error


def _entries(where: str, pair: object, labels: Sequence[str]) -> list[tuple[str, str, str, int | None]]:
    """(participant_id, column, path, label or None) for each image of one element of the list."""
    if not isinstance(pair, tuple | list) or len(pair) not in (2, 3):
        size = f" of {len(pair)} items" if isinstance(pair, tuple | list) else ""
        raise BrainlearnError(f"{where} is a {type(pair).__name__}{size}; expected a 2- or 3-tuple in {_SHAPES}.")
    *paths, label = pair
    for file in paths:
        if not isinstance(file, str):
            raise BrainlearnError(f"{where}: the path {quoted(file)} is a {type(file).__name__}, expected a string.")
    if type(label) is not int or not 0 <= label < len(labels):
        names = ", ".join(f"{i}={name}" for i, name in enumerate(labels))
        raise BrainlearnError(
            f"{where}: the label {quoted(label)} ({type(label).__name__}) is not an int in ({names})."
        )
    mri_id, mri_label = _participant(paths[0], labels)
    if mri_label is not None and mri_label != label:
        logger.warning(
            "%s: label %d, but the file name %s says %d; using %d.", where, label, paths[0], mri_label, label
        )
    entries = [(mri_id, "t1", paths[0], label)]
    if len(paths) == 2:
        pet_id, pet_label = _participant(paths[1], labels)
        entries.append((pet_id, "pet", paths[1], label if pet_id == mri_id else pet_label))
    return entries


def _participant(file: str, labels: Sequence[str]) -> tuple[str, int | None]:
    """The participant id and the label prefix (None without one) of a file name such as 0_141_S_0810.npy.

    BIDS names (``sub-001_T1w.nii.gz``) give the ``sub-`` entity as the participant.
    """
    name = Path(file).name
    stem = name[: -len(".nii.gz")] if name.endswith(".nii.gz") else Path(name).stem
    match = _LABEL_PREFIX.match(stem)
    if match and int(match[1]) < len(labels):
        return match[2], int(match[1])
    if stem.startswith("sub-"):  # a BIDS file name: the participant is its sub-<label> entity
        return stem.split("_")[0], None
    return stem, None


def _merge(where: str, record: dict[str, str], column: str, value: str) -> None:
    if record.get(column, value) != value:
        raise BrainlearnError(
            f"{where}: participant {record['participant_id']} gets {column} {value}, but an earlier element "
            f"gave {record[column]}; a participant has one {column}. Fix or remove one of the two elements."
        )
    record[column] = value
