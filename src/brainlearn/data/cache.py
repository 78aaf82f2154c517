"""A memory-mapped store of volumes, fast to read again: :class:`Cache` opens what :func:`build_cache` wrote.

The folder layout is described in :mod:`brainlearn.data.cache_build`. A :class:`Cache` reads ``manifest.json``
and ``index.tsv`` when opened and maps each modality's data file on first use, in each process separately, so
the object pickles into DataLoader workers (fork or spawn) without carrying open memory maps.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd

from brainlearn.data.cache_build import FORMAT_VERSION, INDEX, MANIFEST, PLAN, CacheReport, build_cache
from brainlearn.errors import CacheMismatchError

__all__ = ["Cache", "CacheReport", "build_cache"]


class Cache:
    """A finished cache, opened for reading; volumes come out of memory maps without copying the file.

    Args:
        path: a folder written by :func:`build_cache`.

    Attributes:
        index: one row per session (participant_id, session_id, diagnosis, age, sex, site, split, ...).
        modalities: the cached image columns, such as ``("t1", "mask")``.
        canonical: whether volumes were reoriented to RAS+.
        skipped: (participant_id, session_id, reason) of each table row left out of the cache.

    Raises:
        CacheMismatchError: the folder holds no finished cache, or one of an unknown format version.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        try:
            manifest = json.loads((self.path / MANIFEST).read_text(encoding="utf-8"))
        except FileNotFoundError:
            unfinished = (self.path / PLAN).exists() or any(self.path.glob("*.bin"))
            state = "unfinished: rerun brainlearn cache to complete it" if unfinished else "no cache here"
            state += " (no manifest.json)"
            raise CacheMismatchError(f"{self.path}: {state}.") from None
        if manifest.get("format_version") != FORMAT_VERSION:
            raise CacheMismatchError(
                f"{self.path}: cache format version {manifest.get('format_version')}, this brainlearn reads "
                f"version {FORMAT_VERSION}. Rebuild it with brainlearn cache --overwrite."
            )
        self.modalities = tuple(manifest["modalities"])
        self.canonical = bool(manifest["canonical"])
        self.skipped = [tuple(entry) for entry in manifest["skipped"]]
        self._dtypes = {m: np.dtype(manifest["dtypes"][m]) for m in self.modalities}
        self.index = _read_index(self.path / INDEX, self.modalities)
        self._offsets = {m: self.index[f"{m}_offset"].to_numpy(np.int64) for m in self.modalities}
        self._shapes = {m: [tuple(json.loads(s)) for s in self.index[f"{m}_shape"]] for m in self.modalities}
        self._slopes = {m: self.index[f"{m}_slope"].to_numpy(np.float32) for m in self.modalities}
        self._inters = {m: self.index[f"{m}_inter"].to_numpy(np.float32) for m in self.modalities}
        self._maps: dict[str, np.memmap] = {}
        self._pid = os.getpid()
        self._check_data_files()

    def __len__(self) -> int:
        return len(self.index)

    def __repr__(self) -> str:
        return f"Cache({str(self.path)!r}, {len(self)} sessions, modalities={self.modalities})"

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_maps"] = {}  # memory maps are reopened in the process that unpickles
        return state

    def _check_data_files(self) -> None:
        for m in self.modalities:
            path = self.path / f"{m}.bin"
            ends = [int(o) + int(np.prod(s)) for o, s in zip(self._offsets[m], self._shapes[m], strict=True)]
            needed = max(ends, default=0) * self._dtypes[m].itemsize
            size = path.stat().st_size if path.is_file() else 0
            if size < needed:
                raise CacheMismatchError(
                    f"{path}: {size:,} bytes, the index needs {needed:,}; the cache is incomplete (copied "
                    "partly?). Rebuild it with brainlearn cache --overwrite."
                )

    def check_modalities(self, modalities) -> None:
        """Raise :class:`CacheMismatchError` unless every one of ``modalities`` is cached."""
        missing = [m for m in modalities if m not in self.modalities]
        if missing:
            raise CacheMismatchError(
                f"{self.path}: the cache has no {', '.join(missing)}; it holds {', '.join(self.modalities)}. "
                f"Rebuild it with brainlearn cache --modalities including {', '.join(missing)}."
            )

    def shape(self, i: int, modality: str) -> tuple[int, int, int]:
        """Shape (X, Y, Z) of session ``i``'s ``modality`` volume."""
        self._check(modality)
        return self._shapes[modality][i]

    def affine(self, i: int, modality: str) -> np.ndarray:
        """The (4, 4) voxel-to-world matrix (mm) of session ``i``'s ``modality`` volume."""
        self._check(modality)
        return np.array(json.loads(self.index[f"{modality}_affine"].iat[i]), dtype=np.float64).reshape(4, 4)

    def read(self, i: int, modality: str) -> np.ndarray:
        """Session ``i``'s volume, shape (X, Y, Z): float32 values, or uint8 labels for ``"mask"``."""
        return self._decode(self._stored(i, modality)[...], i, modality)

    def read_slice(self, i: int, modality: str, axis: int, k: int) -> np.ndarray:
        """Slice ``k`` along ``axis`` of session ``i``'s volume (only that slice is read from the map)."""
        return self._decode(np.take(self._stored(i, modality), k, axis=axis), i, modality)

    def _check(self, modality: str) -> None:
        if modality not in self._offsets:
            self.check_modalities((modality,))

    def _stored(self, i: int, modality: str) -> np.ndarray:
        self._check(modality)
        if self._pid != os.getpid():  # forked: open our own maps
            self._maps, self._pid = {}, os.getpid()
        if modality not in self._maps:
            self._maps[modality] = np.memmap(self.path / f"{modality}.bin", self._dtypes[modality], mode="r")
        shape = self._shapes[modality][i]
        start = int(self._offsets[modality][i])
        return self._maps[modality][start : start + int(np.prod(shape))].reshape(shape)  # (X, Y, Z) view

    def _decode(self, stored: np.ndarray, i: int, modality: str) -> np.ndarray:
        if modality == "mask":
            return np.array(stored, dtype=np.uint8)
        values = np.array(stored, dtype=np.float32)
        if self._dtypes[modality] == np.uint8:
            values *= self._slopes[modality][i]
            values += self._inters[modality][i]
        return values


def _read_index(path: Path, modalities) -> pd.DataFrame:
    index = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)
    for column in ("participant_id", "session_id", "diagnosis", "sex", "site", "split"):
        index[column] = index[column].astype(object).where(index[column] != "", None)
    index["age"] = pd.to_numeric(index["age"], errors="coerce").astype(np.float64)
    for m in modalities:
        index[f"{m}_offset"] = index[f"{m}_offset"].astype(np.int64)
        index[f"{m}_slope"] = index[f"{m}_slope"].astype(np.float64)
        index[f"{m}_inter"] = index[f"{m}_inter"].astype(np.float64)
    return index
