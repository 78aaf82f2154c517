"""Naming the converted series: participant, session and a BIDS-like path for each.

Layout (the same names :func:`brainlearn.data.bids.read_bids` reads)::

    OUT/sub-<label>/ses-<nn>/anat/sub-<label>_ses-<nn>[_run-<k>]_{T1w,T2w,FLAIR}.nii.gz  (+ .json sidecar)
    OUT/sub-<label>/ses-<nn>/pet/sub-<label>_ses-<nn>[_run-<k>]_pet.nii.gz

Sessions are a participant's studies (StudyInstanceUID) numbered 01, 02, ... in order of study date, so the
numbers depend on which studies are converted together. Several series of one kind in a session get ``run-1``,
``run-2`` in order of SeriesNumber.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from brainlearn.convert.anonymity import Redactor, hashed_label, participant_label
from brainlearn.convert.classify import COLUMNS, classify
from brainlearn.convert.dicom import Series


@dataclass(frozen=True)
class PlannedSeries:
    """A series with its participant, session, table column (None: left out) and the reason."""

    series: Series
    participant_id: str
    session_id: str
    column: str | None
    reason: str
    target: Path | None = None  # relative to the output folder


def plan_series(series: list[Series], redactor: Redactor) -> list[PlannedSeries]:
    """Name every series and decide which ones are converted (see the module docstring).

    PatientIDs that have to be hashed are added to ``redactor``, so that they are redacted from all text too.
    """
    labels = _participant_labels(series, redactor)
    sessions = _session_labels(series)
    planned = []
    for item in series:
        column, reason = classify(item)
        participant = f"sub-{labels[item.first.patient_id]}" if item.first.patient_id else ""
        session = sessions.get(_study_key(item), "") if participant else ""
        planned.append(PlannedSeries(item, participant, session, column, reason))
    return _with_targets(planned)


def bids_path(participant_id: str, session_id: str, column: str, run: int | None = None) -> Path:
    """``sub-X/ses-Y/anat/sub-X_ses-Y[_run-N]_T1w.nii.gz`` for a table column (t1, t2, flair, pet)."""
    datatype, suffix = COLUMNS[column]
    run_entity = f"_run-{run}" if run is not None else ""
    return Path(participant_id, session_id, datatype, f"{participant_id}_{session_id}{run_entity}_{suffix}.nii.gz")


def _participant_labels(series: list[Series], redactor: Redactor) -> dict[str, str]:
    identifying: dict[str, set[str]] = defaultdict(set)
    for item in series:
        for header in item.headers:
            identifying[header.patient_id] |= set(header.identifying)
    labels, hashed = {}, set()
    for patient_id in sorted(identifying):
        if patient_id:
            labels[patient_id], was_hashed = participant_label(patient_id, identifying[patient_id])
            hashed |= {patient_id} if was_hashed else set()
    for label in {label for label in labels.values() if list(labels.values()).count(label) > 1}:
        clashing = [patient_id for patient_id, other in labels.items() if other == label]
        for patient_id in clashing:  # two IDs that differ only in punctuation: hash both rather than merge them
            labels[patient_id] = hashed_label(patient_id)
            hashed.add(patient_id)
    redactor.add(hashed)
    return labels


def _session_labels(series: list[Series]) -> dict[tuple[str, str], str]:
    """(PatientID, study key) -> ``ses-01``, ``ses-02``, ... in order of study date and time."""
    studies: dict[str, dict[str, tuple]] = defaultdict(dict)
    for item in series:
        patient_id, study = _study_key(item)
        studies[patient_id][study] = (*item.first.study_order, study)
    return {
        (patient_id, study): f"ses-{number:02d}"
        for patient_id, by_study in studies.items()
        for number, study in enumerate(sorted(by_study, key=by_study.__getitem__), start=1)
    }


def _study_key(item: Series) -> tuple[str, str]:
    header = item.first
    return header.patient_id, header.study_uid or "|".join(header.study_order)


def _with_targets(planned: list[PlannedSeries]) -> list[PlannedSeries]:
    groups: dict[tuple, list[int]] = defaultdict(list)
    for index, item in enumerate(planned):
        if item.column is not None:
            groups[(item.participant_id, item.session_id, item.column)].append(index)
    result = list(planned)
    for (participant, session, column), indices in groups.items():
        indices.sort(key=lambda i: (planned[i].series.first.series_number or 0, i))
        for run, index in enumerate(indices, start=1):
            target = bids_path(participant, session, column, run if len(indices) > 1 else None)
            item = planned[index]
            result[index] = PlannedSeries(item.series, participant, session, column, item.reason, target)
    return result
