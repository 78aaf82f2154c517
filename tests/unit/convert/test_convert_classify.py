"""What a series is, from its tags alone: never guessed, always with a reason."""

from pathlib import Path

import pytest

from brainlearn.convert.classify import classify
from brainlearn.convert.dicom import Header, Series


def _series(description: str, *, modality="MR", image_type=("ORIGINAL", "PRIMARY", "M", "ND"), **fields) -> Series:
    values = {
        "path": Path("x.dcm"),
        "modality": modality,
        "patient_id": "P1",
        "study_uid": "1.2",
        "study_order": ("20240101", "1000"),
        "series_uid": "1.2.3",
        "series_number": 2,
        "description": description,
        "image_type": image_type,
        "rows": 64,
        "identifying": (),
    }
    return Series([Header(**(values | fields))])


@pytest.mark.parametrize(
    ("description", "column"),
    [
        ("t1_mprage_sag_p2_iso", "t1"),
        ("Accelerated Sagittal MPRAGE", "t1"),
        ("MP-RAGE REPEAT", "t1"),
        ("Sag IR-FSPGR", "t1"),
        ("T1W_3D_TFE", "t1"),
        ("t2_tse_tra", "t2"),
        ("Sagittal 3D FLAIR", "flair"),
        ("t2_space_dark-fluid_sag", "flair"),  # T2-weighted FLAIR is FLAIR
        ("t2_tirm_tra_dark-fluid", "flair"),
    ],
)
def test_mr_contrasts_named_by_the_description(description, column):
    assert classify(_series(description))[0] == column


@pytest.mark.parametrize(
    ("description", "reason"),
    [
        ("CV_map_neuro_qT1_FA12nTI128", "unknown MR contrast"),  # a qT1 map is not a T1-weighted image
        ("T1map_MOLLI", "unknown MR contrast"),
        ("ep2d_diff_mddw_30", "diffusion MR"),
        ("ep2d_bold_rest", "functional MR"),
        ("gre_t2*_tra", "susceptibility / T2* MR"),
        ("t2_star_swi", "susceptibility / T2* MR"),
        ("Axial PD-T2 TSE", "proton density MR"),
        ("gre_field_mapping", "field map"),
        ("mp2rage_UNI_Images", "MP2RAGE"),
        ("T1 FLAIR axial", "ambiguous MR contrast: the series description suggests both T1w and FLAIR"),
        ("t1_t2_combo", "ambiguous MR contrast"),
        ("", "unknown MR contrast"),
    ],
)
def test_other_or_unclear_contrasts_are_left_out_with_the_reason(description, reason):
    column, why = classify(_series(description))
    assert column is None and why.startswith(reason)


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"image_type": ("ORIGINAL", "PRIMARY", "LOCALIZER")}, "localizer"),
        ({"description": "3-Plane Loc"}, "localizer"),
        ({"image_type": ("DERIVED", "PRIMARY", "MPR")}, "derived image (ImageType DERIVED/PRIMARY/MPR)"),
        ({"image_type": ("ORIGINAL", "SECONDARY")}, "derived image"),
        ({"image_type": ("ORIGINAL", "PRIMARY", "P", "ND")}, "phase image"),
        ({"modality": "CT"}, "unsupported modality CT"),
        ({"modality": "SR", "rows": 0}, "not an image"),
        ({"patient_id": ""}, "no PatientID"),
    ],
)
def test_localizers_derived_and_other_series_are_left_out(fields, reason):
    description = fields.pop("description", "t1_mprage")
    column, why = classify(_series(description, **fields))
    assert column is None and why.startswith(reason)


def test_pet_is_recognised_by_modality():
    assert classify(_series("Brain FDG 3D", modality="PT")) == ("pet", "PET (Modality PT)")
