"""FDG-PET in SUVR units (pons-normalized) from regional uptake, smoothed to scanner resolution, with noise.

Published regional SUVRs are *measured* values: means over a region of a PET image at scanner resolution,
with partial-volume effects included. So the generator solves for the true grey-matter uptake per region
that, once blurred with the scanner's point-spread function, measures as the value drawn for the subject
(a linear system: measured = M · true + background, M from blurring each region's grey matter once).
AD and MCI lower the uptake of the regions in ``facts.AD_HYPOMETABOLISM`` (MCI by half).
"""

from __future__ import annotations

import functools

import numpy as np
from scipy import ndimage

from brainlearn.cohort import facts
from brainlearn.cohort.anatomy import Anatomy, load_anatomy
from brainlearn.cohort.effects import SEVERITY

NOISE = 0.05  # SD of voxel noise relative to the local uptake, after the scanner's blur
CORRECTIONS = 2  # measured corrections of the regional uptake on the subject's own anatomy
OTHER_GREY_SUVR = 1.3  # grey matter outside the listed regions (a typical cortical value)


def draw_regional_suvr(diagnosis: str | None, difficulty: float, rng: np.random.Generator) -> dict[str, float]:
    """Measured SUVR per FDG region for one subject: correlated draws from the CN distribution, then the disease."""
    regions = list(facts.FDG_REGION_LABELS)
    rho = facts.FDG_CN_CORRELATION
    z = np.sqrt(rho) * rng.standard_normal() + np.sqrt(1 - rho) * rng.standard_normal(len(regions))
    reductions = hypometabolism(diagnosis, difficulty)
    values = {}
    for region, zr in zip(regions, z, strict=True):
        mean, sd = facts.FDG_CN_SUVR[region]
        values[region] = float((mean + sd * zr) * (1.0 - reductions.get(region, 0.0)))
    return values


def hypometabolism(diagnosis: str | None, difficulty: float) -> dict[str, float]:
    """Fractional FDG reduction per region for a diagnosis (AD as published, MCI half), scaled by difficulty."""
    severity = SEVERITY.get(diagnosis or "CN", 0.0) * difficulty
    return {region: fraction * severity for region, fraction in facts.AD_HYPOMETABOLISM.items() if severity}


def fdg_pet(
    labels: np.ndarray,
    fractions: np.ndarray,
    suvr: dict[str, float],
    *,
    spacing: float,
    fwhm_mm: float,
    rng: np.random.Generator,
) -> np.ndarray:
    """A PET image (float32, SUVR) of a subject from its labels and tissue fractions (CSF, GM, WM, lesion).

    The partial-volume calibration is computed on the template at this spacing and resolution and reused for
    every subject (their anatomy differs little from it).
    """
    regions = list(facts.FDG_REGION_LABELS)
    mixing, background = _calibration(spacing, fwhm_mm)
    targets = np.array([suvr[region] for region in regions])
    true_uptake = np.clip(np.linalg.solve(mixing, targets - background), 0.1, 10.0)
    region_of = _region_index(labels)
    for correction in range(CORRECTIONS + 1):  # the subject's own anatomy differs a little from the template's
        image = _psf(_uptake(labels, fractions, regions, true_uptake), spacing, fwhm_mm)
        if correction < CORRECTIONS:
            measured = _region_means(image, region_of, len(regions))
            true_uptake *= np.where(measured > 0, targets / np.maximum(measured, 1e-6), 1.0)
    noise = _psf(rng.standard_normal(image.shape).astype(np.float32), spacing, fwhm_mm / 3)
    noise *= NOISE / (noise.std() or 1.0)
    return np.clip(image * (1.0 + noise), 0, None).astype(np.float32)


def _uptake(labels, fractions, regions, true_uptake) -> np.ndarray:
    per_label = np.full(int(labels.max()) + 1, OTHER_GREY_SUVR, dtype=np.float32)
    for region, value in zip(regions, true_uptake, strict=True):
        ids = [i for i in facts.FDG_REGION_LABELS[region] if i < per_label.size]
        per_label[ids] = value
    csf, gm, wm, lesion = fractions
    return gm * per_label[labels] + (wm + 0.7 * lesion) * facts.FDG_WHITE_MATTER_SUVR + csf * facts.FDG_CSF_SUVR


def _region_index(labels: np.ndarray) -> np.ndarray:
    """Per voxel, the index of its FDG region (len(regions) where it has none)."""
    regions = list(facts.FDG_REGION_LABELS)
    lookup = np.full(max(int(labels.max()) + 1, 2036), len(regions), dtype=np.int32)
    for index, ids in enumerate(facts.FDG_REGION_LABELS.values()):
        lookup[list(ids)] = index
    return lookup[labels]


def _region_means(image: np.ndarray, region_of: np.ndarray, n: int) -> np.ndarray:
    sums = np.bincount(region_of.ravel(), weights=image.ravel(), minlength=n + 1)[:n]
    counts = np.bincount(region_of.ravel(), minlength=n + 1)[:n]
    return sums / np.maximum(counts, 1)


def measure_regions(image: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Mean of ``image`` over each FDG region's labels (how published regional SUVRs are measured)."""
    return {
        region: float(image[np.isin(labels, ids)].mean())
        for region, ids in facts.FDG_REGION_LABELS.items()
        if np.isin(labels, ids).any()
    }


@functools.lru_cache(maxsize=8)
def _calibration(spacing: float, fwhm_mm: float) -> tuple[np.ndarray, np.ndarray]:
    """M[r, q]: mean over region r of the blurred grey matter of region q; and the blurred WM/CSF background."""
    anatomy: Anatomy = load_anatomy(spacing)
    regions = list(facts.FDG_REGION_LABELS)
    masks = [np.isin(anatomy.labels, ids) for ids in facts.FDG_REGION_LABELS.values()]
    mixing = np.zeros((len(regions), len(regions)))
    sizes = np.array([m.sum() for m in masks], dtype=np.float64)
    reach = int(np.ceil(4 * fwhm_mm / (2.355 * spacing)))  # the blur's support, in voxels
    for q, mask in enumerate(masks):
        box = _bounding_box(mask, reach)  # blurring only around the region is enough and much faster
        blurred = _psf(anatomy.gm[box] * mask[box], spacing, fwhm_mm)
        mixing[:, q] = [blurred[m[box]].sum() for m in masks] / np.maximum(sizes, 1)
    other_gm = ~np.isin(anatomy.labels, [i for ids in facts.FDG_REGION_LABELS.values() for i in ids])
    rest = anatomy.gm * other_gm * OTHER_GREY_SUVR
    rest = rest + anatomy.wm * facts.FDG_WHITE_MATTER_SUVR + anatomy.csf * facts.FDG_CSF_SUVR
    blurred = _psf(rest, spacing, fwhm_mm)
    return mixing, np.array([blurred[m].mean() for m in masks])


def _bounding_box(mask: np.ndarray, margin: int) -> tuple[slice, ...]:
    points = np.argwhere(mask)
    low = np.maximum(points.min(axis=0) - margin, 0)
    high = np.minimum(points.max(axis=0) + margin + 1, mask.shape)
    return tuple(slice(a, b) for a, b in zip(low, high, strict=True))


def _psf(image: np.ndarray, spacing: float, fwhm_mm: float) -> np.ndarray:
    return ndimage.gaussian_filter(image.astype(np.float32), fwhm_mm / (2.355 * spacing))
