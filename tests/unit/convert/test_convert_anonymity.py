"""No name, birth date or address from a DICOM header reaches an output file or a log line."""

import gzip
import logging

import numpy as np
import pytest
from synthetic_dicom import oblique_affine, write_series

from brainlearn.convert import convert_folder
from brainlearn.convert.anonymity import Redactor, hashed_label, participant_label

IDENTITY = {
    "PatientName": "Doe^Jane^Quincy",
    "PatientBirthDate": "19420317",
    "PatientID": "DOE19420317",  # an ID built from the name and birth date, as some hospital exports do
    "PatientAddress": "12 Elmwood Lane, Springfield",
    "OtherPatientNames": "Smithson^Jane",
}
SECRETS = ("Jane", "Quincy", "Doe^", "19420317", "1942-03-17", "Elmwood", "Springfield", "Smithson", "Gregory")


def _all_output_text(folder) -> str:
    """Every output file's content as text (gzip files decompressed), plus every file name."""
    parts = []
    for path in sorted(folder.rglob("*")):
        parts.append(str(path.relative_to(folder)))
        if path.is_file():
            data = gzip.decompress(path.read_bytes()) if path.name.endswith(".gz") else path.read_bytes()
            parts.append(data.decode("latin-1"))
    return "\n".join(parts)


def test_identifying_fields_never_reach_outputs_or_logs(tmp_path, caplog):
    volume = np.random.default_rng(0).integers(0, 100, (8, 10, 5)).astype(np.int16)
    study = "1.2.3.9"
    write_series(tmp_path / "in" / "t1", volume, oblique_affine(), identity=IDENTITY, study_uid=study)
    write_series(  # a skipped series, whose description holds the name as some sites type it
        tmp_path / "in" / "loc",
        volume,
        oblique_affine(),
        identity=IDENTITY,
        study_uid=study,
        description="localizer Jane Doe",
        series_number=1,
    )
    with caplog.at_level(logging.DEBUG):
        report = convert_folder(tmp_path / "in", tmp_path / "out")
    assert report.n_converted == 1 and report.n_skipped == 1
    text = _all_output_text(tmp_path / "out")
    logged = "\n".join(record.getMessage() for record in caplog.records)
    assert "dcm2niix" in logged  # dcm2niix's own messages were logged, redacted
    for secret in (*SECRETS, IDENTITY["PatientID"]):
        assert secret.lower() not in text.lower(), secret
        assert secret.lower() not in logged.lower(), secret
    assert list(report.table["participant_id"]) == [f"sub-{hashed_label(IDENTITY['PatientID'])}"]
    assert "localizer [redacted] [redacted]" in (tmp_path / "out" / "series.tsv").read_text()


@pytest.mark.parametrize(
    ("patient_id", "expected"),
    [
        ("002_S_0295", "002S0295"),  # ADNI: kept, so it matches the clinical tables
        ("1234", "1234"),
        ("DOE_J", None),  # the family name
        ("J.DOE", None),
        ("P-170342", None),  # birth date as DDMMYY
        ("420317-1234", None),  # birth date as YYMMDD, as national ID numbers hold it
        ("---", None),  # nothing left after cleaning
    ],
)
def test_participant_label_keeps_pseudonyms_and_hashes_identifying_ids(patient_id, expected):
    label, hashed = participant_label(patient_id, ["Doe^Jane", "19420317"])
    if expected is None:
        assert hashed and label.startswith("anon") and len(label) == 14 and label.isalnum()
        assert label == participant_label(patient_id, ["Doe^Jane", "19420317"])[0]  # stable across runs
    else:
        assert (label, hashed) == (expected, False)


def test_redactor_replaces_whole_words_in_any_spelling():
    redact = Redactor(["Doe^Jane^Quincy", "19420317", "12 Elmwood Lane"])
    assert redact("t1_Doe_mprage for JANE, born 17.03.1942") == "t1_[redacted]_mprage for [redacted], born [redacted]"
    assert redact("Doesburg protocol, Janet") == "Doesburg protocol, Janet"
    assert redact("lives at 12 Elmwood Lane") == "lives at [redacted]"


def test_sidecar_scrub_drops_identifying_keys_and_redacts_text():
    redact = Redactor(["Doe^Jane"])
    sidecar = {
        "InstitutionName": "St Elsewhere",
        "InstitutionAddress": "12 Lane",
        "StationName": "MR1",
        "DeviceSerialNumber": "17388",
        "StudyDescription": "Doe Jane head",
        "AcquisitionDateTime": "2024-01-05T10:20:00",
        "ReferringPhysicianName": "House",
        "PatientPosition": "HFS",
        "ImageOrientationPatientDICOM": [1, 0, 0, 0, 1, 0],
        "SeriesDescription": "t1 Jane",
        "ImageType": ["ORIGINAL", "DOE"],
    }
    assert redact.scrub_sidecar(sidecar) == {
        "PatientPosition": "HFS",
        "ImageOrientationPatientDICOM": [1, 0, 0, 0, 1, 0],
        "SeriesDescription": "t1 [redacted]",
        "ImageType": ["ORIGINAL", "[redacted]"],
    }
