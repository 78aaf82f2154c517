"""What a report shows of a run folder: found on disk, read defensively, nothing computed again.

A run folder (see :mod:`brainlearn.runs`) is any folder with a ``config.yaml`` that names its command. A report of
``RUN_DIR`` covers that run and every run below it (the demo's folder holds a dozen), in the order they started.
Each becomes a :class:`RunSummary`: the resolved config as written, the metrics of ``metrics.json`` with their
intervals, the training curves of ``logs/metrics.csv``, the PNG figures grouped by folder, the result tables worth
reading inline (regions ranked by an explanation, label-efficiency summaries) and the NIfTI outputs to open in the
viewer (lesion masks, synthesized PET, importance maps over the image they explain, sampled volumes).

A run whose files cannot be read is still listed: what went wrong goes into ``problems`` and onto the page.
"""

from __future__ import annotations

import json
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from brainlearn.errors import BrainlearnError

log = logging.getLogger(__name__)

REPORT_COMMAND = "report"
INLINE_TABLES = {"regions.tsv": 15, "summary.tsv": 40, "results.tsv": 40}  # name → rows shown
_STARTED = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d)")


@dataclass(frozen=True)
class Layer:
    """One volume of a viewer item: the NIfTI file, how it is read and drawn."""

    path: Path
    kind: str  # "image", "mask" or "map" (see brainlearn.report.viewer.write_volume)
    colormap: str = "gray"
    opacity: float = 1.0
    cal_min: float | None = None
    cal_max: float | None = None


@dataclass(frozen=True)
class ViewerItem:
    title: str
    layers: tuple[Layer, ...]


@dataclass(frozen=True)
class Table:
    title: str
    header: list[str]
    rows: list[list[str]]
    total: int  # rows in the file (rows shown may be fewer)


@dataclass
class RunSummary:
    """What the page shows of one run folder."""

    root: Path
    name: str  # the folder relative to the RUN_DIR it was found under ("." for RUN_DIR itself)
    command: str
    config_text: str
    config: dict[str, Any]
    metrics: dict[str, Any] = field(default_factory=dict)
    curves: Path | None = None  # logs/metrics.csv
    figures: dict[str, list[Path]] = field(default_factory=dict)  # folder relative to root → PNGs
    tables: list[Table] = field(default_factory=list)
    volumes: list[ViewerItem] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def find_runs(run_dir: str | Path) -> list[Path]:
    """``run_dir`` and every run folder below it (reports excluded), in the order they were started."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise BrainlearnError(f"{run_dir}: no such folder. Pass a run folder written by a brainlearn command.")
    found = [path.parent for path in sorted(run_dir.rglob("config.yaml")) if _command(path) != REPORT_COMMAND]
    if not found:
        raise BrainlearnError(
            f"{run_dir}: holds no run (no config.yaml in it or below). Pass a folder written by a brainlearn command "
            "(its --out), e.g. runs/demo."
        )
    return sorted(found, key=lambda root: (_started(root), str(root)))


def summarize_run(root: Path, run_dir: Path, *, viewer_sessions: int) -> RunSummary:
    """Read one run folder; problems with its files are recorded, not raised."""
    config_text = _read_text(root / "config.yaml")
    try:
        config = yaml.safe_load(config_text) or {}
    except yaml.YAMLError as error:
        config, config_text = {}, f"{config_text}\n# unreadable: {error}"
    config = config if isinstance(config, dict) else {}
    name = root.relative_to(run_dir).as_posix()
    summary = RunSummary(root, name, str(config.get("command", "?")), config_text, config)
    summary.metrics = _read_metrics(root / "metrics.json", summary.problems)
    curves = root / "logs" / "metrics.csv"
    summary.curves = curves if curves.is_file() else None
    own = _own_files(root)
    summary.figures = _figures(root, own)
    summary.tables = _tables(root, own, summary.problems)
    from brainlearn.report.volumes import viewer_items

    try:
        summary.volumes = viewer_items(summary, limit=viewer_sessions)
    except (BrainlearnError, OSError, ValueError, KeyError) as error:
        summary.problems.append(f"viewer: {error}")
    return summary


def _command(config_path: Path) -> str | None:
    try:
        config = yaml.safe_load(config_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return None  # listed anyway; summarize_run reports why it cannot be read
    return config.get("command") if isinstance(config, dict) else None


def _started(root: Path) -> str:
    """The first timestamp of the run's log (its start); runs without one sort last."""
    try:
        with open(root / "log.txt", encoding="utf-8", errors="replace") as log_file:
            match = _STARTED.match(log_file.readline())
    except OSError:
        match = None
    return match.group(1) if match else "9999"


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError as error:
        return f"# {path}: unreadable ({error.strerror or error})"


def _read_metrics(path: Path, problems: list[str]) -> dict[str, Any]:
    if not path.exists():
        return {}
    try:
        metrics = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        problems.append(f"{path}: unreadable ({error}); its metrics are left out")
        return {}
    if not isinstance(metrics, dict):
        problems.append(f"{path}: not a mapping of metric names to values; left out")
        return {}
    return metrics


def _own_files(root: Path) -> list[Path]:
    """Files of this run, not of a run nested below it (a folder with its own config.yaml) or a report."""
    files = []
    for folder, subfolders, names in os.walk(root):
        subfolders[:] = sorted(
            name for name in subfolders if not name.startswith(".") and not (Path(folder, name, "config.yaml")).exists()
        )
        files += [Path(folder, name) for name in sorted(names)]
    return files


def _figures(root: Path, own: list[Path]) -> dict[str, list[Path]]:
    groups: dict[str, list[Path]] = {}
    for path in own:
        if path.suffix.lower() == ".png" and not path.name.startswith("."):
            groups.setdefault(path.parent.relative_to(root).as_posix(), []).append(path)
    order = sorted(groups, key=lambda folder: (not folder.startswith(("figures", "evaluation/test")), folder))
    return {folder: groups[folder] for folder in order}


def _tables(root: Path, own: list[Path], problems: list[str]) -> list[Table]:
    import pandas as pd

    tables = []
    for path in own:
        if path.name not in INLINE_TABLES:
            continue
        try:
            frame = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)
        except (OSError, ValueError, pd.errors.ParserError) as error:
            problems.append(f"{path}: unreadable table ({error})")
            continue
        shown = frame.head(INLINE_TABLES[path.name])
        rows = [[str(value) for value in row] for row in shown.itertuples(index=False)]
        tables.append(Table(path.relative_to(root).as_posix(), list(frame.columns), rows, len(frame)))
    return tables
