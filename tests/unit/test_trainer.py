"""Tests for brainlearn.trainer: training, resuming, early stopping, settings, precision, DDP on the CPU."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import lightning
import numpy as np
import pytest
import torch
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset

from brainlearn.atomic import PARTIAL_PREFIX
from brainlearn.checkpoints import read_global_step
from brainlearn.errors import BrainlearnError
from brainlearn.trainer import TRAINER_DEFAULTS, choose_precision, fit, resolve_settings

QUIET = {"accelerator": "cpu", "progress_bar": False, "log_every_n_steps": 1}


class FailAt(lightning.Callback):
    """Raises after the optimizer step ``step``, as a crash in the middle of training would."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            raise RuntimeError(f"simulated crash at step {self.step}")


class TinyRegression(lightning.LightningModule):
    """Linear regression from 4 inputs; logs train/loss and val/loss (constant when ``flat_val``)."""

    def __init__(self, lr: float = 0.1, fail_at_step: int | None = None, flat_val: bool = False) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net = torch.nn.Linear(4, 1)
        self.losses: list[float] = []
        self.first_step: int | None = None
        self.backend: str | None = None

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = F.mse_loss(self.net(x), y)
        self.losses.append(loss.item())
        self.log("train/loss", loss)
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        loss = torch.tensor(1.0) if self.hparams.flat_val else F.mse_loss(self.net(x), y)
        self.log("val/loss", loss)

    def on_train_start(self) -> None:
        if torch.distributed.is_initialized():
            self.backend = torch.distributed.get_backend()

    def on_train_batch_start(self, batch, batch_idx) -> None:
        if self.first_step is None:
            self.first_step = self.global_step

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.hparams.lr)

    def configure_callbacks(self):
        return [] if self.hparams.fail_at_step is None else [FailAt(self.hparams.fail_at_step)]


def make_loader(samples: int = 64, batch_size: int = 8) -> DataLoader:
    """``samples`` points of y = x·w + small noise, fixed by a seed."""
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(samples, 4, generator=generator)
    y = x @ torch.tensor([[1.0], [-2.0], [0.5], [3.0]]) + 0.01 * torch.randn(samples, 1, generator=generator)
    return DataLoader(TensorDataset(x, y), batch_size=batch_size)


def partial_files(run_dir: Path) -> list[Path]:
    return [path for path in run_dir.rglob("*") if path.name.startswith(PARTIAL_PREFIX)]


def read_csv_steps(run_dir: Path) -> list[int]:
    with open(run_dir / "logs" / "metrics.csv", newline="") as file:
        return [int(row["step"]) for row in csv.DictReader(file) if row.get("train/loss")]


def test_fit_trains_checkpoints_and_writes_metrics(tmp_path):
    module = TinyRegression()
    trainer = fit(module, tmp_path, {**QUIET, "max_epochs": 4}, train_dataloaders=make_loader())
    assert module.losses[-1] < 0.1 * module.losses[0]
    last = tmp_path / "checkpoints" / "last.ckpt"
    checkpoint = torch.load(last, weights_only=True)
    assert checkpoint["global_step"] == trainer.global_step == 32
    assert sorted(path.name for path in (tmp_path / "checkpoints").iterdir()) == ["last.ckpt"]
    assert partial_files(tmp_path) == []
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["global_step"] == 32
    assert metrics["train/loss"] == pytest.approx(module.losses[-1], rel=1e-5)
    assert read_csv_steps(tmp_path)
    assert list((tmp_path / "logs" / "tensorboard").glob("events.out.tfevents.*"))


