"""Reading and writing brain images (NIfTI through nibabel), with the checks every caller relies on.

An :class:`Image` is a float array plus its affine: the affine maps voxel indices to world coordinates in mm,
and every image brainlearn writes keeps it. Every problem a real scan can have (missing, not an image, truncated,
4D, NaNs, empty, singular affine, mask on another grid) ends in a :class:`BrainlearnError` that names the file.
"""

from __future__ import annotations

import gzip
import os
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from tokenize import TokenError

import nibabel as nib
import numpy as np
from nibabel.filebasedimages import ImageFileError

from brainlearn.atomic import atomic_path
from brainlearn.errors import BrainlearnError

# Refuse images larger than this before allocating them (a corrupt header can claim any size).
MAX_VOXELS = 1024**3
# Document 000 stores volumes as .npy arrays in MNI 1 mm space, without an affine.
NPY_AFFINE = np.diag([1.0, 1.0, 1.0, 1.0])


@dataclass(frozen=True)
class Image:
    """A 3D image: voxel values, the voxel-to-world affine (mm), and where it came from.

    Attributes:
        array: voxel values, shape (X, Y, Z), float32 for images and integer for label maps.
        affine: 4×4 matrix mapping voxel indices (i, j, k, 1) to world coordinates in mm.
        path: the file it was read from, if any.
    """

    array: np.ndarray
    affine: np.ndarray
    path: Path | None = None

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.array.shape)

    @property
    def spacing(self) -> tuple[float, float, float]:
        """Voxel size in mm along each array axis."""
        return tuple(float(s) for s in np.linalg.norm(self.affine[:3, :3], axis=0))

    @property
    def orientation(self) -> str:
        """Axis codes such as ``'RAS'`` (the direction each array axis points towards)."""
        return "".join(nib.aff2axcodes(self.affine))


def read_image(
    path: str | os.PathLike,
    *,
    canonical: bool = False,
    volume: int | None = None,
    allow_nonfinite: bool = False,
    allow_empty: bool = False,
) -> Image:
    """Read a 3D image as float32 with its affine, checking it on the way.

    Args:
        path: a NIfTI-1/2 file (``.nii``, ``.nii.gz``) or any format nibabel reads (MGZ, MINC, Analyze);
            ``.npy`` arrays (document 000's format) are read without pickle and get a 1 mm identity affine.
        canonical: reorient to the closest RAS+ orientation (array axes point Right, Anterior, Superior).
        volume: pick this volume of a 4D file; without it a 4D file is an error.
        allow_nonfinite: keep NaN/Inf voxels instead of refusing the image.
        allow_empty: accept an image whose voxels are all equal.

    Raises:
        BrainlearnError: for any of the problems listed in the module docstring.
    """
    path = Path(path)
    img = _load(path)
    _check_size(path, img.shape)
    declared = _declared_bytes(path, img)
    if path.name.endswith(".nii.gz"):
        img = _verified_gzip(path, img, declared)
    elif path.suffix == ".nii":
        _check_file_size(path, declared)
    affine = _checked_affine(path, img.affine)
    data = _read_data(path, img, volume)
    if canonical:
        data, affine = _to_canonical(path, data, affine)
    _check_values(path, data, allow_nonfinite=allow_nonfinite, allow_empty=allow_empty)
    return Image(array=data, affine=affine, path=path)


def read_mask(path: str | os.PathLike, *, like: Image | None = None, canonical: bool = False) -> Image:
    """Read a label map (lesion mask, atlas) as integers, optionally checking it lies on ``like``'s grid.

    Raises:
        BrainlearnError: if the file is unreadable, holds non-integer labels, or lies on another grid.
    """
    image = read_image(path, canonical=canonical, allow_empty=True)
    labels = np.rint(image.array)
    if not np.allclose(labels, image.array, atol=1e-3):
        raise BrainlearnError(
            f"{path}: a mask must hold integer labels, found fractional values such as "
            f"{_first_fractional(image.array):g}. Threshold probabilistic masks first (e.g. at 0.5)."
        )
    if labels.min() < 0:
        raise BrainlearnError(f"{path}: a mask must hold labels >= 0, found {labels.min():g}.")
    if labels.max() > np.iinfo(np.int32).max:
        raise BrainlearnError(f"{path}: label {labels.max():g} is too large for a label map.")
    dtype = np.uint8 if labels.max() <= 255 else np.int32
    mask = Image(array=labels.astype(dtype), affine=image.affine, path=image.path)
    if like is not None:
        check_same_grid(like, mask)
    return mask


