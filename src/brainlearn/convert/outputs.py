"""Turning one converted volume into brainlearn's output: a 3D NIfTI (and its sidecar), or a reason it is not one.

Every image is written again through :func:`brainlearn.io.write_image` rather than copied from dcm2niix: the
new header holds the affine and nothing else (no description, no comment fields that could carry a name), and
the file appears atomically.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from brainlearn.atomic import write_json
from brainlearn.convert.anonymity import Redactor
from brainlearn.convert.dcm2niix import find_dcm2niix, run_dcm2niix
from brainlearn.convert.formats import Volume
from brainlearn.convert.frames import average_frames, describe_frames, frame_times
from brainlearn.errors import BrainlearnError
from brainlearn.io import write_image

log = logging.getLogger(__name__)

CONVERTED, SKIPPED, FAILED = "converted", "skipped", "failed"


@dataclass(frozen=True)
class Outcome:
    """What became of one series or file: status, reason, the image written (if any) and its frame times."""

    status: str
    reason: str
    output: Path | None = None
    frames: str = ""


def convert_dicom_series(
    files: list[Path], target: Path, work: Path, *, redactor: Redactor, pet: bool, average: bool
) -> Outcome:
    """Run dcm2niix on one series in ``work`` and write the result to ``target`` (``.nii.gz``) with its sidecar.

    Args:
        files: the series' DICOM files.
        target: the NIfTI to write; the sidecar goes next to it (``.json``).
        work: an empty scratch folder.
        redactor: removes identifying values from messages and the sidecar.
        pet: whether the series is PET (4D frames may then be averaged).
        average: average the frames of a 4D PET series instead of leaving it out.

    Raises:
        BrainlearnError: if dcm2niix is not installed (a failure on this series is an outcome, not an error).
    """
    find_dcm2niix()
    try:
        images = run_dcm2niix(files, work, redact=redactor)
    except BrainlearnError as error:
        return Outcome(FAILED, redactor(str(error)))
    if len(images) > 1:
        names = ", ".join(_stem(path).removeprefix("series") or "(main)" for path in images)
        return Outcome(
            SKIPPED,
            f"dcm2niix split the series into {len(images)} images ({names}: echoes, orientations or parts); "
            "brainlearn does not guess which one to use. Convert it yourself and put the chosen one in a table.",
        )
    sidecar_path = images[0].with_name(_stem(images[0]) + ".json")
    sidecar = json.loads(sidecar_path.read_text(encoding="utf-8")) if sidecar_path.exists() else {}
    volume = _load_nifti(images[0])
    starts, durations = frame_times(sidecar)
    volume = Volume(volume.array, volume.affine, "DICOM", _tuple(starts), _tuple(durations))
    return write_volume(volume, target, sidecar=redactor.scrub_sidecar(sidecar), pet=pet, average=average)


def write_volume(volume: Volume, target: Path, *, sidecar: dict | None, pet: bool, average: bool) -> Outcome:
    """Write ``volume`` as a 3D NIfTI at ``target``, averaging PET frames if asked; or say why it is left out."""
    array, notes = volume.array, []
    frames = ""
    if array.ndim == 4:
        frames = describe_frames(volume.frame_starts, volume.frame_durations, array.shape[3]) if pet else ""
        if not (pet and average):
            return Outcome(SKIPPED, _reason_4d(pet, array.shape[3], frames), frames=frames)
        array = average_frames(array, volume.frame_durations)
        notes.append(f"averaged {frames}")
        log.info("%s: averaged %s", target.name, frames)
    if array.ndim != 3 or min(array.shape) < 2:
        return Outcome(SKIPPED, f"not a 3D volume (shape {tuple(array.shape)}): a single slice or a projection")
    if np.all(array == array.flat[0]):
        notes.append(f"every voxel is {float(array.flat[0]):g} (blank pixel data)")
    write_image(target, array, volume.affine)
    if sidecar is not None:
        write_json(target.with_name(_stem(target) + ".json"), _sidecar(sidecar, notes))
    return Outcome(CONVERTED, "; ".join(notes), output=target, frames=frames)


def _load_nifti(path: Path) -> Volume:
    import nibabel as nib

    image = nib.load(path)
    array = np.asanyarray(image.dataobj)  # scaled by the header's slope and intercept
    while array.ndim > 3 and array.shape[-1] == 1:
        array = array[..., 0]
    return Volume(array=array, affine=np.asarray(image.affine, dtype=np.float64), format="NIfTI")


def _reason_4d(pet: bool, n: int, frames: str) -> str:
    if pet:
        return f"4D PET ({frames}); set average_frames: true to average the frames into one static image"
    return f"4D image ({n} volumes, e.g. echoes or time points): brainlearn uses one 3D volume per scan"


def _sidecar(sidecar: dict, notes: list[str]) -> dict:
    sidecar = dict(sidecar)
    if any(note.startswith("averaged") for note in notes):
        sidecar["FramesAveraged"] = "duration-weighted mean of all frames (brainlearn convert, average_frames)"
    return sidecar


def _stem(path: Path) -> str:
    """``series_e2`` for ``series_e2.nii`` or ``series_e2.nii.gz``."""
    return path.name.removesuffix(".gz").removesuffix(".nii")


def _tuple(values) -> tuple[float, ...] | None:
    return tuple(values) if values else None
