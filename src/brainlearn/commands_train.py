"""``brainlearn train classify | brain-age`` and ``brainlearn evaluate``: the supervised half of the pipeline.

A training run folder holds, besides the trainer's files (:mod:`brainlearn.trainer`): ``cache/`` when it was given
a table instead of a cache, ``selection.json`` (the checkpoint kept and what was fitted on the validation split:
the decision threshold, or the brain-age bias correction) and ``evaluation/<split>/`` for each held-out split
(metrics with 95 % intervals, predictions, figures). ``brainlearn evaluate`` applies the same to any other table.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from brainlearn.cli import Command
from brainlearn.errors import BrainlearnError
from brainlearn.trainer import TRAINER_DEFAULTS

log = logging.getLogger("brainlearn")

GROUPS = {
    "train": "train a model: classify (diagnosis), brain-age, segment (lesions), sharegan (MRI↔PET), joint",
    "pretrain": "self-supervised and generative pretraining: simclr, context-encoder, inpaint, vqgan, diffusion",
    "experiment": "experiments over many runs: label-efficiency",
    "explain": "importance maps of a trained classifier or brain-age model: gradcam, attention, occlusion, noise",
}

_DATA_DEFAULTS = {
    "cache": None,  # a `brainlearn cache` folder; or give table / bids and the run caches them itself
    "table": None,
    "bids": None,
    "labels": ["CN", "MCI", "AD"],
    "modalities": ["t1"],
    "downsample": 1,  # average-pool the volumes by this factor (2: 2 mm → 4 mm)
    "augment": True,
    "intensity": "zscore",  # or "range": [-1, 1] as document 000 (needed by train joint)
    "batch_size": 2,
    "num_workers": "auto",  # DataLoader workers: auto = none without a GPU (brainlearn.data.loaders.make_loader)
}
INFERENCE_FILE = "inference.json"  # what inference needs, written by the generative and synthesis runs
_EVALUATE_DEFAULTS = {"splits": ["test", "external"], "n_bootstrap": 2000}
_DATA_OPTIONS = (
    ("--init-from", "init_from", {"metavar": "CKPT", "help": "initialize the backbone from a pretrained checkpoint"}),
    (
        "--freeze-encoder",
        "freeze_encoder",
        {"action": "store_const", "const": True, "help": "keep that backbone fixed"},
    ),
    ("--cache", "cache", {"metavar": "DIR", "help": "a brainlearn cache folder"}),
    ("--table", "table", {"metavar": "FILE", "help": "participants table with a split column (cached into the run)"}),
    ("--bids", "bids", {"metavar": "DIR", "help": "BIDS folder (instead of --table)"}),
    ("--model", "model", {"help": "awarenet, resnet3d, densenet3d, resnet50_slices, sfcn"}),
    ("--modalities", "modalities", {"nargs": "+", "help": "input channels, e.g. t1 pet"}),
)


def open_cache(config: dict[str, Any], root: Path, modalities):
    """The cache named by ``config['cache']``, or one built in ``root/cache`` from the table or BIDS folder."""
    from brainlearn.commands import read_input_table
    from brainlearn.data.cache import Cache, build_cache

    if config["cache"]:
        return Cache(config["cache"])
    table = read_input_table(config, on_missing="skip")
    report = build_cache(table, root / "cache", modalities=tuple(modalities), progress=True)
    if report.n_skipped:
        log.warning("%d sessions left out of the cache (see %s)", report.n_skipped, root / "cache" / "manifest.json")
    return Cache(root / "cache")


def run_train_classify(config: dict[str, Any], run) -> dict[str, Any]:
    """Train a diagnosis classifier, choose its checkpoint and threshold on validation, evaluate held-out splits."""
    from brainlearn.data.loaders import class_counts, training_loaders
    from brainlearn.trainer import fit

    classes = _classes(config["classes"])
    cache = open_cache(config, run.root, config["modalities"])
    train, val = training_loaders(cache, **_loader_settings(config), classes=classes, seed=config["trainer"]["seed"])
    counts = class_counts(train.dataset, classes)
    if min(counts.values()) == 0:
        raise BrainlearnError(f"the training split has {counts}; every class needs sessions. Check the table.")
    log.info("training on %s, validating on %d sessions", counts, len(val.dataset))
    module = build_module("classify", config)
    fit(module, run.root, config["trainer"], train_dataloaders=train, val_dataloaders=val)
    return select_and_evaluate("classify", module, cache, config, run)


def run_train_brain_age(config: dict[str, Any], run) -> dict[str, Any]:
    """Train a brain-age regressor on healthy participants; fit the bias correction on validation; evaluate."""
    from brainlearn.data.loaders import training_loaders
    from brainlearn.trainer import fit

    cache = open_cache(config, run.root, config["modalities"])
    healthy = _classes(config["train_diagnoses"], binary=False)
    train, val = training_loaders(cache, **_loader_settings(config), classes=healthy, seed=config["trainer"]["seed"])
    ages = train.dataset.ages
    if len(ages) < 4 or not (ages == ages).all():
        raise BrainlearnError(f"brain age needs ages for at least 4 training sessions of {healthy}; found {ages}.")
    log.info("training on %d sessions of %s aged %.0f–%.0f", len(ages), healthy, ages.min(), ages.max())
    module = build_module("brain-age", config, age_mean=float(ages.mean()), age_std=float(ages.std()))
    fit(module, run.root, config["trainer"], train_dataloaders=train, val_dataloaders=val)
    return select_and_evaluate("brain-age", module, cache, config, run)


def build_module(task: str, config: dict[str, Any], **extra):
    """The LightningModule of ``task`` from a run's config: the one place config names become objects."""
    from brainlearn.methods.brain_age import BrainAgeModule
    from brainlearn.methods.supervised import ClassifierModule
    from brainlearn.models.networks import build_network

    channels, opt = len(config["modalities"]), dict(config["optimizer"])
    if task == "classify":
        classes = _classes(config["classes"])
        network = build_network(
            config["model"],
            in_channels=channels,
            outputs=len(classes),
            options=config["model_options"],
            dropout=config["dropout"],
        )
        _initialize(network, config)
        return ClassifierModule(
            network,
            classes,
            lr=opt["lr"],
            betas=tuple(opt["betas"]),
            weight_decay=opt["weight_decay"],
            lr_decay=opt["lr_decay"],
            freeze_backbone=bool(config.get("freeze_encoder")),
        )
    network = build_network(
        config["model"], in_channels=channels, outputs=1, options=config["model_options"], dropout=config["dropout"]
    )
    _initialize(network, config)
    if config.get("freeze_encoder"):
        network.backbone.requires_grad_(False)  # AdamW skips parameters without gradients
    return BrainAgeModule(
        network,
        age_mean=extra.get("age_mean", 0.0),
        age_std=extra.get("age_std", 1.0),
        loss=config["loss"],
        ranking_weight=config["ranking_weight"],
        lr=opt["lr"],
        weight_decay=opt["weight_decay"],
        lr_decay=opt["lr_decay"],
    )


