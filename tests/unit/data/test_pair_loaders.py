"""Batches for MRI↔PET synthesis (document 000), and the [-1, 1] scale through the supervised loaders; a tiny cache."""

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch

from brainlearn.commands_train import _DATA_DEFAULTS, _loader_settings
from brainlearn.data.cache import Cache, build_cache
from brainlearn.data.loaders import (
    pad_to_multiple,
    pair_loaders,
    paired_evaluation_dataset,
    scale_to_range,
    training_loaders,
)
from brainlearn.errors import BrainlearnError

SHAPE = (32, 40, 24)  # padded to (32, 48, 32)
SPLITS = ["train", "train", "train", "train", "train", "val", "val"]
DIAGNOSES = ["CN", "AD", "CN", "AD", "MCI", "CN", "AD"]


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """Seven participants with a t1 and a pet each (a bright box on a zero background): five train, two val."""
    folder = tmp_path_factory.mktemp("pairs")
    rng = np.random.default_rng(0)
    rows = []
    for k, (split, diagnosis) in enumerate(zip(SPLITS, DIAGNOSES, strict=True)):
        row = {"participant_id": f"sub-{k:02d}", "session_id": "ses-01", "diagnosis": diagnosis, "age": 70.0 + k}
        row |= {"sex": "F", "site": "A", "split": split, "t2": None, "flair": None, "mask": None}
        for modality in ("t1", "pet"):
            volume = np.zeros(SHAPE, dtype=np.float32)
            volume[6:26, 8:32, 4:20] = rng.uniform(50, 1000, (20, 24, 16))
            row[modality] = str(folder / f"{modality}_{k}.nii.gz")
            nib.save(nib.Nifti1Image(volume, np.diag([2.0, 2.0, 2.0, 1.0])), row[modality])
        rows.append(row)
    build_cache(pd.DataFrame(rows), folder / "cache", modalities=("t1", "pet"), progress=False)
    return Cache(folder / "cache")


def test_pair_loaders_give_unpaired_crops_and_paired_whole_volumes(cache):
    train, val = pair_loaders(cache, batch_size=2, crop=(16, 24, 16), seed=1)
    assert len(train) == 2 and train.drop_last and not train.persistent_workers  # 5 sessions: 2 full batches
    batch = next(iter(train))
    assert batch["mri"].shape == batch["pet"].shape == (2, 1, 16, 24, 16)
    assert {"label", "participant_id", "session_id", "pet_participant_id", "pet_session_id"} <= set(batch)
    assert batch["pet_participant_id"] != batch["participant_id"]  # unpaired: another participant's PET
    assert batch["mri"].min() >= -1 and batch["mri"].max() <= 1
    batch = next(iter(val))
    assert batch["mri"].shape == batch["pet"].shape == (2, 1, 32, 48, 32)
    assert batch["pet_participant_id"] == batch["participant_id"] == ["sub-05", "sub-06"]
    assert batch["mri"].min() == -1 and batch["mri"].max() == 1


def test_pair_loaders_keep_a_short_only_batch_and_filter_classes(cache):
    train, val = pair_loaders(cache, classes=("CN", "AD"), batch_size=8, downsample=2)
    assert not train.drop_last and len(train) == 1 and len(train.dataset) == 4  # the MCI session left out
    assert next(iter(train))["mri"].shape == (4, 1, 16, 32, 16)  # (16, 20, 12) padded to multiples of 16


def test_pair_loader_workers_see_each_epochs_partners(cache):
    train, _ = pair_loaders(cache, batch_size=1, augment=False, num_workers=1)
    partners = []
    for epoch in range(3):
        train.dataset.set_epoch(epoch)  # what ShareGANModule does when an epoch starts
        partners.append(sorted((b["participant_id"][0], b["pet_participant_id"][0]) for b in train))
    assert any(p != partners[0] for p in partners[1:])


def test_paired_evaluation_dataset_pads_and_its_slices_give_the_session_grid_back(cache):
    dataset = paired_evaluation_dataset(cache, classes=None, split="val", downsample=2)
    item = dataset[0]
    assert item["mri"].shape == item["pet"].shape == (1, 16, 32, 16)
    _, slices = pad_to_multiple(torch.zeros(1, 16, 20, 12), 16)
    t1 = scale_to_range(torch.from_numpy(cache.read(dataset.rows[0], "t1"))[None])
    torch.testing.assert_close(item["mri"][(..., *slices)], torch.nn.functional.avg_pool3d(t1[None], 2)[0])
    assert (item["mri"][:, :, :6] == -1).all() and (item["mri"][:, :, -6:] == -1).all()  # Y: 20 → 32, centred


def test_pair_loaders_refuse_a_crop_larger_than_the_padded_volume(cache):
    with pytest.raises(BrainlearnError, match=r"crop \(16, 64, 16\) is larger than the MRI volume padded to "):
        pair_loaders(cache, batch_size=2, crop=(16, 64, 16))
    with pytest.raises(BrainlearnError, match=r"\(32, 48, 32\).*lower crop"):
        pair_loaders(cache, batch_size=2, crop=(16, 64, 16))
    with pytest.raises(BrainlearnError, match="batch_size must be a positive integer, not 0"):
        pair_loaders(cache, batch_size=0)


def test_intensity_setting_reaches_training_and_validation_batches(cache):
    config = {**_DATA_DEFAULTS, "intensity": "range", "augment": False}
    train, val = training_loaders(cache, **_loader_settings(config), classes=("CN", "AD"), seed=0)
    for loader in (train, val):
        image = next(iter(loader))["image"]
        assert image.min() == -1 and image.max() == 1
    image = next(iter(training_loaders(cache, **_loader_settings(_DATA_DEFAULTS), classes=("CN", "AD"))[1]))["image"]
    assert image.min() < -1 and (image == 0).any()  # z-scores by default, background 0
    assert torch.isfinite(image).all()
