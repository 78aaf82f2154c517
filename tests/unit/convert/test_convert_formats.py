"""NRRD and Analyze files written here, and the frame arithmetic of dynamic PET."""

import logging

import nibabel as nib
import numpy as np
import pytest
from synthetic_dicom import oblique_affine

from brainlearn.convert import convert_folder
from brainlearn.convert.formats import read_volume
from brainlearn.convert.frames import average_frames, describe_frames
from brainlearn.errors import BrainlearnError

SHAPE = (6, 7, 5)


def _write_nrrd(path, array: np.ndarray, ras_affine: np.ndarray) -> None:
    """A NRRD written by hand (not through SimpleITK), in LPS space as 3D Slicer writes it."""
    lps = np.diag([-1.0, -1.0, 1.0, 1.0]) @ ras_affine
    directions = " ".join("(" + ",".join(f"{v:.10g}" for v in lps[:3, axis]) + ")" for axis in range(3))
    header = (
        "NRRD0004\ntype: short\ndimension: 3\nspace: left-posterior-superior\n"
        f"sizes: {' '.join(map(str, array.shape))}\nspace directions: {directions}\n"
        "kinds: domain domain domain\nendian: little\nencoding: raw\n"
        f"space origin: ({','.join(f'{v:.10g}' for v in lps[:3, 3])})\n\n"
    )
    path.write_bytes(header.encode() + array.astype("<i2").tobytes(order="F"))  # first axis fastest


def test_nrrd_in_lps_comes_back_in_ras_with_the_same_world_coordinates(tmp_path):
    array = np.random.default_rng(0).integers(0, 500, SHAPE).astype(np.int16)
    affine = oblique_affine(spacing=(0.8, 1.3, 2.0))
    _write_nrrd(tmp_path / "scan.nrrd", array, affine)
    report = convert_folder(tmp_path / "scan.nrrd", tmp_path / "out")
    image = nib.load(tmp_path / "out" / "other" / "scan.nii.gz")
    assert report.series.loc[0, "modality"] == "NRRD"
    np.testing.assert_allclose(image.affine, affine, atol=1e-6)
    np.testing.assert_array_equal(np.asanyarray(image.dataobj), array)


def test_analyze_is_read_as_nibabel_reads_it_with_a_warning(tmp_path, caplog):
    array = np.random.default_rng(1).normal(size=SHAPE).astype(np.float32)
    nib.save(nib.AnalyzeImage(array, np.diag([2.0, 2.5, 3.0, 1.0])), tmp_path / "old.hdr")
    with caplog.at_level(logging.WARNING):
        convert_folder(tmp_path, tmp_path / "out")
    image = nib.load(tmp_path / "out" / "other" / "old.nii.gz")
    np.testing.assert_allclose(image.affine, nib.load(tmp_path / "old.hdr").affine)
    np.testing.assert_array_equal(image.get_fdata(), array)
    assert "Analyze files store no orientation" in caplog.text


def test_unknown_format_and_damaged_file_are_clear_errors(tmp_path):
    with pytest.raises(BrainlearnError, match=r"scan\.xyz: not a format the converter reads"):
        read_volume(tmp_path / "scan.xyz")
    (tmp_path / "broken.mgz").write_bytes(b"not an mgz")
    with pytest.raises(BrainlearnError, match=r"broken\.mgz: cannot read this MGZ file"):
        read_volume(tmp_path / "broken.mgz")


def test_a_damaged_file_in_a_folder_is_listed_as_failed(tmp_path):
    (tmp_path / "broken.mnc").write_bytes(b"not a minc file")
    report = convert_folder(tmp_path, tmp_path / "out")
    assert report.n_failed == 1 and "cannot read this MINC file" in report.series.loc[0, "reason"]
    assert str(tmp_path) not in report.series.loc[0, "reason"]


def test_empty_input_is_an_error(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(BrainlearnError, match=r"no DICOM file and no MGZ, MINC, NRRD, Analyze or ECAT image found"):
        convert_folder(tmp_path, tmp_path / "out")
    with pytest.raises(BrainlearnError, match="not found"):
        convert_folder(tmp_path / "missing", tmp_path / "out")


def test_frames_average_by_duration_and_are_described():
    frames = np.stack([np.full((2, 3, 4), value, np.float32) for value in (1.0, 4.0)], axis=3)  # (2, 3, 4, 2)
    np.testing.assert_allclose(average_frames(frames, [100, 300]), 3.25)
    np.testing.assert_allclose(average_frames(frames, None), 2.5)  # unknown durations: plain mean
    assert describe_frames([0, 100], [100, 300], 2) == "2 frames, start+duration (s): 0+100, 100+300"
    assert describe_frames(None, None, 2) == "2 frames (frame times unknown)"
    with pytest.raises(BrainlearnError, match=r"needs a 4D image"):
        average_frames(frames[..., 0], None)
