"""Kill a brainlearn command with SIGKILL at chosen moments, rerun it until it finishes, and check what it left.

Used by tests/e2e/test_interruption.py (a few kills per command, in ``make test``) and by ``make fuzz``
(``python tests/fuzz/kills.py``: many kills, counts for docs/reliability.md).

After every kill, :func:`unfinished_files` reads each file that looks finished (any name without the
``.partial-`` prefix of :mod:`brainlearn.atomic`) in full: a NIfTI's voxels (gzip checks its CRC), a JSON,
a table, a checkpoint, a PNG. The final outputs are compared with those of an uninterrupted run.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

PARTIAL_PREFIX = ".partial-"


@dataclass
class KilledRun:
    """What happened to one command run with kills: the moments (s after start), the reruns, the final status."""

    kills_at: list[float] = field(default_factory=list)
    killed: int = 0  # kills that hit a running process (the others came after it had finished)
    attempts: int = 0
    returncode: int | None = None
    problems: list[str] = field(default_factory=list)  # unfinished files that looked finished, after any kill


def brainlearn(argv: list[str], *, cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run ``brainlearn -q ARGV`` to completion (in a new session, as the killed runs are)."""
    return subprocess.run(
        [sys.executable, "-m", "brainlearn", "-q", *map(str, argv)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        start_new_session=True,
    )


def run_with_kills(
    argv: list[str],
    kills_at: list[float],
    *,
    cwd: Path,
    out: Path,
    started: Callable[[Path], bool] | None = None,
    timeout: float = 600,
) -> KilledRun:
    """Start the command, SIGKILL its whole process group ``kills_at[i]`` seconds into attempt ``i`` (counted from
    the moment ``started(out)`` holds, when given: the first finished item), then rerun it without a kill until it
    finishes. Every kill is followed by :func:`unfinished_files` on ``out``."""
    result = KilledRun(kills_at=list(kills_at))
    for delay in kills_at:
        result.attempts += 1
        process = subprocess.Popen(
            [sys.executable, "-m", "brainlearn", "-q", *map(str, argv)],
            cwd=cwd,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            _wait_until(process, out, started)
            process.wait(timeout=delay)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            result.killed += 1
        _wait_for_group(process.pid)
        result.problems += unfinished_files(out)
    result.attempts += 1
    final = brainlearn(argv, cwd=cwd, timeout=timeout)
    result.returncode = final.returncode
    if final.returncode != 0:
        result.problems.append(f"rerun failed ({final.returncode}): {final.stderr.strip()[-2000:]}")
    return result


def _wait_until(process: subprocess.Popen, out: Path, started: Callable[[Path], bool] | None) -> None:
    while started is not None and process.poll() is None and not started(out):
        time.sleep(0.02)


def _wait_for_group(pgid: int, timeout: float = 10) -> None:
    """Wait until the killed group's worker processes are gone too."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)


def unfinished_files(folder: Path) -> list[str]:
    """Files under ``folder`` that look finished but cannot be read in full (each with the reason)."""
    problems = []
    for path in sorted(folder.rglob("*")):
        if path.is_dir() or path.name.startswith(PARTIAL_PREFIX):
            continue
        try:
            _read_fully(path)
        except Exception as error:  # any failure to read is what this check looks for
            problems.append(f"{path}: {type(error).__name__}: {error}")
    return problems


def _read_fully(path: Path) -> None:
    name = path.name
    if name.endswith((".nii.gz", ".nii")):
        import nibabel as nib

        nib.load(path).get_fdata()
    elif name.endswith(".json"):
        json.loads(path.read_text(encoding="utf-8"))
    elif name.endswith((".tsv", ".csv")):
        import pandas as pd

        pd.read_csv(path, sep="\t" if name.endswith(".tsv") else ",")
    elif name.endswith(".ckpt"):
        from brainlearn.checkpoints import load_checkpoint

        load_checkpoint(path)
    elif name.endswith(".png"):
        from PIL import Image

        with Image.open(path) as image:
            image.load()
    elif name.endswith(".npy"):
        import numpy as np

        np.load(path, mmap_mode="r")


def partial_files(folder: Path) -> list[Path]:
    """Temporary files of interrupted writes left under ``folder``."""
    return sorted(path for path in folder.rglob(f"{PARTIAL_PREFIX}*"))


def digests(folder: Path, names: list[str]) -> dict[str, str]:
    """SHA-256 of every file under ``folder`` whose name ends with one of ``names``, by relative path."""
    found = {}
    for path in sorted(folder.rglob("*")):
        if path.is_file() and path.name.endswith(tuple(names)) and not path.name.startswith(PARTIAL_PREFIX):
            found[str(path.relative_to(folder))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return found


def kill_moments(rng: random.Random, count: int, duration: float, *, start: float = 1.0) -> list[float]:
    """``count`` moments drawn uniformly between ``start`` s and the duration of an uninterrupted run."""
    return [rng.uniform(start, max(start, duration)) for _ in range(count)]


# ---- make fuzz: a longer campaign of kills, counts written as JSON -------------------------------------------


def _campaign(args: argparse.Namespace) -> dict:
    from kill_targets import TARGETS  # the commands and their comparisons (next to this file)

    rng = random.Random(args.seed)
    report = {}
    for name in args.targets:
        target = TARGETS[name](Path(args.work) / name)
        reference_seconds, reference = target.reference()
        counts = {"runs": 0, "kills": 0, "killed_running": 0, "same_result": 0, "unfinished_files": 0, "failed": 0}
        for run in range(args.runs):
            out = target.fresh_out(run)
            moments = kill_moments(rng, args.kills_per_run, reference_seconds)
            outcome = run_with_kills(target.argv(out), moments, cwd=target.root, out=out)
            same = outcome.returncode == 0 and target.result(out) == reference
            counts["runs"] += 1
            counts["kills"] += len(moments)
            counts["killed_running"] += outcome.killed
            counts["same_result"] += int(same)
            counts["unfinished_files"] += len([p for p in outcome.problems if not p.startswith("rerun failed")])
            counts["failed"] += int(not same)
            if not same or outcome.problems:
                print(f"{name} run {run}: kills at {moments}: {outcome.problems or 'different result'}", flush=True)
        counts["reference_seconds"] = round(reference_seconds, 1)
        report[name] = counts
        print(name, counts, flush=True)
    return report


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--targets", nargs="+", default=["train", "cohort", "preprocess"])
    parser.add_argument("--runs", type=int, default=5, help="killed runs per target")
    parser.add_argument("--kills-per-run", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", default="runs/fuzz/kills")
    parser.add_argument("--json", help="write the counts here")
    args = parser.parse_args()
    sys.path.insert(0, str(Path(__file__).parent))
    report = _campaign(args)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return 0 if all(counts["failed"] == 0 and counts["unfinished_files"] == 0 for counts in report.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
