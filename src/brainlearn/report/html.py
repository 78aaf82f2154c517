"""The report's HTML: plain markup, every value escaped, no script but NiiVue and the viewer's.

Elements carry classes and ``data-name`` attributes that say what they show (``figure[data-name=roc]``,
``table.metrics``, ``table.result-table[data-name=regions]``), for the reader's browser find and for tests.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from html import escape
from typing import Any, NamedTuple

from brainlearn.report.collect import RunSummary, Table

OPEN_ROWS = 40  # longer metric tables start folded
CSS = """
body { font: 15px/1.45 system-ui, sans-serif; margin: 0; color: #1d2329; background: #f6f7f9; }
header { background: #1f3a5f; color: white; padding: 1rem 2rem; }
header h1 { margin: 0 0 .3rem; font-size: 1.5rem; } header p { margin: 0; opacity: .85; }
nav { padding: .6rem 2rem; background: #e8ecf1; font-size: .9rem; } nav a { margin-right: 1rem; }
main { padding: 0 2rem 3rem; } section.run { background: white; margin: 1.5rem 0; padding: 1rem 1.5rem;
  border-radius: 6px; box-shadow: 0 1px 3px rgba(0,0,0,.12); }
h2 { font-size: 1.25rem; margin: .2rem 0 .6rem; } h2 small { font-weight: normal; color: #5b6570; }
h3 { font-size: 1.05rem; margin: 1.2rem 0 .4rem; } h4 { margin: .8rem 0 .3rem; font-size: .95rem; }
table { border-collapse: collapse; font-size: .85rem; margin: .3rem 0; }
th, td { border-bottom: 1px solid #dde2e7; padding: .2rem .6rem; text-align: left; vertical-align: top; }
th { background: #eef1f4; } td.number { font-variant-numeric: tabular-nums; text-align: right; }
.gallery { display: flex; flex-wrap: wrap; gap: .8rem; } figure { margin: 0; max-width: 48%; }
figure img { max-width: 100%; border: 1px solid #dde2e7; } figcaption { font-size: .8rem; color: #5b6570; }
.side-by-side { display: grid; gap: .8rem; } .problems { background: #fff4e5; border-left: 4px solid #e59400;
  padding: .4rem .8rem; } pre.config { background: #f3f5f7; padding: .6rem; overflow-x: auto; font-size: .8rem; }
.viewer canvas { width: 100%; height: 420px; display: block; background: black; }
.viewer select { margin: .3rem 0; max-width: 100%; } .viewer-status { font-size: .85rem; color: #8a4b00; }
.notice { color: #8a4b00; } .scroll { overflow-x: auto; max-width: 100%; }
"""


class Section(NamedTuple):
    anchor: str
    title: str
    html: str


def page(heading: str, about: str, run_dirs, sections: Sequence[Section], *, volume_scripts, niivue: bool) -> str:
    """The whole index.html."""
    nav = " ".join(f'<a href="#{s.anchor}">{escape(s.title)}</a>' for s in sections)
    listed = "; ".join(f"{escape(d.label)}: {len(d.runs)} run{'s' * (len(d.runs) != 1)}" for d in run_dirs)
    scripts = ['<script src="niivue.umd.js"></script>'] if niivue else []
    scripts += [f'<script src="{escape(path)}"></script>' for path in volume_scripts]
    scripts.append('<script src="viewer.js"></script>')
    return "\n".join(
        [
            "<!DOCTYPE html>",
            '<html lang="en"><head><meta charset="utf-8">',
            '<meta name="viewport" content="width=device-width, initial-scale=1">',
            f"<title>{escape(heading)}</title><style>{CSS}</style></head><body>",
            f"<header><h1>{escape(heading)}</h1><p>{escape(about)} — {listed}</p></header>",
            f"<nav>{nav}</nav><main>",
            *(section.html for section in sections),
            "</main>",
            *scripts,
            "</body></html>",
        ]
    )


def run_section(
    run: RunSummary, label: str, anchor: str, link: Callable, curves: str | None, viewer: list[dict]
) -> Section:
    """One run: problems, metrics, curves, tables, figures, viewer, config."""
    where = label if run.name == "." else f"{label}/{run.name}"
    parts = [f'<section class="run" id="{anchor}" data-command="{escape(run.command)}">']
    parts.append(f"<h2>{escape(run.command)} <small>{escape(where)}</small></h2>")
    if run.problems:
        items = "".join(f"<li>{escape(problem)}</li>" for problem in run.problems)
        parts.append(f'<div class="problems"><strong>Problems</strong><ul>{items}</ul></div>')
    if run.metrics:
        parts.append(_metrics(run.metrics))
    if curves:
        parts.append("<h3>Training curves</h3>" + _figure(curves, "training curves (logs/metrics.csv)", "curves"))
    for table in run.tables:
        parts.append(_table(table))
    for folder, paths in run.figures.items():
        images = "".join(_figure(link(path), path.name, path.stem) for path in paths)
        opened = " open" if folder in ("figures", ".") or folder.startswith("evaluation/test") else ""
        parts.append(
            f"<details{opened}><summary><h3 style='display:inline'>Figures: {escape(folder)}/</h3></summary>"
            f'<div class="gallery">{images}</div></details>'
        )
    if run.volumes:  # viewer: the items that could be written (none: a notice)
        parts.append(_viewer(viewer))
    parts.append(f'<details><summary>Config</summary><pre class="config">{escape(run.config_text)}</pre></details>')
    parts.append("</section>")
    title = where if len(where) < 40 else "…" + where[-38:]
    return Section(anchor, title, "\n".join(parts))


def comparison_section(run_dirs, link: Callable) -> Section:
    """Runs found at the same place in several RUN_DIRs: their metrics in columns, their figures side by side."""
    by_name: dict[str, list] = {}
    for run_dir in run_dirs:
        for run in run_dir.runs:
            by_name.setdefault(run.name, []).append((run_dir.label, run))
    parts = ['<section class="run" id="side-by-side"><h2>Side by side</h2>']
    shared = {name: runs for name, runs in by_name.items() if len(runs) > 1}
    if not shared:
        parts.append('<p class="notice">The RUN_DIRs hold no runs at the same place; each is shown below.</p>')
    for name, runs in shared.items():
        parts.append(f"<h3>{escape(runs[0][1].command)} <small>{escape(name)}</small></h3>")
        parts.append(_metric_columns(runs))
        parts.append(_figure_rows(runs, link))
    parts.append("</section>")
    return Section("side-by-side", "side by side", "\n".join(parts))


def _metrics(metrics: dict[str, Any]) -> str:
    rows = [(key, *format_metric(value)) for key, value in sorted(_flat(metrics).items())]
    body = "".join(
        f"<tr><td>{escape(key)}</td><td class='number'>{escape(value)}</td><td class='number'>{escape(interval)}</td>"
        "</tr>"
        for key, value, interval in rows
    )
    table = f'<table class="metrics"><tr><th>metric</th><th>value</th><th>95 % CI</th></tr>{body}</table>'
    opened, folded = (" open", "") if len(rows) <= OPEN_ROWS else ("", " (folded: click to open)")
    return f"<details{opened}><summary><h3 style='display:inline'>Metrics</h3>{folded}</summary>{table}</details>"


def _metric_columns(runs: list) -> str:
    flat = [_flat(run.metrics) for _, run in runs]
    keys = sorted({key for metrics in flat for key in metrics})
    head = "".join(f"<th>{escape(label)}</th>" for label, _ in runs)
    body = []
    for key in keys:
        cells = []
        for metrics in flat:
            value = metrics.get(key)
            shown = "" if value is None else " ".join(part for part in format_metric(value) if part)
            cells.append(f"<td class='number'>{escape(shown)}</td>")
        body.append(f"<tr><td>{escape(key)}</td>{''.join(cells)}</tr>")
    table = f'<table class="metrics comparison"><tr><th>metric</th>{head}</tr>{"".join(body)}</table>'
    return f'<div class="scroll">{table}</div>'


def _figure_rows(runs: list, link: Callable) -> str:
    names: dict[str, dict[str, Any]] = {}
    for label, run in runs:
        for folder, paths in run.figures.items():
            for path in paths:
                names.setdefault(f"{folder}/{path.name}", {})[label] = path
    rows = []
    for name, found in names.items():
        if len(found) < 2:
            continue
        cells = "".join(_figure(link(path), f"{label}: {name}", path.stem) for label, path in found.items())
        columns = f"grid-template-columns: repeat({len(found)}, 1fr)"
        rows.append(f'<div class="side-by-side" style="{columns}">{cells}</div>')
    return "".join(rows)


def _table(table: Table) -> str:
    head = "".join(f"<th>{escape(name)}</th>" for name in table.header)
    body = "".join("<tr>" + "".join(f"<td>{escape(cell)}</td>" for cell in row) + "</tr>" for row in table.rows)
    more = f" (first {len(table.rows)} of {table.total} rows)" if table.total > len(table.rows) else ""
    name = table.title.rsplit("/", 1)[-1].removesuffix(".tsv")
    return (
        f"<h3>Table: {escape(table.title)}{escape(more)}</h3>"
        f'<div class="scroll"><table class="result-table" data-name="{escape(name)}"><tr>{head}</tr>{body}</table>'
        "</div>"
    )


def _figure(src: str, caption: str, name: str) -> str:
    return (
        f'<figure data-name="{escape(name)}"><img src="{escape(src)}" alt="{escape(caption)}" loading="eager">'
        f"<figcaption>{escape(caption)}</figcaption></figure>"
    )


def _viewer(items: list[dict]) -> str:
    if not items:
        return '<h3>3D viewer</h3><p class="notice">No volume of this run could be read (see Problems).</p>'
    data = escape(json.dumps(items), quote=True)
    return (
        f'<h3>3D viewer</h3><div class="viewer" data-items="{data}"><select class="viewer-select"></select>'
        '<canvas class="viewer-canvas"></canvas><p class="viewer-status"></p></div>'
    )


def format_metric(value: Any) -> tuple[str, str]:
    """(value, 95 % interval) as shown: ``[estimate, lower, upper]`` lists are bootstrap intervals."""
    if isinstance(value, list) and len(value) == 3 and all(_is_number(v) for v in value):
        return _number(value[0]), f"{_number(value[1])}–{_number(value[2])}"
    if _is_number(value):
        return _number(value), ""
    if isinstance(value, str | bool) or value is None:
        return str(value), ""
    return json.dumps(value)[:200], ""


def _number(value) -> str:
    value = float(value)
    if not math.isfinite(value):
        return "n/a" if math.isnan(value) else str(value)
    if value == int(value) and abs(value) < 1e9:
        return str(int(value))
    return f"{value:.4g}"


def _is_number(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _flat(metrics: dict, prefix: str = "") -> dict[str, Any]:
    flat = {}
    for key, value in metrics.items():
        if isinstance(value, dict):
            flat |= _flat(value, f"{prefix}{key}/")
        else:
            flat[f"{prefix}{key}"] = value
    return flat
