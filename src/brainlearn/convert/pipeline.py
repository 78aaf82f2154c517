"""``convert_folder``: a folder (or file) of scanner data in, a BIDS-like tree, ``series.tsv`` and a table out.

::

    OUT/sub-<label>/ses-<nn>/{anat,pet}/...nii.gz + .json   one image per converted series (see naming.py)
    OUT/other/<path in SRC>.nii.gz                             MGZ, MINC, NRRD, Analyze, ECAT files without BIDS names
    OUT/series.tsv                                             every series and image file: status and reason
    OUT/table.tsv                                              participants table for ``brainlearn preprocess``
"""

from __future__ import annotations

import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from brainlearn.convert.anonymity import Redactor
from brainlearn.convert.dicom import Header, group_series, read_header
from brainlearn.convert.formats import image_format
from brainlearn.convert.images import convert_image_file
from brainlearn.convert.naming import PlannedSeries, plan_series
from brainlearn.convert.outputs import CONVERTED, FAILED, SKIPPED, convert_dicom_series
from brainlearn.convert.report import build_table, series_row, write_series_table
from brainlearn.data.tables import write_table
from brainlearn.errors import BrainlearnError

log = logging.getLogger(__name__)

_NIFTI_ENDINGS = (".nii", ".nii.gz")
_PAIRED_DATA = (".img", ".raw", ".raw.gz")  # the data halves of Analyze and NRRD-detached pairs


@dataclass(frozen=True)
class ConvertReport:
    """What :func:`convert_folder` did.

    Attributes:
        out: the output folder.
        series: one row per DICOM series or image file, as in ``series.tsv``.
        table: the participants table written to ``table.tsv`` (absolute image paths).
        n_ignored: files that are neither DICOM nor a known image format (or already NIfTI).
    """

    out: Path
    series: pd.DataFrame
    table: pd.DataFrame
    n_ignored: int = 0

    @property
    def n_converted(self) -> int:
        return int((self.series["status"] == CONVERTED).sum())

    @property
    def n_skipped(self) -> int:
        return int((self.series["status"] == SKIPPED).sum())

    @property
    def n_failed(self) -> int:
        return int((self.series["status"] == FAILED).sum())

    @property
    def series_path(self) -> Path:
        return self.out / "series.tsv"

    @property
    def table_path(self) -> Path:
        return self.out / "table.tsv"


def convert_folder(src: str | os.PathLike, out: str | os.PathLike, *, average_frames: bool = False) -> ConvertReport:
    """Convert every DICOM series and MGZ / MINC / NRRD / Analyze / ECAT image under ``src`` into ``out``.

    DICOM series go through dcm2niix into the BIDS-like tree of :mod:`brainlearn.convert.naming`; series that
    are localizers, derived, of another modality or contrast, ambiguous, split by dcm2niix or 4D are left out and
    listed with their reason in ``series.tsv``. Identifying values never reach an output or a log line (see
    :mod:`brainlearn.convert.anonymity`).

    Args:
        src: a folder (searched recursively) or a single file.
        out: the output folder (created; existing files of the same names are replaced).
        average_frames: average the frames of 4D PET into one static image (duration-weighted) instead of
            leaving the series out.

    Returns:
        The :class:`ConvertReport`; ``series.tsv`` and ``table.tsv`` are written into ``out``.

    Raises:
        BrainlearnError: if ``src`` does not exist or holds no DICOM file and no known image, or if dcm2niix is
            needed and missing.
    """
    src, out = Path(src).absolute(), Path(out).absolute()
    headers, images, n_ignored = _scan(src, out)
    redactor = Redactor(value for header in headers for value in header.identifying)
    planned = plan_series(group_series(headers), redactor)
    out.mkdir(parents=True, exist_ok=True)
    rows = [_convert_series(item, src, out, redactor, average_frames) for item in planned]
    rows += [convert_image_file(path, src, out, redactor, average=average_frames) for path in images]
    series = write_series_table(rows, out / "series.tsv")
    table = build_table(series, out)
    write_table(table, out / "table.tsv")
    report = ConvertReport(out=out, series=series, table=table, n_ignored=n_ignored)
    _log_summary(report)
    return report


def _scan(src: Path, out: Path) -> tuple[list[Header], list[Path], int]:
    """The DICOM headers and the other image files under ``src`` (outside ``out``), and the count of the rest."""
    if not src.exists():
        raise BrainlearnError(f"{src}: not found. Give a folder of DICOM files or images, or one file.")
    files = [src] if src.is_file() else _files(src, out)
    headers, images, ignored = [], [], 0
    for path in files:
        name = path.name.lower()
        if name.endswith(_NIFTI_ENDINGS) or name.endswith(_PAIRED_DATA):
            ignored += not name.endswith(_PAIRED_DATA)
        elif image_format(path) is not None:
            images.append(path)
        elif (header := read_header(path)) is not None:
            headers.append(header)
        else:
            ignored += 1
    if not headers and not images:
        raise BrainlearnError(
            f"{src}: no DICOM file and no MGZ, MINC, NRRD, Analyze or ECAT image found ({ignored} other files). "
            "Point --in at the folder holding the scanner's export."
        )
    return headers, images, ignored


def _files(src: Path, out: Path) -> list[Path]:
    found = []
    for folder, subfolders, names in os.walk(src):
        here = Path(folder)
        subfolders[:] = sorted(d for d in subfolders if not d.startswith(".") and here / d != out)
        found += [here / name for name in sorted(names) if not name.startswith(".")]
    return found


def _convert_series(item: PlannedSeries, src: Path, out: Path, redactor: Redactor, average: bool) -> dict:
    if item.column is None:
        return series_row(item, src, redactor, status=SKIPPED, reason=item.reason)
    with tempfile.TemporaryDirectory(prefix=".convert-", dir=out) as work:
        outcome = convert_dicom_series(
            item.series.files,
            out / item.target,
            Path(work),
            redactor=redactor,
            pet=item.column == "pet",
            average=average,
        )
    reason = item.reason if outcome.status == CONVERTED else outcome.reason
    if outcome.status == CONVERTED and outcome.reason:
        reason = f"{item.reason}; {outcome.reason}"
    return series_row(
        item, src, redactor, status=outcome.status, reason=reason, output=outcome.output, frames=outcome.frames
    )


def _log_summary(report: ConvertReport) -> None:
    for row in report.series.itertuples():
        if row.status != CONVERTED:
            log.info("%s %s: %s", row.status, row.source, row.reason)
    log.info(
        "%d converted, %d skipped, %d failed (%d other files ignored); see %s and %s",
        report.n_converted,
        report.n_skipped,
        report.n_failed,
        report.n_ignored,
        report.series_path,
        report.table_path,
    )
