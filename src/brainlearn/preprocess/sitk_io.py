"""Between brainlearn's :class:`~brainlearn.io.Image` (RAS world, array indexed x, y, z) and SimpleITK.

ITK's world is LPS (x grows to the Left, y to the Posterior) where NIfTI's is RAS, and a SimpleITK image's
array is indexed (z, y, x). These two functions are the only place that knows; everything else stays in RAS.
"""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk

from brainlearn.io import Image

RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0])


def to_sitk(image: Image | np.ndarray, affine: np.ndarray | None = None) -> sitk.Image:
    """A SimpleITK image with the same voxels and world geometry (float32 unless the array is integer)."""
    array, affine = (image.array, image.affine) if isinstance(image, Image) else (np.asarray(image), affine)
    if not np.issubdtype(array.dtype, np.integer):
        array = array.astype(np.float32)
    result = sitk.GetImageFromArray(np.ascontiguousarray(np.transpose(array, (2, 1, 0))))
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    direction = RAS_TO_LPS @ affine[:3, :3] / spacing
    result.SetSpacing([float(s) for s in spacing])
    result.SetDirection([float(d) for d in direction.ravel()])
    result.SetOrigin([float(o) for o in RAS_TO_LPS @ affine[:3, 3]])
    return result


def from_sitk(image: sitk.Image, *, path=None) -> Image:
    """Back to an :class:`Image` (the voxel-to-RAS affine rebuilt from spacing, direction and origin)."""
    array = np.transpose(sitk.GetArrayFromImage(image), (2, 1, 0))
    direction = np.array(image.GetDirection()).reshape(3, 3)
    affine = np.eye(4)
    affine[:3, :3] = RAS_TO_LPS @ direction @ np.diag(image.GetSpacing())
    affine[:3, 3] = RAS_TO_LPS @ np.array(image.GetOrigin())
    return Image(array=np.ascontiguousarray(array), affine=affine, path=path)
