"""Atomic file writes: a reader sees the old file or the complete new one, never half of one.

Every output brainlearn writes (images, tables, configs, metrics, checkpoints, cache manifests) goes through
:func:`atomic_path`: the content is written to a hidden temporary file in the same folder, flushed to disk and
renamed over the target. An interrupted run therefore leaves no file that looks finished but is not.
"""

from __future__ import annotations

import errno
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from brainlearn.errors import BrainlearnError

PARTIAL_PREFIX = ".partial-"

_WRITE_ERRNOS = {
    errno.ENOSPC: "the disk is full; free some space or write to another folder",
    errno.EDQUOT: "the disk quota is exhausted; free some space or write to another folder",
    errno.EROFS: "the file system is read-only; choose a writable output folder",
    errno.EACCES: "permission denied; choose a folder you can write to",
    errno.EPERM: "permission denied; choose a folder you can write to",
}


def write_error(path: Path, error: OSError) -> BrainlearnError:
    """Turn an OS error on writing ``path`` into a readable :class:`BrainlearnError`."""
    advice = _WRITE_ERRNOS.get(error.errno or 0, error.strerror or str(error))
    return BrainlearnError(f"{path}: could not write ({advice}). Files written before this one are kept.")


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path to write to; on success it replaces ``path`` in one step.

    The temporary file keeps the target's name at the end (``.partial-<pid>-brain.nii.gz``) so that libraries
    that pick a format from the suffix (nibabel, torch) behave as for the target. On any error the temporary
    file is removed and the target is left as it was.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise write_error(path.parent, error) from error
    tmp = path.with_name(f"{PARTIAL_PREFIX}{os.getpid()}-{path.name}")
    try:
        yield tmp
        _fsync(tmp)
        os.replace(tmp, path)
    except OSError as error:
        tmp.unlink(missing_ok=True)
        raise write_error(path, error) from error
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def remove_stale_partials(folder: str | os.PathLike) -> list[Path]:
    """Delete the temporary files of writes that a killed process left under ``folder``; return them.

    A temporary file carries its writer's process id (``.partial-<pid>-name``); one whose process no longer runs
    on this machine is debris. Files of running processes are kept (two runs writing into one folder at once are
    not supported, but one must not break the other).
    """
    removed = []
    for path in Path(folder).rglob(f"{PARTIAL_PREFIX}*"):
        pid = path.name[len(PARTIAL_PREFIX) :].split("-", 1)[0]
        if not pid.isdigit() or _running(int(pid)):
            continue
        try:
            path.unlink()
        except OSError:  # gone already, or not ours to delete: leave it
            continue
        removed.append(path)
    return removed


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` atomically (UTF-8)."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write ``obj`` as indented JSON to ``path`` atomically."""
    write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n")


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "item"):  # numpy / torch scalars
        return obj.item()
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    raise TypeError(f"cannot write {type(obj).__name__} as JSON")
