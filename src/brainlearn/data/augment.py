"""Augmentation of item dicts that keeps ``image`` and ``mask`` aligned, for 2D slices and 3D volumes.

An item holds ``image`` (C, H, W) or (C, X, Y, Z) and, for segmentation, ``mask`` (1, *spatial) of 0/1. As in
TorchIO, a random transform draws its parameters (:meth:`RandomTransform.sample`) and hands them to a deterministic
twin (:class:`Flip`, :class:`Affine`, :class:`Gamma`, ...) that applies them, so every draw can be logged and replayed:

- spatial twins resample the image with (tri)linear interpolation and the mask with nearest neighbour through one
  sampling grid, so both move together and the mask stays exactly binary;
- intensity twins change the image only and pass the mask through untouched; where it makes sense they keep the
  background (voxels equal to 0, as :func:`brainlearn.data.loaders.standardize` leaves it) at 0.

Randomness: ``seed=None`` draws from torch's global generator, which the DataLoader seeds per worker and per epoch;
an integer seed gives the transform its own stream, re-seeded from (seed, worker seed) inside each DataLoader worker
so that workers and epochs do not repeat each other's draws. Voxels are taken as isotropic (rotations are rigid in
voxel space), which the 2 mm caches are.
"""

from __future__ import annotations

import difflib
import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from scipy import ndimage
from torch.nn import functional as F
from torch.utils.data import get_worker_info

from brainlearn.errors import BrainlearnError

# ---------------------------------------------------------------------------------------------------------- items


def spatial_shape(item: dict) -> tuple[int, ...]:
    """The spatial shape of ``item["image"]`` (C, *spatial), after checking that ``mask`` (1, *spatial) matches it."""
    image = item.get("image") if isinstance(item, dict) else None
    if not isinstance(image, torch.Tensor) or image.ndim not in (3, 4):
        got = f"shape {tuple(image.shape)}" if isinstance(image, torch.Tensor) else type(image).__name__
        raise BrainlearnError(f"augmentation: item['image'] must be a tensor (C, H, W) or (C, X, Y, Z), not {got}.")
    shape = tuple(image.shape[1:])
    mask = item.get("mask")
    if mask is not None and (not isinstance(mask, torch.Tensor) or tuple(mask.shape) != (1, *shape)):
        got = tuple(mask.shape) if isinstance(mask, torch.Tensor) else type(mask).__name__
        raise BrainlearnError(f"augmentation: item['mask'] must have shape {(1, *shape)} like the image, not {got}.")
    return shape


def _map_spatial(item: dict, fn: Callable[[torch.Tensor], torch.Tensor]) -> dict:
    out = {**item, "image": fn(item["image"])}
    if "mask" in item:
        out["mask"] = fn(item["mask"])
    return out


def _map_image(item: dict, fn: Callable[[torch.Tensor], torch.Tensor]) -> dict:
    image = item["image"]
    return {**item, "image": fn(image.float()).to(image.dtype)}


def _resample(item: dict, grid: torch.Tensor) -> dict:
    """Sample image (linear) and mask (nearest) at ``grid`` (1, *spatial, d), grid_sample's order (last axis first)."""

    def sample(x: torch.Tensor, mode: str) -> torch.Tensor:
        y = F.grid_sample(x[None].float(), grid.to(x.device), mode=mode, padding_mode="zeros", align_corners=True)
        return y[0].to(x.dtype)

    out = {**item, "image": sample(item["image"], "bilinear")}  # trilinear for volumes
    if "mask" in item:
        out["mask"] = sample(item["mask"], "nearest")
    return out


def _half_extent(shape: Sequence[int]) -> torch.Tensor:
    """Voxels per unit of grid_sample's [-1, 1] coordinates along each spatial axis (align_corners=True)."""
    return torch.tensor([max(n - 1, 1) / 2 for n in shape], dtype=torch.float64)


def _planes(d: int) -> list[tuple[int, int]]:
    """Rotation planes of ``d`` spatial axes: (0, 1) in 2D; (0, 1), (0, 2), (1, 2) in 3D."""
    return list(itertools.combinations(range(d), 2))


