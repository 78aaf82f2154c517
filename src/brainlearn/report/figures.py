"""Figures written into run folders (matplotlib, no screen needed)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from brainlearn.atomic import atomic_path

VIEWS = ("sagittal", "coronal", "axial")


def save_montage(rows: Sequence[tuple[str, Sequence[tuple]]], path: str | os.PathLike, *, dpi: int = 110) -> Path:
    """Save three orthogonal slices through the centre of each volume, one row per subject.

    Args:
        rows: ``(row title, [(column title, volume (X, Y, Z) in RAS orientation[, spacing in mm]), ...])`` per
            subject; each volume fills three panels (sagittal, coronal, axial), drawn with its voxel proportions.
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
        for c, (column_title, volume, *rest) in enumerate(columns):
            spacing = rest[0] if rest else (1.0, 1.0, 1.0)
            lo, hi = np.percentile(volume, [1, 99.5])
            for v, view in enumerate(orthogonal_slices(volume)):
                axis = axes[r, 3 * c + v]
                across, up = [a for a in range(3) if a != v]  # the slice's horizontal and vertical axes
                axis.imshow(
                    view.T,
                    cmap="gray",
                    origin="lower",
                    vmin=lo,
                    vmax=hi if hi > lo else lo + 1,
                    aspect=spacing[up] / spacing[across],
                )
                if r == 0:
                    axis.set_title(f"{column_title} {VIEWS[v]}", fontsize=7)
        axes[r, 0].text(-0.1, 0.5, row_title, transform=axes[r, 0].transAxes, ha="right", va="center", fontsize=8)
    fig.tight_layout()
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi, format="png")
    plt.close(fig)
    return path


def orthogonal_slices(volume: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The central sagittal (Y, Z), coronal (X, Z) and axial (X, Y) slices of an (X, Y, Z) volume."""
    x, y, z = (n // 2 for n in volume.shape[:3])
    return volume[x, :, :], volume[:, y, :], volume[:, :, z]
