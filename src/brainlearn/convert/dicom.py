"""Finding DICOM files, reading their headers (never their pixels) and grouping them into series.

Headers are read with pydicom (``stop_before_pixels``) into a plain :class:`Header` holding only what the
converter needs. pydicom's own warnings are silenced while reading because they quote values, birth dates
included. Files ending in ``.dcm.gz`` (as some archives and nibabel's test data store them) are read too.
"""

from __future__ import annotations

import gzip
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from brainlearn.convert.anonymity import IDENTIFYING_KEYWORDS, identifying_values

# Suffixes that mark a file as DICOM even without the 'DICM' preamble (it is then read with force=True).
DICOM_SUFFIXES = (".dcm", ".ima", ".dicom", ".dcm.gz")
_DIRECTORY_STORAGE = "1.2.840.10008.1.3.10"  # a DICOMDIR, an index of files rather than an image
_READ_ERRORS = (OSError, EOFError, ValueError, TypeError, KeyError, AttributeError, IndexError, AssertionError)


@dataclass(frozen=True)
class Header:
    """What the converter uses of one DICOM file's header. Identifying values stay in memory only."""

    path: Path
    modality: str
    patient_id: str
    study_uid: str
    study_order: tuple[str, str]  # (StudyDate, StudyTime): orders a participant's sessions, never written
    series_uid: str
    series_number: int | None
    description: str  # SeriesDescription and ProtocolName
    image_type: tuple[str, ...]
    rows: int
    identifying: tuple[str, ...]


@dataclass
class Series:
    """The files of one DICOM series, in the order they were found."""

    headers: list[Header] = field(default_factory=list)

    @property
    def first(self) -> Header:
        return self.headers[0]

    @property
    def files(self) -> list[Path]:
        return [header.path for header in self.headers]


def read_header(path: Path) -> Header | None:
    """The header of ``path``, or None when it is not a DICOM image file (or not readable as one)."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    name = path.name.lower()
    force = name.endswith(DICOM_SUFFIXES)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom's warnings quote header values
        try:
            if name.endswith(".gz"):
                with gzip.open(path, "rb") as stream:
                    dataset = pydicom.dcmread(stream, stop_before_pixels=True, force=force)
            else:
                dataset = pydicom.dcmread(path, stop_before_pixels=True, force=force)
            return _header(path, dataset)
        except (InvalidDicomError, gzip.BadGzipFile, *_READ_ERRORS):
            return None


def group_series(headers: list[Header]) -> list[Series]:
    """Group headers by series: SeriesInstanceUID, or (PatientID, study, SeriesNumber, description) without one."""
    groups: dict[tuple, Series] = {}
    for header in headers:
        key = (header.series_uid,) if header.series_uid else _fallback_key(header)
        groups.setdefault(key, Series()).headers.append(header)
    return list(groups.values())


def _header(path: Path, dataset) -> Header | None:
    if "SOPClassUID" not in dataset and "Modality" not in dataset:
        return None  # force=True parses anything; a file without these is not DICOM
    if str(dataset.get("SOPClassUID", "")) == _DIRECTORY_STORAGE or "DirectoryRecordSequence" in dataset:
        return None
    text = {keyword: _text(dataset.get(keyword)) for keyword in IDENTIFYING_KEYWORDS}
    parts = [_text(dataset.get(key)) for key in ("SeriesDescription", "ProtocolName")]
    description = " ".join(dict.fromkeys(part for part in parts if part))  # both, once each
    return Header(
        path=path,
        modality=_text(dataset.get("Modality")).upper(),
        patient_id=_text(dataset.get("PatientID")),
        study_uid=_text(dataset.get("StudyInstanceUID")),
        study_order=(_text(dataset.get("StudyDate")), _text(dataset.get("StudyTime"))),
        series_uid=_text(dataset.get("SeriesInstanceUID")),
        series_number=_integer(dataset.get("SeriesNumber")),
        description=description,
        image_type=tuple(part.strip().upper() for part in _parts(dataset.get("ImageType"))),
        rows=_integer(dataset.get("Rows")) or 0,
        identifying=tuple(identifying_values(text)),
    )


def _fallback_key(header: Header) -> tuple:
    study = header.study_uid or "|".join(header.study_order)
    return ("", header.patient_id, study, header.series_number, header.description)


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, list | tuple) or type(value).__name__ == "MultiValue":
        return "\\".join(_text(item) for item in value)
    return str(value).strip()


def _parts(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return value.split("\\")
    return [str(item) for item in value]


def _integer(value: Any) -> int | None:
    try:
        return int(float(str(value)))
    except (TypeError, ValueError):
        return None
