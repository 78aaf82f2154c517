"""Scoring explanation maps against where the built-in cohort applied its effects.

``brainlearn cohort`` writes, per participant, ``derivatives/truth/<participant>/``: the atlas labels in the
subject's space (``_dseg``), the atrophy the diagnosis caused (``_desc-atrophy_map``, fraction of volume removed)
and its FDG hypometabolism (``_desc-hypometabolism_map``). The truths a map is scored against:

- ``atrophy``: voxels the diagnosis shrank (hippocampus, amygdala, entorhinal and temporal cortex, ...);
- ``disease``: every structure the diagnosis changed: the atrophy and the lateral ventricles it enlarged (what a
  T1 classifier can see: enlarged ventricles are the largest change of all);
- ``hypometabolism``: voxels whose uptake the diagnosis lowered (what a PET classifier can see);
- ``ageing``: the structures that change most with age in the cohort (lateral ventricles +3 %/year,
  hippocampus and amygdala −0.8 %/year, against −0.4 %/year for the rest of the grey matter): brain age.

A map's score is the ROC-AUC of its values as a detector of truth voxels among the brain's voxels (label > 0): 0.5
is chance, 1 a map that is higher on every affected voxel than on any other.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from brainlearn.cohort.anatomy import AMYGDALA, HIPPOCAMPUS, LATERAL_VENTRICLES
from brainlearn.errors import BrainlearnError
from brainlearn.metrics import roc_auc

TRUTHS = ("atrophy", "disease", "hypometabolism", "ageing")
AGEING_LABELS = (*LATERAL_VENTRICLES, *HIPPOCAMPUS, *AMYGDALA)


def find_truth_folder(source: str | Path, participant_id: str, root: str | Path | None = None) -> Path | None:
    """The folder of ``participant_id``'s truth: under ``root`` if given, else beside the image ``source``.

    The cohort's images lie in ``<cohort>/<participant>/anat/`` (or ``.../<session>/anat/``); the truth in
    ``<cohort>/derivatives/truth/<participant>/``. None when there is none.
    """
    if root is not None:
        folder = Path(root) / participant_id
        return folder if folder.is_dir() else None
    for parent in Path(source).parents[:4]:
        folder = parent / "derivatives" / "truth" / participant_id
        if folder.is_dir():
            return folder
    return None


def read_truth(
    folder: Path, participant_id: str, kinds: tuple[str, ...], *, canonical: bool = True
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """The brain mask (X, Y, Z) and a boolean mask per truth kind; ``canonical``: in RAS+ order, as a cache keeps.

    Raises:
        BrainlearnError: an unknown kind, or a truth file that cannot be read.
    """
    from brainlearn.io import read_image

    unknown = [kind for kind in kinds if kind not in TRUTHS]
    if unknown:
        raise BrainlearnError(f"unknown truth {unknown}; known: {', '.join(TRUTHS)}.")
    labels = read_image(folder / f"{participant_id}_dseg.nii.gz", canonical=canonical).array.astype(np.int32)

    def effect(name: str) -> np.ndarray:
        path = folder / f"{participant_id}_desc-{name}_map.nii.gz"
        return read_image(path, canonical=canonical, allow_empty=True).array > 0

    masks = {}
    for kind in kinds:
        if kind == "ageing":
            masks[kind] = np.isin(labels, AGEING_LABELS)
        elif kind == "disease":  # a diagnosis that shrinks anything also enlarges the ventricles (cohort/effects.py)
            atrophy = effect("atrophy")
            masks[kind] = atrophy | (np.isin(labels, LATERAL_VENTRICLES) & atrophy.any())
        else:
            masks[kind] = effect(kind)
    return labels > 0, masks


def map_auc(importance: np.ndarray, truth: np.ndarray, brain: np.ndarray) -> float:
    """ROC-AUC of ``importance`` detecting ``truth`` voxels among ``brain`` voxels (NaN if none is affected).

    Raises:
        BrainlearnError: the three volumes are not on one grid.
    """
    if not importance.shape == truth.shape == brain.shape:
        raise BrainlearnError(
            f"the map {importance.shape} and the truth {truth.shape} lie on different grids; explain the cohort's "
            "own images (not resampled copies) to score against its truth."
        )
    return roc_auc(truth[brain], importance[brain])
