"""From a cache to the batches a model trains on: intensity scaling, resolution, augmentation, padding, cropping.

Every image of a supervised model passes through :class:`VolumeTransform` in the dataset (so in the DataLoader
workers):

1. each channel is brought to one scale, the same at training and at evaluation, so that scans from sites with
   different gains and PET in SUVR or counts all arrive alike. ``intensity="zscore"`` (the default) standardizes it
   inside its own non-zero voxels (:func:`standardize`; the background stays 0); ``intensity="range"`` maps it to
   [-1, 1] as document 000 does (:func:`scale_to_range`: background -1, the 99.5th percentile of the tissue 1);
2. optionally averaged down by an integer ``downsample`` factor (2 turns the 2 mm cohort into 4 mm: 16× fewer
   voxels, the CPU configs' setting);
3. at training time only, a random left-right flip and a shift of up to ``shift`` voxels per axis (the uncovered
   border takes the background value).

MRI–PET pairs for synthesis (document 000's ShareGAN) pass through :class:`PairTransform`: both volumes scaled to
[-1, 1] and downsampled, padded with the background -1 to a multiple of 16 voxels per axis (a size the U-Net's
halvings accept; :func:`pad_to_multiple` also returns the slices that undo it), then at training time cropped at
random (stage 1 trains on e.g. 128³ crops of 256³ volumes) and flipped. :func:`pair_loaders` gives unpaired
training batches and paired validation batches; :func:`paired_evaluation_dataset` the paired sessions of a split.

Random draws follow one stream from ``seed`` in the main process; inside a DataLoader worker the stream is re-seeded
from (``seed``, the worker's seed), which differs per worker and per epoch, so workers do not repeat each other's
draws. The settings are recorded in the run's config, and :func:`evaluation_dataset` rebuilds the same transform,
so a checkpoint is always evaluated on inputs prepared the way it was trained on.

Every training and validation DataLoader of the training commands comes from :func:`make_loader`, which feeds a GPU
through pinned memory and persistent, prefetching workers; ``num_workers="auto"`` (:func:`resolve_num_workers`)
starts none on a machine without a CUDA GPU, where worker processes only cost start-up time.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import torch
from torch.nn import functional as F
from torch.utils.data import DataLoader, Dataset, RandomSampler, Sampler

from brainlearn.data.cache import Cache
from brainlearn.data.datasets import PairDataset, VolumeDataset
from brainlearn.data.resumable import ResumableLoader
from brainlearn.data.streams import WorkerStream
from brainlearn.errors import BrainlearnError

INTENSITIES = ("zscore", "range")
MAX_AUTO_WORKERS = 8  # more rarely helps: cached reads are memory copies, and each worker holds prefetched batches
PREFETCH_FACTOR = 2  # batches in flight per worker; a batch of 3D volumes is large (4 × 256³ float32: 256 MiB)
_PERCENTILE_SAMPLE = 1_000_000  # voxels: a strided subsample of a 256³ brain gives the same 99.5th percentile


class VolumeTransform:
    """Scale, downsample and (``augment=True``) flip and shift an item's ``image`` (C, X, Y, Z).

    Args:
        downsample: integer average-pooling factor (1 keeps the cache's resolution).
        augment: random left-right flip (array axis 0 of a RAS cache) and shift.
        shift: largest shift in voxels (after downsampling), per axis, filled with the background value.
        intensity: ``"zscore"`` (:func:`standardize`, background 0) or ``"range"`` (:func:`scale_to_range`,
            [-1, 1] with background -1, as document 000).
        multiple: pad each axis with the background value to a multiple of this many voxels, last (1: no padding;
            the generative models' halvings need e.g. 16, see :func:`pad_to_multiple`).
        seed: seeds the augmentation; re-seeded per DataLoader worker (see the module docstring).
    """

    def __init__(
        self,
        *,
        downsample: int = 1,
        augment: bool = False,
        shift: int = 2,
        intensity: str = "zscore",
        multiple: int = 1,
        seed: int = 0,
    ):
        _check_downsample(downsample)
        _check_multiple(multiple)
        if not isinstance(shift, int) or shift < 0:
            raise BrainlearnError(f"shift must be an integer >= 0 (voxels), not {shift!r}.")
        if intensity not in INTENSITIES:
            raise BrainlearnError(f"intensity must be 'zscore' or 'range', not {intensity!r}.")
        self.downsample, self.augment, self.shift = downsample, augment, shift
        self.intensity, self.multiple, self.seed = intensity, multiple, seed
        self._stream = WorkerStream(seed)

    @property
    def background(self) -> float:
        return -1.0 if self.intensity == "range" else 0.0

    def __call__(self, item: dict) -> dict:
        image = scale_to_range(item["image"]) if self.intensity == "range" else standardize(item["image"])
        image = _downsampled(image, self.downsample)
        if self.augment:
            image = self._augmented(image)
        if self.multiple > 1:
            image = pad_to_multiple(image, self.multiple, self.background)[0]
        return {**item, "image": image.contiguous()}

    def _augmented(self, image: torch.Tensor) -> torch.Tensor:
        rng = self._stream.rng()
        if rng.random() < 0.5:
            image = image.flip(1)  # (C, X, Y, Z): X is left-right in a RAS cache
        if self.shift:
            shifts = rng.integers(-self.shift, self.shift + 1, size=3)
            image = _shifted(image, tuple(int(s) for s in shifts), fill=self.background)
        return image


class PairTransform:
    """Prepare an item's ``mri`` and ``pet`` (1, X, Y, Z) for synthesis as document 000: [-1, 1], padded, cropped.

    Each volume is scaled by :func:`scale_to_range`, average-pooled by ``downsample``, padded with the background
    -1 to the next multiple of ``multiple`` per axis (centred, :func:`pad_to_multiple`), then cut to a random
    ``crop`` and flipped left-right at random (``augment``).

    Args:
        downsample: integer average-pooling factor (1 keeps the cache's resolution).
        multiple: pad each axis to a multiple of this many voxels (16 suits a U-Net that halves four times).
        crop: (X, Y, Z) voxels of a random crop of the padded volume; None keeps the whole padded volume.
        augment: random left-right flip (array axis 1 of (C, X, Y, Z), left-right in a RAS cache).
        paired: crop both volumes at one position and flip them together (one session, one grid); False draws
            each volume's position and flip on its own, as unpaired training does.
        seed: seeds the draws; re-seeded per DataLoader worker as in :class:`VolumeTransform`.

    Raises:
        BrainlearnError: a bad setting; when called, a crop larger than a padded volume, or a paired crop of an
            MRI and a PET on different grids.
    """

    def __init__(
        self,
        *,
        downsample: int = 1,
        multiple: int = 16,
        crop: tuple[int, int, int] | None = None,
        augment: bool = False,
        paired: bool = True,
        seed: int = 0,
    ):
        _check_downsample(downsample)
        _check_multiple(multiple)
        valid = crop is None or (
            isinstance(crop, tuple | list) and len(crop) == 3 and all(_is_int(n) and n >= 1 for n in crop)
        )
        if not valid:
            raise BrainlearnError(f"crop must be None or 3 positive integers (X, Y, Z voxels), not {crop!r}.")
        self.downsample, self.multiple, self.augment, self.paired = downsample, multiple, augment, paired
        self.crop, self.seed = None if crop is None else tuple(crop), seed
        self._stream = WorkerStream(seed)

    def __call__(self, item: dict) -> dict:
        mri, pet = self._prepared(item["mri"]), self._prepared(item["pet"])
        if not self.paired:
            mri, pet = self._cut(mri, *self._draw(mri.shape[1:])), self._cut(pet, *self._draw(pet.shape[1:]))
        elif self.crop is not None and mri.shape != pet.shape:
            raise BrainlearnError(
                f"participant {item.get('participant_id')} session {item.get('session_id')}: a paired crop needs "
                f"the MRI and PET on one grid, got {tuple(mri.shape[1:])} and {tuple(pet.shape[1:])} after "
                "padding. Resample them onto one grid (brainlearn preprocess) or set crop=None."
            )
        else:
            window, flip = self._draw(mri.shape[1:])
            mri, pet = self._cut(mri, window, flip), self._cut(pet, window, flip)
        return {**item, "mri": mri.contiguous(), "pet": pet.contiguous()}

    def padded_shape(self, shape: Sequence[int]) -> tuple[int, int, int]:
        """The spatial shape of a volume of spatial ``shape`` after downsampling and padding (before the crop)."""
        sizes = [-(-n // self.downsample) for n in shape]  # avg_pool3d with ceil_mode rounds up
        return tuple(n + -n % self.multiple for n in sizes)

    def check_crop(self, padded: Sequence[int], name: str = "a") -> None:
        """Raise a BrainlearnError when ``crop`` does not fit a padded volume of spatial shape ``padded``."""
        if self.crop is not None and any(c > n for c, n in zip(self.crop, padded, strict=True)):
            raise BrainlearnError(
                f"crop {self.crop} is larger than {name} volume padded to {tuple(padded)} (downsample="
                f"{self.downsample}, padded to a multiple of {self.multiple}); lower crop to fit {tuple(padded)}."
            )

    def _prepared(self, volume: torch.Tensor) -> torch.Tensor:
        return pad_to_multiple(_downsampled(scale_to_range(volume), self.downsample), self.multiple)[0]

    def _draw(self, padded: Sequence[int]) -> tuple[tuple[slice, ...], bool]:
        """One volume's random parameters: the crop window (all of it without crop) and whether to flip."""
        rng = self._stream.rng()
        window = tuple(slice(None) for _ in padded)
        if self.crop is not None:
            self.check_crop(padded)
            corner = [int(rng.integers(n - c + 1)) for n, c in zip(padded, self.crop, strict=True)]
            window = tuple(slice(k, k + c) for k, c in zip(corner, self.crop, strict=True))
        return window, bool(self.augment and rng.random() < 0.5)

    @staticmethod
    def _cut(volume: torch.Tensor, window: tuple[slice, ...], flip: bool) -> torch.Tensor:
        volume = volume[(slice(None), *window)]  # (C, *crop)
        return volume.flip(1) if flip else volume  # (C, X, Y, Z): X is left-right in a RAS cache


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


def scale_to_range(image: torch.Tensor) -> torch.Tensor:
    """Map each channel of ``image`` (C, ...) to [-1, 1] as document 000: background (<= 0) -1, bright tissue 1.

    Per channel, ``hi`` is the 99.5th percentile of the voxels > 0 and ``y = clamp(x / hi, 0, 1) * 2 - 1``, so the
    brightest 0.5 % of the tissue saturates at 1. A channel without a positive voxel becomes all -1.
    """
    out = torch.full_like(image, -1.0, dtype=torch.float32)
    for c, channel in enumerate(image.float()):
        positive = channel[channel > 0]
        if positive.numel() == 0:
            continue
        step = max(1, positive.numel() // _PERCENTILE_SAMPLE)  # torch.quantile refuses tensors this big
        hi = float(np.percentile(positive[::step].cpu().numpy(), 99.5))
        out[c] = (channel / hi).clamp(0, 1) * 2 - 1
    return out


def pad_to_multiple(
    image: torch.Tensor, multiple: int, value: float = -1.0
) -> tuple[torch.Tensor, tuple[slice, slice, slice]]:
    """Pad ``image`` (C, X, Y, Z) with ``value`` to the next multiple of ``multiple`` voxels per spatial axis.

    The padding is centred: half of it before, half after, the odd voxel after.

    Returns:
        The padded (C, X', Y', Z') tensor and the spatial slices that cut the input back out of it (or out of any
        output of the padded size, e.g. a synthesized volume): ``padded[(..., *slices)]`` equals ``image``.
    """
    _check_multiple(multiple)
    if image.dim() != 4:
        raise BrainlearnError(f"pad_to_multiple takes a (C, X, Y, Z) tensor, not one of shape {tuple(image.shape)}.")
    spatial = image.shape[1:]
    before = [(-n % multiple) // 2 for n in spatial]
    after = [-n % multiple - b for n, b in zip(spatial, before, strict=True)]
    widths = [w for b, a in zip(reversed(before), reversed(after), strict=True) for w in (b, a)]  # F.pad: Z first
    slices = tuple(slice(b, b + n) for b, n in zip(before, spatial, strict=True))
    return F.pad(image, widths, value=value), slices


def _downsampled(image: torch.Tensor, factor: int) -> torch.Tensor:
    """Average (C, X, Y, Z) over blocks of ``factor``³ voxels; partial blocks at the far edges average their voxels."""
    return F.avg_pool3d(image[None], factor, ceil_mode=True)[0] if factor > 1 else image


def _shifted(image: torch.Tensor, shifts: tuple[int, int, int], fill: float = 0.0) -> torch.Tensor:
    """Translate (C, X, Y, Z) by whole voxels, filling the uncovered border with ``fill`` (no wrap-around)."""
    out = torch.full_like(image, fill)
    source, target = [slice(None)], [slice(None)]
    for shift, n in zip(shifts, image.shape[1:], strict=True):
        source.append(slice(max(0, -shift), n - max(0, shift)))
        target.append(slice(max(0, shift), n - max(0, -shift)))
    out[tuple(target)] = image[tuple(source)]
    return out


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_downsample(downsample) -> None:
    if not _is_int(downsample) or downsample < 1:
        raise BrainlearnError(f"downsample must be an integer >= 1, not {downsample!r}.")


def _check_multiple(multiple) -> None:
    if not _is_int(multiple) or multiple < 1:
        raise BrainlearnError(f"multiple must be an integer >= 1 (voxels), not {multiple!r}.")


def _check_batch_size(batch_size) -> None:
    if not isinstance(batch_size, int) or batch_size < 1:
        raise BrainlearnError(f"batch_size must be a positive integer, not {batch_size!r}.")


def resolve_num_workers(num_workers: int | str) -> int:
    """The number of DataLoader worker processes that ``num_workers`` asks for.

    Args:
        num_workers: an integer >= 0 (0: load in the main process), or ``"auto"``: 0 without a CUDA GPU (worker
            processes only cost start-up time on a CPU machine), and with one half the CPU cores this process may
            use, at least 1 and at most :data:`MAX_AUTO_WORKERS`, leaving the other half to the training process
            and its pin-memory thread. A string of digits (``"4"``) counts as the integer: the config reader turns
            an integer into text when the default is ``"auto"``.

    Raises:
        BrainlearnError: a negative number, a bool, or any other text.
    """
    if isinstance(num_workers, str) and num_workers.strip().isdecimal():
        num_workers = int(num_workers)
    if num_workers == "auto":
        return _auto_workers() if torch.cuda.is_available() else 0
    if isinstance(num_workers, bool) or not isinstance(num_workers, int) or num_workers < 0:
        raise BrainlearnError(
            f"num_workers must be 'auto' or an integer >= 0 (DataLoader worker processes), not {num_workers!r}. "
            "Write num_workers: auto (none without a GPU), 0 to load in the main process, or e.g. num_workers: 4."
        )
    return num_workers


def _auto_workers() -> int:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return min(MAX_AUTO_WORKERS, max(1, cores // 2))


def make_loader(
    dataset: Dataset,
    *,
    batch_size: int,
    shuffle: bool = False,
    drop_last: bool = False,
    num_workers: int | str = "auto",
    sampler: Sampler | None = None,
    generator: torch.Generator | None = None,
    persistent_workers: bool = True,
) -> DataLoader:
    """A DataLoader of ``dataset`` that keeps a GPU fed: pinned memory when CUDA is there, workers kept and ahead.

    Pinned (page-locked) batches copy to the GPU asynchronously (Lightning moves them with ``non_blocking``).
    Workers, when there are any, stay alive between epochs and each keeps :data:`PREFETCH_FACTOR` batches ready.
    Shuffling follows the seed of ``generator`` (the run's seed when None) and the epoch, and the transforms
    re-seed themselves per worker (see the module docstring). The loader is a
    :class:`~brainlearn.data.resumable.ResumableLoader`: its streams travel in checkpoints, so a resumed run draws
    what the uninterrupted one would have.

    Args:
        dataset: items to batch (dicts of tensors and metadata).
        batch_size: items per batch.
        shuffle: a new order every epoch (not with ``sampler``), drawn from the seed of ``generator`` and the epoch
            (:func:`_epoch_shuffle`).
        drop_last: leave out a last, short batch.
        num_workers: worker processes, or ``"auto"`` (:func:`resolve_num_workers`).
        sampler: draws the indices instead of ``shuffle``.
        generator: the random stream of the shuffle (and of the workers' base seed).
        persistent_workers: keep workers between epochs; False for datasets whose items change in the main
            process between epochs (:class:`~brainlearn.data.datasets.PairDataset`'s partners), so that workers
            copy them anew.

    Raises:
        BrainlearnError: a bad ``batch_size`` or ``num_workers``.
    """
    _check_batch_size(batch_size)
    workers = resolve_num_workers(num_workers)
    extra = {"persistent_workers": persistent_workers, "prefetch_factor": PREFETCH_FACTOR} if workers else {}
    if shuffle and sampler is None:
        sampler = _epoch_shuffle(dataset, generator)
    return ResumableLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        drop_last=drop_last,
        num_workers=workers,
        generator=generator,
        pin_memory=torch.cuda.is_available(),
        **extra,
    )


class EpochShuffle(RandomSampler):
    """A new order every epoch, drawn from (seed, epoch) alone: the permutation DDP splits across processes.

    The order is that of :class:`~torch.utils.data.DistributedSampler` on one process. Being a
    :class:`~torch.utils.data.RandomSampler`, Lightning swaps it for a ``DistributedSampler`` of the run's seed on
    several processes, each taking every n-th index of the same permutation, so a global batch holds the same items
    on 1 or n processes. Lightning calls :meth:`set_epoch` when each epoch starts; the order needs no saved state.
    """

    def __init__(self, data_source: Dataset, seed: int) -> None:
        super().__init__(data_source)
        self.seed, self.epoch = seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        return iter(torch.randperm(len(self.data_source), generator=generator).tolist())


def _epoch_shuffle(dataset: Dataset, generator: torch.Generator | None) -> EpochShuffle:
    # without a generator: the seed the run was seeded with (lightning.seed_everything), as Lightning's own sampler
    seed = int(os.environ.get("PL_GLOBAL_SEED", 0)) if generator is None else generator.initial_seed()
    return EpochShuffle(dataset, seed % 2**62)


def training_loaders(
    cache: Cache,
    *,
    modalities: Sequence[str],
    classes: Sequence[str],
    batch_size: int,
    downsample: int = 1,
    augment: bool = True,
    intensity: str = "zscore",
    num_workers: int | str = 0,
    seed: int = 0,
) -> tuple[DataLoader, DataLoader]:
    """Shuffled training batches (augmented) and validation batches (not), both from the cache's splits.

    Both come from :func:`make_loader` with ``num_workers`` (an integer or ``"auto"``).

    Raises:
        BrainlearnError: the cache has no ``train`` or no ``val`` rows with these diagnoses.
    """
    _check_batch_size(batch_size)
    train = VolumeDataset(
        cache,
        modalities=tuple(modalities),
        classes=tuple(classes),
        split="train",
        transform=VolumeTransform(downsample=downsample, augment=augment, intensity=intensity, seed=seed),
    )
    val = evaluation_dataset(
        cache, modalities=modalities, classes=classes, split="val", downsample=downsample, intensity=intensity
    )
    generator = torch.Generator().manual_seed(seed)
    return (
        make_loader(train, batch_size=batch_size, shuffle=True, num_workers=num_workers, generator=generator),
        make_loader(val, batch_size=batch_size, num_workers=num_workers),
    )


def evaluation_dataset(
    cache: Cache,
    *,
    modalities: Sequence[str],
    classes: Sequence[str] | None,
    split: str | None,
    downsample: int = 1,
    intensity: str = "zscore",
) -> VolumeDataset:
    """The sessions of ``split`` with diagnoses in ``classes``, prepared as at training time, never augmented."""
    return VolumeDataset(
        cache,
        modalities=tuple(modalities),
        classes=tuple(classes) if classes is not None else None,
        split=split,
        transform=VolumeTransform(downsample=downsample, intensity=intensity),
    )


def pair_loaders(
    cache: Cache,
    *,
    mri: str = "t1",
    pet: str = "pet",
    classes: Sequence[str] | None = None,
    batch_size: int,
    downsample: int = 1,
    crop: tuple[int, int, int] | None = None,
    multiple: int = 16,
    augment: bool = True,
    num_workers: int | str = 0,
    seed: int = 0,
) -> tuple[DataLoader, DataLoader]:
    """Unpaired, cropped, flipped training batches and paired, whole validation batches for synthesis (document 000).

    Batches hold ``mri`` and ``pet`` (B, 1, X, Y, Z) in [-1, 1] (X, Y, Z: ``crop``, or the padded volume) and the
    metadata of :class:`~brainlearn.data.datasets.PairDataset` items. Training gives each MRI the PET of another
    participant; call ``train.dataset.set_epoch(epoch)`` when an epoch starts to draw new partners. Workers are never
    persistent: they copy the dataset, partners included, when each epoch starts.

    Raises:
        BrainlearnError: a bad batch_size or setting, a crop larger than a padded volume, or no ``train`` or no
            ``val`` rows with these diagnoses.
    """
    _check_batch_size(batch_size)
    transform = PairTransform(
        downsample=downsample, multiple=multiple, crop=crop, augment=augment, paired=False, seed=seed
    )
    train = PairDataset(
        cache, mri=mri, pet=pet, paired=False, seed=seed, classes=classes, split="train", transform=transform
    )
    for name, modality in (("the MRI", mri), ("the PET", pet)):
        for shape in {cache.shape(row, modality) for row in train.rows}:
            transform.check_crop(transform.padded_shape(shape), name)
    val = paired_evaluation_dataset(
        cache, mri=mri, pet=pet, classes=classes, split="val", downsample=downsample, multiple=multiple
    )
    generator = torch.Generator().manual_seed(seed)
    common = {"batch_size": batch_size, "num_workers": num_workers, "persistent_workers": False}
    drop_last = len(train) >= batch_size  # no short last batch (of one, at worst), unless it is the only one
    return (
        make_loader(train, shuffle=True, drop_last=drop_last, generator=generator, **common),
        make_loader(val, **common),
    )


def paired_evaluation_dataset(
    cache: Cache,
    *,
    mri: str = "t1",
    pet: str = "pet",
    classes: Sequence[str] | None,
    split: str | None,
    downsample: int = 1,
    multiple: int = 16,
) -> PairDataset:
    """Each session's MRI with its own PET, of ``split``, scaled, downsampled and padded as for training.

    No crop and no augmentation: items are whole padded volumes; :func:`pad_to_multiple` on the downsampled size
    gives the slices that cut the session's grid back out of a synthesized volume.
    """
    transform = PairTransform(downsample=downsample, multiple=multiple, crop=None, augment=False, paired=True)
    return PairDataset(cache, mri=mri, pet=pet, paired=True, classes=classes, split=split, transform=transform)


def class_counts(dataset: VolumeDataset, classes: Sequence[str]) -> dict[str, int]:
    """Sessions per class in ``dataset`` (by its ``label``)."""
    labels = np.asarray(dataset.labels)
    return {name: int((labels == k).sum()) for k, name in enumerate(classes)}
