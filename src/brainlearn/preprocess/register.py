"""Affine registration to the MNI152 template, resampling onto the reference grid, and the way back.

A transform here is a SimpleITK transform in ITK's convention: it maps points of the FIXED image (the template,
or the T1 for a rigid PET/FLAIR/T2 registration) to points of the MOVING image, in ITK's LPS world (mm). That is
what resampling needs, and what ITK, ANTs and 3D Slicer read from a saved ``.tfm``. Images go in and come out as
brainlearn's RAS :class:`~brainlearn.io.Image`; :mod:`brainlearn.preprocess.sitk_io` does the conversion.
"""

from __future__ import annotations

import functools
import itertools
import logging
import os
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from brainlearn.atomic import atomic_path
from brainlearn.cohort.anatomy import TEMPLATE_FILES, _existing, _package_dir
from brainlearn.errors import BrainlearnError
from brainlearn.io import Image, read_image
from brainlearn.preprocess.sitk_io import RAS_TO_LPS, from_sitk, to_sitk

log = logging.getLogger(__name__)

# FSL's MNI152_T1_1mm grid (182×218×182, LAS, voxel (0, 0, 0) at (90, -126, -72) mm) seen in RAS: the same voxel
# centres, x from -91 to 90, y from -126 to 91, z from -72 to 109 mm; the box of 182×218×182 mm around them.
MNI_SHAPE = (182, 218, 182)
MNI_CENTRE = np.array([-91.0, -126.0, -72.0]) + (np.array(MNI_SHAPE) - 1) / 2  # (-0.5, -17.5, 18.5) mm

RESOLUTIONS = (4.0, 2.0, 1.0)  # mm, coarse to fine; never finer than the fixed image's voxels
SAMPLES_AT_1MM = 80_000  # metric samples at 1 mm, SAMPLES_AT_1MM / resolution at coarser levels
STILL = 0.01  # a level ends once an iteration moves the fixed image's corners less than STILL × resolution
MAX_ITERATIONS = 100  # per level
FIRST = 1
SCALE_LIMITS = (0.5, 2.0)  # an affine that scales a brain beyond these has failed


def reference_grid(
    spacing: float = 1.0, shape: tuple[int, int, int] | None = None, pad_to: int | None = None
) -> tuple[np.ndarray, tuple[int, int, int]]:
    """The RAS reference grid in MNI space; FSL's MNI152 1 mm grid (182×218×182, flipped to RAS) by default.

    Every grid is centred on the centre of FSL's 182×218×182 mm box, (-0.5, -17.5, 18.5) mm; without ``shape`` it
    keeps the box: ``round(182 / spacing)``, ``round(218 / spacing)``, ``round(182 / spacing)`` voxels (at 2 mm
    91×109×91, half a millimetre off FSL's 2 mm grid, which keeps the 1 mm grid's first voxel instead).

    Args:
        spacing: isotropic voxel size in mm.
        shape: voxels per axis before padding; ``None`` for the MNI box at ``spacing``.
        pad_to: pad each axis to this many voxels (document 000 pads to 256), half before and half after (the
            odd voxel after). The original voxels keep their world coordinates; padding holds the background.

    Returns:
        The voxel-to-RAS affine (4×4, mm) and the shape (X, Y, Z).
    """
    if not 0.25 <= spacing <= 8.0:
        raise BrainlearnError(f"reference grid spacing must be between 0.25 and 8 mm, not {spacing}.")
    shape = tuple(max(1, round(n / spacing)) for n in MNI_SHAPE) if shape is None else tuple(shape)
    if len(shape) != 3 or any(int(n) != n or n < 1 for n in shape):
        raise BrainlearnError(f"reference grid shape must be 3 positive integers, not {shape}.")
    shape = tuple(int(n) for n in shape)
    first = MNI_CENTRE - (np.array(shape) - 1) / 2 * spacing  # centre of voxel (0, 0, 0)
    if pad_to is not None:
        if int(pad_to) < max(shape):
            raise BrainlearnError(f"pad_to={pad_to} is smaller than the grid {shape}; choose at least {max(shape)}.")
        first = first - (int(pad_to) - np.array(shape)) // 2 * spacing
        shape = (int(pad_to),) * 3
    affine = np.diag([spacing, spacing, spacing, 1.0])
    affine[:3, 3] = first
    return affine, shape


