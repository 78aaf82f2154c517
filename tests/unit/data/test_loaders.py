"""The transform every training and evaluation volume goes through: standardization, downsampling, augmentation."""

import pytest
import torch

from brainlearn.data.loaders import (
    PairTransform,
    VolumeTransform,
    _shifted,
    pad_to_multiple,
    scale_to_range,
    standardize,
)
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


# ------------------------------------------------------------------ document 000's [-1, 1] scale, padding, pairs


def _brain(shape=(32, 40, 24), seed=0) -> torch.Tensor:
    """(1, *shape): tissue in [100, 1000] inside a box, background 0 and a few negative voxels (resampling leaves)."""
    generator = torch.Generator().manual_seed(seed)
    image = torch.zeros(1, *shape)
    x, y, z = (n // 4 for n in shape)
    image[0, x:-x, y:-y, z:-z] = torch.rand(shape[0] - 2 * x, shape[1] - 2 * y, shape[2] - 2 * z, generator=generator)
    image[0, x:-x, y:-y, z:-z] = image[0, x:-x, y:-y, z:-z] * 900 + 100
    image[0, 0, :3, :2] = -5.0
    return image


def test_scale_to_range_sends_the_background_to_minus_one_and_the_995th_percentile_to_one():
    image = torch.cat([_brain(), torch.zeros(1, 32, 40, 24)])  # the second channel has no tissue
    out = scale_to_range(image)
    assert out.shape == image.shape and out.dtype == torch.float32
    assert out.min() == -1 and out.max() == 1
    assert (out[0][image[0] <= 0] == -1).all() and (out[1] == -1).all()
    tissue = image[0][image[0] > 0]
    hi = torch.quantile(tissue, 0.995)
    torch.testing.assert_close(out[0], (image[0] / hi).clamp(0, 1) * 2 - 1)
    assert abs((out[0] == 1).float().sum() / tissue.numel() - 0.005) < 0.001  # only the brightest 0.5 % saturate


def test_range_intensity_through_volume_transform_keeps_the_background_at_minus_one():
    image = _brain()
    out = VolumeTransform(intensity="range", downsample=2)({"image": image})["image"]
    torch.testing.assert_close(out, torch.nn.functional.avg_pool3d(scale_to_range(image)[None], 2)[0])
    tissue = torch.rand(1, 16, 20, 12) + 0.5  # no background: any -1 comes from the shift's border
    shifted = [VolumeTransform(intensity="range", augment=True, seed=s)({"image": tissue})["image"] for s in range(8)]
    assert not any((out == 0).any() for out in shifted)  # the uncovered border is background (-1), not 0
    assert any((out == -1).any() for out in shifted)


def test_bad_intensity_is_refused_with_the_choices():
    with pytest.raises(BrainlearnError, match="intensity must be 'zscore' or 'range', not 'minmax'"):
        VolumeTransform(intensity="minmax")


@pytest.mark.parametrize(
    ("shape", "padded", "before"),
    [((32, 40, 24), (32, 48, 32), (0, 4, 4)), ((33, 17, 1), (48, 32, 16), (7, 7, 7))],
)
def test_pad_to_multiple_centres_the_volume_and_its_slices_undo_it(shape, padded, before):
    image = torch.rand(2, *shape)
    out, slices = pad_to_multiple(image, 16)
    assert out.shape == (2, *padded)
    assert tuple(s.start for s in slices) == before  # the odd voxel goes after
    assert torch.equal(out[(..., *slices)], image)
    assert out.sum() == pytest.approx(image.sum().item() - (out.numel() - image.numel()), rel=1e-5)  # padded with -1


def _pair(mri: torch.Tensor, pet: torch.Tensor) -> dict:
    return {"mri": mri, "pet": pet, "participant_id": "sub-01", "session_id": "ses-01"}


def _window_of(crop: torch.Tensor, padded: torch.Tensor) -> list[tuple[int, int, int]]:
    """The corners where ``crop`` (1, *c) lies in ``padded`` (1, *n)."""
    windows = padded[0].unfold(0, crop.shape[1], 1).unfold(1, crop.shape[2], 1).unfold(2, crop.shape[3], 1)
    return [tuple(k.tolist()) for k in torch.nonzero((windows == crop[0]).flatten(3).all(-1))]


def test_pair_transform_pads_scales_and_crops_both_volumes():
    mri, pet = _brain((20, 24, 18), seed=1), _brain((18, 22, 20), seed=2)
    whole = PairTransform(multiple=8, paired=False)(_pair(mri, pet))
    assert whole["mri"].shape == whole["pet"].shape == (1, 24, 24, 24) and whole["participant_id"] == "sub-01"
    assert whole["mri"].min() == -1 and whole["mri"].max() == 1
    cropped = PairTransform(multiple=8, crop=(8, 12, 8), paired=False, seed=0)(_pair(mri, pet))
    assert cropped["mri"].shape == cropped["pet"].shape == (1, 8, 12, 8)
    for key in ("mri", "pet"):
        assert _window_of(cropped[key], whole[key])  # a window of the padded volume


def test_paired_crops_and_flips_share_one_draw_and_unpaired_do_not():
    mri = _brain((20, 24, 18))
    settings = {"multiple": 8, "crop": (8, 12, 8), "augment": True}
    paired = [PairTransform(**settings, paired=True, seed=s)(_pair(mri, mri.clone())) for s in range(6)]
    assert all(torch.equal(item["mri"], item["pet"]) for item in paired)
    assert len({tuple(item["mri"].flatten()[:50].tolist()) for item in paired}) > 1  # the position does vary
    unpaired = [PairTransform(**settings, paired=False, seed=s)(_pair(mri, mri.clone())) for s in range(6)]
    assert not all(torch.equal(item["mri"], item["pet"]) for item in unpaired)


def test_pair_flip_is_left_right():
    mri = _brain((20, 24, 18))
    whole = PairTransform(multiple=8)(_pair(mri, mri))["mri"]
    flipped = [PairTransform(multiple=8, augment=True, seed=s)(_pair(mri, mri))["mri"] for s in range(8)]
    assert all(torch.equal(out, whole) or torch.equal(out, whole.flip(1)) for out in flipped)
    assert any(torch.equal(out, whole.flip(1)) for out in flipped) and any(torch.equal(out, whole) for out in flipped)


def test_pair_transform_is_reproducible_with_its_seed():
    item = _pair(_brain((20, 24, 18), seed=1), _brain((20, 24, 18), seed=2))
    settings = {"multiple": 8, "crop": (8, 8, 8), "augment": True, "paired": False}
    first, again = PairTransform(**settings, seed=5)(item), PairTransform(**settings, seed=5)(item)
    assert torch.equal(first["mri"], again["mri"]) and torch.equal(first["pet"], again["pet"])
    others = [PairTransform(**settings, seed=s)(item) for s in range(6, 9)]
    assert any(not torch.equal(first["mri"], other["mri"]) for other in others)


def test_pair_transform_refuses_a_crop_larger_than_the_padded_volume():
    with pytest.raises(BrainlearnError, match=r"crop \(64, 16, 16\) is larger than a volume padded to \(32, 48, 32\)"):
        PairTransform(crop=(64, 16, 16))(_pair(_brain(), _brain()))
    with pytest.raises(BrainlearnError, match="lower crop"):
        PairTransform(crop=(64, 16, 16))(_pair(_brain(), _brain()))
    with pytest.raises(BrainlearnError, match=r"crop must be None or 3 positive integers .* not \(16, 16\)"):
        PairTransform(crop=(16, 16))
    with pytest.raises(BrainlearnError, match="paired crop needs the MRI and PET on one grid"):
        PairTransform(crop=(16, 16, 16))(_pair(_brain(), _brain((20, 24, 18))))
