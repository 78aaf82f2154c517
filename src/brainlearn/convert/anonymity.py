"""Keeping patients' identities out of everything the converter writes or logs.

Three rules, applied to every output (images, sidecars, ``series.tsv``, the table) and every log line:

- The participant label comes from PatientID, reduced to the characters BIDS allows (``002_S_0295`` becomes
  ``sub-002S0295``), so that research archives that hand out pseudonymous IDs (ADNI, AIBL, OASIS) keep IDs that
  match their clinical tables. When PatientID looks identifying (it contains a part of the patient's name or the
  birth date, as some hospital exports do) or is empty after cleaning, the label is ``anon`` plus the first 10
  hex digits of the SHA-256 of PatientID instead. This is pseudonymisation against casual reading, not
  cryptographic anonymity: a short hospital record number can be recovered from its hash by trying them all, so
  de-identify clinical archives at the source before sharing converted data.
- dcm2niix runs with ``-ba y`` (no names, IDs or dates in the sidecar), and :meth:`Redactor.scrub_sidecar` then
  drops the keys dcm2niix still keeps (institution, address, station, serial number, study description, ...).
- Every free text written or logged (series descriptions, dcm2niix messages, source paths) passes through a
  :class:`Redactor` that knows the names, birth dates and addresses read from the headers and replaces them with
  ``[redacted]``.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping
from typing import Any

REDACTED = "[redacted]"
# DICOM keywords whose values identify a person or place; their values are never written, and are redacted from
# any other text. PatientID is only added when it is hashed (see participant_label).
IDENTIFYING_KEYWORDS = (
    "PatientName",
    "OtherPatientNames",
    "PatientBirthName",
    "PatientMotherBirthName",
    "PatientBirthDate",
    "PatientAddress",
    "PatientTelephoneNumbers",
    "OtherPatientIDs",
    "ResponsiblePerson",
    "ReferringPhysicianName",
    "ReferringPhysicianAddress",
    "PerformingPhysicianName",
    "NameOfPhysiciansReadingStudy",
    "RequestingPhysician",
    "OperatorsName",
    "InstitutionAddress",
)
# Sidecar keys dropped whatever their value: people, places, devices, dates and UIDs.
_DROPPED_KEY = re.compile(
    r"^Patient(?!Position)|Physician|Operator|Institution|Address|StationName|SerialNumber|Accession|^StudyID$"
    r"|UID$|Date|Birth|Comments?$|^ProcedureStep|^PerformedProcedure|^StudyDescription$|ResponsiblePerson"
)
_MIN_TOKEN = 3  # shorter name parts ("Li", "Jo") are redacted only as part of the whole name
_LABEL_CHARACTERS = re.compile(r"[^A-Za-z0-9]")


class Redactor:
    """Replaces identifying values (names, birth dates, addresses) in free text with ``[redacted]``.

    Matching ignores case and only replaces whole words: ``Doe`` is redacted in ``t1_Doe_mprage`` but not in
    ``Doesburg``.
    """

    def __init__(self, values: Iterable[str] = ()):
        self._values: set[str] = set()
        self._pattern: re.Pattern | None = None
        self.add(values)

    def add(self, values: Iterable[str]) -> None:
        """Remember more identifying values (whole strings; they are split into words here)."""
        for value in values:
            for variant in _variants(str(value)):
                if variant and variant not in self._values:
                    self._values.add(variant)
                    self._pattern = None

    def __call__(self, text: Any) -> str:
        """``text`` as a string with every identifying value replaced."""
        text = "" if text is None else str(text)
        if not self._values:
            return text
        if self._pattern is None:
            words = sorted(self._values, key=len, reverse=True)  # longest first: the whole name before its parts
            self._pattern = re.compile(
                r"(?<![A-Za-z0-9])(?:" + "|".join(map(re.escape, words)) + r")(?![A-Za-z0-9])", re.IGNORECASE
            )
        return self._pattern.sub(REDACTED, text)

    def scrub_sidecar(self, sidecar: Mapping[str, Any]) -> dict[str, Any]:
        """A copy of a dcm2niix JSON sidecar without identifying keys, with every text value redacted."""
        return {key: self._scrub_value(value) for key, value in sidecar.items() if not _DROPPED_KEY.search(key)}

    def _scrub_value(self, value: Any) -> Any:
        if isinstance(value, str):
            return self(value)
        if isinstance(value, list):
            return [self._scrub_value(item) for item in value]
        if isinstance(value, dict):
            return self.scrub_sidecar(value)
        return value


def identifying_values(header: Mapping[str, Any]) -> list[str]:
    """The identifying values of a header read as ``{keyword: value}`` (empty ones left out)."""
    values = []
    for keyword in IDENTIFYING_KEYWORDS:
        value = header.get(keyword)
        items = value if isinstance(value, list | tuple) else [value]
        values += [str(item).strip() for item in items if item is not None and str(item).strip()]
    return values


def participant_label(patient_id: str, identifying: Iterable[str]) -> tuple[str, bool]:
    """The BIDS participant label for ``patient_id``, and whether it had to be hashed.

    Args:
        patient_id: the DICOM PatientID (0010,0020).
        identifying: the patient's identifying values (:func:`identifying_values`): names and birth date.

    Returns:
        (label without the ``sub-`` prefix, hashed): the ID reduced to letters and digits, or ``anon`` plus a
        hash when the ID contains a name part or the birth date, or nothing is left after cleaning.
    """
    cleaned = _LABEL_CHARACTERS.sub("", patient_id)
    if cleaned and not _looks_identifying(patient_id, identifying):
        return cleaned, False
    return hashed_label(patient_id), True


def hashed_label(patient_id: str) -> str:
    """``anon`` plus the first 10 hex digits of the SHA-256 of ``patient_id``."""
    return "anon" + hashlib.sha256(patient_id.encode("utf-8")).hexdigest()[:10]


def _looks_identifying(patient_id: str, identifying: Iterable[str]) -> bool:
    folded = patient_id.casefold()
    digits = re.sub(r"\D", "", patient_id)
    for value in identifying:
        for word in _words(value):
            if len(word) >= 2 and not word.isdigit() and word.casefold() in folded:
                return True
        date = re.sub(r"\D", "", value)
        if len(date) == 8 and any(form in digits for form in _date_forms(date)):
            return True
    return False


def _variants(value: str) -> set[str]:
    """The whole value, its words of 3+ characters, and the usual spellings of a YYYYMMDD date."""
    value = value.strip()
    variants = {value, value.replace("^", " ").strip()}
    variants |= {word for word in _words(value) if len(word) >= _MIN_TOKEN and not word.isdigit()}
    if re.fullmatch(r"\d{8}", value):
        year, month, day = value[:4], value[4:6], value[6:]
        variants |= {f"{year}-{month}-{day}", f"{day}.{month}.{year}", f"{month}/{day}/{year}", f"{day}/{month}/{year}"}
    return {variant for variant in variants if variant}


def _date_forms(date: str) -> tuple[str, ...]:
    """YYYYMMDD, DDMMYYYY and the two-digit-year forms that national ID numbers embed."""
    year, month, day = date[:4], date[4:6], date[6:]
    return (date, f"{day}{month}{year}", f"{year[2:]}{month}{day}", f"{day}{month}{year[2:]}")


def _words(value: str) -> list[str]:
    return [word for word in re.split(r"[^0-9A-Za-zÀ-ÿ]+", value) if word]
