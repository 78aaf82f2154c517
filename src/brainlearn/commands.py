"""What each ``brainlearn`` subcommand does, in terms of the library; :mod:`brainlearn.cli` wires them up.

Each function takes the resolved config and the open run folder and returns the metrics to record.
"""

from __future__ import annotations

import argparse
import logging
from typing import Any

from brainlearn.cli import Command
from brainlearn.errors import BrainlearnError

log = logging.getLogger("brainlearn")

_INPUT_DEFAULTS = {"table": None, "bids": None}
_INPUT_OPTIONS = (
    ("--table", "table", {"metavar": "FILE", "help": "participants table (TSV/CSV)"}),
    ("--bids", "bids", {"metavar": "DIR", "help": "BIDS folder (instead of --table)"}),
)


def read_input_table(config: dict[str, Any], *, check_files: bool = True, on_missing: str = "error"):
    """The participants table named by ``config['table']`` or ``config['bids']``."""
    from brainlearn.data.bids import read_bids
    from brainlearn.data.tables import read_table

    labels = config.get("labels")
    labels = tuple(labels) if labels else None
    if config.get("table") and config.get("bids"):
        raise BrainlearnError("give either --table or --bids, not both.")
    if config.get("bids"):
        return read_bids(config["bids"], labels=labels)
    if config.get("table"):
        return read_table(config["table"], labels=labels, check_files=check_files, on_missing=on_missing)
    raise BrainlearnError("no input: give --table FILE (a participants table) or --bids DIR.")


def run_table(config: dict[str, Any], run) -> dict[str, Any]:
    """Import a table, a BIDS folder or document 000's pair lists into one checked participants table."""
    import pandas as pd

    from brainlearn.data.pairs import read_pairs
    from brainlearn.data.tables import write_table

    parts = []
    if config["table"] or config["bids"]:
        parts.append(read_input_table(config, check_files=config["check_files"]))
    for item in config["pairs"]:
        path, _, split = str(item).partition(":")
        parts.append(read_pairs(path, split=split or None))
    if not parts:
        raise BrainlearnError("no input: give --table, --bids or --pairs FILE[:SPLIT].")
    table = pd.concat(parts, ignore_index=True)
    out = write_table(table, run.root / "participants.tsv")
    log.info("wrote %s (%d rows, %d participants)", out, len(table), table["participant_id"].nunique())
    return _table_counts(table)


def run_split(config: dict[str, Any], run) -> dict[str, Any]:
    """Assign subject-level train/val/test splits (and folds) and save the table."""
    from brainlearn.data.splits import assign_folds, assign_splits, stratum_column
    from brainlearn.data.tables import write_table

    table = read_input_table(config)
    stratify = None
    if config["stratify"]:  # one column, or several (numeric ones such as age cut into age_bins quantiles)
        table = table.assign(_stratum=stratum_column(table, config["stratify"], bins=config["age_bins"]))
        stratify = "_stratum"
    table = assign_splits(table, val=config["val"], test=config["test"], stratify=stratify, seed=config["seed"])
    if config["folds"]:
        table = assign_folds(table, k=config["folds"], stratify=stratify, seed=config["seed"])
    out = write_table(table.drop(columns="_stratum", errors="ignore"), run.root / "participants.tsv")
    log.info("wrote %s", out)
    return _table_counts(table)


def run_cache(config: dict[str, Any], run) -> dict[str, Any]:
    """Turn a table of volumes into a memory-mapped cache (this run folder)."""
    from brainlearn.data.cache import build_cache

    table = read_input_table(config, on_missing="skip")
    report = build_cache(
        table,
        run.root,
        modalities=tuple(config["modalities"]),
        dtype=config["dtype"],
        canonical=config["canonical"],
        progress=True,
        overwrite=run.overwrite,
    )
    log.info("cached %d volumes (%d skipped) in %s", report.n_volumes, report.n_skipped, run.root)
    return {
        "cache/volumes": report.n_volumes,
        "cache/skipped": report.n_skipped,
        "cache/bytes": report.bytes_written,
        "cache/seconds": report.seconds,
        "cache/skipped_subjects": [list(item) for item in report.skipped],
    }