def _initialize(network, config: dict[str, Any]) -> None:
    """``init_from``: copy a pretrained backbone (e.g. ``brainlearn pretrain simclr``) into ``network``."""
    if not config.get("init_from"):
        if config.get("freeze_encoder"):
            raise BrainlearnError("freeze_encoder needs init_from: freezing a random backbone trains only the head.")
        return
    if not hasattr(network, "backbone"):
        raise BrainlearnError(
            f"init_from: {config['model']} has no separate backbone to initialize; use a backbone "
            "model (resnet3d, densenet3d, resnet50_slices, sfcn)."
        )
    load_backbone(network.backbone, Path(config["init_from"]))


def load_backbone(backbone, path: Path) -> None:
    """Load every ``...backbone.<name>`` tensor of a checkpoint into ``backbone``; all must be there and fit."""
    from brainlearn.checkpoints import load_module_weights

    hint = "Pretrain the same model with the same model_options and modalities."
    count = load_module_weights(backbone, path, "backbone", hint=hint)
    log.info("backbone initialized from %s (%d tensors)", path, count)


def select_and_evaluate(task: str, module, cache, config: dict[str, Any], run) -> dict[str, Any]:
    """Load the kept checkpoint, fit threshold / bias correction on validation, then score the held-out splits."""
    from brainlearn.atomic import write_json
    from brainlearn.evaluation import write_tsv

    checkpoint = _kept_checkpoint(run.root)
    _load_weights(module, checkpoint)
    val = _predictions(task, module, cache, config, "val")
    selection = {"checkpoint": checkpoint.name, **_fit_on_validation(task, val, config)}
    write_tsv(val, run.root / "evaluation" / "val" / "predictions.tsv")  # what the selection was fitted on
    write_json(run.root / "selection.json", selection)
    metrics: dict[str, Any] = {"selection/checkpoint": checkpoint.name}
    for split in config["evaluate"]["splits"]:
        if split not in set(cache.index["split"].dropna()):
            continue
        try:
            predictions = _predictions(task, module, cache, config, split)
        except BrainlearnError as error:  # e.g. no session of the model's classes in this split
            log.warning("not evaluated on %s: %s", split, error)
            continue
        report = _report(task, predictions, run.root / "evaluation" / split, config, selection)
        metrics |= {f"{split}/{key}": value for key, value in report.items() if _scalar_or_interval(value)}
        log.info("look at: %s", run.root / "evaluation" / split)
    return metrics