def test_second_fit_resumes_from_last_checkpoint(tmp_path, caplog):
    settings = {**QUIET, "checkpoint_every_n_steps": 1}
    fit(TinyRegression(), tmp_path, {**settings, "max_steps": 4}, train_dataloaders=make_loader())
    assert read_global_step(tmp_path / "checkpoints" / "last.ckpt") == 4
    (tmp_path / "metrics.json").write_text(json.dumps({"note": "kept"}))
    module = TinyRegression()
    with caplog.at_level("INFO", logger="brainlearn.trainer"):
        trainer = fit(module, tmp_path, {**settings, "max_steps": 8}, train_dataloaders=make_loader())
    assert "resuming from step 4" in caplog.text
    assert (module.first_step, trainer.global_step) == (4, 8)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["note"] == "kept" and metrics["global_step"] == 8
    steps = read_csv_steps(tmp_path)  # the first run's rows are kept, the second run's appended
    assert min(steps) < 3 and max(steps) == 7


def test_interrupted_fit_resumes_from_last_saved_step(tmp_path):
    settings = {**QUIET, "checkpoint_every_n_steps": 1, "max_steps": 6}
    with pytest.raises(RuntimeError, match="simulated crash at step 3"):
        fit(TinyRegression(fail_at_step=3), tmp_path, settings, train_dataloaders=make_loader())
    # Lightning runs checkpoint callbacks after the others, so the crash at step 3 came before its checkpoint.
    assert read_global_step(tmp_path / "checkpoints" / "last.ckpt") == 2
    assert partial_files(tmp_path) == []
    assert not (tmp_path / "metrics.json").exists()
    module = TinyRegression()
    trainer = fit(module, tmp_path, settings, train_dataloaders=make_loader())
    assert (module.first_step, trainer.global_step) == (2, 6)


def test_early_stopping_ends_a_run_that_does_not_improve(tmp_path):
    settings = {**QUIET, "max_epochs": 20, "monitor": "val/loss", "patience": 2}
    loader = make_loader(samples=16)
    trainer = fit(TinyRegression(flat_val=True), tmp_path, settings, train_dataloaders=loader, val_dataloaders=loader)
    assert trainer.current_epoch == 3  # epoch 0 sets the best value, epochs 1 and 2 exhaust the patience
    assert (tmp_path / "checkpoints" / "best.ckpt").is_file()
    assert json.loads((tmp_path / "metrics.json").read_text())["val/loss"] == 1.0


def test_choose_precision():
    assert choose_precision("cpu") == "32-true"
    assert choose_precision("cpu", "bf16") == "bf16-mixed"
    assert choose_precision("gpu", 32) == "32-true"
    with pytest.raises(BrainlearnError, match="'fp8'"):
        choose_precision("cpu", "fp8")


def test_settings_defaults_and_errors():
    assert resolve_settings() == TRAINER_DEFAULTS
    assert resolve_settings({"max_epochs": 3})["max_epochs"] == 3
    with pytest.raises(BrainlearnError, match="unknown setting 'max_epoch'. Did you mean 'max_epochs'"):
        resolve_settings({"max_epoch": 3})
    with pytest.raises(BrainlearnError, match="set trainer.monitor"):
        resolve_settings({"patience": 3})
    with pytest.raises(BrainlearnError, match="expected 'min' or 'max', not 'lowest'"):
        resolve_settings({"mode": "lowest"})


DDP_SCRIPT = """
import sys
from pathlib import Path

sys.path.insert(0, {tests!r})
import brainlearn.trainer as trainer_module
from test_trainer import TinyRegression, make_loader

run_dir = Path({run_dir!r})
write_metrics = trainer_module.write_metrics


def counted_write_metrics(path, trainer):
    with open(run_dir.parent / "metric_writes.txt", "a") as file:
        file.write(f"{{trainer.global_rank}}\\n")
    write_metrics(path, trainer)


if __name__ == "__main__":
    trainer_module.write_metrics = counted_write_metrics
    module = TinyRegression()
    settings = {{"accelerator": "cpu", "devices": 2, "strategy": "ddp", "max_steps": 4, "progress_bar": False,
                "log_every_n_steps": 1}}
    trainer = trainer_module.fit(module, run_dir, settings, train_dataloaders=make_loader())
    with open(run_dir.parent / f"rank{{trainer.global_rank}}.txt", "w") as file:
        file.write(f"{{module.backend}} {{trainer.global_step}}")
"""