def register_affine(
    moving: Image,
    fixed: Image,
    *,
    moving_mask: Image | np.ndarray | None = None,
    fixed_mask: Image | np.ndarray | None = None,
    rigid: bool = False,
    seed: int = 0,
) -> sitk.Transform:
    """Register ``moving`` to ``fixed``: rigid, or (by default) similarity then a 12-parameter affine.

    Mattes mutual information (contrasts may differ: PET to T1) on a fixed random sample of voxels (``seed``),
    coarse to fine over block-averaged, smoothed copies at 4, 2 and 1 mm, from aligned centres of mass. The
    similarity stage (rigid plus one scale) fits the brain's size, which a rigid stage cannot and would chase.

    Args:
        moving, fixed: the two images (any grids, RAS).
        moving_mask, fixed_mask: voxels (on that image's grid) the metric may use, e.g. the brain.
        rigid: stop after the rigid stage (the same head in another contrast or session).
        seed: seed of the metric's voxel sample.

    Returns:
        The transform mapping fixed points to moving points (ITK convention, LPS mm): :func:`resample` ``moving``
        with it onto any grid in the fixed space.

    Raises:
        BrainlearnError: if an image is constant, a mask is empty, the optimizer fails, or the result is degenerate.
    """
    fixed_sitk, moving_sitk = _checked(fixed, "fixed"), _checked(moving, "moving")
    masks = _mask(fixed_mask, fixed, "fixed"), _mask(moving_mask, moving, "moving")
    initial = sitk.CenteredTransformInitializer(
        fixed_sitk if masks[0] is None else sitk.Mask(fixed_sitk, masks[0]),
        moving_sitk if masks[1] is None else sitk.Mask(moving_sitk, masks[1]),
        sitk.Euler3DTransform(),
        sitk.CenteredTransformInitializerFilter.MOMENTS,
    )
    transform = sitk.Euler3DTransform() if rigid else sitk.Similarity3DTransform()
    transform.SetCenter(initial.GetCenter())
    transform.SetTranslation(initial.GetTranslation())
    inside = 1.0 if masks[0] is None else float(np.mean(_mask_array(fixed_mask, fixed, "fixed")))
    resolutions = sorted({max(mm, min(fixed.spacing)) for mm in RESOLUTIONS}, reverse=True)  # e.g. 4, 2, 1 mm
    levels = [
        (mm, _level(fixed_sitk, mm, mm > resolutions[-1]), _level(moving_sitk, mm, mm > resolutions[-1]))
        for mm in resolutions
    ]
    for mm, fixed_level, moving_level in levels if rigid else levels[:FIRST]:
        _optimize(transform, fixed_level, moving_level, masks, mm, SAMPLES_AT_1MM / mm / inside, seed)
    if not rigid:
        transform = sitk.AffineTransform(transform.GetMatrix(), transform.GetTranslation(), transform.GetCenter())
        for mm, fixed_level, moving_level in levels:
            _optimize(transform, fixed_level, moving_level, masks, mm, SAMPLES_AT_1MM / mm / inside, seed)
    _check_degenerate(transform)
    return transform


def register_to_template(t1: Image, *, brain_mask: Image | np.ndarray | None = None, seed: int = 0) -> sitk.Transform:
    """Affine registration of a T1 (best skull-stripped) to the ICBM152 2009a template (:func:`template_image`).

    Args:
        t1: the subject's T1.
        brain_mask: the brain on ``t1``'s grid; voxels outside it are set to 0 first (the template has no skull).
        seed: seed of the metric's voxel sample.

    Returns:
        Template (MNI) points to ``t1`` points: ``resample(t1, transform, *reference_grid())`` puts it on the grid.
    """
    if brain_mask is not None:
        inside = _mask_array(brain_mask, t1, "brain")
        t1 = Image(array=np.where(inside, t1.array, 0).astype(np.float32), affine=t1.affine, path=t1.path)
    return register_affine(t1, template_image(), fixed_mask=_template_region(), seed=seed)


def resample(
    image: Image,
    transform: sitk.Transform,
    grid_affine: np.ndarray,
    grid_shape: tuple[int, int, int],
    *,
    nearest: bool = False,
    background: float = 0.0,
) -> Image:
    """``image`` on the grid (``grid_affine``, ``grid_shape``) through ``transform`` (grid points → image points).

    Linear interpolation into float32 (smoothed first when the grid is over 1.5 times coarser), or with ``nearest``
    nearest-neighbour keeping the integer type (label maps keep exactly their labels). Grid voxels that map outside
    the image get ``background``.
    """
    source = to_sitk(image.array.astype(np.uint8) if image.array.dtype == bool else image.array, image.affine)
    grid = to_sitk(np.zeros(tuple(int(n) for n in grid_shape), np.uint8), grid_affine)  # the grid's geometry (LPS)
    coarsest, finest = min(grid.GetSpacing()), max(image.spacing)
    if not nearest and coarsest > 1.5 * finest:  # anti-aliasing
        source = sitk.SmoothingRecursiveGaussian(source, 0.5 * float(np.sqrt(coarsest**2 - finest**2)))
    interpolator, pixel = (
        (sitk.sitkNearestNeighbor, source.GetPixelID()) if nearest else (sitk.sitkLinear, sitk.sitkFloat32)
    )
    return from_sitk(sitk.Resample(source, grid, transform, interpolator, float(background), pixel))