def _check_fits(axes: Sequence[int], shape: tuple[int, ...]) -> None:
    if max(axes, default=-1) >= len(shape):
        raise BrainlearnError(f"augmentation: axes {tuple(axes)} do not exist in a {len(shape)}D item {shape}.")


# ------------------------------------------------------------------------------------- deterministic spatial twins


@dataclass(frozen=True)
class Flip:
    """Reverse the spatial ``axes`` (0 = first axis after the channel) of image and mask; its own inverse."""

    axes: tuple[int, ...]

    def __call__(self, item: dict) -> dict:
        _check_fits(self.axes, spatial_shape(item))
        return _map_spatial(item, lambda x: x.flip([a + 1 for a in self.axes]))


@dataclass(frozen=True)
class Rotate90:
    """Rotate image and mask by ``k`` quarter turns in the spatial ``plane`` (from its first axis to its second)."""

    k: int
    plane: tuple[int, int]

    def __call__(self, item: dict) -> dict:
        _check_fits(self.plane, spatial_shape(item))
        return _map_spatial(item, lambda x: torch.rot90(x, self.k, [self.plane[0] + 1, self.plane[1] + 1]))


@dataclass(frozen=True)
class Affine:
    """Rotate, scale and shift about the centre c: voxel v moves to c + scale · R (v − c) + shift.

    Args:
        degrees: one angle per rotation plane, in the order of :func:`_planes` (one in 2D, three in 3D).
        scale: zoom factor (above 1 enlarges).
        shift: voxels along each spatial axis.
    """

    degrees: tuple[float, ...]
    scale: float
    shift: tuple[float, ...]

    def __call__(self, item: dict) -> dict:
        shape = spatial_shape(item)
        d = len(shape)
        if len(self.degrees) != len(_planes(d)) or len(self.shift) != d:
            raise BrainlearnError(f"Affine: a {d}D item needs {len(_planes(d))} angles and {d} shifts, not {self}.")
        grid = F.affine_grid(self.theta(shape)[None], [1, 1, *shape], align_corners=True)
        return _resample(item, grid)

    def theta(self, shape: tuple[int, ...]) -> torch.Tensor:
        """The (d, d + 1) matrix that affine_grid needs: output → input, in [-1, 1] coordinates, last axis first."""
        d = len(shape)
        rotation = torch.eye(d, dtype=torch.float64)
        for (i, j), angle in zip(_planes(d), self.degrees, strict=True):
            turn = torch.eye(d, dtype=torch.float64)
            cos, sin = math.cos(math.radians(angle)), math.sin(math.radians(angle))
            turn[i, i], turn[i, j], turn[j, i], turn[j, j] = cos, -sin, sin, cos
            rotation = turn @ rotation
        inverse = torch.linalg.inv(self.scale * rotation)  # voxels out → voxels in, about the centre
        half = _half_extent(shape)
        matrix = inverse * half[None, :] / half[:, None]  # D⁻¹ M⁻¹ D: the same map in [-1, 1] coordinates
        offset = -(inverse @ torch.tensor(self.shift, dtype=torch.float64)) / half
        return torch.cat([matrix.flip((0, 1)), offset.flip(0)[:, None]], 1).float()  # grid_sample: x = last axis


@dataclass(frozen=True, eq=False)
class Displacement:
    """Warp image and mask by a dense field: output(v) = input(v + field(v)).

    Args:
        field: (d, *spatial) displacement in voxels along each spatial axis.
    """

    field: torch.Tensor

    def __call__(self, item: dict) -> dict:
        shape = spatial_shape(item)
        if tuple(self.field.shape) != (len(shape), *shape):
            raise BrainlearnError(f"Displacement: field {tuple(self.field.shape)} does not fit an item {shape}.")
        eye = torch.eye(len(shape), len(shape) + 1)[None]
        identity = F.affine_grid(eye, [1, 1, *shape], align_corners=True)  # (1, *spatial, d)
        normalized = self.field.double() / _half_extent(shape).view(-1, *[1] * len(shape))
        return _resample(item, identity + normalized.flip(0).movedim(0, -1)[None].float())