def run_script(script: Path, timeout: float) -> subprocess.CompletedProcess:
    """Run ``script`` in its own process group, killed whole (the DDP child too) when it overruns."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(
        [sys.executable, script],
        env=env,
        start_new_session=True,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        output, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        output, _ = process.communicate()
        pytest.fail(f"DDP run did not finish in {timeout} s:\n{output[-3000:]}")
    return subprocess.CompletedProcess(process.args, process.returncode, output)


def test_ddp_on_cpu_uses_gloo_and_writes_once(tmp_path):
    run_dir = tmp_path / "run"
    script = tmp_path / "train_ddp.py"
    script.write_text(textwrap.dedent(DDP_SCRIPT.format(tests=str(Path(__file__).parent), run_dir=str(run_dir))))
    result = run_script(script, timeout=180)
    assert result.returncode == 0, result.stdout[-3000:]
    assert [path.name for path in run_dir.rglob("*.ckpt")] == ["last.ckpt"]
    assert partial_files(run_dir) == []
    assert (tmp_path / "metric_writes.txt").read_text() == "0\n"
    assert json.loads((run_dir / "metrics.json").read_text())["global_step"] == 4
    assert (tmp_path / "rank0.txt").read_text() == "gloo 4"
    assert (tmp_path / "rank1.txt").read_text() == "gloo 4"


class NoisyRegression(TinyRegression):
    """TinyRegression with dropout (the global stream) and input noise from its own generators (torch and numpy)."""

    def __init__(self, fail_at_step: int | None = None) -> None:
        super().__init__(fail_at_step=fail_at_step)
        self.dropout = torch.nn.Dropout(0.2)
        self._torch_rng = torch.Generator().manual_seed(5)
        self._numpy_rng = np.random.default_rng(6)

    def training_step(self, batch, batch_idx):
        x, y = batch
        noise = 0.1 * torch.randn(x.shape, generator=self._torch_rng) + float(self._numpy_rng.normal())
        loss = F.mse_loss(self.net(self.dropout(x + noise)), y)
        self.log("train/loss", loss, on_step=True, on_epoch=True)
        return loss


def _train_noisy(run_dir: Path, settings: dict, fail_at_step: int | None = None) -> torch.Tensor:
    from brainlearn.data.loaders import make_loader as brainlearn_loader

    torch.manual_seed(0)  # the weights, drawn before the trainer seeds (the CLI seeds first too)
    module = NoisyRegression(fail_at_step)
    loader = brainlearn_loader(
        make_loader().dataset, batch_size=8, shuffle=True, generator=torch.Generator().manual_seed(1)
    )
    fit(module, run_dir, {**QUIET, "checkpoint_every_n_steps": 1, **settings}, train_dataloaders=loader)
    return torch.cat([p.detach().flatten() for p in module.parameters()])


def test_a_resumed_run_ends_with_the_weights_of_an_uninterrupted_one(tmp_path):
    """Shuffle, dropout and the module's own generators continue where they were, mid-epoch and between epochs."""
    reference = _train_noisy(tmp_path / "whole", {"max_epochs": 3})
    for step in (11, 19):  # in the middle of epoch 2, then of the last epoch
        with pytest.raises(RuntimeError, match=f"simulated crash at step {step}"):
            _train_noisy(tmp_path / "crashed", {"max_epochs": 3}, fail_at_step=step)
        assert read_global_step(tmp_path / "crashed" / "checkpoints" / "last.ckpt") == step - 1
    torch.testing.assert_close(_train_noisy(tmp_path / "crashed", {"max_epochs": 3}), reference, rtol=0, atol=0)
    metrics = [json.loads((tmp_path / run / "metrics.json").read_text()) for run in ("whole", "crashed")]
    assert metrics[0]["train/loss_epoch"] == metrics[1]["train/loss_epoch"]  # the last epoch's mean, every step in it
    logs = [(tmp_path / run / "logs" / "metrics.csv").read_text() for run in ("whole", "crashed")]
    assert logs[0] == logs[1]  # rows logged after the last checkpoint were dropped and logged again

    _train_noisy(tmp_path / "epochs", {"max_epochs": 1})
    torch.testing.assert_close(_train_noisy(tmp_path / "epochs", {"max_epochs": 3}), reference, rtol=0, atol=0)
    # the states travel in the checkpoint, and it still loads with weights_only=True
    states = torch.load(tmp_path / "epochs" / "checkpoints" / "last.ckpt", weights_only=True)["random_states"]
    assert set(states["module"]) == {"_torch_rng", "_numpy_rng"}


