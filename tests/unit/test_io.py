"""NIfTI reading and writing: nibabel's real test images, and each malformed case with its message."""

import gzip

import nibabel as nib
import numpy as np
import pytest

from brainlearn.errors import BrainlearnError
from brainlearn.io import check_same_grid, header_shape, read_image, read_mask, write_image
from brainlearn.samples import nibabel_sample

SHAPE = (12, 14, 10)  # non-cubic on purpose


def _save(path, array, affine=None):
    nib.save(nib.Nifti1Image(np.asarray(array), np.eye(4) if affine is None else affine), path)
    return path


@pytest.fixture
def volume():
    return np.random.default_rng(0).normal(100, 20, SHAPE).astype(np.float32)


def test_reads_real_nifti1_as_float32_with_affine_and_spacing():
    image = read_image(nibabel_sample("anatomical.nii"))
    assert image.shape == (33, 41, 25)
    assert image.array.dtype == np.float32
    assert image.spacing == (2.0, 2.0, 2.0)
    assert image.orientation == "LAS"
    np.testing.assert_allclose(image.affine, nib.load(nibabel_sample("anatomical.nii")).affine)


def test_reads_real_gzip_and_nifti2_and_picks_a_volume_of_4d():
    assert read_image(nibabel_sample("standard.nii.gz")).shape == (4, 5, 7)
    nifti2 = read_image(nibabel_sample("example_nifti2.nii.gz"), volume=1)
    assert nifti2.shape == (32, 20, 12)
    expected = nib.load(nibabel_sample("example_nifti2.nii.gz")).get_fdata()[..., 1]
    np.testing.assert_allclose(nifti2.array, expected, rtol=1e-6)


def test_canonical_orientation_keeps_world_coordinates():
    native = read_image(nibabel_sample("anatomical.nii"))
    ras = read_image(nibabel_sample("anatomical.nii"), canonical=True)
    assert ras.orientation == "RAS"
    voxel = np.array([3, 17, 9])
    world = native.affine @ np.append(voxel, 1)
    ras_voxel = np.rint(np.linalg.inv(ras.affine) @ world)[:3].astype(int)
    assert native.array[tuple(voxel)] == ras.array[tuple(ras_voxel)]


def test_write_then_read_keeps_values_and_affine(tmp_path, volume):
    affine = np.array([[-1.5, 0, 0, 90], [0, 1.2, 0, -126], [0, 0, 2, -72], [0, 0, 0, 1]])
    path = write_image(tmp_path / "out.nii.gz", volume, affine)
    image = read_image(path)
    np.testing.assert_array_equal(image.array, volume)
    np.testing.assert_allclose(image.affine, affine)
    assert image.spacing == pytest.approx((1.5, 1.2, 2.0))
    assert not list(tmp_path.glob(".partial-*"))


def test_masks_stay_integer(tmp_path):
    labels = np.zeros(SHAPE, np.uint8)
    labels[2:5, 3:6, 1:4] = 1
    labels[7, 7, 7] = 3
    mask = read_mask(write_image(tmp_path / "mask.nii.gz", labels, np.eye(4)))
    assert np.issubdtype(mask.array.dtype, np.integer)
    np.testing.assert_array_equal(mask.array, labels)


