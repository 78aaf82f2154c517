"""Population maps in MNI space, the atlas region ranking and scoring maps against the cohort's truth."""

import numpy as np
import pytest

from brainlearn.cohort.anatomy import HIPPOCAMPUS, load_anatomy
from brainlearn.errors import BrainlearnError
from brainlearn.explain.regions import check_in_template_space, rank_of, region_table, structures, to_template
from brainlearn.explain.truth import find_truth_folder, map_auc


@pytest.fixture(scope="module")
def anatomy():
    return load_anatomy(4.0)


def test_structures_merge_hemispheres_and_leave_out_tiny_ones(anatomy):
    regions = structures(anatomy)
    assert sorted(regions["Hippocampus"].tolist()) == sorted(HIPPOCAMPUS)
    assert "entorhinal" in regions and "Lateral-Ventricle" in regions
    assert "Optic-Chiasm" not in regions and "Unknown" not in regions


def test_a_map_of_the_hippocampus_ranks_it_first(anatomy):
    hippocampus = np.isin(anatomy.labels, HIPPOCAMPUS).astype(np.float32)
    flat = np.full(anatomy.shape, 0.5, np.float32)
    table = region_table({"hippo": hippocampus, "flat": flat}, anatomy)
    assert table["region"].iloc[0] == "Hippocampus"
    assert rank_of(table, "hippo") == 1
    assert table.loc[table["region"] == "Hippocampus", "mean_hippo"].item() == pytest.approx(1.0)
    assert set(table["rank_flat"]) == {1}  # ties share the best rank
    assert rank_of(table, "hippo", region="not-a-region") is None


def test_to_template_keeps_world_coordinates(anatomy):
    # the template at 4 mm taken to the 4 mm grid shifted by one voxel: the same values, one voxel over
    volume = np.random.default_rng(0).random(anatomy.shape).astype(np.float32)
    shifted = anatomy.affine.copy()
    shifted[:3, 3] -= 4.0 * np.sign(np.diag(anatomy.affine)[:3])  # voxel i of `volume` lies at template voxel i - 1
    resampled = to_template(volume, shifted, anatomy)
    np.testing.assert_allclose(resampled[:-1, :-1, :-1], volume[1:, 1:, 1:], atol=1e-5)


def test_maps_outside_mni_space_are_refused(anatomy):
    far = anatomy.affine.copy()
    far[:3, 3] += 500.0
    coverage = to_template(np.ones(anatomy.shape, np.float32), far, anatomy)
    with pytest.raises(BrainlearnError, match="sub-01.nii.gz: the images cover 0% of the MNI template's brain"):
        check_in_template_space(coverage, anatomy, "sub-01.nii.gz")
    check_in_template_space(to_template(np.ones(anatomy.shape, np.float32), anatomy.affine, anatomy), anatomy, "x")


def test_map_auc_is_one_for_a_map_that_marks_the_truth_and_a_half_for_a_flat_one():
    rng = np.random.default_rng(0)
    truth = np.zeros((8, 9, 7), bool)
    truth[2:5, 3:6, 1:4] = True
    brain = np.ones_like(truth)
    assert map_auc(truth + 0.1 * rng.random(truth.shape), truth, brain) == 1.0
    assert map_auc(np.ones(truth.shape), truth, brain) == 0.5
    assert np.isnan(map_auc(np.ones(truth.shape), np.zeros_like(truth), brain))  # no affected voxel: undefined
    with pytest.raises(BrainlearnError, match="lie on different grids"):
        map_auc(np.ones((8, 9, 6)), truth, brain)


def test_the_truth_folder_is_found_beside_the_cohort_images(tmp_path):
    image = tmp_path / "cohort" / "sub-001" / "anat" / "sub-001_T1w.nii.gz"
    image.parent.mkdir(parents=True)
    assert find_truth_folder(image, "sub-001") is None
    truth = tmp_path / "cohort" / "derivatives" / "truth" / "sub-001"
    truth.mkdir(parents=True)
    assert find_truth_folder(image, "sub-001") == truth
    assert find_truth_folder(image, "sub-001", root=tmp_path / "cohort" / "derivatives" / "truth") == truth
    assert find_truth_folder(image, "sub-002", root=tmp_path) is None


@pytest.mark.parametrize("diseased", [True, False])
def test_disease_truth_adds_the_enlarged_ventricles_to_the_atrophy(tmp_path, diseased):
    from brainlearn.explain.truth import read_truth
    from brainlearn.io import write_image

    labels = np.zeros((6, 7, 5), np.int16)
    labels[1:5, 1:6, 1:4] = 2  # white matter
    labels[2, 2:4, 2] = 4  # a lateral ventricle
    labels[3, 4, 2] = 17  # the hippocampus
    atrophy = np.where(labels == 17, 0.2, 0.0).astype(np.float32) * diseased
    write_image(tmp_path / "sub-1_dseg.nii.gz", labels, np.eye(4))
    write_image(tmp_path / "sub-1_desc-atrophy_map.nii.gz", atrophy, np.eye(4))
    brain, truths = read_truth(tmp_path, "sub-1", ("atrophy", "disease", "ageing"))
    assert brain.sum() == (labels > 0).sum()
    assert truths["atrophy"].sum() == diseased
    assert truths["disease"].sum() == 3 * diseased  # the hippocampus voxel and the two ventricle voxels
    assert truths["ageing"].sum() == 3  # ventricles and hippocampus change with age in everyone
    with pytest.raises(BrainlearnError, match="unknown truth"):
        read_truth(tmp_path, "sub-1", ("amyloid",))
