"""Which NIfTI outputs of a run the page's viewer opens, and over which image.

Every output worth seeing in 3D is drawn over the scan it belongs to, found through the run's own config (its
``cache`` index or ``table``), so that a user can scroll through the same slices the model saw:

- ``train segment``: the predicted lesion masks of each evaluated split (red) and the true masks (green) over FLAIR;
- ``synthesize``: the synthesized PET over the MRI it was made from;
- ``explain ...``: each importance map over the image it explains;
- ``sample``: the sampled volumes on their own.

An overlay is put over the first candidate scan on the same grid (shape and affine); with none it is shown alone.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from brainlearn.report.collect import Layer, RunSummary, ViewerItem

BASE_MODALITIES = ("flair", "t1", "t2", "pet")  # the order a base image is looked for
_SESSION = re.compile(r"^(?P<participant>sub-[^_]+)_(?P<session>ses-[^_]+)_")


def viewer_items(summary: RunSummary, *, limit: int) -> list[ViewerItem]:
    """At most ``limit`` items per kind of output of the run (e.g. sessions of each evaluated split)."""
    command = summary.command
    kind = "explain" if command.startswith("explain ") else command
    finder = _FINDERS.get(kind)
    if finder is None or limit <= 0:
        return []
    items: list[ViewerItem] = []
    for group in finder(summary):
        items += [item for _, item in zip(range(limit), group, strict=False)]
    return items


def _segmentations(summary: RunSummary) -> Iterator[Iterator[ViewerItem]]:
    scans = _scans(summary.config)
    for folder in sorted(summary.root.glob("evaluation/*/masks")):
        yield _segmentation_items(folder, scans)


def _segmentation_items(folder: Path, scans: dict) -> Iterator[ViewerItem]:
    split = folder.parent.name
    for predicted in sorted(folder.glob("*_lesions.nii.gz")):
        session = _session_of(predicted.name)
        candidates = scans.get(session, {})
        layers = [_base_layer(predicted, candidates)]
        truth = candidates.get("mask")
        if truth is not None and _same_grid(truth, predicted):
            layers.append(Layer(truth, "mask", "green", 0.5, 0.5, 1.0))
        layers.append(Layer(predicted, "mask", "red", 0.6, 0.5, 1.0))
        title = f"{' '.join(session)} ({split}): predicted lesions (red), true lesions (green)"
        yield ViewerItem(title, tuple(layer for layer in layers if layer is not None))


def _syntheses(summary: RunSummary) -> Iterator[Iterator[ViewerItem]]:
    import pandas as pd

    listing = summary.root / "synthesized.tsv"
    if not listing.is_file():
        return
    table = pd.read_csv(listing, sep="\t", dtype=str, keep_default_na=False)
    done = table[table["status"] == "synthesized"]

    def items() -> Iterator[ViewerItem]:
        for row in done.itertuples(index=False):
            output, source = _resolve(summary.root, row.output), _resolve(summary.root, row.input)
            layers = [Layer(source, "image"), Layer(output, "image", "warm", 0.5)] if source.is_file() else []
            layers = layers or [Layer(output, "image", "warm")]
            yield ViewerItem(
                f"{row.participant_id} {row.session_id}: synthesized PET over the input MRI", tuple(layers)
            )

    yield items()


def _explanations(summary: RunSummary) -> Iterator[Iterator[ViewerItem]]:
    import pandas as pd

    listing = summary.root / "sessions.tsv"
    if not listing.is_file():
        return
    table = pd.read_csv(listing, sep="\t", dtype=str, keep_default_na=False)
    scans = _scans(summary.config)
    for column in [name for name in table.columns if name.startswith("map_")]:
        yield _explanation_items(summary.root, table, column, scans)


def _explanation_items(root: Path, table, column: str, scans: dict) -> Iterator[ViewerItem]:
    for row in table.itertuples(index=False):
        path = _resolve(root, getattr(row, column))
        if not path.is_file():
            continue
        session = (row.participant_id, row.session_id)
        layers = (_base_layer(path, scans.get(session, {})), Layer(path, "map", "hot", 0.55, 0.2, 1.0))
        title = f"{' '.join(session)} ({row.diagnosis}): {column.removeprefix('map_')} importance over the input"
        yield ViewerItem(title, tuple(layer for layer in layers if layer is not None))


def _samples(summary: RunSummary) -> Iterator[Iterator[ViewerItem]]:
    paths = sorted(summary.root.glob("*.nii.gz"))
    yield (
        ViewerItem(f"{path.name.removesuffix('.nii.gz')}: sampled volume", (Layer(path, "image"),)) for path in paths
    )


_FINDERS: dict[str, Callable[[RunSummary], Iterator[Iterator[ViewerItem]]]] = {
    "train segment": _segmentations,
    "synthesize": _syntheses,
    "explain": _explanations,
    "sample": _samples,
}


def _scans(config: dict) -> dict[tuple[str, str], dict[str, Path]]:
    """(participant_id, session_id) → modality → file, from the run's cache index or participants table."""
    import pandas as pd

    if config.get("cache"):
        index = Path(config["cache"]) / "index.tsv"
        if not index.is_file():
            return {}
        frame = pd.read_csv(index, sep="\t", dtype=str, keep_default_na=False)
        columns = {name.removesuffix("_source"): name for name in frame.columns if name.endswith("_source")}
    elif config.get("table"):
        from brainlearn.data.tables import read_table

        frame = read_table(config["table"], check_files=False)
        columns = {name: name for name in (*BASE_MODALITIES, "mask") if name in frame.columns}
    else:
        return {}
    scans = {}
    for row in frame.to_dict("records"):
        files = {modality: Path(str(row[column])) for modality, column in columns.items() if row[column]}
        scans[(str(row["participant_id"]), str(row["session_id"]))] = {
            modality: path for modality, path in files.items() if str(path) not in ("", "nan") and path.is_file()
        }
    return scans


def _base_layer(overlay: Path, candidates: dict[str, Path]) -> Layer | None:
    for modality in BASE_MODALITIES:
        path = candidates.get(modality)
        if path is not None and _same_grid(path, overlay):
            return Layer(path, "image")
    return None


def _same_grid(path: Path, other: Path) -> bool:
    """Whether two files' headers describe the same voxel grid (read from the headers only)."""
    import nibabel as nib

    try:
        a, b = nib.load(path), nib.load(other)
    except Exception:  # noqa: BLE001 — an unreadable candidate is simply not a base; the viewer reports the overlay
        return False
    return a.shape[:3] == b.shape[:3] and np.allclose(a.affine, b.affine, atol=1e-3)


def _session_of(name: str) -> tuple[str, str]:
    match = _SESSION.match(name)
    return (match["participant"], match["session"]) if match else (name, "")


def _resolve(root: Path, value: str) -> Path:
    path = Path(value)
    return path if path.is_absolute() else root / path