def test_npy_arrays_read_without_pickle(tmp_path, volume):
    np.save(tmp_path / "0_141_S_0810.npy", volume)
    image = read_image(tmp_path / "0_141_S_0810.npy")
    np.testing.assert_array_equal(image.array, volume)
    np.save(tmp_path / "objects.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(BrainlearnError, match="never loads pickled"):
        read_image(tmp_path / "objects.npy")


def test_missing_file(tmp_path):
    with pytest.raises(BrainlearnError, match=r"missing\.nii\.gz: file not found"):
        read_image(tmp_path / "missing.nii.gz")


def test_not_a_nifti(tmp_path):
    (tmp_path / "notes.nii").write_bytes(b"this is not an image" * 50)
    with pytest.raises(BrainlearnError, match=r"notes\.nii: not a NIfTI image"):
        read_image(tmp_path / "notes.nii")


def test_truncated_gzip(tmp_path, volume):
    data = _save(tmp_path / "full.nii.gz", volume).read_bytes()
    (tmp_path / "cut.nii.gz").write_bytes(data[: len(data) // 2])
    with pytest.raises(BrainlearnError, match=r"cut\.nii\.gz: the file is truncated or corrupt"):
        read_image(tmp_path / "cut.nii.gz")


def test_corrupt_gzip(tmp_path, volume):
    raw = gzip.decompress(_save(tmp_path / "full.nii.gz", volume).read_bytes())
    packed = bytearray(gzip.compress(raw))
    packed[len(packed) // 2 : len(packed) // 2 + 64] = bytes(64)
    (tmp_path / "bad.nii.gz").write_bytes(bytes(packed))
    with pytest.raises(BrainlearnError, match=r"bad\.nii\.gz: the file is truncated or corrupt"):
        read_image(tmp_path / "bad.nii.gz")


def test_truncated_uncompressed(tmp_path, volume):
    data = _save(tmp_path / "full.nii", volume).read_bytes()
    (tmp_path / "cut.nii").write_bytes(data[: len(data) - 500])
    with pytest.raises(BrainlearnError, match=r"cut\.nii: the file is truncated or corrupt"):
        read_image(tmp_path / "cut.nii")


def test_4d_where_3d_expected_says_how_to_pick_a_volume():
    with pytest.raises(BrainlearnError, match=r"example4d\.nii\.gz: expected a 3D image, got shape \(128, 96, 24, 2\)"):
        read_image(nibabel_sample("example4d.nii.gz"))
    with pytest.raises(BrainlearnError, match="volume=N"):
        read_image(nibabel_sample("example4d.nii.gz"))


def test_trailing_singleton_dimension_is_a_3d_image(tmp_path, volume):
    image = read_image(_save(tmp_path / "x.nii.gz", volume[..., None]))
    assert image.shape == SHAPE


@pytest.mark.parametrize("bad, word", [(np.nan, "1 NaN"), (np.inf, "1 infinite")])
def test_nonfinite_voxels(tmp_path, volume, bad, word):
    volume[3, 4, 5] = bad
    path = _save(tmp_path / "bad.nii.gz", volume)
    with pytest.raises(BrainlearnError, match=rf"bad\.nii\.gz: .*{word}"):
        read_image(path)
    assert not np.isfinite(read_image(path, allow_nonfinite=True).array).all()


def test_empty_image(tmp_path):
    with pytest.raises(BrainlearnError, match=r"zeros\.nii\.gz: the image is empty \(every voxel is 0\)"):
        read_image(_save(tmp_path / "zeros.nii.gz", np.zeros(SHAPE, np.float32)))


def test_non_invertible_affine(tmp_path, volume):
    affine = np.eye(4)
    affine[2, 2] = 0.0
    image = nib.Nifti1Image(volume, None)  # nibabel refuses to build a qform from it, so set the sform alone
    image.header.set_sform(affine, code=1)
    image.header.set_qform(None, code=0)
    nib.save(image, tmp_path / "flat.nii.gz")
    with pytest.raises(BrainlearnError, match=r"flat\.nii\.gz: the affine .* is not invertible"):
        read_image(tmp_path / "flat.nii.gz")


def test_image_and_mask_on_different_grids(tmp_path, volume):
    image = read_image(_save(tmp_path / "t1.nii.gz", volume))
    shifted = np.eye(4)
    shifted[:3, 3] = [0, 0, 4]
    mask_path = _save(tmp_path / "mask.nii.gz", (volume > 100).astype(np.uint8), shifted)
    with pytest.raises(BrainlearnError, match=r"mask\.nii\.gz: not on the grid of .*t1\.nii\.gz.*origin"):
        read_mask(mask_path, like=image)
    other_shape = read_image(_save(tmp_path / "small.nii.gz", volume[:-1]))
    with pytest.raises(BrainlearnError, match=r"shape \(11, 14, 10\) vs \(12, 14, 10\)"):
        check_same_grid(image, other_shape)


def test_negative_mask_labels_are_refused(tmp_path):
    labels = np.zeros(SHAPE, np.int16)
    labels[1, 1, 1] = -1
    with pytest.raises(BrainlearnError, match="labels >= 0, found -1"):
        read_mask(write_image(tmp_path / "neg.nii.gz", labels, np.eye(4)))


def test_fractional_mask_is_refused(tmp_path, volume):
    with pytest.raises(BrainlearnError, match="integer labels"):
        read_mask(_save(tmp_path / "prob.nii.gz", volume / volume.max()))


def test_header_shape_reads_no_data(tmp_path, volume):
    assert header_shape(_save(tmp_path / "x.nii.gz", volume)) == SHAPE


def test_absurd_header_size_is_refused_before_allocation(tmp_path, volume):
    path = _save(tmp_path / "x.nii", volume)
    header = bytearray(path.read_bytes())
    dims = np.array([3, 30000, 30000, 30000, 1, 1, 1, 1], dtype="<i2")
    header[40:56] = dims.tobytes()
    (tmp_path / "huge.nii").write_bytes(bytes(header))
    with pytest.raises(BrainlearnError, match=r"huge\.nii: the header declares"):
        read_image(tmp_path / "huge.nii")


def test_gzip_cut_inside_the_header_is_called_truncated(tmp_path, volume):
    data = _save(tmp_path / "full.nii.gz", volume).read_bytes()
    (tmp_path / "cut.nii.gz").write_bytes(data[:300])
    with pytest.raises(BrainlearnError, match=r"cut\.nii\.gz: the file is truncated or corrupt"):
        read_image(tmp_path / "cut.nii.gz")
