"""One subject of the built-in cohort: deform the template, add lesions, image it with MR and PET, keep the truth."""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from brainlearn.cohort import deform, facts, pet
from brainlearn.cohort.anatomy import HIPPOCAMPUS, LATERAL_VENTRICLES, Anatomy, load_anatomy, region_occupancy
from brainlearn.cohort.effects import Subject, structure_factor, subject_deformation
from brainlearn.cohort.lesions import draw_lesions
from brainlearn.cohort.mri import SITES, mr_images

COARSE_SPACING_MM = 4.0  # deformations are smooth: solved on this grid, interpolated to the image grid


@dataclass
class SubjectImages:
    """Everything generated for one subject, on the anatomy's grid (X, Y, Z)."""

    mri: dict[str, np.ndarray]  # t1, t2, flair (int16)
    pet: np.ndarray  # SUVR (float32)
    lesion_mask: np.ndarray  # uint8
    labels: np.ndarray  # Desikan-Killiany / FreeSurfer labels in subject space (int16)
    hippocampus: np.ndarray  # the atlas hippocampus (partial volume, 0-1) through the subject's deformation
    atrophy: np.ndarray  # fraction of volume removed by the diagnosis, per voxel (float32)
    hypometabolism: np.ndarray  # fractional FDG reduction by the diagnosis, per voxel (float32)
    truth: dict  # scalar ground truth (targets and achieved effects)


def generate_subject(subject: Subject, anatomy: Anatomy, rng: np.random.Generator, *, difficulty: float):
    """Generate all images and ground truth of ``subject`` on ``anatomy``'s grid."""
    coarse = load_anatomy(max(COARSE_SPACING_MM, anatomy.spacing))
    coarse_displacement, achieved = subject_deformation(coarse, subject.volume_factors, rng)
    displacement = deform.compose_on_grid(
        coarse_displacement, coarse.affine, anatomy.affine, anatomy.shape, _head_scaling(anatomy, subject.head_scale)
    )
    hippocampus_template = region_occupancy(anatomy.spacing, HIPPOCAMPUS)
    t1, gm, wm, csf, hippocampus = deform.warp(
        np.stack([anatomy.t1, anatomy.gm, anatomy.wm, anatomy.csf, hippocampus_template]), displacement
    )
    labels = deform.warp(anatomy.labels[None].astype(np.float32), displacement, nearest=True)[0].astype(np.int16)

    lesion = draw_lesions(subject.n_lesions, wm, np.isin(labels, LATERAL_VENTRICLES), anatomy.spacing, rng)
    lesion_fraction = wm * lesion
    fractions = np.stack([csf, gm, wm - lesion_fraction, lesion_fraction])
    site = SITES[subject.site]
    mri = mr_images(fractions, _texture(t1, fractions, anatomy.spacing), site, anatomy.spacing, rng)
    suvr = pet.draw_regional_suvr(subject.diagnosis, difficulty, rng)
    pet_image = pet.fdg_pet(labels, fractions, suvr, spacing=anatomy.spacing, fwhm_mm=site.pet_fwhm_mm, rng=rng)
    coarse_jacobian = deform.jacobian_determinant(coarse_displacement)
    truth = _truth(subject, achieved, suvr, coarse_jacobian, lesion, anatomy.spacing, difficulty, coarse)
    return SubjectImages(
        mri=mri,
        pet=pet_image,
        lesion_mask=lesion.astype(np.uint8),
        labels=labels,
        hippocampus=hippocampus.astype(np.float32),
        atrophy=_atrophy_map(labels, subject.disease_factors),
        hypometabolism=_hypometabolism_map(labels, gm, subject.diagnosis, difficulty),
        truth=truth,
    )


def _head_scaling(anatomy: Anatomy, scale: float) -> np.ndarray:
    """World transform taking the subject's head (``scale`` times the template's) onto the template's size."""
    centre = anatomy.affine[:3, :3] @ np.argwhere(anatomy.brain).mean(axis=0) + anatomy.affine[:3, 3]
    transform = np.eye(4)
    transform[:3, :3] /= scale
    transform[:3, 3] = centre - centre / scale
    return transform


@functools.lru_cache(maxsize=4)
def _tissue_intensities(spacing: float) -> np.ndarray:
    """Least-squares template T1 intensity of CSF, GM and WM (to separate tissue contrast from fine detail)."""
    anatomy = load_anatomy(spacing)
    inside = anatomy.brain
    design = np.stack([anatomy.csf[inside], anatomy.gm[inside], anatomy.wm[inside]], axis=1)
    return np.linalg.lstsq(design, anatomy.t1[inside], rcond=None)[0]


def _texture(t1: np.ndarray, fractions: np.ndarray, spacing: float) -> np.ndarray:
    """The real template's detail beyond three tissue classes, as a multiplicative factor near 1."""
    predicted = np.tensordot(_tissue_intensities(spacing), fractions[:3], axes=1)
    ratio = np.where(predicted > 0.05, t1 / np.maximum(predicted, 1e-3), 1.0)
    return np.clip(ratio, 0.8, 1.2).astype(np.float32)


def _atrophy_map(labels: np.ndarray, disease_factors: dict[int, float]) -> np.ndarray:
    lookup = np.zeros(int(labels.max()) + 1, dtype=np.float32)
    for label, factor in disease_factors.items():
        if label < lookup.size and factor < 1.0:
            lookup[label] = 1.0 - factor
    return lookup[labels]


def _hypometabolism_map(labels, gm, diagnosis, difficulty) -> np.ndarray:
    lookup = np.zeros(int(labels.max()) + 1, dtype=np.float32)
    for region, fraction in pet.hypometabolism(diagnosis, difficulty).items():
        ids = [i for i in facts.FDG_REGION_LABELS.get(region, ()) if i < lookup.size]
        lookup[ids] = fraction
    return (lookup[labels] * (gm > 0.2)).astype(np.float32)


def _truth(subject: Subject, achieved, suvr, jacobian, lesion, spacing, difficulty, coarse) -> dict:
    def structure(side_names):
        target = np.mean([structure_factor(coarse, n, subject.volume_factors) for n in side_names])
        disease = np.mean([structure_factor(coarse, n, subject.disease_factors) for n in side_names])
        return {
            "target_factor": float(target),
            "achieved_factor": float(np.mean([achieved[n] for n in side_names])),
            "disease_factor": float(disease),
        }

    return {
        "participant_id": subject.participant_id,
        "diagnosis": subject.diagnosis,
        "age": subject.age,
        "sex": subject.sex,
        "site": subject.site,
        "difficulty": difficulty,
        "head_scale": subject.head_scale,
        "hippocampus": structure(("hippocampus_left", "hippocampus_right")),
        "ventricles": structure(("ventricles_left", "ventricles_right")),
        "jacobian_min": float(jacobian.min()),
        "lesions": {"count_drawn": subject.n_lesions, "volume_mm3": float(lesion.sum() * spacing**3)},
        "fdg_suvr_target": suvr,
    }
