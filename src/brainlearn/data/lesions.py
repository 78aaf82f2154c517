"""Lesion-segmentation data from a cache: axial slices (2D U-Net) or patches (3D), image and mask together.

Each volume is standardized per channel inside its non-zero voxels (statistics computed once per volume, population
SD), the same at training and in :func:`standardize_volume` at inference (the classifiers'
:func:`brainlearn.data.loaders.standardize` uses the sample SD: each pipeline is consistent with itself). Lesions
fill well under 1 % of the voxels, so :func:`lesion_sampler` draws slices that hold lesion half of the time.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset, Subset, WeightedRandomSampler

from brainlearn.data.cache import Cache
from brainlearn.data.datasets import ImageMaskDataset, VolumeDataset
from brainlearn.data.streams import WorkerStream
from brainlearn.errors import BrainlearnError


class LesionSliceDataset(Dataset):
    """Axial slices with their masks: ``image`` (C, X, Y) standardized, ``mask`` (1, X, Y) in {0, 1}.

    A cache without ``"mask"`` gives unlabelled slices (no ``mask`` key), for pretraining.

    Only slices that cut the head (any non-zero voxel in the first channel) are kept.

    Args:
        cache: a cache holding the ``modalities`` and ``"mask"``.
        modalities: image channels, e.g. ``("t1", "t2", "flair")`` (document 002).
        split: the split to draw from.
        transform: called on each item dict (e.g. a joint image + mask augmentation).
    """

    def __init__(
        self, cache: Cache, *, modalities: Sequence[str], split: str | None, transform: Callable | None = None
    ):
        self.with_mask = "mask" in cache.modalities  # without: unlabelled slices for pretraining
        if self.with_mask:
            self.volumes = ImageMaskDataset(cache, modalities=tuple(modalities), split=split)
        else:
            self.volumes = VolumeDataset(cache, modalities=tuple(modalities), classes=None, split=split)
        self.transform = transform
        self.stats, items, has_lesion = [], [], []
        for i, row in enumerate(self.volumes.rows):
            image = np.stack([cache.read(row, m) for m in self.volumes.modalities]).astype(np.float32)
            mask = cache.read(row, "mask") if self.with_mask else np.zeros(image.shape[1:], dtype=bool)
            self.stats.append(_channel_stats(image))
            present = np.flatnonzero(image[0].any(axis=(0, 1)))
            items.extend((i, int(k)) for k in present)
            has_lesion.extend(bool(mask[..., k].any()) for k in present)
        if not items:
            raise BrainlearnError(f"{cache.path}: no slice with a head in split {split!r}.")
        self.items = np.asarray(items, dtype=np.int64)  # (N, 2): volume position, slice index
        self.has_lesion = np.asarray(has_lesion, dtype=bool)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict:
        position, k = (int(v) for v in self.items[index])
        row, cache = self.volumes.rows[position], self.volumes.cache
        image = np.stack([cache.read_slice(row, m, 2, k) for m in self.volumes.modalities]).astype(np.float32)
        mean, std = self.stats[position]
        image = np.where(image != 0, (image - mean[:, None, None]) / std[:, None, None], 0.0).astype(np.float32)
        participant_id, session_id = self.volumes.ids[position]
        item = {
            "image": torch.from_numpy(image),
            "participant_id": participant_id,
            "session_id": session_id,
            "slice_index": k,
        }
        if self.with_mask:
            item["mask"] = torch.from_numpy((cache.read_slice(row, "mask", 2, k) > 0).astype(np.float32)[None])
        return self.transform(item) if self.transform is not None else item


def lesion_sampler(
    dataset: LesionSliceDataset, *, lesion_fraction: float = 0.5, samples: int | None = None, seed: int = 0
) -> WeightedRandomSampler:
    """Draw slices with lesions ``lesion_fraction`` of the time (with replacement); ``samples`` per epoch."""
    if not 0.0 <= lesion_fraction < 1.0:
        raise BrainlearnError(f"lesion_fraction must be in [0, 1), not {lesion_fraction!r}.")
    positive = dataset.has_lesion
    weights = np.ones(len(positive))
    if positive.any() and (~positive).any() and lesion_fraction > 0:
        weights[positive] = lesion_fraction / positive.sum()
        weights[~positive] = (1 - lesion_fraction) / (~positive).sum()
    generator = torch.Generator().manual_seed(seed)
    return WeightedRandomSampler(weights.tolist(), samples or len(positive), replacement=True, generator=generator)


def every_nth(dataset: Dataset, limit, *, fixed: bool = False) -> Dataset | list:
    """At most ``limit`` evenly spaced items (every k-th, k = ceil(n / limit)): an unbiased validation sample.

    ``fixed`` reads the chosen items once into a list, for datasets that draw at random (3D patches), so that
    validation sees the same patches at every epoch.
    """
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise BrainlearnError(f"val_samples must be a positive integer, not {limit!r}.")
    chosen = Subset(dataset, range(0, len(dataset), max(1, -(-len(dataset) // limit))))
    return [chosen[i] for i in range(len(chosen))] if fixed else chosen


def standardized_volume(cache: Cache, row: int, modalities: Sequence[str]) -> np.ndarray:
    """A cached volume (C, X, Y, Z) standardized the way the slices are."""
    return standardize_volume(np.stack([cache.read(row, m) for m in modalities]))


def standardize_volume(image: np.ndarray) -> np.ndarray:
    """Z-score each channel of (C, X, Y, Z) inside its non-zero voxels; the background stays 0."""
    image = image.astype(np.float32)
    mean, std = _channel_stats(image)
    return np.where(image != 0, (image - mean[:, None, None, None]) / std[:, None, None, None], 0.0).astype(np.float32)


def _channel_stats(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and standard deviation (C,) of each channel inside its non-zero voxels."""
    means, stds = [], []
    for channel in image:
        values = channel[channel != 0]
        means.append(values.mean() if values.size else 0.0)
        stds.append(max(float(values.std()), 1e-6) if values.size else 1.0)
    return np.asarray(means, np.float32), np.asarray(stds, np.float32)