EQUAL_BATCH_SCRIPT = """
import sys

import torch

sys.path.insert(0, {tests!r})
from test_trainer import equal_batch_run

if __name__ == "__main__":
    weights = equal_batch_run({run_dir!r}, devices=2, batch_size=4)
    if weights is not None:
        torch.save(weights, {out!r})
"""


def _labelled_items(count: int, seed: int) -> list[dict]:
    """Tiny 2×2×2 "images" whose label is the sign of a fixed projection, with some label noise."""
    generator = torch.Generator().manual_seed(seed)
    images = torch.randn(count, 1, 2, 2, 2, generator=generator)
    labels = ((images.flatten(1) @ torch.linspace(-1, 1, 8) + 0.5 * torch.randn(count, generator=generator)) > 0).long()
    return [{"image": image, "label": label} for image, label in zip(images, labels, strict=True)]


def equal_batch_run(run_dir: str, *, devices: int, batch_size: int) -> torch.Tensor | None:
    """A linear classifier for 2 shuffled epochs on ``devices`` CPU processes; rank 0's final weights.

    Validation (16 items, 8 per process under DDP) is gathered from every process before its metrics.
    """
    from brainlearn.data.loaders import make_loader as brainlearn_loader
    from brainlearn.methods.supervised import ClassifierModule

    torch.manual_seed(0)
    network = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(8, 2))
    module = ClassifierModule(network, ("CN", "AD"), lr=0.05, lr_decay=1.0)
    generator = torch.Generator().manual_seed(0)
    train = brainlearn_loader(_labelled_items(64, 1), batch_size=batch_size, shuffle=True, generator=generator)
    val = brainlearn_loader(_labelled_items(16, 2), batch_size=4)
    settings = {**QUIET, "max_epochs": 2, "devices": devices, "strategy": "ddp" if devices > 1 else "auto"}
    trainer = fit(module, run_dir, settings, train_dataloaders=train, val_dataloaders=val)
    return torch.cat([p.detach().flatten() for p in module.parameters()]) if trainer.is_global_zero else None


def test_two_ddp_processes_train_as_one_with_the_same_global_batch(tmp_path):
    """Global batch 8: one process of 8 or two of 4 (gloo) see the same items per step and end with the same weights."""
    script = tmp_path / "equal_batch.py"
    out = tmp_path / "ddp_weights.pt"
    script.write_text(
        textwrap.dedent(
            EQUAL_BATCH_SCRIPT.format(tests=str(Path(__file__).parent), run_dir=str(tmp_path / "ddp"), out=str(out))
        )
    )
    result = run_script(script, timeout=180)
    assert result.returncode == 0, result.stdout[-3000:]
    one = equal_batch_run(str(tmp_path / "one"), devices=1, batch_size=8)
    two = torch.load(out, weights_only=True)
    torch.testing.assert_close(two, one, rtol=1e-5, atol=1e-6)
    metrics = [json.loads((tmp_path / run / "metrics.json").read_text()) for run in ("ddp", "one")]
    assert metrics[0]["global_step"] == metrics[1]["global_step"] == 16
    for name in ("val/loss", "val/auroc", "val/balanced_accuracy"):  # over all 16 validation items in both
        assert metrics[0][name] == pytest.approx(metrics[1][name], rel=1e-5), name
