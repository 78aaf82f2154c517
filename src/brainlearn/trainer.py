"""The Lightning trainer every brainlearn method trains with, and the run folder it fills.

A run folder after :func:`fit`::

    run_dir/
      checkpoints/last.ckpt     newest state; a later fit() into the same folder resumes from it
      checkpoints/best.ckpt     best by ``monitor`` (only when a metric is monitored)
      logs/metrics.csv          every logged value (CSV), appended to across resumes
      logs/tensorboard/         the same values for TensorBoard
      metrics.json              final metrics, global_step and epoch

Settings are the ``trainer`` section of a config: :data:`TRAINER_DEFAULTS` updated with the caller's
overrides.
"""

from __future__ import annotations

import csv
import difflib
import json
import logging
import os
import sys
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any, get_args

import lightning
import torch
from lightning.fabric.loggers.logger import rank_zero_experiment
from lightning.fabric.plugins.precision.precision import (
    _PRECISION_INPUT_STR,
    _PRECISION_INPUT_STR_ALIAS_CONVERSION,
)
from lightning.pytorch.callbacks import Callback, EarlyStopping, RichProgressBar, TQDMProgressBar
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter

from brainlearn.atomic import atomic_path, write_json
from brainlearn.checkpoints import LAST_NAME, AtomicCheckpointIO, checkpoint_callbacks, read_global_step
from brainlearn.epoch_means import EpochMeans
from brainlearn.errors import BrainlearnError
from brainlearn.fast import COMPILE_MODES, compile_networks, native_bf16, to_channels_last
from brainlearn.random_states import RandomStates

logger = logging.getLogger(__name__)

TRAINER_DEFAULTS: dict[str, Any] = {
    "max_epochs": 10,
    "max_steps": -1,  # -1: no step limit
    "accelerator": "auto",
    "devices": 1,
    "num_nodes": 1,
    "strategy": "auto",
    # batch norm statistics over the global batch when several processes train (a 3D batch per GPU is often 1-4
    # volumes), so that n processes train as one with the same global batch; auto = on CUDA (torch's SyncBatchNorm
    # runs on GPUs only)
    "sync_batchnorm": "auto",
    "precision": "auto",  # see choose_precision
    "seed": 0,
    "deterministic": False,
    "accumulate_grad_batches": 1,
    "gradient_clip_val": None,
    "log_every_n_steps": 10,
    "val_check_interval": 1.0,
    "checkpoint_every_n_steps": None,  # None: last.ckpt at each epoch end only
    "monitor": None,  # e.g. "val/loss": keeps best.ckpt, needed for early stopping
    "mode": "min",
    "patience": None,  # None: no early stopping
    "progress_bar": True,
    "channels_last": "auto",  # weights in channels-last memory: auto = on a CUDA GPU (brainlearn.fast)
    "compile": False,  # torch.compile each network: false, true or a mode (default, reduce-overhead, max-autotune)
}

PRECISIONS = get_args(_PRECISION_INPUT_STR)