def write_image(path: str | os.PathLike, array: np.ndarray, affine: np.ndarray) -> Path:
    """Write ``array`` with ``affine`` as NIfTI-1 (gzip when the name ends in ``.gz``), atomically.

    Integer arrays keep their integer type (label maps stay integer); floats are written as float32.
    """
    path = Path(path)
    array = np.asarray(array)
    if array.dtype == np.float64 or array.dtype == np.float16:
        array = array.astype(np.float32)
    if array.dtype == bool:
        array = array.astype(np.uint8)
    image = nib.Nifti1Image(array, np.asarray(affine, dtype=np.float64))
    image.header.set_xyzt_units("mm", "sec")
    image.set_qform(image.affine, code=1)
    image.set_sform(image.affine, code=1)
    with atomic_path(path) as tmp:
        nib.save(image, tmp)
    return path


def from_canonical(array: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """Undo ``read_image(..., canonical=True)``: put an array in RAS+ order back in the file's own axis order.

    Args:
        array: (X, Y, Z, ...) in the canonical (closest RAS+) orientation of an image whose affine is ``affine``,
            e.g. a model's output for that image.
        affine: the image's original voxel-to-world affine, as in its file (not the canonical one).

    Returns:
        The array in the file's orientation: written with ``affine``, it lies voxel for voxel on the file's grid.
    """
    ras = nib.orientations.axcodes2ornt("RAS")
    back = nib.orientations.ornt_transform(ras, nib.orientations.io_orientation(affine))
    return np.ascontiguousarray(nib.orientations.apply_orientation(array, back))


def write_like(path: Path, array: np.ndarray, source: Path, *, description: str) -> Path:
    """Write ``array`` (in RAS+ order) atomically, in ``source``'s orientation with its affine and header.

    The NIfTI header of ``source`` is copied with float32 data, no intensity scaling, no display range and
    ``description`` (what the values are; at most 79 characters); other formats (MGZ, MINC, ``.npy``) get a fresh
    NIfTI header with their affine.
    """
    if source.suffix == ".npy":
        return write_image(path, array, NPY_AFFINE)  # identity affine: RAS+ already
    original = nib.load(source)
    array = from_canonical(array, original.affine).astype(np.float32)
    if not isinstance(original.header, nib.Nifti1Header):
        return write_image(path, array, original.affine)
    header = original.header.copy()
    header.set_data_dtype(np.float32)
    header.set_slope_inter(1.0, 0.0)
    header["cal_min"], header["cal_max"] = 0.0, 0.0  # the input's display window does not fit [0, 1]
    header["descrip"] = description.encode()[:79]
    kind = nib.Nifti2Image if isinstance(header, nib.Nifti2Header) else nib.Nifti1Image
    with atomic_path(path) as tmp:
        nib.save(kind(array, original.affine, header), tmp)  # keeps qform and sform with their codes
    return path


def check_same_grid(image: Image, other: Image, *, atol: float = 1e-3) -> None:
    """Raise if ``other`` does not lie voxel for voxel on ``image``'s grid (same shape and affine)."""
    if image.shape[:3] == other.shape[:3] and np.allclose(image.affine, other.affine, atol=atol):
        return
    raise BrainlearnError(
        f"{other.path}: not on the grid of {image.path}: shape {other.shape[:3]} vs {image.shape[:3]}, "
        f"spacing {_fmt(other.spacing)} vs {_fmt(image.spacing)} mm, origin {_fmt(other.affine[:3, 3])} vs "
        f"{_fmt(image.affine[:3, 3])} mm. Resample it onto the image grid first (brainlearn preprocess does this)."
    )


def header_shape(path: str | os.PathLike) -> tuple[int, ...]:
    """The array shape an image file declares, read from its header alone (no voxel data).

    Raises:
        BrainlearnError: if the file is not an image, or declares fewer than 3 dimensions, an empty shape or more
            than :data:`MAX_VOXELS` voxels (a corrupt header), so that nothing is allocated for it.
    """
    path = Path(path)
    shape = tuple(int(n) for n in _load(path).shape)
    _check_size(path, shape)
    return shape


def _load(path: Path) -> nib.spatialimages.SpatialImage | _NpyImage:
    if not path.exists():
        raise BrainlearnError(f"{path}: file not found. Check the path (paths in a table are relative to the table).")
    if path.is_dir():
        raise BrainlearnError(f"{path}: is a folder, expected an image file (.nii or .nii.gz).")
    if path.suffix == ".npy":
        return _NpyImage(path)
    if path.name.endswith((".nii", ".nii.gz")):
        _check_extensions(path)
    try:
        return nib.load(path)
    except (ImageFileError, nib.spatialimages.HeaderDataError, nib.wrapstruct.WrapStructError) as error:
        _raise_if_truncated_gzip(path)
        raise BrainlearnError(
            f"{path}: not a NIfTI image or another format nibabel reads ({error}). "
            "Convert scanner formats first (e.g. DICOM with dcm2niix)."
        ) from error
    except (EOFError, OSError, zlib.error, gzip.BadGzipFile, ValueError, OverflowError) as error:
        # OverflowError: an infinite or huge vox_offset
        raise BrainlearnError(f"{path}: the file is truncated or corrupt ({_reason(error)}). Re-export it.") from error


def _check_extensions(path: Path) -> None:
    """Refuse a NIfTI header extension longer than the rest of the file, before nibabel reads it.

    nibabel reads each extension in one ``read(esize)``, which allocates ``esize`` bytes before reading: a damaged
    size field (up to 2 GiB) would be allocated for a file of a few kB. This walks the extensions as nibabel does,
    reading them in chunks; other damage is left for nibabel to report.
    """
    try:
        with (gzip.open if path.suffix == ".gz" else open)(path, "rb") as stream:
            start = stream.read(4)
            kinds = [(kind, order) for kind in (nib.nifti1, nib.nifti2) for order in "<>"]
            found = [(k, o) for k, o in kinds if start == struct.pack(f"{o}i", k.header_dtype.itemsize)]
            if not found:
                return  # not NIfTI-1 or -2
            kind, order = found[0]
            size = kind.header_dtype.itemsize
            header = start + stream.read(size)  # the header and the 4 bytes that flag extensions
            if len(header) < size + 4 or header[size] == 0:
                return
            offset = np.frombuffer(header[:size], kind.header_dtype.newbyteorder(order))["vox_offset"][0]
            left = float(offset) - (size + 4)  # NaN: nibabel reads none; negative: up to the end of the file
            while left >= 16 or left < 0:
                head = stream.read(8)
                esize = struct.unpack(f"{order}i", head[:4])[0] if len(head) == 8 else 0
                if esize <= 8:
                    return  # the end of the extensions (or damage that nibabel reports)
                if _skip(stream, esize - 8) < esize - 8:
                    raise BrainlearnError(
                        f"{path}: a NIfTI header extension declares {esize:,} bytes, more than the file holds; the "
                        "header is corrupt. Re-export the image."
                    )
                left -= esize
    except (EOFError, OSError, zlib.error):
        return  # a damaged file: nibabel reports it


def _skip(stream, n: int) -> int:
    """Read and drop up to ``n`` bytes in chunks of at most 1 MiB; the number of bytes there were."""
    done = 0
    while done < n and (chunk := stream.read(min(2**20, n - done))):
        done += len(chunk)
    return done


def _declared_bytes(path: Path, img) -> int | None:
    """Bytes from the file's start to the end of its voxels, as the header declares them (None: it does not say).

    Checked before any voxel is read: a corrupt header can declare a voxel type brainlearn cannot read or an
    offset far past the end of the file.
    """
    header = getattr(img, "header", None)
    if not hasattr(header, "get_data_offset"):  # .npy (numpy checks its own layout), MINC
        return None
    dtype = header.get_data_dtype()
    if dtype.kind not in "iuf":
        raise BrainlearnError(
            f"{path}: the voxels are of type {dtype} (complex, RGB or unknown), brainlearn reads integer or real "
            "values. Convert the image to one real value per voxel (e.g. float32) first."
        )
    try:  # where nibabel reads from: the header's vox_offset as written (the header it shows may be "fixed")
        offset = float(getattr(img.dataobj, "offset", None) or header.get_data_offset())
    except (OverflowError, ValueError):  # an infinite or NaN vox_offset
        offset = float("nan")
    if not np.isfinite(offset) or not 0 <= offset <= 2**40:
        raise BrainlearnError(
            f"{path}: the header's data offset (vox_offset) is {offset:g}; the header is corrupt. Re-export the image."
        )
    return int(offset) + int(np.prod(img.shape)) * dtype.itemsize


def _check_file_size(path: Path, declared: int | None) -> None:
    """An uncompressed file must hold the voxels its header declares (else numpy maps past its end)."""
    size = path.stat().st_size
    if declared is not None and size < declared:
        raise BrainlearnError(
            f"{path}: the file is truncated or corrupt: its header declares {declared:,} bytes of header and voxels, "
            f"the file holds {size:,}. Re-export it."
        )


def _verified_gzip(path: Path, img, declared: int):
    """Decompress a ``.nii.gz`` to its end so its CRC is checked, then parse it from memory.

    nibabel stops reading once it has the voxels, so a damaged deflate stream can otherwise yield wrong values
    without any error. The header (already checked for size) bounds how much is decompressed, and the stream is
    read in chunks: memory grows with what the file really holds, never with what a corrupt header claims.
    """
    limit = declared + 2**20  # NIfTI extensions and padding
    data = bytearray()
    try:
        with gzip.open(path, "rb") as stream:
            while len(data) <= limit and (chunk := stream.read(min(2**24, limit + 1 - len(data)))):
                data += chunk
    except (EOFError, OSError, zlib.error) as error:
        raise BrainlearnError(f"{path}: the file is truncated or corrupt ({_reason(error)}). Re-export it.") from error
    if len(data) > limit:
        raise BrainlearnError(f"{path}: holds more data than its header declares ({declared:,} bytes); corrupt.")
    if len(data) < declared:
        raise BrainlearnError(
            f"{path}: the file is truncated or corrupt: its header declares {declared:,} bytes of header and voxels, "
            f"the file holds {len(data):,} once decompressed. Re-export it."
        )
    try:
        return type(img).from_bytes(bytes(data))
    except (ImageFileError, nib.spatialimages.HeaderDataError, ValueError) as error:
        raise BrainlearnError(f"{path}: the file is truncated or corrupt ({_reason(error)}). Re-export it.") from error


def _raise_if_truncated_gzip(path: Path) -> None:
    """A gzip file cut short (an interrupted copy) reads as 'not an image'; say what it really is."""
    if path.suffix != ".gz":
        return
    try:
        with gzip.open(path, "rb") as stream:
            while stream.read(2**20):
                pass
    except (EOFError, OSError, zlib.error) as error:
        if isinstance(error, gzip.BadGzipFile) and "Not a gzipped file" in str(error):
            return
        raise BrainlearnError(f"{path}: the file is truncated or corrupt ({_reason(error)}). Re-export it.") from error


class _NpyImage:
    """A ``.npy`` array viewed like a nibabel image (document 000's preprocessed volumes)."""

    def __init__(self, path: Path):
        try:
            self.dataobj = np.load(path, mmap_mode="r", allow_pickle=False)
        except ValueError as error:
            raise BrainlearnError(
                f"{path}: not a plain numeric .npy array ({_reason(error)}); brainlearn never loads pickled objects."
            ) from error
        except (OSError, EOFError, SyntaxError, TokenError, TypeError) as error:  # a mangled header dictionary
            raise BrainlearnError(f"{path}: the file is truncated or corrupt ({_reason(error)}).") from error
        if self.dataobj.dtype.kind not in "iuf":
            raise BrainlearnError(f"{path}: holds {self.dataobj.dtype} values, expected integer or real numbers.")
        self.shape = self.dataobj.shape
        self.affine = NPY_AFFINE

    def get_fdata(self, dtype=np.float32):
        return np.asarray(self.dataobj, dtype=dtype)


def _check_size(path: Path, shape: tuple[int, ...]) -> None:
    if len(shape) < 3:
        raise BrainlearnError(f"{path}: expected a 3D image, got shape {tuple(shape)} ({len(shape)}D).")
    if any(n <= 0 for n in shape):
        raise BrainlearnError(f"{path}: the image is empty (shape {tuple(shape)}).")
    if int(np.prod([int(n) for n in shape], dtype=np.float64)) > MAX_VOXELS:
        raise BrainlearnError(
            f"{path}: the header declares {tuple(shape)} voxels, more than brainlearn reads ({MAX_VOXELS:,}). "
            "The header is probably corrupt."
        )


def _checked_affine(path: Path, affine: np.ndarray | None) -> np.ndarray:
    affine = np.asarray(affine if affine is not None else np.eye(4), dtype=np.float64)
    with np.errstate(over="ignore", invalid="ignore"):  # huge entries overflow the determinant or the inverse
        det = np.linalg.det(affine[:3, :3]) if np.all(np.isfinite(affine)) else np.nan
        invertible = np.isfinite(det) and abs(det) >= 1e-6 and np.all(np.isfinite(np.linalg.inv(affine)))
    if not invertible:
        raise BrainlearnError(
            f"{path}: the affine (voxel-to-world matrix) is not invertible:\n{np.array2string(affine, precision=3)}\n"
            "Fix the header's sform/qform (e.g. fslorient or nibabel) before using this image."
        )
    return affine


def _read_data(path: Path, img, volume: int | None) -> np.ndarray:
    shape = tuple(img.shape)
    while len(shape) > 3 and shape[-1] == 1:  # (X, Y, Z, 1): a 3D image stored as 4D
        shape = shape[:-1]
    if len(shape) > 3 and volume is None:
        raise BrainlearnError(
            f"{path}: expected a 3D image, got shape {tuple(img.shape)} ({len(img.shape)}D). "
            "Pick one volume (volume=N) or average the frames first."
        )
    if len(shape) > 3 and not 0 <= volume < shape[3]:
        raise BrainlearnError(f"{path}: volume {volume} does not exist, the file holds {shape[3]} volumes.")
    try:
        data = img.get_fdata(dtype=np.float32) if len(shape) == 3 else np.asarray(img.dataobj[..., volume], np.float32)
    except (EOFError, OSError, zlib.error, gzip.BadGzipFile, ValueError) as error:
        raise BrainlearnError(f"{path}: the file is truncated or corrupt ({_reason(error)}). Re-export it.") from error
    return np.ascontiguousarray(data.reshape(shape[:3]))


def _to_canonical(path: Path, data: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    try:
        ornt = nib.orientations.io_orientation(affine)
        if np.array_equal(ornt, [[0, 1], [1, 1], [2, 1]]):
            return data, affine
        affine = affine @ nib.orientations.inv_ornt_aff(ornt, data.shape)  # needs the shape before reorienting
    except nib.orientations.OrientationError as error:  # an axis 1e30 times shorter than another has no direction
        raise BrainlearnError(
            f"{path}: the affine gives no orientation to every axis ({error}):\n"
            f"{np.array2string(affine, precision=3)}\nFix the header's sform/qform (e.g. fslorient or nibabel) "
            "before using this image."
        ) from error
    return np.ascontiguousarray(nib.orientations.apply_orientation(data, ornt)), affine


def _check_values(path: Path, data: np.ndarray, *, allow_nonfinite: bool, allow_empty: bool) -> None:
    finite = np.isfinite(data)
    if not allow_nonfinite and not finite.all():
        n_nan, n_inf = int(np.isnan(data).sum()), int(np.isinf(data).sum())
        raise BrainlearnError(
            f"{path}: {n_nan:,} NaN and {n_inf:,} infinite voxels. Replace them (for example with 0) or re-export "
            "the image; brainlearn does not guess values for them."
        )
    if not allow_empty:
        values = data[finite] if not finite.all() else data
        if values.size == 0 or values.min() == values.max():
            value = values.flat[0] if values.size else float("nan")
            raise BrainlearnError(f"{path}: the image is empty (every voxel is {value:g}). Check the export.")


def _first_fractional(array: np.ndarray) -> float:
    fractional = array[np.abs(array - np.rint(array)) > 1e-3]
    return float(fractional.flat[0])


def _reason(error: BaseException) -> str:
    return str(error) or type(error).__name__


def _fmt(values) -> str:
    return "(" + ", ".join(f"{float(v):.3g}" for v in values) + ")"