def _fit_on_validation(task: str, val, config: dict[str, Any]) -> dict[str, Any]:
    from brainlearn.metrics import choose_threshold

    if task == "classify":
        classes = _classes(config["classes"])
        if len(classes) != 2 or val["label"].nunique() < 2:
            return {"threshold": 0.5}
        return {"threshold": choose_threshold(val["label"], val[f"p_{classes[1]}"])}
    from brainlearn.metrics_brain_age import fit_bias_correction

    healthy = val[val["diagnosis"].isin(config["train_diagnoses"])]
    if len(healthy) < 3:
        log.warning(
            "only %d validation sessions of %s: the bias correction is fitted on all %d validation sessions instead",
            len(healthy),
            config["train_diagnoses"],
            len(val),
        )
        healthy = val
    if len(healthy) < 3 or healthy["age"].nunique() < 2:
        log.warning("too few validation sessions to fit the brain-age bias correction; gaps are left uncorrected")
        return {"bias_correction": None}
    fitted = fit_bias_correction(healthy["age"], healthy["predicted_age"])
    return {"bias_correction": {"slope": fitted.slope, "intercept": fitted.intercept, "n": len(healthy)}}


def _predictions(task: str, module, cache, config: dict[str, Any], split: str | None):
    from brainlearn.data.loaders import evaluation_dataset
    from brainlearn.evaluation import predict

    classes = _classes(config["classes"]) if task == "classify" else None
    dataset = evaluation_dataset(
        cache,
        modalities=config["modalities"],
        classes=classes,
        split=split,
        downsample=config["downsample"],
        intensity=config.get("intensity", "zscore"),  # runs written before this setting have no such key
    )
    return predict(module, dataset, batch_size=config["batch_size"])


def _report(task: str, predictions, folder: Path, config: dict[str, Any], selection: dict[str, Any]):
    from brainlearn.evaluation import brain_age_report, write_classifier_report

    n = config["evaluate"]["n_bootstrap"]
    if task == "classify":
        return write_classifier_report(
            predictions, _classes(config["classes"]), folder, threshold=selection["threshold"], n_bootstrap=n
        )
    return brain_age_report(predictions, folder, correction=selection["bias_correction"], n_bootstrap=n)


def read_finished_run(
    checkpoint, commands: tuple[str, ...], *, required: tuple[str, ...] = ("modalities",)
) -> tuple[Path, dict, dict]:
    """The run folder of ``--checkpoint`` (a folder or a .ckpt in its checkpoints/), its config and selection.

    ``required`` names the config keys the caller needs besides ``command``.

    Raises:
        BrainlearnError: no checkpoint given, the folder is not a finished run of one of ``commands``, or its
            config.yaml / selection.json cannot be read or lacks what evaluation needs.
    """
    import json

    import yaml

    if not checkpoint:
        raise BrainlearnError("--checkpoint is needed: a training run folder or a .ckpt file in one.")
    source = Path(checkpoint)
    run_dir = source if source.is_dir() else source.parent.parent
    saved_path, selection_path = run_dir / "config.yaml", run_dir / "selection.json"
    if not saved_path.is_file() or not selection_path.is_file():
        raise BrainlearnError(
            f"{run_dir}: not a finished brainlearn training run (config.yaml or selection.json missing). "
            f"Pass the folder a `brainlearn {' / '.join(commands)}` command wrote."
        )
    try:
        saved = yaml.safe_load(saved_path.read_text(encoding="utf-8"))
        selection = json.loads(selection_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, yaml.YAMLError) as error:
        raise BrainlearnError(f"{run_dir}: its config.yaml or selection.json cannot be read ({error}).") from error
    if not isinstance(saved, dict) or saved.get("command") not in commands:
        found = saved.get("command") if isinstance(saved, dict) else None
        raise BrainlearnError(f"{run_dir}: a {found!r} run; this command takes {' or '.join(commands)} runs.")
    missing = [key for key in required if key not in saved]
    if not isinstance(selection, dict) or "checkpoint" not in selection or missing:
        raise BrainlearnError(
            f"{run_dir}: selection.json or config.yaml lacks the kept checkpoint or {', '.join(required)}."
        )
    return run_dir, saved, selection


