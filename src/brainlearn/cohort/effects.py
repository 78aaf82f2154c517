"""What happens to one subject's brain: who they are, which regions shrink or grow, and the deformation that does it.

A subject's regional volumes are the template's times a factor per label (hippocampus, ventricles, each cortical
and subcortical grey-matter region): ageing × diagnosis × natural variability. The factors become a
deformation (:mod:`brainlearn.cohort.deform`) that is measured once and corrected, so the achieved volumes
match the targets closely; both are recorded as ground truth.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from brainlearn.cohort import deform, facts
from brainlearn.cohort.anatomy import AMYGDALA, HIPPOCAMPUS, LATERAL_VENTRICLES, Anatomy, region_occupancy

SEVERITY = {"CN": 0.0, "MCI": 0.5, "AD": 1.0}
DIAGNOSIS_MIX = {"ad": (0.4, 0.3, 0.3), "all": (0.4, 0.3, 0.3), "aging": (1.0, 0.0, 0.0), "ms": None}
SUBCORTICAL_GREY = (10, 11, 12, 13, 26, 28, 49, 50, 51, 52, 58, 60)  # thalamus, caudate, putamen, pallidum, ...
# Structures whose volumes the cohort claims, measured and corrected per subject (each side on its own).
MEASURED = {
    "hippocampus_left": (17,),
    "hippocampus_right": (53,),
    "amygdala_left": (18,),
    "amygdala_right": (54,),
    "ventricles_left": (4, 5),
    "ventricles_right": (43, 44),
}
MAX_VENTRICLE_FACTOR = 2.5
DEFAULT_GAIN = 1.5  # achieved / wanted log-volume change is about 2/3 for cortical regions on the 4 mm grid
NATURAL_SD = {"hippocampus": 0.07, "ventricles": 0.25, "grey": 0.04}  # log-SD of volume between healthy people


@dataclass
class Subject:
    """One generated participant: identity, clinical data, scanner site, and the effects drawn for them."""

    participant_id: str
    diagnosis: str | None
    age: float
    sex: str
    site: str
    head_scale: float
    n_lesions: int
    volume_factors: dict[int, float] = field(default_factory=dict)  # label -> subject / template volume
    disease_factors: dict[int, float] = field(default_factory=dict)  # the diagnosis' part of volume_factors


def draw_subject(
    participant_id: str, rng: np.random.Generator, *, preset: str, site: str, difficulty: float
) -> Subject:
    """Draw a participant's diagnosis, age, sex, head size, lesion count and regional volume factors."""
    mix = DIAGNOSIS_MIX[preset]
    diagnosis = None if mix is None else str(rng.choice(("CN", "MCI", "AD"), p=mix))
    low, high = facts.AGE_RANGE
    age = float(np.round(rng.uniform(low, high), 1))
    lesions = preset == "ms" or (preset == "all" and rng.uniform() < 0.5)
    subject = Subject(
        participant_id=participant_id,
        diagnosis=diagnosis,
        age=age,
        sex=str(rng.choice(("F", "M"))),
        site=site,
        head_scale=float(np.clip(rng.normal(1.0, 0.04), 0.9, 1.1)),
        n_lesions=int(rng.integers(1, 31)) if lesions else 0,
    )
    subject.disease_factors = disease_factors(diagnosis, difficulty)
    subject.volume_factors = _volume_factors(subject, rng)
    return subject


def disease_factors(diagnosis: str | None, difficulty: float) -> dict[int, float]:
    """Volume fraction per label caused by the diagnosis alone (MCI between CN and AD), scaled by difficulty."""
    severity = SEVERITY.get(diagnosis or "CN", 0.0) * difficulty
    if diagnosis is None or severity == 0:
        return {}
    factors = {}
    for region, d in facts.AD_THICKNESS_D.items():  # fraction = Cohen's d × coefficient of variation
        for label in facts.DK_REGION_LABELS.get(region, ()):
            factors[label] = 1.0 + min(d, 0.0) * facts.THICKNESS_CV * severity
    hippocampus_loss = facts.HIPPOCAMPUS_VOLUME_LOSS[diagnosis] * difficulty
    ventricle_growth = facts.VENTRICLE_ENLARGEMENT[diagnosis] * difficulty
    factors |= {label: 1.0 - hippocampus_loss for label in HIPPOCAMPUS}
    factors |= {label: 1.0 - 0.8 * hippocampus_loss for label in AMYGDALA}
    factors |= {label: 1.0 + ventricle_growth for label in LATERAL_VENTRICLES}
    return factors


