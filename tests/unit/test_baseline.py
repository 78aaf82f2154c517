"""The volume baseline on a tiny built-in cohort at 4 mm: finite volumes, the AD effect on the ventricles, head size
removed by registration, a hippocampus replaced by CSF measured as lost, bad images skipped, the models' round trip."""

import logging

import numpy as np
import pandas as pd
import pytest
from scipy import ndimage

from brainlearn.baseline import (
    VOLUME_KEYS,
    fit_volume_age_model,
    fit_volume_classifier,
    predict_volume_age,
    predict_volume_classifier,
    regional_volumes,
    volume_table,
)
from brainlearn.cohort.generate import generate_cohort
from brainlearn.data.bids import read_bids
from brainlearn.errors import BrainlearnError
from brainlearn.io import Image, read_image

SPACING = 4.0


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    """12 subjects (CN / MCI / AD) at 4 mm: the participants table and its volume table (two workers)."""
    root = tmp_path_factory.mktemp("baseline") / "ad"
    generate_cohort(root, subjects=12, spacing=SPACING, seed=2, preset="ad", external=0.0, progress=False)
    table = read_bids(root)
    return root, table, volume_table(table, jobs=2)


def test_volumes_are_positive_and_finite(cohort):
    _, table, volumes = cohort
    assert len(volumes) == len(table)
    assert list(volumes.columns) == ["participant_id", "session_id", "diagnosis", "age", "split", *VOLUME_KEYS]
    values = volumes[list(VOLUME_KEYS)].to_numpy(float)
    assert np.all(np.isfinite(values)) and np.all(values > 0)
    assert volumes["brain_ml"].between(1000, 3000).all()  # the ICBM152 brain is ~1900 ml, heads 0.9–1.1×
    assert (volumes["gm_ml"] + volumes["wm_ml"] + volumes["csf_ml"]).to_numpy() == pytest.approx(volumes["brain_ml"])


def test_ad_has_larger_ventricles_than_cn(cohort):
    _, _, volumes = cohort
    means = volumes.groupby("diagnosis")[["hippocampus_fraction", "ventricles_fraction"]].mean()
    # The cohort's AD effect is +35 % ventricles (r = 0.97 with the truth here). Its −24 % hippocampus is not
    # resolved by an affine-placed region at 4 mm (r ≈ 0 with the truth): see the module docstring.
    assert means.loc["AD", "ventricles_fraction"] > 1.2 * means.loc["CN", "ventricles_fraction"]


def test_registration_removes_head_size(cohort):
    root, _, _ = cohort
    t1 = read_image(root / "sub-001" / "anat" / "sub-001_T1w.nii.gz")
    centre = (np.array(t1.shape) - 1) / 2
    # ×1.1 about the centre; nearest neighbour keeps the scanner's noise (linear interpolation would smooth it)
    bigger = ndimage.affine_transform(t1.array, np.eye(3) / 1.1, centre - centre / 1.1, order=0)
    before = regional_volumes(t1)
    after = regional_volumes(Image(array=bigger, affine=t1.affine))
    assert after["brain_ml"] / before["brain_ml"] == pytest.approx(1.1**3, rel=0.04)
    for name in ("hippocampus_fraction", "ventricles_fraction", "gm_fraction"):
        assert after[name] == pytest.approx(before[name], rel=0.05), name


def test_hippocampus_replaced_by_csf_is_measured_as_lost(cohort):
    root, _, _ = cohort
    t1 = read_image(root / "sub-002" / "anat" / "sub-002_T1w.nii.gz")
    labels = read_image(root / "derivatives" / "truth" / "sub-002" / "sub-002_dseg.nii.gz").array
    hippocampus = np.isin(labels, (17, 53))
    fluid = np.percentile(t1.array[np.isin(labels, (4, 43))], 5)  # clear CSF (a 4 mm ventricle is mostly mixed)
    atrophied = Image(array=np.where(hippocampus, fluid, t1.array).astype(np.float32), affine=t1.affine)
    before, after = regional_volumes(t1), regional_volumes(atrophied)
    lost_ml = hippocampus.sum() * SPACING**3 / 1000
    assert before["hippocampus_ml"] - after["hippocampus_ml"] > 0.5 * lost_ml
    assert after["brain_ml"] == pytest.approx(before["brain_ml"], rel=0.01)


def test_a_corrupt_image_is_reported_and_skipped(cohort, tmp_path, caplog):
    _, table, _ = cohort
    corrupt = tmp_path / "sub-999_T1w.nii.gz"
    corrupt.write_bytes(b"\x1f\x8b\x08\x00 not really gzip")
    rows = pd.concat([table.head(1), table.head(1).assign(participant_id="sub-999", t1=str(corrupt))])
    with caplog.at_level(logging.WARNING, logger="brainlearn.baseline"):
        volumes = volume_table(rows, jobs=1)
    assert volumes["participant_id"].tolist() == [table["participant_id"].iloc[0]]
    assert "skipped sub-999 ses-01" in caplog.text and str(corrupt) in caplog.text


def test_an_empty_image_says_what_to_do():
    with pytest.raises(BrainlearnError, match="at least 100 voxels.*Skull-strip"):
        regional_volumes(Image(array=np.zeros((32, 40, 24), np.float32), affine=np.diag([4.0, 4.0, 4.0, 1.0])))


def test_classifier_and_age_model_round_trip(cohort):
    _, _, volumes = cohort
    model = fit_volume_classifier(volumes, classes=("CN", "AD"))
    probability = predict_volume_classifier(model, volumes)
    assert probability.shape == (len(volumes),) and np.all((probability >= 0) & (probability <= 1))
    age = predict_volume_age(fit_volume_age_model(volumes), volumes)
    assert age.shape == (len(volumes),) and np.all(np.isfinite(age))


def test_missing_class_or_split_is_named(cohort):
    _, _, volumes = cohort
    with pytest.raises(BrainlearnError, match=r"no training rows of class FTD; the train split holds AD, CN, MCI"):
        fit_volume_classifier(volumes, classes=("CN", "FTD"))
    with pytest.raises(BrainlearnError, match=r"no rows with split 'train'.*splits present: test"):
        fit_volume_classifier(volumes.assign(split="test"))
    with pytest.raises(BrainlearnError, match=r"diagnosis FTD with an age"):
        fit_volume_age_model(volumes, diagnoses=("FTD",))
