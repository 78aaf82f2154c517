"""Registration recovers known motions of real anatomy; grids, resampling, saved transforms and the way back."""

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage
from scipy.spatial.transform import Rotation

from brainlearn.errors import BrainlearnError
from brainlearn.io import Image, read_image
from brainlearn.preprocess import register
from brainlearn.preprocess.register import (
    load_transform,
    reference_grid,
    register_affine,
    register_to_template,
    resample,
    save_transform,
    template_image,
    to_native,
    transform_points,
)
from brainlearn.preprocess.sitk_io import RAS_TO_LPS
from brainlearn.samples import nibabel_sample


@pytest.fixture(scope="module")
def template():
    return template_image(2.0)  # the real ICBM152 T1, skull-stripped, at 2 mm


def known_motion(image: Image, seed: int, *, scale: bool = True) -> sitk.AffineTransform:
    """Rotation up to ±10° about the image centre, translation up to ±10 mm, isotropic scale 0.9–1.1 (RAS)."""
    rng = np.random.default_rng(seed)
    matrix = Rotation.from_euler("xyz", rng.uniform(-10, 10, 3), degrees=True).as_matrix()
    matrix = matrix * (rng.uniform(0.9, 1.1) if scale else 1.0)
    centre = image.affine[:3, :3] @ (np.array(image.shape) - 1) / 2 + image.affine[:3, 3]
    return sitk.AffineTransform(
        (RAS_TO_LPS @ matrix @ RAS_TO_LPS).ravel().tolist(),
        (RAS_TO_LPS @ rng.uniform(-10, 10, 3)).tolist(),
        (RAS_TO_LPS @ centre).tolist(),
    )


def brain_points(image: Image, threshold: float, step: int = 7) -> np.ndarray:
    """World coordinates (N, 3) of every ``step``-th voxel above ``threshold``: a cloud filling the brain."""
    return np.argwhere(image.array > threshold)[::step] @ image.affine[:3, :3].T + image.affine[:3, 3]


def assert_recovered(found: sitk.Transform, truth: sitk.Transform, points: np.ndarray) -> None:
    error = np.linalg.norm(transform_points(found, points) - transform_points(truth, points), axis=1)

    def rotation(transform):  # the rotation part of the linear map (polar decomposition)
        u, _, vt = np.linalg.svd(np.array(transform.GetMatrix()).reshape(3, 3))
        return u @ vt

    degrees = np.degrees(Rotation.from_matrix(rotation(found) @ rotation(truth).T).magnitude())
    assert error.mean() <= 1.0 and error.max() <= 2.0 and degrees <= 1.0, (error.mean(), error.max(), degrees)


def test_reference_grid_is_fsl_mni152_1mm_in_ras():
    affine, shape = reference_grid()
    assert shape == (182, 218, 182) and nib.aff2axcodes(affine) == ("R", "A", "S")
    assert np.allclose(np.linalg.norm(affine[:3, :3], axis=0), 1.0)
    fsl = np.array([[-1, 0, 0, 90], [0, 1, 0, -126], [0, 0, 1, -72], [0, 0, 0, 1.0]])  # MNI152_T1_1mm, LAS
    assert np.allclose(nib.as_closest_canonical(nib.Nifti1Image(np.zeros(shape, np.uint8), fsl)).affine, affine)
    assert np.allclose(affine @ [0, 0, 0, 1], [-91, -126, -72, 1])
    assert np.allclose(affine @ [181, 217, 181, 1], [90, 91, 109, 1])


def test_reference_grid_spacing_shape_and_padding():
    centre = np.array([-0.5, -17.5, 18.5])
    for spacing, shape, expected in [(2.0, None, (91, 109, 91)), (1.0, (160, 192, 160), (160, 192, 160))]:
        affine, grid_shape = reference_grid(spacing, shape)
        assert grid_shape == expected and np.allclose(affine[:3, :3], np.eye(3) * spacing)
        assert np.allclose(affine[:3, :3] @ (np.array(grid_shape) - 1) / 2 + affine[:3, 3], centre)
    affine, shape = reference_grid()
    padded, padded_shape = reference_grid(pad_to=256)
    assert padded_shape == (256, 256, 256)
    voxels = np.array([[0, 0, 0], [181, 217, 181], [90, 100, 50]])
    offset = np.array([37, 19, 37])  # (256 - 182) // 2, (256 - 218) // 2
    world = lambda a, ijk: ijk @ a[:3, :3].T + a[:3, 3]  # noqa: E731
    assert np.allclose(world(affine, voxels), world(padded, voxels + offset))
    with pytest.raises(BrainlearnError, match="pad_to=200 is smaller than the grid"):
        reference_grid(pad_to=200)
    with pytest.raises(BrainlearnError, match="spacing must be between"):
        reference_grid(0.0)


