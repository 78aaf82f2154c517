"""A participants table pointing to a DICOM folder or an MGZ file gets NIfTI paths, as preprocess needs."""

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from synthetic_dicom import IDENTITY, oblique_affine, write_series

from brainlearn.convert import convert_table_inputs
from brainlearn.errors import BrainlearnError


@pytest.fixture
def inputs(tmp_path):
    rng = np.random.default_rng(0)
    t1 = rng.integers(0, 1000, (10, 12, 6)).astype(np.int16)
    write_series(tmp_path / "dicom" / "t1", t1, oblique_affine(), description="anything: the column says T1")
    flair = rng.normal(size=(5, 6, 4)).astype(np.float32)
    nib.save(nib.MGHImage(flair, np.diag([1.0, 1.0, 2.0, 1.0])), tmp_path / "flair.mgz")
    nib.save(nib.Nifti1Image(flair, np.eye(4)), tmp_path / "t2.nii.gz")
    table = pd.DataFrame(
        {
            "participant_id": ["sub-01", "sub-02"],
            "session_id": ["ses-01", "ses-01"],
            "t1": [str(tmp_path / "dicom" / "t1"), None],
            "t2": [str(tmp_path / "t2.nii.gz"), None],
            "flair": [None, str(tmp_path / "flair.mgz")],
            "diagnosis": ["CN", "AD"],
        }
    )
    return tmp_path, table, t1


def test_dicom_folders_and_mgz_files_are_converted_and_nifti_kept(inputs):
    root, table, t1 = inputs
    converted = convert_table_inputs(table, root / "converted")
    assert converted.loc[0, "t1"] == str(root / "converted" / "sub-01" / "ses-01" / "t1.nii.gz")
    assert converted.loc[1, "flair"] == str(root / "converted" / "sub-02" / "ses-01" / "flair.nii.gz")
    assert converted.loc[0, "t2"] == table.loc[0, "t2"] and pd.isna(converted.loc[1, "t1"])
    assert list(converted["diagnosis"]) == ["CN", "AD"] and table.loc[0, "t1"].endswith("t1")  # input unchanged
    image = nib.load(converted.loc[0, "t1"])
    assert image.shape == t1.shape and np.asanyarray(image.dataobj).sum() == t1.sum()
    assert (root / "converted" / "sub-01" / "ses-01" / "t1.json").exists()


def test_a_second_call_reuses_the_conversions(inputs):
    root, table, _ = inputs
    first = convert_table_inputs(table, root / "converted")
    stamps = {column: _mtime(first.loc[row, column]) for row, column in ((0, "t1"), (1, "flair"))}
    second = convert_table_inputs(table, root / "converted")
    assert {column: _mtime(second.loc[row, column]) for row, column in ((0, "t1"), (1, "flair"))} == stamps


def test_cells_that_cannot_be_converted_are_listed_together(inputs):
    root, table, _ = inputs
    write_series(root / "dicom" / "t1", np.ones((4, 5, 3), np.int16), oblique_affine(), series_number=9)
    table.loc[1, "t1"] = str(root / "missing")
    with pytest.raises(BrainlearnError) as error:
        convert_table_inputs(table, root / "converted")
    message = str(error.value)
    assert "participant_id sub-01 ses-01, column t1:" in message and "holds 2 DICOM series" in message
    assert "participant_id sub-02 ses-01, column t1:" in message and "missing: not found" in message
    assert "Jane" not in message and IDENTITY["PatientBirthDate"] not in message


def test_with_a_failures_list_a_bad_session_is_left_out_and_reported(inputs):
    root, table, _ = inputs
    table.loc[1, "flair"] = str(root / "missing.mgz")
    failures = []
    converted = convert_table_inputs(table, root / "converted", failures=failures)
    assert converted["participant_id"].tolist() == ["sub-01"]  # the good session is converted
    assert converted.loc[0, "t1"].endswith("t1.nii.gz")
    assert failures == [("sub-02", "ses-01", f"conversion failed: flair: {root / 'missing.mgz'}: not found.")]


def test_dynamic_pet_needs_average_frames(inputs):
    root, table, _ = inputs
    pet = np.random.default_rng(1).integers(0, 100, (6, 7, 4, 2)).astype(np.int16)
    write_series(root / "pet", pet, oblique_affine(), modality="PT", frames=[(0, 300), (300, 300)])
    table["pet"] = [str(root / "pet"), None]
    with pytest.raises(BrainlearnError, match=r"4D PET \(2 frames, start\+duration \(s\): 0\+300, 300\+300\)"):
        convert_table_inputs(table[["participant_id", "pet"]], root / "converted")
    converted = convert_table_inputs(table, root / "converted", average_frames=True)
    assert nib.load(converted.loc[0, "pet"]).shape == (6, 7, 4)


def _mtime(path) -> int:
    from pathlib import Path

    return Path(path).stat().st_mtime_ns