def read_inference_run(source, commands: tuple[str, ...], keys: tuple[str, ...]) -> tuple[Path, dict, dict]:
    """The kept checkpoint (or the given .ckpt), ``inference.json`` and config of a finished run of ``commands``.

    Raises:
        BrainlearnError: not such a run, or its inference.json is missing, damaged or lacks one of ``keys``.
    """
    import json

    run_dir, saved, selection = read_finished_run(source, commands, required=())
    path = run_dir / INFERENCE_FILE
    try:
        settings = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise BrainlearnError(f"{path}: cannot be read ({error}); the run did not finish. Rerun it.") from error
    missing = [key for key in keys if not isinstance(settings, dict) or key not in settings]
    if missing:
        raise BrainlearnError(f"{path}: lacks {', '.join(missing)}; rerun the training into a new folder.")
    given = Path(source)
    return (given if given.is_file() else run_dir / "checkpoints" / selection["checkpoint"]), settings, saved


def load_trained_model(checkpoint) -> tuple[str, Any, dict, dict]:
    """The task (``classify`` or ``brain-age``), module with the kept (or given) checkpoint, config and selection
    of a finished ``train classify`` / ``train brain-age`` run."""
    source = Path(checkpoint or "")
    run_dir, saved, selection = read_finished_run(checkpoint, ("train classify", "train brain-age"))
    task = saved["command"].removeprefix("train ")
    module = build_module(task, {**saved, "init_from": None, "freeze_encoder": False})
    _load_weights(module, source if source.is_file() else run_dir / "checkpoints" / selection["checkpoint"])
    return task, module, saved, selection


def run_evaluate(config: dict[str, Any], run) -> dict[str, Any]:
    """Score a trained run's model on any table, cache or BIDS folder (an external MRI-only set included)."""
    commands = ("train classify", "train brain-age", "train joint")
    _, saved, selection = read_finished_run(config["checkpoint"], commands, required=())
    if saved["command"] == "train joint":
        from brainlearn.synthesis_evaluation import evaluate_joint_run

        return evaluate_joint_run(config, run, selection)
    task, module, saved, selection = load_trained_model(config["checkpoint"])
    cache = open_cache(config, run.root, saved["modalities"])
    split = None if config["split"] in (None, "all") else config["split"]
    predictions = _predictions(task, module, cache, saved, split)
    saved["evaluate"] = {**saved["evaluate"], "n_bootstrap": config["n_bootstrap"]}
    report = _report(task, predictions, run.root, saved, selection)
    log.info("look at: %s (metrics with 95 %% intervals), %s", run.root / "metrics.json", run.root)
    return {key: value for key, value in report.items() if _scalar_or_interval(value)}


