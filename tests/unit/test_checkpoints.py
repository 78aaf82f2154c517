"""Tests for brainlearn.checkpoints: atomic writes and safe (weights-only) reads."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from brainlearn.atomic import PARTIAL_PREFIX
from brainlearn.checkpoints import AtomicCheckpointIO, checkpoint_callbacks, load_checkpoint, read_global_step
from brainlearn.errors import BrainlearnError


class CreatesMarker:
    """Unpickling this would call ``open(marker, "w")``: code carried by a checkpoint."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_atomic_io_round_trip_leaves_no_partial_file(tmp_path):
    path = tmp_path / "checkpoints" / "last.ckpt"
    state = {"global_step": 7, "state_dict": {"weight": torch.arange(6.0).reshape(2, 3)}}
    AtomicCheckpointIO().save_checkpoint(state, path)
    assert [p.name for p in path.parent.iterdir()] == ["last.ckpt"]
    loaded = AtomicCheckpointIO().load_checkpoint(path)
    assert torch.equal(loaded["state_dict"]["weight"], state["state_dict"]["weight"])
    assert read_global_step(path) == 7


def test_failed_save_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "last.ckpt"
    AtomicCheckpointIO().save_checkpoint({"global_step": 1}, path)

    def broken_save(obj, file):
        Path(file).write_bytes(b"half a checkpoint")
        raise RuntimeError("disk went away")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(RuntimeError, match="disk went away"):
        AtomicCheckpointIO().save_checkpoint({"global_step": 2}, path)
    monkeypatch.undo()
    assert read_global_step(path) == 1
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(PARTIAL_PREFIX)]


def test_checkpoint_carrying_code_is_refused(tmp_path):
    marker = tmp_path / "marker"
    path = tmp_path / "evil.ckpt"
    torch.save({"state_dict": CreatesMarker(marker)}, path)
    with pytest.raises(BrainlearnError, match="refused to load") as caught:
        load_checkpoint(path)
    assert str(path) in str(caught.value) and "(io.open)" in str(caught.value)
    assert not marker.exists()


@pytest.mark.parametrize("keep", [0, 100, None], ids=["empty", "truncated", "junk"])
def test_damaged_checkpoint_is_reported_with_its_name(tmp_path, keep):
    good = tmp_path / "good.ckpt"
    torch.save({"state_dict": {"weight": torch.ones(64)}}, good)
    path = tmp_path / "last.ckpt"
    path.write_bytes(b"not a checkpoint at all" if keep is None else good.read_bytes()[:keep])
    with pytest.raises(BrainlearnError, match="damaged") as caught:
        load_checkpoint(path)
    assert str(path) in str(caught.value)


def test_missing_and_non_dict_checkpoints(tmp_path):
    with pytest.raises(BrainlearnError, match="not found"):
        load_checkpoint(tmp_path / "none.ckpt")
    torch.save([1, 2], tmp_path / "list.ckpt")
    with pytest.raises(BrainlearnError, match="expected a checkpoint dictionary, got list"):
        load_checkpoint(tmp_path / "list.ckpt")


def test_weights_only_false_is_refused(tmp_path):
    path = tmp_path / "last.ckpt"
    torch.save({"global_step": 1}, path)
    with pytest.raises(BrainlearnError, match="weights_only=True only"):
        AtomicCheckpointIO().load_checkpoint(path, weights_only=False)


def test_checkpoint_callbacks(tmp_path):
    assert [c.filename for c in checkpoint_callbacks(tmp_path, every_n_steps=None, monitor=None, mode="min")] == [
        "last"
    ]
    callbacks = checkpoint_callbacks(tmp_path, every_n_steps=5, monitor="val/loss", mode="max")
    assert [c.filename for c in callbacks] == ["last", "last", "best"]
    assert callbacks[1]._every_n_train_steps == 5
    assert (callbacks[2].monitor, callbacks[2].mode) == ("val/loss", "max")
