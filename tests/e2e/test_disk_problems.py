"""A full disk or a read-only output folder stops a command with a clear message and keeps what it had written;
after space is freed the rerun completes only what is missing.

The real cases mount a small tmpfs (root and mount permission needed, as on the development machine); the
simulated case, which runs everywhere, makes every write of one participant fail with ENOSPC."""

from __future__ import annotations

import errno
import subprocess
import sys
from pathlib import Path

import pytest

import brainlearn.atomic
from brainlearn.cli import main

sys.path.insert(0, str(Path(__file__).parents[1] / "fuzz"))
from kills import partial_files, unfinished_files  # noqa: E402

COHORT = ["cohort", "--subjects", 6, "--spacing", 4, "--preset", "all", "--seed", 2]


def run(*args) -> int:
    return main(["-q", *[str(a) for a in args]])


def truths(cohort: Path) -> dict[str, int]:
    """Finished participants (their truth JSON is written last) and the modification time of their T1w."""
    return {
        path.parent.name: (cohort / path.parent.name / "anat" / f"{path.parent.name}_T1w.nii.gz").stat().st_mtime_ns
        for path in (cohort / "derivatives" / "truth").glob("sub-*/*_truth.json")
    }


def test_a_full_disk_stops_with_a_message_and_the_rerun_completes_the_rest(tmp_path, monkeypatch, capsys):
    fsync = brainlearn.atomic._fsync

    def full_for_sub_003(path):
        if "sub-003" in path.name:
            raise OSError(errno.ENOSPC, "No space left on device")
        fsync(path)

    monkeypatch.setattr(brainlearn.atomic, "_fsync", full_for_sub_003)
    cohort = tmp_path / "cohort"
    assert run(*COHORT, "--out", cohort) == 2
    message = capsys.readouterr().err
    assert "sub-003" in message and "could not write (the disk is full; free some space" in message
    before = truths(cohort)
    assert "sub-003" not in before and len(before) >= 1
    assert unfinished_files(cohort) == [] and partial_files(cohort) == []

    monkeypatch.setattr(brainlearn.atomic, "_fsync", fsync)  # space freed
    assert run(*COHORT, "--out", cohort) == 0
    after = truths(cohort)
    assert sorted(after) == [f"sub-{k:03d}" for k in range(1, 7)]
    assert {pid: after[pid] for pid in before} == before  # finished participants were not written again


@pytest.fixture
def small_disk(tmp_path):
    """A 2.5 MB tmpfs at tmp_path/disk (skipped where this process may not mount)."""
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2500k", "tmpfs", disk], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({mounted.stderr.decode().strip()}); the simulated case still runs")
    yield disk
    subprocess.run(["umount", "-l", disk], check=False)


def remount(disk: Path, options: str) -> None:
    subprocess.run(["mount", "-o", f"remount,{options}", disk], check=True)


def test_a_real_full_disk_then_a_read_only_one(small_disk, capsys):
    cohort = small_disk / "cohort"
    assert run(*COHORT, "--out", cohort) == 2  # 6 participants need about 6 MB
    assert "the disk is full; free some space or write to another folder" in capsys.readouterr().err
    before = truths(cohort)
    assert 1 <= len(before) < 6
    assert unfinished_files(cohort) == [] and partial_files(cohort) == []

    remount(small_disk, "size=64m")
    assert run(*COHORT, "--out", cohort) == 0
    after = truths(cohort)
    assert len(after) == 6 and {pid: after[pid] for pid in before} == before

    remount(small_disk, "ro")
    assert run("train", "classify", "--bids", cohort, "--out", small_disk / "run") == 2
    message = capsys.readouterr().err
    assert (
        f"{small_disk / 'run'}: could not write (the file system is read-only; choose a writable output folder)"
        in message
    )
    assert len(truths(cohort)) == 6
