"""How much faster a cache reads than the NIfTI files it was built from, measured in one run.

``brainlearn bench --method cache-read`` prints what :func:`benchmark_cache_read` returns.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import pandas as pd
import torch

from brainlearn.data.cache import Cache
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
