"""Reading the non-DICOM scanner formats (MGZ, MINC, NRRD, Analyze, ECAT) with their orientation.

nibabel reads MGH/MGZ, MINC-1/2, Analyze and ECAT 7 and gives each image its voxel-to-RAS affine; SimpleITK
reads NRRD, whose LPS geometry is turned into RAS here. MINC goes through nibabel, not SimpleITK: SimpleITK
reads MINC's world coordinates (RAS) as if they were LPS, which mirrors left and right. Analyze files store
no orientation; nibabel (like SPM) assumes the radiological (LAS) storage order, and the converter says so.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from brainlearn.errors import BrainlearnError

log = logging.getLogger(__name__)

FORMATS = {
    ".mgz": "MGZ",
    ".mgh": "MGH",
    ".mnc": "MINC",
    ".nrrd": "NRRD",
    ".nhdr": "NRRD",
    ".hdr": "Analyze",
    ".v": "ECAT",
}
_RAS_FROM_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])


@dataclass(frozen=True)
class Volume:
    """Voxels, the voxel-to-RAS affine (mm) and, for dynamic PET, each frame's start and duration (s)."""

    array: np.ndarray  # (X, Y, Z) or (X, Y, Z, T)
    affine: np.ndarray
    format: str
    frame_starts: tuple[float, ...] | None = None
    frame_durations: tuple[float, ...] | None = None


def image_format(path: Path) -> str | None:
    """The name of ``path``'s format if the converter reads it (``"MGZ"``, ``"MINC"``, ...), else None."""
    name = path.name.lower()
    if name.endswith(".nrrd.gz"):
        return None
    return FORMATS.get(Path(name).suffix)


def read_volume(path: Path) -> Volume:
    """Read an MGZ, MINC, NRRD, Analyze or ECAT image with its affine.

    Raises:
        BrainlearnError: if the format is not one of these or the file cannot be read.
    """
    kind = image_format(path)
    if kind is None:
        known = ", ".join(sorted(FORMATS))
        raise BrainlearnError(f"{path}: not a format the converter reads (known suffixes: {known}).")
    try:
        if kind == "NRRD":
            return _read_nrrd(path)
        if kind == "ECAT":
            return _read_ecat(path)
        return _read_nibabel(path, kind)
    except BrainlearnError:
        raise
    except Exception as error:  # nibabel and SimpleITK raise many types for a damaged file
        raise BrainlearnError(
            f"{path}: cannot read this {kind} file ({type(error).__name__}: {error}). Check that it is complete."
        ) from error


def _read_nibabel(path: Path, kind: str) -> Volume:
    import nibabel as nib

    image = nib.load(path)
    if kind == "Analyze" and type(image).__name__.endswith("AnalyzeImage"):
        log.warning(
            "%s: Analyze files store no orientation; read as nibabel and SPM do (radiological, LAS). "
            "Check left and right on the converted image.",
            path,
        )
    array = np.asanyarray(image.dataobj)
    if kind == "MINC" and array.ndim == 4:
        array = np.moveaxis(array, 0, -1)  # nibabel keeps MINC's time axis first
    return Volume(array=_squeezed(array), affine=np.asarray(image.affine, dtype=np.float64), format=kind)


def _read_ecat(path: Path) -> Volume:
    from nibabel import ecat

    image = ecat.load(path)
    subheaders = image.get_subheaders()
    n = subheaders.get_nframes()
    starts = tuple(float(subheaders.subheaders[i]["frame_start_time"]) / 1000 for i in range(n))  # ms -> s
    durations = tuple(float(subheaders.subheaders[i]["frame_duration"]) / 1000 for i in range(n))
    array = _squeezed(np.asanyarray(image.dataobj))
    frames = (starts, durations) if array.ndim == 4 else (None, None)
    return Volume(array, np.asarray(image.affine, dtype=np.float64), "ECAT", *frames)


def _read_nrrd(path: Path) -> Volume:
    import SimpleITK as sitk

    image = sitk.ReadImage(str(path))
    if image.GetDimension() != 3 or image.GetNumberOfComponentsPerPixel() != 1:
        raise BrainlearnError(
            f"{path}: expected a 3D scalar NRRD image, got {image.GetDimension()}D with "
            f"{image.GetNumberOfComponentsPerPixel()} values per voxel."
        )
    array = sitk.GetArrayFromImage(image).transpose(2, 1, 0)  # (Z, Y, X) -> (X, Y, Z)
    lps = np.eye(4)
    lps[:3, :3] = np.asarray(image.GetDirection(), dtype=np.float64).reshape(3, 3) @ np.diag(image.GetSpacing())
    lps[:3, 3] = image.GetOrigin()
    return Volume(array=array, affine=_RAS_FROM_LPS @ lps, format="NRRD")


def _squeezed(array: np.ndarray) -> np.ndarray:
    """Drop trailing axes of length 1 beyond the third: (X, Y, Z, 1) is a 3D image."""
    while array.ndim > 3 and array.shape[-1] == 1:
        array = array[..., 0]
    return array
