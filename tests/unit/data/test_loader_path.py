"""The data path to the GPU: make_loader's workers and pinning, num_workers resolution, loader throughput."""

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch
from torch.utils.data import DataLoader, DistributedSampler

from brainlearn.commands_segment import SEGMENT_COMMANDS
from brainlearn.config import load_config
from brainlearn.data.cache import Cache, build_cache
from brainlearn.data.cache_bench import benchmark_loader
from brainlearn.data.datasets import VolumeDataset
from brainlearn.data.loaders import MAX_AUTO_WORKERS, VolumeTransform, make_loader, resolve_num_workers
from brainlearn.errors import BrainlearnError

SHAPE = (12, 14, 10)
SPLITS = ["train"] * 5 + ["val"]


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """Six sessions with a t1 (a noisy box on a zero background): five train, one val."""
    folder = tmp_path_factory.mktemp("loader_path")
    rng = np.random.default_rng(0)
    rows = []
    for k, split in enumerate(SPLITS):
        row = {"participant_id": f"sub-{k:02d}", "session_id": "ses-01", "diagnosis": ["CN", "AD"][k % 2]}
        row |= {"age": 70.0 + k, "sex": "F", "site": "A", "split": split, "pet": None, "t2": None, "flair": None}
        row |= {"mask": None, "t1": str(folder / f"t1_{k}.nii.gz")}
        volume = np.zeros(SHAPE, dtype=np.float32)
        volume[2:10, 3:12, 2:8] = rng.uniform(50, 1000, (8, 9, 6))
        nib.save(nib.Nifti1Image(volume, np.diag([2.0, 2.0, 2.0, 1.0])), row["t1"])
        rows.append(row)
    build_cache(pd.DataFrame(rows), folder / "cache", modalities=("t1",), progress=False)
    return Cache(folder / "cache")


def _train_items(cache) -> VolumeDataset:
    """Augmented training items: every draw comes from the transform's seed, so two copies draw alike."""
    transform = VolumeTransform(augment=True, shift=2, seed=3)
    return VolumeDataset(cache, modalities=("t1",), classes=("CN", "AD"), split="train", transform=transform)


@pytest.fixture
def no_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


@pytest.fixture
def a_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)


def test_auto_starts_no_worker_without_a_gpu(no_gpu):
    assert resolve_num_workers("auto") == 0


def test_auto_starts_half_the_cores_with_a_gpu_at_most_eight(a_gpu):
    assert 1 <= resolve_num_workers("auto") <= MAX_AUTO_WORKERS


@pytest.mark.parametrize(("value", "workers"), [(0, 0), (3, 3), ("4", 4)])
def test_integers_pass_through_also_as_the_config_reader_writes_them(value, workers):
    assert resolve_num_workers(value) == workers


@pytest.mark.parametrize("value", [-1, True, 2.5, "four", "-1", "", None])
def test_bad_num_workers_say_what_to_write(value):
    expected = r"num_workers must be 'auto' or an integer >= 0 .*not .*Write num_workers: auto"
    with pytest.raises(BrainlearnError, match=expected):
        resolve_num_workers(value)


def test_a_config_integer_over_the_auto_default_reaches_the_loader():
    defaults = SEGMENT_COMMANDS[0].defaults
    assert defaults["num_workers"] == "auto"
    config = load_config(defaults, overrides=["num_workers=3"])
    assert resolve_num_workers(config["num_workers"]) == 3


def test_make_loader_on_cpu_pins_nothing_and_keeps_no_workers(cache, no_gpu):
    loader = make_loader(_train_items(cache), batch_size=2)
    assert loader.num_workers == 0 and not loader.pin_memory and not loader.persistent_workers


def test_make_loader_with_a_gpu_pins_and_keeps_prefetching_workers(cache, a_gpu):
    loader = make_loader(_train_items(cache), batch_size=2, num_workers=2)
    assert loader.pin_memory and loader.persistent_workers and loader.prefetch_factor >= 2
    pairs = make_loader(_train_items(cache), batch_size=2, num_workers=2, persistent_workers=False)
    assert not pairs.persistent_workers  # PairDataset's partners change between epochs


def test_make_loader_refuses_a_bad_batch_size(cache):
    with pytest.raises(BrainlearnError, match="batch_size must be a positive integer, not 0"):
        make_loader(_train_items(cache), batch_size=0)


