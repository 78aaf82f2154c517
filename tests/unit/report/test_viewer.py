"""The volumes the report's viewer loads: 8-bit NIfTI files in scripts, true to the source, and clear errors."""

import base64
import gzip
import hashlib
import json
import re

import nibabel as nib
import numpy as np
import pytest

from brainlearn.errors import BrainlearnError
from brainlearn.report.viewer import niivue_script, viewer_script, write_volume


def _decode(volume):
    """The NIfTI image the viewer/<key>.js script of a written volume carries."""
    text = volume.path.read_text(encoding="ascii")
    match = re.search(r'window\.brainlearnVolumes\[("[^"]+")\] = ("[^"]+");', text)
    assert match and text.startswith("window.brainlearnVolumes = window.brainlearnVolumes || {};")
    key, encoded = json.loads(match[1]), json.loads(match[2])
    return key, nib.Nifti1Image.from_bytes(gzip.decompress(base64.b64decode(encoded)))


def _save(path, array, affine=None):
    affine = np.diag([1.5, 1.5, 2.0, 1.0]) if affine is None else affine
    nib.save(nib.Nifti1Image(array, affine), path)
    return path


def test_an_image_round_trips_within_half_a_quantization_step_with_its_affine(tmp_path):
    rng = np.random.default_rng(0)
    array = rng.normal(50, 20, (20, 18, 16)).astype(np.float32)
    affine = np.array([[0, 0, 2.0, -10], [-1.5, 0, 0, 20], [0, 1.2, 0, -30], [0, 0, 0, 1]])
    source = _save(tmp_path / "t1.nii.gz", array, affine)
    key, image = _decode(write_volume(source, tmp_path / "viewer", "v0", kind="image"))
    assert key == "v0" and image.get_data_dtype() == np.uint8
    decoded = nib.as_closest_canonical(image).get_fdata()
    expected = nib.as_closest_canonical(nib.load(source)).get_fdata()
    step = (array.max() - array.min()) / 255
    assert np.abs(decoded - expected).max() <= step / 2 * 1.001
    assert np.allclose(nib.as_closest_canonical(image).affine, nib.as_closest_canonical(nib.load(source)).affine)
    low, high = float(image.header["cal_min"]), float(image.header["cal_max"])
    assert low == pytest.approx(array.min(), abs=1e-4) and low < high <= array.max()  # the window the viewer opens


def test_a_large_volume_is_strided_to_max_size_and_its_first_voxel_stays_put(tmp_path):
    array = np.zeros((300, 40, 129), np.float32)
    array[::3, :, ::2] = 1.0  # exactly the voxels a stride of (3, 1, 2) keeps
    source = _save(tmp_path / "big.nii.gz", array, np.diag([0.5, 1.0, 1.0, 1.0]))
    _, image = _decode(write_volume(source, tmp_path, "big", kind="image", max_size=128))
    assert image.shape == (100, 40, 65)  # strides 3, 1, 2
    assert np.allclose(np.diag(image.affine)[:3], [1.5, 1.0, 2.0])
    assert np.allclose(image.affine[:3, 3], nib.load(source).affine[:3, 3])
    assert np.allclose(image.get_fdata(), 1.0, atol=1e-6)


def test_mask_labels_are_kept_exactly(tmp_path):
    labels = np.zeros((16, 16, 16), np.int16)
    labels[2:5, 3:9, 4:6] = 1
    labels[9:12, 9:12, 9:12] = 255
    _, image = _decode(write_volume(_save(tmp_path / "m.nii.gz", labels), tmp_path, "m", kind="mask"))
    assert np.array_equal(np.asarray(image.dataobj), nib.as_closest_canonical(nib.load(tmp_path / "m.nii.gz")).dataobj)


def test_maps_show_nan_and_infinite_voxels_as_zero(tmp_path):
    values = np.linspace(0, 1, 16**3, dtype=np.float32).reshape(16, 16, 16)
    values[0, 0, 0], values[1, 1, 1] = np.nan, np.inf
    _, image = _decode(write_volume(_save(tmp_path / "map.nii.gz", values), tmp_path, "map", kind="map"))
    decoded = image.get_fdata()
    assert np.isfinite(decoded).all() and decoded.min() == 0 and decoded.max() == pytest.approx(1, abs=1 / 255)


