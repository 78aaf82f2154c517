"""``brainlearn experiment label-efficiency``: does pretraining let a model learn from fewer labels?

For each fraction of the labelled training participants and each seed, the same participants (drawn per class,
by participant, with that seed) train two models that differ only in their start: from scratch, and from the
pretrained backbone. Both keep the checkpoint and threshold chosen on the full validation split and are scored on
the same test split. Document 001 compared a pretrained arm with ImageNet weights against a random one and chose
models on the test set; here the arms differ in the pretraining alone and test data is only ever scored.

::

    OUT/f<fraction>/seed<k>/<scratch|pretrained>/   a training run folder each (resumable)
    OUT/results.tsv        one row per run: fraction, seed, arm, participants, test metrics
    OUT/summary.tsv, summary.md    mean ± SD over seeds per fraction and arm
    OUT/figures/label_efficiency.png
"""

from __future__ import annotations

import logging
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pandas as pd

from brainlearn.cli import Command
from brainlearn.errors import BrainlearnError
from brainlearn.trainer import TRAINER_DEFAULTS

log = logging.getLogger("brainlearn")

ARMS = ("scratch", "pretrained")


def run_label_efficiency(config: dict[str, Any], run) -> dict[str, Any]:
    """Train both arms at every fraction and seed; write the table, the summary and the plot."""
    from brainlearn.atomic import write_json
    from brainlearn.commands_train import _classes, open_cache
    from brainlearn.evaluation import write_tsv

    if not config["pretrained"]:
        raise BrainlearnError("label-efficiency needs --pretrained CKPT (e.g. a brainlearn pretrain simclr run).")
    fractions = _fractions(config["fractions"])
    check_metrics(config["metrics"])  # before hours of training, not when the table is written
    classes = _classes(config["classes"])
    cache = open_cache(config, run.root, config["modalities"])
    rows = []
    for fraction in fractions:
        for seed in range(config["seeds"]):
            chosen = sample_participants(cache, classes, fraction, seed)
            for arm in ARMS:
                folder = run.root / f"f{fraction:g}" / f"seed{seed}" / arm
                result = _train_arm(cache, config, arm, chosen, seed, folder)
                rows.append({"fraction": fraction, "seed": seed, "arm": arm, "participants": len(chosen), **result})
                log.info("fraction %g %% seed %d %s: %s", fraction, seed, arm, result)
    results = pd.DataFrame(rows)
    write_tsv(results, run.root / "results.tsv")
    summary = summarize_runs(results, config["metrics"])
    write_tsv(summary, run.root / "summary.tsv")
    (run.root / "summary.md").write_text(_markdown(summary, config["metrics"]) + "\n", encoding="utf-8")
    figure = save_label_efficiency_plot(summary, config["metrics"][0], run.figures / "label_efficiency.png")
    write_json(run.root / "experiment.json", {"fractions": fractions, "seeds": config["seeds"], "arms": ARMS})
    log.info("look at: %s, %s", figure, run.root / "summary.md")
    metric = config["metrics"][0]
    return {
        f"label_efficiency/{row['arm']}/{row['fraction']:g}/{metric}": float(row[f"{metric}_mean"])
        for _, row in summary.iterrows()
    }


def sample_participants(cache, classes, fraction: float, seed: int) -> set[str]:
    """``fraction`` % of the training participants of each class (at least one each), drawn with ``seed``."""
    index = cache.index
    train = index[(index["split"] == "train") & index["diagnosis"].isin(classes)]
    rng = np.random.default_rng([seed, int(round(fraction * 1000))])
    chosen: set[str] = set()
    for diagnosis in classes:
        participants = sorted(set(train.loc[train["diagnosis"] == diagnosis, "participant_id"]))
        if not participants:
            raise BrainlearnError(f"the training split has no {diagnosis} participant; check the table's splits.")
        n = max(1, int(round(len(participants) * fraction / 100)))
        chosen |= set(rng.choice(participants, size=n, replace=False).tolist())
    return chosen


def _train_arm(cache, config: dict[str, Any], arm: str, chosen: set[str], seed: int, folder: Path) -> dict:
    import torch
    from torch.utils.data import RandomSampler, Subset

    from brainlearn.commands_train import build_module, select_and_evaluate
    from brainlearn.data.loaders import make_loader, training_loaders
    from brainlearn.trainer import fit

    settings = {
        **config,
        "init_from": config["pretrained"] if arm == "pretrained" else None,
        "freeze_encoder": bool(config["freeze_encoder"]) and arm == "pretrained",
        "evaluate": {"splits": ["test"], "n_bootstrap": config["n_bootstrap"]},
        "trainer": {**config["trainer"], "seed": seed},
    }
    train, val = training_loaders(
        cache,
        modalities=config["modalities"],
        classes=config["classes"],
        batch_size=config["batch_size"],
        downsample=config["downsample"],
        augment=config["augment"],
        num_workers=config["num_workers"],
        seed=seed,
    )
    keep = [i for i, (participant, _) in enumerate(train.dataset.ids) if participant in chosen]
    # equal_steps: an epoch of the few draws as many (augmented) samples as an epoch of the whole training split,
    # so every fraction makes as many optimizer steps; without it 1 % of 92 participants is one step per epoch
    draws = len(train.dataset) if config["equal_steps"] else len(keep)
    sampler = RandomSampler(
        keep, replacement=draws > len(keep), num_samples=draws, generator=torch.Generator().manual_seed(seed)
    )
    subset = make_loader(
        Subset(train.dataset, keep), batch_size=config["batch_size"], sampler=sampler, num_workers=config["num_workers"]
    )
    module = build_module("classify", settings)
    fit(module, folder, settings["trainer"], train_dataloaders=subset, val_dataloaders=val)
    metrics = select_and_evaluate("classify", module, cache, settings, SimpleNamespace(root=folder))
    return {name: metrics[f"test/{name}"][0] for name in config["metrics"] if f"test/{name}" in metrics}