def run_cohort(config: dict[str, Any], run) -> dict[str, Any]:
    """Generate the built-in cohort into the run folder, draw its montage and measure its effects."""
    from brainlearn.cohort.generate import generate_cohort
    from brainlearn.cohort.summary import measured_effects, read_truths, save_cohort_montage, subjects_per_second

    keys = ("subjects", "spacing", "seed", "preset", "difficulty", "external", "val", "test", "pair_lists")
    report = generate_cohort(run.root, **{key: config[key] for key in keys}, progress=True)
    montage = save_cohort_montage(run.root, report.table, run.figures / "montage.png", n=config["montage"])
    metrics = measured_effects(read_truths(run.root, report.table))
    metrics |= {
        "cohort/subjects": report.n_subjects,
        "cohort/generated_now": report.n_generated,
        "cohort/seconds": report.seconds,
        "cohort/subjects_per_s": subjects_per_second(report.n_generated, report.seconds),
    }
    metrics |= _table_counts(report.table.assign(session_id="ses-01"))
    log.info("look at: %s (montage), %s (participants)", montage, run.root / "participants.tsv")
    return metrics


def run_preprocess(config: dict[str, Any], run) -> dict[str, Any]:
    """Preprocess every session of a table or BIDS folder into the run folder."""
    import os

    from brainlearn.preprocess.pipeline import preprocess_table

    table = read_input_table(config, on_missing="skip")
    unconverted: list[tuple[str, str, str]] = []  # sessions whose scanner files would not convert: reported, skipped
    if config["convert"]:  # DICOM folders, .mgz, .mnc, ... in the table become NIfTI first (brainlearn convert)
        from brainlearn.convert import convert_table_inputs

        converted = run.root / "converted"
        table = convert_table_inputs(table, converted, average_frames=config["average_frames"], failures=unconverted)
    keys = ("steps", "spacing", "shape", "pad_to", "normalize", "suvr_reference")
    summary = preprocess_table(
        table,
        run.root,
        {key: config[key] for key in keys},
        jobs=config["jobs"] or os.cpu_count() or 1,
        failed=unconverted,
    )
    failed = summary[summary["status"] == "failed"]
    for row in failed.itertuples():
        log.warning("failed: %s %s: %s", row.participant_id, row.session_id, row.reason)
    log.info(
        "look at: %s (QC), %s (status of every session)",
        run.root / "figures" / "contact_sheet.png",
        run.root / "summary.tsv",
    )
    metrics: dict[str, Any] = {"preprocess/sessions": len(summary), "preprocess/failed": len(failed)}
    for column in summary.columns:
        if column.startswith("seconds_"):
            metrics[f"preprocess/{column}_mean"] = float(summary[column].mean())
    return metrics


def run_to_native(config: dict[str, Any], run) -> dict[str, Any]:
    """Take a map on the reference grid back to a session's native T1 grid."""
    import json
    from pathlib import Path

    from brainlearn.io import read_image, write_image
    from brainlearn.preprocess.register import load_transform, to_native

    if not config["preprocessed"] or not config["participant"] or not config["map"]:
        raise BrainlearnError("to-native needs --preprocessed DIR, --participant ID and --map FILE.")
    session = Path(config["preprocessed"]) / config["participant"] / config["session"]
    done = session / "done.json"
    if not done.exists():
        raise BrainlearnError(f"{session}: no finished preprocessing here (done.json missing).")
    outputs = json.loads(done.read_text(encoding="utf-8"))["outputs"]
    transform = load_transform(outputs["t1_to_template"])
    native = read_image(outputs["native_t1"])
    image = read_image(config["map"], allow_empty=True, allow_nonfinite=False)
    result = to_native(image, transform, native, nearest=config["nearest"])
    path = write_image(run.root / Path(config["map"]).name, result.array, result.affine)
    log.info("look at: %s (on the grid of %s)", path, outputs["native_t1"])
    return {"to_native/output": str(path)}


