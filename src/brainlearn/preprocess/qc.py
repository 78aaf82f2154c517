"""Quality control: how well each registered scan matches the template, a figure per scan, a sheet per run."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from brainlearn.atomic import atomic_path
from brainlearn.io import Image
from brainlearn.preprocess.template import template_on_grid
from brainlearn.report.figures import orthogonal_slices


def similarity_to_template(image: Image) -> float:
    """Pearson correlation with the template inside the template's brain (≈ 0.8–0.95 when registration worked)."""
    template, _ = template_on_grid(image.affine, image.shape)
    inside = template > 0.02
    a, b = image.array[inside].astype(np.float64), template[inside].astype(np.float64)
    if a.std() == 0:
        return 0.0
    return float(np.corrcoef(a, b)[0, 1])


def save_qc_figure(image: Image, path: str | os.PathLike, *, title: str = "") -> Path:
    """Three planes of the registered image with the template brain's outline drawn over them (red)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    template, _ = template_on_grid(image.affine, image.shape)
    fig, axes = plt.subplots(1, 3, figsize=(7.5, 2.8))
    lo, hi = np.percentile(image.array[image.array != 0], [1, 99.5]) if np.any(image.array) else (0, 1)
    for axis, view, outline in zip(axes, orthogonal_slices(image.array), orthogonal_slices(template), strict=True):
        axis.imshow(view.T, cmap="gray", origin="lower", vmin=lo, vmax=hi)
        axis.contour(outline.T, levels=[0.15], colors="red", linewidths=0.6, origin="lower")
        axis.axis("off")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=90, format="png")
    plt.close(fig)
    return path


def save_contact_sheet(figures: Sequence[tuple[str, Path]], path: str | os.PathLike, *, columns: int = 3) -> Path:
    """All QC figures of a run on one page, each titled with its session and status."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.image as mpimg
    import matplotlib.pyplot as plt

    rows = max(1, -(-len(figures) // columns))
    fig, axes = plt.subplots(rows, columns, figsize=(columns * 5, rows * 2), squeeze=False)
    for axis in axes.flat:
        axis.axis("off")
    for axis, (title, figure) in zip(axes.flat, figures, strict=False):
        axis.imshow(mpimg.imread(figure))
        axis.set_title(title, fontsize=8)
    fig.tight_layout()
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)
    return path
