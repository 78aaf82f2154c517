"""Building a memory-mapped cache of volumes: read every scan once, resumably, and never half-write one.

Layout of a cache folder::

    <modality>.bin   one flat array per modality (float16, or uint8 for ``dtype="uint8"`` and for masks);
                     each volume at an element offset, in C order with shape (X, Y, Z)
    index.tsv        one row per cached session: participant_id, session_id, diagnosis, age, sex, site, split,
                     and per modality ``<m>_offset`` (elements), ``<m>_shape`` and ``<m>_affine`` (JSON),
                     ``<m>_slope`` / ``<m>_inter`` (value = inter + slope · stored) and ``<m>_source``
    manifest.json    format version, dtypes, modalities, canonical flag, counts, skipped sessions, plan hash;
                     written last, so a folder without it is an unfinished cache
    plan.json, progress.jsonl
                     while building only: the plan hash and the journal of finished sessions (for resuming)

The build plans from image headers alone, preallocates the data files, then fills them one session at a time;
each finished session is flushed to disk before its journal line is written, so an interrupted build resumes
where it stopped. This module writes caches; :class:`brainlearn.data.cache.Cache` reads them.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from brainlearn.atomic import atomic_path, write_json
from brainlearn.errors import BrainlearnError, CacheMismatchError
from brainlearn.io import NPY_AFFINE, header_shape, read_image, read_mask

try:
    from brainlearn.data.tables import IMAGE_COLUMNS
except ImportError:  # tables.py is written in parallel; same contract
    IMAGE_COLUMNS = ("t1", "t2", "flair", "pet", "mask")

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
MANIFEST, INDEX, PLAN, JOURNAL = "manifest.json", "index.tsv", "plan.json", "progress.jsonl"
META_COLUMNS = ("participant_id", "session_id", "diagnosis", "age", "sex", "site", "split")
INDEX_FIELDS = ("offset", "shape", "slope", "inter", "affine", "source")  # per modality: <m>_offset, ...
DTYPES = ("float16", "uint8")
FLOAT16_MAX = float(np.finfo(np.float16).max)


@dataclass
class CacheReport:
    """What :func:`build_cache` did.

    Attributes:
        n_volumes: sessions in the index, each with every requested modality.
        n_skipped: sessions left out.
        skipped: (participant_id, session_id, reason) of each session left out.
        bytes_written: bytes of voxel data written by this run (0 when the cache was already up to date).
        seconds: wall-clock time of this run.
    """

    n_volumes: int
    n_skipped: int
    skipped: list[tuple[str, str, str]] = field(default_factory=list)
    bytes_written: int = 0
    seconds: float = 0.0


@dataclass
class _Row:
    """One session of the plan: its table values and, per modality, source path, shape and element offset."""

    meta: dict
    sources: dict[str, str]
    shapes: dict[str, tuple[int, int, int]] = field(default_factory=dict)
    offsets: dict[str, int] = field(default_factory=dict)
    reason: str | None = None

    @property
    def key(self) -> tuple[str, str]:
        return self.meta["participant_id"], self.meta["session_id"]


def build_cache(
    table: pd.DataFrame,
    out_dir: str | os.PathLike,
    *,
    modalities: tuple[str, ...] = ("t1",),
    dtype: str = "float16",
    canonical: bool = True,
    progress: bool = True,
    overwrite: bool = False,
) -> CacheReport:
    """Read every session of ``table`` once into a memory-mapped cache at ``out_dir`` (resumable).

    Args:
        table: participants table (``brainlearn.data.tables`` contract), one row per session.
        out_dir: the cache folder; created if needed.
        modalities: image columns to cache; a session missing any of them is skipped.
        dtype: ``"float16"`` stores values as fp16; ``"uint8"`` stores per-volume min-max quantized bytes
            (value ≈ inter + slope · q, error at most slope / 2). Masks are always exact uint8 labels.
        canonical: reorient every volume to RAS+ first (the affine in the index follows).
        progress: show a progress bar.
        overwrite: rebuild a finished cache that was built from another table or settings.

    Returns:
        What was cached and what was skipped, and why.

    Raises:
        BrainlearnError: for bad arguments or a table without the needed columns.
        CacheMismatchError: ``out_dir`` holds a finished cache of another plan and ``overwrite`` is False.
    """
    start = time.perf_counter()
    out_dir = Path(out_dir)
    modalities = _checked_settings(table, modalities, dtype)
    plan_hash = _plan_hash(table, modalities, dtype, canonical)
    manifest = _read_json(out_dir / MANIFEST)
    if manifest is not None and manifest.get("plan_hash") == plan_hash and not overwrite:
        _refresh_metadata(out_dir, table)
        logger.info("%s: already up to date (%d sessions)", out_dir, manifest["n_volumes"])
        skipped = [tuple(s) for s in manifest["skipped"]]
        return CacheReport(manifest["n_volumes"], len(skipped), skipped, 0, time.perf_counter() - start)
    if manifest is not None and not overwrite:
        raise CacheMismatchError(
            f"{out_dir}: holds a finished cache built from another table or settings (dtype, modalities, "
            "canonical, or changed image files). Pass a new --out, delete the folder, or rebuild it with "
            "overwrite=True (--overwrite)."
        )
    rows = _plan(table, modalities, canonical)
    sizes = _assign_offsets(rows, modalities)
    journal = _open_or_reset(out_dir, plan_hash, sizes, dtype, overwrite=manifest is not None)
    written = _fill(out_dir, rows, dtype, canonical, journal, progress)
    n_volumes, skipped = _finish(out_dir, rows, modalities, dtype, canonical, plan_hash, journal)
    report = CacheReport(n_volumes, len(skipped), skipped, written, time.perf_counter() - start)
    logger.info("%s: cached %d sessions, skipped %d, in %.1f s", out_dir, n_volumes, len(skipped), report.seconds)
    return report


def _checked_settings(table: pd.DataFrame, modalities, dtype: str) -> tuple[str, ...]:
    modalities = (modalities,) if isinstance(modalities, str) else tuple(modalities)
    unknown = [m for m in modalities if m not in IMAGE_COLUMNS]
    if not modalities or unknown or len(set(modalities)) != len(modalities):
        raise BrainlearnError(f"modalities must be distinct names from {IMAGE_COLUMNS}, not {modalities}.")
    if dtype not in DTYPES:
        raise BrainlearnError(f"dtype must be one of {DTYPES}, not {dtype!r}.")
    missing = [c for c in ("participant_id", "session_id", *modalities) if c not in table.columns]
    if missing:
        raise BrainlearnError(
            f"the table has no column {', '.join(missing)} (it has {', '.join(map(str, table.columns))}). "
            "Read it with brainlearn.data.tables or cache only the modalities it holds."
        )
    if table.empty:
        raise BrainlearnError("the table has no rows; there is nothing to cache.")
    return modalities


def _value(record: dict, column: str):
    value = record.get(column)
    if value is None or (not isinstance(value, str) and pd.isna(value)) or value == "":
        return None
    return float(value) if column == "age" else str(value)


def _plan_hash(table: pd.DataFrame, modalities, dtype: str, canonical: bool) -> str:
    """Hash of the settings, the sessions and each source file's size and modification time.

    Participant data (diagnosis, age, split, ...) is left out on purpose: re-splitting a table refreshes the
    index (:func:`_refresh_metadata`) without reading a single image again.
    """
    entries = []
    for record in table.to_dict("records"):
        meta = [_value(record, c) for c in ("participant_id", "session_id")]
        files = []
        for m in modalities:
            source = _value(record, m)
            stat = os.stat(source) if source and os.path.isfile(source) else None
            files.append([source, stat and stat.st_size, stat and stat.st_mtime_ns])
        entries.append([meta, files])
    settings = [FORMAT_VERSION, dtype, list(modalities), canonical]
    return hashlib.sha256(json.dumps([settings, entries]).encode()).hexdigest()


def _plan(table: pd.DataFrame, modalities, canonical: bool) -> list[_Row]:
    """One :class:`_Row` per table row, with shapes from the headers (after reorientation when canonical)."""
    rows = []
    for record in table.to_dict("records"):
        row = _Row(meta={c: _value(record, c) for c in META_COLUMNS}, sources={})
        for m in modalities:
            source = _value(record, m)
            if source is None:
                row.reason = f"no {m} image"
                break
            row.sources[m] = source
            try:
                row.shapes[m] = _planned_shape(Path(source), canonical)
            except BrainlearnError as error:
                row.reason = str(error)
                logger.warning("skipping participant %s session %s: %s", *row.key, error)
                break
        rows.append(row)
    missing = sum(1 for row in rows if row.reason and row.reason.startswith("no "))
    if missing:
        logger.info("skipping %d sessions without every one of %s", missing, ", ".join(modalities))
    return rows


def _planned_shape(path: Path, canonical: bool) -> tuple[int, int, int]:
    shape = header_shape(path)
    while len(shape) > 3 and shape[-1] == 1:
        shape = shape[:-1]
    if len(shape) != 3:
        raise BrainlearnError(
            f"{path}: expected a 3D image, the header declares shape {shape}. Pick one volume or average the "
            "frames into a 3D image first."
        )
    if not canonical:
        return shape
    affine = NPY_AFFINE if path.suffix == ".npy" else nib.load(path).affine
    try:
        ornt = nib.orientations.io_orientation(affine)
        permuted = [0, 0, 0]
        for axis, n in enumerate(shape):  # input axis `axis` becomes output axis ornt[axis, 0]
            permuted[int(ornt[axis, 0])] = n
        return tuple(permuted)
    except (ValueError, IndexError):  # singular affine: read_image reports it when the volume is read
        return shape


def _assign_offsets(rows: list[_Row], modalities) -> dict[str, int]:
    sizes = dict.fromkeys(modalities, 0)
    for row in rows:
        if row.reason is None:
            for m in modalities:
                row.offsets[m] = sizes[m]
                sizes[m] += int(np.prod(row.shapes[m]))
    return sizes


def _open_or_reset(
    out_dir: Path, plan_hash: str, sizes: dict[str, int], dtype: str, *, overwrite: bool
) -> dict[int, dict]:
    """Return the journal of a matching unfinished build, or start afresh with preallocated data files."""
    plan = _read_json(out_dir / PLAN)
    if plan is not None and not overwrite:
        if plan.get("plan_hash") == plan_hash and _data_files_match(out_dir, plan, sizes):
            journal = _read_journal(out_dir / JOURNAL)
            logger.info("%s: resuming an unfinished cache (%d sessions done)", out_dir, len(journal))
            return journal
        logger.warning("%s: unfinished cache of another plan (table or settings changed); rebuilding", out_dir)
    for name in [MANIFEST, INDEX, PLAN, JOURNAL, *(f"{m}.bin" for m in IMAGE_COLUMNS)]:
        (out_dir / name).unlink(missing_ok=True)
    out_dir.mkdir(parents=True, exist_ok=True)
    for m, size in sizes.items():
        with open(out_dir / f"{m}.bin", "wb") as f:
            f.truncate(size * _storage_dtype(m, dtype).itemsize)  # sparse: disk fills as volumes land
    write_json(out_dir / PLAN, {"plan_hash": plan_hash, "sizes": sizes})
    return {}


def _storage_dtype(modality: str, dtype: str) -> np.dtype:
    return np.dtype(np.uint8 if modality == "mask" else dtype)


def _data_files_match(out_dir: Path, plan: dict, sizes: dict[str, int]) -> bool:
    return plan.get("sizes") == sizes and all((out_dir / f"{m}.bin").is_file() for m in sizes)


def _read_journal(path: Path) -> dict[int, dict]:
    """Finished sessions by plan row; a torn last line (killed mid-write) is dropped, the file rewritten."""
    entries, lines = {}, []
    if path.is_file():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:
                break
            entries[entry["row"]] = entry
            lines.append(line)
        path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return entries


def _fill(out_dir: Path, rows: list[_Row], dtype: str, canonical: bool, journal: dict, progress: bool) -> int:
    """Read, encode and store every planned session not yet in the journal; return the bytes written."""
    todo = [k for k, row in enumerate(rows) if row.reason is None and k not in journal]
    if not todo:
        return 0
    maps = {
        m: np.memmap(out_dir / f"{m}.bin", dtype=_storage_dtype(m, dtype), mode="r+") for m in rows[todo[0]].sources
    }
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    written = 0
    with (
        open(out_dir / JOURNAL, "a", encoding="utf-8") as log,
        Progress(*columns, disable=not progress) as bar,
    ):
        task = bar.add_task(f"caching {out_dir.name}", total=len(todo))
        for k in todo:
            entry, n_bytes = _store_session(rows[k], k, maps, dtype, canonical)
            written += n_bytes
            log.write(json.dumps(entry) + "\n")  # only after the voxels are flushed: the journal never lies
            log.flush()
            os.fsync(log.fileno())
            journal[k] = entry
            bar.advance(task)
    return written


def _store_session(row: _Row, k: int, maps: dict[str, np.memmap], dtype: str, canonical: bool) -> tuple[dict, int]:
    entry = {"row": k, "participant_id": row.key[0], "session_id": row.key[1]}
    try:
        volumes = _read_session(row, dtype, canonical)
    except BrainlearnError as error:
        logger.warning("skipping participant %s session %s: %s", *row.key, error)
        return {**entry, "skipped": str(error)}, 0
    n_bytes = 0
    for m, (stored, _, _, _) in volumes.items():
        start = row.offsets[m]
        maps[m][start : start + stored.size] = stored.ravel()
        maps[m].flush()
        n_bytes += stored.nbytes
    entry["volumes"] = {
        m: {"slope": slope, "inter": inter, "affine": affine.ravel().tolist()}
        for m, (_, slope, inter, affine) in volumes.items()
    }
    return entry, n_bytes


def _read_session(row: _Row, dtype: str, canonical: bool) -> dict[str, tuple]:
    """Per modality: (stored array, slope, inter, affine); the mask is checked against the first image."""
    reference, volumes = None, {}
    for m in sorted(row.sources, key=lambda m: m == "mask"):  # images first, then the mask
        path = row.sources[m]
        if m == "mask":
            image = read_mask(path, like=reference, canonical=canonical)
        else:
            image = read_image(path, canonical=canonical)
            reference = image if reference is None else reference
        if image.shape != row.shapes[m]:
            raise BrainlearnError(
                f"{path}: the voxels have shape {image.shape} but the header declared {row.shapes[m]}; "
                "the file probably changed while caching. Rerun brainlearn cache."
            )
        volumes[m] = (*_encode(image.array, m, dtype, path), image.affine)
    return volumes


def _encode(array: np.ndarray, modality: str, dtype: str, path: str) -> tuple[np.ndarray, float, float]:
    """Stored array, slope and intercept such that value ≈ inter + slope · stored."""
    if modality == "mask":
        if array.dtype != np.uint8:
            raise BrainlearnError(
                f"{path}: mask labels go up to {int(array.max())}, the cache stores masks as uint8 "
                "(0 to 255). Relabel the mask with fewer labels."
            )
        return array, 1.0, 0.0
    if dtype == "float16":
        peak = float(np.abs(array).max())
        if peak > FLOAT16_MAX:
            raise BrainlearnError(
                f"{path}: values reach {peak:g}, beyond float16's range ({FLOAT16_MAX:g}). Normalize "
                "intensities first (brainlearn preprocess) or cache with dtype='uint8'."
            )
        return array.astype(np.float16), 1.0, 0.0
    low, high = float(array.min()), float(array.max())
    slope = (high - low) / 255 or 1.0
    stored = np.clip(np.rint((array.astype(np.float64) - low) / slope), 0, 255).astype(np.uint8)
    return stored, slope, low


def _finish(
    out_dir: Path, rows: list[_Row], modalities, dtype: str, canonical: bool, plan_hash: str, journal: dict
) -> tuple[int, list[tuple[str, str, str]]]:
    """Write index.tsv, then manifest.json (last: its presence marks the cache finished)."""
    records, skipped = [], []
    for k, row in enumerate(rows):
        reason = row.reason or journal[k].get("skipped")
        if reason is not None:
            skipped.append((*row.key, reason))
            continue
        record = dict(row.meta)
        for m in modalities:
            volume = journal[k]["volumes"][m]
            record |= {
                f"{m}_offset": row.offsets[m],
                f"{m}_shape": json.dumps(list(row.shapes[m])),
                f"{m}_slope": volume["slope"],
                f"{m}_inter": volume["inter"],
                f"{m}_affine": json.dumps(volume["affine"]),
                f"{m}_source": row.sources[m],
            }
        records.append(record)
    columns = [*META_COLUMNS, *(f"{m}_{f}" for m in modalities for f in INDEX_FIELDS)]
    with atomic_path(out_dir / INDEX) as tmp:
        pd.DataFrame(records, columns=columns).to_csv(tmp, sep="\t", index=False)
    manifest = {
        "format_version": FORMAT_VERSION,
        "dtype": dtype,
        "dtypes": {m: _storage_dtype(m, dtype).name for m in modalities},
        "modalities": list(modalities),
        "canonical": canonical,
        "n_volumes": len(records),
        "n_skipped": len(skipped),
        "skipped": skipped,
        "plan_hash": plan_hash,
    }
    write_json(out_dir / MANIFEST, manifest)
    (out_dir / PLAN).unlink(missing_ok=True)
    (out_dir / JOURNAL).unlink(missing_ok=True)
    return len(records), skipped


def _refresh_metadata(out_dir: Path, table: pd.DataFrame) -> None:
    """Copy the table's participant data (diagnosis, age, sex, site, split) into a finished cache's index."""
    index = pd.read_csv(out_dir / INDEX, sep="\t", dtype={"participant_id": str, "session_id": str})
    meta = {(r["participant_id"], r["session_id"]): r for r in _meta_records(table)}
    changed = False
    for column in META_COLUMNS[2:]:
        new = [
            meta.get((p, s), {}).get(column) for p, s in zip(index["participant_id"], index["session_id"], strict=True)
        ]
        old = [None if pd.isna(v) else (float(v) if column == "age" else str(v)) for v in index[column]]
        if new != old:
            index[column] = pd.Series(new, dtype=object)
            changed = True
    if changed:
        with atomic_path(out_dir / INDEX) as tmp:
            index.to_csv(tmp, sep="\t", index=False)
        logger.info("%s: participant data (diagnosis, age, split, ...) updated from the table", out_dir)


def _meta_records(table: pd.DataFrame) -> list[dict]:
    return [{c: _value(record, c) for c in META_COLUMNS} for record in table.to_dict("records")]


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError):
        return None
