"""The built-in cohort: every claim of the generator measured on what it wrote (tiny 4 mm cohorts)."""

import hashlib
import json
import pickle
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from brainlearn.cohort import facts, pet
from brainlearn.cohort.anatomy import HIPPOCAMPUS, region_occupancy
from brainlearn.cohort.generate import generate_cohort
from brainlearn.data.bids import read_bids
from brainlearn.data.pairs import read_pairs
from brainlearn.errors import BrainlearnError
from brainlearn.io import read_image, read_mask

SPACING = 4.0


def _truth(root, pid):
    return json.loads((root / "derivatives" / "truth" / pid / f"{pid}_truth.json").read_text())


def _image(root, pid, suffix, folder="anat"):
    return read_image(root / pid / folder / f"{pid}_{suffix}.nii.gz", allow_empty=True).array


def _labels(root, pid):
    return read_mask(root / "derivatives" / "truth" / pid / f"{pid}_dseg.nii.gz").array


@pytest.fixture(scope="module")
def mixed(tmp_path_factory):
    """CN / MCI / AD with lesions in some, PET, and a held-out site."""
    root = tmp_path_factory.mktemp("cohort") / "all"
    report = generate_cohort(root, subjects=18, spacing=SPACING, seed=1, preset="all", external=0.2, progress=False)
    return root, report


@pytest.fixture(scope="module")
def healthy(tmp_path_factory):
    root = tmp_path_factory.mktemp("cohort") / "aging"
    generate_cohort(root, subjects=20, spacing=SPACING, seed=2, preset="aging", external=0.0, progress=False)
    return root


def test_participants_table_and_bids_layout(mixed):
    root, report = mixed
    table = pd.read_csv(root / "participants.tsv", sep="\t")
    assert list(table.columns) == ["participant_id", "diagnosis", "age", "sex", "site", "split"]
    assert len(table) == 18 and set(table["diagnosis"]) <= {"CN", "MCI", "AD"}
    assert table["age"].between(55, 90).all()
    assert (table["split"] == "external").equals(table["site"] == "site-X")
    assert set(table.loc[table["site"] != "site-X", "split"]) <= {"train", "val", "test"}
    bids = read_bids(root)
    assert len(bids) == 18
    assert bids[["t1", "t2", "flair", "pet", "mask"]].notna().all().all()


def test_hippocampus_shrinks_by_the_configured_fraction(mixed):
    root, report = mixed
    template = region_occupancy(SPACING, HIPPOCAMPUS).sum()
    disease_part = {"CN": [], "MCI": [], "AD": []}
    for row in report.table.itertuples():
        pid = row.participant_id
        truth = _truth(root, pid)
        hippocampus = truth["hippocampus"]
        warped = read_image(root / "derivatives" / "truth" / pid / f"{pid}_label-hippocampus_probseg.nii.gz").array
        measured = warped.sum() / template / truth["head_scale"] ** 3  # the atlas mask through the deformation
        # 6 %: trilinear resampling of a 4 mm partial-volume map is not exactly volume-preserving (1-2 % at 2 mm)
        assert measured == pytest.approx(hippocampus["target_factor"], rel=0.06)
        assert hippocampus["achieved_factor"] == pytest.approx(hippocampus["target_factor"], rel=0.03)
        other_effects = hippocampus["target_factor"] / hippocampus["disease_factor"]  # ageing, natural variation
        disease_part[row.diagnosis].append(measured / other_effects)
    assert np.mean(disease_part["CN"]) == pytest.approx(1.0, abs=0.05)
    assert np.mean(disease_part["AD"]) == pytest.approx(1 - facts.HIPPOCAMPUS_VOLUME_LOSS["AD"], abs=0.05)
    assert np.mean(disease_part["AD"]) < np.mean(disease_part["MCI"]) < np.mean(disease_part["CN"])


def test_deformations_are_invertible(mixed):
    root, report = mixed
    assert all(_truth(root, pid)["jacobian_min"] > 0 for pid in report.table["participant_id"])


def test_cn_pet_matches_the_published_regional_suvr(healthy):
    values = {region: [] for region in facts.FDG_REGION_LABELS}
    for i in range(1, 21):
        pid = f"sub-{i:03d}"
        for region, value in pet.measure_regions(_image(healthy, pid, "pet", "pet"), _labels(healthy, pid)).items():
            values[region].append(value)
    for region, measured in values.items():
        mean, sd = facts.FDG_CN_SUVR[region]
        assert np.mean(measured) == pytest.approx(mean, rel=0.06), region
        assert 0.4 * sd < np.std(measured, ddof=1) < 1.8 * sd, region


