"""Multiple-sclerosis-like white-matter lesions with exact masks.

Lesions are drawn in the subject's own space: centres in white matter, most of them periventricular (the
classic MS distribution), the rest in deep white matter; each an ellipsoid of random size and orientation whose
border is roughened with smooth noise, kept inside white matter. The mask is exact on the output grid; the
lesion replaces white matter in the tissue fractions, so it is bright on FLAIR and T2 and dark on T1.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage
from scipy.spatial.transform import Rotation

RADIUS_MM = (1.5, 7.0)  # lesion semi-axes, log-uniform: many small lesions, a few large ones
PERIVENTRICULAR_MM = 10.0  # distance to the ventricles that counts as periventricular
PERIVENTRICULAR_SHARE = 0.6


def draw_lesions(
    n: int, wm: np.ndarray, ventricles: np.ndarray, spacing: float, rng: np.random.Generator
) -> np.ndarray:
    """A boolean lesion mask with about ``n`` lesions (X, Y, Z); empty when n is 0 or nothing fits."""
    mask = np.zeros(wm.shape, dtype=bool)
    if n == 0:
        return mask
    white = wm > 0.8
    distance = ndimage.distance_transform_edt(~ventricles, sampling=spacing) if ventricles.any() else None
    near = white & (distance < PERIVENTRICULAR_MM) if distance is not None else white
    pools = [np.argwhere(near), np.argwhere(white & ~near)]
    for _ in range(n):
        pool = pools[0] if (rng.uniform() < PERIVENTRICULAR_SHARE and len(pools[0])) or not len(pools[1]) else pools[1]
        if len(pool) == 0:
            break
        centre = pool[rng.integers(len(pool))]
        mask |= _lesion(centre, wm.shape, spacing, rng)
    return mask & (wm > 0.3)


def _lesion(centre: np.ndarray, shape, spacing: float, rng: np.random.Generator) -> np.ndarray:
    radii = np.exp(rng.uniform(*np.log(RADIUS_MM), size=3)) / spacing  # voxels
    half = int(np.ceil(radii.max() * 1.5)) + 1
    lo = np.maximum(centre - half, 0)
    hi = np.minimum(centre + half + 1, shape)
    grid = np.stack(np.meshgrid(*[np.arange(a, b) for a, b in zip(lo, hi, strict=True)], indexing="ij"), -1)
    offsets = (grid - centre) @ Rotation.random(random_state=rng).as_matrix()  # rotated into the lesion's axes
    radius = np.sqrt(np.sum((offsets / radii) ** 2, axis=-1))
    rough = ndimage.gaussian_filter(rng.standard_normal(radius.shape), max(radii.min() / 2, 0.7))
    rough /= np.abs(rough).max() or 1.0
    inside = radius < 1.0 + 0.35 * rough
    lesion = np.zeros(shape, dtype=bool)
    lesion[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]] = inside
    return lesion
