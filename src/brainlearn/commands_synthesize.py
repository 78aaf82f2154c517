"""``brainlearn synthesize``: PET from MRI (or MRI from PET) with the generator of a trained ShareGAN or joint run.

One image (``--in FILE``) or every session of a table (``--table FILE`` / ``--bids DIR``) goes through the run's
:class:`~brainlearn.models.sharesynnet.ShareSynNet` the way its training data did: reoriented to RAS+, scaled to
[-1, 1] (:func:`~brainlearn.data.loaders.scale_to_range`), average-pooled by the run's ``downsample`` and padded
to a multiple of 16. The result is cut back out, upsampled to the input's grid, mapped to [0, 1] and written in
the input file's own orientation with its affine and header (float32), so it overlays the input voxel for voxel.

The output is relative intensity: 1 is the 99.5th percentile of the tissue intensities, as in the scaled training
scans. The generator never saw absolute values (SUV, counts), so none can be read from its output.

The run folder (``--out``) holds ``config.yaml``, ``log.txt``, the synthesized images
(``<input name>_<modality>.nii.gz`` for one file, ``<participant_id>_<session_id>_<modality>.nii.gz`` for a table),
``synthesized.tsv`` (table mode: the status of every session) and ``figures/synthesized.png`` (input and output
in three planes). Rerunning the same command keeps the images already written (each is written atomically, so an
image that exists is complete) and synthesizes the rest.
"""

from __future__ import annotations

import difflib
import logging
from pathlib import Path
from typing import Any

import numpy as np

from brainlearn.cli import Command
from brainlearn.errors import BrainlearnError

log = logging.getLogger("brainlearn")

# direction → (role of the input, role of the output); the roles name modalities in the run's config (mri: t1)
DIRECTIONS = {"mri-to-pet": ("mri", "pet"), "pet-to-mri": ("pet", "mri")}
MONTAGE_ROWS = 4  # sessions drawn in figures/synthesized.png
SUMMARY_COLUMNS = ("participant_id", "session_id", "input", "output", "status", "reason")


def run_synthesize(config: dict[str, Any], run) -> dict[str, Any]:
    """Synthesize the image named by ``--in``, or one per session of ``--table`` / ``--bids``, into the run folder."""
    direction = _checked_direction(config["direction"])
    _check_request(config, run.root)
    generator, saved = load_generator(config["checkpoint"])
    source, target = (saved[role] for role in DIRECTIONS[direction])
    options = {"alpha": _alpha(direction), "downsample": saved["downsample"]}
    keep = run.resumed or not run.overwrite  # outputs of another config (--overwrite) are made again
    if config["input"]:
        return _synthesize_one(
            Path(config["input"]), Path(config["out"]), generator, options, run, (source, target), keep
        )
    return _synthesize_table(config, generator, options, run, (source, target), keep)


def load_generator(checkpoint) -> tuple[Any, dict[str, Any]]:
    """The ShareSynNet of a finished ``train sharegan`` / ``train joint`` run (eval mode, on CUDA when there is one).

    Args:
        checkpoint: the run folder (its kept checkpoint is used) or a ``.ckpt`` file in its ``checkpoints/``.

    Returns:
        The generator and the run's inference.json (modalities, downsample, model_options).
    """
    import torch

    from brainlearn.checkpoints import load_module_weights
    from brainlearn.commands_synthesis import read_generator_run
    from brainlearn.models.sharesynnet import ShareSynNet

    path, saved = read_generator_run(checkpoint)
    # model_options also holds the discriminators' `downsamples`; the generator takes width and heads
    options = {key: value for key, value in dict(saved["model_options"] or {}).items() if key in ("width", "heads")}
    generator = ShareSynNet(**options)
    hint = "Pass the run folder that wrote this checkpoint; its inference.json gives the generator's model_options."
    count = load_module_weights(generator, path, "generator", hint=hint)
    log.info("generator loaded from %s (%d tensors, %s)", path, count, options or "default width")
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return generator.eval().to(device), saved


def synthesize_volume(generator, volume: np.ndarray, *, alpha: float, downsample: int = 1) -> np.ndarray:
    """Translate one volume (X, Y, Z) in RAS+ orientation; returns (X, Y, Z) float32 in [0, 1].

    Args:
        generator: a ShareSynNet (``(B, 1, X, Y, Z), alpha → (B, 1, X, Y, Z)`` in [-1, 1]), in eval mode.
        volume: intensities as read from the file (any scale; background <= 0).
        alpha: 0 MRI→PET, 1 PET→MRI.
        downsample: the training run's average-pooling factor; the output is upsampled back (trilinear).

    Returns:
        Relative intensity: 0 background, 1 the 99.5th percentile of the tissue of the scaled training scans.
    """
    import torch
    import torch.nn.functional as F

    from brainlearn.data.loaders import pad_to_multiple, scale_to_range
    from brainlearn.fast import inference_autocast

    device = next(generator.parameters()).device
    x = scale_to_range(torch.from_numpy(np.ascontiguousarray(volume, dtype=np.float32))[None])  # (1, X, Y, Z)
    if downsample > 1:
        x = F.avg_pool3d(x[None], downsample, ceil_mode=True)[0]  # (1, ⌈X/d⌉, ⌈Y/d⌉, ⌈Z/d⌉)
    x, crop = pad_to_multiple(x, generator.multiple)
    with torch.no_grad(), inference_autocast(device):
        y = generator(x[None].to(device), alpha)[0].float().cpu()  # (1, X', Y', Z')
    return restore_grid(y, crop, downsample, volume.shape)[0]


