"""Finding DICOM files, reading their headers (never their pixels) and grouping them into series.

Headers are read with pydicom (``stop_before_pixels``) into a plain :class:`Header` holding only what the
converter needs. pydicom's own warnings are silenced while reading because they quote values, birth dates
included. Files ending in ``.dcm.gz`` (as some archives and nibabel's test data store them) are read too.
"""

from __future__ import annotations

import gzip
import io
import os
import struct
import warnings
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from brainlearn.convert.anonymity import IDENTIFYING_KEYWORDS, identifying_values

# Suffixes that mark a file as DICOM even without the 'DICM' preamble (it is then read with force=True).
DICOM_SUFFIXES = (".dcm", ".ima", ".dicom", ".dcm.gz")
_DIRECTORY_STORAGE = "1.2.840.10008.1.3.10"  # a DICOMDIR, an index of files rather than an image
# What pydicom raises for a damaged file (NotImplementedError: an unknown value representation; struct.error: a
# length field cut short; zlib.error: a damaged .gz; gzip.BadGzipFile is an OSError).
_READ_ERRORS = (
    OSError,
    EOFError,
    ValueError,
    TypeError,
    KeyError,
    AttributeError,
    IndexError,
    AssertionError,
    NotImplementedError,
    struct.error,
    zlib.error,
)
# A .dcm.gz is decompressed up to this size; the header, all that is read, comes before the pixels.
MAX_GZIP_BYTES = 256 * 1024**2


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
    from pydicom.errors import BytesLengthException, InvalidDicomError

    force = path.name.lower().endswith(DICOM_SUFFIXES)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom's warnings quote header values
        try:
            with _open(path) as stream:
                return _header(path, pydicom.dcmread(stream, stop_before_pixels=True, force=force))
        except (InvalidDicomError, BytesLengthException, *_READ_ERRORS):
            return None


class _BoundedFile(io.BufferedReader):
    """A file that refuses a read of more than what is left of it (EOFError) instead of allocating it.

    pydicom reads an element in one ``read(length)``, and a buffered read allocates ``length`` bytes before
    reading: a corrupt length (up to 4 GiB) would be allocated for a file of a few kB, and the short read that
    follows would go unnoticed (the rest of the file read as one value).
    """

    def __init__(self, path: Path):
        super().__init__(io.FileIO(path))
        self._size = os.fstat(self.fileno()).st_size

    def read(self, size: int | None = -1) -> bytes:
        left = max(self._size - self.tell(), 0)
        if size is not None and size > left > 0:
            raise EOFError(f"{size:,} bytes asked for, {left:,} left in the file")
        return super().read(size)


def _open(path: Path) -> io.BufferedIOBase:
    """``path`` for pydicom: a ``.gz`` is decompressed into memory in chunks (at most :data:`MAX_GZIP_BYTES`, the
    header comes first), other files are read through :class:`_BoundedFile`."""
    if not path.name.lower().endswith(".gz"):
        return _BoundedFile(path)
    data = bytearray()
    with gzip.open(path, "rb") as stream:
        while len(data) < MAX_GZIP_BYTES and (chunk := stream.read(min(2**20, MAX_GZIP_BYTES - len(data)))):
            data += chunk
    return io.BytesIO(bytes(data))


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
