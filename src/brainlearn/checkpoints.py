"""Checkpoints that are never half-written and never run code when loaded.

Lightning writes every checkpoint through :class:`AtomicCheckpointIO`: the file appears complete under its
final name or not at all (see :mod:`brainlearn.atomic`). Every checkpoint is read with
``torch.load(..., weights_only=True)``, which accepts tensors and plain values only, so a checkpoint from
elsewhere cannot execute code. Lightning 2.6 checkpoints (weights, optimizer and scheduler states, loop
counters, ModelCheckpoint and EarlyStopping states, hyperparameters given as plain values) need no extra safe
globals; a method whose hyperparameters hold other objects (paths, modules) must leave them out of
``save_hyperparameters``.

The run folder keeps ``checkpoints/last.ckpt`` (the newest state, used to resume) and, when a metric is
monitored, ``checkpoints/best.ckpt``.
"""

from __future__ import annotations

import os
import pickle
import re
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.plugins.io import TorchCheckpointIO

from brainlearn.atomic import atomic_path
from brainlearn.errors import BrainlearnError

LAST_NAME = "last"
BEST_NAME = "best"

_UNSUPPORTED_GLOBAL = re.compile(r"Unsupported global: GLOBAL ([\w.]+)")


def load_checkpoint(path: str | os.PathLike, map_location: Any = "cpu", *, mmap: bool = False) -> dict[str, Any]:
    """Read a checkpoint with ``weights_only=True``.

    Args:
        path: A ``.ckpt`` file written by ``torch.save`` (Lightning checkpoints included).
        map_location: Where tensors go, as for :func:`torch.load` (default: the CPU).
        mmap: Map tensors from the file instead of reading them (cheap when only counters are needed).

    Returns:
        The checkpoint dictionary.

    Raises:
        BrainlearnError: The file is missing, damaged, not a dictionary, or holds Python objects other than
            tensors and plain values (which could run code when unpickled).
    """
    path = Path(path)
    if not path.is_file():
        raise BrainlearnError(f"{path}: checkpoint not found. Check the run folder or train first.")
    _check_records(path)
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as error:
        raise _load_error(path, error) from error
    except Exception as error:  # a damaged file raises RuntimeError, EOFError, KeyError, ... depending on where
        raise _corrupt_error(path, error) from error
    if not isinstance(checkpoint, dict):
        raise BrainlearnError(f"{path}: expected a checkpoint dictionary, got {type(checkpoint).__name__}.")
    return checkpoint


def read_global_step(path: str | os.PathLike) -> int:
    """The optimizer step a Lightning checkpoint was saved at (0 when it does not say)."""
    return int(load_checkpoint(path, mmap=True).get("global_step", 0))


def load_module_weights(module: torch.nn.Module, path: str | os.PathLike, prefix: str, *, hint: str) -> int:
    """Copy a checkpoint's ``...<prefix>.<name>`` tensors into ``module``, all of them or none.

    The part of a key after the last ``"<prefix>."`` names the tensor in ``module`` (``backbone`` from SimCLR or a
    classifier, ``encoder`` / ``swinViT`` from a pretrained segmenter's encoder).

    Returns:
        The number of tensors loaded (all of ``module``'s).

    Raises:
        BrainlearnError: the checkpoint cannot be read, holds no ``prefix`` tensors, or some are missing, extra or
            of another shape, naming up to three and ending with ``hint`` (what to build instead).
    """
    state = load_checkpoint(path)
    state = state.get("state_dict", state)
    marker = f"{prefix}."
    weights = {key.rsplit(marker, 1)[1]: value for key, value in state.items() if marker in key}
    own = module.state_dict()
    if not weights:
        raise BrainlearnError(f"{path}: holds no '{marker}*' weights for this network's {prefix}; {hint}")
    problems = [f"{k}: missing from the checkpoint" for k in own if k not in weights]
    problems += [
        f"{k}: {tuple(weights[k].shape)} in the checkpoint, {tuple(own[k].shape)} here"
        for k in own
        if k in weights and weights[k].shape != own[k].shape
    ]
    problems += [f"{k}: not in this {prefix}" for k in weights if k not in own]
    if problems:
        more = f" and {len(problems) - 3} more" if len(problems) > 3 else ""
        raise BrainlearnError(f"{path}: its {prefix} is not this network's: {'; '.join(problems[:3])}{more}. {hint}")
    module.load_state_dict(weights)
    return len(own)