def summarize_runs(results: pd.DataFrame, metrics) -> pd.DataFrame:
    """Mean and SD over seeds of each metric, per fraction and arm."""
    grouped = results.groupby(["fraction", "arm"])
    summary = grouped[list(metrics)].agg(["mean", "std"])
    summary.columns = [f"{metric}_{stat}" for metric, stat in summary.columns]
    summary["runs"] = grouped.size()
    summary["participants"] = grouped["participants"].first()
    return summary.reset_index()


def save_label_efficiency_plot(summary: pd.DataFrame, metric: str, path: Path) -> Path:
    """The metric (mean ± SD over seeds) against the labelled fraction, one line per arm."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from brainlearn.atomic import atomic_path

    fig, axis = plt.subplots(figsize=(5, 3.5))
    for arm, rows in summary.groupby("arm"):
        axis.errorbar(
            rows["fraction"],
            rows[f"{metric}_mean"],
            yerr=rows[f"{metric}_std"].fillna(0),
            marker="o",
            capsize=3,
            label=arm,
        )
    axis.set_xscale("log")
    fractions = sorted(summary["fraction"].unique())
    axis.set_xticks(fractions, [f"{f:g}" for f in fractions])  # the fractions run, not powers of ten
    axis.minorticks_off()
    if metric == "roc_auc":
        axis.axhline(0.5, color="grey", linestyle=":", linewidth=1, label="chance")
    axis.set_xlabel("labelled training participants (%)")
    axis.set_ylabel(f"test {metric}")
    axis.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return path


def _markdown(summary: pd.DataFrame, metrics) -> str:
    header = "| fraction % | arm | participants | runs | " + " | ".join(f"{m} (mean ± SD)" for m in metrics) + " |"
    lines = [header, "|" + "---|" * (4 + len(metrics))]
    for r in summary.itertuples():
        values = " | ".join(f"{getattr(r, f'{m}_mean'):.3f} ± {getattr(r, f'{m}_std'):.3f}" for m in metrics)
        lines.append(f"| {r.fraction:g} | {r.arm} | {r.participants} | {r.runs} | {values} |")
    return "\n".join(lines)


_METRICS = ("accuracy", "balanced_accuracy", "sensitivity", "specificity", "precision", "f1", "mcc", "roc_auc")


def check_metrics(metrics) -> None:
    """Refuse an empty list or unknown names of test metrics, before any training."""
    names = list(metrics) if isinstance(metrics, list | tuple) else []
    unknown = [str(m) for m in names if m not in _METRICS]
    if not names or unknown:
        extra = f" ({', '.join(unknown)} unknown)" if unknown else ""
        raise BrainlearnError(f"metrics must be a non-empty list of {', '.join(_METRICS)}, not {metrics!r}{extra}.")


def _fractions(values) -> list[float]:
    values = [values] if isinstance(values, int | float | str) else list(values)
    try:
        fractions = sorted({float(v) for v in values})
    except (TypeError, ValueError) as error:
        raise BrainlearnError(f"fractions must be percentages such as [1, 10, 100], not {values!r}.") from error
    if not fractions or fractions[0] <= 0 or fractions[-1] > 100:
        raise BrainlearnError(f"fractions must be percentages in (0, 100], not {values!r}.")
    return fractions


EXPERIMENT_COMMANDS = (
    Command(
        name="label-efficiency",
        group="experiment",
        help="fine-tune from a pretrained backbone and train from scratch on the same few labels, at several fractions",
        defaults={
            "cache": None,
            "table": None,
            "bids": None,
            "labels": ["CN", "MCI", "AD"],
            "pretrained": None,
            "fractions": [1, 10, 20, 50, 100],
            "seeds": 3,
            "classes": ["CN", "AD"],
            "modalities": ["t1"],
            "model": "sfcn",
            "model_options": {},
            "dropout": 0.0,
            "freeze_encoder": False,
            "equal_steps": True,
            "downsample": 2,
            "augment": True,
            "batch_size": 4,
            "num_workers": "auto",
            "metrics": ["roc_auc", "balanced_accuracy"],
            "n_bootstrap": 200,
            "optimizer": {"lr": 1e-4, "betas": [0.9, 0.999], "weight_decay": 1e-8, "lr_decay": 1.0},
            "trainer": {
                **TRAINER_DEFAULTS,
                "max_epochs": 20,
                "monitor": "val/loss",
                "mode": "min",
                "patience": 5,
                "progress_bar": False,
            },
            "out": "runs/label-efficiency",
        },
        path_keys=("cache", "table", "bids", "pretrained", "out"),
        run=run_label_efficiency,
        options=(
            ("--cache", "cache", {"metavar": "DIR", "help": "a brainlearn cache folder"}),
            ("--bids", "bids", {"metavar": "DIR", "help": "BIDS folder (instead of --cache)"}),
            ("--pretrained", "pretrained", {"metavar": "CKPT", "help": "the pretrained checkpoint (its backbone)"}),
            ("--fractions", "fractions", {"help": "percentages of the labelled participants, e.g. 1,10,100"}),
            ("--seeds", "seeds", {"type": int, "help": "seeds per fraction (3)"}),
        ),
    ),
)