@pytest.mark.parametrize("workers", [0, 2])
def test_make_loader_gives_the_batches_of_a_plain_dataloader(cache, workers):
    """Same seed, same shuffle and augmentation draws, in the same order: make_loader changes only the plumbing.

    Its shuffle is a one-process DistributedSampler of the generator's seed (the order DDP splits across ranks).
    """
    ours = make_loader(
        _train_items(cache),
        batch_size=2,
        shuffle=True,
        num_workers=workers,
        generator=torch.Generator().manual_seed(7),
    )
    items = _train_items(cache)
    sampler = DistributedSampler(items, num_replicas=1, rank=0, shuffle=True, seed=7)
    plain = DataLoader(
        items, batch_size=2, sampler=sampler, num_workers=workers, generator=torch.Generator().manual_seed(7)
    )
    got, expected = list(ours), list(plain)
    assert [b["participant_id"] for b in got] == [b["participant_id"] for b in expected]
    assert len(got) == 3 and sorted(sum((b["participant_id"] for b in got), [])) == [f"sub-{k:02d}" for k in range(5)]
    for a, b in zip(got, expected, strict=True):
        torch.testing.assert_close(a["image"], b["image"], rtol=0, atol=0)
        assert a["image"].shape[1:] == (1, *SHAPE) and torch.isfinite(a["image"]).all()


def test_benchmark_loader_counts_the_timed_batches_after_the_warm_up(cache, no_gpu):
    result = benchmark_loader(_train_items(cache), batch_size=2, num_workers=0, batches=5, shuffle=False)
    # epochs of 2 + 2 + 1 volumes: the warm-up takes 2, then 2 + 1 | 2 + 2 + 1 are timed, across an epoch boundary
    assert (result["batches"], result["volumes"], result["workers"], result["pinned"]) == (5, 8, 0, False)
    assert result["device"] == "cpu" and result["seconds"] > 0 and result["startup_s"] > 0
    assert result["volumes_per_s"] > 0
    assert result["volumes_per_s"] == pytest.approx(result["volumes"] / result["seconds"])


def test_benchmark_loader_with_workers(cache):
    result = benchmark_loader(_train_items(cache), batch_size=2, num_workers=2, batches=2)
    assert (result["workers"], result["batches"], result["volumes"]) == (2, 2, 3) and result["volumes_per_s"] > 0


def test_benchmark_loader_refuses_zero_batches(cache):
    with pytest.raises(BrainlearnError, match="batches must be an integer >= 1, not 0"):
        benchmark_loader(_train_items(cache), batch_size=2, num_workers=0, batches=0)


def _ids(batches) -> list[list[str]]:
    return [batch["participant_id"] for batch in batches]


def _resumable(cache):
    return make_loader(_train_items(cache), batch_size=2, shuffle=True, generator=torch.Generator().manual_seed(7))


def test_a_loader_resumes_in_the_middle_of_an_epoch_with_the_same_draws(cache):
    whole = _resumable(cache)
    epochs = []
    for epoch in range(2):
        whole.sampler.set_epoch(epoch)
        epochs.append(list(whole))
    assert _ids(epochs[0]) != _ids(epochs[1])  # a new order every epoch

    first = _resumable(cache)
    first.sampler.set_epoch(0)
    list(first)
    first.sampler.set_epoch(1)
    iterator = iter(first)
    next(iterator)  # one batch of epoch 1 trained on, then the checkpoint
    state = first.state_dict()
    assert state["handed_out"] == 1

    resumed = _resumable(cache)
    resumed.load_state_dict(torch.load(_saved(state, cache), weights_only=True))
    resumed.sampler.set_epoch(1)
    rest = list(resumed)
    assert _ids(rest) == _ids(epochs[1])[1:]
    for a, b in zip(rest, epochs[1][1:], strict=True):
        torch.testing.assert_close(a["image"], b["image"], rtol=0, atol=0)  # the same augmentation draws


def test_a_loader_resumes_between_epochs_with_the_next_epochs_draws(cache):
    whole = _resumable(cache)
    whole.sampler.set_epoch(0)
    list(whole)
    state = whole.state_dict()
    assert state["handed_out"] == 0
    whole.sampler.set_epoch(1)
    expected = list(whole)

    resumed = _resumable(cache)
    resumed.load_state_dict(state)
    resumed.sampler.set_epoch(1)
    got = list(resumed)
    for a, b in zip(got, expected, strict=True):
        torch.testing.assert_close(a["image"], b["image"], rtol=0, atol=0)
    fresh = _resumable(cache)  # without the state: the seed's first draws, not epoch 1's
    fresh.sampler.set_epoch(1)
    assert any(not torch.equal(a["image"], b["image"]) for a, b in zip(list(fresh), expected, strict=True))


def _saved(state, cache) -> str:
    """``state`` through torch.save, as in a checkpoint (loaded back with weights_only=True by the caller)."""
    path = cache.path.parent / "loader_state.pt"
    torch.save(state, path)
    return str(path)