def _volume_factors(subject: Subject, rng: np.random.Generator) -> dict[int, float]:
    years = max(subject.age - facts.AGING["reference_age"], 0.0)
    grey = (1 - facts.AGING["gm_loss_per_year"]) ** years
    hippocampus = (1 - facts.AGING["hippocampus_loss_per_year"]) ** years
    ventricles = (1 + facts.AGING["ventricle_growth_per_year"]) ** years
    cortical = [label for labels in facts.DK_REGION_LABELS.values() for label in labels]
    factors: dict[int, float] = {}
    for label in (*cortical, *SUBCORTICAL_GREY):
        factors[label] = grey * np.exp(rng.normal(0, NATURAL_SD["grey"]))
    for label in (*HIPPOCAMPUS, *AMYGDALA):
        factors[label] = hippocampus * np.exp(rng.normal(0, NATURAL_SD["hippocampus"]))
    shared = rng.normal(0, NATURAL_SD["ventricles"])  # left and right ventricles vary together
    for label in LATERAL_VENTRICLES:
        factors[label] = ventricles * np.exp(shared + rng.normal(0, 0.05))
    for label, factor in subject.disease_factors.items():
        factors[label] = factors.get(label, 1.0) * factor
    for label in LATERAL_VENTRICLES:  # beyond this the flow folds tissue around the ventricles
        factors[label] = min(factors[label], MAX_VENTRICLE_FACTOR)
    return {label: float(f) for label, f in factors.items()}


def subject_deformation(
    anatomy: Anatomy, factors: dict[int, float], rng: np.random.Generator, *, warp_mm: float = 3.0
) -> tuple[np.ndarray, dict[str, float]]:
    """The displacement (3, X, Y, Z) on ``anatomy``'s grid giving each label its volume factor.

    Shape variability comes from a divergence-free random flow (about ``warp_mm`` RMS); volume changes from a
    Poisson-solved flow. The flow of a small region on the coarse grid achieves only part of its source (the
    change spreads to the neighbours), so the sources of the measured structures (:data:`MEASURED`) are
    corrected twice after measuring; other labels use :data:`DEFAULT_GAIN`, measured likewise.

    Returns:
        The displacement in voxels, and the achieved volume factor of each structure in :data:`MEASURED`.
    """
    labels = [label for label in factors if np.any(anatomy.labels == label)]
    lookup = np.zeros(int(anatomy.labels.max()) + 1, dtype=np.float32)
    gains = dict.fromkeys(labels, DEFAULT_GAIN)
    structures = {name: [label for label in ids if label in gains] for name, ids in MEASURED.items()}
    structures = {name: ids for name, ids in structures.items() if ids}
    masks = np.stack([region_occupancy(anatomy.spacing, tuple(ids)) for ids in structures.values()])
    volumes = masks.sum(axis=(1, 2, 3))
    wanted = np.array([-np.log(_structure_factor(anatomy, ids, factors)) for ids in structures.values()])
    sink = ndimage.binary_dilation(anatomy.brain, iterations=2) == 0  # compensation outside the brain
    random_flow = deform.divergence_free_velocity(
        anatomy.shape, anatomy.spacing, rng, sigma_mm=15.0, amplitude_mm=warp_mm
    )
    for correction in (True, True, False):  # two measured corrections, then the final flow
        lookup[labels] = [-np.log(factors[label]) * gains[label] for label in labels]
        source = lookup[anatomy.labels]
        source[sink] -= source.sum() / sink.sum()
        displacement = deform.exponentiate(random_flow + deform.volume_change_velocity(source))
        achieved = deform.warp(masks, displacement).sum(axis=(1, 2, 3)) / volumes
        if correction:
            ratio = np.where(np.abs(wanted) > 0.01, wanted / _nonzero(-np.log(achieved)), 1.0)
            for ids, r in zip(structures.values(), np.clip(np.nan_to_num(ratio, nan=1.0), 0.5, 3.0), strict=True):
                for label in ids:
                    gains[label] *= float(r)
    return displacement, {name: float(a) for name, a in zip(structures, achieved, strict=True)}


def structure_factor(anatomy: Anatomy, name: str, factors: dict[int, float]) -> float:
    """The target volume factor of a structure of :data:`MEASURED` (volume-weighted over its labels)."""
    return _structure_factor(anatomy, MEASURED[name], factors)


def _structure_factor(anatomy: Anatomy, ids, factors: dict[int, float]) -> float:
    sizes = np.array([region_occupancy(anatomy.spacing, (label,)).sum() for label in ids], dtype=np.float64)
    values = np.array([factors.get(label, 1.0) for label in ids])
    return float(np.sum(sizes * values) / max(sizes.sum(), 1.0))


def _nonzero(values: np.ndarray) -> np.ndarray:
    return np.where(np.abs(values) < 1e-6, 1e-6, values)