def restore_grid(y, crop: tuple[slice, ...], downsample: int, shape: tuple[int, int, int]) -> np.ndarray:
    """A model's output (C, X', Y', Z') in [-1, 1] on the padded, downsampled grid → (C, X, Y, Z) in [0, 1].

    The padding is cut away (``crop``: the slices :func:`~brainlearn.data.loaders.pad_to_multiple` returned), the
    result upsampled ×``downsample`` (trilinear) and cut to ``shape``, the input's grid; float32.
    """
    import torch.nn.functional as F

    y = y[(slice(None), *crop)]
    if downsample > 1:
        # ×d exactly (not "to X, Y, Z"): voxel centres stay where avg_pool put them; the ceil_mode overhang is cut
        y = F.interpolate(y[None], scale_factor=downsample, mode="trilinear", align_corners=False)[0]
        y = y[:, : shape[0], : shape[1], : shape[2]]
    return ((y + 1) / 2).numpy().astype(np.float32)


def synthesize_file(generator, source: Path, target: Path, *, alpha: float, downsample: int = 1) -> np.ndarray:
    """Synthesize ``source`` into ``target`` (NIfTI) on ``source``'s grid; returns the output in RAS+ order."""
    from brainlearn.io import read_image, write_like

    image = read_image(source, canonical=True)
    synthesized = synthesize_volume(generator, image.array, alpha=alpha, downsample=downsample)
    write_like(target, synthesized, source, description="brainlearn synthesize: relative intensity")
    return synthesized


def _synthesize_one(source: Path, out: Path, generator, options, run, roles, keep: bool) -> dict[str, Any]:
    target = out if _is_image_name(out) else run.root / f"{_stem(source)}_{roles[1]}.nii.gz"
    if keep and target.exists():
        log.info("%s exists: kept (remove it to synthesize it again)", target)
    else:
        synthesize_file(generator, source, target, **options)
    figure = save_synthesis_montage([(source.name, source, target)], run.figures / "synthesized.png", roles)
    log.info("look at: %s (%s synthesized from %s, relative intensity 0–1)", target, roles[1], source)
    log.info("         %s (input and output in three planes)", figure)
    return {"synthesize/n": 1, "synthesize/failed": 0, "synthesize/output": str(target)}


def _synthesize_table(config, generator, options, run, roles, keep: bool) -> dict[str, Any]:
    import pandas as pd

    from brainlearn.commands import read_input_table
    from brainlearn.evaluation import write_tsv

    source, target = roles
    table = read_input_table(config, check_files=False)  # a missing file fails its own row, not the table
    if source not in table.columns or table[source].isna().all():
        raise BrainlearnError(
            f"{config['table'] or config['bids']}: no session has a {source!r} image, which this run synthesizes "
            f"{target} from. Check the table's {source} column or --direction."
        )
    rows = []
    for n, record in enumerate(table.to_dict("records"), start=1):
        rows.append(_synthesize_row(record, generator, options, run.root, roles, keep))
        log.info("%d/%d %s %s: %s", n, len(table), record["participant_id"], record["session_id"], rows[-1]["status"])
    summary = pd.DataFrame(rows, columns=list(SUMMARY_COLUMNS))
    write_tsv(summary, run.root / "synthesized.tsv")
    counts = summary["status"].value_counts()
    done = summary[summary["status"].isin(["synthesized", "kept"])]
    shown = [(f"{r.participant_id} {r.session_id}", Path(r.input), Path(r.output)) for r in done.itertuples()]
    figure = save_synthesis_montage(shown, run.figures / "synthesized.png", roles) if shown else None
    log.info("look at: %s (status of every session), %s (%d images)", run.root / "synthesized.tsv", run.root, len(done))
    if figure:
        log.info("         %s (input and output of the first sessions in three planes)", figure)
    return {
        "synthesize/n": len(done),
        "synthesize/failed": int(counts.get("failed", 0)),
        "synthesize/skipped": int(counts.get("skipped", 0)),
        "synthesize/kept": int(counts.get("kept", 0)),
    }


