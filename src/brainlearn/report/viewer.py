"""The report's 3D viewer: NiiVue (bundled at build time) and the volumes it shows, written as small scripts.

The report is opened from disk (file://), where a page may not fetch files, so every volume travels inside a
classic script, ``viewer/<key>.js``, that stores a gzipped NIfTI-1 file as base64 in ``window.brainlearnVolumes``.
``assets/viewer.js`` hands those to NiiVue (see its header for the HTML it expects). Volumes are downsampled by an
integer stride to at most ``max_size`` voxels per axis and stored as 8 bits: labels exactly, intensities through
the NIfTI scaling (``scl_slope``, ``scl_inter``) so that the viewer shows them in their own units. The affine is
kept, so overlays written from the same grid line up in world coordinates.
"""

from __future__ import annotations

import base64
import gzip
import json
import os
import re
from importlib.resources import files
from pathlib import Path
from typing import NamedTuple

import nibabel as nib
import numpy as np

from brainlearn.atomic import atomic_path
from brainlearn.errors import BrainlearnError
from brainlearn.io import read_image, read_mask

NIIVUE_FILE = "niivue.umd.js"
KINDS = ("image", "mask", "map")
_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


def niivue_script() -> Path | None:
    """The bundled NiiVue script in the installed package, None if the build did not fetch it."""
    path = Path(str(files("brainlearn.report") / "assets" / NIIVUE_FILE))
    return path if path.is_file() else None


def viewer_script() -> Path:
    """The viewer's own script (``assets/viewer.js``), which opens the volumes in NiiVue."""
    return Path(str(files("brainlearn.report") / "assets" / "viewer.js"))


class Volume(NamedTuple):
    path: Path  # the script written
    focus_mm: list[float] | None  # where the viewer's crosshair should start (world millimetres), or None


