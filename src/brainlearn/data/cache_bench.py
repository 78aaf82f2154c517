"""How fast the data path runs: a cache against the NIfTI files it was built from, and the training loaders.

``brainlearn bench --method cache-read`` prints what :func:`benchmark_cache_read` returns;
:func:`benchmark_loader` measures the volumes per second that :func:`~brainlearn.data.loaders.make_loader`
delivers to the device, to set beside what a model consumes.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator

import pandas as pd
import torch
from torch.utils.data import Dataset

from brainlearn.data.cache import Cache
from brainlearn.data.loaders import make_loader
from brainlearn.errors import BrainlearnError
from brainlearn.io import read_image

logger = logging.getLogger(__name__)


def benchmark_cache_read(table: pd.DataFrame, cache: Cache, *, modality: str = "t1", repeats: int = 3) -> dict:
    """Time reading every cached volume from its source file and from the cache, best of ``repeats`` passes.

    The direct path is :func:`brainlearn.io.read_image` with ``canonical=True``; the cached path is
    :meth:`Cache.read` turned into a float32 torch tensor (X, Y, Z). Both read the same sessions: those of
    ``table`` that the cache holds. The first pass of each warms the operating system's file cache, so the
    best pass measures decoding and copying, not the disk.

    Args:
        table: the participants table the cache was built from.
        cache: the opened cache.
        modality: which modality to read.
        repeats: passes over all volumes per path (>= 1).

    Returns:
        ``modality``, ``n_volumes``, ``repeats``, ``direct_volumes_per_s``, ``cache_volumes_per_s`` and
        ``ratio`` (cache / direct).

    Raises:
        BrainlearnError: ``repeats`` < 1, or no session of ``table`` is in the cache.
        CacheMismatchError: ``modality`` is not cached.
    """
    if not isinstance(repeats, int) or repeats < 1:
        raise BrainlearnError(f"repeats must be an integer >= 1, not {repeats!r}.")
    cache.check_modalities((modality,))
    paths, positions = _shared_sessions(table, cache, modality)

    def direct() -> None:
        for path in paths:
            read_image(path, canonical=True)

    def cached() -> None:
        for i in positions:
            torch.from_numpy(cache.read(i, modality))

    direct_rate = len(paths) / _best_seconds(direct, repeats)
    cache_rate = len(positions) / _best_seconds(cached, repeats)
    result = {
        "modality": modality,
        "n_volumes": len(paths),
        "repeats": repeats,
        "direct_volumes_per_s": direct_rate,
        "cache_volumes_per_s": cache_rate,
        "ratio": cache_rate / direct_rate,
    }
    logger.debug("cache read: %.1f volumes/s vs %.1f direct (×%.1f)", cache_rate, direct_rate, result["ratio"])
    return result


def benchmark_loader(
    dataset: Dataset,
    *,
    batch_size: int,
    num_workers: int | str = "auto",
    batches: int = 20,
    shuffle: bool = True,
) -> dict:
    """Time the batches that :func:`make_loader` delivers onto the training device, after a warm-up batch.

    The first batch (worker start-up, first reads) is timed on its own as ``startup_s``; ``seconds`` covers the
    next ``batches`` batches, each copied to the GPU (``non_blocking``, from pinned memory) when CUDA is there and
    the copies waited for at the end. A dataset of fewer batches is iterated again: epoch boundaries count, as in
    training (with workers, they are kept between epochs).

    Args:
        dataset: the training items, prepared as at training time (e.g. a VolumeDataset with its transform).
        batch_size: items per batch.
        num_workers: worker processes or ``"auto"``, as the training config's.
        batches: batches timed after the warm-up one (>= 1).
        shuffle: read in a random order, as training does.

    Returns:
        ``volumes_per_s`` (items per second: one item is a session's volume, or an MRI–PET pair), ``volumes``,
        ``batches``, ``seconds``, ``startup_s``, ``workers`` (resolved), ``pinned`` and ``device``.

    Raises:
        BrainlearnError: ``batches`` < 1, an empty dataset, or a bad ``batch_size`` or ``num_workers``.
    """
    if isinstance(batches, bool) or not isinstance(batches, int) or batches < 1:
        raise BrainlearnError(f"batches must be an integer >= 1, not {batches!r}.")
    if len(dataset) == 0:
        raise BrainlearnError("benchmark_loader got an empty dataset; give it the training items.")
    loader = make_loader(dataset, batch_size=batch_size, shuffle=shuffle, num_workers=num_workers)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    stream = _endless(loader)
    start = time.perf_counter()
    _to_device(next(stream), device)
    _synchronize(device)
    startup = time.perf_counter() - start
    volumes, start = 0, time.perf_counter()
    for _ in range(batches):
        volumes += _batch_length(_to_device(next(stream), device))
    _synchronize(device)
    seconds = max(time.perf_counter() - start, 1e-9)
    result = {
        "volumes_per_s": volumes / seconds,
        "volumes": volumes,
        "batches": batches,
        "seconds": seconds,
        "startup_s": startup,
        "workers": loader.num_workers,
        "pinned": loader.pin_memory,
        "device": device.type,
    }
    stream.close()  # ends the epoch in progress; the workers stop with the loader
    logger.debug("loader: %.1f volumes/s, %d workers, start-up %.2f s", volumes / seconds, loader.num_workers, startup)
    return result


def _endless(loader) -> Iterator:
    while True:
        yield from loader


def _to_device(batch, device: torch.device):
    """``batch`` with every tensor on ``device``, copied asynchronously (pinned memory makes that possible)."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {key: _to_device(value, device) for key, value in batch.items()}
    if isinstance(batch, list | tuple):
        return type(batch)(_to_device(value, device) for value in batch)
    return batch


def _batch_length(batch) -> int:
    """Items in a collated batch: the first dimension of its first tensor."""
    tensor = next(_tensors(batch), None)
    if tensor is None:
        raise BrainlearnError(f"cannot count the items of a batch without a tensor ({type(batch).__name__}).")
    return len(tensor)


def _tensors(batch) -> Iterator[torch.Tensor]:
    if isinstance(batch, torch.Tensor):
        yield batch
    elif isinstance(batch, dict | list | tuple):
        for value in batch.values() if isinstance(batch, dict) else batch:
            yield from _tensors(value)


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _shared_sessions(table: pd.DataFrame, cache: Cache, modality: str) -> tuple[list[str], list[int]]:
    """Source paths in ``table`` and positions in ``cache`` of the sessions both hold."""
    index = cache.index
    positions = {key: i for i, key in enumerate(zip(index["participant_id"], index["session_id"], strict=True))}
    paths, rows = [], []
    for record in table.to_dict("records"):
        key = (str(record["participant_id"]), str(record["session_id"]))
        path = record.get(modality)
        if key in positions and isinstance(path, str) and path:
            paths.append(path)
            rows.append(positions[key])
    if not paths:
        raise BrainlearnError(
            f"{cache.path}: none of the table's sessions with a {modality} image is in the cache. "
            "Benchmark with the table the cache was built from."
        )
    return paths, rows


def _best_seconds(run: Callable[[], None], repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - start)
    return max(best, 1e-9)
