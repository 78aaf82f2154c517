"""The transform every training and evaluation volume goes through: standardization, downsampling, augmentation."""

import pytest
import torch

from brainlearn.data.loaders import VolumeTransform, _shifted, standardize
from brainlearn.errors import BrainlearnError


def test_standardize_is_per_channel_inside_the_non_zero_voxels():
    image = torch.zeros(2, 32, 40, 24)
    image[0, 8:24, 8:30, 6:18] = torch.rand(16, 22, 12) * 900 + 100  # a T1-like channel
    image[1, 8:24, 8:30, 6:18] = torch.rand(16, 22, 12) * 2 + 0.5  # a PET-like channel in SUVR
    out = standardize(image)
    for channel in out:
        inside = channel[8:24, 8:30, 6:18]
        assert inside.mean().abs() < 1e-4 and (inside.std() - 1).abs() < 1e-3
    assert (out[:, :8] == 0).all()


def test_downsample_averages_blocks_and_keeps_odd_edges():
    out = VolumeTransform(downsample=2)({"image": torch.ones(1, 33, 40, 24)})["image"]
    assert out.shape == (1, 17, 20, 12)


def test_shift_moves_a_blob_without_wrapping():
    image = torch.zeros(1, 10, 12, 8)
    image[0, 0, 5, 4] = 1.0
    moved = _shifted(image, (2, -1, 0))
    assert moved[0, 2, 4, 4] == 1.0 and moved.sum() == 1.0
    assert _shifted(image, (-1, 0, 0)).sum() == 0  # moved out of the volume, not around it


def test_augmentation_is_reproducible_with_its_seed():
    image = torch.rand(1, 16, 20, 12) + 0.1
    a = [VolumeTransform(augment=True, seed=3)({"image": image})["image"] for _ in range(1)]
    b = [VolumeTransform(augment=True, seed=3)({"image": image})["image"] for _ in range(1)]
    assert torch.equal(a[0], b[0])


@pytest.mark.parametrize("downsample", [0, 1.5, True])
def test_bad_settings_are_refused(downsample):
    with pytest.raises(BrainlearnError, match="downsample must be an integer >= 1"):
        VolumeTransform(downsample=downsample)


class _SameImage(torch.utils.data.Dataset):
    """One image, many times, through a transform: any two items differ only by their random draws."""

    def __init__(self, transform):
        self.transform, self.image = transform, torch.arange(1.0, 1 + 8 * 10 * 6).reshape(1, 8, 10, 6)

    def __len__(self):
        return 16

    def __getitem__(self, i):
        return self.transform({"image": self.image})["image"]


def test_dataloader_workers_do_not_repeat_each_others_draws():
    loader = torch.utils.data.DataLoader(_SameImage(VolumeTransform(augment=True, seed=0)), batch_size=1, num_workers=2)
    items = [batch[0] for batch in loader]  # workers alternate: items 0, 2, ... from one, 1, 3, ... from the other
    first, second = items[0::2], items[1::2]
    assert not all(torch.equal(a, b) for a, b in zip(first, second, strict=True))
