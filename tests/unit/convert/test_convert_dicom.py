"""DICOM series written here go through dcm2niix and come back with the same world coordinates and values."""

import json
import logging
import shutil

import nibabel as nib
import numpy as np
import pytest
from synthetic_dicom import oblique_affine, write_series

from brainlearn.convert import convert_folder
from brainlearn.convert.dcm2niix import find_dcm2niix
from brainlearn.errors import BrainlearnError

SHAPE = (20, 24, 12)  # non-cubic on purpose
STUDY = "1.2.826.0.1.3680043.8.498.1"


def _world_error(converted: nib.Nifti1Image, affine: np.ndarray, shape) -> tuple[np.ndarray, float]:
    """The voxel map from the written grid to the converted one, and the largest world distance (mm) it moves."""
    mapping = np.linalg.inv(converted.affine) @ affine
    permutation = np.round(mapping)
    assert np.allclose(np.abs(permutation[:3, :3]).sum(axis=0), 1), "axes were resampled, not permuted or flipped"
    corners = np.array([[i, j, k, 1] for i in (0, shape[0] - 1) for j in (0, shape[1] - 1) for k in (0, shape[2] - 1)])
    voxels = np.vstack([corners, [[3, 5, 7, 1], [11, 2, 9, 1], [19, 23, 0, 1]]]).T  # (4, N)
    error = np.linalg.norm((converted.affine @ permutation @ voxels - affine @ voxels)[:3], axis=0).max()
    return permutation, float(error)


def _in_converted_order(array: np.ndarray, permutation: np.ndarray) -> np.ndarray:
    """``array`` re-indexed onto the converted grid: out[P @ v] = array[v]."""
    index = np.indices(array.shape).reshape(3, -1)
    target = (permutation[:3, :3] @ index + permutation[:3, 3:]).round().astype(int)
    out = np.zeros_like(array)
    out[tuple(target)] = array[tuple(index)]
    return out


@pytest.fixture
def t1_series(tmp_path):
    array = np.random.default_rng(0).integers(-500, 3000, SHAPE).astype(np.int16)
    affine = oblique_affine()
    write_series(tmp_path / "in" / "t1", array, affine, study_uid=STUDY)
    return tmp_path, array, affine


def test_oblique_series_keeps_world_coordinates_and_values(t1_series):
    root, array, affine = t1_series
    report = convert_folder(root / "in", root / "out")
    path = root / "out" / "sub-P0042" / "ses-01" / "anat" / "sub-P0042_ses-01_T1w.nii.gz"
    assert report.n_converted == 1 and path.exists()
    converted = nib.load(path)
    assert converted.shape == SHAPE
    permutation, error = _world_error(converted, affine, SHAPE)
    assert error < 0.01
    np.testing.assert_array_equal(np.asanyarray(converted.dataobj), _in_converted_order(array, permutation))
    sidecar = json.loads(path.with_name("sub-P0042_ses-01_T1w.json").read_text())
    assert sidecar["SeriesDescription"] == "t1_mprage_sag"
    assert report.table.loc[0, "t1"] == str(path)


def test_table_is_ready_for_preprocess(t1_series):
    from brainlearn.data.tables import read_table

    root, _, _ = t1_series
    report = convert_folder(root / "in", root / "out")
    table = read_table(report.table_path, labels=None)
    assert list(table["participant_id"]) == ["sub-P0042"] and list(table["session_id"]) == ["ses-01"]
    assert table.loc[0, "t1"].endswith("sub-P0042_ses-01_T1w.nii.gz")


def test_localizer_and_derived_series_are_listed_with_reasons_not_converted(tmp_path):
    volume = np.ones((8, 10, 4), np.int16)
    write_series(tmp_path / "in" / "a", volume, oblique_affine(), description="AAHead_Scout", series_number=1)
    write_series(tmp_path / "in" / "b", volume, oblique_affine(), image_type=("ORIGINAL", "PRIMARY", "LOCALIZER"))
    derived = ("DERIVED", "SECONDARY", "MPR")
    write_series(tmp_path / "in" / "c", volume, oblique_affine(), description="t1_mpr_tra", image_type=derived)
    report = convert_folder(tmp_path / "in", tmp_path / "out")
    reasons = dict(zip(report.series["source"], report.series["reason"], strict=True))
    assert reasons["a"].startswith("localizer") and reasons["b"].startswith("localizer")
    assert reasons["c"].startswith("derived image (ImageType DERIVED/SECONDARY/MPR)")
    assert set(report.series["status"]) == {"skipped"} and report.table.empty
    assert not list((tmp_path / "out").glob("sub-*"))
    assert (tmp_path / "out" / "series.tsv").read_text().count("skipped") == 3


def test_dynamic_pet_is_skipped_with_its_frame_times(tmp_path, caplog):
    frames = [(0, 60), (60, 120), (180, 300)]
    pet = np.random.default_rng(1).integers(0, 1000, (10, 12, 6, 3)).astype(np.int16)
    write_series(tmp_path / "in", pet, oblique_affine(spacing=(2, 2, 2)), modality="PT", frames=frames)
    with caplog.at_level(logging.INFO):
        report = convert_folder(tmp_path / "in", tmp_path / "out")
    row = report.series.iloc[0]
    assert row["status"] == "skipped" and "set average_frames: true" in row["reason"]
    assert row["frames"] == "3 frames, start+duration (s): 0+60, 60+120, 180+300"
    assert "0+60, 60+120, 180+300" in caplog.text
    assert not list((tmp_path / "out").rglob("*.nii.gz"))