def _synthesize_row(record: dict, generator, options, folder: Path, roles, keep: bool) -> dict[str, Any]:
    """One session of the table: its line of ``synthesized.tsv``; a bad image fails this row only."""
    source, target = roles
    path = record[source] if isinstance(record[source], str) and record[source] else None
    row = {key: record[key] for key in ("participant_id", "session_id")} | {"input": path}
    if path is None:
        return row | {"output": None, "status": "skipped", "reason": f"no {source} image"}
    output = folder / f"{record['participant_id']}_{record['session_id']}_{target}.nii.gz"
    row["output"] = str(output)
    if keep and output.exists():
        return row | {"status": "kept", "reason": "written by an earlier run"}
    try:
        synthesize_file(generator, Path(path), output, **options)
    except BrainlearnError as error:  # unreadable, 4D, NaN, empty: say so and go on with the others
        log.warning("failed: %s %s: %s", record["participant_id"], record["session_id"], error)
        return row | {"output": None, "status": "failed", "reason": " ".join(str(error).split())}  # one TSV line
    return row | {"status": "synthesized", "reason": None}


def save_synthesis_montage(rows, path: Path, roles: tuple[str, str]) -> Path:
    """Input and synthesized output of the first :data:`MONTAGE_ROWS` ``(title, input, output)`` rows, 3 planes."""
    from brainlearn.io import read_image
    from brainlearn.report.figures import save_montage

    panels = []
    for title, source, output in rows[:MONTAGE_ROWS]:
        image = read_image(source, canonical=True)
        synthesized = read_image(output, canonical=True, allow_empty=True)
        output_title = f"{roles[1]} synthesized"
        panels.append(
            (title, [(roles[0], image.array, image.spacing), (output_title, synthesized.array, image.spacing)])
        )
    return save_montage(panels, path)


def _checked_direction(direction) -> str:
    if direction in DIRECTIONS:
        return direction
    close = difflib.get_close_matches(str(direction), list(DIRECTIONS), n=1, cutoff=0.5)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    raise BrainlearnError(f"--direction must be {' or '.join(DIRECTIONS)}, not {direction!r}.{hint}")


def _check_request(config: dict[str, Any], root: Path) -> None:
    many = [flag for flag, key in (("--table", "table"), ("--bids", "bids")) if config[key]]
    if config["input"] and many:
        raise BrainlearnError(
            f"give either --in FILE (one image) or {' / '.join(many)} (one image per session), not both."
        )
    if not config["input"] and not many:
        raise BrainlearnError("nothing to synthesize: give --in FILE (one image) or --table FILE / --bids DIR.")
    if _is_image_name(Path(config["out"])) and not config["input"]:
        raise BrainlearnError(
            f"--out {config['out']}: an image file name takes one --in image; a table needs a folder for its "
            "images, e.g. --out synthesized."
        )


def _is_image_name(path: Path) -> bool:
    return path.name.lower().endswith((".nii", ".nii.gz"))


def run_folder(config: dict[str, Any]) -> str:
    """The run folder: ``--out``, or beside the image it names (``pet.nii.gz`` → ``pet_synthesize/``)."""
    out = Path(config["out"])
    if not _is_image_name(out):
        return str(out)
    return str(out.with_name(out.name.removesuffix(".gz").removesuffix(".nii") + "_synthesize"))


def _alpha(direction: str) -> float:
    from brainlearn.models.sharesynnet import MRI_TO_PET, PET_TO_MRI

    return MRI_TO_PET if direction == "mri-to-pet" else PET_TO_MRI


def _stem(path: Path) -> str:
    """``sub-01_T1w`` for ``sub-01_T1w.nii.gz`` (and for ``.nii``, ``.mgz``, ``.npy``)."""
    return Path(path.name.removesuffix(".gz")).stem


SYNTHESIZE_COMMAND = Command(
    name="synthesize",
    help=(
        "synthesize PET from MRI (or MRI from PET) with a trained sharegan or joint run, on the input's grid; "
        "the output is relative intensity (1 = the 99.5th percentile of the tissue, as in training), not SUV"
    ),
    defaults={
        "checkpoint": None,
        "input": None,
        "table": None,
        "bids": None,
        "direction": "mri-to-pet",
        "out": "runs/synthesized",
    },
    path_keys=("checkpoint", "input", "table", "bids", "out"),
    run=run_synthesize,
    run_folder=run_folder,
    options=(
        ("--checkpoint", "checkpoint", {"metavar": "RUN", "help": "a brainlearn train sharegan / joint run folder"}),
        (
            "--in",
            "input",
            {"metavar": "IMAGE", "help": "one image; --out OUT.nii.gz names the output (else OUT/NAME_pet.nii.gz)"},
        ),
        ("--table", "table", {"metavar": "FILE", "help": "participants table: one output per session"}),
        ("--bids", "bids", {"metavar": "DIR", "help": "BIDS folder (instead of --table)"}),
        ("--direction", "direction", {"metavar": "WAY", "help": "mri-to-pet (default) or pet-to-mri"}),
    ),
)
