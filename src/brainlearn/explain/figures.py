"""Importance maps drawn over their anatomy with nilearn: three orthogonal views through the map's peak."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np

from brainlearn.atomic import atomic_path

THRESHOLD = 0.2  # of the map's maximum: fainter importance is left transparent so the anatomy shows


def save_overlay(
    importance: np.ndarray, anatomy: np.ndarray, affine: np.ndarray, path: str | os.PathLike, *, title: str
) -> Path:
    """Write a PNG of ``importance`` (X, Y, Z, in [0, 1]) over ``anatomy`` (same grid, ``affine``), atomically.

    The cut goes through the map's most important voxel; values below :data:`THRESHOLD` are not drawn.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import nibabel as nib
    from nilearn import plotting

    path = Path(path)
    peak = np.unravel_index(int(np.argmax(importance)), importance.shape)
    cut = (affine @ np.array([*peak, 1.0]))[:3]
    figure = plt.figure(figsize=(9, 3.2))
    options = {"threshold": THRESHOLD, "vmax": 1.0, "cmap": "hot", "symmetric_cbar": False, "black_bg": True}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # nilearn's notes on empty or masked maps: the PNG is right
            plotting.plot_stat_map(
                nib.Nifti1Image(importance.astype(np.float32), affine),
                bg_img=nib.Nifti1Image(anatomy.astype(np.float32), affine),
                cut_coords=cut,
                draw_cross=False,
                title=title,
                figure=figure,
                dim=0,
                **options,
            )
        with atomic_path(path) as tmp:
            figure.savefig(tmp, dpi=100, format="png", facecolor="black")
    finally:
        plt.close(figure)
    return path