@pytest.mark.parametrize(
    ("make", "kind", "message"),
    [
        (lambda p: _save(p, np.zeros((8, 8, 8, 2), np.float32)), "image", "4D"),
        (lambda p: _save(p, np.full((8, 8, 8), np.nan, np.float32)), "image", "NaN"),
        (lambda p: p.write_bytes(b"not a nifti at all" * 30) and p, "image", "m.nii"),
        (lambda p: _save(p, np.full((8, 8, 8), 300, np.int16)), "mask", "0-255"),
    ],
    ids=["4d", "nan", "corrupt", "label-too-big"],
)
def test_bad_volumes_are_refused_with_the_file_named(tmp_path, make, kind, message):
    source = tmp_path / "m.nii"
    make(source)
    with pytest.raises(BrainlearnError, match=str(source.name)) as error:
        write_volume(source, tmp_path / "viewer", "bad", kind=kind)
    assert message in str(error.value)
    assert not (tmp_path / "viewer" / "bad.js").exists()


def test_keys_and_kinds_are_checked_before_any_file_is_read(tmp_path):
    with pytest.raises(ValueError, match="key"):
        write_volume(tmp_path / "x.nii", tmp_path, "../evil", kind="image")
    with pytest.raises(ValueError, match="kind"):
        write_volume(tmp_path / "x.nii", tmp_path, "ok", kind="pet")


def test_the_package_carries_the_pinned_niivue_bundle_and_the_viewer_script():
    script = niivue_script()
    assert script is not None, "NiiVue missing: reinstall brainlearn (make install) where npm reaches its registry"
    data = script.read_bytes()
    assert hashlib.sha256(data).hexdigest() == "47b896b77ec4a5be3ef1949c33ad393b6f45629921f326c279000bcf51bdb4af"
    notice = (script.parent / "NIIVUE_LICENSE.txt").read_text()
    assert notice.startswith("NiiVue 0.69.0") and "BSD 2-Clause" in notice
    assert "brainlearnVolumes" in viewer_script().read_text()


def _focus(tmp_path, source, kind, within=None):
    return write_volume(source, tmp_path / "viewer", "f", kind=kind, within=within).focus_mm


def test_the_crosshair_starts_inside_a_mask_and_on_a_map_peak_in_world_millimetres(tmp_path):
    crescent = np.zeros((20, 20, 20), np.uint8)
    crescent[4:16, 4:7, 8:10] = 1  # an L: its centre of mass (about 7.3, 7.0) lies outside it
    crescent[4:7, 4:16, 8:10] = 1
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    affine[:3, 3] = [-20, -20, -20]
    point = _focus(tmp_path, _save(tmp_path / "m.nii.gz", crescent, affine), "mask")
    voxel = np.round((np.asarray(point) + 20) / 2).astype(int)
    assert crescent[tuple(voxel)] == 1
    peak = np.zeros((20, 20, 20), np.float32)
    peak[3, 15, 9] = 0.9
    assert _focus(tmp_path, _save(tmp_path / "p.nii.gz", peak, affine), "map") == [-14.0, 10.0, -2.0]
    head = np.zeros((20, 20, 20), np.float32)
    head[5:15, 5:15, 5:15] = 100
    peak[10, 11, 12] = 0.5  # the largest value inside the head
    _save(tmp_path / "p.nii.gz", peak, affine)
    within = _save(tmp_path / "h.nii.gz", head, affine)
    assert _focus(tmp_path, tmp_path / "p.nii.gz", "map", within) == [0, 2, 4]
    assert _focus(tmp_path, _save(tmp_path / "e.nii.gz", np.zeros((8, 8, 8), np.uint8), affine), "mask") is None
    assert _focus(tmp_path, tmp_path / "p.nii.gz", "image") is None