def _check_records(path: Path) -> None:
    """Check the CRC-32 of every record of a zip checkpoint (all that torch.save writes since PyTorch 1.6).

    torch.load does not check them: a damaged tensor record loads silently with wrong values. The check reads
    the file once. Files that are not zip archives (PyTorch's legacy format) are left to torch.load.
    """
    try:
        if not zipfile.is_zipfile(path):  # it raises BadZipFile for some damaged end records
            return
        with zipfile.ZipFile(path) as archive:
            damaged = archive.testzip()
    # RuntimeError: a record flagged as encrypted; NotImplementedError: an unknown compression method
    except (zipfile.BadZipFile, OSError, EOFError, ValueError, NotImplementedError, RuntimeError) as error:
        raise _corrupt_error(path, error) from error
    if damaged is not None:
        raise _corrupt_error(path, zipfile.BadZipFile(f"record {damaged} fails its CRC-32 check"))


def _load_error(path: Path, error: pickle.UnpicklingError) -> BrainlearnError:
    message = str(error)
    if "Weights only load failed" not in message:
        return _corrupt_error(path, error)
    found = _UNSUPPORTED_GLOBAL.search(message)
    culprit = f" ({found.group(1)})" if found else ""
    return BrainlearnError(
        f"{path}: refused to load: the checkpoint holds a Python object{culprit} besides tensors and plain "
        "values, and unpickling it could run code. brainlearn loads checkpoints with weights_only=True only; "
        "use checkpoints written by brainlearn, or re-save trusted weights as a plain state_dict."
    )


def _corrupt_error(path: Path, error: BaseException) -> BrainlearnError:
    reason = str(error).split(". ")[0] or type(error).__name__
    return BrainlearnError(
        f"{path}: the checkpoint is damaged or not a PyTorch file ({reason}). Delete it to resume from "
        "another checkpoint or to start again."
    )


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning checkpoint I/O: atomic writes, ``weights_only=True`` reads."""

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: str | os.PathLike, storage_options: Any | None = None
    ) -> None:
        """Write ``checkpoint`` to ``path`` through a temporary file in the same folder, then rename it."""
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} does not take storage_options")
        with atomic_path(path) as tmp:
            torch.save(checkpoint, tmp)

    def load_checkpoint(
        self,
        path: str | os.PathLike,
        map_location: Callable | str | torch.device | None = "cpu",
        weights_only: bool | None = None,
    ) -> dict[str, Any]:
        """Read a checkpoint with :func:`load_checkpoint`; ``weights_only=False`` is refused."""
        if weights_only is False:
            raise BrainlearnError(f"{path}: brainlearn loads checkpoints with weights_only=True only.")
        return load_checkpoint(path, map_location=map_location)


class StepCheckpoint(ModelCheckpoint):
    """``every_n_train_steps`` checkpoints, except after an epoch's last batch (the epoch-end one follows).

    Lightning resumes from a checkpoint written after an epoch's last batch at the next epoch, so the epoch's
    validation and epoch-end logging would never run: a kill between that checkpoint and the epoch-end one would
    change the curves and possibly the best checkpoint.
    """

    def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        if trainer.is_last_batch:
            return
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)


def checkpoint_callbacks(
    folder: Path, *, every_n_steps: int | None, monitor: str | None, mode: str
) -> list[ModelCheckpoint]:
    """The callbacks that keep ``last.ckpt`` (and ``best.ckpt`` when ``monitor`` is set) in ``folder``.

    ``last.ckpt`` is written at the end of every epoch (also when ``max_steps`` ends one early) and, when set,
    every ``every_n_steps`` optimizer steps. Each callback is a top-1 checkpoint named ``last`` rather than
    ``save_last=True``: Lightning 2.6 writes ``last.ckpt`` only in a step where a top-k checkpoint was saved,
    and forbids step and epoch triggers on one callback.
    """
    last = {"dirpath": folder, "filename": LAST_NAME, "save_top_k": 1, "enable_version_counter": False}
    callbacks = [ModelCheckpoint(**last, save_on_train_epoch_end=True)]
    if every_n_steps is not None:
        callbacks.append(StepCheckpoint(**last, every_n_train_steps=every_n_steps))
    if monitor is not None:
        best = ModelCheckpoint(
            dirpath=folder,
            filename=BEST_NAME,
            monitor=monitor,
            mode=mode,
            save_top_k=1,
            auto_insert_metric_name=False,
            enable_version_counter=False,
        )
        callbacks.append(best)
    return callbacks
