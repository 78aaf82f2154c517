"""Real DICOM, MINC, MGZ and ECAT files shipped inside pydicom's and nibabel's wheels (nothing is downloaded).

Files used: pydicom's MR_small.dcm (a derived MR slice) and CT_small.dcm; nibabel's 0.dcm and 1.dcm (two files
of one Siemens DTI mosaic series), philips_mprage.dcm.gz (a Philips enhanced multi-frame MPRAGE whose pixel data
are blank, so its geometry and grouping are checked), decimal_rescale.dcm (a qT1 map), csa_slice_norm.dcm
(resting-state fMRI), slicethickness_empty_string.dcm (a derived TOF MIP); tiny.mnc (MINC-1), small.mnc (MINC-2),
test.mgz (4D MGZ) and tinypet.v (ECAT 7).
"""

import gzip
import io
import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest

from brainlearn.convert import convert_folder

DICOM_SAMPLES = {  # package: path inside it
    "pydicom/MR_small.dcm": ("pydicom", "data/test_files/MR_small.dcm"),
    "pydicom/CT_small.dcm": ("pydicom", "data/test_files/CT_small.dcm"),
    "dti/0.dcm": ("nibabel", "tests/data/0.dcm"),
    "dti/1.dcm": ("nibabel", "tests/data/1.dcm"),
    "philips/philips_mprage.dcm.gz": ("nibabel", "nicom/tests/data/philips_mprage.dcm.gz"),
    "nicom/decimal_rescale.dcm": ("nibabel", "nicom/tests/data/decimal_rescale.dcm"),
    "nicom/csa_slice_norm.dcm": ("nibabel", "nicom/tests/data/csa_slice_norm.dcm"),
    "nicom/slicethickness_empty_string.dcm": ("nibabel", "nicom/tests/data/slicethickness_empty_string.dcm"),
    "images/tiny.mnc": ("nibabel", "tests/data/tiny.mnc"),
    "images/test.mgz": ("nibabel", "tests/data/test.mgz"),
    "images/tinypet.v": ("nibabel", "tests/data/tinypet.v"),
}


