import math
import pickle

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch
from torch.utils.data import DataLoader

from brainlearn.data.cache import Cache, build_cache
from brainlearn.data.datasets import ImageMaskDataset, PairDataset, SliceDataset, VolumeDataset
from brainlearn.errors import BrainlearnError, CacheMismatchError

SHAPE = (12, 14, 10)
AFFINE = np.diag([1.5, 1.0, 2.0, 1.0])
DIAGNOSES = ["CN", "AD", "MCI", "AD", "CN", None, "AD", "CN"]
PARTICIPANTS = ["sub-01", "sub-01", "sub-02", "sub-03", "sub-04", "sub-05", "sub-06", "sub-07"]
SPLITS = ["train", "train", "train", "train", "train", "val", "test", None]


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """Eight sessions (sub-01 has two) with t1, t2, pet and a lesion mask, all on one grid."""
    folder = tmp_path_factory.mktemp("cohort")
    rng = np.random.default_rng(1)
    rows = []
    for k, (participant_id, diagnosis, split) in enumerate(zip(PARTICIPANTS, DIAGNOSES, SPLITS, strict=True)):
        row = {"participant_id": participant_id, "session_id": f"ses-{k:02d}", "diagnosis": diagnosis}
        row |= {
            "age": math.nan if k == 2 else 70.0 + k,
            "sex": "M",
            "site": "B",
            "split": split,
            "flair": None,
        }
        for m in ("t1", "t2", "pet"):
            volume = rng.uniform(0, 10, SHAPE).astype(np.float32) + 100 * k  # session k lies in [100k, 100k + 10]
            row[m] = str(folder / f"{m}_{k}.nii.gz")
            nib.save(nib.Nifti1Image(volume, AFFINE), row[m])
        row["mask"] = str(folder / f"mask_{k}.nii.gz")
        nib.save(nib.Nifti1Image((rng.uniform(size=SHAPE) > 0.8).astype(np.uint8), AFFINE), row["mask"])
        rows.append(row)
    build_cache(pd.DataFrame(rows), folder / "cache", modalities=("t1", "t2", "pet", "mask"), progress=False)
    return Cache(folder / "cache")


def test_volume_dataset_stacks_modalities_and_labels(cache):
    dataset = VolumeDataset(cache, modalities=("t1", "t2"), classes=("CN", "AD"))
    assert len(dataset) == 6  # MCI and the missing diagnosis are left out
    item = dataset[1]
    assert item["image"].shape == (2, *SHAPE) and item["image"].dtype == torch.float32
    assert (item["label"], item["age"], item["participant_id"], item["session_id"]) == (
        1,
        71.0,
        "sub-01",
        "ses-01",
    )
    torch.testing.assert_close(item["image"][1], torch.from_numpy(cache.read(1, "t2")))
    assert [dataset[i]["label"] for i in range(len(dataset))] == [0, 1, 1, 0, 1, 0]


def test_volume_dataset_without_classes_keeps_every_row(cache):
    dataset = VolumeDataset(cache, classes=None, split="train", transform=lambda item: item | {"seen": True})
    assert len(dataset) == 5
    assert {dataset[i]["label"] for i in range(5)} == {-1}
    assert math.isnan(dataset[2]["age"]) and dataset[2]["seen"]


def test_dataset_errors_name_the_problem(cache):
    with pytest.raises(CacheMismatchError, match="has no flair; it holds t1, t2, pet, mask"):
        VolumeDataset(cache, modalities=("t1", "flair"))
    with pytest.raises(BrainlearnError, match=r"no session left with split='val' and classes=\('CN', 'AD'\)"):
        VolumeDataset(cache, split="val")
    with pytest.raises(BrainlearnError, match="slice_range must be"):
        SliceDataset(cache, slice_range=(0.5, 2.0))
    with pytest.raises(BrainlearnError, match="leave 'mask' out"):
        ImageMaskDataset(cache, modalities=("t1", "mask"))


