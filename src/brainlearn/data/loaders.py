"""From a cache to the batches a supervised model trains on: intensity standardization, resolution, augmentation.

Every image passes through :class:`VolumeTransform` in the dataset (so in the DataLoader workers):

1. each channel is standardized inside its own non-zero voxels (z-score), so scans from sites with different
   gains and PET in SUVR or counts all arrive on one scale — the same at training and at evaluation;
2. optionally averaged down by an integer ``downsample`` factor (2 turns the 2 mm cohort into 4 mm: 16× fewer
   voxels, the CPU configs' setting);
3. at training time only, a random left-right flip and a shift of up to ``shift`` voxels per axis.

The settings are recorded in the run's config, and :func:`evaluation_loader` rebuilds the same transform, so a
checkpoint is always evaluated on inputs prepared the way it was trained on.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch.nn import functional as F
from torch.utils.data import DataLoader, get_worker_info

from brainlearn.data.cache import Cache
from brainlearn.data.datasets import VolumeDataset
from brainlearn.errors import BrainlearnError


class VolumeTransform:
    """Standardize, downsample and (``augment=True``) flip and shift an item's ``image`` (C, X, Y, Z).

    Args:
        downsample: integer average-pooling factor (1 keeps the cache's resolution).
        augment: random left-right flip (array axis 0 of a RAS cache) and shift.
        shift: largest shift in voxels (after downsampling), per axis, filled with zeros.
        seed: seeds the augmentation. In the main process the draws follow one stream from ``seed``; inside a
            DataLoader worker the stream is re-seeded from (``seed``, the worker's seed), which differs per worker
            and per epoch, so workers do not repeat each other's flips and shifts.
    """

    def __init__(self, *, downsample: int = 1, augment: bool = False, shift: int = 2, seed: int = 0):
        if not isinstance(downsample, int) or isinstance(downsample, bool) or downsample < 1:
            raise BrainlearnError(f"downsample must be an integer >= 1, not {downsample!r}.")
        if not isinstance(shift, int) or shift < 0:
            raise BrainlearnError(f"shift must be an integer >= 0 (voxels), not {shift!r}.")
        self.downsample, self.augment, self.shift, self.seed = downsample, augment, shift, seed
        self._rng, self._worker_seed = np.random.default_rng(seed), None

    def __call__(self, item: dict) -> dict:
        image = standardize(item["image"])
        if self.downsample > 1:
            image = F.avg_pool3d(image[None], self.downsample, ceil_mode=True)[0]
        if self.augment:
            image = self._augmented(image)
        return {**item, "image": image.contiguous()}

    def _augmented(self, image: torch.Tensor) -> torch.Tensor:
        info = get_worker_info()
        if info is not None and info.seed != self._worker_seed:  # a worker's copy: its own stream
            self._rng, self._worker_seed = np.random.default_rng([self.seed, info.seed % 2**63]), info.seed
        if self._rng.random() < 0.5:
            image = image.flip(1)  # (C, X, Y, Z): X is left-right in a RAS cache
        if self.shift:
            shifts = self._rng.integers(-self.shift, self.shift + 1, size=3)
            image = _shifted(image, tuple(int(s) for s in shifts))
        return image


def standardize(image: torch.Tensor) -> torch.Tensor:
    """Z-score each channel of ``image`` (C, ...) inside its non-zero voxels; the background stays 0."""
    out = torch.zeros_like(image, dtype=torch.float32)
    for c, channel in enumerate(image.float()):
        inside = channel != 0
        if inside.sum() < 2:
            continue
        values = channel[inside]
        out[c][inside] = (values - values.mean()) / values.std().clamp_min(1e-6)
    return out


def _shifted(image: torch.Tensor, shifts: tuple[int, int, int]) -> torch.Tensor:
    """Translate (C, X, Y, Z) by whole voxels, filling the uncovered border with zeros (no wrap-around)."""
    out = torch.zeros_like(image)
    source, target = [slice(None)], [slice(None)]
    for shift, n in zip(shifts, image.shape[1:], strict=True):
        source.append(slice(max(0, -shift), n - max(0, shift)))
        target.append(slice(max(0, shift), n - max(0, -shift)))
    out[tuple(target)] = image[tuple(source)]
    return out


def training_loaders(
    cache: Cache,
    *,
    modalities: Sequence[str],
    classes: Sequence[str],
    batch_size: int,
    downsample: int = 1,
    augment: bool = True,
    num_workers: int = 0,
    seed: int = 0,
) -> tuple[DataLoader, DataLoader]:
    """Shuffled training batches (augmented) and validation batches (not), both from the cache's splits.

    Raises:
        BrainlearnError: the cache has no ``train`` or no ``val`` rows with these diagnoses.
    """
    if not isinstance(batch_size, int) or batch_size < 1:
        raise BrainlearnError(f"batch_size must be a positive integer, not {batch_size!r}.")
    train = VolumeDataset(
        cache,
        modalities=tuple(modalities),
        classes=tuple(classes),
        split="train",
        transform=VolumeTransform(downsample=downsample, augment=augment, seed=seed),
    )
    val = evaluation_dataset(cache, modalities=modalities, classes=classes, split="val", downsample=downsample)
    generator = torch.Generator().manual_seed(seed)
    common = {"num_workers": num_workers, "persistent_workers": num_workers > 0}
    return (
        DataLoader(train, batch_size=batch_size, shuffle=True, drop_last=False, generator=generator, **common),
        DataLoader(val, batch_size=batch_size, shuffle=False, **common),
    )


def evaluation_dataset(
    cache: Cache, *, modalities: Sequence[str], classes: Sequence[str] | None, split: str | None, downsample: int = 1
) -> VolumeDataset:
    """The sessions of ``split`` with diagnoses in ``classes``, prepared as at training time, never augmented."""
    return VolumeDataset(
        cache,
        modalities=tuple(modalities),
        classes=tuple(classes) if classes is not None else None,
        split=split,
        transform=VolumeTransform(downsample=downsample),
    )


def class_counts(dataset: VolumeDataset, classes: Sequence[str]) -> dict[str, int]:
    """Sessions per class in ``dataset`` (by its ``label``)."""
    labels = np.asarray(dataset.labels)
    return {name: int((labels == k).sum()) for k, name in enumerate(classes)}