def to_native(image_on_grid: Image, transform: sitk.Transform, native_reference: Image, *, nearest=False) -> Image:
    """Take a map on the reference grid back to the subject's native grid (the inverse of :func:`resample`).

    Args:
        image_on_grid: a map computed on the reference grid (an explanation, a segmentation).
        transform: the subject's saved transform (reference points → native points).
        native_reference: any image on the native grid (e.g. the native T1); only its grid is used.
        nearest: nearest-neighbour interpolation, for label maps.
    """
    try:
        inverse = transform.GetInverse()
    except RuntimeError as error:
        raise BrainlearnError(f"the transform cannot be inverted ({_first_line(error)}).") from error
    return resample(image_on_grid, inverse, native_reference.affine, native_reference.shape, nearest=nearest)


def save_transform(transform: sitk.Transform, path: str | os.PathLike) -> Path:
    """Write ``transform`` atomically as an ITK transform file (``.tfm`` or ``.txt``: text; ``.h5``: HDF5)."""
    path = Path(path)
    with atomic_path(path) as tmp:  # the temporary name ends in the target's name: ITK picks the format from it
        try:
            sitk.WriteTransform(transform, str(tmp))
        except RuntimeError as error:
            raise BrainlearnError(f"{path}: could not write the transform ({_first_line(error)}).") from error
    return path


def load_transform(path: str | os.PathLike) -> sitk.Transform:
    """Read a transform written by :func:`save_transform` (or by ITK, ANTs, Slicer: fixed → moving, LPS)."""
    path = Path(path)
    if not path.is_file():
        raise BrainlearnError(f"{path}: transform file not found; brainlearn preprocess writes one per image.")
    try:
        return sitk.ReadTransform(str(path))
    except RuntimeError as error:
        raise BrainlearnError(f"{path}: not an ITK transform file ({_first_line(error)}).") from error


def transform_points(transform: sitk.Transform, points: np.ndarray) -> np.ndarray:
    """Map RAS points (N, 3) in mm through ``transform`` (which works in LPS); returns the (N, 3) RAS points."""
    lps = np.asarray(points, dtype=np.float64).reshape(-1, 3) @ RAS_TO_LPS
    return np.array([transform.TransformPoint(tuple(p)) for p in lps]).reshape(-1, 3) @ RAS_TO_LPS


def template_image(spacing: float | None = None) -> Image:
    """The ICBM152 2009a nonlinear symmetric T1 shipped by nilearn (skull-stripped, 197×233×189 at 1 mm), in [0, 1].

    Args:
        spacing: resample to this isotropic spacing in mm over the same box (smoothed first when coarser);
            ``None`` keeps 1 mm. Cached; the array is read-only.
    """
    return _template_image(None if spacing is None else float(spacing))


@functools.lru_cache(maxsize=4)
def _template_image(spacing: float | None) -> Image:
    path = _existing(_package_dir("nilearn") / "datasets" / "data" / TEMPLATE_FILES["t1"], "nilearn")
    image = read_image(path)
    image = Image(array=image.array / image.array.max(), affine=image.affine, path=path)
    if spacing is not None:
        extent = np.array(image.shape) * np.array(image.spacing)
        affine = np.diag([spacing, spacing, spacing, 1.0])
        affine[:3, 3] = image.affine[:3, 3] + (spacing - np.array(image.spacing)) / 2  # voxel centres in the same box
        grid = resample(image, sitk.Transform(3, sitk.sitkIdentity), affine, tuple(np.round(extent / spacing)))
        image = Image(array=grid.array, affine=grid.affine, path=path)
    image.array.setflags(write=False)
    return image


@functools.lru_cache(maxsize=1)
def _template_region() -> np.ndarray:
    """The template's brain widened by 4 mm: the metric sees the brain's outline against the background."""
    return ndimage.binary_dilation(template_image().array > 0.01, iterations=4)