def write_volume(
    source: str | os.PathLike,
    folder: Path,
    key: str,
    *,
    kind: str,
    max_size: int = 128,
    within: str | os.PathLike | None = None,
) -> Volume:
    """Write ``folder/<key>.js`` holding ``source`` as a gzipped 8-bit NIfTI-1 file in base64, for the viewer.

    Args:
        source: a 3D image file brainlearn reads (NIfTI, MGZ, ...).
        folder: where the script goes (the report's ``viewer/`` folder).
        key: the volume's name in ``window.brainlearnVolumes`` and the page's ``data-items`` (letters, digits,
            ``_`` and ``-``).
        kind: ``"image"`` (continuous: MRI, PET, samples), ``"mask"`` (integer labels 0–255) or ``"map"``
            (importance or any float values; NaN and infinite voxels are shown as 0).
        max_size: the most voxels kept along any axis; longer axes are sampled every ``ceil(n / max_size)``
            voxels, the voxel size grows by that stride and the first voxel stays where it was.
        within: for a map, the scan it is drawn over (same grid): its peak is looked for inside the head only.

    Returns:
        The script's path and the focus, read from the full-resolution voxels: for a mask, its labelled voxel
        nearest to the labels' centre of mass (inside the lesion, even a crescent-shaped one); for a map, its
        largest value among the voxels of the head in ``within`` (above a fifth of its 99th percentile), so that
        a peak in the background around the head does not win; None for an image or an empty volume.

    Raises:
        BrainlearnError: ``source`` (or ``within``) is unreadable, not 3D, holds NaN (images), fractional labels or
            labels above 255 (masks); the message names the file.
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, not {kind!r}")
    if not _KEY.match(key):
        raise ValueError(f"key must hold only letters, digits, '_' and '-', not {key!r}")
    if max_size < 1:
        raise ValueError(f"max_size must be >= 1, not {max_size}")
    array, affine = _read(Path(source), kind)
    focus = _focus(array, affine, kind, within)
    array, affine = _downsample(array, affine, max_size)
    nifti = _nifti_bytes(array, affine, labels=kind == "mask")
    encoded = base64.b64encode(gzip.compress(nifti, compresslevel=6, mtime=0)).decode("ascii")
    script = (
        "window.brainlearnVolumes = window.brainlearnVolumes || {};\n"
        f"window.brainlearnVolumes[{json.dumps(key)}] = {json.dumps(encoded)};\n"
    )
    path = Path(folder) / f"{key}.js"
    with atomic_path(path) as tmp:
        tmp.write_text(script, encoding="ascii")
    return Volume(path, focus)


def _focus(array: np.ndarray, affine: np.ndarray, kind: str, within: str | os.PathLike | None) -> list[float] | None:
    """The focus of :func:`write_volume` in world millimetres."""
    if kind == "image":
        return None
    if kind == "mask":
        voxels = np.argwhere(array > 0)
        if len(voxels) == 0:
            return None
        centre = voxels.mean(axis=0)
        voxel = voxels[np.argmin(((voxels - centre) ** 2).sum(axis=1))]
    else:
        if within is not None:
            scan = read_image(within).array
            low = float(scan.min())
            head = scan > low + 0.2 * (float(np.percentile(scan, 99)) - low)
            if scan.shape == array.shape and np.any(head):
                array = np.where(head, array, 0)
        if not np.any(array != 0):
            return None
        voxel = np.unravel_index(int(np.argmax(array)), array.shape)
    return [round(float(v), 3) for v in (affine @ np.append(np.asarray(voxel, dtype=np.float64), 1.0))[:3]]


def _read(source: Path, kind: str) -> tuple[np.ndarray, np.ndarray]:
    """The voxels as the viewer stores them (uint8 labels for masks, float32 otherwise) and the affine."""
    if kind == "mask":
        mask = read_mask(source)
        if mask.array.max() > 255:
            raise BrainlearnError(
                f"{source}: label {int(mask.array.max())} does not fit the viewer's 8-bit label maps (0-255). "
                "Renumber the labels or leave this mask out of the report."
            )
        return mask.array.astype(np.uint8), mask.affine
    if kind == "map":
        image = read_image(source, allow_nonfinite=True, allow_empty=True)
        return np.where(np.isfinite(image.array), image.array, 0).astype(np.float32), image.affine
    image = read_image(source)
    return image.array, image.affine


def _downsample(array: np.ndarray, affine: np.ndarray, max_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Keep every ``stride``-th voxel along each axis longer than ``max_size``; the first voxel does not move."""
    strides = [-(-n // max_size) for n in array.shape]  # ceil(n / max_size)
    if strides == [1, 1, 1]:
        return array, affine
    array = np.ascontiguousarray(array[:: strides[0], :: strides[1], :: strides[2]])
    affine = affine.copy()
    affine[:3, :3] = affine[:3, :3] * np.asarray(strides, dtype=np.float64)  # column i: axis i's voxel step
    return array, affine


def _nifti_bytes(array: np.ndarray, affine: np.ndarray, *, labels: bool) -> bytes:
    """NIfTI-1 bytes of ``array`` as uint8: labels as they are, values as ``q * scl_slope + scl_inter``."""
    if labels:
        quantized, slope, inter = array, 1.0, 0.0
    else:
        quantized, slope, inter = _quantize(array)
    image = nib.Nifti1Image(quantized, affine)
    header = image.header
    header.set_data_dtype(np.uint8)
    header.set_slope_inter(slope, inter)
    if not labels:
        header["cal_min"], header["cal_max"] = _display_range(array)
    header.set_xyzt_units("mm", "sec")
    image.set_qform(affine, code=1)
    image.set_sform(affine, code=1)
    return image.to_bytes()


def _display_range(array: np.ndarray) -> tuple[float, float]:
    """The window the viewer opens with: the minimum to the 99.5th percentile of the voxels above it.

    Stored as the header's ``cal_min``/``cal_max``, which NiiVue uses instead of its own guess; its guess ignores
    the zeros around a head and can put a uniform tissue class below the window (drawn black).
    """
    low = float(array.min())
    above = array[array > low]
    if above.size == 0:
        return low, low + 1.0
    return low, float(np.percentile(above, 99.5))


def _quantize(array: np.ndarray) -> tuple[np.ndarray, float, float]:
    """Map ``array`` linearly onto 0–255: ``array ≈ q * slope + inter`` within ``slope / 2 = range / 510``.

    Slope and intercept are rounded to float32 first, as the header stores them, so the bound holds for the
    values the viewer decodes.
    """
    low, high = float(array.min()), float(array.max())
    inter = np.float32(low)
    slope = np.float32((high - low) / 255) if high > low else np.float32(1)
    quantized = np.clip(np.rint((array.astype(np.float64) - inter) / slope), 0, 255).astype(np.uint8)
    return quantized, float(slope), float(inter)
