"""Running dcm2niix (Chris Rorden's DICOM to NIfTI converter) on one series at a time.

The program comes from the PyPI wheel ``dcm2niix`` (which ships the binary) or, failing that, from ``PATH``
(e.g. Debian's ``dcm2niix`` package). Each series is staged alone in a temporary folder (links to its files;
``.dcm.gz`` files decompressed) so that every output belongs to exactly one series.
"""

from __future__ import annotations

import gzip
import logging
import os
import shutil
import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path

from brainlearn.errors import BrainlearnError

log = logging.getLogger(__name__)

TIMEOUT_S = 1800
# -ba y: anonymised BIDS sidecar (no names, IDs or dates); -z n: no gzip (the image is written again anyway);
# -i n: convert every series handed over (brainlearn decides what to leave out, and says why); -w 1: overwrite
# within the fresh staging folder.
_OPTIONS = ("-b", "y", "-ba", "y", "-z", "n", "-i", "n", "-w", "1", "-v", "0")
_OUTPUT_NAME = "series"


def find_dcm2niix() -> str:
    """The path of the dcm2niix program: the one in the ``dcm2niix`` package, else the one on ``PATH``.

    Raises:
        BrainlearnError: if neither exists.
    """
    try:
        import dcm2niix

        packaged = Path(dcm2niix.bin)
        if packaged.is_file() and os.access(packaged, os.X_OK):
            return str(packaged)
    except (ImportError, AttributeError):
        pass
    found = shutil.which("dcm2niix")
    if found:
        return found
    raise BrainlearnError(
        "dcm2niix not found: neither the Python package (pip install dcm2niix) nor a dcm2niix program on PATH "
        "(apt-get install dcm2niix). Install one of them to convert DICOM series."
    )


def run_dcm2niix(files: Sequence[Path], work: Path, *, redact: Callable[[str], str]) -> list[Path]:
    """Convert the DICOM ``files`` of one series into ``work/out``; return the NIfTI files written (sorted).

    Args:
        files: the series' files (plain or ``.dcm.gz``).
        work: an empty folder for the staged input and the output.
        redact: applied to dcm2niix's messages before they are logged or raised.

    Raises:
        BrainlearnError: if dcm2niix fails or writes no image; the message holds its last lines (redacted).
    """
    staged, out = work / "in", work / "out"
    _stage(files, staged)
    out.mkdir(parents=True)
    command = [find_dcm2niix(), *_OPTIONS, "-f", _OUTPUT_NAME, "-o", str(out), str(staged)]
    try:
        done = subprocess.run(command, capture_output=True, text=True, errors="replace", timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired as error:
        raise BrainlearnError(f"dcm2niix did not finish within {TIMEOUT_S} s.") from error
    messages = redact(f"{done.stdout}\n{done.stderr}".replace(str(work), "<series>"))
    log.debug("dcm2niix: %s", " | ".join(line for line in messages.splitlines() if line.strip()))
    outputs = sorted(out.glob("*.nii*"))
    if done.returncode != 0 or not outputs:
        raise BrainlearnError(f"dcm2niix wrote no image (exit code {done.returncode}): {_last_lines(messages)}")
    return outputs


def _stage(files: Sequence[Path], folder: Path) -> None:
    folder.mkdir(parents=True)
    for index, path in enumerate(files):
        target = folder / f"{index:06d}.dcm"
        if path.name.lower().endswith(".gz"):
            with gzip.open(path, "rb") as source, open(target, "wb") as copy:
                shutil.copyfileobj(source, copy)
            continue
        try:
            target.symlink_to(path.resolve())
        except OSError:  # file systems without links
            shutil.copyfile(path, target)


def _last_lines(messages: str, n: int = 3) -> str:
    lines = [line.strip() for line in messages.splitlines() if line.strip() and "version" not in line]
    important = [line for line in lines if line.lower().startswith(("error", "warning"))]
    return " | ".join((important or lines)[-n:]) or "no message"