def test_dynamic_pet_frames_are_averaged_by_duration_when_asked(tmp_path, caplog):
    frames = [(0, 60), (60, 120), (180, 300)]
    pet = np.random.default_rng(1).integers(0, 1000, (10, 12, 6, 3)).astype(np.int16)
    affine = oblique_affine(spacing=(2.0, 2.2, 3.0))
    write_series(tmp_path / "in", pet, affine, modality="PT", frames=frames, description="FDG brain")
    with caplog.at_level(logging.INFO):
        report = convert_folder(tmp_path / "in", tmp_path / "out", average_frames=True)
    path = tmp_path / "out" / "sub-P0042" / "ses-01" / "pet" / "sub-P0042_ses-01_pet.nii.gz"
    assert report.series.loc[0, "status"] == "converted" and report.table.loc[0, "pet"] == str(path)
    assert "averaged 3 frames, start+duration (s): 0+60, 60+120, 180+300" in caplog.text
    converted = nib.load(path)
    permutation, error = _world_error(converted, affine, pet.shape[:3])
    assert error < 0.01
    expected = (pet.astype(np.float64) * [60, 120, 300]).sum(axis=3) / 480
    np.testing.assert_allclose(converted.get_fdata(), _in_converted_order(expected, permutation), rtol=1e-5)
    sidecar = json.loads(path.with_suffix("").with_suffix(".json").read_text())
    assert sidecar["FrameTimesStart"] == [0, 60, 180] and "FramesAveraged" in sidecar


def test_sessions_and_runs_are_numbered_and_repeats_leave_the_table_cell_empty(tmp_path, caplog):
    volume = np.random.default_rng(2).integers(0, 100, (8, 10, 4)).astype(np.int16)
    later, earlier = "1.2.3.4.2", "1.2.3.4.1"
    for name, number in (("t1a", 3), ("t1b", 7)):
        write_series(tmp_path / "in" / name, volume, oblique_affine(), study_uid=later, series_number=number)
    kwargs = {"description": "t2_tse_tra", "study_uid": later, "series_number": 4}
    write_series(tmp_path / "in" / "t2", volume, oblique_affine(), **kwargs)
    write_series(tmp_path / "in" / "old", volume, oblique_affine(), study_uid=earlier, study_date="20190101")
    with caplog.at_level(logging.WARNING):
        report = convert_folder(tmp_path / "in", tmp_path / "out")
    outputs = sorted(str(p.relative_to(tmp_path / "out")) for p in (tmp_path / "out").rglob("*.nii.gz"))
    assert outputs == [
        "sub-P0042/ses-01/anat/sub-P0042_ses-01_T1w.nii.gz",
        "sub-P0042/ses-02/anat/sub-P0042_ses-02_T2w.nii.gz",
        "sub-P0042/ses-02/anat/sub-P0042_ses-02_run-1_T1w.nii.gz",
        "sub-P0042/ses-02/anat/sub-P0042_ses-02_run-2_T1w.nii.gz",
    ]
    table = report.table.set_index("session_id")
    assert pd_isna(table.loc["ses-02", "t1"]) and table.loc["ses-02", "t2"].endswith("_T2w.nii.gz")
    assert "2 t1 images" in caplog.text


def test_a_series_dcm2niix_splits_is_skipped_not_guessed(tmp_path):
    volume = np.random.default_rng(3).integers(0, 100, (8, 10, 4)).astype(np.int16)
    write_series(tmp_path / "in", volume, oblique_affine())
    write_series(tmp_path / "in2", volume, oblique_affine(angles_deg=(0, 40, 0)))
    shutil.copytree(tmp_path / "in2", tmp_path / "in", dirs_exist_ok=True, copy_function=_renamed_copy)
    # both halves share one SeriesInstanceUID but have different orientations
    _same_series_uid(tmp_path / "in")
    report = convert_folder(tmp_path / "in", tmp_path / "out")
    row = report.series.iloc[0]
    assert row["status"] == "skipped" and "dcm2niix split the series into" in row["reason"]


def test_missing_dcm2niix_is_a_clear_error(t1_series, monkeypatch):
    import dcm2niix

    monkeypatch.setattr(dcm2niix, "bin", "/nonexistent/dcm2niix")
    monkeypatch.setattr(shutil, "which", lambda name: None)
    message = r"dcm2niix not found.*pip install dcm2niix.*apt-get install dcm2niix"
    with pytest.raises(BrainlearnError, match=message):
        find_dcm2niix()
    with pytest.raises(BrainlearnError, match=message):  # an error, not a 'failed' row per series
        convert_folder(t1_series[0] / "in", t1_series[0] / "out")


def test_dcm2niix_on_path_is_used_when_the_package_has_none(monkeypatch):
    import dcm2niix

    real = dcm2niix.bin
    monkeypatch.setattr(dcm2niix, "bin", "/nonexistent/dcm2niix")
    monkeypatch.setattr(shutil, "which", lambda name: real)
    assert find_dcm2niix() == real


def pd_isna(value) -> bool:
    return value is None or (isinstance(value, float) and np.isnan(value))


def _renamed_copy(source, target):
    return shutil.copy2(source, str(target).replace("IM", "IN"))


def _same_series_uid(folder):
    import pydicom

    files = sorted(folder.glob("*.dcm"))
    uid = pydicom.dcmread(files[0]).SeriesInstanceUID
    for number, path in enumerate(files, start=1):
        dataset = pydicom.dcmread(path)
        dataset.SeriesInstanceUID = uid
        dataset.InstanceNumber = number
        dataset.save_as(path)