def run_bench(config: dict[str, Any], run) -> dict[str, Any]:
    from brainlearn.bench import run_benchmarks

    return run_benchmarks(config, run)


def run_demo(config: dict[str, Any], run) -> dict[str, Any]:
    from brainlearn.demo import run_demo as demo

    return demo(config, run)


def _table_counts(table) -> dict[str, Any]:
    from brainlearn.data.tables import IMAGE_COLUMNS

    counts: dict[str, Any] = {"rows": len(table), "participants": int(table["participant_id"].nunique())}
    for column in IMAGE_COLUMNS:
        if column in table:
            counts[f"images/{column}"] = int(table[column].notna().sum())
    for column in ("diagnosis", "split"):
        if column in table:
            values = table[column].fillna("none").astype(str)
            counts.update({f"{column}/{k}": int(v) for k, v in values.value_counts().sort_index().items()})
    if "split" in table and "diagnosis" in table:
        crossed = table.fillna({"split": "none", "diagnosis": "none"}).groupby(["split", "diagnosis"]).size()
        counts.update({f"split/{s}/{d}": int(n) for (s, d), n in crossed.items()})
    return counts


def add_check_command(subparsers) -> None:
    """``brainlearn check``: read images the way every command does and report what was found (writes nothing)."""
    sub = subparsers.add_parser(
        "check", help="check that images read cleanly; print shape, spacing, orientation, range"
    )
    sub.add_argument("images", nargs="+", metavar="IMAGE")
    sub.add_argument("--mask", metavar="FILE", help="a mask that must lie on the first image's grid")
    sub.add_argument("--canonical", action="store_true", help="report after reorienting to RAS")
    sub.set_defaults(handler=_check)


