"""``brainlearn report``: one self-contained folder with ``index.html`` for one or several run folders.

The folder opens from disk without a server and without a network: figures are copied into ``assets/``, training
curves drawn there, the viewer's volumes written as small scripts into ``viewer/`` (a classic ``<script src>`` loads
from ``file://``, where a fetch would be refused), and NiiVue's script — bundled into the package when it is built
— copied beside the page. ``index.html`` is written last, so a page that exists refers only to files that do.

Layout: a header with what was reported; with several RUN_DIRs, a side-by-side section (every metric of the runs
found at the same place in each, one column per RUN_DIR, and their figures next to each other); then one section per
run: its problems, metrics with 95 % intervals, training curves, the result tables, figures grouped by folder
(evaluation figures, montages, explanation overlays), the 3D viewer, and the resolved config.
"""

from __future__ import annotations

import datetime
import logging
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from brainlearn import __version__
from brainlearn.atomic import atomic_path, write_error, write_text
from brainlearn.errors import BrainlearnError
from brainlearn.report.collect import RunSummary, ViewerItem, find_runs, summarize_run
from brainlearn.report.html import comparison_section, page, run_section

log = logging.getLogger(__name__)


@dataclass
class RunDir:
    """One RUN_DIR given on the command line and the runs found in it."""

    path: Path
    label: str
    runs: list[RunSummary]


@dataclass(frozen=True)
class Written:
    index: Path
    runs: int
    figures: int
    volumes: int
    problems: int


def write_report(
    run_dirs: Sequence[str | Path], out: str | Path, *, viewer_sessions: int = 3, max_size: int = 128, title=None
) -> Written:
    """Write the report of ``run_dirs`` into the folder ``out`` (``out/index.html`` and what it shows)."""
    if not run_dirs:
        raise BrainlearnError("no run folder given: brainlearn report RUN_DIR [RUN_DIR ...]")
    out = Path(out)
    labels = _labels([Path(path) for path in run_dirs])
    found = [RunDir(Path(path), label, []) for path, label in zip(run_dirs, labels, strict=True)]
    for run_dir in found:
        roots = [root for root in find_runs(run_dir.path) if not _inside(root, out)]
        run_dir.runs = [summarize_run(root, run_dir.path, viewer_sessions=viewer_sessions) for root in roots]
    assets = _Assets(out, max_size)
    sections = []
    if len(found) > 1:
        sections.append(comparison_section(found, assets.figure))
    for number, run_dir in enumerate(found):
        for run in run_dir.runs:
            anchor = f"r{number}-{_slug(run.name)}"
            curves = assets.curves(run, anchor)
            viewer = assets.viewer(run)
            sections.append(run_section(run, run_dir.label, anchor, assets.figure, curves, viewer))
    niivue = assets.niivue()
    heading = title or "brainlearn report: " + ", ".join(run_dir.label for run_dir in found)
    made = datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    about = f"brainlearn {__version__}, {made}" + (f", NiiVue {niivue}" if niivue else ", no 3D viewer (see below)")
    html = page(heading, about, found, sections, volume_scripts=assets.scripts, niivue=niivue is not None)
    index = out / "index.html"
    write_text(index, html)
    problems = sum(len(run.problems) for run_dir in found for run in run_dir.runs) + len(assets.problems)
    return Written(index, sum(len(run_dir.runs) for run_dir in found), assets.n_figures, len(assets.scripts), problems)