# ----------------------------------------------------------------------------------- deterministic intensity twins


def _foreground(image: torch.Tensor):
    """Yield (channel, inside) for each channel of ``image`` (C, ...) with at least two non-zero voxels."""
    for c, channel in enumerate(image):
        inside = channel != 0
        if inside.sum() >= 2:
            yield c, inside


@dataclass(frozen=True)
class Gamma:
    """Per channel, scale the foreground to [0, 1], raise it to ``gamma`` and scale back: range and background kept."""

    gamma: float

    def __call__(self, item: dict) -> dict:
        spatial_shape(item)
        return _map_image(item, self._apply)

    def _apply(self, image: torch.Tensor) -> torch.Tensor:
        out = image.clone()
        for c, inside in _foreground(image):
            values = image[c][inside]
            low, high = values.min(), values.max()
            if high > low:
                out[c][inside] = low + (high - low) * ((values - low) / (high - low)) ** self.gamma
        return out


@dataclass(frozen=True)
class Noise:
    """Add Gaussian noise of ``std`` × the channel's standard deviation inside its non-zero voxels.

    Args:
        std: relative standard deviation.
        seed: seeds the noise, so the twin is deterministic.
    """

    std: float
    seed: int

    def __call__(self, item: dict) -> dict:
        spatial_shape(item)
        return _map_image(item, self._apply)

    def _apply(self, image: torch.Tensor) -> torch.Tensor:
        noise = torch.randn(image.shape, generator=torch.Generator().manual_seed(self.seed)).to(image.device)
        out = image.clone()
        for c, inside in _foreground(image):
            out[c][inside] += self.std * image[c][inside].std() * noise[c][inside]
        return out


@dataclass(frozen=True)
class Blur:
    """Gaussian blur of ``sigma`` voxels per spatial axis, normalized inside the foreground so edges keep their level.

    The background stays 0 and the foreground is not darkened next to it (normalized convolution).
    """

    sigma: tuple[float, ...]

    def __call__(self, item: dict) -> dict:
        if len(self.sigma) != len(spatial_shape(item)):
            raise BrainlearnError(f"Blur: sigma {self.sigma} needs one value per spatial axis of the item.")
        return _map_image(item, self._apply)

    def _apply(self, image: torch.Tensor) -> torch.Tensor:
        inside = (image != 0).float()
        weight = _gaussian_blur(inside, self.sigma)
        return torch.where(inside > 0, _gaussian_blur(image, self.sigma) / weight.clamp_min(1e-6), 0.0)


def _gaussian_blur(x: torch.Tensor, sigma: Sequence[float]) -> torch.Tensor:
    """Separable Gaussian filter of ``x`` (C, *spatial) with ``sigma`` voxels per axis, zero outside the array."""
    return _along_axes(x, [_gaussian_matrix(n, s) if s > 0 else None for n, s in zip(x.shape[1:], sigma, strict=True)])


def _gaussian_matrix(n: int, sigma: float) -> torch.Tensor:
    """(n, n) banded matrix of a Gaussian kernel truncated at 3 sigma (a matrix product beats conv1d on CPU here)."""
    radius = max(1, math.ceil(3 * sigma))
    distance = torch.arange(n)[:, None] - torch.arange(n)[None, :]
    kernel = torch.exp(-(distance.float() ** 2) / (2 * sigma**2)) * (distance.abs() <= radius)
    return kernel / torch.exp(-(torch.arange(-radius, radius + 1).float() ** 2) / (2 * sigma**2)).sum()


def _along_axes(x: torch.Tensor, matrices: Sequence[torch.Tensor | None]) -> torch.Tensor:
    """Multiply ``x`` (C, *spatial) along each spatial axis by a matrix (n_out, n_in); None leaves the axis."""
    for axis, matrix in enumerate(matrices, start=1):
        if matrix is not None:
            x = torch.tensordot(x, matrix.to(x), dims=([axis], [1])).movedim(-1, axis)
    return x


