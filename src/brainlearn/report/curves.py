"""Training curves from a run's ``logs/metrics.csv`` (Lightning's CSV logger), one panel per quantity.

Lightning writes a row per logging event, with ``train/loss_step`` and ``train/loss_epoch`` twins for values logged
both ways. A panel shows one quantity (``loss``, ``auroc``, ``loss_g`` ...) against the epoch: the epoch means of
training and the validation values side by side; per-step values only where there is no epoch mean.
"""

from __future__ import annotations

import os
from pathlib import Path

from brainlearn.errors import BrainlearnError

MAX_PANELS = 9


def curve_panels(csv_path: str | os.PathLike) -> tuple[str, dict[str, dict[str, tuple[list, list]]]]:
    """The x axis (``epoch``, or ``step`` in logs without epochs) and quantity → series name (``train/loss``,
    ``val/loss``) → (x, y)."""
    import pandas as pd

    try:
        frame = pd.read_csv(csv_path)
    except (OSError, ValueError, pd.errors.ParserError) as error:
        raise BrainlearnError(f"{csv_path}: unreadable training log ({error}).") from error
    x_column = "epoch" if "epoch" in frame else "step"
    if x_column not in frame:
        raise BrainlearnError(f"{csv_path}: neither an 'epoch' nor a 'step' column; not a Lightning CSV log.")
    columns = [name for name in frame.columns if name not in ("epoch", "step")]
    panels: dict[str, dict[str, tuple[list[float], list[float]]]] = {}
    for name in columns:
        if name.endswith("_step") and name.removesuffix("_step") + "_epoch" in frame:
            continue
        values = frame[[x_column, name]].apply(pd.to_numeric, errors="coerce").dropna()
        if values.empty:
            continue
        series = name.removesuffix("_epoch").removesuffix("_step")
        quantity = series.split("/", 1)[-1]
        panels.setdefault(quantity, {})[series] = (values[x_column].tolist(), values[name].tolist())
    return x_column, dict(list(panels.items())[:MAX_PANELS])


def save_training_curves(csv_path: str | os.PathLike, path: str | os.PathLike, *, dpi: int = 100) -> Path | None:
    """Draw the panels of :func:`curve_panels` into ``path`` (PNG); None when the log holds no numbers yet."""
    from brainlearn.report.evaluation import _pyplot, save_figure

    plt = _pyplot()
    x_label, panels = curve_panels(csv_path)
    if not panels:
        return None
    columns = min(3, len(panels))
    rows = -(-len(panels) // columns)
    figure, axes = plt.subplots(rows, columns, figsize=(4.2 * columns, 3.0 * rows), squeeze=False)
    for ax, (quantity, series) in zip(axes.flat, panels.items(), strict=False):
        for name, (x, y) in sorted(series.items()):
            ax.plot(x, y, marker="o" if len(x) < 30 else None, markersize=3, label=name)
        ax.set_title(quantity)
        ax.set_xlabel(x_label)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(panels) :]:
        ax.axis("off")
    return save_figure(figure, path, dpi)
