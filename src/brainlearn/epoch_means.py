"""Epoch aggregates of logged values (``train/loss_epoch``) that survive a resume in the middle of an epoch.

Lightning accumulates each value logged with ``on_epoch=True`` (a running sum and count for a mean) but does not
save the running state in checkpoints: after a resume from a checkpoint written mid-epoch, the epoch's mean would
cover only the steps after the resume. :class:`EpochMeans` saves the running states with the checkpoint and, once
the resumed epoch has logged its first step (the accumulators exist then), adds them in. Adding ``x + saved``
equals the uninterrupted ``saved + x`` bit for bit, so the epoch's mean is exactly the uninterrupted one.
"""

from __future__ import annotations

from typing import Any

import lightning
import torch
from lightning.pytorch.callbacks import Callback

KEY = "epoch_means"


class EpochMeans(Callback):
    """Saves the training epoch's running aggregates with each checkpoint; adds them back after a mid-epoch resume."""

    def __init__(self) -> None:
        self._pending: dict[str, dict[str, torch.Tensor]] = {}
        self._epoch: int | None = None

    def on_save_checkpoint(
        self, trainer: lightning.Trainer, pl_module: lightning.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        states = {}
        for key, metric in _results(trainer).items():
            if getattr(metric, "is_tensor", False) and metric.meta.on_epoch:
                states[key] = {"value": metric.value.detach().clone()}
                if metric.meta.is_mean_reduction:
                    states[key]["count"] = metric.cumulated_batch_size.detach().clone()
        checkpoint[KEY] = {"epoch": trainer.current_epoch, "states": states}

    def on_load_checkpoint(
        self, trainer: lightning.Trainer, pl_module: lightning.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        saved = checkpoint.get(KEY) or {}
        self._epoch, self._pending = saved.get("epoch"), dict(saved.get("states", {}))

    def on_train_batch_end(self, trainer: lightning.Trainer, pl_module: lightning.LightningModule, *args: Any) -> None:
        if not self._pending:
            return
        if trainer.current_epoch != self._epoch:  # the checkpoint closed its epoch: nothing to carry over
            self._pending = {}
            return
        results = _results(trainer)
        for key in [key for key in self._pending if key in results]:
            _add(results[key], self._pending.pop(key))


def _results(trainer: lightning.Trainer) -> dict[str, Any]:
    # Lightning keeps the training epoch's accumulators here (no public accessor in 2.6)
    return trainer.fit_loop.epoch_loop._results


def _add(metric: Any, saved: dict[str, torch.Tensor]) -> None:
    value = saved["value"].to(metric.value.device, metric.value.dtype)
    if metric.meta.is_max_reduction or metric.meta.is_min_reduction:
        metric.value = metric.meta.reduce_fx(metric.value, value)
    else:  # mean and sum: running sums
        metric.value = metric.value + value
    if "count" in saved:
        metric.cumulated_batch_size = metric.cumulated_batch_size + saved["count"].to(metric.cumulated_batch_size)