class LesionPatchDataset(Dataset):
    """Random 3D patches ``image`` (C, P, P, P) with their ``mask`` (1, P, P, P) for the Swin UNETR.

    ``samples_per_volume`` patches per volume and epoch; each is centred on a lesion voxel with probability
    ``lesion_fraction`` (when the volume has lesions), else on a random head voxel. Volumes smaller than the patch
    are zero-padded. A cache without ``"mask"`` gives unlabelled patches (no ``mask`` key), for pretraining.
    """

    def __init__(
        self,
        cache: Cache,
        *,
        modalities: Sequence[str],
        split: str | None,
        patch: int = 64,
        samples_per_volume: int = 4,
        lesion_fraction: float = 0.5,
        seed: int = 0,
        transform: Callable | None = None,
    ):
        self.with_mask = "mask" in cache.modalities  # without: unlabelled patches for pretraining
        if self.with_mask:
            self.volumes = ImageMaskDataset(cache, modalities=tuple(modalities), split=split)
        else:
            self.volumes = VolumeDataset(cache, modalities=tuple(modalities), classes=None, split=split)
        self.patch, self.samples, self.lesion_fraction = patch, samples_per_volume, lesion_fraction
        self.transform, self.seed = transform, seed
        self._stream = WorkerStream(seed)
        self._centres: dict[int, tuple] = {}  # position -> (stats, lesion voxels, head voxels), found once

    def __len__(self) -> int:
        return len(self.volumes.rows) * self.samples

    def __getitem__(self, index: int) -> dict:
        position = index // self.samples
        row, cache = self.volumes.rows[position], self.volumes.cache
        image = np.stack([cache.read(row, m) for m in self.volumes.modalities]).astype(np.float32)
        mask = (cache.read(row, "mask") > 0).astype(np.float32)[None] if self.with_mask else None  # (1, X, Y, Z)
        if position not in self._centres:
            lesion = np.argwhere(mask[0]) if mask is not None else np.empty((0, 3), dtype=np.int64)
            self._centres[position] = (_channel_stats(image), lesion, np.argwhere(image[0] != 0))
        (mean, std), lesion, head = self._centres[position]
        rng = self._stream.rng()  # a worker's copy draws its own patches
        pool = lesion if len(lesion) and rng.random() < self.lesion_fraction else head
        centre = pool[rng.integers(len(pool))] if len(pool) else np.array(image.shape[1:]) // 2
        image = _crop(image, centre, self.patch)
        scale = (slice(None), None, None, None)
        image = np.where(image != 0, (image - mean[scale]) / std[scale], 0.0).astype(np.float32)  # as the whole
        participant_id, session_id = self.volumes.ids[position]
        item = {"image": torch.from_numpy(image), "participant_id": participant_id, "session_id": session_id}
        if mask is not None:
            item["mask"] = torch.from_numpy(_crop(mask, centre, self.patch))
        return self.transform(item) if self.transform is not None else item


def _crop(array: np.ndarray, centre: np.ndarray, size: int) -> np.ndarray:
    """The (C, size, size, size) box of ``array`` (C, X, Y, Z) around ``centre``, zero-padded at the borders."""
    out = np.zeros((array.shape[0], size, size, size), dtype=array.dtype)
    source, target = [slice(None)], [slice(None)]
    for c, n in zip(centre, array.shape[1:], strict=True):
        start = int(c) - size // 2
        lo, hi = max(start, 0), min(start + size, n)
        source.append(slice(lo, hi))
        target.append(slice(lo - start, hi - start))
    out[tuple(target)] = array[tuple(source)]
    return out