def _check(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from brainlearn.io import read_image, read_mask

    table = Table("file", "shape", "spacing (mm)", "orientation", "min", "max", "status")
    failures = 0
    first = None
    for path in args.images:
        try:
            image = read_image(path, canonical=args.canonical)
        except BrainlearnError as error:
            failures += 1
            table.add_row(str(path), "", "", "", "", "", f"[red]{error}[/red]")
            continue
        first = first or image
        spacing = "×".join(f"{s:.3g}" for s in image.spacing)
        lo, hi = float(image.array.min()), float(image.array.max())
        table.add_row(str(path), str(image.shape), spacing, image.orientation, f"{lo:.4g}", f"{hi:.4g}", "ok")
    Console().print(table)
    if args.mask and first is not None:
        read_mask(args.mask, like=first, canonical=args.canonical)
        Console().print(f"mask {args.mask}: on the grid of {first.path}")
    if failures:
        raise BrainlearnError(f"{failures} of {len(args.images)} images failed the checks (see the table).")
    return 0


COMMANDS = (
    Command(
        name="table",
        help="import a participants table, a BIDS folder or document 000's pair lists into one checked table",
        defaults={
            **_INPUT_DEFAULTS,
            "pairs": [],
            "labels": ["CN", "MCI", "AD"],
            "check_files": True,
            "out": "runs/table",
        },
        path_keys=("table", "bids", "out"),
        run=run_table,
        options=(
            *_INPUT_OPTIONS,
            (
                "--pairs",
                "pairs",
                {"nargs": "+", "metavar": "FILE[:SPLIT]", "help": "pickled (mri, pet, label) lists"},
            ),
        ),
    ),
    Command(
        name="split",
        help="assign train/val/test splits (and k folds) by participant, stratified, with a leakage check",
        defaults={
            **_INPUT_DEFAULTS,
            "labels": ["CN", "MCI", "AD"],
            "val": 0.15,
            "test": 0.15,
            "folds": 0,
            "stratify": ["diagnosis"],  # e.g. [diagnosis, age]: age-matched splits within each diagnosis
            "age_bins": 3,  # quantile bins of each numeric stratify column
            "seed": 0,
            "out": "runs/split",
        },
        path_keys=("table", "bids", "out"),
        run=run_split,
        options=(
            *_INPUT_OPTIONS,
            ("--val", "val", {"type": float, "help": "fraction of participants for validation (0.15)"}),
            ("--test", "test", {"type": float, "help": "fraction of participants for testing (0.15)"}),
            ("--folds", "folds", {"type": int, "help": "also assign K cross-validation folds"}),
            ("--seed", "seed", {"type": int, "help": "random seed (0)"}),
        ),
    ),
    Command(
        name="cache",
        help="turn a table of volumes into a memory-mapped cache that trains fast (bad subjects are skipped)",
        defaults={
            **_INPUT_DEFAULTS,
            "labels": ["CN", "MCI", "AD"],
            "modalities": ["t1"],
            "dtype": "float16",
            "canonical": True,
            "out": "runs/cache",
        },
        path_keys=("table", "bids", "out"),
        run=run_cache,
        options=(
            *_INPUT_OPTIONS,
            ("--modalities", "modalities", {"nargs": "+", "help": "image columns to cache (t1)"}),
            ("--dtype", "dtype", {"choices": ["float16", "uint8"], "help": "storage type (float16)"}),
        ),
    ),
    Command(
        name="preprocess",
        help="raw T1 / T2 / FLAIR / PET to analysis-ready volumes on the MNI grid, in parallel, resumable, with QC",
        defaults={
            **_INPUT_DEFAULTS,
            "labels": ["CN", "MCI", "AD"],
            "steps": ["n4", "skullstrip", "register", "normalize"],
            "spacing": 1.0,
            "shape": None,  # None: the MNI box of 182×218×182 mm at `spacing`
            "pad_to": None,
            "normalize": {"mr": "zscore", "pet": "suvr"},
            "suvr_reference": "pons",
            "convert": True,  # convert DICOM / MGZ / MINC / NRRD / Analyze / ECAT inputs to NIfTI first
            "average_frames": False,  # 4D PET: average the frames (duration-weighted) instead of refusing
            "jobs": 0,
            "out": "runs/preprocess",
        },
        path_keys=("table", "bids", "out"),
        run=run_preprocess,
        options=(
            *_INPUT_OPTIONS,
            ("--steps", "steps", {"nargs": "+", "help": "n4 skullstrip register normalize (all)"}),
            ("--jobs", "jobs", {"type": int, "help": "worker processes (0: one per core)"}),
            ("--spacing", "spacing", {"type": float, "help": "reference grid spacing in mm (1.0)"}),
        ),
    ),
    Command(
        name="to-native",
        help="take a map on the reference grid (e.g. an explanation) back to a session's native T1 grid",
        defaults={
            "preprocessed": None,
            "participant": None,
            "session": "ses-01",
            "map": None,
            "nearest": False,
            "out": "runs/to-native",
        },
        path_keys=("preprocessed", "map", "out"),
        run=run_to_native,
        options=(
            ("--preprocessed", "preprocessed", {"metavar": "DIR", "help": "a brainlearn preprocess run folder"}),
            ("--participant", "participant", {"help": "participant_id"}),
            ("--session", "session", {"help": "session_id (ses-01)"}),
            ("--map", "map", {"metavar": "FILE", "help": "the image on the reference grid"}),
        ),
    ),
    Command(
        name="cohort",
        help="generate the built-in cohort: MRI and FDG-PET from real anatomy with known ground truth (BIDS-like)",
        defaults={
            "subjects": 20,
            "spacing": 2.0,
            "seed": 0,
            "preset": "all",
            "difficulty": 1.0,
            "external": 0.15,
            "val": 0.15,
            "test": 0.15,
            "montage": 4,
            "pair_lists": False,
            "out": "runs/cohort",
        },
        path_keys=("out",),
        run=run_cohort,
        options=(
            ("--subjects", "subjects", {"type": int, "help": "number of participants (20)"}),
            ("--spacing", "spacing", {"type": float, "help": "voxel size in mm (2.0; 1.0 = the MNI 1 mm grid)"}),
            ("--seed", "seed", {"type": int, "help": "same seed, same bytes (0)"}),
            ("--preset", "preset", {"choices": ["ad", "ms", "aging", "all"], "help": "which effects (all)"}),
            ("--difficulty", "difficulty", {"type": float, "help": "scales every disease effect (1.0)"}),
        ),
    ),
    Command(
        name="bench",
        help="time a method (training step, inference or data path) and compare it with its plain reference",
        defaults={
            "method": "cache-read",
            # size, batch, width, steps: unset (null) takes the method's default, the reference size on a GPU
            "size": None,  # volume edge in voxels
            "n": 8,
            "repeats": 3,
            "dtype": "float16",
            "spacing": 2.0,
            "batch": None,  # volumes per step
            "width": None,  # the network's first width (ShareSynNet 32, AwareNet 64 = document 000; denoiser 64 = 003)
            "steps": None,  # sampling: denoiser calls per volume (250 = document 003)
            "precision": "bf16",  # the models' ladder: fp32 leaves out the bf16 autocast arm
            "compile": None,  # null (off), true or a torch.compile mode: adds a compiled arm to the ladder
            "num_workers": "auto",  # loader: the worker processes timed next to none
            "out": "runs/bench",
        },
        path_keys=("out",),
        run=run_bench,
        options=(
            (
                "--method",
                "method",
                {
                    "help": "what to time: a model (awarenet, sharegan, joint, inference, brain-age, segmentation, "
                    "vqgan, diffusion, sampling), all models (all), or the data path (loader, cache-read, cohort, "
                    "preprocess)"
                },
            ),
            ("--batch", "batch", {"type": int, "help": "volumes per step (the method's default)"}),
            (
                "--precision",
                "precision",
                {"choices": ("fp32", "bf16"), "help": "bf16 adds the autocast arm (bf16)"},
            ),
            (
                "--compile",
                "compile",
                {"action": "store_const", "const": True, "help": "add a torch.compile arm (minutes on a GPU)"},
            ),
            ("--size", "size", {"type": int, "help": "volume edge in voxels (the method's default)"}),
            ("--n", "n", {"type": int, "help": "number of volumes (8)"}),
        ),
    ),
    Command(
        name="demo",
        help="run the whole path on a small built-in cohort and show what to look at",
        defaults={"subjects": 64, "spacing": 2.0, "seed": 0, "epochs": 8, "n_bootstrap": 500, "out": "runs/demo"},
        path_keys=("out",),
        run=run_demo,
    ),
)

from brainlearn.commands_explain import EXPLAIN_COMMANDS  # noqa: E402
from brainlearn.commands_generation import GENERATION_COMMANDS  # noqa: E402
from brainlearn.commands_pretrain import PRETRAIN_COMMANDS  # noqa: E402
from brainlearn.commands_report import REPORT_COMMAND  # noqa: E402
from brainlearn.commands_segment import SEGMENT_COMMANDS  # noqa: E402
from brainlearn.commands_synthesis import SYNTHESIS_COMMANDS  # noqa: E402
from brainlearn.commands_synthesize import SYNTHESIZE_COMMAND  # noqa: E402
from brainlearn.commands_train import TRAIN_COMMANDS  # noqa: E402  (it imports Command from cli, as this module does)
from brainlearn.convert.command import CONVERT_COMMAND  # noqa: E402
from brainlearn.experiments import EXPERIMENT_COMMANDS  # noqa: E402

COMMANDS = (
    CONVERT_COMMAND,
    *COMMANDS,
    *TRAIN_COMMANDS,
    *SYNTHESIS_COMMANDS,
    SYNTHESIZE_COMMAND,
    *SEGMENT_COMMANDS,
    *PRETRAIN_COMMANDS,
    *GENERATION_COMMANDS,
    *EXPERIMENT_COMMANDS,
    *EXPLAIN_COMMANDS,
    REPORT_COMMAND,
)