def _level(image: sitk.Image, resolution: float, smooth: bool) -> sitk.Image:
    """``image`` block-averaged towards ``resolution`` mm per axis (at least 4 voxels left), smoothed if ``smooth``."""
    factors = [
        max(1, min(round(resolution / s), n // 4)) for s, n in zip(image.GetSpacing(), image.GetSize(), strict=True)
    ]
    shrunk = sitk.BinShrink(image, factors) if max(factors) > 1 else image
    return sitk.SmoothingRecursiveGaussian(shrunk, 0.4 * resolution) if smooth else shrunk


def _optimize(transform, fixed: sitk.Image, moving: sitk.Image, masks, resolution: float, samples: float, seed: int):
    """Improve ``transform`` in place at one resolution; steps of at most one voxel (``resolution`` mm)."""
    method = sitk.ImageRegistrationMethod()
    method.SetMetricAsMattesMutualInformation(numberOfHistogramBins=32)
    method.SetMetricSamplingStrategy(method.RANDOM)
    method.SetMetricSamplingPercentage(min(1.0, samples / fixed.GetNumberOfPixels()), seed + 1)  # 0: wall clock
    method.SetMetricUseFixedImageGradientFilter(False)  # gradients at the samples, not over whole images
    method.SetMetricUseMovingImageGradientFilter(False)
    if masks[0] is not None:
        method.SetMetricFixedMask(masks[0])
    if masks[1] is not None:
        method.SetMetricMovingMask(masks[1])
    method.SetInterpolator(sitk.sitkLinear)
    # The step is re-estimated each iteration as a physical shift (parameters mix mm, radians and matrix entries)
    # and halved whenever the direction reverses; the level ends when the transform stops moving.
    method.SetOptimizerAsRegularStepGradientDescent(
        learningRate=1.0,
        minStep=1e-8,
        numberOfIterations=MAX_ITERATIONS,
        gradientMagnitudeTolerance=1e-8,
        estimateLearningRate=method.EachIteration,
        maximumStepSizeInPhysicalUnits=resolution,
    )
    method.SetOptimizerScalesFromPhysicalShift()
    method.SetInitialTransform(transform, inPlace=True)
    corners = itertools.product(*[(0, n - 1) for n in fixed.GetSize()])
    corners = [fixed.TransformIndexToPhysicalPoint(corner) for corner in corners]
    previous = [np.array([transform.TransformPoint(c) for c in corners])]

    def stop_when_still():
        now = np.array([transform.TransformPoint(c) for c in corners])
        if np.abs(now - previous[0]).max() < STILL * resolution:
            method.StopRegistration()
        previous[0] = now

    method.AddCommand(sitk.sitkIterationEvent, stop_when_still)
    try:
        method.Execute(fixed, moving)
    except RuntimeError as error:
        raise BrainlearnError(
            f"registration failed: {_first_line(error)}. Check that the two images overlap and show the same head."
        ) from error
    log.debug("%s at %g mm: %d iterations", transform.GetName(), resolution, method.GetOptimizerIteration())


def _check_degenerate(transform: sitk.Transform) -> None:
    matrix = np.array(transform.GetMatrix()).reshape(3, 3)
    finite = np.all(np.isfinite(matrix)) and np.all(np.isfinite(transform.GetTranslation()))
    scales = np.linalg.svd(matrix, compute_uv=False) if finite else np.array([np.nan])
    low, high = SCALE_LIMITS
    if not (finite and low <= scales.min() <= scales.max() <= high and np.linalg.det(matrix) > 0):
        raise BrainlearnError(
            f"registration failed: the transform found scales the image by {np.round(scales, 2).tolist()} "
            f"(a brain needs {low} to {high}, unflipped). Check the image's orientation, "
            "field of view and skull stripping against the template."
        )


def _checked(image: Image, role: str) -> sitk.Image:
    values = image.array
    if values.ndim != 3 or min(values.shape) < 4 or not np.all(np.isfinite(values)) or values.min() == values.max():
        name = image.path or f"the {role} image"
        raise BrainlearnError(
            f"{name}: cannot register an image that is constant, not finite or thinner than 4 voxels "
            f"(shape {values.shape}, values {np.nanmin(values):g} to {np.nanmax(values):g})."
        )
    return to_sitk(values.astype(np.float32), image.affine)


def _mask_array(mask: Image | np.ndarray, image: Image, role: str) -> np.ndarray:
    array = np.asarray(mask.array if isinstance(mask, Image) else mask) > 0
    if array.shape != image.shape:
        raise BrainlearnError(f"the {role} mask has shape {array.shape}, its image {image.shape}: same grid needed.")
    if not array.any():
        raise BrainlearnError(f"the {role} mask is empty: no voxel to register. Check the brain mask.")
    return array


def _mask(mask: Image | np.ndarray | None, image: Image, role: str) -> sitk.Image | None:
    return None if mask is None else to_sitk(_mask_array(mask, image, role).astype(np.uint8), image.affine)


def _first_line(error: BaseException) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[-1] if lines else type(error).__name__
