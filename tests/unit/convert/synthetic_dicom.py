"""Write small DICOM series from an array and a RAS affine, the way a scanner would store them (LPS, one file a slice).

Only the tags dcm2niix and brainlearn's converter read are written; the pixel data are the array's values.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

MR_STORAGE = "1.2.840.10008.5.1.4.1.1.4"
PET_STORAGE = "1.2.840.10008.5.1.4.1.1.128"
RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])
IDENTITY = {"PatientName": "Doe^Jane^Quincy", "PatientBirthDate": "19420317", "PatientID": "P0042"}


def oblique_affine(spacing=(1.1, 0.9, 2.5), angles_deg=(12.0, -9.0, 21.0), origin=(-31.7, 18.2, -12.9)) -> np.ndarray:
    """A RAS voxel-to-world affine with rotations about x, y and z (degrees) and anisotropic voxels (mm)."""
    ax, ay, az = np.deg2rad(angles_deg)
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    affine = np.eye(4)
    affine[:3, :3] = rz @ ry @ rx @ np.diag(spacing)
    affine[:3, 3] = origin
    return affine


def write_series(
    folder: Path,
    array: np.ndarray,
    affine: np.ndarray,
    *,
    description: str = "t1_mprage_sag",
    image_type: tuple[str, ...] = ("ORIGINAL", "PRIMARY", "M", "ND"),
    modality: str = "MR",
    identity: dict | None = None,
    study_uid: str | None = None,
    study_date: str = "20240105",
    series_number: int = 3,
    frames: list[tuple[float, float]] | None = None,
) -> list[Path]:
    """Write ``array`` (X, Y, Z) or (X, Y, Z, T) with RAS ``affine`` as one DICOM file per slice (and frame).

    Array axis 0 runs along a DICOM row (column index), axis 1 down the columns (row index), axis 2 across
    slices. ``frames`` gives (start, duration) in seconds for each volume of a 4D PET.
    """
    folder.mkdir(parents=True, exist_ok=True)
    volumes = array[..., None] if array.ndim == 3 else array
    lps = RAS_TO_LPS @ affine
    spacing = np.linalg.norm(lps[:3, :3], axis=0)
    row_dir, col_dir = lps[:3, 0] / spacing[0], lps[:3, 1] / spacing[1]
    series = _series_tags(description, image_type, modality, identity or IDENTITY, study_uid, study_date, series_number)
    paths = []
    for t in range(volumes.shape[3]):
        for k in range(volumes.shape[2]):
            ds = _slice(series, volumes[:, :, k, t].T, lps, k, spacing, row_dir, col_dir)
            ds.InstanceNumber = t * volumes.shape[2] + k + 1
            if modality == "PT":
                _pet_tags(ds, t, k, volumes.shape, frames)
            path = folder / f"IM{ds.InstanceNumber:05d}.dcm"
            ds.save_as(path, enforce_file_format=True)
            paths.append(path)
    return paths


def _series_tags(description, image_type, modality, identity, study_uid, study_date, series_number) -> dict:
    return {
        "SOPClassUID": PET_STORAGE if modality == "PT" else MR_STORAGE,
        "Modality": modality,
        "StudyInstanceUID": study_uid or generate_uid(),
        "SeriesInstanceUID": generate_uid(),
        "FrameOfReferenceUID": generate_uid(),
        "StudyDate": study_date,
        "SeriesDate": study_date,
        "AcquisitionDate": study_date,
        "StudyTime": "101500",
        "SeriesTime": "102000",
        "AcquisitionTime": "102000",
        "SeriesNumber": series_number,
        "AcquisitionNumber": 1,
        "SeriesDescription": description,
        "ProtocolName": description,
        "ImageType": list(image_type),
        "Manufacturer": "SIEMENS",
        "InstitutionName": "St Elsewhere Hospital",
        "InstitutionAddress": "12 Quincy Lane, Springfield",
        "ReferringPhysicianName": "House^Gregory",
        "MagneticFieldStrength": 3,
        "RepetitionTime": 2300,
        "EchoTime": 2.98,
        **identity,
    }


def _slice(series, pixels, lps, k, spacing, row_dir, col_dir) -> Dataset:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = series["SOPClassUID"]
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    for key, value in series.items():
        setattr(ds, key, value)
    position = lps @ [0.0, 0.0, float(k), 1.0]
    ds.ImagePositionPatient = [f"{v:.6f}" for v in position[:3]]
    ds.ImageOrientationPatient = [f"{v:.8f}" for v in (*row_dir, *col_dir)]
    ds.PixelSpacing = [f"{spacing[1]:.6f}", f"{spacing[0]:.6f}"]  # (between rows, between columns)
    ds.SliceThickness = f"{spacing[2]:.6f}"
    ds.SpacingBetweenSlices = f"{spacing[2]:.6f}"
    ds.SliceLocation = f"{float(np.dot(position[:3], np.cross(row_dir, col_dir))):.6f}"
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
    ds.RescaleIntercept, ds.RescaleSlope = "0", "1"
    ds.PixelData = np.ascontiguousarray(pixels.astype("<i2")).tobytes()
    return ds


def _pet_tags(ds, t, k, shape, frames) -> None:
    start, duration = frames[t] if frames else (0.0, 300.0)
    ds.Units = "BQML"
    ds.NumberOfSlices = shape[2]
    ds.NumberOfTimeSlices = shape[3]
    ds.ImageIndex = t * shape[2] + k + 1
    ds.FrameReferenceTime = f"{1000 * (start + duration / 2):.1f}"  # ms
    ds.ActualFrameDuration = int(1000 * duration)  # ms
    ds.DecayCorrection = "START"
    seconds = 10 * 3600 + 20 * 60 + start
    ds.AcquisitionTime = f"{int(seconds // 3600):02d}{int(seconds % 3600 // 60):02d}{seconds % 60:06.3f}"
    ds.RadiopharmaceuticalInformationSequence = []