def test_ad_pet_is_lower_where_configured(mixed):
    root, report = mixed
    affected = [r for r in facts.AD_HYPOMETABOLISM if r in facts.FDG_REGION_LABELS]
    ratios = {"CN": [], "AD": []}
    for row in report.table.itertuples():
        if row.diagnosis not in ratios:
            continue
        pid = row.participant_id
        truth = _truth(root, pid)
        measured = pet.measure_regions(_image(root, pid, "pet", "pet"), _labels(root, pid))
        for region in affected:  # each subject's PET carries the regional values drawn for it
            assert measured[region] == pytest.approx(truth["fdg_suvr_target"][region], rel=0.06)
        cn_means = [facts.FDG_CN_SUVR[region][0] for region in affected]
        ratios[row.diagnosis].append(np.mean([measured[r] / m for r, m in zip(affected, cn_means, strict=True)]))
        hypo = read_image(
            root / "derivatives" / "truth" / pid / f"{pid}_desc-hypometabolism_map.nii.gz", allow_empty=True
        ).array
        assert (hypo.max() > 0) == (row.diagnosis == "AD")
    assert np.mean(ratios["AD"]) < np.mean(ratios["CN"]) - 0.08


def test_lesions_are_bright_on_flair_and_t2_dark_on_t1(tmp_path):
    root = tmp_path / "ms"
    generate_cohort(root, subjects=3, spacing=3.0, seed=4, preset="ms", external=0.0, progress=False)
    for i in range(1, 4):
        pid = f"sub-{i:03d}"
        lesion = read_mask(root / pid / "anat" / f"{pid}_label-lesion_mask.nii.gz").array > 0
        white = np.isin(_labels(root, pid), (2, 41)) & ~lesion
        assert lesion.sum() > 0
        for suffix, brighter in (("FLAIR", True), ("T2w", True), ("T1w", False)):
            image = _image(root, pid, suffix)
            ratio = image[lesion].mean() / image[white].mean()
            assert (ratio > 1.2) if brighter else (ratio < 0.95), (pid, suffix, ratio)


def _digests(root, pids):
    files = sorted(p for pid in pids for p in (root / pid).rglob("*.nii.gz") if "mask" not in p.name)
    return {p.relative_to(root): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


def test_same_seed_same_bytes_other_seed_other_subjects(mixed, tmp_path):
    root, _ = mixed
    generate_cohort(
        tmp_path / "again", subjects=2, spacing=SPACING, seed=1, preset="all", external=0.2, jobs=1, progress=False
    )
    pids = ["sub-001", "sub-002"]
    assert _digests(tmp_path / "again", pids) == _digests(root, pids)
    generate_cohort(tmp_path / "other", subjects=2, spacing=SPACING, seed=9, preset="all", external=0.2, progress=False)
    other = _digests(tmp_path / "other", pids)
    assert not set(other.values()) & set(_digests(root, pids).values())


def test_an_interrupted_cohort_completes_only_what_is_missing(tmp_path):
    root = tmp_path / "c"
    generate_cohort(root, subjects=3, spacing=SPACING, preset="ad", progress=False)
    (root / "derivatives" / "truth" / "sub-002" / "sub-002_truth.json").unlink()
    report = generate_cohort(root, subjects=3, spacing=SPACING, preset="ad", progress=False)
    assert report.n_generated == 1
    with pytest.raises(BrainlearnError, match=r"other settings \(preset: 'ad' -> 'ms'\)"):
        generate_cohort(root, subjects=3, spacing=SPACING, preset="ms", progress=False)


def test_bad_settings_are_refused(tmp_path):
    with pytest.raises(BrainlearnError, match="unknown preset 'alzheimer'"):
        generate_cohort(tmp_path, preset="alzheimer")
    with pytest.raises(BrainlearnError, match="spacing must be between"):
        generate_cohort(tmp_path / "x", spacing=0.1)


def test_pair_lists_are_unpaired_for_training_and_read_back_safely(tmp_path):
    root = tmp_path / "pairs"
    report = generate_cohort(
        root,
        subjects=10,
        spacing=SPACING,
        seed=5,
        preset="ad",
        difficulty=1.0,
        external=0.2,
        val=0.2,
        test=0.2,
        pair_lists=True,
        progress=False,
    )
    binary = report.table[report.table["diagnosis"].isin(["CN", "AD"])]
    for split, rows in binary.groupby("split"):
        table = read_pairs(root / "pairs" / f"{split}.pkl", split=split)
        mri_rows = table[table["t1"].notna()]
        assert sorted(mri_rows["participant_id"]) == sorted(rows["participant_id"])
        diagnosis = dict(zip(rows["participant_id"], rows["diagnosis"], strict=True))
        assert all(diagnosis[p] == d for p, d in zip(mri_rows["participant_id"], mri_rows["diagnosis"], strict=True))
        raw = pickle.loads((root / "pairs" / f"{split}.pkl").read_bytes())  # our own file, for its pairing
        if split == "external":
            assert table["pet"].isna().all() and all(len(pair) == 2 for pair in raw)
            continue
        owners = [(Path(mri).name.split("_")[0], Path(pet).name.split("_")[0]) for mri, pet, _ in raw]
        if split == "train" and len(raw) > 1:
            assert all(m != p for m, p in owners)  # every training MRI comes with another participant's PET
        else:
            assert all(m == p for m, p in owners)  # evaluation pairs are paired