def test_template_image_is_the_icbm152_t1(template):
    full = template_image()
    assert full.shape == (197, 233, 189) and full.spacing == (1.0, 1.0, 1.0) and full.array.max() == 1.0
    assert template.shape == (98, 116, 94) and template.orientation == "RAS"
    centre = lambda image: image.affine[:3, :3] @ (np.array(image.shape) - 1) / 2 + image.affine[:3, 3]  # noqa: E731
    assert np.allclose(centre(template), centre(full), atol=1.0)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_affine_recovers_a_known_motion_at_2mm(template, seed):
    truth = known_motion(template, seed)
    moved = resample(template, truth, template.affine, template.shape)  # moved(x) = template(truth(x))
    found = register_affine(template, moved, seed=seed)  # moved points -> template points, like truth
    assert_recovered(found, truth, brain_points(moved, 0.05))


def test_template_registration_recovers_a_known_motion_at_1mm():
    full = template_image()
    truth = known_motion(full, seed=3)
    moved = resample(full, truth, full.affine, full.shape)
    found = register_to_template(moved, brain_mask=moved.array > 0.02)  # template points -> moved points
    assert_recovered(found, truth.GetInverse(), brain_points(full, 0.05, step=61))


def test_affine_recovers_a_real_scan_in_las_orientation():
    scan = read_image(nibabel_sample("anatomical.nii"))  # a real 2 mm T1, stored LAS
    truth = known_motion(scan, seed=4)
    moved = resample(scan, truth, scan.affine, scan.shape)
    assert_recovered(register_affine(scan, moved), truth, brain_points(moved, 0.3 * scan.array.max(), step=3))


def test_rigid_recovers_another_contrast_deterministically(template):
    brain = template.array > 0.01
    pet_like = ndimage.gaussian_filter(np.where(brain, 1.2 - template.array, 0), sigma=2).astype(np.float32)
    truth = known_motion(template, seed=5, scale=False)
    pet = resample(Image(pet_like, template.affine), truth, template.affine, template.shape)
    found = register_affine(pet, template, rigid=True, seed=1)  # T1 points -> PET points
    assert found.GetName() == "Euler3DTransform"
    assert_recovered(found, truth.GetInverse(), brain_points(template, 0.05))
    again = register_affine(pet, template, rigid=True, seed=1)
    # Same seed, same samples: the same answer up to the order of multi-threaded sums (1e-6 seen under load).
    assert np.allclose(again.GetParameters(), found.GetParameters(), rtol=0, atol=1e-4)


def test_masks_keep_integer_labels(template):
    labels = np.digitize(template.array, [0.05, 0.4, 0.7]).astype(np.int16) * 7  # 0, 7, 14, 21
    mask = Image(labels, template.affine)
    affine, shape = reference_grid(2.0, pad_to=128)
    moved = resample(mask, known_motion(template, seed=6), affine, shape, nearest=True)
    assert moved.array.dtype == np.int16 and moved.shape == (128, 128, 128)
    assert set(np.unique(moved.array)) == {0, 7, 14, 21}
    boolean = resample(
        Image(template.array > 0.3, template.affine), sitk.Euler3DTransform(), affine, shape, nearest=True
    )
    assert boolean.array.dtype == np.uint8 and set(np.unique(boolean.array)) == {0, 1}


def test_saved_transform_round_trip_and_way_back(template, tmp_path):
    native = resample(template, known_motion(template, seed=7), template.affine, template.shape)  # a "subject"
    transform = register_affine(native, template)  # template points -> native points
    path = save_transform(transform, tmp_path / "sub-01" / "t1_to_template.tfm")
    assert sorted(p.name for p in path.parent.iterdir()) == ["t1_to_template.tfm"]  # no .partial- file left
    loaded = load_transform(path)
    points = brain_points(template, 0.05, step=97)
    assert np.allclose(transform_points(loaded, points), transform_points(transform, points), atol=1e-4)
    grid = resample(native, loaded, *reference_grid(2.0))
    back = to_native(grid, loaded, native)
    assert back.shape == native.shape and np.allclose(back.affine, native.affine)
    both = (native.array > 0.05) & (back.array > 0)
    assert both.sum() > 0.9 * (native.array > 0.05).sum()
    assert np.corrcoef(native.array[both], back.array[both])[0, 1] > 0.95
    with pytest.raises(BrainlearnError, match="transform file not found"):
        load_transform(tmp_path / "missing.tfm")
    (tmp_path / "bad.tfm").write_text("not a transform\n")
    with pytest.raises(BrainlearnError, match="not an ITK transform file"):
        load_transform(tmp_path / "bad.tfm")


def test_degenerate_inputs_are_refused(template):
    constant = Image(np.full(template.shape, 3.0, np.float32), template.affine)
    with pytest.raises(BrainlearnError, match="cannot register an image that is constant"):
        register_affine(constant, template)
    with pytest.raises(BrainlearnError, match="the fixed mask is empty"):
        register_affine(template, template, fixed_mask=np.zeros(template.shape, bool))
    with pytest.raises(BrainlearnError, match="scales the image by"):
        register._check_degenerate(sitk.AffineTransform((0.2, 0, 0, 0, 1, 0, 0, 0, 1), (0, 0, 0), (0, 0, 0)))