def run_baseline(config: dict[str, Any], run) -> dict[str, Any]:
    """The classical reference: atlas hippocampus and ventricle volumes → logistic regression (and brain age)."""
    import os

    from brainlearn.atomic import write_json
    from brainlearn.baseline import (
        fit_volume_age_model,
        fit_volume_classifier,
        predict_volume_age,
        predict_volume_classifier,
        volume_table,
    )
    from brainlearn.commands import read_input_table
    from brainlearn.evaluation import brain_age_report, write_classifier_report, write_tsv
    from brainlearn.metrics import choose_threshold
    from brainlearn.metrics_brain_age import fit_bias_correction

    classes = _classes(config["classes"])
    if len(classes) != 2:
        raise BrainlearnError(f"the volume baseline separates two classes (e.g. [CN, AD]), not {list(classes)}.")
    path = run.root / "volumes.tsv"
    if path.exists():  # measured by an earlier, interrupted or finished, run with this config
        import pandas as pd

        volumes = pd.read_csv(path, sep="\t")
    else:
        volumes = volume_table(read_input_table(config, on_missing="skip"), jobs=config["jobs"] or os.cpu_count())
        write_tsv(volumes, path)
    log.info("measured %d sessions: %s", len(volumes), path)
    classifier = fit_volume_classifier(volumes, classes=classes, features=tuple(config["features"]))
    scored = volumes.assign(label=[classes.index(d) if d in classes else -1 for d in volumes["diagnosis"]])
    scored["p_" + classes[1]] = predict_volume_classifier(classifier, volumes)
    scored["p_" + classes[0]] = 1 - scored["p_" + classes[1]]
    val = scored[(scored["split"] == "val") & (scored["label"] >= 0)]
    threshold = choose_threshold(val["label"], val["p_" + classes[1]]) if val["label"].nunique() == 2 else 0.5
    age_model = fit_volume_age_model(volumes, diagnoses=tuple(config["train_diagnoses"]))
    scored["predicted_age"] = predict_volume_age(age_model, volumes)
    healthy_val = scored[(scored["split"] == "val") & scored["diagnosis"].isin(config["train_diagnoses"])]
    fitted = fit_bias_correction(healthy_val["age"], healthy_val["predicted_age"]) if len(healthy_val) >= 3 else None
    correction = {"slope": fitted.slope, "intercept": fitted.intercept} if fitted else None
    write_json(run.root / "selection.json", {"threshold": threshold, "bias_correction": correction})
    metrics: dict[str, Any] = {}
    n = config["n_bootstrap"]
    for split in config["splits"]:
        rows = scored[scored["split"] == split]
        if rows.empty:
            continue
        labelled = rows[rows["label"] >= 0]
        if labelled["label"].nunique() == 2:
            report = write_classifier_report(
                labelled, classes, run.root / "evaluation" / split / "classify", threshold=threshold, n_bootstrap=n
            )
            metrics |= {f"{split}/{k}": v for k, v in report.items() if _scalar_or_interval(v)}
        age = brain_age_report(
            rows, run.root / "evaluation" / split / "brain-age", correction=correction, n_bootstrap=n
        )
        metrics |= {f"{split}/brain_age/{k}": v for k, v in age.items() if _scalar_or_interval(v)}
        log.info("look at: %s", run.root / "evaluation" / split)
    return metrics


def _kept_checkpoint(root: Path) -> Path:
    best, last = root / "checkpoints" / "best.ckpt", root / "checkpoints" / "last.ckpt"
    if best.exists():
        return best
    if last.exists():
        return last
    raise BrainlearnError(f"{root}: training wrote no checkpoint; see {root / 'log.txt'}.")


def _load_weights(module, path: Path) -> None:
    from brainlearn.checkpoints import load_checkpoint

    state = load_checkpoint(path)
    if "state_dict" not in state:
        raise BrainlearnError(f"{path}: not a brainlearn/Lightning checkpoint (no state_dict).")
    try:
        module.load_state_dict(state["state_dict"])
    except RuntimeError as error:
        raise BrainlearnError(f"{path}: its weights do not fit the run's model ({str(error)[:300]}).") from error


def _classes(classes, *, binary: bool = True) -> tuple[str, ...]:
    classes = (classes,) if isinstance(classes, str) else tuple(classes)
    if len(set(classes)) != len(classes) or len(classes) < (2 if binary else 1):
        raise BrainlearnError(f"classes must be distinct diagnoses, at least {2 if binary else 1}: not {classes}.")
    return classes


def _loader_settings(config: dict[str, Any]) -> dict[str, Any]:
    keys = ("modalities", "batch_size", "downsample", "augment", "intensity", "num_workers")
    return {key: config[key] for key in keys}


def _scalar_or_interval(value) -> bool:
    return isinstance(value, int | float | str) or (isinstance(value, list) and len(value) == 3)


_CLASSIFY_TRAINER = {**TRAINER_DEFAULTS, "max_epochs": 80, "monitor": "val/loss", "mode": "min", "patience": 10}
_AGE_TRAINER = {**TRAINER_DEFAULTS, "max_epochs": 60, "monitor": "val/mae", "mode": "min", "patience": 15}

