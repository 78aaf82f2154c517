"""The commands the kill campaign interrupts, each with the result an interrupted run must reproduce exactly.

A target owns a work folder: the inputs it needs (a tiny cohort) are made there once, each killed run gets a
fresh output folder, and :meth:`reference` runs the command once without a kill.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pandas as pd
from kills import brainlearn, digests


class Target:
    """A command to kill: ``argv(out)``, the comparable ``result(out)``, and an uninterrupted ``reference()``."""

    def __init__(self, root: Path):
        self.root = Path(root).absolute()  # commands run with it as their working folder
        self.root.mkdir(parents=True, exist_ok=True)

    def fresh_out(self, run: int) -> Path:
        out = self.root / f"killed-{run}"
        shutil.rmtree(out, ignore_errors=True)
        return out

    def argv(self, out: Path) -> list:
        raise NotImplementedError

    def result(self, out: Path) -> dict:
        raise NotImplementedError

    def started(self, out: Path) -> bool:
        """Whether the run has finished its first item (a moment to count kills from); none by default."""
        return True

    def kill_window(self, seconds: float) -> float:
        """How long after :meth:`started` the work goes on, for a run that takes ``seconds`` in all."""
        return 0.3 * seconds

    def reference(self) -> tuple[float, dict]:
        """Seconds an uninterrupted run takes, and its result."""
        out = self.root / "reference"
        shutil.rmtree(out, ignore_errors=True)
        start = time.monotonic()
        done = brainlearn(self.argv(out), cwd=self.root)
        if done.returncode != 0:
            raise RuntimeError(f"the uninterrupted run failed: {done.stderr}")
        return time.monotonic() - start, self.result(out)


def tiny_cohort(root: Path, *, subjects: int = 30, preset: str = "ad") -> Path:
    """A 4 mm cohort with two participants of each diagnosis in val and in test (every metric defined)."""
    cohort = root / "cohort"
    if (cohort / "participants.tsv").exists():
        return cohort
    done = brainlearn(
        ["cohort", "--out", cohort, "--subjects", subjects, "--spacing", 4, "--preset", preset, "--seed", 1], cwd=root
    )
    if done.returncode != 0:
        raise RuntimeError(done.stderr)
    table = pd.read_csv(cohort / "participants.tsv", sep="\t")
    internal = table["split"] != "external"
    table.loc[internal, "split"] = "train"
    for split in ("val", "test"):
        for diagnosis in ("CN", "MCI", "AD"):
            chosen = table[internal & (table["split"] == "train") & (table["diagnosis"] == diagnosis)].index[:2]
            table.loc[chosen, "split"] = split
    table.to_csv(cohort / "participants.tsv", sep="\t", index=False)
    return cohort


class TrainTarget(Target):
    """``train classify`` for 3 epochs, a checkpoint after every step: kills land before, between and in them."""

    def __init__(self, root: Path, subjects: int = 30):
        super().__init__(root)
        self.cohort = tiny_cohort(self.root, subjects=subjects)

    def argv(self, out: Path) -> list:
        return ["train", "classify", "--bids", self.cohort, "--out", out, "--model", "resnet3d",
                "model_options={widen_factor: 0.125}", "batch_size=4", "trainer.max_epochs=3",
                "trainer.checkpoint_every_n_steps=1", "trainer.deterministic=true", "trainer.progress_bar=false",
                "evaluate.n_bootstrap=20"]  # fmt: skip

    kill_after = 1  # checkpoints written before the kill window opens (a test may draw it)

    def started(self, out: Path) -> bool:
        # counts the writes of last.ckpt (one per step) seen while polling
        try:
            stamp = (out / "checkpoints" / "last.ckpt").stat().st_mtime_ns
        except FileNotFoundError:
            self._stamps = set()
            return False
        self._stamps = getattr(self, "_stamps", set()) | {stamp}
        return len(self._stamps) >= self.kill_after

    def kill_window(self, seconds: float) -> float:
        return 0.2  # 9 steps of a tiny network take about a second; the rest is start-up and evaluation

    def result(self, out: Path) -> dict:
        metrics = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
        curves = (out / "logs" / "metrics.csv").read_text(encoding="utf-8")  # every row once, none lost
        return {"metrics": metrics, "predictions": digests(out / "evaluation", ["predictions.tsv"]), "curves": curves}


class CohortTarget(Target):
    """``cohort``: ``subjects`` participants with lesions, one worker per core."""

    def __init__(self, root: Path, subjects: int = 12):
        super().__init__(root)
        self.subjects = subjects

    def argv(self, out: Path) -> list:
        return ["cohort", "--out", out, "--subjects", self.subjects, "--spacing", 4, "--preset", "all", "--seed", 3]

    def started(self, out: Path) -> bool:
        return any((out / "derivatives" / "truth").glob("sub-*/*_truth.json"))

    def result(self, out: Path) -> dict:
        return digests(out, [".nii.gz", "participants.tsv", "_truth.json"])


class PreprocessTarget(Target):
    """``preprocess`` (by default N4, registration, normalization) of a ``subjects``-participant cohort, 2 workers."""

    def __init__(self, root: Path, subjects: int = 6, steps: tuple[str, ...] = ("n4", "register", "normalize")):
        super().__init__(root)
        self.steps = list(steps)
        self.cohort = self.root / "cohort"
        if not (self.cohort / "participants.tsv").exists():
            argv = ["cohort", "--out", self.cohort, "--subjects", subjects, "--spacing", 4, "--preset", "ad"]
            argv.append("external=0")
            done = brainlearn(argv, cwd=self.root)
            if done.returncode != 0:
                raise RuntimeError(done.stderr)

    def argv(self, out: Path) -> list:
        return ["preprocess", "--bids", self.cohort, "--out", out, "--steps", *self.steps, "--spacing", 4,
                "--jobs", 2]  # fmt: skip

    def started(self, out: Path) -> bool:
        return any(out.glob("sub-*/ses-*"))  # a session's work has begun

    def result(self, out: Path) -> dict:
        return digests(out, [".nii.gz", ".tfm", "participants.tsv"])


TARGETS = {"train": TrainTarget, "cohort": CohortTarget, "preprocess": PreprocessTarget}
