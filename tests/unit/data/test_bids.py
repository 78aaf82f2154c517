import logging
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from brainlearn.data.bids import read_bids
from brainlearn.data.tables import TABLE_COLUMNS
from brainlearn.errors import BrainlearnError

FILES = (
    "sub-01/ses-01/anat/sub-01_ses-01_T1w.nii.gz",
    "sub-01/ses-01/anat/sub-01_ses-01_FLAIR.nii.gz",
    "sub-01/ses-02/anat/sub-01_ses-02_T1w.nii.gz",
    "sub-01/ses-02/pet/sub-01_ses-02_pet.nii.gz",
    "sub-02/anat/sub-02_run-02_T1w.nii.gz",
    "sub-02/anat/sub-02_run-01_T1w.nii.gz",
    "sub-02/anat/sub-02_T2w.nii",
    "sub-02/anat/sub-02_label-lesion_mask.nii.gz",
    "sub-03/anat/sub-03_T1w.nii.gz",
)
PARTICIPANTS = (
    "participant_id\tdiagnosis\tage\tsex\tsite\tsplit\thandedness\n"
    "sub-01\tCN\t70\tF\tA\ttrain\tR\n"
    "sub-02\tAD\t81.5\tM\tB\tn/a\tL\n"
    "sub-04\tMCI\t66\tM\tA\t\tR\n"
)


def write_nifti(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = np.random.default_rng(0).random((4, 5, 3)).astype(np.float32)
    nib.save(nib.Nifti1Image(data, np.eye(4)), path)


@pytest.fixture
def bids(tmp_path: Path) -> Path:
    root = tmp_path / "ds"
    for name in FILES:
        write_nifti(root / name)
    (root / "sub-02/anat/sub-02_run-01_T1w.json").write_text("{}")
    (root / "derivatives/sub-09/anat").mkdir(parents=True)
    (root / "participants.tsv").write_text(PARTICIPANTS)
    return root


def test_one_row_per_participant_and_session_with_each_modality(bids: Path):
    table = read_bids(bids)
    assert list(table.columns) == list(TABLE_COLUMNS)
    keys = list(zip(table["participant_id"], table["session_id"], strict=True))
    assert keys == [("sub-01", "ses-01"), ("sub-01", "ses-02"), ("sub-02", "ses-01"), ("sub-03", "ses-01")]
    first, second, third, fourth = (row for _, row in table.iterrows())
    assert first["t1"] == str(bids / "sub-01/ses-01/anat/sub-01_ses-01_T1w.nii.gz")
    assert first["flair"].endswith("sub-01_ses-01_FLAIR.nii.gz") and first["pet"] is None
    assert second["pet"] == str(bids / "sub-01/ses-02/pet/sub-01_ses-02_pet.nii.gz")
    assert third["mask"].endswith("sub-02_label-lesion_mask.nii.gz") and third["t2"].endswith("sub-02_T2w.nii")
    assert fourth["t1"].endswith("sub-03_T1w.nii.gz")


def test_clinical_values_come_from_participants_tsv(bids: Path):
    table = read_bids(bids).set_index(["participant_id", "session_id"])
    assert table.loc[("sub-01", "ses-02"), "diagnosis"] == "CN"
    assert table.loc[("sub-01", "ses-02"), "split"] == "train"
    assert table.loc[("sub-02", "ses-01"), "age"] == 81.5 and table.loc[("sub-02", "ses-01"), "split"] is None
    assert table.loc[("sub-02", "ses-01"), "sex"] == "M" and table.loc[("sub-02", "ses-01"), "site"] == "B"
    assert table.loc[("sub-03", "ses-01"), "diagnosis"] is None  # not in participants.tsv: kept, no metadata
    assert "handedness" not in table.columns


def test_several_runs_take_the_first_and_warn(bids: Path, caplog: pytest.LogCaptureFixture):
    with caplog.at_level(logging.WARNING, logger="brainlearn.data.bids"):
        table = read_bids(bids)
    assert table.loc[2, "t1"].endswith("sub-02_run-01_T1w.nii.gz")
    assert "2 t1 images; using sub-02_run-01_T1w.nii.gz and ignoring sub-02_run-02_T1w.nii.gz" in caplog.text
    assert "participant sub-04 of participants.tsv has no images" in caplog.text


def test_without_participants_tsv_metadata_is_empty(bids: Path):
    (bids / "participants.tsv").unlink()
    table = read_bids(bids)
    assert len(table) == 4 and table["diagnosis"].isna().all() and table["age"].isna().all()


def test_bad_clinical_value_names_participant_session_and_column(bids: Path):
    (bids / "participants.tsv").write_text("participant_id\tdiagnosis\tsex\nsub-01\tNC\tF\nsub-02\tAD\tfemale\n")
    with pytest.raises(BrainlearnError) as error:
        read_bids(bids)
    message = str(error.value)
    assert message.startswith(f"{bids} (BIDS folder; clinical values come from participants.tsv): 3 problems")
    assert "participant sub-01 session ses-02, column diagnosis: unknown diagnosis 'NC'" in message
    assert "participant sub-02 session ses-01, column sex: sex 'female' is not one of M, F (write 'F')" in message


def test_labels_none_accepts_any_diagnosis(bids: Path):
    (bids / "participants.tsv").write_text("participant_id\tdiagnosis\nsub-01\tFTD\n")
    assert read_bids(bids, labels=None).loc[0, "diagnosis"] == "FTD"


def test_missing_root_file_root_and_non_bids_folder(tmp_path: Path):
    with pytest.raises(BrainlearnError, match="nowhere: BIDS folder not found"):
        read_bids(tmp_path / "nowhere")
    (tmp_path / "file.tsv").write_text("x")
    with pytest.raises(BrainlearnError, match="file.tsv: is a file, expected a BIDS folder"):
        read_bids(tmp_path / "file.tsv")
    (tmp_path / "empty" / "derivatives").mkdir(parents=True)
    with pytest.raises(BrainlearnError, match="not a BIDS folder: it holds no sub-<label> folders"):
        read_bids(tmp_path / "empty")


def test_subject_folders_without_images(tmp_path: Path, caplog: pytest.LogCaptureFixture):
    (tmp_path / "sub-01" / "anat").mkdir(parents=True)
    with (
        caplog.at_level(logging.WARNING),
        pytest.raises(BrainlearnError, match="no images found in any sub-"),
    ):
        read_bids(tmp_path)
    assert "sub-01: no T1w, T2w, FLAIR, mask or PET image found" in caplog.text


def test_malformed_participants_tsv(bids: Path):
    (bids / "participants.tsv").write_text("subject\tdiagnosis\nsub-01\tCN\n")
    with pytest.raises(BrainlearnError, match="participants.tsv: no participant_id column"):
        read_bids(bids)
    (bids / "participants.tsv").write_text("participant_id\tdiagnosis\nsub-01\tCN\nsub-01\tAD\n")
    with pytest.raises(BrainlearnError, match=r"row 2 \(participant_id sub-01\) repeats row 1"):
        read_bids(bids)


def test_hidden_files_such_as_an_unfinished_write_are_not_images(bids: Path, caplog: pytest.LogCaptureFixture):
    t1 = Path(read_bids(bids).loc[0, "t1"])
    (t1.parent / f".partial-99999-{t1.name}").write_bytes(b"half a file")
    with caplog.at_level(logging.WARNING, logger="brainlearn.data.bids"):
        table = read_bids(bids)
    assert table.loc[0, "t1"] == str(t1) and ".partial-" not in caplog.text