TRAIN_COMMANDS = (
    Command(
        name="classify",
        group="train",
        help="train a diagnosis classifier (AD vs CN, or CN / MCI / AD) on MRI, PET or both",
        defaults={
            **_DATA_DEFAULTS,
            "classes": ["CN", "AD"],  # label order; the last is the positive class of a binary task
            "model": "awarenet",
            "model_options": {},
            "dropout": 0.0,
            "init_from": None,  # a pretrained checkpoint whose backbone initializes this model
            "freeze_encoder": False,
            # document 000's AwareNet stage: Adam 1e-4, β1 0.5, ×0.95 per epoch, patience 10
            "optimizer": {"lr": 1e-4, "betas": [0.5, 0.999], "weight_decay": 0.0, "lr_decay": 0.95},
            "trainer": _CLASSIFY_TRAINER,
            "evaluate": _EVALUATE_DEFAULTS,
            "out": "runs/classify",
        },
        path_keys=("cache", "table", "bids", "init_from", "out"),
        run=run_train_classify,
        options=(*_DATA_OPTIONS, ("--classes", "classes", {"nargs": "+", "help": "CN AD, or CN MCI AD"})),
    ),
    Command(
        name="brain-age",
        group="train",
        help="train a brain-age regressor on healthy participants; the gap is bias-corrected on validation data",
        defaults={
            **_DATA_DEFAULTS,
            "train_diagnoses": ["CN"],
            "classes": None,
            "model": "sfcn",
            "model_options": {},
            "dropout": 0.0,
            "init_from": None,
            "freeze_encoder": False,
            "loss": "mse",
            "ranking_weight": 1.0,
            "optimizer": {"lr": 1e-3, "betas": [0.9, 0.999], "weight_decay": 1e-4, "lr_decay": 0.97},
            "trainer": _AGE_TRAINER,
            "evaluate": _EVALUATE_DEFAULTS,
            "out": "runs/brain-age",
        },
        path_keys=("cache", "table", "bids", "init_from", "out"),
        run=run_train_brain_age,
        options=(*_DATA_OPTIONS, ("--loss", "loss", {"help": "mse, l1, mse+ranking, l1+ranking"})),
    ),
    Command(
        name="evaluate",
        help="score a trained classifier, brain-age or joint model on any table (MRI only is enough), with bootstrap "
        "confidence intervals",
        defaults={
            "checkpoint": None,
            "cache": None,
            "table": None,
            "bids": None,
            "labels": ["CN", "MCI", "AD"],
            "split": "test",
            "n_bootstrap": 2000,
            "out": "runs/evaluate",
        },
        path_keys=("checkpoint", "cache", "table", "bids", "out"),
        run=run_evaluate,
        options=(
            ("--checkpoint", "checkpoint", {"metavar": "RUN_OR_CKPT", "help": "a training run folder or checkpoint"}),
            ("--cache", "cache", {"metavar": "DIR", "help": "a brainlearn cache folder"}),
            ("--table", "table", {"metavar": "FILE", "help": "participants table"}),
            ("--bids", "bids", {"metavar": "DIR", "help": "BIDS folder"}),
            ("--split", "split", {"help": "the split to score (test); all: every session"}),
        ),
    ),
)

BASELINE_COMMAND = Command(
    name="baseline",
    help="the classical reference: atlas hippocampus and ventricle volumes after registration, logistic regression",
    defaults={
        "table": None,
        "bids": None,
        "labels": ["CN", "MCI", "AD"],
        "classes": ["CN", "AD"],
        "features": ["hippocampus_fraction", "ventricles_fraction"],
        "train_diagnoses": ["CN"],
        "splits": ["test", "external"],
        "n_bootstrap": 2000,
        "jobs": 0,
        "out": "runs/baseline",
    },
    path_keys=("table", "bids", "out"),
    run=run_baseline,
    options=(
        ("--table", "table", {"metavar": "FILE", "help": "participants table with t1 and split columns"}),
        ("--bids", "bids", {"metavar": "DIR", "help": "BIDS folder"}),
        ("--jobs", "jobs", {"type": int, "help": "worker processes (0: one per core)"}),
    ),
)
TRAIN_COMMANDS = (*TRAIN_COMMANDS, BASELINE_COMMAND)
