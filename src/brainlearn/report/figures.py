"""Figures written into run folders (matplotlib, no screen needed)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np

from brainlearn.atomic import atomic_path
from brainlearn.errors import BrainlearnError

VIEWS = ("sagittal", "coronal", "axial")


class Column(NamedTuple):
    """One column of a montage: a volume in three panels (sagittal, coronal, axial).

    Attributes:
        title: the column's title, drawn above the first row.
        volume: (X, Y, Z) volume in RAS orientation; None leaves the panels empty, marked "not available".
        spacing: voxel size in mm, (x, y, z); panels keep the voxels' proportions.
        cmap: matplotlib colour map, e.g. "gray" for MRI, "inferno" for PET.
        window: (lowest, highest) value shown; default the volume's 1st and 99.5th percentiles.
    """

    title: str
    volume: np.ndarray | None
    spacing: Sequence[float] = (1.0, 1.0, 1.0)
    cmap: str = "gray"
    window: tuple[float, float] | None = None


def save_montage(rows: Sequence[tuple[str, Sequence[tuple]]], path: str | os.PathLike, *, dpi: int = 110) -> Path:
    """Save three orthogonal slices through the centre of each volume, one row per subject.

    Args:
        rows: ``(row title, [column, ...])`` per subject; a column is a :class:`Column` or a plain tuple of its
            fields, e.g. ``(column title, volume (X, Y, Z) in RAS orientation[, spacing in mm])``; each volume
            fills three panels (sagittal, coronal, axial), drawn with its voxel proportions.
        path: the PNG to write (atomically).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n_cols = max(len(columns) for _, columns in rows) * 3
    fig, axes = plt.subplots(len(rows), n_cols, figsize=(1.6 * n_cols, 1.8 * len(rows)), squeeze=False)
    for axis in axes.flat:
        axis.axis("off")
    for r, (row_title, columns) in enumerate(rows):
        for c, column in enumerate(columns):
            column_title, volume, spacing, cmap, window = Column(*column)
            panels = axes[r, 3 * c : 3 * c + 3]
            if r == 0:
                for axis, view in zip(panels, VIEWS, strict=True):
                    axis.set_title(f"{column_title} {view}", fontsize=7)
            if volume is None:
                panels[1].text(0.5, 0.5, "not available", transform=panels[1].transAxes, ha="center", fontsize=7)
                continue
            lo, hi = window if window is not None else np.percentile(volume, [1, 99.5])
            for v, view in enumerate(orthogonal_slices(volume)):
                across, up = [a for a in range(3) if a != v]  # the slice's horizontal and vertical axes
                panels[v].imshow(
                    view.T,
                    cmap=cmap,
                    origin="lower",
                    vmin=lo,
                    vmax=hi if hi > lo else lo + 1,
                    aspect=spacing[up] / spacing[across],
                )
        axes[r, 0].text(-0.1, 0.5, row_title, transform=axes[r, 0].transAxes, ha="right", va="center", fontsize=8)
    fig.tight_layout()
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi, format="png")
    plt.close(fig)
    return path


def save_synthesis_figure(
    rows: Sequence[tuple[str, np.ndarray, np.ndarray, np.ndarray | None]],
    path: str | os.PathLike,
    *,
    spacing: Sequence[float] = (1.0, 1.0, 1.0),
) -> Path:
    """Save the real MRI, the PET synthesized from it and the real PET of each subject, in three planes.

    The MRI is drawn in grey on its own percentile window; both PET columns in the "inferno" colour map on the
    fixed window [-1, 1] of the synthesis models' scale, so that a synthesis too bright or too dim shows as such
    instead of being rescaled to look like the real PET.

    Args:
        rows: ``(title, real MRI, synthesized PET, real PET or None)`` per subject; volumes (X, Y, Z) in RAS
            orientation on one grid, in [-1, 1]. A subject without PET gets empty "not available" panels.
        path: the PNG to write (atomically).
        spacing: voxel size in mm, (x, y, z), of every volume.
    """
    if not rows:
        raise BrainlearnError(f"{path}: no subjects to draw; pass at least one (title, MRI, synthesized PET, PET).")
    pet = {"spacing": spacing, "cmap": "inferno", "window": (-1.0, 1.0)}
    montage = [
        (
            title,
            [
                Column("real MRI", mri, spacing),
                Column("synthesized PET", synthesized, **pet),
                Column("real PET", real_pet, **pet),
            ],
        )
        for title, mri, synthesized, real_pet in rows
    ]
    return save_montage(montage, path)


def orthogonal_slices(volume: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The central sagittal (Y, Z), coronal (X, Z) and axial (X, Y) slices of an (X, Y, Z) volume."""
    x, y, z = (n // 2 for n in volume.shape[:3])
    return volume[x, :, :], volume[:, y, :], volume[:, :, z]