def sample(package: str, relative: str) -> Path:
    """A test file inside an installed package, or a skip naming it."""
    module = __import__(package)
    path = Path(module.__file__).parent / relative
    if not path.exists():
        pytest.skip(f"{package} {module.__version__} does not ship {relative}")
    return path


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    root = tmp_path_factory.mktemp("samples")
    for name, (package, relative) in DICOM_SAMPLES.items():
        (root / "in" / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(sample(package, relative), root / "in" / name)
    report = convert_folder(root / "in", root / "out")
    return root, report, report.series.set_index("source")


def test_real_series_are_grouped_and_each_gets_its_reason(converted):
    _, report, rows = converted
    assert rows.loc["dti", "files"] == 2  # two files of one series
    expected = {
        "dti": ("skipped", "diffusion MR"),
        "pydicom/MR_small.dcm": ("skipped", "derived image (ImageType DERIVED/SECONDARY/OTHER)"),
        "pydicom/CT_small.dcm": ("skipped", "unsupported modality CT"),
        "nicom/decimal_rescale.dcm": ("skipped", "unknown MR contrast"),
        "nicom/csa_slice_norm.dcm": ("skipped", "functional MR ('resting'"),
        "nicom/slicethickness_empty_string.dcm": ("skipped", "derived image"),
        "philips/philips_mprage.dcm.gz": ("converted", "T1w ('mprage' in the series description)"),
        "images/test.mgz": ("skipped", "4D image (2 volumes"),
        "images/tiny.mnc": ("converted", "MINC read with its orientation"),
        "images/tinypet.v": ("converted", "ECAT read with its orientation"),
    }
    for source, (status, reason) in expected.items():
        assert (rows.loc[source, "status"], rows.loc[source, "reason"][: len(reason)]) == (status, reason), source
    assert report.n_failed == 0
    assert rows.loc["dti", "participant_id"] == "sub-1234"  # a PatientID without name or birth date is kept


def test_blank_philips_mprage_keeps_its_geometry(converted):
    root, report, rows = converted
    row = rows.loc["philips/philips_mprage.dcm.gz"]
    assert row["participant_id"].startswith("sub-anon")  # its PatientID is the patient's name: hashed
    assert "blank pixel data" in row["reason"]
    image = nib.load(row["output"])
    assert image.shape == (176, 256, 256) and not np.asanyarray(image.dataobj).any()
    with gzip.open(sample("nibabel", "nicom/tests/data/philips_mprage.dcm.gz")) as stream:
        dataset = pydicom.dcmread(io.BytesIO(stream.read()), stop_before_pixels=True)
    corners = _frame_corners_ras(dataset)  # (N, 3) world positions of every frame's four corner pixels
    voxels = (np.linalg.inv(image.affine) @ np.c_[corners, np.ones(len(corners))].T)[:3].T
    nearest = np.round(voxels)
    world_error = np.linalg.norm((image.affine[:3, :3] @ (voxels - nearest).T).T, axis=1).max()
    assert world_error < 0.01  # every DICOM pixel corner lands on a voxel centre
    assert (nearest.min(axis=0) == 0).all() and (nearest.max(axis=0) == np.array(image.shape) - 1).all()
    assert list(report.table["t1"]) == [row["output"]]


def test_minc_and_ecat_keep_orientation_and_values(converted):
    root, _, rows = converted
    for name, load in (("tiny.mnc", nib.load), ("tinypet.v", nib.ecat.load)):
        original = load(sample("nibabel", f"tests/data/{name}"))
        output = Path(rows.loc[f"images/{name}", "output"])
        assert output.parent == root / "out" / "other" / "images"  # no participant in these formats
        image = nib.load(output)
        np.testing.assert_allclose(image.affine, original.affine, atol=1e-5)
        expected = np.squeeze(original.get_fdata(), axis=tuple(range(3, original.ndim)))
        np.testing.assert_allclose(image.get_fdata(), expected, rtol=1e-6)


def test_a_volume_of_the_mgz_sample_keeps_its_sheared_affine(tmp_path):
    original = nib.load(sample("nibabel", "tests/data/test.mgz"))
    volume = np.asarray(original.dataobj[..., 1])
    nib.save(nib.MGHImage(volume, original.affine), tmp_path / "sub-07_ses-02_T1w.mgz")
    report = convert_folder(tmp_path / "sub-07_ses-02_T1w.mgz", tmp_path / "out")
    output = tmp_path / "out" / "sub-07" / "ses-02" / "anat" / "sub-07_ses-02_T1w.nii.gz"
    assert report.table.loc[0, "t1"] == str(output)  # a BIDS file name gives participant, session and modality
    image = nib.load(output)
    np.testing.assert_allclose(image.affine, original.affine)
    np.testing.assert_array_equal(image.get_fdata(), volume)


def test_minc2_needs_h5py_and_keeps_orientation(tmp_path):
    pytest.importorskip("h5py", reason="nibabel reads MINC-2 (HDF5) files with h5py")
    path = sample("nibabel", "tests/data/small.mnc")
    report = convert_folder(path, tmp_path)
    image = nib.load(report.series.loc[0, "output"])
    original = nib.load(path)
    assert nib.aff2axcodes(image.affine) == ("S", "A", "R")
    np.testing.assert_allclose(image.affine, original.affine)
    np.testing.assert_allclose(image.get_fdata(), original.get_fdata(), rtol=1e-6)


def test_identifying_values_of_real_headers_stay_out(converted):
    root, _, _ = converted
    texts = "".join(path.read_text() for path in (root / "out").rglob("*") if path.suffix in (".tsv", ".json"))
    for value in ("dft patient name", "Enhanced Dicom Phantom", "CompressedSamples", "19800102", "University of"):
        assert value.lower() not in texts.lower(), value
    sidecar = json.loads(next((root / "out").rglob("*_T1w.json")).read_text())
    assert "StudyDescription" not in sidecar and "InstitutionName" not in sidecar
    assert sidecar["SeriesDescription"] == "MPRAGE_S2"


def _frame_corners_ras(dataset) -> np.ndarray:
    rows, columns = int(dataset.Rows), int(dataset.Columns)
    corners = []
    for frame in dataset.PerFrameFunctionalGroupsSequence:
        position = np.array(frame.PlanePositionSequence[0].ImagePositionPatient, dtype=float)
        orientation = np.array(frame.PlaneOrientationSequence[0].ImageOrientationPatient, dtype=float)
        row_spacing, column_spacing = (float(v) for v in frame.PixelMeasuresSequence[0].PixelSpacing)
        for r in (0, rows - 1):
            for c in (0, columns - 1):
                corners.append(position + c * column_spacing * orientation[:3] + r * row_spacing * orientation[3:])
    return np.array(corners) * [-1, -1, 1]  # LPS -> RAS
