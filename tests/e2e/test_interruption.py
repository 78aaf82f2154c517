"""Killed runs (SIGKILL at random moments) resume to the result of an uninterrupted run and leave nothing that looks
finished but is not. The harness is tests/fuzz/kills.py; ``make fuzz`` runs the same with many more kills."""

from __future__ import annotations

import random
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "fuzz"))
from kill_targets import CohortTarget, PreprocessTarget, TrainTarget  # noqa: E402
from kills import partial_files, run_with_kills, unfinished_files  # noqa: E402

TARGETS = {
    "train": lambda root: TrainTarget(root),
    "cohort": lambda root: CohortTarget(root, subjects=4),
    "preprocess": lambda root: PreprocessTarget(root, subjects=3, steps=("register", "normalize")),
}


@pytest.mark.parametrize("name", list(TARGETS))
def test_a_killed_command_resumes_to_the_uninterrupted_result(name, tmp_path):
    target = TARGETS[name](tmp_path)
    seconds, reference = target.reference()
    rng = random.Random(f"{name}-13")
    target.kill_after = rng.randint(1, 8)  # train: after this many of its 9 checkpoints
    moments = [rng.uniform(0, target.kill_window(seconds))]  # after the first checkpoint, subject, session begun
    out = target.fresh_out(0)
    outcome = run_with_kills(target.argv(out), moments, cwd=target.root, out=out, started=target.started)
    assert outcome.problems == []
    assert outcome.killed == 1, f"the kill came after the end (at {moments}, reference {seconds:.1f} s)"
    assert target.result(out) == reference
    assert partial_files(out) == []  # the rerun swept what the killed writers left
    assert unfinished_files(out) == []