def test_slice_dataset_items_are_the_volume_slices(cache):
    dataset = SliceDataset(cache, modalities=("t1", "pet"), axis=1, slice_range=(0.25, 0.75), split="train")
    per_volume = round(0.75 * SHAPE[1]) - round(0.25 * SHAPE[1])
    assert len(dataset) == 4 * per_volume  # four train sessions are CN or AD
    item = dataset[per_volume + 2]
    assert item["image"].shape == (2, SHAPE[0], SHAPE[2])
    assert item["slice_index"] == round(0.25 * SHAPE[1]) + 2
    volume = cache.read(1, "pet")  # second kept session: row 1
    torch.testing.assert_close(item["image"][1], torch.from_numpy(volume[:, item["slice_index"], :]))
    assert item["participant_id"] == "sub-01" and item["label"] == 1


def test_slice_dataset_index_range(cache):
    dataset = SliceDataset(cache, axis=2, slice_range=(2, 100), classes=None)
    assert len(dataset) == len(cache) * (SHAPE[2] - 2)
    torch.testing.assert_close(dataset[0]["image"][0], torch.from_numpy(cache.read(0, "t1")[:, :, 2]))


def test_image_mask_dataset(cache):
    dataset = ImageMaskDataset(cache, modalities=("t1", "t2"), split="train")
    item = dataset[0]
    assert item["image"].shape == (2, *SHAPE) and item["mask"].shape == (1, *SHAPE)
    assert item["mask"].dtype == torch.float32 and set(item["mask"].unique().tolist()) <= {0.0, 1.0}
    torch.testing.assert_close(item["mask"][0], torch.from_numpy(cache.read(0, "mask").astype(np.float32)))


def test_paired_dataset_takes_the_same_session(cache):
    dataset = PairDataset(cache, paired=True, classes=None)
    for i in range(len(dataset)):
        item = dataset[i]
        assert item["mri"].shape == item["pet"].shape == (1, *SHAPE)
        assert (item["pet_participant_id"], item["pet_session_id"]) == (
            item["participant_id"],
            item["session_id"],
        )
        assert 100 * i <= item["pet"].min() and item["pet"].max() <= 100 * i + 10


def _partners(dataset):
    return [(dataset[i]["participant_id"], dataset[i]["pet_session_id"]) for i in range(len(dataset))]


def test_unpaired_partners_are_others_deterministic_and_change_with_epoch(cache):
    dataset = PairDataset(cache, paired=False, seed=3, classes=None)
    first = _partners(dataset)
    assert all(dataset[i]["pet_participant_id"] != dataset[i]["participant_id"] for i in range(len(dataset)))
    assert _partners(PairDataset(cache, paired=False, seed=3, classes=None)) == first
    epochs = []
    for epoch in range(1, 4):
        dataset.set_epoch(epoch)
        epochs.append(_partners(dataset))
    assert any(partners != first for partners in epochs)
    dataset.set_epoch(0)
    assert _partners(dataset) == first
    assert _partners(PairDataset(cache, paired=False, seed=4, classes=None)) != first


def test_dataloader_with_workers(cache):
    dataset = VolumeDataset(cache, modalities=("t1", "pet"), classes=("CN", "AD"))
    loader = DataLoader(dataset, batch_size=4, num_workers=2)
    batches = list(loader)
    assert [batch["image"].shape for batch in batches] == [(4, 2, *SHAPE), (2, 2, *SHAPE)]
    assert batches[0]["label"].tolist() == [0, 1, 1, 0]
    assert batches[0]["participant_id"] == ["sub-01", "sub-01", "sub-03", "sub-04"]
    torch.testing.assert_close(batches[1]["image"][1, 0], torch.from_numpy(cache.read(7, "t1")))
    copy = pickle.loads(pickle.dumps(dataset))
    assert copy.cache._maps == {}
    torch.testing.assert_close(copy[5]["image"], batches[1]["image"][1])
