"""Torch datasets over a :class:`~brainlearn.data.cache.Cache`; every item is a dict (the batch contract).

Every item holds ``label`` (index of the diagnosis in ``classes``; -1 when missing or ``classes`` is None),
``age`` (years, NaN when missing), ``participant_id`` and ``session_id``, plus the images of its dataset:

- :class:`VolumeDataset`: ``image`` (C, D, H, W), the chosen modalities stacked as channels;
- :class:`SliceDataset`: ``image`` (C, H, W), one slice, and ``slice_index``;
- :class:`ImageMaskDataset`: ``image`` (C, D, H, W) and ``mask`` (1, D, H, W);
- :class:`PairDataset`: ``mri`` and ``pet`` (1, D, H, W), paired or drawn unpaired (document 000).

(D, H, W) are the cache's array axes (X, Y, Z), RAS+ when the cache is canonical. Datasets pickle without open
memory maps, so they work in DataLoader workers.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch.utils.data import Dataset

from brainlearn.data.cache import Cache
from brainlearn.errors import BrainlearnError

Transform = Callable[[dict], dict]


class _CacheDataset(Dataset):
    """Rows of a cache filtered by split and diagnosis, with the per-item metadata of the batch contract.

    Attributes:
        rows: the cache rows of the items, in item order.
        ids: (participant_id, session_id) of each item.
        labels: each item's class index in ``classes`` (-1 without classes).
        ages: each item's age in years (NaN where unknown).
    """

    def __init__(self, cache: Cache, modalities, split, classes, transform, *, same_shape: bool = True):
        if not isinstance(cache, Cache):
            raise BrainlearnError(f"cache must be a brainlearn Cache (Cache(path)), not {type(cache).__name__}.")
        modalities = (modalities,) if isinstance(modalities, str) else tuple(modalities)
        if not modalities:
            raise BrainlearnError(f"modalities must name at least one of {cache.modalities}, not {modalities}.")
        cache.check_modalities(modalities)
        if classes is not None:
            classes = (classes,) if isinstance(classes, str) else tuple(classes)
            if not classes or len(set(classes)) != len(classes):
                raise BrainlearnError(f"classes must be distinct diagnoses such as ('CN', 'AD'), not {classes}.")
        self.cache, self.modalities, self.classes = cache, modalities, classes
        self.split, self.transform = split, transform
        self.rows = _select_rows(cache, split, classes)
        if same_shape:
            _check_same_shapes(cache, self.rows, modalities)
        index = cache.index.iloc[self.rows]
        self.labels = [_label(d, classes) for d in index["diagnosis"]]
        self.ages = index["age"].to_numpy(np.float64)
        self.ids = list(zip(index["participant_id"], index["session_id"], strict=True))

    def __len__(self) -> int:
        return len(self.rows)

    def _meta(self, i: int) -> dict:
        participant_id, session_id = self.ids[i]
        return {
            "label": self.labels[i],
            "age": float(self.ages[i]),
            "participant_id": participant_id,
            "session_id": session_id,
        }

    def _volume(self, row: int, modalities) -> torch.Tensor:
        return torch.from_numpy(np.stack([self.cache.read(row, m) for m in modalities]).astype(np.float32))

    def _finish(self, item: dict) -> dict:
        return self.transform(item) if self.transform is not None else item


def _select_rows(cache: Cache, split: str | None, classes: tuple[str, ...] | None) -> list[int]:
    index = cache.index
    keep = np.ones(len(index), dtype=bool)
    if split is not None:
        keep &= (index["split"] == split).to_numpy(dtype=bool, na_value=False)
    if classes is not None:
        keep &= index["diagnosis"].isin(classes).to_numpy(dtype=bool)
    if not keep.any():
        splits = index["split"].value_counts(dropna=False).to_dict()
        diagnoses = index["diagnosis"].value_counts(dropna=False).to_dict()
        raise BrainlearnError(
            f"{cache.path}: no session left with split={split!r} and classes={classes}; the cache holds "
            f"splits {splits} and diagnoses {diagnoses}. Pick another split or classes, or check the table's "
            "split and diagnosis columns."
        )
    return np.flatnonzero(keep).tolist()


def _check_same_shapes(cache: Cache, rows: list[int], modalities) -> None:
    for row in rows:
        shapes = {m: cache.shape(row, m) for m in modalities}
        if len(set(shapes.values())) > 1:
            participant_id, session_id = cache.index.iloc[row][["participant_id", "session_id"]]
            raise BrainlearnError(
                f"{cache.path}: participant {participant_id} session {session_id} has volumes of different "
                f"shapes {shapes}; channels must share a grid. Resample them onto one grid (brainlearn "
                "preprocess) or use one modality per dataset."
            )


def _label(diagnosis, classes: tuple[str, ...] | None) -> int:
    return classes.index(diagnosis) if classes is not None and diagnosis in classes else -1


class VolumeDataset(_CacheDataset):
    """Whole volumes, modalities stacked as channels: ``image`` (C, D, H, W) float32.

    Args:
        cache: an opened cache.
        modalities: cached modalities to stack as channels, in this order.
        classes: diagnoses kept, in label order (``label`` = position); None keeps every row with label -1.
        split: keep only rows of this split (``"train"``, ``"val"``, ``"test"``); None keeps all.
        transform: called on each item dict, returns the dict to yield.

    Raises:
        CacheMismatchError: a modality is not in the cache.
        BrainlearnError: nothing is left after filtering, or the channels' shapes differ.
    """

    def __init__(
        self,
        cache: Cache,
        *,
        modalities: tuple[str, ...] = ("t1",),
        classes: tuple[str, ...] | None = ("CN", "AD"),
        split: str | None = None,
        transform: Transform | None = None,
    ):
        super().__init__(cache, modalities, split, classes, transform)

    def __getitem__(self, i: int) -> dict:
        return self._finish({"image": self._volume(self.rows[i], self.modalities), **self._meta(i)})


class SliceDataset(_CacheDataset):
    """One item per (volume, slice): ``image`` (C, H, W) float32 and ``slice_index``; only the slice is read.

    Args:
        cache: an opened cache.
        modalities: cached modalities to stack as channels.
        axis: array axis to slice along (2 is axial in a canonical RAS+ cache).
        slice_range: (start, stop) slices kept per volume, as indices or as fractions in [0, 1] of its size
            along ``axis`` (``(0.2, 0.8)`` drops the outer fifths); None keeps all.
        classes, split, transform: as for :class:`VolumeDataset`.
    """

    def __init__(
        self,
        cache: Cache,
        *,
        modalities: tuple[str, ...] = ("t1",),
        axis: int = 2,
        slice_range: tuple[float, float] | None = None,
        classes: tuple[str, ...] | None = ("CN", "AD"),
        split: str | None = None,
        transform: Transform | None = None,
    ):
        if axis not in (0, 1, 2):
            raise BrainlearnError(f"axis must be 0, 1 or 2 (an array axis of the volume), not {axis!r}.")
        _check_slice_range(slice_range)
        super().__init__(cache, modalities, split, classes, transform)
        self.axis, self.slice_range = axis, slice_range
        items = []
        for i, row in enumerate(self.rows):
            start, stop = _slice_bounds(cache.shape(row, self.modalities[0])[axis], slice_range)
            items.extend((i, k) for k in range(start, stop))
        if not items:
            raise BrainlearnError(f"{cache.path}: slice_range={slice_range} keeps no slice of any volume.")
        self.items = np.array(items, dtype=np.int64)  # (N, 2): position in self.rows, slice index

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict:
        position, k = (int(v) for v in self.items[i])
        row = self.rows[position]
        slices = [self.cache.read_slice(row, m, self.axis, k) for m in self.modalities]
        image = torch.from_numpy(np.stack(slices).astype(np.float32))  # (C, H, W)
        return self._finish({"image": image, "slice_index": k, **self._meta(position)})


def _check_slice_range(slice_range) -> None:
    if slice_range is None:
        return
    fractions = any(isinstance(v, float) for v in slice_range) if isinstance(slice_range, tuple | list) else False
    valid = isinstance(slice_range, tuple | list) and len(slice_range) == 2 and 0 <= slice_range[0] < slice_range[1]
    if not valid or (fractions and slice_range[1] > 1):
        raise BrainlearnError(
            "slice_range must be (start, stop) with 0 <= start < stop, as slice indices (40, 120) or as "
            f"fractions of the volume (0.2, 0.8), not {slice_range!r}."
        )


def _slice_bounds(n: int, slice_range) -> tuple[int, int]:
    if slice_range is None:
        return 0, n
    start, stop = slice_range
    if isinstance(start, float) or isinstance(stop, float):
        return round(start * n), round(stop * n)
    return min(start, n), min(stop, n)


class ImageMaskDataset(_CacheDataset):
    """Images with their label map for segmentation: ``image`` (C, D, H, W) and ``mask`` (1, D, H, W) float32.

    ``label`` is -1 (no diagnosis filter). The cache must hold ``"mask"``; it was checked at build time to lie
    on the grid of the first image modality.

    Args:
        cache: an opened cache with a ``"mask"`` modality.
        modalities: image modalities stacked as channels.
        split, transform: as for :class:`VolumeDataset`.
    """

    def __init__(
        self,
        cache: Cache,
        *,
        modalities: tuple[str, ...] = ("t1", "t2", "flair"),
        split: str | None = None,
        transform: Transform | None = None,
    ):
        modalities = (modalities,) if isinstance(modalities, str) else tuple(modalities)
        if "mask" in modalities:
            raise BrainlearnError(f"modalities are the image channels; leave 'mask' out of {modalities}.")
        cache.check_modalities((*modalities, "mask"))
        super().__init__(cache, (*modalities, "mask"), split, None, transform)
        self.modalities = modalities

    def __getitem__(self, i: int) -> dict:
        row = self.rows[i]
        image, mask = self._volume(row, self.modalities), self._volume(row, ("mask",))
        return self._finish({"image": image, "mask": mask, **self._meta(i)})


class PairDataset(_CacheDataset):
    """MRI with PET, paired (same session) or unpaired as in document 000's synthesis training.

    Items: ``mri`` and ``pet`` (1, D, H, W) float32, ``label``/``age``/``participant_id``/``session_id`` of
    the MRI's session, and ``pet_participant_id``/``pet_session_id`` of the PET's. Unpaired, each MRI gets the
    PET of a random session of another participant (among the same filtered rows; the same one only when
    no other exists), drawn by a generator seeded with (seed, epoch): same seed and epoch, same partners.

    Call :meth:`set_epoch` before each epoch to draw new partners. DataLoader workers copy the dataset when an
    epoch starts, so this works with ``persistent_workers=False`` (the default) only.

    Args:
        cache: an opened cache holding both modalities.
        mri: the MRI modality.
        pet: the PET modality.
        paired: take the PET of the same session; False draws partners.
        seed: seed of the partner draw (an integer >= 0).
        classes, split, transform: as for :class:`VolumeDataset`.
    """

    def __init__(
        self,
        cache: Cache,
        *,
        mri: str = "t1",
        pet: str = "pet",
        paired: bool = True,
        seed: int = 0,
        classes: tuple[str, ...] | None = ("CN", "AD"),
        split: str | None = None,
        transform: Transform | None = None,
    ):
        if not isinstance(seed, int) or seed < 0:
            raise BrainlearnError(f"seed must be an integer >= 0, not {seed!r}.")
        super().__init__(cache, (mri, pet), split, classes, transform, same_shape=False)
        self.mri, self.pet, self.paired, self.seed = mri, pet, paired, seed
        self._participants = np.array([participant_id for participant_id, _ in self.ids], dtype=object)
        self.set_epoch(0)

    def set_epoch(self, epoch: int) -> None:
        """Draw the partners of ``epoch`` (unpaired); paired datasets keep each session's own PET."""
        self.epoch = epoch
        if self.paired:
            self.partners = np.arange(len(self.rows))
        else:
            self.partners = _draw_partners(self._participants, np.random.default_rng([self.seed, epoch]))

    def __getitem__(self, i: int) -> dict:
        partner = int(self.partners[i])
        mri = self._volume(self.rows[i], (self.mri,))
        pet = self._volume(self.rows[partner], (self.pet,))
        pet_participant_id, pet_session_id = self.ids[partner]
        item = {"mri": mri, "pet": pet, **self._meta(i)}
        return self._finish(item | {"pet_participant_id": pet_participant_id, "pet_session_id": pet_session_id})


def _draw_partners(participants: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A random partner position for each position, of another participant where one exists."""
    n = len(participants)
    partners = rng.integers(n, size=n)
    for _ in range(32):  # redraw clashes; a few rounds suffice unless one participant holds most sessions
        clash = np.flatnonzero(participants[partners] == participants)
        if clash.size == 0:
            return partners
        partners[clash] = rng.integers(n, size=clash.size)
    for i in np.flatnonzero(participants[partners] == participants):
        others = np.flatnonzero(participants != participants[i])
        if others.size:
            partners[i] = rng.choice(others)
    return partners