class _Assets:
    """Files copied or drawn into the report folder, each once, under names that cannot collide."""

    def __init__(self, out: Path, max_size: int):
        self.out, self.max_size = out, max_size
        self.scripts: list[str] = []  # viewer/<key>.js, relative to out
        self.problems: list[str] = []
        self.n_figures = 0
        self._copied: dict[Path, str] = {}
        self._volumes: dict[tuple[Path, str], tuple[str, list[float] | None]] = {}
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise write_error(out, error) from error

    def figure(self, source: Path) -> str:
        """The page's relative link to a copy of ``source`` (a PNG of a run folder)."""
        if source not in self._copied:
            relative = f"assets/{len(self._copied):03d}-{_slug(source.stem)}{source.suffix.lower()}"
            _copy(source, self.out / relative)
            self._copied[source] = relative
            self.n_figures += 1
        return self._copied[source]

    def curves(self, run: RunSummary, anchor: str) -> str | None:
        from brainlearn.report.curves import save_training_curves

        if run.curves is None:
            return None
        relative = f"assets/{anchor}-curves.png"
        if _newer(self.out / relative, run.curves):
            return relative  # drawn by an earlier report from the same log (matplotlib takes about 1 s a figure)
        try:
            drawn = save_training_curves(run.curves, self.out / relative)
        except BrainlearnError as error:
            run.problems.append(str(error))
            return None
        return relative if drawn else None

    def viewer(self, run: RunSummary) -> list[dict]:
        """The viewer items of ``run`` as the page's JSON (title, layers with their volume keys)."""
        items = []
        for item in run.volumes:
            try:
                items.append(self._item(item))
            except BrainlearnError as error:
                run.problems.append(f"viewer item '{item.title}' left out: {error}")
        return items

    def _item(self, item: ViewerItem) -> dict:
        base = item.layers[0].path if item.layers and item.layers[0].kind == "image" else None
        layers, focus = [], None
        for layer in item.layers:
            key, point = self._volume(layer.path, layer.kind, within=base if layer.kind == "map" else None)
            shown = {"key": key, "colormap": layer.colormap, "opacity": layer.opacity}
            if layer.cal_min is not None:
                shown |= {"cal_min": layer.cal_min, "cal_max": layer.cal_max}
            layers.append(shown)
            focus = point if point is not None else focus  # the top overlay's: the lesion, the map's peak
        shown = {"title": item.title, "layers": layers}
        return shown | {"focus_mm": focus} if focus is not None else shown

    def _volume(self, source: Path, kind: str, *, within: Path | None) -> tuple[str, list[float] | None]:
        """The volume's key in the page and its focus; each file is written once however many items show it."""
        from brainlearn.report.viewer import write_volume

        if (source, kind) not in self._volumes:
            key = f"v{len(self._volumes)}"
            written = write_volume(source, self.out / "viewer", key, kind=kind, max_size=self.max_size, within=within)
            self._volumes[(source, kind)] = (key, written.focus_mm)
            self.scripts.append(f"viewer/{key}.js")
        return self._volumes[(source, kind)]

    def niivue(self) -> str | None:
        """Copy NiiVue and the viewer script beside the page; NiiVue's version, None if the build did not bundle it."""
        from brainlearn.report.viewer import NIIVUE_FILE, niivue_script, viewer_script

        _copy(viewer_script(), self.out / "viewer.js")
        script = niivue_script()
        if script is None:
            log.warning(
                "NiiVue is not bundled in this installation (it is fetched from npm when the package is built: "
                "run `make install` or `pip install .`); the report has no 3D viewer."
            )
            return None
        _copy(script, self.out / NIIVUE_FILE)
        notice = script.with_name("NIIVUE_LICENSE.txt")
        if notice.is_file():
            _copy(notice, self.out / notice.name)
        return _niivue_version(notice)


def _newer(target: Path, source: Path) -> bool:
    """Whether ``target`` exists and was written after ``source`` last changed."""
    try:
        return target.stat().st_mtime >= source.stat().st_mtime
    except FileNotFoundError:
        return False


def _copy(source: Path, target: Path) -> None:
    """Copy atomically; a copy already there with the same size and a later time is kept (reruns)."""
    try:
        if target.is_file() and target.stat().st_size == source.stat().st_size and _newer(target, source):
            return
        target.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(target) as tmp:
            shutil.copyfile(source, tmp)
    except FileNotFoundError as error:
        raise BrainlearnError(f"{source}: vanished while the report was written; rerun the report.") from error


def _niivue_version(notice: Path) -> str:
    try:
        first = notice.read_text(encoding="utf-8").splitlines()[0]
    except (OSError, IndexError):
        return "bundled"
    return next((word for word in first.split() if word[:1].isdigit()), "bundled")


def _labels(paths: list[Path]) -> list[str]:
    """Short distinct names for the RUN_DIRs: the folder name, with its parents where names repeat."""
    resolved = [path.resolve() for path in paths]
    for depth in range(1, max(len(path.parts) for path in resolved) + 1):
        labels = ["/".join(path.parts[-depth:]) for path in resolved]
        if len(set(labels)) == len(labels):
            return labels
    raise BrainlearnError(f"the same run folder is given twice: {[str(p) for p in paths]}; give each once.")


def _inside(root: Path, out: Path) -> bool:
    return root.resolve() == out.resolve() or out.resolve() in root.resolve().parents


def _slug(text: str) -> str:
    slug = "".join(ch if ch.isalnum() else "-" for ch in text.lower()).strip("-")
    return slug or "run"