def resolve_settings(overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Merge ``overrides`` into :data:`TRAINER_DEFAULTS` and check them.

    Raises:
        BrainlearnError: An unknown key (with the closest known one), or settings that do not fit together.
    """
    overrides = dict(overrides or {})
    for key in overrides:
        if key not in TRAINER_DEFAULTS:
            close = difflib.get_close_matches(key, TRAINER_DEFAULTS, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            known = ", ".join(TRAINER_DEFAULTS)
            raise BrainlearnError(f"trainer: unknown setting {key!r}.{hint} Known settings: {known}.")
    settings = {**TRAINER_DEFAULTS, **overrides}
    if settings["mode"] not in ("min", "max"):
        raise BrainlearnError(f"trainer.mode: expected 'min' or 'max', not {settings['mode']!r}.")
    if settings["patience"] is not None and settings["monitor"] is None:
        raise BrainlearnError(
            "trainer.patience: early stopping needs a metric to watch; set trainer.monitor (e.g. 'val/loss')."
        )
    every = settings["checkpoint_every_n_steps"]
    if every is not None and (isinstance(every, bool) or not isinstance(every, int) or every < 1):
        raise BrainlearnError(f"trainer.checkpoint_every_n_steps: expected a positive integer or None, not {every!r}.")
    if settings["channels_last"] not in ("auto", True, False):
        raise BrainlearnError(
            f"trainer.channels_last: expected auto, true or false, not {settings['channels_last']!r}."
        )
    if settings["sync_batchnorm"] not in ("auto", True, False):
        raise BrainlearnError(
            f"trainer.sync_batchnorm: expected auto, true or false, not {settings['sync_batchnorm']!r}."
        )
    if settings["compile"] not in (True, False, *COMPILE_MODES):
        raise BrainlearnError(
            f"trainer.compile: expected false, true or one of {', '.join(COMPILE_MODES)}, not {settings['compile']!r}."
        )
    return settings


def on_cuda(accelerator: str) -> bool:
    """Whether ``accelerator`` (a trainer setting) trains on a CUDA GPU on this machine."""
    return accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available()


class FastPath(Callback):
    """Puts a module's weights in channels-last memory and compiles its networks before training starts.

    Runs in ``setup``, before Lightning moves the module to its device (which keeps the memory format) and builds
    its optimizers, so optimizers, checkpoints and state dict keys see the same Parameters as without it.
    """

    def __init__(self, *, channels_last: bool, compile: bool | str) -> None:
        self.channels_last, self.compile = channels_last, compile

    def setup(self, trainer: lightning.Trainer, pl_module: lightning.LightningModule, stage: str) -> None:
        if self.channels_last:
            to_channels_last(pl_module)
        compile_networks(pl_module, self.compile)


def choose_precision(accelerator: str, precision: str | int = "auto") -> str:
    """The Lightning precision string for ``precision`` on ``accelerator``.

    ``"auto"`` gives ``"bf16-mixed"`` on a CUDA GPU with native bf16 (Ampere or newer), ``"16-mixed"`` on
    older CUDA GPUs and ``"32-true"`` on the CPU and on Apple MPS. Other values pass through, aliases (``32``,
    ``"bf16"``) written out in full.

    Raises:
        BrainlearnError: ``precision`` is not one Lightning accepts.
    """
    if precision == "auto":
        if not on_cuda(accelerator):
            return "32-true"
        return "bf16-mixed" if native_bf16("cuda") else "16-mixed"
    value = _PRECISION_INPUT_STR_ALIAS_CONVERSION.get(str(precision), str(precision))
    if value not in PRECISIONS:
        choices = ", ".join(("auto", *PRECISIONS))
        raise BrainlearnError(f"trainer.precision: unknown value {precision!r}; expected one of {choices}.")
    return value


def build_trainer(run_dir: str | os.PathLike, settings: Mapping[str, Any] | None = None) -> lightning.Trainer:
    """A seeded Lightning trainer that logs, checkpoints and stops early as ``settings`` say.

    Args:
        run_dir: The run folder; logs go to ``run_dir/logs``, checkpoints to ``run_dir/checkpoints``.
        settings: Overrides of :data:`TRAINER_DEFAULTS`.
    """
    run_dir = Path(run_dir)
    settings = resolve_settings(settings)
    lightning.seed_everything(settings["seed"], workers=True)
    callbacks = checkpoint_callbacks(
        run_dir / "checkpoints",
        every_n_steps=settings["checkpoint_every_n_steps"],
        monitor=settings["monitor"],
        mode=settings["mode"],
    )
    if settings["patience"] is not None:
        callbacks.append(EarlyStopping(settings["monitor"], patience=settings["patience"], mode=settings["mode"]))
    callbacks += [RandomStates(), EpochMeans(), *_progress_bar(settings)]
    channels_last = settings["channels_last"]
    if channels_last == "auto":
        channels_last = on_cuda(settings["accelerator"])
    if channels_last or settings["compile"]:
        callbacks.append(FastPath(channels_last=channels_last, compile=settings["compile"]))
    keys = ("max_epochs", "max_steps", "accelerator", "devices", "num_nodes", "strategy", "deterministic")
    keys += ("accumulate_grad_batches", "gradient_clip_val", "log_every_n_steps", "val_check_interval")
    return lightning.Trainer(
        **{key: settings[key] for key in keys},
        precision=choose_precision(settings["accelerator"], settings["precision"]),
        sync_batchnorm=_sync_batchnorm(settings),
        default_root_dir=run_dir,
        logger=[
            AppendingCSVLogger(run_dir, name="logs", version="", flush_logs_every_n_steps=1),
            _tensorboard_logger(run_dir),
        ],
        callbacks=callbacks,
        plugins=[AtomicCheckpointIO()],
        enable_progress_bar=bool(settings["progress_bar"]),
        enable_model_summary=False,
    )


def _sync_batchnorm(settings: Mapping[str, Any]) -> bool:
    if settings["sync_batchnorm"] == "auto":
        return on_cuda(settings["accelerator"])
    if settings["sync_batchnorm"] and not on_cuda(settings["accelerator"]):
        raise BrainlearnError(
            "trainer.sync_batchnorm: torch's SyncBatchNorm runs on CUDA GPUs only; set it to false or auto on the CPU."
        )
    return bool(settings["sync_batchnorm"])


def _tensorboard_logger(run_dir: Path) -> TensorBoardLogger:
    return TensorBoardLogger(run_dir / "logs", name="tensorboard", version="", default_hp_metric=False)


def _progress_bar(settings: Mapping[str, Any]) -> list[Callback]:
    if not settings["progress_bar"]:
        return []
    if sys.stdout.isatty():
        return [RichProgressBar()]
    # Redirected output (a cluster job's log): redraw only as often as metrics are logged.
    return [TQDMProgressBar(refresh_rate=settings["log_every_n_steps"])]


def fit(
    module: lightning.LightningModule,
    run_dir: str | os.PathLike,
    settings: Mapping[str, Any] | None = None,
    *,
    datamodule: lightning.LightningDataModule | None = None,
    train_dataloaders: Any = None,
    val_dataloaders: Any = None,
) -> lightning.Trainer:
    """Train ``module`` into ``run_dir``, resuming from ``checkpoints/last.ckpt`` when it exists.

    Writes the final metrics (``trainer.callback_metrics``), ``global_step`` and ``epoch`` into
    ``run_dir/metrics.json`` (merged with what is there), from the global rank 0 only.

    Returns:
        The trainer, after training.
    """
    run_dir = Path(run_dir)
    trainer = build_trainer(run_dir, settings)
    last = run_dir / "checkpoints" / f"{LAST_NAME}.ckpt"
    ckpt_path = last if last.is_file() else None
    with warnings.catch_warnings():
        # Lightning 2.6 on torch 2.13 warns about its own use of a deprecated pytree API, and about a logging
        # interval longer than a small epoch; neither is the user's to act on.
        warnings.filterwarnings("ignore", message=".*isinstance\\(treespec, LeafSpec\\)")
        warnings.filterwarnings("ignore", message="The number of training batches .* is smaller than the logging")
        if ckpt_path is not None:
            step = read_global_step(last)
            logger.info("%s: resuming from step %d", last, step)
            if trainer.is_global_zero:
                drop_rows_after(run_dir / "logs" / "metrics.csv", step)
            # Lightning warns about a non-empty checkpoint folder, which is what resuming means.
            warnings.filterwarnings("ignore", message="Checkpoint directory .* exists and is not empty")
        trainer.fit(
            module,
            train_dataloaders=train_dataloaders,
            val_dataloaders=val_dataloaders,
            datamodule=datamodule,
            ckpt_path=ckpt_path,
        )
    if trainer.is_global_zero:
        write_metrics(run_dir / "metrics.json", trainer)
    return trainer


def write_metrics(path: Path, trainer: lightning.Trainer) -> None:
    """Merge the trainer's final scalar metrics, ``global_step`` and ``epoch`` into the JSON file ``path``."""
    metrics = _read_json(path) if path.is_file() else {}
    for name, value in trainer.callback_metrics.items():
        if isinstance(value, int | float) or (isinstance(value, torch.Tensor) and value.numel() == 1):
            metrics[name] = float(value)
    metrics.update(global_step=trainer.global_step, epoch=trainer.current_epoch)
    write_json(path, metrics)


def drop_rows_after(path: Path, step: int) -> None:
    """Remove the rows of ``metrics.csv`` logged after ``step`` (a killed run wrote them after its checkpoint, and
    the resumed run logs those steps again) and a last row the kill cut short (no line end)."""
    if not path.is_file():
        return
    text = path.read_text(encoding="utf-8")
    lines = text.splitlines()
    if lines and not text.endswith("\n"):
        lines.pop()
    rows = list(csv.reader(lines))
    if not rows or "step" not in rows[0]:
        return
    column = rows[0].index("step")
    kept = [rows[0], *(row for row in rows[1:] if len(row) > column and _step(row[column]) <= step)]
    if len(kept) == len(rows) and text.endswith("\n"):
        return
    with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as file:
        csv.writer(file, lineterminator="\n").writerows(kept)
    logger.info("%s: %d rows logged after step %d removed (they are logged again)", path, len(rows) - len(kept), step)


def _step(text: str) -> float:
    try:
        return float(text)
    except ValueError:  # not a row of ours
        return float("inf")


def _read_json(path: Path) -> dict[str, Any]:
    try:
        content = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise BrainlearnError(f"{path}: could not read ({error}). Delete or fix the file, then rerun.") from error
    if not isinstance(content, dict):
        raise BrainlearnError(f"{path}: expected a JSON object, got {type(content).__name__}.")
    return content


class _AppendingCSVWriter(ExperimentWriter):
    """Appends to the ``metrics.csv`` of an earlier attempt, which Lightning's own writer would delete."""

    def _check_log_dir_exists(self) -> None:
        if self._fs.isfile(self.metrics_file_path):
            with self._fs.open(self.metrics_file_path, "r", newline="") as file:
                self.metrics_keys = next(csv.reader(file), [])


class AppendingCSVLogger(CSVLogger):
    """A :class:`CSVLogger` whose ``metrics.csv`` survives a resume: new rows and columns are added to it.

    :func:`build_trainer` has it write rows out as they are logged (a few per ``log_every_n_steps`` and per
    epoch), so a killed run loses none (a resume does not log again the epoch-end rows of an epoch it closed), and
    :func:`fit` removes the rows logged after the checkpoint it resumes from.
    """

    @property
    @rank_zero_experiment
    def experiment(self) -> ExperimentWriter:
        """The writer of ``metrics.csv`` and ``hparams.yaml``."""
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _AppendingCSVWriter(log_dir=self.log_dir)
        return self._experiment