def bias_field_terms(d: int, order: int) -> list[tuple[int, ...]]:
    """Exponents of the monomials of a ``d``-dimensional polynomial of degree ``order`` (constant term first)."""
    return sorted((e for e in itertools.product(range(order + 1), repeat=d) if sum(e) <= order), key=sum)


@dataclass(frozen=True)
class BiasField:
    """Multiply the image by exp(polynomial) over [-1, 1] coordinates (TorchIO's bias field); 0 stays 0.

    Args:
        coefficients: one per term of :func:`bias_field_terms` for the item's dimension and ``order``.
        order: degree of the polynomial.
    """

    coefficients: tuple[float, ...]
    order: int

    def __call__(self, item: dict) -> dict:
        shape = spatial_shape(item)
        terms = bias_field_terms(len(shape), self.order)
        if len(self.coefficients) != len(terms):
            raise BrainlearnError(f"BiasField: order {self.order} in {len(shape)}D needs {len(terms)} coefficients.")
        axes = torch.meshgrid(*[torch.linspace(-1, 1, n) for n in shape], indexing="ij")
        log_field = torch.zeros(shape)
        for c, exponents in zip(self.coefficients, terms, strict=True):
            log_field += c * math.prod(a**e for a, e in zip(axes, exponents, strict=True))
        return _map_image(item, lambda image: image * torch.exp(log_field).to(image.device))


@dataclass(frozen=True)
class Ghosting:
    """MRI ghosting: every ``num_ghosts``-th k-space line along ``axis`` is scaled by 1 − ``intensity``.

    The central ``restore`` fraction of k-space lines is kept, as TorchIO does, so the image keeps its contrast.
    Ghosts are copies shifted by size / ``num_ghosts`` along ``axis`` and reach the background, as on a scanner.
    """

    num_ghosts: int
    axis: int
    intensity: float
    restore: float = 0.02

    def __call__(self, item: dict) -> dict:
        _check_fits((self.axis,), spatial_shape(item))
        return _map_image(item, self._apply)

    def _apply(self, image: torch.Tensor) -> torch.Tensor:
        dims, n = tuple(range(1, image.ndim)), image.shape[self.axis + 1]
        spectrum = torch.fft.fftshift(torch.fft.fftn(image, dim=dims), dim=dims)
        weight = torch.ones(n)
        weight[:: self.num_ghosts] = 1 - self.intensity
        keep = round(self.restore * n / 2)
        weight[n // 2 - keep : n // 2 + keep + 1] = 1
        shape = [1] * image.ndim
        shape[self.axis + 1] = n
        spectrum = spectrum * weight.view(shape).to(image.device)
        return torch.fft.ifftn(torch.fft.ifftshift(spectrum, dim=dims), dim=dims).real


# ------------------------------------------------------------------------------------------- random transforms


class RandomTransform:
    """With probability ``p``, draws parameters for an item and applies them through a deterministic twin.

    Args:
        p: probability of transforming an item.
        seed: None draws from torch's global generator; an integer >= 0 gives the transform its own stream.
    """

    def __init__(self, *, p: float, seed: int | None):
        if isinstance(p, bool) or not isinstance(p, int | float) or not 0 <= p <= 1:
            raise BrainlearnError(f"p must be a probability in [0, 1], not {p!r}.")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or seed < 0):
            raise BrainlearnError(f"seed must be an integer >= 0 or None, not {seed!r}.")
        self.p, self.seed = float(p), seed
        self._generator: torch.Generator | None = None
        self._worker_seed: int | None = None

    def __call__(self, item: dict) -> dict:
        twin = self.sample(spatial_shape(item))
        return dict(item) if twin is None else twin(item)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({args})"

    def sample(self, shape: tuple[int, ...]) -> Callable[[dict], dict] | None:
        """The deterministic twin for an item of spatial ``shape``, or None (with probability 1 − p)."""
        return self._draw(shape) if self._uniform(1).item() < self.p else None

    def _draw(self, shape: tuple[int, ...]) -> Callable[[dict], dict]:
        raise NotImplementedError

    def _uniform(self, size, low: float = 0.0, high: float = 1.0) -> torch.Tensor:
        size = (size,) if isinstance(size, int) else tuple(size)
        return low + (high - low) * torch.rand(size, generator=self._stream(), dtype=torch.float64)

    def _integer(self, low: int, high: int) -> int:
        """A uniform integer in [low, high]."""
        return int(torch.randint(low, high + 1, (1,), generator=self._stream()))

    def _stream(self) -> torch.Generator | None:
        if self.seed is None:
            return None
        info = get_worker_info()
        worker_seed = None if info is None else info.seed  # differs per worker and per epoch
        if self._generator is None or worker_seed != self._worker_seed:
            entropy = [self.seed] if worker_seed is None else [self.seed, worker_seed]
            self._generator = torch.Generator().manual_seed(int(np.random.SeedSequence(entropy).generate_state(1)[0]))
            self._worker_seed = worker_seed
        return self._generator


