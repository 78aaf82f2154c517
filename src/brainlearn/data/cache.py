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

from brainlearn.data.cache_build import (
    DTYPES,
    FORMAT_VERSION,
    INDEX,
    INDEX_FIELDS,
    MANIFEST,
    META_COLUMNS,
    PLAN,
    CacheReport,
    build_cache,
)
from brainlearn.data.tables import IMAGE_COLUMNS
from brainlearn.errors import CacheMismatchError, quoted
from brainlearn.io import MAX_VOXELS

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
        manifest = _read_manifest(self.path)
        self.modalities = tuple(manifest["modalities"])
        self.canonical = manifest["canonical"]
        self.skipped = [tuple(entry) for entry in manifest["skipped"]]
        self._dtypes = {m: np.dtype(manifest["dtypes"][m]) for m in self.modalities}
        self.index = _read_index(self.path / INDEX, self.modalities)
        if len(self.index) != manifest["n_volumes"]:
            raise _damaged(self.path / INDEX, f"{len(self.index)} sessions, manifest.json says {manifest['n_volumes']}")
        volumes = {m: _volume_columns(self.path / INDEX, self.index, m) for m in self.modalities}
        for m in self.modalities:
            self.index[f"{m}_offset"] = volumes[m][0]
        self._offsets = {m: volumes[m][0] for m in self.modalities}
        self._shapes = {m: volumes[m][1] for m in self.modalities}
        self._affines = {m: volumes[m][2] for m in self.modalities}
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
        return self._affines[modality][i].copy()

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


def _is_text_list(value, length: int | None = None) -> bool:
    return (
        isinstance(value, list)
        and all(isinstance(item, str) for item in value)
        and (length is None or len(value) == length)
    )


# The manifest fields a Cache uses, each with its test (given the value and the whole manifest).
_MANIFEST_CHECKS = {
    "modalities": lambda value, _: (
        _is_text_list(value) and len(value) > 0 and len(set(value)) == len(value) and set(value) <= set(IMAGE_COLUMNS)
    ),
    "dtypes": lambda value, manifest: (
        isinstance(value, dict)
        and all(value.get(m) in (("uint8",) if m == "mask" else DTYPES) for m in manifest["modalities"])
    ),
    "canonical": lambda value, _: isinstance(value, bool),
    "n_volumes": lambda value, _: type(value) is int and value >= 0,
    "skipped": lambda value, _: isinstance(value, list) and all(_is_text_list(entry, 3) for entry in value),
}


def _read_manifest(folder: Path) -> dict:
    """``manifest.json``, checked field by field: a damaged one is refused before any volume is mapped."""
    path = folder / MANIFEST
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        unfinished = (folder / PLAN).exists() or any(folder.glob("*.bin"))
        state = "unfinished: rerun brainlearn cache to complete it" if unfinished else "no cache here"
        raise CacheMismatchError(f"{folder}: {state} (no manifest.json).") from None
    except (OSError, ValueError, RecursionError) as error:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise _damaged(path, f"not readable as JSON ({error})") from error
    if not isinstance(manifest, dict):
        raise _damaged(path, f"holds a {type(manifest).__name__}, expected a JSON object")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise CacheMismatchError(
            f"{folder}: cache format version {quoted(manifest.get('format_version'))}, this brainlearn reads "
            f"version {FORMAT_VERSION}. Rebuild it with brainlearn cache --overwrite."
        )
    for key, valid in _MANIFEST_CHECKS.items():  # in order: dtypes is checked against valid modalities
        if not valid(manifest.get(key), manifest):
            raise _damaged(path, f"its {key} is {quoted(manifest.get(key))}")
    return manifest


def _read_index(path: Path, modalities) -> pd.DataFrame:
    """``index.tsv`` with its table columns typed; the volume columns are checked by :func:`_volume_columns`."""
    try:
        index = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)
    except (OSError, ValueError) as error:  # pandas' ParserError and EmptyDataError are ValueErrors
        raise _damaged(path, f"not readable as a table ({_first_line(error)})") from error
    needed = [*META_COLUMNS, *(f"{m}_{field}" for m in modalities for field in INDEX_FIELDS)]
    missing = [column for column in needed if column not in index.columns]
    if missing:
        raise _damaged(path, f"no column {', '.join(missing[:3])}{' ...' if len(missing) > 3 else ''}")
    for column in ("participant_id", "session_id", "diagnosis", "sex", "site", "split"):
        index[column] = index[column].astype(object).where(index[column] != "", None)
    index["age"] = pd.to_numeric(index["age"], errors="coerce").astype(np.float64)
    for m in modalities:
        for field in ("slope", "inter"):
            values = pd.to_numeric(index[f"{m}_{field}"], errors="coerce").astype(np.float64)
            bad = ~np.isfinite(values.to_numpy())
            if bad.any():
                row = int(np.argmax(bad))
                raise _damaged(path, f"row {row + 1}, column {m}_{field}: {quoted(index[f'{m}_{field}'].iat[row])}")
            index[f"{m}_{field}"] = values
    return index


def _volume_columns(path: Path, index: pd.DataFrame, m: str) -> tuple[np.ndarray, list, list]:
    """Offsets (elements), shapes and (4, 4) affines of modality ``m``, each checked: a damaged value is refused
    here rather than mapping the wrong bytes or failing later in a DataLoader worker."""
    offsets, shapes, affines = [], [], []
    for row, (offset, shape, affine) in enumerate(
        zip(index[f"{m}_offset"], index[f"{m}_shape"], index[f"{m}_affine"], strict=True), start=1
    ):
        where = f"row {row}, column {m}_"
        if not offset.isascii() or not offset.isdigit() or len(offset) > 15:
            raise _damaged(path, f"{where}offset: {quoted(offset)} is not an element offset")
        shape = _json_numbers(shape)
        if shape is None or shape.shape != (3,) or (shape != np.rint(shape)).any() or not (shape >= 1).all():
            raise _damaged(path, f"{where}shape: {quoted(index[f'{m}_shape'].iat[row - 1])} is not 3 sizes")
        if np.prod(shape) > MAX_VOXELS:
            raise _damaged(path, f"{where}shape: {tuple(shape.astype(int))} is more than {MAX_VOXELS:,} voxels")
        matrix = _json_numbers(affine)
        if matrix is None or matrix.size != 16 or not np.isfinite(matrix).all():
            raise _damaged(path, f"{where}affine: {quoted(affine)} is not 16 finite numbers")
        matrix = matrix.reshape(4, 4)
        if abs(np.linalg.det(matrix[:3, :3])) < 1e-6 or not np.array_equal(matrix[3], [0, 0, 0, 1]):
            raise _damaged(path, f"{where}affine: {quoted(affine)} is not an invertible voxel-to-world matrix")
        offsets.append(int(offset))
        shapes.append(tuple(int(n) for n in shape))
        affines.append(matrix)
    return np.array(offsets, dtype=np.int64), shapes, affines


def _json_numbers(text: str) -> np.ndarray | None:
    """A JSON (nested) list of numbers as a float array, or None."""
    try:
        array = np.array(json.loads(text), dtype=np.float64)
    except (ValueError, TypeError, RecursionError):
        return None
    return array.ravel() if array.ndim in (1, 2) else None


def _damaged(path: Path, problem: str) -> CacheMismatchError:
    return CacheMismatchError(
        f"{path}: {problem}; the cache is damaged (edited or partly copied?). Rebuild it with brainlearn cache "
        "--overwrite."
    )


def _first_line(error: BaseException) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0]