def _check_axes(name: str, axes, count: int | None = None) -> tuple[int, ...]:
    valid = isinstance(axes, tuple | list) and all(isinstance(a, int) and 0 <= a <= 2 for a in axes)
    valid = valid and len(set(axes)) == len(axes) > 0 and (count is None or len(axes) == count)
    if not valid:
        what = f"{count} distinct spatial axes" if count else "distinct spatial axes"
        raise BrainlearnError(f"{name} must be {what} among 0, 1, 2 (0 = first after the channel), not {axes!r}.")
    return tuple(axes)


def _check_number(name: str, value, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
        raise BrainlearnError(f"{name} must be a number in [{low}, {high}], not {value!r}.")
    return float(value)


def _check_range(name: str, value, low: float, high: float) -> tuple[float, float]:
    valid = isinstance(value, tuple | list) and len(value) == 2
    valid = valid and all(isinstance(v, int | float) and not isinstance(v, bool) for v in value)
    if not valid or not low <= value[0] <= value[1] <= high:
        raise BrainlearnError(f"{name} must be a pair (a, b) with {low} <= a <= b <= {high}, not {value!r}.")
    return float(value[0]), float(value[1])


class RandomFlip(RandomTransform):
    """Flip each of the spatial ``axes`` independently with probability ``p`` (image and mask together).

    Args:
        axes: spatial axes; 0 is left-right in a RAS cache and in its axial slices.
    """

    def __init__(self, axes: Sequence[int] = (0,), *, p: float = 0.5, seed: int | None = None):
        super().__init__(p=p, seed=seed)
        self.axes = _check_axes("axes", axes)

    def sample(self, shape: tuple[int, ...]) -> Flip | None:
        _check_fits(self.axes, shape)
        draws = self._uniform(len(self.axes)).tolist()
        axes = tuple(a for a, u in zip(self.axes, draws, strict=True) if u < self.p)
        return Flip(axes) if axes else None


class RandomRotate90(RandomTransform):
    """Rotate by 90°, 180° or 270° in ``plane``; only by 180° where the plane is not square, so the shape is kept."""

    def __init__(self, plane: Sequence[int] = (0, 1), *, p: float = 0.5, seed: int | None = None):
        super().__init__(p=p, seed=seed)
        self.plane = _check_axes("plane", plane, count=2)

    def _draw(self, shape: tuple[int, ...]) -> Rotate90:
        _check_fits(self.plane, shape)
        square = shape[self.plane[0]] == shape[self.plane[1]]
        return Rotate90(self._integer(1, 3) if square else 2, self.plane)


class RandomAffine(RandomTransform):
    """Shift-scale-rotate about the centre, one matrix for image and mask.

    Args:
        degrees: largest rotation in each rotation plane (uniform in [-degrees, degrees]).
        scale: range of the isotropic zoom factor.
        shift: largest shift as a fraction of the size along each axis.
    """

    def __init__(
        self,
        degrees: float = 10.0,
        scale: tuple[float, float] = (0.9, 1.1),
        shift: float = 0.05,
        *,
        p: float = 0.5,
        seed: int | None = None,
    ):
        super().__init__(p=p, seed=seed)
        self.degrees = _check_number("degrees", degrees, 0, 180)
        self.scale = _check_range("scale", scale, 0.01, 100)
        self.shift = _check_number("shift", shift, 0, 0.5)

    def _draw(self, shape: tuple[int, ...]) -> Affine:
        angles = self._uniform(len(_planes(len(shape))), -self.degrees, self.degrees)
        shifts = self._uniform(len(shape), -self.shift, self.shift) * torch.tensor(shape)
        scale = self._uniform(1, *self.scale).item()
        return Affine(tuple(angles.tolist()), scale, tuple(shifts.tolist()))


class RandomElastic(RandomTransform):
    """Elastic deformation: random displacements on a coarse grid, upsampled by cubic splines to every voxel.

    Args:
        control_points: grid points per spatial axis, corners included.
        magnitude: largest displacement at a control point, in voxels (the spline may overshoot it slightly); keep
            it below about a third of the control-point spacing, or the tissue folds and small structures shrink.
    """

    def __init__(self, control_points: int = 5, magnitude: float = 3.0, *, p: float = 0.5, seed: int | None = None):
        super().__init__(p=p, seed=seed)
        if isinstance(control_points, bool) or not isinstance(control_points, int) or control_points < 2:
            raise BrainlearnError(f"control_points must be an integer >= 2, not {control_points!r}.")
        self.control_points = control_points
        self.magnitude = _check_number("magnitude", magnitude, 0, 100)

    def _draw(self, shape: tuple[int, ...]) -> Displacement:
        d, k = len(shape), self.control_points
        coarse = self._uniform((d, *[k] * d), -self.magnitude, self.magnitude).float()  # (d, k, ..., k)
        return Displacement(_along_axes(coarse, [_spline_matrix(n, k) for n in shape]))  # (d, *spatial)


def _spline_matrix(n: int, k: int) -> torch.Tensor:
    """(n, k) weights of cubic-spline interpolation from k control points to n voxels, corners on corners."""
    weights = ndimage.zoom(np.eye(k), (n / k, 1), order=3, mode="nearest", grid_mode=False)  # impulse responses
    return torch.from_numpy(weights[:n]).float()


class RandomGridDistortion(RandomTransform):
    """Grid distortion: each axis is cut into ``cells`` whose boundaries move independently; the borders stay.

    Args:
        cells: cells per spatial axis.
        distort: largest boundary move as a fraction of a cell; below 0.5 the grid cannot fold.
    """

    def __init__(self, cells: int = 5, distort: float = 0.3, *, p: float = 0.5, seed: int | None = None):
        super().__init__(p=p, seed=seed)
        if isinstance(cells, bool) or not isinstance(cells, int) or cells < 1:
            raise BrainlearnError(f"cells must be an integer >= 1, not {cells!r}.")
        self.cells = cells
        self.distort = _check_number("distort", distort, 0, 0.49)

    def _draw(self, shape: tuple[int, ...]) -> Displacement:
        field = torch.zeros(len(shape), *shape)
        for axis, n in enumerate(shape):
            knots = np.linspace(0, n - 1, self.cells + 1)
            moves = self._uniform(self.cells + 1, -self.distort, self.distort).numpy() * (n - 1) / self.cells
            moves[[0, -1]] = 0
            profile = torch.from_numpy(np.interp(np.arange(n), knots, moves)).float()
            view = [1] * len(shape)
            view[axis] = n
            field[axis] = profile.view(view).expand(shape)
        return Displacement(field)


class RandomGamma(RandomTransform):
    """Gamma contrast change with log(gamma) uniform in ``log_gamma`` (TorchIO's parametrization)."""

    def __init__(self, log_gamma: tuple[float, float] = (-0.3, 0.3), *, p: float = 0.5, seed: int | None = None):
        super().__init__(p=p, seed=seed)
        self.log_gamma = _check_range("log_gamma", log_gamma, -5, 5)

    def _draw(self, shape: tuple[int, ...]) -> Gamma:
        return Gamma(math.exp(self._uniform(1, *self.log_gamma).item()))


class RandomNoise(RandomTransform):
    """Gaussian noise inside the foreground, its std uniform in ``std`` × the channel's std there."""

    def __init__(self, std: tuple[float, float] = (0.0, 0.1), *, p: float = 0.5, seed: int | None = None):
        super().__init__(p=p, seed=seed)
        self.std = _check_range("std", std, 0, 10)

    def _draw(self, shape: tuple[int, ...]) -> Noise:
        return Noise(self._uniform(1, *self.std).item(), self._integer(0, 2**31 - 1))


class RandomBlur(RandomTransform):
    """Gaussian blur, its sigma drawn per spatial axis from ``sigma`` (voxels)."""

    def __init__(self, sigma: tuple[float, float] = (0.25, 1.0), *, p: float = 0.5, seed: int | None = None):
        super().__init__(p=p, seed=seed)
        self.sigma = _check_range("sigma", sigma, 0, 20)

    def _draw(self, shape: tuple[int, ...]) -> Blur:
        return Blur(tuple(self._uniform(len(shape), *self.sigma).tolist()))


class RandomBiasField(RandomTransform):
    """Smooth multiplicative field exp(polynomial of degree ``order``), coefficients uniform in ±``coefficients``."""

    def __init__(self, coefficients: float = 0.5, order: int = 3, *, p: float = 0.5, seed: int | None = None):
        super().__init__(p=p, seed=seed)
        self.coefficients = _check_number("coefficients", coefficients, 0, 5)
        if isinstance(order, bool) or not isinstance(order, int) or not 0 <= order <= 6:
            raise BrainlearnError(f"order must be an integer in [0, 6], not {order!r}.")
        self.order = order

    def _draw(self, shape: tuple[int, ...]) -> BiasField:
        count = len(bias_field_terms(len(shape), self.order))
        return BiasField(tuple(self._uniform(count, -self.coefficients, self.coefficients).tolist()), self.order)


class RandomGhosting(RandomTransform):
    """MRI ghosting along one of ``axes`` (None: any spatial axis), the ghost count and intensity drawn per item.

    Args:
        num_ghosts: range of the number of ghosts (integers, inclusive).
        axes: spatial axes the phase encoding may run along.
        intensity: range of the k-space attenuation (1 removes the modulated lines).
        restore: central fraction of k-space lines left untouched.
    """

    def __init__(
        self,
        num_ghosts: tuple[int, int] = (4, 10),
        axes: Sequence[int] | None = None,
        intensity: tuple[float, float] = (0.5, 1.0),
        restore: float = 0.02,
        *,
        p: float = 0.5,
        seed: int | None = None,
    ):
        super().__init__(p=p, seed=seed)
        low, high = _check_range("num_ghosts", num_ghosts, 2, 1000)
        if low != int(low) or high != int(high):
            raise BrainlearnError(f"num_ghosts must be a pair of integers, not {num_ghosts!r}.")
        self.num_ghosts = int(low), int(high)
        self.axes = None if axes is None else _check_axes("axes", axes)
        self.intensity = _check_range("intensity", intensity, 0, 1)
        self.restore = _check_number("restore", restore, 0, 1)

    def _draw(self, shape: tuple[int, ...]) -> Ghosting:
        axes = tuple(range(len(shape))) if self.axes is None else self.axes
        _check_fits(axes, shape)
        axis = axes[self._integer(0, len(axes) - 1)]
        ghosts = self._integer(*self.num_ghosts)
        return Ghosting(ghosts, axis, self._uniform(1, *self.intensity).item(), self.restore)


# ------------------------------------------------------------------------------------------ composition, presets


class Compose:
    """Apply ``transforms`` in order to an item dict; returns a new dict."""

    def __init__(self, transforms: Sequence[Callable[[dict], dict]]):
        for i, transform in enumerate(transforms):
            if not callable(transform):
                raise BrainlearnError(f"transforms must be callables on item dicts, not {transform!r} at {i}.")
        self.transforms = list(transforms)

    def __call__(self, item: dict) -> dict:
        spatial_shape(item)
        out = dict(item)
        for transform in self.transforms:
            out = transform(out)
        return out

    def __repr__(self) -> str:
        return f"Compose({self.transforms!r})"


def _seeds(seed: int | None, count: int) -> list[int | None]:
    if seed is None:
        return [None] * count
    return [int(s.generate_state(1)[0]) for s in np.random.SeedSequence(seed).spawn(count)]


def augmentation_2d(*, seed: int | None = None) -> Compose:
    """Joint image+mask augmentation of slices (C, H, W) for lesion segmentation (document 002).

    ======================================================================  ===========
    step                                                                    probability
    ======================================================================  ===========
    flip, each in-plane axis independently                                  0.5
    rotation by 90°, 180° or 270° (180° only on non-square slices)          0.5
    shift-scale-rotate: ±15°, zoom 0.9–1.1, shift ±6.25 % of the size       0.5
    elastic: 5 × 5 control points, up to 3 voxels                           0.25
    grid distortion: 5 cells per axis, boundaries moved up to 30 % a cell   0.25
    ======================================================================  ===========

    Args:
        seed: None uses torch's global generator; an integer seeds each step's own stream.
    """
    s = _seeds(seed, 5)
    return Compose(
        [
            RandomFlip((0, 1), p=0.5, seed=s[0]),
            RandomRotate90((0, 1), p=0.5, seed=s[1]),
            RandomAffine(15.0, (0.9, 1.1), 0.0625, p=0.5, seed=s[2]),
            RandomElastic(5, 3.0, p=0.25, seed=s[3]),
            RandomGridDistortion(5, 0.3, p=0.25, seed=s[4]),
        ]
    )


def augmentation_3d(*, seed: int | None = None) -> Compose:
    """Document 003's augmentation of volumes (C, X, Y, Z) for segmentation fine-tuning, in its order.

    ====================================================================  ===========
    step                                                                  probability
    ====================================================================  ===========
    left-right flip (axis 0 of a RAS volume)                              0.5
    affine: ±10° per plane, zoom 0.9–1.1, shift ±5 % of the size          0.5
    ghosting: 4–10 ghosts along a random axis, intensity 0.5–1            0.2
    Gaussian noise, std 0–0.1 of the foreground's                         0.25
    blur, sigma 0.25–1 voxel per axis                                     0.2
    bias field, order 3, coefficients within ±0.5                         0.3
    gamma, log(gamma) within ±0.3                                         0.3
    ====================================================================  ===========

    Args:
        seed: None uses torch's global generator; an integer seeds each step's own stream.
    """
    s = _seeds(seed, 7)
    return Compose(
        [
            RandomFlip((0,), p=0.5, seed=s[0]),
            RandomAffine(10.0, (0.9, 1.1), 0.05, p=0.5, seed=s[1]),
            RandomGhosting((4, 10), None, (0.5, 1.0), p=0.2, seed=s[2]),
            RandomNoise((0.0, 0.1), p=0.25, seed=s[3]),
            RandomBlur((0.25, 1.0), p=0.2, seed=s[4]),
            RandomBiasField(0.5, 3, p=0.3, seed=s[5]),
            RandomGamma((-0.3, 0.3), p=0.3, seed=s[6]),
        ]
    )


def no_augmentation(*, seed: int | None = None) -> Compose:
    """The identity, for configs that switch augmentation off."""
    return Compose([])


PRESETS: dict[str, Callable[..., Compose]] = {"2d": augmentation_2d, "3d": augmentation_3d, "none": no_augmentation}


def preset(name: str, *, seed: int | None = None) -> Compose:
    """The augmentation preset called ``name`` (a key of :data:`PRESETS`).

    Raises:
        BrainlearnError: an unknown name, with the closest known one.
    """
    if name not in PRESETS:
        close = difflib.get_close_matches(str(name).lower(), PRESETS, n=1, cutoff=0.5)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise BrainlearnError(f"augmentation: unknown preset {name!r}.{hint} Known presets: {', '.join(PRESETS)}.")
    return PRESETS[name](seed=seed)
